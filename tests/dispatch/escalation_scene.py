"""The scene the escalation tests play in: units, users, a policy, tickets and assignments, the
sweep run on a savepoint, and what it fired."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import saved_id
from core.settings import Settings, SmtpSettings, WebhookSettings
from dispatch import escalation
from dispatch.calendar import WorkCalendar
from dispatch.escalation import arm, sweep
from dispatch.models import (
    Assignment,
    AssignmentRole,
    Clock,
    ClockUnit,
    Escalation,
    SlaPolicy,
    Unit,
    UnitLevel,
)
from tests.conftest import START
from tickets import service as tickets
from tickets.intake import create_ticket
from tickets.models import Ticket, TicketCreate, TicketEvent

H = timedelta(hours=1)
CALENDAR = WorkCalendar()
# The test policy's sign-for clock: 24 h from dispatch, warning at 75 %, then the default
# chain's chase at breach, supervision after 24 h and leadership after 72 h.
WARN, CHASE, SUPERVISE, LEAD = START + 18 * H, START + 24 * H, START + 48 * H, START + 96 * H


# ---------------------------------------------------------------- builders


def make_unit(session: Session, code: str, *, head_email: str | None = None) -> Unit:
    unit = Unit(code=code, name=f"{code}局", level=UnitLevel.city, head_email=head_email)
    session.add(unit)
    session.flush()
    return unit


def make_user(
    session: Session,
    username: str,
    role: Role,
    unit: Unit | None = None,
    *,
    is_head: bool = False,
    email: str | None = None,
    active: bool = True,
) -> User:
    user = User(
        username=username,
        display_name=username,
        role=role,
        unit_id=unit.id if unit else None,
        is_head=is_head,
        email=email,
        active=active,
        created_at=START,
        token_hash=hashlib.sha256(username.encode()).hexdigest(),
    )
    session.add(user)
    session.flush()
    return user


def make_policy(session: Session, **fields) -> SlaPolicy:
    policy = SlaPolicy.model_validate(
        {
            "name": f"test-{uuid.uuid4().hex[:8]}",
            "sign_limit": 24,
            "sign_unit": ClockUnit.hours,
            "reply_limit": 72,
            "reply_unit": ClockUnit.hours,
            "close_limit": 120,
            "close_unit": ClockUnit.hours,
            "warn_ratio": 0.75,
            **fields,
        }
    )
    session.add(policy)
    session.flush()
    return policy


def make_ticket(session: Session, now: datetime = START, description: str = "路灯不亮") -> Ticket:
    return create_ticket(
        session, data=TicketCreate(description=description), actor="operator:test", now=now
    ).ticket


def make_assignment(
    session: Session,
    *,
    ticket: Ticket,
    unit: Unit,
    policy: SlaPolicy,
    start: datetime = START,
    role: AssignmentRole = AssignmentRole.lead,
    clock: Clock | None = Clock.sign,
) -> Assignment:
    hours = {c: getattr(policy, f"{c.value}_limit") for c in Clock}
    assignment = Assignment(
        ticket_id=saved_id(ticket),
        unit_id=saved_id(unit),
        role=role,
        policy_id=saved_id(policy),
        dispatched_by="system",
        started_at=start,
        sign_due_at=start + hours[Clock.sign] * H,
        reply_due_at=start + hours[Clock.reply] * H,
        close_due_at=start + hours[Clock.close] * H,
    )
    arm(assignment, clock=clock, policy=policy, calendar=CALENDAR)
    session.add(assignment)
    session.flush()
    return assignment


def settings_for(
    tmp_path, *, smtp_port: int | None = None, webhook_url: str | None = None
) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port) if smtp_port else SmtpSettings(),
        webhook=WebhookSettings(url=webhook_url, secret="s3cret")
        if webhook_url
        else WebhookSettings(),
    )


def savepoint_factory(session: Session) -> Callable[[], Session]:
    """Sessions on the test's connection: each unit of work the sweep commits becomes a
    savepoint release inside the test's rolled-back transaction."""
    return lambda: Session(
        bind=session.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


class Scene:
    """One unit with two handlers (one of them its head), an inactive handler, a handler
    elsewhere, two supervisors and an operator; one ticket with an armed lead assignment."""

    def __init__(self, session: Session) -> None:
        self.unit = make_unit(session, "URBAN", head_email="urban-head@units.example.org")
        self.other = make_unit(session, "WATER")
        self.handler = make_user(
            session, "urban.handler", Role.handler, self.unit, email="urban@units.example.org"
        )
        self.head = make_user(
            session,
            "urban.head",
            Role.handler,
            self.unit,
            is_head=True,
            email="head@units.example.org",
        )
        make_user(
            session,
            "urban.gone",
            Role.handler,
            self.unit,
            active=False,
            email="gone@units.example.org",
        )
        self.stranger = make_user(session, "water.handler", Role.handler, self.other)
        self.supervisors = [
            make_user(session, f"sup{i}", Role.supervisor, email=f"sup{i}@12345.example.org")
            for i in (1, 2)
        ]
        self.operator = make_user(session, "op", Role.operator)
        self.policy = make_policy(session)
        self.ticket = make_ticket(session)
        self.assignment = make_assignment(
            session, ticket=self.ticket, unit=self.unit, policy=self.policy
        )


def swept(session: Session, factory: Callable[[], Session], **kwargs) -> escalation.SweepResult:
    """Sweep, then forget what the test's session holds: the sweep changed it elsewhere."""
    result = sweep(factory, **kwargs)
    session.expire_all()
    return result


def fired(session: Session, assignment: Assignment) -> list[Escalation]:
    return list(
        session.scalars(
            select(Escalation)
            .where(col(Escalation.assignment_id) == assignment.id)
            .order_by(col(Escalation.level))
        )
    )


def escalation_notes(session: Session, ticket: Ticket) -> list[TicketEvent]:
    return [
        e
        for e in tickets.events_of(session, saved_id(ticket))
        if e.data.get("kind") == "escalation"
    ]
