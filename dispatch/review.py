"""The centre's review of what the units send it: 审核 a lead unit's reply (approve, or send
it back), a 退单 return (uphold the dispatch, or 改派 to another unit), and 延期 extension
requests (approve or refuse; the queue of them). Each decision resumes or moves the
assignment's clocks and writes the ticket's audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from core.db import saved_id
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import escalation, reference, sla
from dispatch.assignments import LIVE, Actor, lock_ticket, required, who
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    Escalation,
    ExtensionRequest,
    ExtensionStatus,
    SlaPolicy,
    Unit,
)
from dispatch.routing import DispatchResult, manual_dispatch
from dispatch.rows import existing
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import Status, Ticket


def _lead(session: Session, ticket_id: int) -> Assignment | None:
    return session.scalars(
        select(Assignment)
        .where(
            col(Assignment.ticket_id) == ticket_id,
            col(Assignment.role) == AssignmentRole.lead,
            col(Assignment.status).in_(LIVE),
        )
        .order_by(col(Assignment.id).desc())
    ).first()


# ---------------------------------------------------------------- 审核 the lead unit's reply


def review_reply(
    session: Session,
    *,
    ticket_id: int,
    approve: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> Ticket:
    """审核: approve the lead unit's reply, or send it back for more work (the reply clock
    keeps running from where it was — a send-back buys no time)."""
    ticket = lock_ticket(session, ticket_id)
    if approve:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.approve_reply,
            actor=who(actor),
            now=now,
            reason=reason,
        )
        return ticket
    required(reason, "sending a reply back needs a reason for the unit")
    tickets.record(
        session, ticket=ticket, action=Action.send_back, actor=who(actor), now=now, reason=reason
    )
    lead = _lead(session, saved_id(ticket))
    if lead is not None:
        lead.status = AssignmentStatus.signed
        policy = existing(session, SlaPolicy, lead.policy_id)
        escalation.arm(
            lead,
            clock=Clock.reply,
            policy=policy,
            calendar=reference.snapshot(session).calendar,
            level=_fired_levels(session, lead, Clock.reply),
        )
        session.add(lead)
    return ticket


def _fired_levels(session: Session, assignment: Assignment, clock: Clock) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Escalation)
            .where(
                col(Escalation.assignment_id) == assignment.id,
                col(Escalation.clock) == clock,
                col(Escalation.deadline) == getattr(assignment, f"{clock.value}_due_at"),
            )
        )
        or 0
    )


# ---------------------------------------------------------------- 退单 a return


def review_return(
    session: Session,
    *,
    ticket_id: int,
    uphold: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
    lead_unit_code: str | None = None,
    co_unit_codes: Sequence[str] = (),
    policy_name: str | None = None,
) -> DispatchResult:
    """The centre's review of a 退单: uphold the original dispatch (the unit keeps the
    ticket, its clocks as they were) or 改派 re-dispatch to another unit (fresh clocks)."""
    ticket = lock_ticket(session, ticket_id)
    if ticket.status != Status.returned:
        raise Conflict(
            f"ticket {ticket.number} has no return awaiting review", status=ticket.status.value
        )
    returned = session.scalars(
        select(Assignment)
        .where(
            col(Assignment.ticket_id) == ticket.id,
            col(Assignment.status) == AssignmentStatus.returned,
        )
        .order_by(col(Assignment.id).desc())
    ).first()
    if returned is None:
        raise Conflict(f"ticket {ticket.number} has no returned assignment")
    if uphold:
        required(reason, "upholding a dispatch needs a reason for the unit")
        back_to = Status.signed if returned.signed_at else Status.dispatched
        if back_to == Status.signed and _was_in_progress(session, saved_id(ticket)):
            back_to = Status.in_progress
        tickets.record(
            session,
            ticket=ticket,
            action=Action.uphold_return,
            actor=who(actor),
            now=now,
            target=back_to,
            reason=reason,
            data={"assignment_id": returned.id},
        )
        returned.status = (
            AssignmentStatus.signed if returned.signed_at else AssignmentStatus.dispatched
        )
        clock = Clock.reply if returned.signed_at else Clock.sign
        escalation.arm(
            returned,
            clock=clock,
            policy=existing(session, SlaPolicy, returned.policy_id),
            calendar=reference.snapshot(session).calendar,
            level=_fired_levels(session, returned, clock),
        )
        session.add(returned)
        return DispatchResult(ticket, [returned])
    if not lead_unit_code:
        raise InvalidInput("re-dispatching a returned ticket needs the new lead unit")
    if lead_unit_code == existing(session, Unit, returned.unit_id).code:
        raise InvalidInput("re-dispatch to the unit that returned it: uphold the dispatch instead")
    return manual_dispatch(
        session,
        ticket_id=saved_id(ticket),
        lead_unit_code=lead_unit_code,
        co_unit_codes=co_unit_codes,
        policy_name=policy_name,
        reason=reason or "改派 after return review",
        actor=actor,
        now=now,
    )


def _was_in_progress(session: Session, ticket_id: int) -> bool:
    last_return = next(
        (
            e
            for e in reversed(tickets.events_of(session, ticket_id))
            if e.action == Action.return_.value
        ),
        None,
    )
    return last_return is not None and last_return.from_status == Status.in_progress


# ---------------------------------------------------------------- 延期 extension requests


def decide_extension(
    session: Session,
    *,
    extension_id: int,
    approve: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> ExtensionRequest:
    """An approved extension moves the reply and close deadlines (and the warnings with
    them); the old and new deadlines are both in the audit."""
    request = session.get(ExtensionRequest, extension_id)
    if request is None:
        raise NotFound(f"extension request {extension_id} does not exist")
    if request.status != ExtensionStatus.pending:
        raise Conflict(
            f"extension request {extension_id} was already {request.status.value}",
            status=request.status.value,
        )
    ticket = lock_ticket(session, request.ticket_id)
    assignment = existing(session, Assignment, request.assignment_id)
    request.decided_by = who(actor)
    request.decided_at = now
    request.decision_reason = reason
    data: dict[str, Any] = {"extension_id": request.id, "assignment_id": assignment.id}
    if approve:
        if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
            raise Conflict(
                f"assignment {assignment.id} is {assignment.status.value}; the "
                f"extension no longer applies"
            )
        calendar = reference.snapshot(session).calendar
        new_due = sla.add_time(
            assignment.reply_due_at, request.extend_by, request.extend_unit, calendar
        )
        assignment.close_due_at = sla.add_time(
            assignment.close_due_at, request.extend_by, request.extend_unit, calendar
        )
        assignment.reply_due_at = new_due
        assignment.extension_count += 1
        request.status = ExtensionStatus.approved
        request.new_due_at = new_due
        if assignment.escalation_clock == Clock.reply:
            escalation.arm(
                assignment,
                clock=Clock.reply,
                policy=existing(session, SlaPolicy, assignment.policy_id),
                calendar=calendar,
            )
        session.add(assignment)
        data |= {"old_due_at": request.old_due_at.isoformat(), "new_due_at": new_due.isoformat()}
        kind = "extension_approved"
    else:
        request.status = ExtensionStatus.refused
        kind = "extension_refused"
    session.add(request)
    tickets.add_note(
        session, ticket=ticket, actor=who(actor), now=now, kind=kind, reason=reason, data=data
    )
    return request


def extensions(
    session: Session,
    *,
    ticket_id: int | None = None,
    status: ExtensionStatus | None = None,
    limit: int = 200,
) -> list[ExtensionRequest]:
    """Extension requests of one ticket, or the centre's queue (e.g. every pending one),
    oldest first."""
    stmt = select(ExtensionRequest)
    if ticket_id is not None:
        stmt = stmt.where(col(ExtensionRequest.ticket_id) == ticket_id)
    if status is not None:
        stmt = stmt.where(col(ExtensionRequest.status) == status)
    return list(session.scalars(stmt.order_by(col(ExtensionRequest.id)).limit(limit)))
