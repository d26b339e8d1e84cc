"""The contact-centre figures on hand-made calls and state changes whose right answers were
worked out by hand (in the comments), on SQLite and PostgreSQL: a call arriving in one
quarter and answered in the next, a wait of exactly 15 s and a short abandon of exactly 5 s
(both inclusive), an operator signed in across midnight, occupancy cut at boundaries."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from accounts.models import (
    AgentState,
    AgentStateChange,
    AgentStatus,
    NotReadyReason,
    Role,
    User,
)
from core.errors import InvalidInput
from hotline.calls import acd_board
from hotline.calls import acd_figures as figs
from hotline.calls.acd_figures import Interval
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

SH = ZoneInfo("Asia/Shanghai")
Q = QueueOutcome


def L(day: int, h: int, m: int = 0, s: float = 0) -> datetime:
    whole = int(s)
    return datetime(2026, 12, day, h, m, whole, int((s - whole) * 1e6), tzinfo=SH).astimezone(UTC)


def _user(session: Session, name: str) -> int:
    user = User(
        username=name,
        display_name=name.title(),
        role=Role.operator,
        token_hash=secrets.token_hex(32),
        created_at=L(1, 8),
    )
    session.add(user)
    session.flush()
    assert user.id is not None
    return user.id


def _call(
    session: Session,
    arrived: datetime,
    *,
    queued: float | None = None,  # seconds after arrival
    wait: float | None = None,  # seconds in the queue
    outcome: QueueOutcome | None = None,
    agent: int | None = None,
    talk: float | None = None,  # agent answer to end, hold included
    hold: float | None = None,
    wrap: float | None = None,
    transfers: int | None = None,
    reason: str | None = None,
    direction: CallDirection = CallDirection.INBOUND,
    ended_at: datetime | None = None,
) -> None:
    queued_at = arrived + timedelta(seconds=queued) if queued is not None else None
    left = queued_at + timedelta(seconds=wait) if queued_at and wait is not None else None
    answered = left if outcome == Q.agent else None
    ended = answered + timedelta(seconds=talk) if answered and talk is not None else None
    session.add(
        CallRecord(
            call_id=secrets.token_hex(8),
            direction=direction,
            arrived_at=arrived,
            answered_at=arrived,
            ended_at=ended_at or ended or left,
            queued_at=queued_at,
            queue_left_at=left,
            queue_outcome=outcome,
            overflow_reason=reason,
            agent_user_id=agent,
            agent_extension="1001" if agent else None,
            agent_answered_at=answered,
            hold_s=hold,
            wrap_up_s=wrap,
            transfers=transfers,
            created_at=arrived,
            updated_at=arrived,
        )
    )


@pytest.fixture
def morning(session: Session) -> tuple[int, int]:
    """09:00–10:00 on 3 December (Beijing time): eleven inbound calls and some that must not
    count (outbound, one second before, exactly at the end)."""
    a, b = _user(session, "ann"), _user(session, "bo")
    # 09:00 quarter: waits 10 and exactly 15 (B arrives 09:14:50, is answered 09:15:10).
    _call(
        session, L(3, 9), queued=10, wait=10, outcome=Q.agent, agent=a, talk=300, hold=20, wrap=30
    )
    _call(
        session, L(3, 9, 14, 50), queued=5, wait=15, outcome=Q.agent, agent=b, talk=120, wrap=15,
        transfers=1,
    )  # fmt: skip
    # 09:15 quarter: answered in 25 s; abandons after 3 s and exactly 5 s (short), 40 s.
    _call(session, L(3, 9, 16), queued=5, wait=25, outcome=Q.agent, agent=a, talk=240)
    _call(session, L(3, 9, 20), queued=5, wait=3, outcome=Q.abandoned)
    _call(session, L(3, 9, 21), queued=5, wait=5, outcome=Q.abandoned)
    _call(session, L(3, 9, 22), queued=5, wait=40, outcome=Q.abandoned)
    # 09:30 quarter: two overflows, a callback, a call the robot took by design.
    _call(session, L(3, 9, 31), queued=5, wait=60, outcome=Q.overflowed, reason="waited")
    _call(session, L(3, 9, 32), queued=5, wait=10, outcome=Q.overflowed, reason="no_agents")
    _call(session, L(3, 9, 40), queued=5, wait=20, outcome=Q.callback_requested)
    _call(session, L(3, 9, 44, 59), outcome=Q.robot)
    # 09:45 quarter: answered after 40 s.
    _call(session, L(3, 9, 50), queued=0, wait=40, outcome=Q.agent, agent=b, talk=120, wrap=10)
    # Not in 09:00–10:00: outbound, one second early, at the end exactly.
    _call(session, L(3, 9, 10), direction=CallDirection.OUTBOUND)
    _call(session, L(3, 8, 59, 59), queued=1, wait=1, outcome=Q.abandoned)
    _call(session, L(3, 10), queued=1, wait=1, outcome=Q.abandoned)
    session.flush()
    return a, b


def _report(session: Session, interval: Interval, start: datetime, end: datetime, **kw):
    return figs.report(
        session,
        start=start,
        end=end,
        interval=interval,
        tz=SH,
        now=kw.pop("now", L(4, 12)),
        answer_target_s=15.0,
        short_abandon_s=5.0,
        **kw,
    )


def test_quarters_count_each_call_in_the_quarter_it_arrived_in(session, morning):
    a, b = morning
    got = _report(session, Interval.quarter, L(3, 9), L(3, 10))

    assert [(x.start, x.end) for x in got.buckets] == [
        (L(3, 9), L(3, 9, 15)),
        (L(3, 9, 15), L(3, 9, 30)),
        (L(3, 9, 30), L(3, 9, 45)),
        (L(3, 9, 45), L(3, 10)),
    ]
    first, second, third, fourth = (x.figures for x in got.buckets)
    # 09:00: both answered within 15 s (B at exactly 15.0 s, inclusive): 2 / 2.
    assert (first.offered, first.queued, first.answered, first.answered_within_target) == (
        2,
        2,
        2,
        2,
    )
    assert first.service_level == 1.0 and first.asa_s == pytest.approx(12.5)
    assert first.p90_wait_s == 15  # ceil(0.9 * 2) = 2nd of [10, 15]
    assert first.talk_s == pytest.approx(280 + 120) and first.hold_s == pytest.approx(20)
    assert first.wrap_up_s == pytest.approx(45) and first.handle_avg_s == pytest.approx(465 / 2)
    assert first.transferred == 1
    # 09:15: 4 queued, 2 short abandons (3 s and exactly 5 s) left out: 0 / 2 within 15 s,
    # 1 / 2 within 30 s, abandon rate (3 - 2) / 2, abandon wait (3 + 5 + 40) / 3.
    assert (second.queued, second.abandoned, second.short_abandoned) == (4, 3, 2)
    assert second.service_level == 0.0 and second.service_level_30s == 0.5
    assert second.answer_rate == 0.5 and second.abandon_rate == 0.5
    assert second.abandon_wait_avg_s == pytest.approx(16.0)
    assert second.handled == 1 and second.talk_s == pytest.approx(240)
    # 09:30: the robot's call is offered, not queued; overflows by reason.
    assert (third.offered, third.queued, third.overflowed) == (4, 3, 2)
    assert third.overflowed_by_reason == {"no_agents": 1, "waited": 1}
    assert (third.callback_requested, third.robot, third.answered) == (1, 1, 0)
    assert third.service_level == 0.0 and third.asa_s is None and third.p90_wait_s is None
    assert fourth.asa_s == pytest.approx(40) and fourth.p90_wait_s == 40

    total = got.total
    # 10 queued - 2 short = 8: 2 within 15 s, 3 within 30 s, 4 answered, 1 long abandon.
    assert (total.offered, total.queued, total.answered) == (11, 10, 4)
    assert total.service_level == pytest.approx(2 / 8)
    assert total.service_level_30s == pytest.approx(3 / 8)
    assert total.answer_rate == pytest.approx(4 / 8) and total.abandon_rate == pytest.approx(1 / 8)
    assert total.asa_s == pytest.approx((10 + 15 + 25 + 40) / 4)
    assert total.p90_wait_s == 40  # ceil(0.9 * 4) = 4th of [10, 15, 25, 40]
    assert total.handle_s == pytest.approx(760 + 20 + 55)
    assert total.handle_avg_s == pytest.approx(835 / 4)

    # Per operator: Ann answered A and C, Bo answered B and K.
    ann, bo = got.agents[a].calls, got.agents[b].calls
    assert (ann.answered, ann.answered_within_target, ann.answered_within_30s) == (2, 1, 2)
    assert ann.handle_s == pytest.approx(280 + 20 + 30 + 240)
    assert (bo.answered, bo.transferred) == (2, 1)
    assert bo.handle_s == pytest.approx(120 + 15 + 120 + 10)
    assert got.buckets[0].agents[b].calls.answered == 1  # B is the 09:00 quarter's


def test_an_hour_folds_its_quarters_and_one_agent_can_be_asked_for(session, morning):
    a, b = morning
    hour = _report(session, Interval.hour, L(3, 9), L(3, 10))
    only_bo = _report(session, Interval.hour, L(3, 9), L(3, 10), agent_id=b)

    assert len(hour.buckets) == 1
    assert hour.buckets[0].figures.as_dict() == hour.total.as_dict()
    assert hour.total.service_level == pytest.approx(2 / 8)
    assert set(hour.agents) == {a, b}
    assert set(only_bo.agents) == {b}
    assert only_bo.total.offered == 11  # the centre's figures stay the centre's


def _move(
    session: Session,
    user_id: int,
    at: datetime,
    before: AgentState,
    after: AgentState,
    reason: NotReadyReason | None = None,
) -> None:
    session.add(
        AgentStateChange(
            user_id=user_id,
            from_state=before,
            to_state=after,
            reason=reason,
            at=at,
            source="console",
        )
    )


@pytest.fixture
def shifts(session: Session) -> tuple[int, int]:
    """Ann signs in at 23:00 on 2 December and works past midnight; Bo works a morning with
    ten minutes of after-call work (busy) and is on break otherwise."""
    a, b = _user(session, "ann"), _user(session, "bo")
    for user_id in (a, b):
        session.add(AgentStatus(user_id=user_id, state=AgentState.signed_out, since=L(1, 8)))
    s = AgentState
    _move(session, a, L(2, 23), s.signed_out, s.ready)
    _move(session, a, L(2, 23, 30), s.ready, s.on_call)
    _move(session, a, L(3, 0, 30), s.on_call, s.wrap_up)
    _move(session, a, L(3, 0, 40), s.wrap_up, s.ready)
    _move(session, a, L(3, 1), s.ready, s.not_ready, NotReadyReason.break_)
    _move(session, a, L(3, 1, 30), s.not_ready, s.signed_out)
    _move(session, b, L(3, 9), s.signed_out, s.ready)
    _move(session, b, L(3, 9, 10), s.ready, s.not_ready, NotReadyReason.after_call_work)
    _move(session, b, L(3, 9, 20), s.not_ready, s.ready)
    _move(session, b, L(3, 9, 30), s.ready, s.signed_out)
    session.flush()
    return a, b


def test_occupancy_of_an_operator_signed_in_across_midnight_is_cut_at_midnight(session, shifts):
    a, b = shifts
    got = _report(session, Interval.day, L(2, 0), L(4, 0))

    dec2, dec3 = got.buckets
    # 2 Dec: signed in 23:00–24:00 (3600 s), on a call from 23:30 (1800 s): 0.5.
    assert dec2.agents[a].time.signed_in_s == pytest.approx(3600)
    assert dec2.agents[a].time.occupancy == pytest.approx(0.5)
    # 3 Dec: 00:00–01:30 signed in (5400 s), 30 min on break (not available), busy on the
    # call until 00:30 and in wrap-up until 00:40 (2400 s): 2400 / 3600.
    ann = dec3.agents[a].time
    assert (ann.signed_in_s, ann.not_ready_s, ann.busy_s) == pytest.approx((5400, 1800, 2400))
    assert ann.occupancy == pytest.approx(2 / 3)
    # Bo: 30 min signed in, 10 of them in after-call work, which is busy: 1/3.
    assert dec3.agents[b].time.occupancy == pytest.approx(1 / 3)
    assert got.agents[a].time.busy_s == pytest.approx(1800 + 2400)


def test_a_state_entered_before_the_range_is_carried_in_and_cut_at_each_quarter(session, shifts):
    a, _ = shifts
    got = _report(session, Interval.quarter, L(3, 0), L(3, 1))

    # At 00:00 Ann is on the call she took at 23:30 (her last change before the range).
    assert [x.agents[a].time.occupancy for x in got.buckets] == pytest.approx(
        [1.0, 1.0, 600 / 900, 0.0]
    )
    assert [x.agents[a].time.signed_in_s for x in got.buckets] == pytest.approx([900] * 4)


def test_time_after_now_is_not_counted(session, shifts):
    a, _ = shifts
    got = _report(session, Interval.hour, L(3, 0), L(3, 2), now=L(3, 0, 20))

    assert got.buckets[0].agents[a].time.signed_in_s == pytest.approx(20 * 60)
    assert a not in got.buckets[1].agents


def test_a_partial_range_clips_its_first_and_last_interval():
    found = figs.buckets(L(3, 9, 10), L(3, 11, 5), Interval.hour, SH)

    assert [(b.start, b.end) for b in found] == [
        (L(3, 9, 10), L(3, 10)),
        (L(3, 10), L(3, 11)),
        (L(3, 11), L(3, 11, 5)),
    ]


def test_days_follow_the_centres_midnight_across_a_daylight_saving_change():
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, tzinfo=berlin)
    found = figs.buckets(start, start + timedelta(days=2), Interval.day, berlin)

    # Clocks go forward on 29 March 2026: that day has 23 hours.
    assert [(b.end - b.start) for b in found] == [timedelta(hours=24), timedelta(hours=23)]
    assert found[1].start == datetime(2026, 3, 29, tzinfo=berlin)
    assert found[1].end == datetime(2026, 3, 30, tzinfo=berlin)


@pytest.mark.parametrize(
    ("start", "end", "interval", "words"),
    [
        (L(3, 10), L(3, 9), Interval.hour, "after"),
        (L(1, 0), L(1, 0) + timedelta(days=93), Interval.day, "92 days"),
        (L(1, 0), L(1, 0) + timedelta(days=40), Interval.quarter, "3000 intervals"),
    ],
)
def test_a_range_that_cannot_be_answered_is_refused_in_words(start, end, interval, words):
    with pytest.raises(InvalidInput, match=words):
        figs.buckets(start, end, interval, SH)


def test_the_wallboard_counts_the_queue_now_and_todays_figures(session, morning):
    a, b = morning
    now = L(3, 10, 0, 30)
    session.add(AgentStatus(user_id=a, state=AgentState.ready, since=now - timedelta(seconds=75)))
    session.add(
        AgentStatus(
            user_id=b, state=AgentState.on_call, extension="1002", since=now - timedelta(minutes=2)
        )
    )
    # Waiting: since 30 s and 12 s. Not waiting: left the queue, ended without leaving it
    # (a crash), queued before WAITING_WITHIN.
    _call(session, now - timedelta(seconds=31), queued=1)
    _call(session, now - timedelta(seconds=13), queued=1)
    _call(session, now - timedelta(seconds=20), queued=1, wait=5, outcome=Q.abandoned)
    _call(session, now - timedelta(seconds=50), queued=1, ended_at=now - timedelta(seconds=5))
    _call(session, now - acd_board.WAITING_WITHIN - timedelta(minutes=1), queued=1)
    session.flush()

    board = acd_board.board(session, now=now, tz=SH, answer_target_s=15.0, short_abandon_s=5.0)

    assert (board.waiting, board.longest_wait_s) == (2, 30)
    assert board.by_state[AgentState.ready] == 1 and board.by_state[AgentState.on_call] == 1
    # Today: the morning, the abandon at 10:00:10 and the one at exactly 10:00 (both short)
    # and the one at 08:59:59; the waiting calls are queued and not yet answered.
    assert board.today.answered == 4 and board.today.abandoned == 6
    assert board.today.short_abandoned == 5
    rows = {row.user_id: row for row in board.agents}
    assert rows[a].in_state_s == 75 and rows[b].in_state_s == 120
    assert rows[a].today.calls.answered == 2 and rows[b].today.calls.transferred == 1


def test_across_a_daylight_saving_change_calls_still_fall_in_the_centres_days(session):
    berlin = ZoneInfo("Europe/Berlin")
    at = lambda d, h, m=0: datetime(2026, 3, d, h, m, tzinfo=berlin).astimezone(UTC)  # noqa: E731
    # 29 March has 23 hours; 23:30 that night is 21:30 UTC (22:30 UTC the night before).
    _call(session, at(28, 23, 59), queued=1, wait=1, outcome=Q.agent, agent=None)
    _call(session, at(29, 1, 30), queued=1, wait=1, outcome=Q.agent)
    _call(session, at(29, 23, 30), queued=1, wait=1, outcome=Q.agent)
    _call(session, at(30, 0, 0), queued=1, wait=1, outcome=Q.agent)
    session.flush()

    got = figs.report(
        session,
        start=at(28, 0),
        end=at(31, 0),
        interval=Interval.day,
        tz=berlin,
        now=at(31, 0),
        answer_target_s=15.0,
        short_abandon_s=5.0,
    )

    assert [b.figures.answered for b in got.buckets] == [1, 2, 1]
