"""Demo data for the embedded default: a city's units, the default SLA policies and rule
pack, one user per role (a handler and a head for every unit), and a knowledge base of
published articles (hotline/knowledge/data/demo_articles.yaml).

Passwords: the admin gets one of its own; every other demo account shares one demo password
(one argon2id hash, so that seeding stays quick). Both are returned once, for `hotline run`
to print at the first start and keep in the data directory's 0600 file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from accounts.models import Role, User
from accounts.signin import hash_password, new_password
from dispatch import policies, rulebook
from dispatch.models import Unit, UnitLevel
from dispatch.units import create_user
from hotline.knowledge.demo import load_demo_articles

CENTRE_STAFF = [
    ("admin", "系统管理员", Role.admin),
    ("operator", "话务员 王芳", Role.operator),
    ("dispatcher", "派单员 李强", Role.dispatcher),
    ("supervisor", "督办 陈静", Role.supervisor),
]


def seed_demo(*, session: Session, now: datetime) -> dict[str, Any]:
    """Load units, policies, rules and users into an empty database; a database that already
    has units is left alone, so an administrator's edits survive restarts. Tokens are only
    known when the users are created, so they are returned then (and only then)."""
    if session.scalar(select(func.count()).select_from(Unit)):
        return {"seeded": False, "users": []}
    units = rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    policies.ensure_default_policies(session)
    rulebook.import_pack(
        session,
        text=rulebook.DEFAULT_RULES_PATH.read_text("utf-8"),
        fmt="yaml",
        now=now,
        replace=True,
    )
    session.flush()
    users: list[dict[str, Any]] = []
    admin_password, demo_password = new_password(), new_password()
    admin_hash, demo_hash = hash_password(admin_password), hash_password(demo_password)
    for username, name, role in CENTRE_STAFF:
        user, token = create_user(
            session, username=username, display_name=name, role=role, unit_code="CENTRE", now=now
        )
        password = admin_password if role == Role.admin else demo_password
        user.password_hash = admin_hash if role == Role.admin else demo_hash
        user.password_changed_at = now
        users.append(
            {
                "username": username,
                "role": role.value,
                "unit": "CENTRE",
                "token": token,
                "password": password,
            }
        )
    for unit in units:
        if unit.level == UnitLevel.centre:
            continue
        base = unit.code.lower()
        for suffix, is_head in (("handler", False), ("head", True)):
            user, token = create_user(
                session,
                username=f"{base}.{suffix}",
                display_name=f"{unit.name}{'负责人' if is_head else '联络员'}",
                role=Role.handler,
                unit_code=unit.code,
                email=unit.email if not is_head else unit.head_email,
                is_head=is_head,
                now=now,
            )
            user.password_hash, user.password_changed_at = demo_hash, now
            users.append(
                {
                    "username": user.username,
                    "role": "handler",
                    "unit": unit.code,
                    "token": token,
                    "password": demo_password,
                }
            )
    session.flush()
    supervisor = session.scalars(select(User).where(col(User.username) == "supervisor")).one()
    articles = load_demo_articles(session, approver=supervisor, now=now)
    return {
        "seeded": True,
        "units": len(units),
        "users": users,
        "rules": len(rulebook.list_rules(session)),
        "articles": articles,
    }
