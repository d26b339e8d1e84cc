"""Ticket (工单), its append-only audit (TicketEvent), numbering and idempotency keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import CheckConstraint, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type


class Channel(StrEnum):
    phone = "phone"
    web = "web"
    api = "api"
    open311 = "open311"
    walk_in = "walk_in"


class RequestType(StrEnum):
    consultation = "consultation"  # 咨询
    help = "help"  # 求助
    complaint = "complaint"  # 投诉
    report = "report"  # 举报
    suggestion = "suggestion"  # 建议
    praise = "praise"  # 表扬


class Urgency(StrEnum):
    normal = "normal"  # 一般
    urgent = "urgent"  # 紧急
    very_urgent = "very_urgent"  # 特急


class Status(StrEnum):
    intake = "intake"  # 受理
    pending_dispatch = "pending_dispatch"  # manual dispatch queue (no rule fired)
    dispatched = "dispatched"  # 派单
    signed = "signed"  # 签收
    in_progress = "in_progress"  # 办理
    replied = "replied"  # 回复, awaiting centre review
    reviewed = "reviewed"  # 审核通过, awaiting callback
    returned = "returned"  # 退单, awaiting centre review
    reopened = "reopened"  # 重办 after a dissatisfied callback
    merged = "merged"  # 并单 into a parent ticket
    closed = "closed"  # 办结
    archived = "archived"  # 归档


class Satisfaction(StrEnum):
    satisfied = "satisfied"  # 满意
    basically_satisfied = "basically_satisfied"  # 基本满意
    dissatisfied = "dissatisfied"  # 不满意


class Ticket(SQLModel, table=True):
    __table_args__ = (
        Index("ix_ticket_status_created", "status", "created_at", "id"),
        Index("ix_ticket_created_id", "created_at", "id"),
        # The manual-dispatch queue, most urgent first then the longest waiting: one index
        # range per urgency, read in order a page at a time (web/pages/queues_data.py);
        # without it each page sorted the whole queue.
        Index("ix_ticket_status_urgency_created", "status", "urgency", "created_at", "id"),
        # 重复诉求率 (hotline.figures): the callers and categories of a period and the
        # window before it, read from the index alone
        Index("ix_ticket_created_caller", "created_at", "caller_phone", "category_code", "id"),
        # Open311 GET requests: a service code's requests by status in the 90-day window,
        # newest first (bench/open311.py)
        Index("ix_ticket_category_status_created", "category_code", "status", "created_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=32, unique=True, index=True)
    channel: Channel = Field(sa_type=enum_type(Channel))
    status: Status = Field(default=Status.intake, sa_type=enum_type(Status))
    # who
    caller_name: str | None = Field(default=None, max_length=100)
    caller_phone: str | None = Field(default=None, max_length=32, index=True)
    confidential: bool = False
    # when
    occurred_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # where
    address: str | None = Field(default=None, max_length=300)
    district: str | None = Field(default=None, max_length=64, index=True)
    street: str | None = Field(default=None, max_length=64)
    # WGS-84 where the caller or a map located it (the hot-spot map; Open311 lat/long)
    latitude: float | None = None
    longitude: float | None = None
    # what happened / what is asked
    title: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=20000)
    request: str | None = Field(default=None, max_length=2000)
    request_type: RequestType = Field(default=RequestType.help, sa_type=enum_type(RequestType))
    urgency: Urgency = Field(default=Urgency.normal, sa_type=enum_type(Urgency))
    category_code: str | None = Field(default=None, max_length=12, index=True)
    category_name: str | None = Field(default=None, max_length=100)
    # outcome
    answer: str | None = Field(default=None, max_length=5000)  # direct answer at intake
    reply: str | None = Field(default=None, max_length=5000)  # the reply sent to the caller
    satisfaction: Satisfaction | None = Field(default=None, sa_type=enum_type(Satisfaction))
    parent_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    return_count: int = 0
    reopen_count: int = 0
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str | None = Field(default=None, max_length=64)
    event_seq: int = 0  # sequence number of the last event, for ordering and rebuilds


class TicketEvent(SQLModel, table=True):
    """Append-only audit of every change to a ticket."""

    __tablename__ = "ticket_event"
    __table_args__ = (
        UniqueConstraint("ticket_id", "seq", name="uq_ticket_event_seq"),
        # hotline.figures: the tickets with an action since the period began, one range
        Index("ix_ticket_event_action_at", "action", "at", "ticket_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    seq: int
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    from_status: Status | None = Field(default=None, sa_type=enum_type(Status))
    to_status: Status | None = Field(default=None, sa_type=enum_type(Status))
    reason: str | None = Field(default=None, max_length=2000)
    rule: str | None = Field(default=None, max_length=120)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))


class MergeDismissal(SQLModel, table=True):
    """A dispatcher's word that two tickets are not the same request: the pair is never
    offered as a merge candidate again. One row per pair, its ids in ascending order
    (``ticket_id < other_ticket_id``), so the pair is found from either side."""

    __tablename__ = "merge_dismissal"
    __table_args__ = (
        UniqueConstraint("ticket_id", "other_ticket_id", name="uq_merge_dismissal_pair"),
        CheckConstraint("ticket_id < other_ticket_id", name="ck_merge_dismissal_order"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id")
    other_ticket_id: int = Field(foreign_key="ticket.id", index=True)
    by_user_id: int | None = Field(default=None, foreign_key="user.id")
    at: datetime = Field(sa_type=UTCDateTime)
    reason: str | None = Field(default=None, max_length=2000)


class TicketCounter(SQLModel, table=True):
    """Per-day sequence behind human-readable ticket numbers (YYYYMMDD-NNNNNN)."""

    __tablename__ = "ticket_counter"

    day: str = Field(primary_key=True, max_length=8)
    last: int = 0


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=64)  # who submitted: a user, an integrator, the SIP edge
    key: str = Field(max_length=200)
    fingerprint: str = Field(max_length=64)  # hash of the payload, to catch key reuse
    ticket_id: int = Field(foreign_key="ticket.id")
    created_at: datetime = Field(sa_type=UTCDateTime)


# ---------------------------------------------------------------- schemas


class TicketCreate(BaseModel):
    """What intake needs. Free text is stripped; the five elements are optional but encouraged."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    channel: Channel = Channel.api
    caller_name: str | None = PField(default=None, max_length=100)
    caller_phone: str | None = PField(default=None, max_length=32, pattern=r"^\+?[0-9\- ]{3,32}$")
    confidential: bool = False
    occurred_at: datetime | None = None
    address: str | None = PField(default=None, max_length=300)
    district: str | None = PField(default=None, max_length=64)
    street: str | None = PField(default=None, max_length=64)
    latitude: float | None = PField(default=None, ge=-90, le=90)
    longitude: float | None = PField(default=None, ge=-180, le=180)
    title: str | None = PField(default=None, max_length=200)
    description: str = PField(min_length=1, max_length=20000)
    request: str | None = PField(default=None, max_length=2000)
    request_type: RequestType = RequestType.help
    urgency: Urgency = Urgency.normal
    category_code: str | None = PField(default=None, pattern=r"^[0-9]{2,12}$")
    category_name: str | None = PField(default=None, max_length=100)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (ISO 8601 with offset)")
        return v


class TicketUpdate(BaseModel):
    """Corrections an operator may make to the intake fields."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    caller_name: str | None = PField(default=None, max_length=100)
    caller_phone: str | None = PField(default=None, max_length=32, pattern=r"^\+?[0-9\- ]{3,32}$")
    confidential: bool | None = None
    occurred_at: datetime | None = None
    address: str | None = PField(default=None, max_length=300)
    district: str | None = PField(default=None, max_length=64)
    street: str | None = PField(default=None, max_length=64)
    latitude: float | None = PField(default=None, ge=-90, le=90)
    longitude: float | None = PField(default=None, ge=-180, le=180)
    title: str | None = PField(default=None, max_length=200)
    description: str | None = PField(default=None, min_length=1, max_length=20000)
    request: str | None = PField(default=None, max_length=2000)
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    category_code: str | None = PField(default=None, pattern=r"^[0-9]{2,12}$")
    category_name: str | None = PField(default=None, max_length=100)


class TicketRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: str
    channel: Channel
    status: Status
    caller_name: str | None
    caller_phone: str | None
    confidential: bool
    occurred_at: datetime | None
    address: str | None
    district: str | None
    street: str | None
    latitude: float | None
    longitude: float | None
    title: str | None
    description: str
    request: str | None
    request_type: RequestType
    urgency: Urgency
    category_code: str | None
    category_name: str | None
    answer: str | None
    reply: str | None
    satisfaction: Satisfaction | None
    parent_id: int | None
    return_count: int
    reopen_count: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class TicketEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    action: str
    from_status: Status | None
    to_status: Status | None
    reason: str | None
    rule: str | None
    data: dict[str, Any]
