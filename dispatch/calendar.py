"""The Chinese working-day calendar: public holidays off, make-up working weekends (调休) on.

chinese-calendar publishes each year once the State Council announces it, so the years it
knows end a few weeks into the future. Administrators' overrides win over it and fill the
years it does not know; outside both, Monday–Friday is a guess the UI must flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar.constants import Holiday

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")

_HOLIDAY_ZH = {holiday.value: holiday.chinese for holiday in Holiday}


@dataclass(frozen=True)
class CalendarEntry:
    day: date
    name: str | None


@dataclass(frozen=True)
class YearSummary:
    year: int
    known: bool  # False: nobody has entered this year's holidays; weekends only are assumed
    holidays: list[CalendarEntry]  # weekdays off
    makeup_workdays: list[CalendarEntry]  # weekend days worked (调休)


class WorkCalendar:
    """Answers "is this local date a working day?" and caches each answer.

    A year counts as known when chinese-calendar covers it or an administrator has entered
    at least one override in it (entering a year's holidays is how it gets loaded).
    """

    def __init__(
        self,
        overrides: Mapping[date, bool] | None = None,
        tz: ZoneInfo = DEFAULT_TZ,
        *,
        names: Mapping[date, str] | None = None,
    ) -> None:
        self.tz = tz
        self._overrides = dict(overrides or {})
        self._names = dict(names or {})
        self._override_years = {d.year for d in self._overrides}
        self._workday: dict[date, bool] = {}
        self._library_years: dict[int, bool] = {}

    def is_workday(self, d: date) -> bool:
        answer = self._workday.get(d)
        if answer is None:
            answer = self._compute_workday(d)
            self._workday[d] = answer
        return answer

    def is_known(self, d: date) -> bool:
        return d.year in self._override_years or self._library_knows(d.year)

    def holiday_name(self, d: date) -> str | None:
        """The holiday a day belongs to — for a make-up working day, the holiday it makes up
        for, suffixed 调休 — or None for an ordinary day."""
        if d in self._names:
            return self._names[d]
        if d in self._overrides or not self._library_knows(d.year):
            return None
        on_holiday, english = chinese_calendar.get_holiday_detail(d)
        if english is None:
            return None
        chinese = _HOLIDAY_ZH.get(english, english)
        return chinese if on_holiday else f"{chinese}调休"

    def year(self, year: int) -> YearSummary:
        """What the calendar believes about a year: whether its holidays are known at all,
        the weekdays off and the weekend days worked (调休)."""
        day, end = date(year, 1, 1), date(year + 1, 1, 1)
        holidays: list[CalendarEntry] = []
        makeup: list[CalendarEntry] = []
        while day < end:
            weekend = day.weekday() >= 5
            if self.is_workday(day) == weekend:  # the exceptions to a plain Mon–Fri week
                (makeup if weekend else holidays).append(
                    CalendarEntry(day=day, name=self.holiday_name(day))
                )
            day += timedelta(days=1)
        return YearSummary(
            year=year,
            known=self.is_known(date(year, 1, 1)),
            holidays=holidays,
            makeup_workdays=makeup,
        )

    def _compute_workday(self, d: date) -> bool:
        if d in self._overrides:
            return self._overrides[d]
        if self._library_knows(d.year):
            workday: bool = chinese_calendar.is_workday(d)  # the library is untyped
            return workday
        return d.weekday() < 5

    def _library_knows(self, year: int) -> bool:
        known = self._library_years.get(year)
        if known is None:
            try:
                chinese_calendar.is_workday(date(year, 1, 1))
                known = True
            except NotImplementedError:
                known = False
            self._library_years[year] = known
        return known
