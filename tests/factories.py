"""A small city for tests: a few units with handlers and heads, the default SLA policies and
a handful of rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from accounts.models import Role, User
from dispatch import policies, rulebook, units
from dispatch.models import Unit, UnitLevel
from tickets.intake import create_ticket
from tickets.models import TicketCreate

UNITS = [
    ("CENTRE", "12345热线中心", UnitLevel.centre, None),
    ("HRSS", "人力资源和社会保障局", UnitLevel.city, None),
    ("HOUSING", "住房和城乡建设局", UnitLevel.city, None),
    ("WATER", "自来水公司", UnitLevel.enterprise, None),
    ("URBAN", "城市管理局", UnitLevel.city, None),
    ("YY", "榆阳区人民政府", UnitLevel.district, "榆阳区"),
]

RULES = [
    {
        "name": "欠薪",
        "priority": 10,
        "conditions": {"text_any": ["拖欠工资", "欠薪", "讨薪"]},
        "actions": {
            "category_code": "040101",
            "category_name": "劳动报酬",
            "lead_unit": "HRSS",
            "sla_policy": "general",
        },
    },
    {
        "name": "小区停水",
        "priority": 20,
        "conditions": {"text_all": ["停水", "小区"]},
        "actions": {
            "category_code": "020301",
            "category_name": "供水",
            "urgency": "urgent",
            "lead_unit": "WATER",
            "co_units": ["HOUSING"],
            "sla_policy": "utilities-24h",
        },
    },
    {
        "name": "占道经营",
        "priority": 30,
        "conditions": {"text_any": ["占道经营", "乱摆摊"]},
        "actions": {"category_code": "030201", "category_name": "市容秩序", "lead_unit": "URBAN"},
    },
    {
        "name": "物业分类",
        "priority": 40,
        "conditions": {"text_any": ["物业费"]},
        "actions": {"category_code": "020101", "category_name": "物业管理"},
    },
]


@dataclass
class World:
    units: dict[str, Unit] = field(default_factory=dict)
    handlers: dict[str, User] = field(default_factory=dict)
    heads: dict[str, User] = field(default_factory=dict)
    staff: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


def build_world(session: Session, now: datetime) -> World:
    world = World()
    for code, name, level, district in UNITS:
        unit = Unit(
            code=code,
            name=name,
            level=level,
            district=district,
            email=f"{code.lower()}@units.example.org",
            head_name=f"{name}负责人",
            head_email=f"{code.lower()}-head@units.example.org",
        )
        session.add(unit)
        world.units[code] = unit
    session.flush()
    policies.ensure_default_policies(session)
    for role in (Role.operator, Role.dispatcher, Role.supervisor, Role.admin):
        user, token = units.create_user(
            session,
            username=role.value,
            display_name=role.value,
            role=role,
            unit_code="CENTRE",
            now=now,
        )
        world.staff[role.value] = user
        world.tokens[role.value] = token
    for code in world.units:
        if code == "CENTRE":
            continue
        handler, token = units.create_user(
            session,
            username=f"{code.lower()}.handler",
            display_name=f"{code} handler",
            role=Role.handler,
            unit_code=code,
            email=f"{code.lower()}@units.example.org",
            now=now,
        )
        head, head_token = units.create_user(
            session,
            username=f"{code.lower()}.head",
            display_name=f"{code} head",
            role=Role.handler,
            unit_code=code,
            is_head=True,
            email=f"{code.lower()}-head@units.example.org",
            now=now,
        )
        world.handlers[code], world.heads[code] = handler, head
        world.tokens[handler.username], world.tokens[head.username] = token, head_token
    for rule in RULES:
        rulebook.create_rule(session, data=rule, now=now)
    session.flush()
    return world


def new_ticket(session: Session, now: datetime, description: str, **fields):
    return create_ticket(
        session,
        data=TicketCreate(description=description, **fields),
        actor="operator:test",
        now=now,
    ).ticket
