"""Wiring: a request that reaches the platform becomes a ticket, then is classified and
dispatched. The intake is never lost to a dispatch failure: dispatch refuses before it
writes anything, and a refused ticket waits in the manual dispatch queue with the reason."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel import Session

from dispatch import reference
from dispatch import service as dispatching
from dispatch.models import User
from hotline.errors import DomainError
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import Ticket, TicketCreate

log = logging.getLogger(__name__)


@dataclass
class Submission:
    ticket: Ticket
    created: bool
    dispatch: dispatching.DispatchResult | None = None
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
) -> Submission:
    # Take the reference data before anything is pending, so that reading it does not flush
    # half an intake; the intake and its dispatch then reach the database in two flushes.
    reference.snapshot(session)
    intake = tickets.create_ticket(
        session, data=data, actor=dispatching.who(actor), now=now,
        idempotency_key=idempotency_key, idempotency_scope=idempotency_scope, tz=tz,
    )
    submission = Submission(intake.ticket, intake.created)
    if not intake.created or not auto_dispatch:
        return submission
    ticket = intake.ticket
    try:
        submission.dispatch = dispatching.dispatch_ticket(
            session, ticket_id=ticket.id, ticket=ticket, now=now, actor=None,
            fallback_unit_code=fallback_unit_code, tz=tz,
        )
    except DomainError as exc:
        log.warning("dispatch of ticket %s failed: %s", ticket.number, exc.message)
        submission.dispatch_error = exc.message
        tickets.record(session, ticket=ticket, action=Action.queue, actor="system", now=now,
                       reason=f"automatic dispatch failed: {exc.message}")
    return submission
