"""Request bodies and response shapes of the JSON API that are not a model's own schema,
and the presenters that turn rows into them for a given user (masking what they may not
see)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from sqlmodel import Session

from accounts import privacy
from accounts.models import Role, User
from core.db import saved_id
from dispatch import units as unit_service
from dispatch.assignments import assignments_of
from dispatch.handling import RETURN_REASONS
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    ClockUnit,
    EscalationKind,
    ExtensionStatus,
    Unit,
    UnitLevel,
)
from dispatch.routing import DispatchResult
from hotline.open311.requests import SENDER_CONTACT
from tickets.models import (
    Channel,
    RequestType,
    Satisfaction,
    Status,
    Ticket,
    TicketEvent,
    TicketEventRead,
    TicketRead,
    Urgency,
)
from web.deps import IsoDateTime, RowId


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---------------------------------------------------------------- tickets


class TicketQuery(BaseModel):
    status: list[Status] = []
    channel: Channel | None = None
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    district: str | None = Field(default=None, max_length=64)
    category: str | None = Field(
        default=None, pattern=r"^[0-9]{2,12}$", description="category code or a prefix of it"
    )
    created_from: IsoDateTime | None = None
    created_to: IsoDateTime | None = Field(default=None, description="exclusive")
    q: str | None = Field(default=None, min_length=1, max_length=200)
    caller_phone: str | None = Field(default=None, max_length=32)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


class TicketPage(BaseModel):
    items: list[TicketRead]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class CloseAtIntakeBody(_Body):
    answer: str = Field(min_length=1, max_length=5000)


class MergeBody(_Body):
    parent_id: RowId
    reason: str | None = Field(default=None, max_length=2000)


class AssignmentRead(BaseModel):
    id: int
    ticket_id: int
    unit_id: int
    unit_code: str
    unit_name: str
    role: AssignmentRole
    status: AssignmentStatus
    policy_id: int
    rule_name: str | None
    dispatched_by: str
    started_at: datetime
    sign_due_at: datetime
    reply_due_at: datetime
    close_due_at: datetime
    signed_at: datetime | None
    replied_at: datetime | None
    ended_at: datetime | None
    reply: str | None
    return_reason_code: str | None
    return_reason: str | None
    extension_count: int
    escalation_clock: Clock | None
    escalation_level: int
    next_escalation_at: datetime | None


class TicketWithAssignments(BaseModel):
    ticket: TicketRead
    assignments: list[AssignmentRead] = Field(
        description="every unit's share, withdrawn ones included, oldest first"
    )


# A caller's identity also turns up in the free text: the description is often the call's
# transcript ("我叫张三，电话138…"), and a reply may repeat it.
_FREE_TEXT = ("title", "description", "request", "answer", "reply")
_MASKED = ("caller_name", "caller_phone", *_FREE_TEXT)


def ticket_read(ticket: Ticket, user: User) -> TicketRead:
    read = TicketRead.model_validate(ticket)
    if not ticket.confidential or privacy.sees_caller_identity(user):
        return read
    return read.model_copy(
        update=_masked_caller(read.model_dump(include=set(_MASKED)), names=[ticket.caller_name])
    )


def _masked_caller(fields: dict[str, Any], *, names: list[str | None]) -> dict[str, Any]:
    masked = dict(fields)
    if masked.get("caller_name"):
        masked["caller_name"] = privacy.mask_name(masked["caller_name"])
    if masked.get("caller_phone"):
        masked["caller_phone"] = privacy.mask_phone(masked["caller_phone"])
    for field in _FREE_TEXT:
        if isinstance(masked.get(field), str):
            masked[field] = privacy.mask_text(masked[field], names=names)
    return masked


def event_reads(events: list[TicketEvent], ticket: Ticket, user: User) -> list[TicketEventRead]:
    """The audit carries every value a field ever had, the caller's identity included: every
    name the caller ever had is masked wherever it appears, and the sender's contact kept on
    a note (an Open311 request's e-mail and account id) is left out, under the rule of the
    caller's name and number."""
    reads = [TicketEventRead.model_validate(e) for e in events]
    if not ticket.confidential or privacy.sees_caller_identity(user):
        return reads
    names = [ticket.caller_name] + [
        r.data["set"].get("caller_name") for r in reads if isinstance(r.data.get("set"), dict)
    ]
    return [
        r.model_copy(
            update={
                "reason": privacy.mask_text(r.reason, names=names) if r.reason else r.reason,
                "data": _masked_data(r.data, names=names),
            }
        )
        for r in reads
    ]


def _masked_data(data: dict[str, Any], *, names: list[str | None]) -> dict[str, Any]:
    masked = {k: v for k, v in data.items() if k not in SENDER_CONTACT}
    if isinstance(masked.get("set"), dict):
        masked["set"] = _masked_caller(masked["set"], names=names)
    return masked


def assignment_reads(session: Session, assignments: list[Assignment]) -> list[AssignmentRead]:
    units = unit_service.units_by_id(session, [a.unit_id for a in assignments])
    return [
        AssignmentRead(
            **a.model_dump(), unit_code=units[a.unit_id].code, unit_name=units[a.unit_id].name
        )
        for a in assignments
    ]


def assignment_read(session: Session, assignment: Assignment) -> AssignmentRead:
    return assignment_reads(session, [assignment])[0]


def ticket_with_assignments(
    session: Session, ticket: Ticket, user: User, assignments: list[Assignment] | None = None
) -> TicketWithAssignments:
    """`assignments` saves a query when the caller already has the ticket's assignments."""
    if assignments is None:
        assignments = assignments_of(session, ticket_id=saved_id(ticket))
    return TicketWithAssignments(
        ticket=ticket_read(ticket, user), assignments=assignment_reads(session, assignments)
    )


# ---------------------------------------------------------------- the workflow


class DispatchBody(_Body):
    lead_unit_code: str | None = Field(default=None, description="omit to let the rules decide")
    co_unit_codes: list[str] = []
    policy_name: str | None = None
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _manual_needs_lead(self) -> DispatchBody:
        if self.lead_unit_code is None and (self.co_unit_codes or self.policy_name):
            raise ValueError("co_unit_codes and policy_name need a lead_unit_code")
        return self


class DispatchRead(TicketWithAssignments):
    rule: str | None = Field(description="the rule that routed the ticket")
    queued: bool = Field(description="no rule routed it: it waits in the manual queue")
    explanation: dict[str, Any] = Field(description="how each rule judged the ticket")


def dispatch_read(session: Session, result: DispatchResult, user: User) -> DispatchRead:
    return DispatchRead(
        **ticket_with_assignments(session, result.ticket, user).model_dump(),
        rule=result.rule,
        queued=result.queued,
        explanation=result.explanation,
    )


class ReasonBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


class ReviewReplyBody(_Body):
    approve: StrictBool
    reason: str | None = Field(
        default=None, max_length=2000, description="required when sending the reply back"
    )


class CallbackBody(_Body):
    satisfaction: Satisfaction
    comment: str | None = Field(default=None, max_length=2000)


class ReviewReturnBody(_Body):
    uphold: StrictBool = Field(
        description="true: the unit keeps the ticket; false: 改派 to lead_unit_code"
    )
    reason: str | None = Field(default=None, max_length=2000)
    lead_unit_code: str | None = None
    co_unit_codes: list[str] = []
    policy_name: str | None = None


class ReplyBody(_Body):
    text: str = Field(min_length=1, max_length=5000)


class ReturnBody(_Body):
    reason_code: str = Field(
        description="one of "
        + ", ".join(f"{code} ({label})" for code, label in RETURN_REASONS.items())
    )
    reason: str = Field(min_length=1, max_length=2000)


class ExtensionRequestBody(_Body):
    extend_by: float = Field(gt=0, le=1000, allow_inf_nan=False)
    extend_unit: ClockUnit
    reason: str = Field(min_length=1, max_length=2000)


class ExtensionDecisionBody(_Body):
    approve: StrictBool
    reason: str | None = Field(default=None, max_length=2000)


class ExtensionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    assignment_id: int
    requested_by: str
    requested_at: datetime
    extend_by: float
    extend_unit: ClockUnit
    reason: str
    status: ExtensionStatus
    old_due_at: datetime
    new_due_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None


class EscalationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    assignment_id: int
    unit_id: int
    clock: Clock
    level: int
    kind: EscalationKind
    deadline: datetime
    scheduled_at: datetime
    fired_at: datetime
    addressee: str
    message: str
    acknowledged_at: datetime | None
    acknowledged_by_id: int | None


# ---------------------------------------------------------------- units and users


class UnitRead(BaseModel):
    id: int
    code: str
    name: str
    level: UnitLevel
    parent_code: str | None
    district: str | None
    email: str | None
    head_name: str | None
    head_email: str | None
    active: bool


class UnitNode(UnitRead):
    children: list[UnitNode] = []


def unit_read(unit: Unit, units: dict[int, Unit]) -> UnitRead:
    parent = units.get(unit.parent_id) if unit.parent_id else None
    return UnitRead(
        **unit.model_dump(exclude={"parent_id"}), parent_code=parent.code if parent else None
    )


def unit_tree(units: list[Unit]) -> list[UnitNode]:
    by_id = {saved_id(u): u for u in units}
    nodes = {u.id: UnitNode(**unit_read(u, by_id).model_dump()) for u in units}
    roots = []
    for unit in units:
        if unit.parent_id in nodes:
            nodes[unit.parent_id].children.append(nodes[unit.id])
        else:
            roots.append(nodes[unit.id])
    return roots


class UserRead(BaseModel):
    id: int
    username: str
    display_name: str
    role: Role
    unit_code: str | None
    is_head: bool
    email: str | None
    active: bool
    created_at: datetime


class UserWithToken(UserRead):
    token: str = Field(description="shown this once; only its hash is stored")


def user_reads(session: Session, users: list[User]) -> list[UserRead]:
    units = unit_service.units_by_id(session, [u.unit_id for u in users])
    return [
        UserRead(
            **u.model_dump(exclude={"unit_id", "token_hash"}),
            unit_code=units[u.unit_id].code if u.unit_id else None,
        )
        for u in users
    ]


def user_read(session: Session, user: User) -> UserRead:
    return user_reads(session, [user])[0]


def user_with_token(session: Session, user: User, token: str) -> UserWithToken:
    return UserWithToken(**user_read(session, user).model_dump(), token=token)
