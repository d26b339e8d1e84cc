"""The figures' summary tables (hotline.figures.summary) on the hand-made city of
tests/hotline/figures_fixtures.py, on SQLite and PostgreSQL: read through the summaries,
every figure, unit rate, SLA-by-unit row and 超期 day is the exact scan's, under several
filters, and stays so as the clock moves and tickets change — before a refresh (the changed
days counted live, the passed deadlines judged again) and after it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlmodel import Session

from core.db import table_of
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus
from hotline.figures import Filters, compute
from hotline.figures import summary as s
from hotline.figures import summary_read as sr
from hotline.figures.filters import resolve
from tests.hotline.figures_fixtures import END, NOW, START, City, L, build_city
from tests.hotline.summary_checks import assert_same, event
from tickets.lifecycle import Action
from tickets.models import Channel, Satisfaction, Status, Ticket

A = table_of(Assignment)
T = table_of(Ticket)


@pytest.fixture
def city(session: Session) -> City:
    return build_city(session)


def combos(city: City) -> list[Filters]:
    u = city.units
    return [
        Filters(start=START, end=END),
        Filters(start=START - timedelta(days=7), end=END + timedelta(days=7)),
        Filters(start=START, end=END, unit_id=u["CITY"]),
        Filters(start=START, end=END, unit_id=u["OTHER"]),
        Filters(start=START, end=END, category_prefix="02"),
        Filters(start=START, end=END, district="城区", channel=Channel.phone),
        Filters(start=START, end=END, unit_id=u["CITY"], category_prefix="0203"),
        Filters(start=START, end=START + timedelta(days=1)),
    ]


def test_given_a_fresh_summary_when_read_then_every_figure_equals_the_scan_under_every_filter(
    session: Session, city: City
) -> None:
    done = s.refresh(session, now=NOW)

    assert done.full
    for filters in combos(city):
        assert_same(session, filters, NOW)
    # the hand counts of test_figures.py, through the summaries
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)
    assert (f["completion_rate"].numerator, f["completion_rate"].denominator) == (5, 7)
    assert (f["callback_rate"].numerator, f["callback_rate"].denominator) == (2, 3)


def test_given_a_summary_when_its_counts_are_read_then_they_come_from_the_summary_table(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)
    filters = Filters(start=START, end=END)
    session.execute(update(s.ST).values(completion_rate_n=s.ST.c.completion_rate_n + 100))

    fast = compute(session, filters=filters, now=NOW)["completion_rate"]
    exact = compute(session, filters=filters, now=NOW, summary=False)["completion_rate"]

    rows = session.scalar(
        select(func.count())
        .select_from(s.ST)
        .where(
            s.ST.c.day >= s.day_of(START, s.DEFAULT_OFFSET_S),
            s.ST.c.day < s.day_of(END, s.DEFAULT_OFFSET_S),
        )
    )
    assert rows
    assert fast.numerator == exact.numerator + 100 * rows


def test_given_a_period_off_the_day_boundaries_when_read_then_the_scan_answers(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)
    filters = Filters(start=START + timedelta(hours=1), end=END)

    assert sr.plan(session, resolve(session, filters), NOW) is None
    assert sr.unit_counts(session, resolve(session, filters), NOW) is None
    assert compute(session, filters=filters, now=NOW)["completion_rate"].denominator == 7


def test_given_clocks_judged_before_the_refresh_when_read_then_the_scan_answers(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)

    assert (
        sr.plan(session, resolve(session, Filters(start=START, end=END)), NOW - timedelta(hours=1))
        is None
    )


def _lead_of(session: Session, ticket_id: int) -> int:
    return int(
        session.execute(
            select(A.c.id).where(
                A.c.ticket_id == ticket_id, A.c.role == AssignmentRole.lead, A.c.ended_at.is_(None)
            )
        ).scalar_one()
    )


def test_given_tickets_change_and_the_clock_moves_when_read_then_the_summary_still_equals_the_scan(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)
    t4, t7 = city.tickets["t4"], city.tickets["t7"]
    # t7 replied an hour after NOW (late: its reply was due 7 Dec), t4 completed and
    # called back dissatisfied; t3 reclassified (its repeat window is counted again)
    at = NOW + timedelta(hours=1)
    session.execute(
        update(A)
        .where(A.c.id == _lead_of(session, t7))
        .values(replied_at=at, status=AssignmentStatus.replied)
    )
    event(session, t7, Action.reply.value, at)
    session.execute(
        update(A)
        .where(A.c.id == _lead_of(session, t4))
        .values(replied_at=at, ended_at=at, status=AssignmentStatus.completed)
    )
    session.execute(
        update(T)
        .where(T.c.id == t4)
        .values(status=Status.closed, satisfaction=Satisfaction.dissatisfied, closed_at=at)
    )
    for action in (Action.reply, Action.approve_reply, Action.callback):
        event(session, t4, action.value, at)
    session.execute(update(T).where(T.c.id == city.tickets["t3"]).values(category_code="0401"))
    event(session, city.tickets["t3"], Action.update.value, at)
    # 15 Dec: t7's close clock (due 14 Dec) has passed without a refresh
    later = L(15, 10)
    scope = resolve(session, Filters(start=START, end=END))
    plan = sr.plan(session, scope, later)
    assert plan is not None and plan.live  # the changed days are counted live

    before = [assert_same(session, filters, later) for filters in combos(city)]
    done = s.refresh(session, now=later)
    after = [assert_same(session, filters, later) for filters in combos(city)]

    assert not done.full
    assert before == after
    refreshed = sr.plan(session, scope, later)
    assert refreshed is not None
    assert (refreshed.judged_at, refreshed.live) == (later, ())


def test_given_a_refresh_when_run_again_then_it_counts_nothing_new_and_agrees_with_a_rebuild(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)
    again = s.refresh(session, now=NOW)
    incremental = [assert_same(session, f, NOW) for f in combos(city)]
    s.refresh(session, now=NOW, full=True)

    assert not again.full
    assert again.days == 0
    assert [assert_same(session, f, NOW) for f in combos(city)] == incremental


def test_given_no_change_when_a_deadline_passes_after_the_refresh_then_its_clock_is_judged_again(
    session: Session, city: City
) -> None:
    s.refresh(session, now=NOW)
    later = L(15, 10)  # t7's close clock, due 14 Dec, has run out since
    plan = sr.plan(session, resolve(session, Filters(start=START, end=END)), later)
    assert plan is not None and plan.live == ()

    at_now = assert_same(session, Filters(start=START, end=END), NOW)
    at_later = [assert_same(session, filters, later) for filters in combos(city)]

    assert at_later[0]["figures"]["on_time_close_rate"][1] == (
        at_now["figures"]["on_time_close_rate"][1] + 1
    )
    assert at_later[0]["late_days"][0] > at_now["late_days"][0]  # t4, t7 still unreplied
