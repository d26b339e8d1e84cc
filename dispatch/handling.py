"""The handling unit's work on an assignment: 签收 sign for it, 办理 start, 回复 reply, 退单
return a ticket that is not theirs, ask for a 延期 extension, put one of its handlers in
charge, log its contacts with the caller and its notes. A handler acts for their own unit
only; each step moves the assignment's clocks or writes the ticket's audit. The unit's work
list and its running clocks are dispatch.unit_work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import saved_id
from core.errors import Conflict, InvalidInput
from dispatch import escalation, reference
from dispatch.assignments import (
    LIVE,
    Actor,
    get_assignment,
    lock_ticket,
    require_own_unit,
    required,
    who,
)
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    ClockUnit,
    ExtensionRequest,
    ExtensionStatus,
    SlaPolicy,
)
from dispatch.rows import existing
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import TicketEvent

RETURN_REASONS = {"wrong_locality": "属地不符", "wrong_mandate": "职能不符", "other": "其他"}


# ---------------------------------------------------------------- the unit's work


def sign(session: Session, *, assignment_id: int, actor: Actor, now: datetime) -> Assignment:
    """签收. The sign-for clock stops and the reply clock is watched from now on."""
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    ticket = lock_ticket(session, assignment.ticket_id)
    if assignment.status != AssignmentStatus.dispatched:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}, not awaiting sign-for",
            status=assignment.status.value,
        )
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.sign,
            actor=who(actor),
            now=now,
            data={"assignment_id": assignment.id, "on_time": now <= assignment.sign_due_at},
        )
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_signed",
            data={"assignment_id": assignment.id, "on_time": now <= assignment.sign_due_at},
        )
    assignment.status = AssignmentStatus.signed
    assignment.signed_at = now
    policy = existing(session, SlaPolicy, assignment.policy_id)
    escalation.arm(
        assignment, clock=Clock.reply, policy=policy, calendar=reference.snapshot(session).calendar
    )
    session.add(assignment)
    return assignment


def start(session: Session, *, assignment_id: int, actor: Actor, now: datetime) -> Assignment:
    """办理: the lead unit starts work (co-handling units just sign and reply)."""
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    if assignment.role != AssignmentRole.lead:
        raise InvalidInput("co-handling units reply directly after signing for the ticket")
    if assignment.status != AssignmentStatus.signed:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; sign for it first",
            status=assignment.status.value,
        )
    ticket = lock_ticket(session, assignment.ticket_id)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.start,
        actor=who(actor),
        now=now,
        data={"assignment_id": assignment.id},
    )
    return assignment


def reply(
    session: Session, *, assignment_id: int, text: str, actor: Actor, now: datetime
) -> Assignment:
    """回复. The lead unit's reply goes to the centre for review; a co-handling unit's
    reply is its contribution, recorded on the ticket for the lead and the centre."""
    text = required(text, "a reply needs text")
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    if assignment.status != AssignmentStatus.signed:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; only a "
            f"signed assignment can reply",
            status=assignment.status.value,
        )
    ticket = lock_ticket(session, assignment.ticket_id)
    on_time = now <= assignment.reply_due_at
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.reply,
            actor=who(actor),
            now=now,
            changes={"reply": text},
            data={"assignment_id": assignment.id, "on_time": on_time},
        )
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_reply",
            reason=text,
            data={"assignment_id": assignment.id, "on_time": on_time},
        )
    assignment.status = AssignmentStatus.replied
    assignment.replied_at = now
    assignment.reply = text
    escalation.disarm(assignment)
    session.add(assignment)
    return assignment


# ---------------------------------------------------------------- 退单 return


def return_ticket(
    session: Session,
    *,
    assignment_id: int,
    reason_code: str,
    reason: str,
    actor: Actor,
    now: datetime,
) -> Assignment:
    """退单: the lead unit says the ticket is not theirs; the centre reviews it. A
    co-handling unit that is not concerned is simply released."""
    if reason_code not in RETURN_REASONS:
        raise InvalidInput(
            f"reason_code must be one of {sorted(RETURN_REASONS)}", reason_code=reason_code
        )
    required(reason, "a return needs a reason the centre can review")
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; it can no "
            f"longer be returned",
            status=assignment.status.value,
        )
    ticket = lock_ticket(session, assignment.ticket_id)
    data = {
        "assignment_id": assignment.id,
        "reason_code": reason_code,
        "reason_label": RETURN_REASONS[reason_code],
    }
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.return_,
            actor=who(actor),
            now=now,
            reason=reason,
            changes={"return_count": ticket.return_count + 1},
            data=data,
        )
        assignment.status = AssignmentStatus.returned
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_released",
            reason=reason,
            data=data,
        )
        assignment.status = AssignmentStatus.withdrawn
        assignment.ended_at = now
    assignment.return_reason_code = reason_code
    assignment.return_reason = reason
    escalation.disarm(assignment)
    session.add(assignment)
    return assignment


# ---------------------------------------------------------------- 延期 extension


def request_extension(
    session: Session,
    *,
    assignment_id: int,
    extend_by: float,
    extend_unit: ClockUnit,
    reason: str,
    actor: Actor,
    now: datetime,
) -> ExtensionRequest:
    """延期 must be asked before the reply deadline; one open request at a time."""
    if extend_by <= 0:
        raise InvalidInput("extend_by must be positive")
    required(reason, "an extension request needs a reason")
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; nothing to extend",
            status=assignment.status.value,
        )
    if now >= assignment.reply_due_at:
        raise Conflict(
            "an extension must be asked before the deadline; this one passed at "
            f"{assignment.reply_due_at.isoformat()}",
            deadline=assignment.reply_due_at.isoformat(),
        )
    pending = session.scalars(
        select(ExtensionRequest).where(
            col(ExtensionRequest.assignment_id) == assignment.id,
            col(ExtensionRequest.status) == ExtensionStatus.pending,
        )
    ).first()
    if pending is not None:
        raise Conflict(
            f"extension request {pending.id} is still awaiting a decision", extension_id=pending.id
        )
    ticket = lock_ticket(session, assignment.ticket_id)
    request = ExtensionRequest(
        ticket_id=saved_id(ticket),
        assignment_id=saved_id(assignment),
        requested_by=who(actor),
        requested_at=now,
        extend_by=extend_by,
        extend_unit=ClockUnit(extend_unit),
        reason=reason,
        old_due_at=assignment.reply_due_at,
    )
    session.add(request)
    session.flush()
    tickets.add_note(
        session,
        ticket=ticket,
        actor=who(actor),
        now=now,
        kind="extension_requested",
        reason=reason,
        data={
            "extension_id": request.id,
            "assignment_id": assignment.id,
            "extend_by": extend_by,
            "extend_unit": ClockUnit(extend_unit).value,
        },
    )
    return request


# ---------------------------------------------------------------- within the unit


def assign_handler(
    session: Session, *, assignment_id: int, assignee_id: int | None, actor: Actor, now: datetime
) -> Assignment:
    """分派 within the unit: one of the unit's handlers is in charge (None: nobody in
    particular). Another unit's handler, or a person who is not a handler, cannot be."""
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    if assignment.status not in LIVE:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; it is no longer "
            f"the unit's work",
            status=assignment.status.value,
        )
    assignee = None
    if assignee_id is not None:
        assignee = session.get(User, assignee_id)
        if (
            assignee is None
            or not assignee.active
            or assignee.role != Role.handler
            or assignee.unit_id != assignment.unit_id
        ):
            raise InvalidInput(
                "the person in charge must be an active handler of the unit",
                assignee_id=assignee_id,
            )
    ticket = lock_ticket(session, assignment.ticket_id)
    assignment.assignee_id = assignee_id
    session.add(assignment)
    tickets.add_note(
        session,
        ticket=ticket,
        actor=who(actor),
        now=now,
        kind="assigned",
        data={
            "assignment_id": assignment.id,
            "assignee": assignee.username if assignee else None,
            "assignee_name": assignee.display_name if assignee else None,
        },
    )
    return assignment


CONTACT_METHODS = ("phone", "visit", "sms", "other")


def log_contact(
    session: Session,
    *,
    assignment_id: int,
    method: str,
    text: str,
    actor: Actor,
    now: datetime,
) -> TicketEvent:
    """联系记录: the unit called, visited or wrote to the caller; on the ticket's audit."""
    if method not in CONTACT_METHODS:
        raise InvalidInput(f"method must be one of {list(CONTACT_METHODS)}", method=method)
    return _unit_note(
        session,
        assignment_id=assignment_id,
        kind="contact",
        text=required(text, "a contact needs what was said"),
        data={"method": method},
        actor=actor,
        now=now,
    )


def add_unit_note(
    session: Session, *, assignment_id: int, text: str, actor: Actor, now: datetime
) -> TicketEvent:
    """A working note of the unit on the ticket (备注)."""
    return _unit_note(
        session,
        assignment_id=assignment_id,
        kind="unit_note",
        text=required(text, "a note needs text"),
        data={},
        actor=actor,
        now=now,
    )


def _unit_note(
    session: Session,
    *,
    assignment_id: int,
    kind: str,
    text: str,
    data: dict[str, Any],
    actor: Actor,
    now: datetime,
) -> TicketEvent:
    assignment = get_assignment(session, assignment_id)
    require_own_unit(actor, assignment)
    ticket = lock_ticket(session, assignment.ticket_id)
    return tickets.add_note(
        session,
        ticket=ticket,
        actor=who(actor),
        now=now,
        kind=kind,
        reason=text,
        data={"assignment_id": assignment.id, **data},
    )
