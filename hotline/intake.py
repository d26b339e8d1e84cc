"""Wiring: a request that reaches the platform becomes a ticket, classified and dispatched.
The intake is never lost to a dispatch failure: dispatch refuses before it changes
anything, and a refused ticket waits in the manual dispatch queue with the reason."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from accounts.models import User
from core.errors import DomainError
from dispatch import assignments, reference, routing
from tickets import service as tickets
from tickets.intake import Companion, create_ticket
from tickets.lifecycle import Action
from tickets.models import Ticket, TicketCreate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Note:
    """An in-place event (`tickets.service.add_note`'s) about the new ticket, written with it
    in the intake's own statement instead of a flush of its own."""

    actor: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Submission:
    ticket: Ticket
    created: bool
    dispatch: routing.DispatchResult | None = None
    dispatch_error: str | None = None


def submit(
    session: Session,
    *,
    data: TicketCreate,
    actor: User | None,
    now: datetime,
    idempotency_key: str | None = None,
    idempotency_scope: str = "api",
    auto_dispatch: bool = True,
    fallback_unit_code: str | None = None,
    tz: ZoneInfo = ZoneInfo("Asia/Shanghai"),
    notes: Sequence[Note] = (),
) -> Submission:
    """Intake, then dispatch by rules, in one write: the ticket is decided in memory and
    reaches the database already dispatched (or queued), with both events, its
    assignments and `notes` after them — one statement on PostgreSQL, no
    read-modify-write of rows just written."""
    # The reference data first: its revision check begins the transaction.
    reference.snapshot(session)
    outcome: dict[str, Any] = {}

    def dispatch(ticket: Ticket, events: list[dict[str, Any]]) -> Companion | None:
        if not auto_dispatch:
            return None
        try:
            outcome["dispatch"], companion = routing.plan_new_dispatch(
                session,
                ticket=ticket,
                events=events,
                now=now,
                actor=None,
                fallback_unit_code=fallback_unit_code,
                tz=tz,
            )
        except DomainError as exc:
            outcome["error"] = exc.message
            events.append(
                tickets.apply(
                    ticket,
                    action=Action.queue,
                    actor="system",
                    now=now,
                    reason=f"automatic dispatch failed: {exc.message}",
                )
            )
            return None
        return companion

    def then(ticket: Ticket, events: list[dict[str, Any]]) -> Companion | None:
        companion = dispatch(ticket, events)
        for note in notes:
            data = {"kind": note.kind, **note.data}
            events.append(
                tickets.apply(ticket, action=Action.note, actor=note.actor, now=now, data=data)
            )
        return companion

    intake = create_ticket(
        session,
        data=data,
        actor=assignments.who(actor),
        now=now,
        idempotency_key=idempotency_key,
        idempotency_scope=idempotency_scope,
        tz=tz,
        then=then,
    )
    submission = Submission(intake.ticket, intake.created)
    if intake.created:
        submission.dispatch = outcome.get("dispatch")
        submission.dispatch_error = outcome.get("error")
        if submission.dispatch_error:
            log.warning(
                "dispatch of ticket %s failed: %s", intake.ticket.number, submission.dispatch_error
            )
    return submission
