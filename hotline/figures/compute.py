"""The figures evaluated: each definition of hotline.figures.definitions counted by the
database in one aggregate query per kind of row (tickets, lead assignments), with the SQL
select of the ticket ids behind its numerator and its denominator for drill-down."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, FromClause, Select, select
from sqlmodel import Session

from core.db import table_of
from dispatch import reference
from dispatch.calendar import WorkCalendar
from dispatch.models import SlaPolicy
from hotline.figures import summary_read
from hotline.figures.definitions import (
    ALL,
    NAMES,
    Context,
    Definition,
    Level,
    count_where,
    overdue_rate,
)
from hotline.figures.filters import A, Filters, Scope, T, resolve
from hotline.figures.summary import late_days, tune

P = table_of(SlaPolicy)

DefinitionOf = Callable[[Context], Definition]


@dataclass(frozen=True)
class Figure:
    """One figure's counts. ``rate`` is None when nothing was counted below the line.
    ``numerator_ids`` / ``denominator_ids`` select the ids of the tickets behind each count
    (one column, ``ticket_id``, each ticket once), for a page to order and page through; they
    are built when asked (``*_select`` holds the select or a function making it): building
    them for every unit of a ranking cost more than reading its counts."""

    name: str
    zh: str
    numerator: int
    denominator: int
    numerator_select: Select[int] | Callable[[], Select[int]] = field(repr=False, compare=False)
    denominator_select: Select[int] | Callable[[], Select[int]] = field(repr=False, compare=False)

    @property
    def rate(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    @property
    def numerator_ids(self) -> Select[int]:
        return _select(self.numerator_select)

    @property
    def denominator_ids(self) -> Select[int]:
        return _select(self.denominator_select)


def _select(made: Select[int] | Callable[[], Select[int]]) -> Select[int]:
    return made if isinstance(made, Select) else made()


def drilled(
    scope: Scope, level: Level, condition: ColumnElement[bool]
) -> Callable[[], Select[int]]:
    """``drill``, when asked."""
    return lambda: drill(scope, level, condition)


def context(session: Session, *, now: datetime, filters: Filters) -> Context:
    """The default context: clocks judged at ``now``, the default survey scale and window."""
    dialect = session.get_bind().dialect.name
    return Context(now=now, dialect=dialect, since=filters.start, until=filters.end)


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
    summary: bool = True,
) -> dict[str, Figure]:
    """The figures under ``filters``, clocks judged at ``now``: from the summary tables where
    they answer (hotline.figures.summary; ``summary=False`` never), else one aggregate query
    for the ticket figures, one for the unit (assignment) figures. The drill-down selects
    always read the base tables."""
    scope = resolve(session, filters)
    use_summary = summary and ctx is None
    ctx = ctx or context(session, now=now, filters=filters)
    tune(session)
    made = [define(ctx) for define in definitions]
    found: dict[str, Figure] = {}
    for level in Level:
        mine = [d for d in made if d.level is level]
        if not mine:
            continue
        counted = None
        if use_summary and all(d.name in NAMES for d in mine):
            counted = summary_read.counts(session, scope, now, level)
        if counted is None:
            counted = _scan(session, scope, level, mine)
        for d in mine:
            found[d.name] = Figure(
                name=d.name,
                zh=d.zh,
                numerator=counted[d.name][0],
                denominator=counted[d.name][1],
                numerator_select=drilled(scope, level, d.numerator),
                denominator_select=drilled(scope, level, d.denominator),
            )
    return {d.name: found[d.name] for d in made}


def _scan(
    session: Session, scope: Scope, level: Level, mine: Sequence[Definition]
) -> dict[str, tuple[int, int]]:
    where, source = _rows(scope, level)
    columns = []
    for d in mine:
        columns += [count_where(d.numerator), count_where(d.denominator)]
    row = session.execute(select(*columns).select_from(source).where(*where)).one()
    return {d.name: (int(row[2 * i]), int(row[2 * i + 1])) for i, d in enumerate(mine)}


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
    summary: bool = True,
) -> Overdue:
    """超期件数 and 超期天数: from the summary tables where they answer (the holiday calendar
    the database holds; ``summary=False`` never), else read here. The late assignments are
    few next to the tickets: they are read (the deadline, the end, the policy's unit) and
    their lateness summed here, where the working-day calendar is."""
    scope = resolve(session, filters)
    ctx = context(session, now=now, filters=filters)
    figure = compute(
        session, filters=filters, now=now, definitions=[overdue_rate], summary=summary
    )["overdue_rate"]
    if summary and calendar is None:
        found = summary_read.late(session, scope, now, reference.snapshot(session).calendar)
        if found is not None:
            return Overdue(figure, *found)
    late = overdue_rate(ctx).numerator
    calendar = calendar or reference.snapshot(session).calendar
    rows = session.execute(
        select(A.c.reply_due_at, A.c.replied_at, A.c.ended_at, P.c.reply_unit)
        .select_from(A.join(T, A.c.ticket_id == T.c.id).join(P, A.c.policy_id == P.c.id))
        .where(*scope.assignment_where(), late)
    ).all()
    days = [
        late_days(due, replied, ended, unit, now, calendar) for due, replied, ended, unit in rows
    ]
    return Overdue(figure, sum(days), max(days) if days else None)
