"""The call figures of issue 18 (hotline.figures.calls) on hand-made calls, built on
hotline.calls.acd_figures, with their drill-down to call records, on both backends."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Select
from sqlmodel import Session

from hotline.figures import Filters, call_figures
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome
from tests.hotline.figures_fixtures import SH

Q = QueueOutcome


def L(h: int, m: int, s: int = 0) -> datetime:
    return datetime(2026, 12, 3, h, m, s, tzinfo=SH).astimezone(UTC)


def _call(session: Session, arrived: datetime, *, wait: float | None, outcome: QueueOutcome) -> int:
    queued = arrived + timedelta(seconds=5) if wait is not None else None
    left = queued + timedelta(seconds=wait) if queued is not None and wait is not None else None
    record = CallRecord(
        call_id=secrets.token_hex(8),
        direction=CallDirection.INBOUND,
        arrived_at=arrived,
        answered_at=arrived,
        ended_at=(left or arrived) + timedelta(seconds=60),
        queued_at=queued,
        queue_left_at=left,
        queue_outcome=outcome,
        agent_answered_at=left if outcome == Q.agent else None,
        created_at=arrived,
        updated_at=arrived,
    )
    session.add(record)
    session.flush()
    assert record.id is not None
    return record.id


def ids(session: Session, query: Select[int]) -> set[int]:
    return set(session.scalars(query))


def test_given_hand_made_calls_then_the_call_figures_match_the_hand_count(
    session: Session,
) -> None:
    c1 = _call(session, L(9, 0), wait=15, outcome=Q.agent)  # exactly 15 s: within 15 s
    c2 = _call(session, L(9, 5), wait=20, outcome=Q.agent)  # within 30 s only
    _call(session, L(9, 10), wait=3, outcome=Q.abandoned)  # short abandon: not counted
    _call(session, L(9, 11), wait=5, outcome=Q.abandoned)  # exactly 5 s: still short
    c5 = _call(session, L(9, 12), wait=40, outcome=Q.abandoned)  # a real abandon
    c6 = _call(session, L(9, 20), wait=60, outcome=Q.overflowed)  # counted, not answered
    _call(session, L(9, 30), wait=None, outcome=Q.robot)  # never queued: not counted
    _call(session, L(10, 0), wait=1, outcome=Q.agent)  # at the period's end: outside
    f = call_figures(
        session,
        filters=Filters(start=L(9, 0), end=L(10, 0)),
        now=L(12, 0),
        tz=SH,
    )
    # counted = queued (6) − short abandons (2) = 4
    assert (f.answer_rate.numerator, f.answer_rate.denominator) == (2, 4)
    assert (f.within_15s.numerator, f.within_15s.denominator) == (1, 4)
    assert (f.within_30s.numerator, f.within_30s.denominator) == (2, 4)
    assert (f.abandon_rate.numerator, f.abandon_rate.denominator) == (1, 4)
    assert f.within_15s.rate == pytest.approx(0.25)
    assert f.average_wait_s == pytest.approx(17.5)  # (15 + 20) / 2
    assert ids(session, f.within_15s.numerator_ids) == {c1}
    assert ids(session, f.within_30s.numerator_ids) == {c1, c2}
    assert ids(session, f.abandon_rate.numerator_ids) == {c5}
    assert ids(session, f.answer_rate.denominator_ids) == {c1, c2, c5, c6}


def test_given_no_calls_then_the_rates_are_none(session: Session) -> None:
    f = call_figures(session, filters=Filters(start=L(1, 0), end=L(2, 0)), now=L(12, 0), tz=SH)
    assert f.answer_rate.rate is None and f.within_15s.rate is None
    assert f.average_wait_s is None
