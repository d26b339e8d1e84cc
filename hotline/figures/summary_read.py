"""The figures read from the summary tables (hotline.figures.summary says how they are kept
and why the result is exact): each function returns None when the summaries cannot answer,
and the caller takes the exact scan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select
from sqlmodel import Session

from dispatch.calendar import WorkCalendar
from hotline.figures import summary as s
from hotline.figures.definitions import Context, Level
from hotline.figures.filters import A, Scope, T
from hotline.figures.models import FigureSummaryState

Counts = dict[str, tuple[int, int]]
EPOCH = date(1970, 1, 1)  # day 0


@dataclass(frozen=True)
class Plan:
    """Where the summaries answer for a period: the days [first, end), ``live`` those counted
    from the base tables instead (their tickets changed after the watermark)."""

    offset_s: int
    judged_at: datetime
    first: int
    end: int
    live: tuple[tuple[int, int], ...]
    watermark: int = 0  # the summaries' and the audit's latest event: part of the memo's key
    latest: int = 0

    @property
    def live_days(self) -> list[int]:
        return [day for a, b in self.live for day in range(a, b + 1)]

    def bounds(self, first: int, last: int) -> tuple[datetime, datetime]:
        return s.day_start(first, self.offset_s), s.day_start(last + 1, self.offset_s)


def plan(session: Session, scope: Scope, now: datetime) -> Plan | None:
    state = session.get(FigureSummaryState, 1)
    if state is None or now < state.judged_at:
        return None
    f, offset = scope.filters, state.offset_s
    if not (s.on_boundary(f.start, offset) and s.on_boundary(f.end, offset)):
        return None
    first, end = s.day_of(f.start, offset), s.day_of(f.end, offset)
    latest = session.scalar(select(func.max(s.E.c.id)))
    changed: set[int] = set()
    if latest is not None and latest > state.watermark:
        changed = s.changed_days(session, since_id=state.watermark, offset_s=offset, now=now)
    live = [(max(a, first), min(b, end - 1)) for a, b in s.ranges(changed)]
    if changed or now > state.judged_at:
        s.tune(session)  # the live days and the clocks judged again read the base tables
    return Plan(
        offset,
        state.judged_at,
        first,
        end,
        tuple((a, b) for a, b in live if a <= b),
        state.watermark,
        latest or 0,
    )


def _key_where(table: Table, p: Plan, scope: Scope, *, units: bool) -> list[Any]:
    f = scope.filters
    where: list[Any] = [table.c.day >= p.first, table.c.day < p.end]
    if p.live:
        where.append(table.c.day.not_in(p.live_days))
    if f.category_prefix is not None:
        where.append(table.c.category_code.startswith(f.category_prefix, autoescape=True))
    if f.district is not None:
        where.append(table.c.district == f.district)
    if f.channel is not None:
        where.append(table.c.channel == f.channel)
    if units and scope.unit_ids is not None:
        where.append(table.c.unit_id.in_(scope.unit_ids))
    return where


def _base_where(scope: Scope, *, units: bool) -> list[Any]:
    where = scope.ticket_where(with_unit=False)
    if units and scope.unit_ids is not None:
        where.append(A.c.unit_id.in_(scope.unit_ids))
    return where


def _context(session: Session, now: datetime, start: datetime, end: datetime) -> Context:
    return Context(now=now, dialect=session.get_bind().dialect.name, since=start, until=end)


def _sums(table: Table, names: tuple[str, ...]) -> list[Any]:
    return [func.coalesce(func.sum(table.c[f"{n}_{x}"]), 0) for n in names for x in "nd"]


def _pairs(names: tuple[str, ...], values: list[int]) -> Counts:
    return {n: (values[2 * i], values[2 * i + 1]) for i, n in enumerate(names)}


def ticket_counts(session: Session, scope: Scope, now: datetime) -> Counts | None:
    """Every ticket figure's (numerator, denominator) under ``scope`` at ``now``."""
    if scope.unit_ids is not None:
        return None
    p = plan(session, scope, now)
    if p is None:
        return None
    where = _key_where(s.ST, p, scope, units=False)
    totals = [
        int(v) for v in session.execute(select(*_sums(s.ST, s.TICKET_NAMES)).where(*where)).one()
    ]
    for a, b in p.live:
        start, end = p.bounds(a, b)
        query = s.ticket_select(
            _context(session, now, start, end),
            start,
            end,
            p.offset_s,
            _base_where(scope, units=False),
        )
        for row in session.execute(query):
            totals = [t + int(v) for t, v in zip(totals, row[4:], strict=True)]
    return _pairs(s.TICKET_NAMES, totals)


UNIT_COUNTED = (*s.UNIT_NAMES, s.UNIT_SATISFACTION)


@dataclass(frozen=True)
class _Units:
    values: dict[int, list[int]]  # unit → numerators and denominators, as UNIT_COUNTED
    late_days: float  # settled days late of the days not live
    late_days_max: float | None
    plan: Plan


def _units(session: Session, scope: Scope, now: datetime) -> _Units | None:
    """The unit counts, once per transaction for the same question: a dashboard asks for
    them for the cards, the SLA table, the unit rates and 超期."""
    p = plan(session, scope, now)
    if p is None:
        return None
    transaction = session.get_transaction()
    memo: tuple[Any, dict[Any, _Units]] | None = session.info.get(_MEMO)
    if memo is None or memo[0] is not transaction:
        memo = session.info[_MEMO] = (transaction, {})
    key = (scope, now, p)
    if key not in memo[1]:
        memo[1][key] = _count_units(session, scope, now, p)
    found: _Units = memo[1][key]
    return found


_MEMO = "hotline.figures.summary_read.units"


def _count_units(session: Session, scope: Scope, now: datetime, p: Plan) -> _Units:
    found: dict[int, list[int]] = {}

    def add(unit_id: int, values: Any, sign: int = 1) -> None:
        mine = found.setdefault(unit_id, [0] * (2 * len(UNIT_COUNTED)))
        found[unit_id] = [m + sign * int(v) for m, v in zip(mine, values, strict=True)]

    summed = (
        select(
            s.SU.c.unit_id,
            func.coalesce(func.sum(s.SU.c.late_days), 0.0),
            func.max(s.SU.c.late_days_max),
            *_sums(s.SU, UNIT_COUNTED),
        )
        .where(*_key_where(s.SU, p, scope, units=True))
        .group_by(s.SU.c.unit_id)
    )
    late_total, late_max = 0.0, None
    for row in session.execute(summed):
        add(row[0], row[3:])
        late_total += float(row[1])
        if row[2] is not None:
            late_max = float(row[2]) if late_max is None else max(late_max, float(row[2]))
    base = _base_where(scope, units=True)
    for a, b in p.live:
        start, end = p.bounds(a, b)
        query = s.unit_select(_context(session, now, start, end), start, end, p.offset_s, base)
        for row in session.execute(query):
            add(row[1], row[5:])
    if now > p.judged_at:
        # the clocks whose deadline passed since they were judged: counted at now, less
        # as counted at judged_at
        turned = select(s.SC.c.assignment_id).where(
            s.SC.c.due_at >= p.judged_at,
            s.SC.c.due_at < now,
            *_key_where(s.SC, p, scope, units=True),
        )
        f = scope.filters
        for at, sign in ((now, 1), (p.judged_at, -1)):
            query = s.unit_select(
                _context(session, at, f.start, f.end),
                f.start,
                f.end,
                p.offset_s,
                [*base, A.c.id.in_(turned)],
            )
            for row in session.execute(query):
                add(row[1], row[5:], sign)
    return _Units(found, late_total, late_max, p)


def unit_counts(session: Session, scope: Scope, now: datetime) -> dict[int, Counts] | None:
    """Every unit figure's (numerator, denominator) per lead unit under ``scope`` at
    ``now``, and the unit's 满意率 as ``unit_satisfaction``."""
    found = _units(session, scope, now)
    if found is None:
        return None
    return {unit_id: _pairs(UNIT_COUNTED, values) for unit_id, values in found.values.items()}


def counts(session: Session, scope: Scope, now: datetime, level: Level) -> Counts | None:
    """Every figure of ``level`` under ``scope`` (the unit figures summed over the units)."""
    if level is Level.ticket:
        return ticket_counts(session, scope, now)
    per_unit = unit_counts(session, scope, now)
    if per_unit is None:
        return None
    totals = dict.fromkeys(s.UNIT_NAMES, (0, 0))
    for mine in per_unit.values():
        for n in s.UNIT_NAMES:
            totals[n] = (totals[n][0] + mine[n][0], totals[n][1] + mine[n][1])
    return totals


def late(
    session: Session, scope: Scope, now: datetime, calendar: WorkCalendar
) -> tuple[float, float | None] | None:
    """The days late of the 超期 assignments under ``scope`` at ``now``: (total, max)."""
    units = _units(session, scope, now)
    if units is None:
        return None
    p, total, most = units.plan, units.late_days, units.late_days_max
    days: list[float] = []
    base = _base_where(scope, units=True)
    for a, b in p.live:
        start, end = p.bounds(a, b)
        query = s.late_select(
            _context(session, now, start, end), start, end, p.offset_s, base, settled_only=False
        )
        for row in session.execute(query).mappings():
            days.append(
                s.late_days(
                    row["reply_due_at"],
                    row["replied_at"],
                    row["ended_at"],
                    row["reply_unit"],
                    now,
                    calendar,
                )
            )
    running = select(s.SC.c.due_at, s.SC.c.reply_unit).where(
        s.SC.c.clock == "reply", s.SC.c.due_at < now, *_key_where(s.SC, p, scope, units=True)
    )
    for due, unit in session.execute(running):
        days.append(s.late_days(due, None, None, unit, now, calendar))
    peaks = [*days, most] if most is not None else days
    return total + sum(days), max(peaks) if peaks else None


def tickets_by_day(session: Session, scope: Scope, now: datetime) -> dict[date, int] | None:
    """Tickets taken in per day (the summaries' days, in the centre's offset)."""
    if scope.unit_ids is not None:
        return None
    p = plan(session, scope, now)
    if p is None:
        return None
    found: dict[int, int] = {}
    query = (
        select(s.ST.c.day, func.sum(s.ST.c.completion_rate_d))
        .where(*_key_where(s.ST, p, scope, units=False))
        .group_by(s.ST.c.day)
    )
    for day, n in session.execute(query):
        found[day] = int(n)
    dialect = session.get_bind().dialect.name
    for a, b in p.live:
        start, end = p.bounds(a, b)
        day_col = s.day_column(dialect, T.c.created_at, p.offset_s)
        live = (
            select(day_col, func.count())
            .where(T.c.created_at >= start, T.c.created_at < end, *_base_where(scope, units=False))
            .group_by(day_col)
        )
        for day, n in session.execute(live):
            found[day] = found.get(day, 0) + int(n)
    return {EPOCH + timedelta(days=d): n for d, n in sorted(found.items())}
