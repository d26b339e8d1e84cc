from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput, NotFound
from dispatch.calendar import WorkCalendar
from dispatch.models import Clock, ClockUnit, EscalationKind, SlaPolicy
from dispatch.sla import (
    DEFAULT_CHAIN,
    EscalationStep,
    NoWorkingDays,
    ScheduledStep,
    add_time,
    clock_limit,
    due_at,
    elapsed,
    escalation_times,
    parse_chain,
    policy_matches,
    select_policy,
)

BJ = ZoneInfo("Asia/Shanghai")
H, WD = ClockUnit.hours, ClockUnit.workdays
CALENDAR = WorkCalendar()
NEW_YEAR_2027 = WorkCalendar({date(2027, 1, 1): False})


def bj(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Beijing wall-clock time, as the UTC instant the functions take."""
    return datetime(year, month, day, hour, minute, tzinfo=BJ).astimezone(UTC)


@pytest.mark.parametrize(
    ("start", "amount", "unit", "calendar", "expected"),
    [
        pytest.param(
            bj(2026, 11, 27, 22),
            4,
            H,
            CALENDAR,
            bj(2026, 11, 28, 2),
            id="hours-run-through-the-night",
        ),
        pytest.param(
            bj(2026, 9, 30, 23), 0.5, H, CALENDAR, bj(2026, 9, 30, 23, 30), id="half-hour"
        ),
        pytest.param(
            bj(2026, 9, 30, 12),
            48,
            H,
            CALENDAR,
            bj(2026, 10, 2, 12),
            id="hours-ignore-national-day",
        ),
        pytest.param(
            bj(2026, 11, 27, 15),
            1,
            WD,
            CALENDAR,
            bj(2026, 11, 30, 15),
            id="friday-afternoon-to-monday",
        ),
        pytest.param(
            bj(2026, 11, 28, 10),
            1,
            WD,
            CALENDAR,
            bj(2026, 12, 1),
            id="saturday-start-to-end-of-monday",
        ),
        pytest.param(
            bj(2026, 11, 27), 1, WD, CALENDAR, bj(2026, 11, 28), id="whole-friday-ends-at-midnight"
        ),
        pytest.param(
            bj(2026, 11, 30, 9), 0.5, WD, CALENDAR, bj(2026, 11, 30, 21), id="half-workday-same-day"
        ),
        pytest.param(
            bj(2026, 11, 27, 18),
            0.5,
            WD,
            CALENDAR,
            bj(2026, 11, 30, 6),
            id="half-workday-over-weekend",
        ),
        pytest.param(
            bj(2026, 11, 27, 10), 15, WD, CALENDAR, bj(2026, 12, 18, 10), id="fifteen-workdays"
        ),
        pytest.param(
            bj(2026, 9, 30, 10), 1, WD, CALENDAR, bj(2026, 10, 8, 10), id="over-national-day"
        ),
        pytest.param(
            bj(2026, 10, 9, 10),
            1,
            WD,
            CALENDAR,
            bj(2026, 10, 10, 10),
            id="into-national-day-makeup-saturday",
        ),
        pytest.param(
            bj(2026, 9, 18, 12), 1, WD, CALENDAR, bj(2026, 9, 20, 12), id="into-makeup-sunday"
        ),
        pytest.param(bj(2026, 10, 3, 12), 1, WD, CALENDAR, bj(2026, 10, 9), id="start-on-holiday"),
        pytest.param(
            bj(2026, 2, 13, 12),
            1,
            WD,
            CALENDAR,
            bj(2026, 2, 14, 12),
            id="into-spring-festival-makeup-saturday",
        ),
        pytest.param(
            bj(2026, 2, 14, 12), 1, WD, CALENDAR, bj(2026, 2, 24, 12), id="over-spring-festival"
        ),
        pytest.param(
            bj(2026, 2, 12, 10),
            7,
            WD,
            CALENDAR,
            bj(2026, 2, 28, 10),
            id="seven-workdays-over-spring-festival-and-both-makeup-saturdays",
        ),
        pytest.param(
            bj(2026, 12, 31, 10),
            1,
            WD,
            CALENDAR,
            bj(2027, 1, 1, 10),
            id="into-2027-monday-to-friday-fallback",
        ),
        pytest.param(
            bj(2026, 12, 31, 10),
            1,
            WD,
            NEW_YEAR_2027,
            bj(2027, 1, 4, 10),
            id="into-2027-with-new-year-override",
        ),
        pytest.param(
            bj(2026, 11, 30, 10),
            -1,
            WD,
            CALENDAR,
            bj(2026, 11, 27, 10),
            id="negative-goes-back-over-weekend",
        ),
        pytest.param(
            bj(2026, 10, 8, 6),
            -0.5,
            WD,
            CALENDAR,
            bj(2026, 9, 30, 18),
            id="negative-goes-back-over-national-day",
        ),
        pytest.param(
            bj(2026, 10, 3, 12), 0, WD, CALENDAR, bj(2026, 10, 3, 12), id="zero-on-holiday-stays"
        ),
    ],
)
def test_add_time(
    start: datetime, amount: float, unit: ClockUnit, calendar: WorkCalendar, expected: datetime
) -> None:
    result = add_time(start, amount, unit, calendar)
    assert result == expected
    assert result.tzinfo == UTC


@pytest.mark.parametrize(
    ("start", "end", "unit", "expected"),
    [
        pytest.param(bj(2026, 11, 27, 10), bj(2026, 11, 28, 12), H, 26, id="hours"),
        pytest.param(bj(2026, 11, 27, 12), bj(2026, 11, 30, 12), WD, 1, id="over-weekend"),
        pytest.param(
            bj(2026, 9, 30, 10), bj(2026, 10, 10, 10), WD, 3, id="national-day-and-makeup-saturday"
        ),
        pytest.param(bj(2026, 10, 2), bj(2026, 10, 4), WD, 0, id="inside-holiday"),
        pytest.param(bj(2026, 11, 30, 12), bj(2026, 11, 27, 12), WD, -1, id="backwards-negative"),
        pytest.param(bj(2026, 11, 30, 6), bj(2026, 11, 30, 18), WD, 0.5, id="half-day"),
    ],
)
def test_elapsed(start: datetime, end: datetime, unit: ClockUnit, expected: float) -> None:
    assert elapsed(start, end, unit, CALENDAR) == pytest.approx(expected)


instants = st.datetimes(
    min_value=datetime(2025, 12, 1), max_value=datetime(2027, 3, 1), timezones=st.just(UTC)
)
amounts = st.floats(min_value=-40, max_value=40, allow_nan=False)
units = st.sampled_from(list(ClockUnit))
calendars = st.sampled_from([CALENDAR, NEW_YEAR_2027])


@settings(max_examples=300, deadline=None)
@given(start=instants, amount=amounts, unit=units, calendar=calendars)
def test_elapsed_undoes_add_time(
    start: datetime, amount: float, unit: ClockUnit, calendar: WorkCalendar
) -> None:
    end = add_time(start, amount, unit, calendar)
    assert elapsed(start, end, unit, calendar) == pytest.approx(amount, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(start=instants, end=instants, unit=units)
def test_add_time_of_elapsed_is_the_earliest_instant_with_that_much_working_time(
    start: datetime, end: datetime, unit: ClockUnit
) -> None:
    amount = elapsed(start, end, unit, CALENDAR)
    reached = add_time(start, amount, unit, CALENDAR)
    if end >= start:
        assert reached <= end
    else:
        assert reached >= end
    assert elapsed(reached, end, unit, CALENDAR) == pytest.approx(0, abs=1e-9)


class CountingCalendar(WorkCalendar):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def is_workday(self, d: date) -> bool:
        self.asked += 1
        return super().is_workday(d)


def test_long_workday_span_walks_days_not_hours() -> None:
    calendar = CountingCalendar()
    add_time(bj(2026, 9, 28, 10), 15, WD, calendar)
    assert calendar.asked <= 30


def test_given_calendar_without_working_days_then_clear_error() -> None:
    all_off = WorkCalendar({date(2027, 1, 1) + timedelta(days=n): False for n in range(1200)})
    with pytest.raises(NoWorkingDays, match="no working day"):
        add_time(bj(2027, 1, 1), 1, WD, all_off)


@pytest.mark.parametrize(
    ("start", "amount"),
    [
        pytest.param(datetime(2026, 11, 27, 10), 1, id="naive-start"),
        pytest.param(bj(2026, 11, 27, 10), float("inf"), id="infinite-amount"),
        pytest.param(bj(2026, 11, 27, 10), float("nan"), id="nan-amount"),
    ],
)
def test_add_time_refuses_bad_input(start: datetime, amount: float) -> None:
    with pytest.raises(ValueError):
        add_time(start, amount, WD, CALENDAR)


def policy(**fields: Any) -> SlaPolicy:
    return SlaPolicy.model_validate({"name": "p", **fields})


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        pytest.param(Clock.sign, bj(2026, 11, 27, 12), id="sign-2-hours"),
        pytest.param(Clock.reply, bj(2026, 11, 30, 10), id="reply-1-workday"),
        pytest.param(Clock.close, bj(2026, 12, 4, 10), id="close-5-workdays"),
    ],
)
def test_due_at_uses_the_clock_limit_and_unit(clock: Clock, expected: datetime) -> None:
    p = policy(
        sign_limit=2,
        sign_unit="hours",
        reply_limit=1,
        reply_unit="workdays",
        close_limit=5,
        close_unit="workdays",
    )
    assert due_at(bj(2026, 11, 27, 10), p, clock, CALENDAR) == expected


def test_clock_limit_reads_stored_strings() -> None:
    p = policy(reply_limit=3, reply_unit="workdays")
    assert clock_limit(p, Clock.reply) == (3, ClockUnit.workdays)


def test_empty_chain_is_the_default_chain() -> None:
    assert parse_chain([]) == list(DEFAULT_CHAIN)
    assert [(s.kind, s.after_breach_hours) for s in DEFAULT_CHAIN] == [
        (EscalationKind.warning, None),
        (EscalationKind.chase, 0),
        (EscalationKind.supervision, 24),
        (EscalationKind.leadership, 72),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param([{"kind": "chase", "after_breach_hours": 0}], id="chase-only"),
        pytest.param(
            [
                {"kind": "warning"},
                {"kind": "chase", "after_breach_hours": 0},
                {"kind": "chase", "after_breach_hours": 0},
                {"kind": "supervision", "after_breach_hours": 2.5},
            ],
            id="repeated-and-equal-times",
        ),
        pytest.param([{"kind": "warning", "after_breach_hours": None}], id="warning-only"),
    ],
)
def test_parse_chain_accepts(raw: list[dict[str, Any]]) -> None:
    steps = parse_chain(raw)
    assert [s.model_dump(mode="json") for s in steps] == [
        {"kind": r["kind"], "after_breach_hours": r.get("after_breach_hours")} for r in raw
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            [{"kind": "warning", "after_breach_hours": 1}],
            r"step 1 \(warning\)",
            id="warning-with-hours",
        ),
        pytest.param(
            [{"kind": "chase", "after_breach_hours": 0}, {"kind": "warning"}],
            "warning must be the first step",
            id="warning-not-first",
        ),
        pytest.param(
            [{"kind": "chase"}], "after_breach_hours is required", id="chase-without-hours"
        ),
        pytest.param(
            [{"kind": "chase", "after_breach_hours": -1}], "0 or more", id="negative-hours"
        ),
        pytest.param(
            [
                {"kind": "chase", "after_breach_hours": 24},
                {"kind": "supervision", "after_breach_hours": 2},
            ],
            r"step 2 \(supervision\).*less than the previous",
            id="decreasing",
        ),
        pytest.param(
            [{"kind": "shout", "after_breach_hours": 0}], "step 1: kind", id="unknown-kind"
        ),
        pytest.param(
            [{"kind": "chase", "after_breach_hour": 0}],
            "step 1: after_breach_hour",
            id="misspelt-key",
        ),
        pytest.param(
            [{"kind": "chase", "after_breach_hours": float("inf")}], "finite", id="infinite-hours"
        ),
        pytest.param(["chase"], "step 1", id="not-a-mapping"),
        pytest.param("warning", "must be a list", id="not-a-list"),
    ],
)
def test_parse_chain_rejects(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_chain(raw)


def test_escalation_times_follow_the_chain_in_order() -> None:
    start, due = bj(2026, 11, 27, 10), bj(2026, 12, 3, 10)  # 4 workdays
    schedule = escalation_times(
        start=start, due=due, unit=WD, warn_ratio=0.75, chain=DEFAULT_CHAIN, calendar=CALENDAR
    )
    assert schedule == [
        ScheduledStep(1, EscalationKind.warning, bj(2026, 12, 2, 10)),
        ScheduledStep(2, EscalationKind.chase, due),
        ScheduledStep(3, EscalationKind.supervision, bj(2026, 12, 4, 10)),
        ScheduledStep(4, EscalationKind.leadership, bj(2026, 12, 6, 10)),
    ]
    assert [s.at for s in schedule] == sorted(s.at for s in schedule)


def test_given_extension_when_due_moves_then_warning_moves_too() -> None:
    start = bj(2026, 11, 27, 10)
    before = escalation_times(
        start=start,
        due=bj(2026, 12, 3, 10),
        unit=WD,
        warn_ratio=0.5,
        chain=DEFAULT_CHAIN,
        calendar=CALENDAR,
    )
    after = escalation_times(
        start=start,
        due=bj(2026, 12, 7, 10),
        unit=WD,
        warn_ratio=0.5,
        chain=DEFAULT_CHAIN,
        calendar=CALENDAR,
    )
    assert before[0].at == bj(2026, 12, 1, 10)
    assert after[0].at == bj(2026, 12, 2, 10)
    assert after[1].at == bj(2026, 12, 7, 10)


def test_warning_on_a_24_7_clock_counts_wall_time() -> None:
    schedule = escalation_times(
        start=bj(2026, 10, 1, 8),
        due=bj(2026, 10, 1, 10),
        unit=H,
        warn_ratio=0.5,
        chain=parse_chain([{"kind": "warning"}, {"kind": "supervision", "after_breach_hours": 2}]),
        calendar=CALENDAR,
    )
    assert schedule == [
        ScheduledStep(1, EscalationKind.warning, bj(2026, 10, 1, 9)),
        ScheduledStep(2, EscalationKind.supervision, bj(2026, 10, 1, 12)),
    ]


def test_warning_on_a_workday_clock_skips_holidays() -> None:
    schedule = escalation_times(
        start=bj(2026, 9, 30),
        due=bj(2026, 10, 9),
        unit=WD,
        warn_ratio=0.5,
        chain=[EscalationStep(kind=EscalationKind.warning)],
        calendar=CALENDAR,
    )
    assert schedule[0].at == bj(2026, 10, 1)


@pytest.mark.parametrize(
    ("due", "warn_ratio"),
    [
        pytest.param(bj(2026, 11, 26), 0.5, id="due-before-start"),
        pytest.param(bj(2026, 11, 30), 1.0, id="ratio-one"),
        pytest.param(bj(2026, 11, 30), 0.0, id="ratio-zero"),
    ],
)
def test_escalation_times_refuses_bad_input(due: datetime, warn_ratio: float) -> None:
    with pytest.raises(ValueError):
        escalation_times(
            start=bj(2026, 11, 27),
            due=due,
            unit=WD,
            warn_ratio=warn_ratio,
            chain=DEFAULT_CHAIN,
            calendar=CALENDAR,
        )


POLICIES = [
    policy(id=1, name="general"),
    policy(id=2, name="named-only"),
    policy(id=3, name="urgent", urgency="urgent"),
    policy(id=4, name="consultation", request_type="consultation"),
    policy(id=5, name="urban", category_prefix="01"),
    policy(id=6, name="urban-roads", category_prefix="0102"),
    policy(id=7, name="urban-roads-b", category_prefix="0102"),
    policy(id=8, name="retired", category_prefix="010203", active=False),
    policy(id=9, name="urgent-complaint", urgency="urgent", request_type="complaint"),
]


@pytest.mark.parametrize(
    ("request_type", "urgency", "category_code", "name", "expected"),
    [
        pytest.param("complaint", "normal", None, None, "general", id="nothing-matches"),
        pytest.param("complaint", "normal", "990101", None, "general", id="unmatched-category"),
        pytest.param("help", "urgent", None, None, "urgent", id="urgency"),
        pytest.param("consultation", "normal", None, None, "consultation", id="request-type"),
        pytest.param(
            "consultation", "urgent", None, None, "urgent", id="urgency-beats-request-type"
        ),
        pytest.param(
            "complaint",
            "urgent",
            None,
            None,
            "urgent-complaint",
            id="urgency-and-type-beat-urgency",
        ),
        pytest.param(
            "consultation", "urgent", "010501", None, "urban", id="category-beats-urgency"
        ),
        pytest.param(
            "help",
            "normal",
            "010203",
            None,
            "urban-roads",
            id="longer-prefix-wins-tie-to-lowest-id-inactive-skipped",
        ),
        pytest.param("help", "normal", None, "named-only", "named-only", id="by-name"),
        pytest.param("help", "urgent", "010203", "general", "general", id="name-beats-match"),
    ],
)
def test_select_policy(
    request_type: str, urgency: str, category_code: str | None, name: str | None, expected: str
) -> None:
    chosen = select_policy(
        POLICIES, request_type=request_type, urgency=urgency, category_code=category_code, name=name
    )
    assert chosen.name == expected


@pytest.mark.parametrize(
    "name", [pytest.param("missing", id="unknown"), pytest.param("retired", id="inactive")]
)
def test_select_policy_refuses_unknown_or_inactive_name(name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        select_policy(
            POLICIES, request_type="help", urgency="normal", category_code=None, name=name
        )


def test_given_no_general_policy_when_nothing_matches_then_not_found() -> None:
    with pytest.raises(NotFound, match="general"):
        select_policy(POLICIES[1:], request_type="help", urgency="normal", category_code=None)


def test_policy_without_selectors_matches_nothing() -> None:
    assert not policy_matches(
        POLICIES[1], request_type="help", urgency="normal", category_code="01"
    )
