"""The figures evaluated: each definition of hotline.figures.definitions counted by the
database in one aggregate query per kind of row (tickets, lead assignments), with the SQL
select of the ticket ids behind its numerator and its denominator for drill-down."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, FromClause, Select, case, func, select, text
from sqlmodel import Session

from core.db import table_of
from dispatch import reference, sla
from dispatch.calendar import WorkCalendar
from dispatch.models import ClockUnit, SlaPolicy
from hotline.figures.definitions import (
    ALL,
    Context,
    Definition,
    Level,
    overdue_rate,
)
from hotline.figures.filters import A, Filters, Scope, T, resolve

P = table_of(SlaPolicy)

DefinitionOf = Callable[[Context], Definition]


@dataclass(frozen=True)
class Figure:
    """One figure's counts. ``rate`` is None when nothing was counted below the line.
    ``numerator_ids`` / ``denominator_ids`` select the ids of the tickets behind each count
    (one column, ``ticket_id``, each ticket once), for a page to order and page through."""

    name: str
    zh: str
    numerator: int
    denominator: int
    numerator_ids: Select[int]
    denominator_ids: Select[int]

    @property
    def rate(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows meet ``condition`` (0 when none), as one aggregate column."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def context(session: Session, *, now: datetime, filters: Filters) -> Context:
    """The default context: clocks judged at ``now``, the default survey scale and window."""
    dialect = session.get_bind().dialect.name
    return Context(now=now, dialect=dialect, since=filters.start, until=filters.end)


def tune(session: Session) -> None:
    """PostgreSQL settings for the figures' queries, for the rest of the transaction:

    * ``work_mem`` 64 MB: each audit test (``ticket.id IN (SELECT ticket_id ...)``) must be
      a *hashed* subplan. Past ``hash_mem`` (2 × the default 4 MB: some 200,000 ids, a
      quarter's 直接办结 at 1,000,000 tickets a year) PostgreSQL plans a plain subplan that
      rescans the list for every ticket — a year's figures did not finish (estimated cost
      8·10⁹; stopped after 3 minutes), and take 28 s with it. 64 MB hashes some 3,000,000
      ids;
    * JIT off: the aggregates cost enough to cross ``jit_above_cost``, and compiling their
      dozens of CASE expressions took longer (170 ms to 6 s measured at 1,000,000
      tickets) than running them: index range scans and hashes gain nothing from it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))


def _rows(scope: Scope, level: Level) -> tuple[list[ColumnElement[bool]], FromClause]:
    if level is Level.ticket:
        return scope.ticket_where(), T
    return scope.assignment_where(), A.join(T, A.c.ticket_id == T.c.id)


def drill(scope: Scope, level: Level, condition: ColumnElement[bool]) -> Select[int]:
    """The ids of the tickets counted by ``condition`` under ``scope``."""
    where, source = _rows(scope, level)
    ident = T.c.id if level is Level.ticket else A.c.ticket_id
    query = select(ident.label("ticket_id")).select_from(source).where(*where, condition)
    return query if level is Level.ticket else query.distinct()


def compute(
    session: Session,
    *,
    filters: Filters,
    now: datetime,
    definitions: Iterable[DefinitionOf] = ALL,
    ctx: Context | None = None,
) -> dict[str, Figure]:
    """The figures under ``filters``, clocks judged at ``now``: one aggregate query for the
    ticket figures, one for the unit (assignment) figures."""
    scope = resolve(session, filters)
    ctx = ctx or context(session, now=now, filters=filters)
    tune(session)
    made = [define(ctx) for define in definitions]
    found: dict[str, Figure] = {}
    for level in Level:
        mine = [d for d in made if d.level is level]
        if not mine:
            continue
        where, source = _rows(scope, level)
        columns = []
        for d in mine:
            columns += [count_where(d.numerator), count_where(d.denominator)]
        row = session.execute(select(*columns).select_from(source).where(*where)).one()
        for index, d in enumerate(mine):
            found[d.name] = Figure(
                name=d.name,
                zh=d.zh,
                numerator=int(row[2 * index]),
                denominator=int(row[2 * index + 1]),
                numerator_ids=drill(scope, level, d.numerator),
                denominator_ids=drill(scope, level, d.denominator),
            )
    return {d.name: found[d.name] for d in made}


def per_unit(
    session: Session, *, scope: Scope, definitions: Sequence[Definition]
) -> dict[int, dict[str, tuple[int, int]]]:
    """Unit (assignment) figures grouped by each unit's own lead assignments:
    {unit_id: {name: (numerator, denominator)}}."""
    tune(session)
    columns = []
    for d in definitions:
        assert d.level is Level.assignment, d.name
        columns += [count_where(d.numerator), count_where(d.denominator)]
    query = (
        select(A.c.unit_id, *columns)
        .select_from(A.join(T, A.c.ticket_id == T.c.id))
        .where(*scope.assignment_where())
        .group_by(A.c.unit_id)
    )
    return {
        row[0]: {
            d.name: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, d in enumerate(definitions)
        }
        for row in session.execute(query)
    }


# ---------------------------------------------------------------- overdue


@dataclass(frozen=True)
class Overdue:
    """超期: how many lead assignments missed their reply deadline (``figure``, with its
    drill-down) and by how much. Days late run from ``reply_due_at`` to the reply, or to
    ``now`` (or the assignment's end) while unreplied, on the policy's reply clock: working
    days when the policy counts working days (holidays and weekends do not add lateness),
    else calendar days (hours / 24)."""

    figure: Figure
    days_total: float
    days_max: float | None


def overdue(
    session: Session,
    *,
    filters: Filters,
    now: datetime,
    calendar: WorkCalendar | None = None,
) -> Overdue:
    """超期件数 and 超期天数. The late assignments are few next to the tickets: they are read
    (the deadline, the end, the policy's unit) and their lateness summed here, where the
    working-day calendar is."""
    scope = resolve(session, filters)
    ctx = context(session, now=now, filters=filters)
    figure = compute(session, filters=filters, now=now, definitions=[overdue_rate], ctx=ctx)[
        "overdue_rate"
    ]
    late = overdue_rate(ctx).numerator
    calendar = calendar or reference.snapshot(session).calendar
    rows = session.execute(
        select(A.c.reply_due_at, A.c.replied_at, A.c.ended_at, P.c.reply_unit)
        .select_from(A.join(T, A.c.ticket_id == T.c.id).join(P, A.c.policy_id == P.c.id))
        .where(*scope.assignment_where(), late)
    ).all()
    days: list[float] = []
    for due, replied, ended, unit in rows:
        until = replied or (min(ended, now) if ended else now)
        if ClockUnit(unit) is ClockUnit.workdays:
            days.append(sla.elapsed(due, until, ClockUnit.workdays, calendar))
        else:
            days.append(sla.elapsed(due, until, ClockUnit.hours, calendar) / 24)
    return Overdue(figure, sum(days), max(days) if days else None)
