"""Every ticket figure of issue 18, defined once: what it counts above the line (numerator)
and below it (denominator), as SQL conditions on one row.

Two kinds of row are counted:

* ticket figures count ``ticket`` rows (``T``) taken in within the period;
* unit figures count lead assignments (主办, ``assignment.role = 'lead'``, ``A``) of those
  tickets. An assignment is one unit's share of a ticket with its own stored clocks
  (``sign_due_at``, ``reply_due_at``, ``close_due_at``): computed by ``dispatch.sla`` from
  the SLA policy — in working days where the policy says so, holidays skipped and make-up
  days counted — and moved by an approved extension. A re-dispatch withdraws the old
  assignment and adds a new one, so each unit is judged on its own clock. Co-handling
  (协办) assignments are not counted.

The lifecycle steps come from the audit (``ticket_event.action``, tickets.lifecycle.Action)
where the ticket row keeps no trace of them (直接办结, 审核通过, 回访, 改派); the assignment's
``signed_at`` / ``replied_at`` / ``ended_at`` are written by the same step that appends the
event (dispatch.handling, dispatch.closing) and are what an index can reach.

A clock is *judged* once it has stopped or its deadline has passed: a sign-for still
awaited whose deadline is in the future is neither on time nor late and is left out of
both numerator and denominator; a clock whose assignment ended (withdrawn by 改派, 并单)
before its deadline without stopping it is left out too. "On time" is inclusive: a step
taken exactly at the deadline is on time (``at <= due``, as dispatch.handling records
``on_time``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_, select, true
from sqlalchemy.sql.elements import ColumnElement as _Column

from core.db import table_of
from dispatch.models import AssignmentRole, AssignmentStatus
from hotline.figures.filters import A, T
from tickets.lifecycle import Action
from tickets.models import Satisfaction, Status, Ticket, TicketEvent

E = table_of(TicketEvent)
T2 = table_of(Ticket).alias("earlier")
REPEAT_WINDOW = timedelta(days=30)


class Level(StrEnum):
    ticket = "ticket"
    assignment = "assignment"


@dataclass(frozen=True)
class Context:
    """What a definition needs beyond the row: the instant clocks are judged at (``now``),
    which survey answers count as satisfied, the repeat-request window and the database's
    dialect (date arithmetic differs)."""

    now: datetime
    dialect: str
    satisfied: frozenset[Satisfaction] = frozenset(
        {Satisfaction.satisfied, Satisfaction.basically_satisfied}
    )
    repeat_window: timedelta = REPEAT_WINDOW
    since: datetime | None = None  # the period's start: no event of its tickets is earlier
    until: datetime | None = None  # the period's end: no ticket counted is taken in later


@dataclass(frozen=True)
class Definition:
    name: str
    zh: str
    level: Level
    numerator: ColumnElement[bool]
    denominator: ColumnElement[bool]


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows meet ``condition`` (0 when none), as one aggregate column."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _event(ctx: Context, action: Action) -> ColumnElement[bool]:
    """The ticket has an ``action`` event. An uncorrelated IN, so the database reads the
    events of that action once (hashed) instead of probing per ticket; bounded below by the
    period's start, since a ticket's events come after its intake."""
    events = select(E.c.ticket_id).where(E.c.action == action.value)
    if ctx.since is not None:
        events = events.where(E.c.at >= ctx.since)
    return T.c.id.in_(events)


def _judged(done_at: Any, due_at: Any, now: datetime) -> ColumnElement[bool]:
    """The clock stopped (``done_at`` set), or its deadline passed while it still ran."""
    return or_(
        done_at.is_not(None),
        and_(due_at < now, or_(A.c.ended_at.is_(None), A.c.ended_at > due_at)),
    )


# ---------------------------------------------------------------- ticket figures


def direct_answer_rate(ctx: Context) -> Definition:
    """直接答复率 — requests answered and closed at intake from the knowledge base.

    Numerator: tickets with a ``close_at_intake`` event (直接办结). Denominator: every
    ticket taken in within the period (merged duplicates included: each is a request).
    Big cities answer 50–84 % of requests this way; the share shows how much the
    knowledge base carries."""
    return Definition(
        "direct_answer_rate",
        "直接答复率",
        Level.ticket,
        _event(ctx, Action.close_at_intake),
        true(),
    )


def completion_rate(ctx: Context) -> Definition:
    """办结率 — tickets finished.

    Numerator: tickets whose status is ``closed`` or ``archived`` at ``now`` (a ticket
    reopened by 重办 is not finished until it closes again; merged duplicates close with
    their parent). Denominator: every ticket taken in within the period."""
    finished = T.c.status.in_([Status.closed, Status.archived])
    return Definition("completion_rate", "办结率", Level.ticket, finished, true())


def callback_rate(ctx: Context) -> Definition:
    """回访率 — satisfaction callbacks done of those due.

    Denominator: tickets whose reply the centre approved (an ``approve_reply`` event: the
    ticket then awaits its callback). Numerator: those of them with a ``callback`` event
    (回访, by an operator or the automatic dialler). Closing without a callback (``close``:
    caller unreachable or anonymous) is a callback due and not done."""
    return Definition(
        "callback_rate",
        "回访率",
        Level.ticket,
        and_(_event(ctx, Action.callback), _event(ctx, Action.approve_reply)),
        _event(ctx, Action.approve_reply),
    )


def satisfaction_rate(ctx: Context) -> Definition:
    """满意率 — satisfied of those surveyed.

    The survey's scale is three answers (tickets.models.Satisfaction): 满意 satisfied,
    基本满意 basically satisfied, 不满意 dissatisfied; ``Context.satisfied`` says which
    count as satisfied (by default 满意 and 基本满意, the common 12345 practice; a centre
    that counts only 满意 passes ``{satisfied}``). Denominator: tickets with an answer
    (``ticket.satisfaction``, the latest callback's), merged duplicates left out (they
    carry their parent's answer, not their caller's). Numerator: those whose answer is
    in the satisfied set."""
    surveyed = and_(T.c.satisfaction.is_not(None), T.c.parent_id.is_(None))
    satisfied = and_(surveyed, T.c.satisfaction.in_(sorted(ctx.satisfied)))
    return Definition("satisfaction_rate", "满意率", Level.ticket, satisfied, surveyed)


def merge_rate(ctx: Context) -> Definition:
    """并单率 — requests merged into another ticket as duplicates.

    Numerator: tickets with a parent (``ticket.parent_id``, set only by 并单). Denominator:
    every ticket taken in within the period."""
    return Definition("merge_rate", "并单率", Level.ticket, T.c.parent_id.is_not(None), true())


def dispatch_accuracy(ctx: Context) -> Definition:
    """派单准确率 — dispatches that reached the right unit the first time.

    Denominator: tickets dispatched to a unit (they have a lead assignment). Numerator:
    those never returned (``ticket.return_count = 0``: no 退单 by any lead unit) and never
    re-dispatched (no ``redispatch`` event: 改派 after a return or by a dispatcher's
    override). A dispatch after 重办, back to the same units, is not a re-dispatch."""
    leads = select(A.c.ticket_id).where(A.c.role == AssignmentRole.lead)
    if ctx.since is not None:
        leads = leads.where(A.c.started_at >= ctx.since)
    dispatched = T.c.id.in_(leads)
    right = and_(dispatched, T.c.return_count == 0, ~_event(ctx, Action.redispatch))
    return Definition("dispatch_accuracy", "派单准确率", Level.ticket, right, dispatched)


def repeat_request_rate(ctx: Context) -> Definition:
    """重复诉求率 — a caller asking again about the same kind of matter.

    Denominator: tickets with a caller phone and a category. Numerator: those whose caller
    (same ``caller_phone``) had another ticket of the same category (same
    ``category_code``) taken in during the ``repeat_window`` (30 days) before this one:
    earlier ticket at or after this one's ``created_at`` − window, strictly before it."""
    counted = and_(T.c.caller_phone.is_not(None), T.c.category_code.is_not(None))
    return Definition(
        "repeat_request_rate", "重复诉求率", Level.ticket, and_(counted, _repeat(ctx)), counted
    )


def _repeat(ctx: Context) -> ColumnElement[bool]:
    """The ticket had an earlier one of the same caller and category within the window.

    With the period known (``since``, ``until``): an uncorrelated IN over the period's
    repeats, read once — the tickets of the window before the period and of the period
    (``ix_ticket_created_caller``), each with the latest intake of its caller and category
    strictly before its own (``max(created_at)`` over its (caller, category) partition, its
    own instant's peers excluded): a repeat when that is within the window. One sort, no
    probe per ticket. Without the period, a correlated EXISTS."""
    if ctx.since is None or ctx.until is None:
        return exists(select(T2.c.id).where(*_same(ctx, T2, T)))
    recent = table_of(Ticket).alias("recent")
    previous = func.max(recent.c.created_at).over(
        partition_by=(recent.c.caller_phone, recent.c.category_code),
        order_by=recent.c.created_at,
        range_=(None, 0),
        exclude="group",
    )
    latest = (
        select(recent.c.id, recent.c.created_at, previous.label("previous"))
        .where(
            recent.c.created_at >= ctx.since - ctx.repeat_window,
            recent.c.created_at < ctx.until,
            recent.c.caller_phone.is_not(None),
            recent.c.category_code.is_not(None),
        )
        .subquery("latest")
    )
    repeats = select(latest.c.id).where(
        latest.c.created_at >= ctx.since,
        latest.c.previous >= _minus(ctx.dialect, latest.c.created_at, ctx.repeat_window),
    )
    return T.c.id.in_(repeats)


def _same(ctx: Context, earlier: Any, later: Any) -> list[ColumnElement[bool]]:
    """``earlier`` is another ticket of ``later``'s caller and category, within the window
    before it."""
    return [
        earlier.c.caller_phone == later.c.caller_phone,
        earlier.c.category_code == later.c.category_code,
        earlier.c.created_at < later.c.created_at,
        earlier.c.created_at >= _minus(ctx.dialect, later.c.created_at, ctx.repeat_window),
        earlier.c.id != later.c.id,
    ]


def _minus(dialect: str, column: Any, span: timedelta) -> _Column[Any]:
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' text, in UTC
        seconds = f"-{int(span.total_seconds())} seconds"
        return func.strftime("%Y-%m-%d %H:%M:%f", column, seconds)
    result: _Column[Any] = column - literal(span)
    return result


# ---------------------------------------------------------------- unit (assignment) figures


def on_time_sign_rate(ctx: Context) -> Definition:
    """按时签收率 (the unit's 响应率) — signed for by the sign-for deadline.

    Denominator: lead assignments whose sign-for clock is judged at ``now`` (signed, or
    ``sign_due_at`` passed while unsigned and live). Numerator: signed with
    ``signed_at <= sign_due_at``."""
    on_time = and_(A.c.signed_at.is_not(None), A.c.signed_at <= A.c.sign_due_at)
    judged = _judged(A.c.signed_at, A.c.sign_due_at, ctx.now)
    return Definition("on_time_sign_rate", "按时签收率", Level.assignment, on_time, judged)


def on_time_reply_rate(ctx: Context) -> Definition:
    """按时反馈率 — replied by the reply deadline.

    Denominator: lead assignments whose reply clock is judged at ``now`` (replied, or
    ``reply_due_at`` passed without a reply while live). Numerator: replied with
    ``replied_at <= reply_due_at``. ``replied_at`` is the latest reply (a reply the
    centre sent back and answered again counts when it was answered again); an approved
    extension has moved ``reply_due_at``, so a reply within an extension is on time."""
    on_time = and_(A.c.replied_at.is_not(None), A.c.replied_at <= A.c.reply_due_at)
    judged = _judged(A.c.replied_at, A.c.reply_due_at, ctx.now)
    return Definition("on_time_reply_rate", "按时反馈率", Level.assignment, on_time, judged)


def on_time_close_rate(ctx: Context) -> Definition:
    """按时办结率 (the unit's 解决率) — the ticket closed by the close deadline.

    Denominator: lead assignments whose close clock is judged at ``now``: completed (the
    ticket closed, or a dissatisfied callback ended the round) or ``close_due_at`` passed
    while the assignment still ran. Numerator: completed with ``ended_at <=
    close_due_at``. The callbacks carry no "was it solved?" question yet, so the unit's
    解决率 is this figure; its 满意率 carries the callers' judgement."""
    completed = A.c.status == AssignmentStatus.completed
    on_time = and_(completed, A.c.ended_at <= A.c.close_due_at)
    judged = or_(
        completed,
        and_(
            A.c.close_due_at < ctx.now,
            or_(A.c.ended_at.is_(None), A.c.ended_at > A.c.close_due_at),
        ),
    )
    return Definition("on_time_close_rate", "按时办结率", Level.assignment, on_time, judged)


def return_rate(ctx: Context) -> Definition:
    """退单率 — dispatches the unit sent back as not its own.

    Denominator: lead assignments. Numerator: those the unit returned (退单: a return
    reason is recorded, ``return_reason_code``), whether the centre then upheld the
    dispatch or re-dispatched the ticket."""
    returned = A.c.return_reason_code.is_not(None)
    return Definition("return_rate", "退单率", Level.assignment, returned, true())


def extension_rate(ctx: Context) -> Definition:
    """延期率 — dispatches whose deadline an approved extension moved.

    Denominator: lead assignments. Numerator: those with at least one approved extension
    (``extension_count > 0``; refused and pending requests move nothing and do not count)."""
    return Definition("extension_rate", "延期率", Level.assignment, A.c.extension_count > 0, true())


def overdue_rate(ctx: Context) -> Definition:
    """超期率 — the reply deadline missed; the complement of 按时反馈率 over the same
    judged clocks.

    Numerator: lead assignments replied after ``reply_due_at``, or unreplied and live at
    ``now`` with ``reply_due_at`` passed (or ended unreplied after it). Denominator: as
    按时反馈率. ``figures.overdue`` adds how many days late, in the policy's clock unit."""
    late = or_(
        and_(A.c.replied_at.is_not(None), A.c.replied_at > A.c.reply_due_at),
        and_(
            A.c.replied_at.is_(None),
            A.c.reply_due_at < ctx.now,
            or_(A.c.ended_at.is_(None), A.c.ended_at > A.c.reply_due_at),
        ),
    )
    judged = _judged(A.c.replied_at, A.c.reply_due_at, ctx.now)
    return Definition("overdue_rate", "超期率", Level.assignment, late, judged)


TICKET_FIGURES = (
    direct_answer_rate,
    completion_rate,
    callback_rate,
    satisfaction_rate,
    merge_rate,
    dispatch_accuracy,
    repeat_request_rate,
)
UNIT_FIGURES = (
    on_time_sign_rate,
    on_time_reply_rate,
    on_time_close_rate,
    return_rate,
    extension_rate,
    overdue_rate,
)
ALL = TICKET_FIGURES + UNIT_FIGURES
NAMES = tuple(d.__name__ for d in ALL)
