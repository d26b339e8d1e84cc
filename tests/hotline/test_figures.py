"""The figures of issue 18 on the hand-made city of tests/hotline/figures_fixtures.py (its
docstring has the table), on SQLite and PostgreSQL. Each expected count is worked out by
hand in the comment beside it."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import Select, select
from sqlmodel import Session, col

from core.errors import InvalidInput, NotFound
from dispatch import sla
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus, ClockUnit
from hotline.figures import (
    Band,
    Filters,
    Weights,
    band_of,
    compute,
    overdue,
    unit_rates,
)
from hotline.figures.definitions import Context, satisfaction_rate
from hotline.figures.filters import subtree
from tests.hotline.figures_fixtures import CAL, END, NOW, START, City, L, build_city
from tickets.lifecycle import Action
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketEvent


@pytest.fixture
def city(session: Session) -> City:
    return build_city(session)


def ids(session: Session, query: Select[int]) -> set[int]:
    return set(session.scalars(query))


def names(city: City, found: set[int]) -> set[str]:
    by_id = {v: k for k, v in city.tickets.items()}
    return {by_id[i] for i in found}


def counts(figures, name: str) -> tuple[int, int]:
    return figures[name].numerator, figures[name].denominator


def test_given_the_city_when_counted_then_every_ticket_figure_matches_the_hand_count(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)
    # in the period: t1 t2 t3 t4 t5 t7 t8 (t6 is 30 Nov) = 7 tickets
    assert counts(f, "direct_answer_rate") == (1, 7)  # t1
    assert counts(f, "completion_rate") == (5, 7)  # t1 t2 t3 t5 t8 closed; t4 t7 open
    assert counts(f, "callback_rate") == (2, 3)  # approved t2 t3 t8; t8 closed without one
    assert counts(f, "satisfaction_rate") == (2, 2)  # t2 满意, t3 基本满意; t5 merged: out
    assert counts(f, "merge_rate") == (1, 7)  # t5
    # dispatched: t2 t3 t4 t7 t8; t4 returned and re-dispatched
    assert counts(f, "dispatch_accuracy") == (4, 5)
    # with caller and category: t1 t2 t3 t4 t8; t3 repeats t1 (a day earlier), t8 repeats
    # t6 (3 days earlier, before the period: the window reaches back past its start)
    assert counts(f, "repeat_request_rate") == (2, 5)
    assert f["direct_answer_rate"].rate == pytest.approx(1 / 7)
    assert f["dispatch_accuracy"].rate == pytest.approx(0.8)


def test_given_the_city_when_counted_then_every_unit_clock_figure_matches_the_hand_count(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)
    # lead assignments: t2(CITY) t3(STREET) t4a(OTHER, returned) t4b(CITY) t7(CITY) t8(OTHER)
    # sign-for: t2 exactly at the deadline (on time), t3 an hour late, t4b t7 t8 on time;
    # t4a ended (returned) before its deadline unsigned: not judged
    assert counts(f, "on_time_sign_rate") == (4, 5)
    # reply: t2 exactly at the deadline (on time), t8 on time; t3 late; t4b and t7 unreplied
    # past their deadlines at NOW; t4a not judged
    assert counts(f, "on_time_reply_rate") == (2, 5)
    assert counts(f, "overdue_rate") == (3, 5)
    # close: t2 and t3 before, t8 exactly at close_due; t4b past it and open; t7 due 14 Dec
    # (not judged yet), t4a withdrawn before its deadline
    assert counts(f, "on_time_close_rate") == (3, 4)
    assert counts(f, "return_rate") == (1, 6)  # t4a
    assert counts(f, "extension_rate") == (1, 6)  # t7


def test_given_a_reply_exactly_at_the_deadline_then_it_is_on_time(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)
    on_time = names(city, ids(session, f["on_time_reply_rate"].numerator_ids))
    assert on_time == {"t2", "t8"}
    late = names(city, ids(session, f["overdue_rate"].numerator_ids))
    assert late == {"t3", "t4", "t7"}


def test_given_a_returned_then_redispatched_ticket_then_it_hurts_dispatch_accuracy(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)["dispatch_accuracy"]
    wrong = ids(session, f.denominator_ids) - ids(session, f.numerator_ids)
    assert names(city, wrong) == {"t4"}


def test_given_drill_down_then_the_ids_are_the_tickets_counted(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)
    assert names(city, ids(session, f["direct_answer_rate"].numerator_ids)) == {"t1"}
    assert len(ids(session, f["direct_answer_rate"].denominator_ids)) == 7
    assert names(city, ids(session, f["repeat_request_rate"].numerator_ids)) == {"t3", "t8"}
    assert names(city, ids(session, f["return_rate"].numerator_ids)) == {"t4"}
    # a page pages through the ids itself
    first = session.scalars(f["completion_rate"].numerator_ids.order_by("ticket_id").limit(2)).all()
    assert names(city, set(first)) == {"t1", "t2"}


def test_given_a_working_day_deadline_across_a_holiday_then_lateness_skips_days_off(
    session: Session, city: City
) -> None:
    # 2 Dec (Wed) 10:00 + 2 working days: 3 Dec is a holiday, 4 Dec (Fri) is one, the
    # weekend is off, 7 Dec (Mon) 10:00 the second
    assert sla.add_time(L(2, 10), 2, ClockUnit.workdays, CAL) == L(7, 10)
    late = overdue(session, filters=Filters(start=START, end=END), now=NOW, calendar=CAL)
    assert late.figure.numerator == 3
    # t3 (hours policy): replied 5 Dec 10:00, due 4 Dec 10:00 → 1 day
    # t4b (hours): unreplied, due 3 Dec 11:30, NOW 9 Dec 10:00 → 5 d 22.5 h = 5.9375 days
    # t7 (working days): due 7 Dec 10:00 to 9 Dec 10:00, 8 Dec a holiday → 1 working day
    assert late.days_total == pytest.approx(1 + 5.9375 + 1)
    assert late.days_max == pytest.approx(5.9375)


def test_given_a_unit_then_its_children_are_included(session: Session, city: City) -> None:
    u = city.units
    f = compute(session, filters=Filters(start=START, end=END, unit_id=u["CITY"]), now=NOW)
    # CITY and STREET: t2 t3 t4 (t4b) t7
    assert counts(f, "direct_answer_rate") == (0, 4)
    assert counts(f, "on_time_sign_rate") == (3, 4)  # t3 late
    assert counts(f, "return_rate") == (0, 4)  # t4a was OTHER's
    street = compute(session, filters=Filters(start=START, end=END, unit_id=u["STREET"]), now=NOW)
    assert counts(street, "on_time_sign_rate") == (0, 1)
    assert counts(street, "satisfaction_rate") == (1, 1)


def test_given_filters_then_they_exclude_what_they_should(session: Session, city: City) -> None:
    by_category = compute(
        session, filters=Filters(start=START, end=END, category_prefix="02"), now=NOW
    )
    assert counts(by_category, "direct_answer_rate") == (1, 5)  # t1 t2 t3 t5 t7
    by_district = compute(session, filters=Filters(start=START, end=END, district="郊区"), now=NOW)
    assert counts(by_district, "completion_rate") == (2, 2)  # t3 t8
    assert counts(by_district, "on_time_close_rate") == (2, 2)
    by_channel = compute(
        session, filters=Filters(start=START, end=END, channel=Channel.web), now=NOW
    )
    assert counts(by_channel, "merge_rate") == (1, 2)  # t2 t5
    earlier = compute(session, filters=Filters(start=L(30, 0, month=11), end=START), now=NOW)
    assert counts(earlier, "direct_answer_rate") == (0, 1)  # t6 alone


def test_given_nothing_to_count_then_rates_are_none_not_errors(
    session: Session, city: City
) -> None:
    f = compute(session, filters=Filters(start=START, end=END, district="无此区"), now=NOW)
    assert all(fig.numerator == fig.denominator == 0 for fig in f.values())
    assert all(fig.rate is None for fig in f.values())


def test_given_a_stricter_survey_scale_then_only_satisfied_counts(
    session: Session, city: City
) -> None:
    strict = Context(now=NOW, dialect=session.get_bind().dialect.name)
    strict = Context(now=NOW, dialect=strict.dialect, satisfied=frozenset({Satisfaction.satisfied}))
    f = compute(
        session,
        filters=Filters(start=START, end=END),
        now=NOW,
        definitions=[satisfaction_rate],
        ctx=strict,
    )
    assert counts(f, "satisfaction_rate") == (1, 2)  # t3 基本满意 no longer counts


def test_given_the_city_then_units_are_scored_banded_and_ranked(
    session: Session, city: City
) -> None:
    u = city.units
    rates = {
        r.unit_id: r for r in unit_rates(session, filters=Filters(start=START, end=END), now=NOW)
    }
    cty, street, other = rates[u["CITY"]], rates[u["STREET"]], rates[u["OTHER"]]
    # CITY: sign t2 t4b t7 all on time 3/3; close t2 on time, t4b late (t7 not judged) 1/2;
    # satisfied t2 1/1 → 30·1 + 35·0.5 + 35·1 = 82.5 → 良好
    assert (cty.response.numerator, cty.response.denominator) == (3, 3)
    assert (cty.resolution.numerator, cty.resolution.denominator) == (1, 2)
    assert (cty.satisfaction.numerator, cty.satisfaction.denominator) == (1, 1)
    assert cty.score == pytest.approx(82.5)
    assert cty.band == "良好"
    # STREET (its own, not rolled up): sign 0/1, close 1/1, 基本满意 1/1 → 0 + 35 + 35 = 70
    assert street.score == pytest.approx(70)
    assert street.band == "合格"
    # OTHER: t8 signed on time 1/1 (t4a not judged), closed exactly at the deadline 1/1,
    # nobody surveyed: 满意率 None, weights 30/35 scaled to 100 → 100 → 优秀
    assert other.satisfaction.rate is None
    assert other.score == pytest.approx(100)
    assert other.band == "优秀"
    assert (other.rank, cty.rank, street.rank) == (1, 2, 3)
    assert names(city, ids(session, street.response.denominator_ids)) == {"t3"}


def test_given_other_weights_then_the_score_and_band_follow(session: Session, city: City) -> None:
    rates = {
        r.unit_id: r
        for r in unit_rates(
            session,
            filters=Filters(start=START, end=END),
            now=NOW,
            weights=Weights(response=50, resolution=25, satisfaction=25),
        )
    }
    assert rates[city.units["CITY"]].score == pytest.approx(50 + 12.5 + 25)
    assert rates[city.units["STREET"]].score == pytest.approx(50)  # 0 + 25 + 25
    assert rates[city.units["STREET"]].band == "待改进"


def test_weights_must_add_up_to_100() -> None:
    assert Weights() == Weights(30, 35, 35)
    with pytest.raises(InvalidInput, match="add up to 100"):
        Weights(30, 30, 30)
    with pytest.raises(InvalidInput):
        Weights(60, 60, -20)


def test_a_score_on_a_threshold_is_in_the_better_band() -> None:
    assert band_of(90.0) == "优秀"
    assert band_of(89.999) == "良好"
    assert band_of(60.0) == "合格"
    assert band_of(0.0) == "待改进"
    assert band_of(75, [Band("A", 70), Band("B", 0)]) == "A"


def test_bad_bands_and_filters_are_refused(session: Session, city: City) -> None:
    with pytest.raises(InvalidInput):
        unit_rates(
            session,
            filters=Filters(start=START, end=END),
            now=NOW,
            bands=[Band("B", 50), Band("A", 80), Band("C", 0)],
        )
    with pytest.raises(InvalidInput):
        Filters(start=END, end=START)
    with pytest.raises(InvalidInput):
        Filters(start=START.replace(tzinfo=None), end=END)
    with pytest.raises(InvalidInput):
        Filters(start=START, end=END, category_prefix="02%")
    with pytest.raises(NotFound):
        compute(session, filters=Filters(start=START, end=END, unit_id=-1), now=NOW)


def test_subtree_takes_every_descendant_and_survives_a_cycle() -> None:
    edges = [(1, None), (2, 1), (3, 2), (4, None), (5, 5)]
    assert subtree(1, edges) == (1, 2, 3)
    assert subtree(5, edges) == (5,)
    assert subtree(9, edges) == ()


def test_given_a_clock_not_yet_due_then_it_is_judged_only_once_its_deadline_passes(
    session: Session, city: City
) -> None:
    # t7's close clock is due 14 Dec 10:00: at NOW it is neither on time nor late
    before = compute(session, filters=Filters(start=START, end=END), now=L(14, 10))
    assert counts(before, "on_time_close_rate") == (3, 4)  # at the deadline: not passed yet
    after = compute(session, filters=Filters(start=START, end=END), now=L(14, 10, 1))
    assert counts(after, "on_time_close_rate") == (3, 5)
    late = ids(session, after["on_time_close_rate"].denominator_ids) - ids(
        session, after["on_time_close_rate"].numerator_ids
    )
    assert names(city, late) == {"t4", "t7"}


def test_given_a_return_upheld_or_an_override_then_each_alone_hurts_dispatch_accuracy(
    session: Session, city: City
) -> None:
    upheld = _extra_ticket(session, city, return_count=1, steps=(Action.uphold_return,))
    override = _extra_ticket(session, city, return_count=0, steps=(Action.redispatch,))
    f = compute(session, filters=Filters(start=START, end=END), now=NOW)["dispatch_accuracy"]
    # the city's 4 of 5, plus two more dispatched tickets, neither right the first time
    assert (f.numerator, f.denominator) == (4, 7)
    wrong = ids(session, f.denominator_ids) - ids(session, f.numerator_ids)
    assert wrong == {city.tickets["t4"], upheld, override}


def _extra_ticket(
    session: Session, city: City, *, return_count: int, steps: tuple[Action, ...]
) -> int:
    ticket = Ticket(
        number=f"X{secrets.token_hex(6)}",
        channel=Channel.phone,
        description="x",
        created_at=L(4, 9),
        updated_at=L(4, 9),
        return_count=return_count,
        status=Status.signed,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    policy = session.scalars(select(col(Assignment.policy_id))).first()
    assert policy is not None
    session.add(
        Assignment(
            ticket_id=ticket.id,
            unit_id=city.units["OTHER"],
            role=AssignmentRole.lead,
            status=AssignmentStatus.signed,
            policy_id=policy,
            dispatched_by="test",
            started_at=L(4, 10),
            sign_due_at=L(4, 12),
            reply_due_at=L(6, 10),
            close_due_at=L(20, 10),
            signed_at=L(4, 11),
        )
    )
    for seq, action in enumerate(steps, start=1):
        session.add(
            TicketEvent(ticket_id=ticket.id, seq=seq, at=L(4, 12), actor="t", action=action.value)
        )
    session.flush()
    return ticket.id
