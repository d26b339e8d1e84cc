"""Calls lost in the queue, to be called back (漏话回拨).

A caller who hangs up while waiting for an operator is an abandoned call (the queue keeps its
wait). The centre calls them back: this is the list the operators work from — by caller, the
newest abandon first, with how many times they tried and how long they waited — and what
an attempt records. A caller drops off the list once reached, and by themselves when they
got through since (a later call of theirs was answered, by an operator or the robot, or
they asked for a callback). Anonymous callers cannot be called back and are not listed.
Short abandons (within ``short_abandon_s``, often a wrong number) are listed but marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from core.db import table_of
from core.errors import InvalidInput, NotFound
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

WINDOW = timedelta(hours=72)  # older abandons are no longer called back
OUTCOMES = ("reached", "no_answer")
_GOT_THROUGH = (
    QueueOutcome.agent,
    QueueOutcome.robot,
    QueueOutcome.overflowed,
    QueueOutcome.callback_requested,
)


@dataclass(frozen=True)
class MissedCaller:
    number: str
    last_at: datetime  # their newest abandon
    abandons: int  # within the window, not yet reached
    longest_wait_s: float
    short: bool  # every one of them a short abandon
    attempts: int  # call-backs tried so far
    last_attempt_at: datetime | None


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _open(now: datetime) -> tuple[Any, list[Any]]:  # the abandons still owed a call-back
    c = table_of(CallRecord).c
    later = table_of(CallRecord).alias("later")
    got_through = (
        select(later.c.id)
        .where(
            later.c.caller_number == c.caller_number,
            later.c.arrived_at > c.arrived_at,
            later.c.queue_outcome.in_(_GOT_THROUGH),
        )
        .exists()
    )
    return c, [
        c.direction == CallDirection.INBOUND,
        # abandoned by the caller, or lost with the SIP edge while waiting (crash recovery)
        c.queue_outcome.in_((QueueOutcome.abandoned, QueueOutcome.lost)),
        c.caller_number != "",
        c.arrived_at >= now - WINDOW,
        func.coalesce(c.callback_outcome, "") != "reached",
        ~got_through,
    ]


def missed_callers(
    session: Session, *, now: datetime, short_abandon_s: float, limit: int = 200
) -> list[MissedCaller]:
    c, where = _open(now)
    rows = session.execute(
        select(
            c.caller_number,
            c.arrived_at,
            c.queued_at,
            c.queue_left_at,
            c.callback_attempts,
            c.called_back_at,
        )
        .where(*where)
        .order_by(c.arrived_at.desc())
        .limit(limit * 5)
    ).all()
    callers: dict[str, MissedCaller] = {}
    for row in rows:
        joined, left = _aware(row.queued_at), _aware(row.queue_left_at)
        wait = (left - joined).total_seconds() if joined and left else 0.0
        short = wait <= short_abandon_s
        seen = callers.get(row.caller_number)
        if seen is None:
            callers[row.caller_number] = MissedCaller(
                number=row.caller_number,
                last_at=_aware(row.arrived_at) or now,
                abandons=1,
                longest_wait_s=wait,
                short=short,
                attempts=row.callback_attempts or 0,
                last_attempt_at=_aware(row.called_back_at),
            )
            continue
        last_attempt = max(
            (t for t in (seen.last_attempt_at, _aware(row.called_back_at)) if t), default=None
        )
        callers[row.caller_number] = MissedCaller(
            number=seen.number,
            last_at=seen.last_at,
            abandons=seen.abandons + 1,
            longest_wait_s=max(seen.longest_wait_s, wait),
            short=seen.short and short,
            attempts=max(seen.attempts, row.callback_attempts or 0),
            last_attempt_at=last_attempt,
        )
    return list(callers.values())[:limit]


def missed_count(session: Session, *, now: datetime) -> int:
    """Callers owed a call-back (the navigation's count)."""
    c, where = _open(now)
    return int(
        session.scalar(select(func.count(func.distinct(c.caller_number))).where(*where)) or 0
    )


def record_attempt(
    session: Session, *, number: str, outcome: str, user_id: int, now: datetime
) -> int:
    """A call-back of ``number`` tried: every open abandon of theirs gets the attempt (they
    are one person's). Returns how many; raises when there is none to call back."""
    if outcome not in OUTCOMES:
        raise InvalidInput("The outcome is one of: reached, no answer.")
    c, where = _open(now)
    table = table_of(CallRecord)
    done = session.execute(
        update(table)
        .where(*where, c.caller_number == number)
        .values(
            callback_attempts=c.callback_attempts + 1,
            called_back_at=now,
            called_back_by=user_id,
            callback_outcome=outcome,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(done, "rowcount", 0) or 0)
    if count == 0:
        raise NotFound("Nobody with this number is waiting for a call-back.")
    return count
