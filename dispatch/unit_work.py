"""The unit's work list (the department inbox) and its running clocks: each live
assignment's sign-for, reply and close clocks coloured green, yellow or red by the same
warning time the escalation chain uses, one page of the unit's work at a time, nearest
deadline first, and the count of work waiting for the unit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlmodel import Session, col

from core.db import saved_id
from dispatch import escalation, reference
from dispatch.assignments import LIVE
from dispatch.calendar import WorkCalendar
from dispatch.models import (
    Assignment,
    AssignmentStatus,
    Clock,
    Escalation,
    EscalationKind,
    SlaPolicy,
)
from tickets.models import Ticket


class ClockColour(StrEnum):
    green = "green"  # more than the warning threshold left
    yellow = "yellow"  # within it (预警): the chain's warning time has come
    red = "red"  # overdue


@dataclass(frozen=True)
class ClockState:
    clock: Clock
    due_at: datetime
    warn_at: datetime | None  # when the escalation chain warns (None: its chain has none)
    colour: ClockColour
    left: timedelta  # negative when overdue


# Which clocks run in each state of an assignment: signing stops the sign-for clock,
# replying the reply clock; the close clock runs until the centre closes the ticket.
_RUNNING = {
    AssignmentStatus.dispatched: (Clock.sign, Clock.reply, Clock.close),
    AssignmentStatus.signed: (Clock.reply, Clock.close),
    AssignmentStatus.replied: (Clock.close,),
}


def running_clocks(
    assignment: Assignment,
    *,
    policy: SlaPolicy,
    calendar: WorkCalendar,
    now: datetime,
    warned: frozenset[tuple[Clock, datetime]] = frozenset(),
) -> list[ClockState]:
    """The assignment's running clocks, each coloured by the same warning time the
    escalation chain uses (or by a warning already fired for its current deadline)."""
    states = []
    for clock in _RUNNING.get(assignment.status, ()):
        due = getattr(assignment, f"{clock.value}_due_at")
        warn_at = next(
            (
                step.at
                for step in escalation.schedule_for(
                    assignment, clock=clock, policy=policy, calendar=calendar
                )
                if step.kind is EscalationKind.warning
            ),
            None,
        )
        if now >= due:
            colour = ClockColour.red
        elif (warn_at is not None and now >= warn_at) or (clock, due) in warned:
            colour = ClockColour.yellow
        else:
            colour = ClockColour.green
        states.append(ClockState(clock, due, warn_at, colour, due - now))
    return states


@dataclass(frozen=True)
class WorkItem:
    """One of the unit's tickets with the unit's assignment and its running clocks."""

    assignment: Assignment
    ticket: Ticket
    clocks: list[ClockState]

    @property
    def nearest(self) -> datetime | None:
        return min((c.due_at for c in self.clocks), default=None)

    @property
    def colour(self) -> ClockColour | None:
        order = (ClockColour.red, ClockColour.yellow, ClockColour.green)
        return min((c.colour for c in self.clocks), key=order.index, default=None)


def clock_states(
    session: Session, assignments: list[Assignment], *, now: datetime
) -> dict[int, list[ClockState]]:
    """The running clocks of each assignment, by assignment id."""
    if not assignments:
        return {}
    snap = reference.snapshot(session)
    policies = {saved_id(p): p for p in snap.policies}
    ids = [saved_id(a) for a in assignments]
    warned: dict[int, set[tuple[Clock, datetime]]] = {}
    for assignment_id, clock, deadline in session.execute(
        select(
            col(Escalation.assignment_id), col(Escalation.clock), col(Escalation.deadline)
        ).where(
            col(Escalation.assignment_id).in_(ids),
            col(Escalation.kind) == EscalationKind.warning,
        )
    ):
        warned.setdefault(assignment_id, set()).add((Clock(clock), deadline))
    return {
        saved_id(a): running_clocks(
            a,
            policy=policies[a.policy_id],
            calendar=snap.calendar,
            now=now,
            warned=frozenset(warned.get(saved_id(a), ())),
        )
        for a in assignments
    }


class Order(StrEnum):
    due = "due"  # the deadline of the step the unit owes next; nothing owed last
    received = "received"  # newest ticket first
    number = "number"


def _next_due() -> Any:
    """The deadline of the step the unit owes next (the clock the escalation chain watches):
    sign-for until signed, then the reply, then the close; none for a return."""
    return case(
        (col(Assignment.status) == AssignmentStatus.dispatched, col(Assignment.sign_due_at)),
        (col(Assignment.status) == AssignmentStatus.signed, col(Assignment.reply_due_at)),
        (col(Assignment.status) == AssignmentStatus.replied, col(Assignment.close_due_at)),
        else_=None,
    )


def unit_work(
    session: Session,
    *,
    unit_id: int,
    now: datetime,
    statuses: Sequence[AssignmentStatus] = LIVE,
    assignee_id: int | None = None,
    q: str | None = None,
    search_confidential: bool = False,
    colour: ClockColour | None = None,
    order: Order = Order.due,
    limit: int = 25,
    offset: int = 0,
) -> tuple[list[WorkItem], int]:
    """One page of the unit's live work, and how many items match in all. `q` looks in the
    number, title, address, description and request — a confidential ticket's text only
    for those who see callers. The clocks are computed for the page only, unless `colour`
    filters by them (then for every matching item)."""
    stmt = (
        select(Assignment, Ticket)
        .join(Ticket, col(Ticket.id) == col(Assignment.ticket_id))
        .where(col(Assignment.unit_id) == unit_id, col(Assignment.status).in_(list(statuses)))
    )
    if assignee_id is not None:
        stmt = stmt.where(col(Assignment.assignee_id) == assignee_id)
    if q:
        text = or_(
            *(
                col(field).contains(q, autoescape=True)
                for field in (Ticket.title, Ticket.address, Ticket.description, Ticket.request)
            )
        )
        if not search_confidential:
            text = and_(col(Ticket.confidential).is_(False), text)
        stmt = stmt.where(or_(col(Ticket.number).contains(q, autoescape=True), text))
    due = _next_due()
    keys = {
        Order.due: (case((due.is_(None), 1), else_=0), due, col(Assignment.id)),
        Order.received: (col(Ticket.created_at).desc(), col(Ticket.id).desc()),
        Order.number: (col(Ticket.number), col(Assignment.id)),
    }[order]
    stmt = stmt.order_by(*keys)
    if colour is None:
        total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
        rows = list(session.execute(stmt.limit(limit).offset(offset)).tuples())
    else:
        rows = list(session.execute(stmt).tuples())
    clocks = clock_states(session, [a for a, _ in rows], now=now)
    items = [WorkItem(a, t, clocks[saved_id(a)]) for a, t in rows]
    if colour is not None:
        items = [i for i in items if any(c.colour is colour for c in i.clocks)]
        total, items = len(items), items[offset : offset + limit]
    return items, int(total or 0)


def waiting_count(session: Session, *, unit_id: int) -> int:
    """The unit's tickets still to sign for or to reply to."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(
                col(Assignment.unit_id) == unit_id,
                col(Assignment.status).in_([AssignmentStatus.dispatched, AssignmentStatus.signed]),
            )
        )
        or 0
    )
