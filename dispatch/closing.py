"""How a ticket's handling ends, or starts over: 回访 the callback (satisfied closes the
ticket, dissatisfied reopens it), 办结 closing without one, 重办 reopening by the centre,
归档 archiving, and 并单 merging a duplicate into its parent. Closing completes the
assignments; reopening sends the ticket back to the units that had it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from core.db import saved_id
from dispatch.assignments import Actor, lock_ticket, required, who, withdraw
from dispatch.models import AssignmentStatus
from dispatch.routing import DispatchResult, redispatch_reopened
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import Satisfaction, Status, Ticket

# ---------------------------------------------------------------- 回访, 办结, 重办, 归档


def _finish(session: Session, *, ticket: Ticket, now: datetime) -> None:
    withdraw(session, ticket_id=saved_id(ticket), now=now, status=AssignmentStatus.completed)


def _close_out(session: Session, *, ticket: Ticket, actor: Actor, now: datetime) -> None:
    """The one rule for every way a ticket closes (回访, 办结, 直接办结): its assignments are
    complete, and its merged tickets close with it, carrying the answer their callers get."""
    _finish(session, ticket=ticket, now=now)
    for child in tickets.merged_children(session, saved_id(ticket)):
        tickets.record(
            session,
            ticket=child,
            action=Action.close_merged,
            actor=who(actor),
            now=now,
            changes={
                "reply": ticket.reply,
                "answer": ticket.answer,
                "satisfaction": ticket.satisfaction,
            },
            data={"parent": ticket.number},
        )


def close_at_intake(
    session: Session,
    *,
    ticket_id: int,
    answer: str,
    actor: Actor,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> Ticket:
    """直接办结: the operator answered the caller from the knowledge base; the tickets merged
    into this one are closed with the same answer. `data` goes on the event (the article)."""
    ticket = lock_ticket(session, ticket_id)
    tickets.close_at_intake(
        session, ticket=ticket, answer=answer, actor=who(actor), now=now, data=data
    )
    _close_out(session, ticket=ticket, actor=actor, now=now)
    return ticket


def callback(
    session: Session,
    *,
    ticket_id: int,
    satisfaction: Satisfaction,
    actor: Actor,
    now: datetime,
    comment: str | None = None,
) -> DispatchResult:
    """回访: satisfied or basically satisfied closes the ticket (and every ticket merged into
    it); dissatisfied reopens it (重办) and sends it straight back to the same units with
    fresh clocks."""
    ticket = lock_ticket(session, ticket_id)
    satisfaction = Satisfaction(satisfaction)
    if satisfaction == Satisfaction.dissatisfied:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.callback,
            actor=who(actor),
            now=now,
            target=Status.reopened,
            reason=comment,
            changes={"satisfaction": satisfaction, "reopen_count": ticket.reopen_count + 1},
        )
        _finish(session, ticket=ticket, now=now)
        return redispatch_reopened(session, ticket=ticket, actor=actor, now=now)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.callback,
        actor=who(actor),
        now=now,
        target=Status.closed,
        reason=comment,
        changes={"satisfaction": satisfaction},
    )
    _close_out(session, ticket=ticket, actor=actor, now=now)
    return DispatchResult(ticket)


def close(session: Session, *, ticket_id: int, actor: Actor, now: datetime, reason: str) -> Ticket:
    """办结 without a callback (the caller could not be reached, or was anonymous)."""
    required(reason, "closing without a callback needs a reason")
    ticket = lock_ticket(session, ticket_id)
    tickets.record(
        session, ticket=ticket, action=Action.close, actor=who(actor), now=now, reason=reason
    )
    _close_out(session, ticket=ticket, actor=actor, now=now)
    return ticket


def reopen(
    session: Session, *, ticket_id: int, actor: Actor, now: datetime, reason: str
) -> DispatchResult:
    """重办 of a closed ticket by the centre (a complaint about the outcome)."""
    required(reason, "reopening needs a reason")
    ticket = lock_ticket(session, ticket_id)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.reopen,
        actor=who(actor),
        now=now,
        reason=reason,
        changes={"reopen_count": ticket.reopen_count + 1},
    )
    return redispatch_reopened(session, ticket=ticket, actor=actor, now=now)


def archive(session: Session, *, ticket_id: int, actor: Actor, now: datetime) -> Ticket:
    ticket = lock_ticket(session, ticket_id)
    tickets.record(session, ticket=ticket, action=Action.archive, actor=who(actor), now=now)
    return ticket


# ---------------------------------------------------------------- 并单 merge


def merge(
    session: Session,
    *,
    ticket_id: int,
    parent_id: int,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> Ticket:
    """并单: the duplicate's own assignments end; the parent's reply will reach its caller."""
    child = lock_ticket(session, ticket_id)
    parent = lock_ticket(session, parent_id)
    tickets.merge(session, child=child, parent=parent, actor=who(actor), now=now, reason=reason)
    withdraw(session, ticket_id=saved_id(child), now=now)
    return child
