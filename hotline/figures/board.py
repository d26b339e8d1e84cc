"""What the figures' pages and their exports show, read once here so a page and its CSV/XLSX
agree: the cards (every figure with its counts), the unit tables (SLA compliance, the three
rates with score, band and rank), calls per day, the tickets behind a figure. ``only_unit``
narrows every per-unit table to one unit's own row (a handler's view): no other unit's
numbers or names are read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlmodel import Session

from core.db import table_of
from core.errors import InvalidInput
from dispatch.models import Unit
from hotline.calls import acd_figures
from hotline.calls.acd_figures import Interval
from hotline.figures import definitions as d
from hotline.figures import summary_read
from hotline.figures.compute import Figure, Overdue, compute, context, overdue, per_unit
from hotline.figures.filters import Filters, T, resolve
from hotline.figures.settings import RateSettings
from hotline.figures.units import UnitRates, unit_rates

U = table_of(Unit)

# The cards in the order the dashboard shows them.
CARDS = (
    "direct_answer_rate",
    "on_time_sign_rate",
    "on_time_reply_rate",
    "on_time_close_rate",
    "completion_rate",
    "callback_rate",
    "satisfaction_rate",
    "return_rate",
    "merge_rate",
    "extension_rate",
    "dispatch_accuracy",
    "overdue_rate",
    "repeat_request_rate",
)
SLA = (d.on_time_sign_rate, d.on_time_reply_rate, d.on_time_close_rate)


@dataclass(frozen=True)
class Ask:
    """What every table is read under: the filters, the instant clocks are judged at, the
    centre's time zone, and ``only_unit`` for a handler."""

    filters: Filters
    now: datetime
    tz: ZoneInfo
    only_unit: int | None = None
    answer_target_s: float = 15.0
    short_abandon_s: float = 5.0


@dataclass(frozen=True)
class Cards:
    figures: dict[str, Figure]
    overdue: Overdue


@dataclass(frozen=True)
class UnitSla:
    unit_id: int
    code: str
    name: str
    counts: dict[str, tuple[int, int]]  # figure name → (numerator, denominator)

    def rate(self, name: str) -> float | None:
        n, den = self.counts.get(name, (0, 0))
        return n / den if den else None


@dataclass(frozen=True)
class RankedUnit:
    code: str
    name: str
    rates: UnitRates


@dataclass(frozen=True)
class CallDay:
    day: date
    offered: int
    answered: int
    abandoned: int  # longer than the short abandons
    counted: int
    within_target: int

    @property
    def within_target_rate(self) -> float | None:
        return self.within_target / self.counted if self.counted else None


@dataclass(frozen=True)
class TicketRow:
    ticket_id: int
    number: str
    created_at: datetime
    status: str
    channel: str
    category: str | None
    district: str | None


def cards(session: Session, ask: Ask) -> Cards:
    figures = compute(session, filters=ask.filters, now=ask.now)
    return Cards(
        {name: figures[name] for name in CARDS}, overdue(session, filters=ask.filters, now=ask.now)
    )


def unit_id_of(session: Session, code: str) -> int | None:
    found = session.scalar(select(U.c.id).where(U.c.code == code))
    return None if found is None else int(found)


def unit_choices(session: Session) -> list[tuple[str, str]]:
    """(code, name) of every active unit, for the unit filter."""
    rows = session.execute(select(U.c.code, U.c.name).where(U.c.active).order_by(U.c.code))
    return [(row.code, row.name) for row in rows]


def unit_names(session: Session, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = session.execute(select(U.c.id, U.c.code, U.c.name).where(U.c.id.in_(sorted(ids))))
    return {row.id: (row.code, row.name) for row in rows}


def sla_by_unit(session: Session, ask: Ask) -> list[UnitSla]:
    """按时签收率 / 按时反馈率 / 按时办结率 of each unit's own lead assignments, the units
    in code order; from the summary tables where they answer."""
    scope = resolve(session, ask.filters)
    ctx = context(session, now=ask.now, filters=ask.filters)
    wanted = [make.__name__ for make in SLA]
    summed = summary_read.unit_counts(session, scope, ask.now)
    if summed is not None:
        counts = {u: {n: mine[n] for n in wanted} for u, mine in summed.items()}
    else:
        counts = per_unit(session, scope=scope, definitions=[make(ctx) for make in SLA])
    if ask.only_unit is not None:
        counts = {k: v for k, v in counts.items() if k == ask.only_unit}
    names = unit_names(session, list(counts))
    found = [
        UnitSla(unit_id, *names.get(unit_id, (str(unit_id), str(unit_id))), counts[unit_id])
        for unit_id in counts
    ]
    return sorted(found, key=lambda u: u.code)


def ranking(session: Session, ask: Ask, chosen: RateSettings) -> list[RankedUnit]:
    """The three rates, score, band and rank of every unit (a handler: only their own)."""
    rates = unit_rates(
        session, filters=ask.filters, now=ask.now, weights=chosen.weights, bands=chosen.bands
    )
    if ask.only_unit is not None:
        rates = [r for r in rates if r.unit_id == ask.only_unit]
    names = unit_names(session, [r.unit_id for r in rates])
    return [RankedUnit(*names.get(r.unit_id, (str(r.unit_id), str(r.unit_id))), r) for r in rates]


def calls_by_day(session: Session, ask: Ask) -> list[CallDay]:
    """Calls offered, answered and abandoned per day with the share answered within the
    target (15 s), from hotline.calls.acd_figures."""
    report = acd_figures.report(
        session,
        start=ask.filters.start,
        end=ask.filters.end,
        interval=Interval.day,
        tz=ask.tz,
        now=ask.now,
        answer_target_s=ask.answer_target_s,
        short_abandon_s=ask.short_abandon_s,
    )
    return [
        CallDay(
            day=b.start.astimezone(ask.tz).date(),
            offered=b.figures.offered,
            answered=b.figures.answered,
            abandoned=b.figures.abandoned - b.figures.short_abandoned,
            counted=b.figures.counted,
            within_target=b.figures.answered_within_target,
        )
        for b in report.buckets
    ]


def figure(session: Session, ask: Ask, name: str) -> Figure:
    if name not in CARDS:
        raise InvalidInput("no such figure", field="figure", figure=name)
    return compute(session, filters=ask.filters, now=ask.now, definitions=[getattr(d, name)])[name]


def tickets(
    session: Session, ids: Select[int], *, offset: int = 0, limit: int | None = 100
) -> tuple[list[TicketRow], int]:
    """The tickets a drill-down select names, newest first, one page; and how many."""
    inner = ids.subquery("ids")
    total = int(session.scalar(select(func.count()).select_from(inner)) or 0)
    query = (
        select(
            T.c.id,
            T.c.number,
            T.c.created_at,
            T.c.status,
            T.c.channel,
            T.c.category_name,
            T.c.district,
        )
        .where(T.c.id.in_(select(inner.c[0])))
        .order_by(T.c.created_at.desc(), T.c.id.desc())
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = [
        TicketRow(
            r[0],
            r[1],
            r[2],
            str(getattr(r[3], "value", r[3])),
            str(getattr(r[4], "value", r[4])),
            r[5],
            r[6],
        )
        for r in session.execute(query)
    ]
    return rows, total
