"""The Chinese working-day calendar: public holidays off, make-up working weekends (调休) on.

chinese-calendar publishes each year once the State Council announces it, so the years it
knows end a few weeks into the future. Administrators' overrides win over it and fill the
years it does not know; outside both, Monday–Friday is a guess the UI must flag. Whether a
year's data is right is a person's judgement: a year is confirmed (marked known) only when
an administrator says so (calendar_year, below).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar.constants import Holiday
from sqlmodel import Session, col, select

from core.errors import Conflict, InvalidInput
from dispatch.models import CalendarYear

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
MIN_YEAR, MAX_YEAR = 2000, 2100
NOTE_LIMIT = 500

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


# ------------------------------------------------------------ years an administrator confirmed
#
# What an unconfirmed year means for the SLA clocks: nothing changes in the arithmetic.
# Deadlines are counted from the best data there is (chinese-calendar, then the
# administrators' days, then Monday–Friday), so a deadline never moves because somebody
# clicked "confirm"; it is only flagged "calendar not confirmed" on the pages wherever it
# falls in such a year, so that nobody mistakes a guess for a promise. The centre is warned
# from 1 December while next year waits, because by then China has published it.

WARN_FROM = (12, 1)  # (month, day): next year's holidays are out; confirm them before 1 January


def confirmed_years(session: Session) -> frozenset[int]:
    rows = session.exec(select(CalendarYear.year).where(col(CalendarYear.known))).all()
    return frozenset(rows)


def year_marks(session: Session, *, years: Iterable[int]) -> dict[int, CalendarYear]:
    wanted = list(years)
    rows = session.exec(select(CalendarYear).where(col(CalendarYear.year).in_(wanted))).all()
    return {row.year: row for row in rows}


def mark_year(
    session: Session,
    *,
    year: int,
    known: bool,
    marked_by: int | None,
    now: datetime,
    note: str | None = None,
) -> CalendarYear:
    """Confirm a year (known) or withdraw the confirmation; the row keeps who said so last.
    Saying again what the year already is refuses, so that two administrators clicking at
    once are told rather than both recorded."""
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(f"year {year} is outside {MIN_YEAR}–{MAX_YEAR}", year=year)
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_LIMIT:
        raise InvalidInput(f"the note is longer than {NOTE_LIMIT} characters", note=len(note))
    row = session.get(CalendarYear, year, with_for_update=True)
    if row is None:
        if not known:
            raise Conflict(f"{year} was never confirmed", year=year, known=False)
        row = CalendarYear.model_validate(
            {"year": year, "known": True, "marked_by": marked_by, "marked_at": now, "note": note}
        )
    elif row.known == known:
        raise Conflict(
            f"{year} is already {'known' if known else 'withdrawn'}", year=year, known=known
        )
    else:
        row.known, row.marked_by, row.marked_at, row.note = known, marked_by, now, note
    session.add(row)
    session.flush()
    return row


def years_to_confirm(today: date, confirmed: Collection[int]) -> list[int]:
    """The years the centre must be warned about on `today` (a local date): this year while
    it is not confirmed, and next year from 1 December."""
    years = [today.year]
    if (today.month, today.day) >= WARN_FROM:
        years.append(today.year + 1)
    return [year for year in years if year not in confirmed]


def unconfirmed(due_at: datetime, confirmed: Collection[int], tz: ZoneInfo = DEFAULT_TZ) -> bool:
    """Whether a deadline falls in a year nobody has confirmed (a local year)."""
    return due_at.astimezone(tz).year not in confirmed
