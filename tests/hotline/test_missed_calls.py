"""The calls lost in the queue (漏话回拨): who is listed (by caller, anonymous left out, short
abandons marked, older than the window gone), who drops off (reached; got through since by a
later call), and attempts recorded on every open abandon of the caller."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.errors import InvalidInput, NotFound
from hotline.calls import missed
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome


def _call(session, clock, call_id, number, outcome, *, ago_s=60.0, wait_s=30.0):
    at = clock.now() - timedelta(seconds=ago_s)
    session.add(
        CallRecord(
            call_id=call_id,
            direction=CallDirection.INBOUND,
            caller_number=number,
            arrived_at=at,
            queued_at=at,
            queue_left_at=at + timedelta(seconds=wait_s),
            queue_outcome=outcome,
            created_at=at,
            updated_at=at,
        )
    )
    session.flush()


def _numbers(session, clock):
    return [
        (c.number, c.abandons, c.short)
        for c in missed.missed_callers(session, now=clock.now(), short_abandon_s=5)
    ]


def test_abandoned_callers_are_listed_once_each_newest_first(session, clock):
    abandoned = QueueOutcome.abandoned
    _call(session, clock, "a1", "13800000001", abandoned, ago_s=600, wait_s=40)
    _call(session, clock, "a2", "13800000001", abandoned, ago_s=300, wait_s=70)
    _call(session, clock, "b1", "13800000002", abandoned, ago_s=100, wait_s=3)  # short
    _call(session, clock, "c1", "", abandoned, ago_s=50)  # anonymous: cannot call back
    _call(session, clock, "d1", "13800000004", abandoned, ago_s=80 * 3600)  # too old
    _call(session, clock, "e1", "13800000005", QueueOutcome.agent)  # answered

    assert _numbers(session, clock) == [("13800000002", 1, True), ("13800000001", 2, False)]
    first = missed.missed_callers(session, now=clock.now(), short_abandon_s=5)[1]
    assert first.longest_wait_s == 70.0
    assert missed.missed_count(session, now=clock.now()) == 2


def test_a_caller_who_got_through_since_drops_off(session, clock):
    _call(session, clock, "a1", "13800000001", QueueOutcome.abandoned, ago_s=600)
    _call(session, clock, "a2", "13800000001", QueueOutcome.agent, ago_s=60)
    _call(session, clock, "b1", "13800000002", QueueOutcome.agent, ago_s=600)
    _call(session, clock, "b2", "13800000002", QueueOutcome.abandoned, ago_s=60)
    assert _numbers(session, clock) == [("13800000002", 1, False)]


def test_attempts_are_recorded_and_reaching_the_caller_ends_it(session, clock):
    _call(session, clock, "a1", "13800000001", QueueOutcome.abandoned, ago_s=600)
    _call(session, clock, "a2", "13800000001", QueueOutcome.abandoned, ago_s=300)

    assert (
        missed.record_attempt(
            session, number="13800000001", outcome="no_answer", user_id=7, now=clock.now()
        )
        == 2
    )
    (listed,) = missed.missed_callers(session, now=clock.now(), short_abandon_s=5)
    assert (listed.attempts, listed.last_attempt_at) == (1, clock.now())
    missed.record_attempt(
        session, number="13800000001", outcome="reached", user_id=7, now=clock.now()
    )
    assert _numbers(session, clock) == []
    rows = session.scalars(select(CallRecord).where(col(CallRecord.call_id).in_(["a1", "a2"])))
    assert {(r.callback_attempts, r.callback_outcome, r.called_back_by) for r in rows} == {
        (2, "reached", 7)
    }
    with pytest.raises(NotFound):
        missed.record_attempt(
            session, number="13800000001", outcome="reached", user_id=7, now=clock.now()
        )
    with pytest.raises(InvalidInput):
        missed.record_attempt(
            session, number="13800000001", outcome="maybe", user_id=7, now=clock.now()
        )
