"""Summary tables of the figures (issue 18): the dashboard's cards, SLA by unit and the unit
rates read from per-day counts instead of scanning a month of tickets, assignments and
events — kept incrementally, and never stale.

What is stored (hotline/figures/models.py, migration 0022). ``day`` is the day of intake
(``ticket.created_at``) in the centre's UTC offset (Beijing, +08:00: ``offset_s`` in the
state row), as days since 1970-01-01:

* ``figure_summary_ticket`` — per (day, category, district, channel), the numerator and the
  denominator of every ticket figure;
* ``figure_summary_unit`` — per (day, lead unit, category, district, channel), those of every
  unit (lead assignment) figure, the unit's 满意率 (distinct tickets, as units.unit_rates
  counts them) and the days late of the 超期 assignments whose lateness is settled (replied,
  or ended);
* ``figure_summary_clock`` — each clock still running (a live lead assignment not yet
  signed, replied or completed) with its deadline: the only thing that changes the figures
  without a change to a row, by ``now`` passing the deadline;
* ``figure_summary_state`` — ``judged_at`` (the instant clocks were judged at) and the
  ``watermark``: the last audit event (``ticket_event.id``) counted.

The counts are made by the definitions themselves (hotline.figures.definitions, the single
source of truth): ``ticket_select`` / ``unit_select`` group the very numerator and
denominator conditions ``compute`` sums, by the keys above. Every change to a ticket or to
its assignments appends an audit event (tickets.lifecycle, dispatch.handling), so the days
to count again are the intake days of the tickets with an event after the watermark.

``refresh`` (the ``figures.refresh_summaries`` beat task, every minute; callable directly;
one at a time on PostgreSQL, by a transaction-level advisory lock): the days of the tickets
with an event since the watermark before last (an event whose transaction committed after
the last refresh read a higher watermark is caught by the next refresh — until then, up to
a minute, its day is the one thing a read may show as before), the
days of the clocks whose deadline passed since ``judged_at``, and — for a ticket taken in,
edited or (re)classified at dispatch, whose caller and category decide the 重复诉求 of the
30 days after it — those days too, up to today, are deleted and counted again from the base
tables, clocks judged at ``now``. Like the scan, the counts rely on a ticket's events and
assignments coming after its intake. The first refresh (or ``full=True``, e.g. after the
holiday calendar changed the settled days late) counts every day, a month per statement.

Reading (summary_read) is exact at any ``now`` after ``judged_at``: the days of tickets with
an event after the watermark are counted live from the base tables; the clocks of the other
days whose deadline passed between ``judged_at`` and ``now`` are re-judged (their counts at
``now`` minus at ``judged_at``, by the definitions); the running 超期 days come from the
clocks. A question the summaries cannot answer — a period not on the day boundaries, a
ticket figure under a unit filter (a ticket is counted once, whichever units it went to),
clocks judged before ``judged_at``, another ``Context`` or calendar, the ids behind a figure —
takes the exact scan (compute).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    not_,
    select,
    text,
)
from sqlmodel import Session

from core.db import session_scope, table_of
from dispatch import reference, sla
from dispatch.calendar import DEFAULT_TZ, WorkCalendar
from dispatch.models import AssignmentRole, AssignmentStatus, ClockUnit, SlaPolicy
from hotline.figures.definitions import (
    TICKET_FIGURES,
    UNIT_FIGURES,
    Context,
    Definition,
    count_where,
    overdue_rate,
    satisfaction_rate,
)
from hotline.figures.filters import A, T
from hotline.figures.models import (
    FigureSummaryClock,
    FigureSummaryState,
    FigureSummaryTicket,
    FigureSummaryUnit,
)
from tickets.lifecycle import Action
from tickets.models import TicketEvent

E = table_of(TicketEvent)
P = table_of(SlaPolicy)
ST = table_of(FigureSummaryTicket)
SU = table_of(FigureSummaryUnit)
SC = table_of(FigureSummaryClock)
DAY_S = 86400
DEFAULT_OFFSET_S = int((DEFAULT_TZ.utcoffset(datetime(2026, 1, 1)) or timedelta()).total_seconds())
CHUNK_DAYS = 31  # a full build counts a month per statement
MERGE_GAP_DAYS = 2  # dirty days this close are counted in one statement
REPEAT_DAYS = 31  # a ticket's caller and category decide the repeats of the window after it
TICKET_NAMES = tuple(make.__name__ for make in TICKET_FIGURES)
UNIT_NAMES = tuple(make.__name__ for make in UNIT_FIGURES)
UNIT_SATISFACTION = "unit_satisfaction"
LOCK_KEY = 0x12345F16  # pg_advisory_xact_lock: one refresh at a time


# ---------------------------------------------------------------- days


def day_of(at: datetime, offset_s: int) -> int:
    return math.floor(at.timestamp() + offset_s) // DAY_S


def day_start(day: int, offset_s: int) -> datetime:
    return datetime.fromtimestamp(day * DAY_S - offset_s, UTC)


def on_boundary(at: datetime, offset_s: int) -> bool:
    return day_start(day_of(at, offset_s), offset_s) == at


def day_column(dialect: str, column: Any, offset_s: int) -> ColumnElement[int]:
    """The day of ``column`` in SQL, as ``day_of``."""
    if dialect == "sqlite":  # integer seconds (fractions truncated), integer division
        seconds = cast(func.strftime("%s", column), Integer)
        return cast((seconds + offset_s) / DAY_S, Integer)
    return cast(func.floor((func.extract("epoch", column) + offset_s) / DAY_S), Integer)


def ranges(days: Iterable[int], gap: int = MERGE_GAP_DAYS) -> list[tuple[int, int]]:
    """Sorted days as inclusive (first, last) ranges, days ``gap`` apart or closer joined."""
    found: list[tuple[int, int]] = []
    for day in sorted(set(days)):
        if found and day - found[-1][1] <= gap:
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found


# ---------------------------------------------------------------- counting by key


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


def unit_satisfaction(ctx: Context) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The unit's 满意率: 满意率's numerator and denominator on the tickets whose lead
    assignment the unit completed."""
    d = satisfaction_rate(ctx)
    completed = A.c.status == AssignmentStatus.completed
    return and_(completed, d.numerator), and_(completed, d.denominator)


def _counts(defs: Sequence[Definition]) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = []
    for d in defs:
        columns += [count_where(d.numerator).label(f"{d.name}_n")]
        columns += [count_where(d.denominator).label(f"{d.name}_d")]
    return columns


def ticket_select(
    ctx: Context, start: datetime, end: datetime, offset_s: int, where: Sequence[Any] = ()
) -> Select[Any]:
    """The ticket figures of the tickets taken in within [start, end) per key."""
    day = day_column(ctx.dialect, T.c.created_at, offset_s).label("day")
    keys = (T.c.category_code, T.c.district, T.c.channel)
    return (
        select(day, *keys, *_counts([make(ctx) for make in TICKET_FIGURES]))
        .where(T.c.created_at >= start, T.c.created_at < end, *where)
        .group_by(day, *keys)
    )


def _leads(start: datetime, end: datetime, where: Sequence[Any]) -> list[Any]:
    # as filters.Scope.assignment_where: a ticket's assignments start after its intake
    return [
        A.c.role == AssignmentRole.lead,
        A.c.started_at >= start,
        T.c.created_at >= start,
        T.c.created_at < end,
        *where,
    ]


def unit_select(
    ctx: Context, start: datetime, end: datetime, offset_s: int, where: Sequence[Any] = ()
) -> Select[Any]:
    """The unit figures of the lead assignments of tickets taken in within [start, end)
    per key."""
    day = day_column(ctx.dialect, T.c.created_at, offset_s).label("day")
    keys = (A.c.unit_id, T.c.category_code, T.c.district, T.c.channel)
    numerator, denominator = unit_satisfaction(ctx)
    return (
        select(
            day,
            *keys,
            *_counts([make(ctx) for make in UNIT_FIGURES]),
            func.count(func.distinct(case((numerator, T.c.id)))).label(f"{UNIT_SATISFACTION}_n"),
            func.count(func.distinct(case((denominator, T.c.id)))).label(f"{UNIT_SATISFACTION}_d"),
        )
        .select_from(A.join(T, A.c.ticket_id == T.c.id))
        .where(*_leads(start, end, where))
        .group_by(day, *keys)
    )


def late_days(
    due: datetime,
    replied: datetime | None,
    ended: datetime | None,
    unit: str,
    now: datetime,
    calendar: WorkCalendar,
) -> float:
    """How late a 超期 assignment is: from ``reply_due_at`` to the reply, or to ``now`` (or
    the assignment's end) while unreplied; working days on a working-day policy, else
    calendar days (hours / 24)."""
    until = replied or (min(ended, now) if ended else now)
    if ClockUnit(unit) is ClockUnit.workdays:
        return sla.elapsed(due, until, ClockUnit.workdays, calendar)
    return sla.elapsed(due, until, ClockUnit.hours, calendar) / 24


def running() -> ColumnElement[bool]:
    """A 超期 assignment whose lateness still grows: unreplied and live."""
    return and_(A.c.replied_at.is_(None), A.c.ended_at.is_(None))


def late_select(
    ctx: Context,
    start: datetime,
    end: datetime,
    offset_s: int,
    where: Sequence[Any] = (),
    *,
    settled_only: bool,
) -> Select[Any]:
    """The 超期 lead assignments (overdue_rate's numerator) with their key and clock; with
    ``settled_only`` those whose lateness no longer grows."""
    day = day_column(ctx.dialect, T.c.created_at, offset_s).label("day")
    late = overdue_rate(ctx).numerator
    query = (
        select(
            day,
            A.c.unit_id,
            T.c.category_code,
            T.c.district,
            T.c.channel,
            A.c.reply_due_at,
            A.c.replied_at,
            A.c.ended_at,
            P.c.reply_unit,
        )
        .select_from(A.join(T, A.c.ticket_id == T.c.id).join(P, A.c.policy_id == P.c.id))
        .where(*_leads(start, end, where), late)
    )
    return query.where(not_(running())) if settled_only else query


# ---------------------------------------------------------------- refreshing


@dataclass(frozen=True)
class Refreshed:
    full: bool
    days: int  # days counted again
    watermark: int


def _context(session: Session, now: datetime, start: datetime, end: datetime) -> Context:
    return Context(now=now, dialect=session.get_bind().dialect.name, since=start, until=end)


def refresh(
    session: Session,
    *,
    now: datetime,
    full: bool = False,
    offset_s: int = DEFAULT_OFFSET_S,
    calendar: WorkCalendar | None = None,
) -> Refreshed:
    """Bring the summaries to ``now`` (see the module's docstring); the caller commits. On
    PostgreSQL two refreshes queue on a transaction lock (SQLite's writes are serial)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
    tune(session)
    state = session.get(FigureSummaryState, 1)
    watermark = int(session.scalar(select(func.coalesce(func.max(E.c.id), 0))) or 0)
    rebuild = full or state is None or state.offset_s != offset_s or now < state.judged_at
    if rebuild:
        for table in (ST, SU, SC):
            session.execute(delete(table))
        first, last = session.execute(
            select(func.min(T.c.created_at), func.max(T.c.created_at))
        ).one()
        days: list[tuple[int, int]] = []
        if first is not None:
            whole = (day_of(first, offset_s), day_of(last, offset_s))
            days = [
                (d, min(d + CHUNK_DAYS - 1, whole[1]))
                for d in range(whole[0], whole[1] + 1, CHUNK_DAYS)
            ]
        prior = watermark
    else:
        assert state is not None
        dirty = changed_days(session, since_id=state.prior_watermark, offset_s=offset_s, now=now)
        dirty |= set(
            session.scalars(
                select(SC.c.day).where(SC.c.due_at >= state.judged_at, SC.c.due_at < now).distinct()
            )
        )
        days = ranges(dirty)
        for first_day, last_day in days:
            for table in (ST, SU, SC):
                session.execute(
                    delete(table).where(table.c.day >= first_day, table.c.day <= last_day)
                )
        prior = state.watermark
    calendar = calendar or reference.snapshot(session).calendar
    for first_day, last_day in days:
        _count(session, now, first_day, last_day, offset_s, calendar)
    if rebuild:  # the planner's statistics of tables just filled
        for table in (ST, SU, SC):
            session.execute(text(f"ANALYZE {table.name}"))
    if state is None:
        state = FigureSummaryState(offset_s=offset_s, judged_at=now, refreshed_at=now)
    state.offset_s, state.judged_at, state.refreshed_at = offset_s, now, now
    state.watermark, state.prior_watermark = watermark, prior
    session.add(state)
    session.flush()
    return Refreshed(rebuild, sum(b - a + 1 for a, b in days), watermark)


def refresh_in(session_factory: Callable[[], Session], *, now: datetime) -> Refreshed:
    """``refresh`` in a unit of work of its own (the beat task)."""
    with session_scope(session_factory) as session:
        return refresh(session, now=now)


def changed_days(session: Session, *, since_id: int, offset_s: int, now: datetime) -> set[int]:
    """The intake days of the tickets with an audit event after ``since_id``; for a created
    or edited ticket, the repeat window after it too (up to ``now``'s day)."""
    changed = (
        select(E.c.ticket_id, func.max(case((E.c.action.in_(_REPEATS), 1), else_=0)).label("r"))
        .where(E.c.id > since_id)
        .group_by(E.c.ticket_id)
        .subquery("changed")
    )
    rows = session.execute(
        select(T.c.created_at, changed.c.r).select_from(
            changed.join(T, T.c.id == changed.c.ticket_id)
        )
    ).all()
    today = day_of(now, offset_s)
    days: set[int] = set()
    for created_at, repeats in rows:
        day = day_of(created_at, offset_s)
        days.add(day)
        if repeats:
            days.update(range(day + 1, min(day + REPEAT_DAYS, today) + 1))
    return days


# the steps that set a ticket's caller or category (intake, edits, a rule's classification
# at dispatch): the repeats after it may change
_REPEATS = tuple(
    a.value
    for a in (Action.create, Action.update, Action.queue, Action.dispatch, Action.redispatch)
)


def _count(
    session: Session,
    now: datetime,
    first_day: int,
    last_day: int,
    offset_s: int,
    calendar: WorkCalendar,
) -> None:
    """Count the days [first_day, last_day] into the summary tables."""
    start, end = day_start(first_day, offset_s), day_start(last_day + 1, offset_s)
    ctx = _context(session, now, start, end)
    tickets = ticket_select(ctx, start, end, offset_s)
    session.execute(insert(ST).from_select([c.name for c in tickets.selected_columns], tickets))
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in session.execute(unit_select(ctx, start, end, offset_s)).mappings():
        rows[_key(row)] = {**row, "late_days": 0.0, "late_days_max": None}
    late = late_select(ctx, start, end, offset_s, settled_only=True)
    for row in session.execute(late).mappings():
        entry = rows[_key(row)]
        days = late_days(
            row["reply_due_at"],
            row["replied_at"],
            row["ended_at"],
            row["reply_unit"],
            now,
            calendar,
        )
        entry["late_days"] += days
        entry["late_days_max"] = (
            days if entry["late_days_max"] is None else max(days, entry["late_days_max"])
        )
    if rows:
        session.execute(insert(SU), list(rows.values()))
    clocks = list(_clocks(session, ctx, start, end, offset_s))
    if clocks:
        session.execute(insert(SC), clocks)


def _key(row: Any) -> tuple[Any, ...]:
    return (row["day"], row["unit_id"], row["category_code"], row["district"], row["channel"])


def _clocks(
    session: Session, ctx: Context, start: datetime, end: datetime, offset_s: int
) -> Iterable[dict[str, Any]]:
    day = day_column(ctx.dialect, T.c.created_at, offset_s).label("day")
    query = (
        select(
            A.c.id,
            day,
            A.c.unit_id,
            T.c.category_code,
            T.c.district,
            T.c.channel,
            A.c.sign_due_at,
            A.c.reply_due_at,
            A.c.close_due_at,
            A.c.signed_at,
            A.c.replied_at,
            A.c.status,
            P.c.reply_unit,
        )
        .select_from(A.join(T, A.c.ticket_id == T.c.id).join(P, A.c.policy_id == P.c.id))
        .where(*_leads(start, end, ()), A.c.ended_at.is_(None))
    )
    for row in session.execute(query).mappings():
        key = {
            "assignment_id": row["id"],
            "reply_unit": str(getattr(row["reply_unit"], "value", row["reply_unit"])),
            "day": row["day"],
            "unit_id": row["unit_id"],
            "category_code": row["category_code"],
            "district": row["district"],
            "channel": row["channel"],
        }
        stopped = {
            "sign": row["signed_at"] is not None,
            "reply": row["replied_at"] is not None,
            "close": row["status"] == AssignmentStatus.completed,
        }
        dues = {
            "sign": row["sign_due_at"],
            "reply": row["reply_due_at"],
            "close": row["close_due_at"],
        }
        for clock, done in stopped.items():
            if not done and dues[clock] is not None:
                yield {**key, "clock": clock, "due_at": dues[clock]}


def any_summary(session: Session) -> bool:
    return session.get(FigureSummaryState, 1) is not None
