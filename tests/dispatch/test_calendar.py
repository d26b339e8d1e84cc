from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from sqlmodel import Session

from core.errors import Conflict, InvalidInput
from dispatch.calendar import (
    DEFAULT_TZ,
    WorkCalendar,
    confirmed_years,
    mark_year,
    unconfirmed,
    year_marks,
    years_to_confirm,
)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2026, 11, 27), True, id="ordinary-friday"),
        pytest.param(date(2026, 11, 28), False, id="ordinary-saturday"),
        pytest.param(date(2026, 10, 1), False, id="national-day"),
        pytest.param(date(2026, 10, 7), False, id="national-day-last"),
        pytest.param(date(2026, 10, 10), True, id="national-day-makeup-saturday"),
        pytest.param(date(2026, 9, 20), True, id="makeup-sunday-september"),
        pytest.param(date(2026, 2, 16), False, id="spring-festival"),
        pytest.param(date(2026, 2, 23), False, id="spring-festival-monday"),
        pytest.param(date(2026, 2, 14), True, id="spring-festival-makeup-saturday"),
        pytest.param(date(2026, 2, 28), True, id="spring-festival-makeup-saturday-after"),
        pytest.param(date(2026, 1, 1), False, id="new-year"),
    ],
)
def test_given_known_year_when_asking_then_chinese_calendar_decides(
    day: date, expected: bool
) -> None:
    calendar = WorkCalendar()
    assert calendar.is_workday(day) is expected
    assert calendar.is_known(day)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2026, 10, 1), "国庆节", id="holiday"),
        pytest.param(date(2026, 10, 10), "国庆节调休", id="makeup-day"),
        pytest.param(date(2026, 2, 17), "春节", id="spring-festival"),
        pytest.param(date(2026, 11, 27), None, id="ordinary-workday"),
        pytest.param(date(2026, 11, 28), None, id="ordinary-weekend"),
        pytest.param(date(2027, 1, 1), None, id="unknown-year"),
    ],
)
def test_holiday_name_in_chinese(day: date, expected: str | None) -> None:
    assert WorkCalendar().holiday_name(day) == expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2027, 1, 1), True, id="friday"),
        pytest.param(date(2027, 1, 2), False, id="saturday"),
        pytest.param(date(2027, 1, 4), True, id="monday"),
        pytest.param(date(2003, 1, 1), True, id="before-2004-wednesday"),
    ],
)
def test_given_year_chinese_calendar_does_not_know_then_monday_to_friday_and_unknown(
    day: date, expected: bool
) -> None:
    calendar = WorkCalendar()
    assert calendar.is_workday(day) is expected
    assert not calendar.is_known(day)


def test_given_override_for_2027_then_it_wins_and_the_year_counts_as_loaded() -> None:
    calendar = WorkCalendar(
        {date(2027, 1, 1): False, date(2027, 2, 6): True},
        names={date(2027, 1, 1): "元旦", date(2027, 2, 6): "春节调休"},
    )
    assert not calendar.is_workday(date(2027, 1, 1))
    assert calendar.is_workday(date(2027, 2, 6))
    assert calendar.is_workday(date(2027, 1, 5))
    assert calendar.is_known(date(2027, 6, 1))
    assert not calendar.is_known(date(2028, 1, 3))
    assert calendar.holiday_name(date(2027, 1, 1)) == "元旦"
    assert calendar.holiday_name(date(2027, 2, 6)) == "春节调休"


@pytest.mark.parametrize(
    ("day", "is_workday"),
    [
        pytest.param(date(2026, 10, 3), True, id="holiday-made-workday"),
        pytest.param(date(2026, 11, 30), False, id="workday-made-holiday"),
    ],
)
def test_given_override_in_known_year_then_override_wins(day: date, is_workday: bool) -> None:
    calendar = WorkCalendar({day: is_workday})
    assert calendar.is_workday(day) is is_workday
    assert calendar.holiday_name(day) is None


def test_each_day_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[date] = []
    real = chinese_calendar.is_workday

    def counting(day: date) -> bool:
        asked.append(day)
        return real(day)

    calendar = WorkCalendar()
    calendar.is_known(date(2026, 1, 1))
    monkeypatch.setattr(chinese_calendar, "is_workday", counting)
    for _ in range(3):
        calendar.is_workday(date(2026, 10, 10))
    assert asked == [date(2026, 10, 10)]


def test_default_zone_is_beijing_time() -> None:
    assert WorkCalendar().tz == DEFAULT_TZ == ZoneInfo("Asia/Shanghai")


# ------------------------------------------------------------ years an administrator confirmed


@pytest.mark.parametrize(
    ("today", "confirmed", "expected"),
    [
        pytest.param(date(2026, 11, 30), set(), [2026], id="november-this-year-only"),
        pytest.param(date(2026, 12, 1), set(), [2026, 2027], id="from-1-december-next-too"),
        pytest.param(date(2026, 12, 31), {2026}, [2027], id="this-confirmed"),
        pytest.param(date(2026, 12, 1), {2026, 2027}, [], id="both-confirmed"),
        pytest.param(date(2027, 1, 1), {2027}, [], id="new-year-was-confirmed"),
    ],
)
def test_given_a_day_then_the_years_to_confirm_are_this_and_from_december_next(
    today: date, confirmed: set[int], expected: list[int]
) -> None:
    assert years_to_confirm(today, confirmed) == expected


def test_given_a_deadline_then_its_local_year_decides_whether_it_is_flagged() -> None:
    new_year_eve_utc = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)  # 00:30 on 1 January there
    assert unconfirmed(new_year_eve_utc, {2026})
    assert not unconfirmed(new_year_eve_utc, {2027})
    assert not unconfirmed(new_year_eve_utc, {2026}, tz=ZoneInfo("UTC"))


def test_given_an_admin_when_marking_years_then_confirm_and_withdraw_are_told_apart(
    session: Session,
) -> None:
    now = datetime(2026, 12, 2, 2, tzinfo=UTC)
    assert confirmed_years(session) == frozenset()
    row = mark_year(session, year=2027, known=True, marked_by=None, now=now, note=" 国办通知 ")
    assert (row.known, row.note, row.marked_at) == (True, "国办通知", now)
    assert confirmed_years(session) == {2027}
    with pytest.raises(Conflict):
        mark_year(session, year=2027, known=True, marked_by=None, now=now)
    later = now + timedelta(days=1)
    mark_year(session, year=2027, known=False, marked_by=None, now=later)
    assert confirmed_years(session) == frozenset()
    assert year_marks(session, years=[2026, 2027])[2027].marked_at == later
    with pytest.raises(Conflict):
        mark_year(session, year=2027, known=False, marked_by=None, now=later)
    with pytest.raises(Conflict):  # never confirmed: nothing to withdraw
        mark_year(session, year=2028, known=False, marked_by=None, now=later)
    with pytest.raises(InvalidInput):
        mark_year(session, year=2101, known=True, marked_by=None, now=later)
    with pytest.raises(InvalidInput):
        mark_year(session, year=2028, known=True, marked_by=None, now=later, note="x" * 501)
    assert year_marks(session, years=[2028]) == {}
