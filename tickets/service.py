"""Ticket operations. Every change to a ticket goes through `record`, which checks the
lifecycle, applies the change and appends exactly one TicketEvent — so the audit log can
always rebuild the ticket. New tickets are made in `tickets.intake`, lists and searches are
in `tickets.search`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import select
from sqlmodel import Session, col

from core.db import saved_id
from core.errors import Conflict, InvalidInput, NotFound
from tickets.lifecycle import Action, next_status
from tickets.models import Status, Ticket, TicketEvent, TicketUpdate

# Fields the audit log carries; rebuild_state() reproduces exactly these.
AUDITED_FIELDS = tuple(
    f for f in Ticket.model_fields if f not in {"id", "event_seq", "created_at", "updated_at"}
)


# ---------------------------------------------------------------- the one mutation path


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


def apply(
    ticket: Ticket,
    *,
    action: Action,
    actor: str,
    now: datetime,
    target: Status | None = None,
    changes: dict[str, Any] | None = None,
    reason: str | None = None,
    rule: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply one lifecycle step to `ticket` in memory and return its audit event's column
    values. `record` is the usual caller; the intake fast path writes the values itself."""
    before = ticket.status
    after = next_status(before, action, target)
    changes = dict(changes or {})
    if after != before:
        if after == Status.closed:
            changes.setdefault("closed_at", now)
        elif before == Status.closed and after != Status.archived:
            changes.setdefault("closed_at", None)
    unknown = set(changes) - set(AUDITED_FIELDS)
    if unknown:
        raise InvalidInput(f"not ticket fields: {sorted(unknown)}")
    for name, value in changes.items():
        setattr(ticket, name, value)
    ticket.status = after
    ticket.updated_at = now
    ticket.event_seq += 1
    payload = dict(data or {})
    if changes:
        payload["set"] = _jsonable(changes)
    return {
        "ticket_id": ticket.id,
        "seq": ticket.event_seq,
        "at": now,
        "actor": actor,
        "action": action.value,
        "from_status": before,
        "to_status": after,
        "reason": reason,
        "rule": rule,
        "data": payload,
    }


def record(session: Session, *, ticket: Ticket, **step: Any) -> TicketEvent:
    """Apply one lifecycle step to `ticket` and append its audit event (see `apply`)."""
    event = TicketEvent(**apply(ticket, **step))
    session.add(ticket)
    session.add(event)
    return event


# ---------------------------------------------------------------- reads and edits


def get_ticket(session: Session, ticket_id: int, *, for_update: bool = False) -> Ticket:
    if for_update:
        stmt = select(Ticket).where(col(Ticket.id) == ticket_id).with_for_update()
        ticket = session.scalars(stmt).first()
    else:
        ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} does not exist", ticket_id=ticket_id)
    return ticket


def get_ticket_by_number(session: Session, number: str) -> Ticket:
    ticket = session.scalars(select(Ticket).where(col(Ticket.number) == number)).first()
    if ticket is None:
        raise NotFound(f"ticket {number} does not exist", number=number)
    return ticket


def update_ticket(
    session: Session,
    *,
    ticket: Ticket,
    data: TicketUpdate,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> TicketEvent | None:
    changes = {
        k: v for k, v in data.model_dump(exclude_unset=True).items() if getattr(ticket, k) != v
    }
    if not changes:
        return None
    return record(
        session,
        ticket=ticket,
        action=Action.update,
        actor=actor,
        now=now,
        changes=changes,
        reason=reason,
    )


def add_note(
    session: Session,
    *,
    ticket: Ticket,
    actor: str,
    now: datetime,
    kind: str,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
    rule: str | None = None,
) -> TicketEvent:
    """An in-place event (extension asked, escalation fired, co-unit reply...)."""
    return record(
        session,
        ticket=ticket,
        action=Action.note,
        actor=actor,
        now=now,
        reason=reason,
        rule=rule,
        data={"kind": kind, **(data or {})},
    )


def events_of(session: Session, ticket_id: int) -> list[TicketEvent]:
    return list(
        session.scalars(
            select(TicketEvent)
            .where(col(TicketEvent.ticket_id) == ticket_id)
            .order_by(col(TicketEvent.seq))
        )
    )


def merged_children(session: Session, parent_id: int) -> list[Ticket]:
    return list(
        session.scalars(
            select(Ticket)
            .where(col(Ticket.parent_id) == parent_id, col(Ticket.status) == Status.merged)
            .order_by(col(Ticket.id))
        )
    )


def merge(
    session: Session,
    *,
    child: Ticket,
    parent: Ticket,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> TicketEvent:
    """并单: the child follows the parent from now on; one reply will reach both callers."""
    if child.id == parent.id:
        raise InvalidInput("a ticket cannot be merged into itself")
    if parent.status in (Status.merged, Status.closed, Status.archived):
        raise Conflict(f"cannot merge into ticket {parent.number}: it is {parent.status.value}")
    if merged_children(session, saved_id(child)):
        raise Conflict(f"ticket {child.number} has merged tickets of its own; merge them first")
    add_note(
        session,
        ticket=parent,
        actor=actor,
        now=now,
        kind="merged_in",
        reason=reason,
        data={"child": child.number, "child_id": child.id},
    )
    return record(
        session,
        ticket=child,
        action=Action.merge,
        actor=actor,
        now=now,
        changes={"parent_id": parent.id},
        reason=reason,
        data={"parent": parent.number},
    )


def close_merged_children(
    session: Session, *, parent: Ticket, actor: str, now: datetime
) -> list[Ticket]:
    """When the parent closes, every merged caller gets the same reply and is closed."""
    children = merged_children(session, saved_id(parent))
    for child in children:
        record(
            session,
            ticket=child,
            action=Action.close_merged,
            actor=actor,
            now=now,
            changes={"reply": parent.reply, "satisfaction": parent.satisfaction},
            data={"parent": parent.number},
        )
    return children


def close_at_intake(
    session: Session,
    *,
    ticket: Ticket,
    answer: str,
    actor: str,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> TicketEvent:
    """直接办结: the operator answered the caller from the knowledge base; `data` names the
    article and version cited, when one was."""
    answer = answer.strip()
    if not answer:
        raise InvalidInput("a direct answer needs the answer given to the caller")
    return record(
        session,
        ticket=ticket,
        action=Action.close_at_intake,
        actor=actor,
        now=now,
        changes={"answer": answer},
        data=data,
    )


# ---------------------------------------------------------------- audit rebuild


def snapshot(ticket: Ticket) -> dict[str, Any]:
    state: dict[str, Any] = _jsonable({f: getattr(ticket, f) for f in AUDITED_FIELDS})
    return state


def rebuild_state(events: list[TicketEvent]) -> dict[str, Any]:
    """Replay the audit log: the result equals `snapshot(ticket)` for a consistent ticket."""
    state: dict[str, Any] = {}
    for event in sorted(events, key=lambda e: e.seq):
        state.update(event.data.get("set", {}))
        if event.to_status is not None:
            state["status"] = Status(event.to_status).value
    return state
