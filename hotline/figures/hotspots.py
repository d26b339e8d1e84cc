"""Where and what the requests are about (热点): requests by category and by district per day
or week, by hour of the day, rising topics (the categories that grew most this week over
last), and the located requests for a map. Every count is of tickets taken in
(``ticket.created_at``) under the same ``Filters`` as the figures, counted by the database
on the centre's wall clock.

Days are cut in the database at the centre's offset from UTC when it is one over the whole
period (China's is: no daylight saving); across a change of offset, by UTC hours folded
here. Weeks start on Monday and are folded from the days here (a period holds few days).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, case, cast, func, literal_column, select
from sqlmodel import Session

from core.errors import InvalidInput
from hotline.figures.filters import Filters, T, resolve

DAY_S, HOUR_S = 86_400, 3_600
MAX_LOCATED = 5_000
RISING_MIN = 5  # this week's requests a category needs to be a rising topic
WEEK = timedelta(days=7)


class By(StrEnum):
    category = "category"
    district = "district"


class Every(StrEnum):
    day = "day"
    week = "week"


@dataclass(frozen=True)
class Count:
    key: str | None  # the category code or the district; None: not given
    label: str | None  # the category's name (the district is its own name)
    count: int


@dataclass(frozen=True)
class Cell:
    """One series point: ``count`` requests of ``key`` in the day or week starting ``on``."""

    on: date
    key: str | None
    label: str | None
    count: int


@dataclass(frozen=True)
class Rising:
    code: str
    name: str | None
    this_week: int
    last_week: int

    @property
    def ratio(self) -> float | None:
        """This week over last; None when last week had none (a new topic)."""
        return self.this_week / self.last_week if self.last_week else None


@dataclass(frozen=True)
class Located:
    ticket_id: int
    number: str
    latitude: float
    longitude: float
    category: str | None
    district: str | None
    created_at: datetime


def _offset(filters: Filters, tz: ZoneInfo) -> int | None:
    """The centre's offset from UTC in seconds when it is one over the period, else None."""
    offsets = {
        filters.start.astimezone(tz).utcoffset(),
        (filters.end - timedelta(microseconds=1)).astimezone(tz).utcoffset(),
    }
    if len(offsets) != 1:
        return None
    only = offsets.pop() or timedelta()
    return int(only.total_seconds())


def _key(dialect: str, column: Any, width: int, shift: int) -> Any:
    """floor((seconds since 1970 + shift) / width) as an integer."""
    if dialect == "postgresql":
        return cast(func.floor((func.extract("epoch", column) + shift) / width), Integer)
    seconds = cast(func.strftime("%s", column), Integer) + shift
    return seconds.self_group().op("/")(literal_column(str(width)))


def _local_slots(
    session: Session, filters: Filters, tz: ZoneInfo, width: int
) -> tuple[Any, int, int]:
    """The SQL slot key of a ticket's intake and how to read it back: (key, width,
    shift)."""
    dialect = session.get_bind().dialect.name
    shift = _offset(filters, tz)
    if shift is None:  # fold UTC hours on the wall clock
        return _key(dialect, T.c.created_at, HOUR_S, 0), HOUR_S, 0
    return _key(dialect, T.c.created_at, width, shift), width, shift


def _local_moment(key: int, width: int, shift: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(int(key) * width - shift, UTC).astimezone(tz)


def _day_of(key: int, width: int, shift: int, tz: ZoneInfo) -> date:
    if width == DAY_S:  # the key is already the local day
        return date(1970, 1, 1) + timedelta(days=int(key))
    return _local_moment(key, width, shift, tz).date()


def _bucket(day: date, every: Every) -> date:
    return day - timedelta(days=day.weekday()) if every is Every.week else day


def _group(by: By) -> tuple[Any, Any]:
    if by is By.category:
        return T.c.category_code, func.max(T.c.category_name)
    return T.c.district, func.max(T.c.district)


def totals(session: Session, *, filters: Filters, by: By, limit: int | None = None) -> list[Count]:
    """Requests per category (code and name) or per district, most first."""
    scope = resolve(session, filters)
    key, label = _group(by)
    n = func.count()
    query = (
        select(key, label, n)
        .select_from(T)
        .where(*scope.ticket_where())
        .group_by(key)
        .order_by(n.desc(), key)
    )
    if limit is not None:
        query = query.limit(limit)
    return [Count(row[0], row[1], int(row[2])) for row in session.execute(query)]


def matrix(
    session: Session, *, filters: Filters
) -> list[tuple[str | None, str | None, str | None, int]]:
    """Requests per category and district together (category code, its name, district,
    count), most first: where which matter is asked about."""
    scope = resolve(session, filters)
    n = func.count()
    query = (
        select(T.c.category_code, func.max(T.c.category_name), T.c.district, n)
        .select_from(T)
        .where(*scope.ticket_where())
        .group_by(T.c.category_code, T.c.district)
        .order_by(n.desc(), T.c.category_code, T.c.district)
    )
    return [(row[0], row[1], row[2], int(row[3])) for row in session.execute(query)]


def over_time(
    session: Session, *, filters: Filters, by: By, every: Every, tz: ZoneInfo
) -> list[Cell]:
    """Requests per category or district per day or week (the week's Monday), in order of
    the bucket then most first."""
    scope = resolve(session, filters)
    slot, width, shift = _local_slots(session, filters, tz, DAY_S)
    key, label = _group(by)
    query = (
        select(slot.label("slot"), key, label, func.count())
        .select_from(T)
        .where(*scope.ticket_where())
        .group_by(slot, key)
    )
    counts: Counter[tuple[date, str | None]] = Counter()
    labels: dict[str | None, str | None] = {}
    for row in session.execute(query):
        on = _bucket(_day_of(row[0], width, shift, tz), every)
        counts[(on, row[1])] += int(row[3])
        labels[row[1]] = labels.get(row[1]) or row[2]
    return [
        Cell(on, code, labels.get(code), n)
        for (on, code), n in sorted(
            counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1] or "")
        )
    ]


def by_day(session: Session, *, filters: Filters, tz: ZoneInfo) -> list[tuple[date, int]]:
    """Requests per local day of the period, days without any included (as 0)."""
    scope = resolve(session, filters)
    slot, width, shift = _local_slots(session, filters, tz, DAY_S)
    query = select(slot, func.count()).select_from(T).where(*scope.ticket_where()).group_by(slot)
    counts: Counter[date] = Counter()
    for row in session.execute(query):
        counts[_day_of(row[0], width, shift, tz)] += int(row[1])
    first = filters.start.astimezone(tz).date()
    last = (filters.end - timedelta(microseconds=1)).astimezone(tz).date()
    return [
        (first + timedelta(days=i), counts.get(first + timedelta(days=i), 0))
        for i in range((last - first).days + 1)
    ]


def by_hour(session: Session, *, filters: Filters, tz: ZoneInfo) -> list[int]:
    """Requests per hour of the day (0–23, the centre's clock) over the whole period."""
    scope = resolve(session, filters)
    slot, width, shift = _local_slots(session, filters, tz, HOUR_S)
    query = select(slot, func.count()).select_from(T).where(*scope.ticket_where()).group_by(slot)
    hours = [0] * 24
    for row in session.execute(query):
        hours[_local_moment(row[0], width, shift, tz).hour] += int(row[1])
    return hours


def rising(
    session: Session,
    *,
    filters: Filters,
    minimum: int = RISING_MIN,
    limit: int = 20,
) -> list[Rising]:
    """The categories that rose most this week over last: "this week" is the seven days
    before the period's end, "last week" the seven before those (the period's start is not
    used; unit, category, district and channel are). A category needs ``minimum`` requests
    this week; the new ones (none last week) come first, then by ratio, then by volume."""
    if minimum < 1:
        raise InvalidInput("the minimum volume is at least 1", field="minimum")
    this_start, last_start = filters.end - WEEK, filters.end - 2 * WEEK
    wide = Filters(
        start=last_start,
        end=filters.end,
        unit_id=filters.unit_id,
        category_prefix=filters.category_prefix,
        district=filters.district,
        channel=filters.channel,
    )
    scope = resolve(session, wide)
    now_week = T.c.created_at >= this_start
    this_count = func.sum(case((now_week, 1), else_=0))
    query = (
        select(
            T.c.category_code,
            func.max(T.c.category_name),
            this_count,
            func.count(),
        )
        .select_from(T)
        .where(*scope.ticket_where(), T.c.category_code.is_not(None))
        .group_by(T.c.category_code)
        .having(this_count >= minimum)
    )
    found = [
        Rising(row[0], row[1], int(row[2]), int(row[3]) - int(row[2]))
        for row in session.execute(query)
    ]
    found = [r for r in found if r.this_week > r.last_week]
    found.sort(key=lambda r: (-(r.ratio or math.inf), -r.this_week, r.code))
    return found[:limit]


def located(
    session: Session, *, filters: Filters, limit: int = MAX_LOCATED
) -> tuple[list[Located], int]:
    """The located requests (latitude and longitude given), newest first, at most
    ``limit``; and how many there are in all."""
    scope = resolve(session, filters)
    where = [*scope.ticket_where(), T.c.latitude.is_not(None), T.c.longitude.is_not(None)]
    total = int(session.scalar(select(func.count()).select_from(T).where(*where)) or 0)
    rows = session.execute(
        select(
            T.c.id,
            T.c.number,
            T.c.latitude,
            T.c.longitude,
            T.c.category_name,
            T.c.district,
            T.c.created_at,
        )
        .where(*where)
        .order_by(T.c.created_at.desc(), T.c.id.desc())
        .limit(limit)
    )
    return [Located(*row) for row in rows], total
