"""Units (承办单位), rules, SLA policies, calendars, assignments with
stored deadlines, escalation steps, notifications and extension requests."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type


class UnitLevel(StrEnum):
    centre = "centre"  # the 12345 centre itself
    city = "city"  # 市级部门
    district = "district"  # 区县
    street = "street"  # 街道/乡镇
    enterprise = "enterprise"  # utilities: water, power, gas, heating


class Unit(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True, index=True)
    name: str = Field(max_length=100)
    level: UnitLevel = Field(sa_type=enum_type(UnitLevel))
    parent_id: int | None = Field(default=None, foreign_key="unit.id", index=True)
    district: str | None = Field(default=None, max_length=64)  # locality it serves
    email: str | None = Field(default=None, max_length=200)
    head_name: str | None = Field(default=None, max_length=100)
    head_email: str | None = Field(default=None, max_length=200)
    active: bool = True


class Rule(SQLModel, table=True):
    """A dispatch rule as data. `conditions` and `actions` are validated by dispatch.rule_specs."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True, index=True)
    priority: int = Field(default=100, index=True)  # lower runs first
    enabled: bool = True
    pack: str = Field(default="custom", max_length=64)
    description: str | None = Field(default=None, max_length=1000)
    conditions: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    actions: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class RuleRevision(SQLModel, table=True):
    """One row: the revision of all reference data a dispatch reads — rules, units, SLA
    policies, calendar days. Every writer of those bumps it (dispatch.reference.bump), so
    each process knows when its cached snapshot is stale."""

    __tablename__ = "rule_revision"

    id: int = Field(default=1, primary_key=True)
    revision: int = 0


class ClockUnit(StrEnum):
    hours = "hours"  # 24/7
    workdays = "workdays"  # Chinese working days (holidays off, make-up days on)


class SlaPolicy(SQLModel, table=True):
    __tablename__ = "sla_policy"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    description: str | None = Field(default=None, max_length=500)
    # what it applies to (None = any); the most specific active match wins
    request_type: str | None = Field(default=None, max_length=16)
    urgency: str | None = Field(default=None, max_length=16)
    category_prefix: str | None = Field(default=None, max_length=12)
    sign_limit: float = 24
    sign_unit: ClockUnit = Field(default=ClockUnit.hours, sa_type=enum_type(ClockUnit))
    reply_limit: float = 7
    reply_unit: ClockUnit = Field(default=ClockUnit.workdays, sa_type=enum_type(ClockUnit))
    close_limit: float = 15
    close_unit: ClockUnit = Field(default=ClockUnit.workdays, sa_type=enum_type(ClockUnit))
    warn_ratio: float = 0.75
    # escalation chain: list of {"kind", "after_breach_hours"}; validated by dispatch.sla
    chain: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    active: bool = True


class CalendarDay(SQLModel, table=True):
    """An administrator's override of the working-day calendar (a holiday or a make-up
    working day); wins over chinese-calendar and covers years it does not know yet."""

    __tablename__ = "calendar_day"

    day: date = Field(primary_key=True)
    is_workday: bool
    name: str | None = Field(default=None, max_length=64)


class AssignmentRole(StrEnum):
    lead = "lead"  # 主办
    co = "co"  # 协办


class AssignmentStatus(StrEnum):
    dispatched = "dispatched"
    signed = "signed"
    replied = "replied"
    returned = "returned"  # 退单 awaiting review
    withdrawn = "withdrawn"  # superseded by a re-dispatch or merge
    completed = "completed"  # the ticket closed


class Clock(StrEnum):
    sign = "sign"
    reply = "reply"
    close = "close"


class Assignment(SQLModel, table=True):
    """One unit's share of one ticket, with its own clocks. History is kept: a re-dispatch
    withdraws the old assignment and adds a new one."""

    __table_args__ = (
        Index("ix_assignment_next_escalation", "next_escalation_at"),
        Index("ix_assignment_unit_status", "unit_id", "status"),
        # hotline.figures: the lead assignments started since the period began, one range
        Index("ix_assignment_role_started", "role", "started_at", "ticket_id", "unit_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    unit_id: int = Field(foreign_key="unit.id")
    role: AssignmentRole = Field(sa_type=enum_type(AssignmentRole))
    status: AssignmentStatus = Field(
        default=AssignmentStatus.dispatched, sa_type=enum_type(AssignmentStatus)
    )
    policy_id: int = Field(foreign_key="sla_policy.id")
    rule_name: str | None = Field(default=None, max_length=120)
    dispatched_by: str = Field(max_length=64)
    started_at: datetime = Field(sa_type=UTCDateTime)
    sign_due_at: datetime = Field(sa_type=UTCDateTime)
    reply_due_at: datetime = Field(sa_type=UTCDateTime)
    close_due_at: datetime = Field(sa_type=UTCDateTime)
    signed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    replied_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reply: str | None = Field(default=None, max_length=5000)
    return_reason_code: str | None = Field(default=None, max_length=32)
    return_reason: str | None = Field(default=None, max_length=2000)
    extension_count: int = 0
    # escalation state: which clock is being watched, the last level fired, and when the
    # next level is due (NULL when nothing more can fire) — the sweep's indexed range query
    escalation_clock: Clock | None = Field(default=Clock.sign, sa_type=enum_type(Clock))
    escalation_level: int = 0
    next_escalation_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # the unit's own handler in charge (分派 within the unit); None: anyone in the unit
    assignee_id: int | None = Field(default=None, foreign_key="user.id", index=True)


class EscalationKind(StrEnum):
    warning = "warning"  # 预警 (yellow), before the deadline
    chase = "chase"  # 催办, at breach
    supervision = "supervision"  # 督办 to the unit head
    leadership = "leadership"  # 中心领导 / 通报


class Escalation(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("assignment_id", "clock", "level", "deadline", name="uq_escalation_step"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    assignment_id: int = Field(foreign_key="assignment.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    clock: Clock = Field(sa_type=enum_type(Clock))
    level: int
    kind: EscalationKind = Field(sa_type=enum_type(EscalationKind))
    deadline: datetime = Field(sa_type=UTCDateTime)
    scheduled_at: datetime = Field(sa_type=UTCDateTime)  # when it was due to fire
    fired_at: datetime = Field(sa_type=UTCDateTime)  # when a sweep fired it
    addressee: str = Field(max_length=32)  # handlers | head | leadership
    recipients: list[int] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    message: str = Field(max_length=2000)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by_id: int | None = Field(default=None, foreign_key="user.id")


class NotificationStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"


class Notification(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    channel: str = Field(max_length=16)  # inapp | email | webhook
    address: str | None = Field(default=None, max_length=300)
    subject: str = Field(max_length=300)
    body: str = Field(max_length=5000)
    status: NotificationStatus = Field(
        default=NotificationStatus.pending, sa_type=enum_type(NotificationStatus)
    )
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(sa_type=UTCDateTime)
    # set while a worker is sending it, so no other worker sends it too
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ExtensionStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    refused = "refused"


class ExtensionRequest(SQLModel, table=True):
    __tablename__ = "extension_request"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    assignment_id: int = Field(foreign_key="assignment.id", index=True)
    requested_by: str = Field(max_length=64)
    requested_at: datetime = Field(sa_type=UTCDateTime)
    extend_by: float
    extend_unit: ClockUnit = Field(sa_type=enum_type(ClockUnit))
    reason: str = Field(max_length=2000)
    status: ExtensionStatus = Field(
        default=ExtensionStatus.pending, sa_type=enum_type(ExtensionStatus)
    )
    old_due_at: datetime = Field(sa_type=UTCDateTime)
    new_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decision_reason: str | None = Field(default=None, max_length=2000)


class Attachment(SQLModel, table=True):
    """A file a unit sent with its reply. The bytes live in a file store (hotline.attachments),
    under `storage_key`; who may fetch it is whoever may see the ticket."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    assignment_id: int = Field(foreign_key="assignment.id", index=True)
    filename: str = Field(max_length=200)  # as uploaded, for the download's name
    content_type: str = Field(max_length=100)
    size: int
    sha256: str = Field(max_length=64)
    storage_key: str = Field(max_length=200, unique=True)
    uploaded_by: str = Field(max_length=64)
    uploaded_at: datetime = Field(sa_type=UTCDateTime)


class CalendarYear(SQLModel, table=True):
    """An administrator's word on a year of the working calendar. China publishes next
    year's holidays in November or December; until an administrator has checked the
    calendar against the notice and marked the year known, its working-day deadlines are
    counted from the best data there is and shown as "calendar not confirmed". Withdrawing
    keeps the row (known false) with who withdrew it and when."""

    __tablename__ = "calendar_year"

    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    known: bool = False
    marked_by: int | None = Field(default=None, foreign_key="user.id")
    marked_at: datetime = Field(sa_type=UTCDateTime)
    note: str | None = Field(default=None, max_length=500)
