"""Satisfaction callbacks (回访): which replied tickets are due a call, claiming one for the
dialer, recording each attempt's outcome (dissatisfied reopens the ticket), and the dialer that
places them within calling hours."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlmodel import Session, col

from core.errors import NotFound
from core.settings import Settings
from dispatch import closing
from hotline.calls.records import insert_stmt, table_of
from telephony.models import (
    ANSWERED_OUTCOMES,
    CallbackAttempt,
    CallbackOutcome,
)
from tickets import service as tickets
from tickets.models import (
    Satisfaction,
    Status,
    Ticket,
)

log = logging.getLogger(__name__)


def _in_hours(now: datetime, settings: Settings) -> bool:
    start, end = settings.telephony.callback_hours
    return start <= now.astimezone(settings.tz).hour < end


def schedule_callbacks(session: Session, *, now: datetime, limit: int = 200) -> int:
    """A first attempt for every ticket waiting for its callback (reviewed, with a phone
    number) that has none in its current round; pending attempts of tickets that stopped
    waiting (closed by hand, sent back) are cancelled. Safe to run anywhere, any time."""
    attempts, tickets_t = table_of(CallbackAttempt), table_of(Ticket)
    due = session.execute(
        select(tickets_t.c.id, tickets_t.c.caller_phone, tickets_t.c.reopen_count)
        .where(
            tickets_t.c.status == Status.reviewed,
            tickets_t.c.caller_phone.is_not(None),
            ~exists().where(
                attempts.c.ticket_id == tickets_t.c.id, attempts.c.round == tickets_t.c.reopen_count
            ),
        )
        .order_by(tickets_t.c.id)
        .limit(limit)
    ).all()
    made = 0
    for ticket_id, phone, round_ in due:
        stmt = (
            insert_stmt(session)(attempts)
            .values(
                ticket_id=ticket_id,
                round=round_,
                attempt_no=1,
                number=phone,
                due_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(attempts.c.id)
        )
        made += len(session.execute(stmt).all())
    session.execute(
        update(attempts)
        .where(
            attempts.c.outcome.is_(None),
            attempts.c.started_at.is_(None),
            attempts.c.ticket_id.in_(
                select(tickets_t.c.id).where(tickets_t.c.status != Status.reviewed)
            ),
        )
        .values(
            outcome=CallbackOutcome.cancelled,
            ended_at=now,
            detail="the ticket no longer waits for a callback",
        )
    )
    return made


def claim_callback(
    session: Session, *, now: datetime, settings: Settings
) -> CallbackAttempt | None:
    """The next due attempt, claimed for this process: a conditional UPDATE, so across
    processes and threads each attempt is dialled once. Commit to publish the claim."""
    if not _in_hours(now, settings):
        return None
    attempts, tickets_t = table_of(CallbackAttempt), table_of(Ticket)
    candidates = session.scalars(
        select(attempts.c.id)
        .join(tickets_t, tickets_t.c.id == attempts.c.ticket_id)
        .where(
            attempts.c.started_at.is_(None),
            attempts.c.outcome.is_(None),
            attempts.c.due_at <= now,
            tickets_t.c.status == Status.reviewed,
        )
        .order_by(attempts.c.due_at, attempts.c.id)
        .limit(5)
    ).all()
    for attempt_id in candidates:
        claimed = session.exec(
            update(attempts)
            .where(
                attempts.c.id == attempt_id,
                attempts.c.started_at.is_(None),
                attempts.c.outcome.is_(None),
            )
            .values(started_at=now)
        )
        if claimed.rowcount == 1:
            return session.get(CallbackAttempt, attempt_id, populate_existing=True)
    return None


def record_callback_outcome(
    session: Session,
    *,
    attempt_id: int,
    outcome: CallbackOutcome,
    now: datetime,
    settings: Settings,
    call_id: str | None = None,
    detail: str | None = None,
) -> CallbackAttempt | None:
    """Record how an attempt ended. An answer goes to the ticket (dispatch.closing.callback:
    satisfied closes it, dissatisfied reopens it); no answer schedules the next attempt by
    `callback_retry_minutes`. Returns the next attempt, if one was scheduled. Recording an
    attempt that already has its outcome does nothing."""
    attempt = session.scalars(
        select(CallbackAttempt).where(col(CallbackAttempt.id) == attempt_id).with_for_update()
    ).first()
    if attempt is None:
        raise NotFound(f"callback attempt {attempt_id} does not exist")
    if attempt.outcome is not None:
        return None
    attempt.outcome, attempt.ended_at, attempt.call_id = outcome, now, call_id or attempt.call_id
    attempt.detail = detail[:500] if detail else None
    session.add(attempt)
    ticket = tickets.get_ticket(session, attempt.ticket_id, for_update=True)
    awaited = ticket.status == Status.reviewed and ticket.reopen_count == attempt.round
    if outcome in ANSWERED_OUTCOMES:
        if awaited:
            closing.callback(
                session,
                ticket_id=attempt.ticket_id,  # the ticket read above
                actor=None,
                now=now,
                satisfaction=Satisfaction(outcome.value),
                comment=f"电话回访按键（第{attempt.attempt_no}次）",
            )
        else:
            attempt.detail = "answered after the ticket stopped waiting for a callback"
        return None
    delays = settings.telephony.callback_retry_minutes
    if awaited and attempt.attempt_no <= len(delays):
        following = CallbackAttempt.model_validate(
            {
                "ticket_id": attempt.ticket_id,
                "round": attempt.round,
                "attempt_no": attempt.attempt_no + 1,
                "number": attempt.number,
                "due_at": now + timedelta(minutes=delays[attempt.attempt_no - 1]),
                "created_at": now,
            }
        )
        session.add(following)
        session.flush()
        return following
    if awaited:
        tickets.add_note(
            session,
            ticket=ticket,
            actor="system",
            now=now,
            kind="callback_failed",
            reason=f"回访未接通：已拨打 {attempt.attempt_no} 次，请人工处理",
        )
    return None


def reap_stale_attempts(
    session: Session,
    *,
    now: datetime,
    settings: Settings,
    older_than: timedelta = timedelta(minutes=15),
) -> int:
    """Attempts claimed by a process that stopped before recording their outcome."""
    stale = session.scalars(
        select(col(CallbackAttempt.id)).where(
            col(CallbackAttempt.started_at) < now - older_than,
            col(CallbackAttempt.outcome).is_(None),
        )
    ).all()
    for attempt_id in stale:
        assert attempt_id is not None  # a primary key
        record_callback_outcome(
            session,
            attempt_id=attempt_id,
            outcome=CallbackOutcome.failed,
            now=now,
            settings=settings,
            detail="the dialling process stopped during the attempt",
        )
    return len(stale)
