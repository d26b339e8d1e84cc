"""Linked escalation (预警 → 催办 → 督办 → 通报): arming an assignment's watched clock, and the
SLA sweep that fires each due step exactly once. What a fired step writes and whom it
notifies is dispatch.escalation_steps; who sees and acknowledges the steps is
dispatch.escalation_visibility.

An assignment carries its escalation state in three columns: the watched clock, the last
level fired, and when the next level is due (NULL when nothing more can fire). The sweep is
an indexed range query on the last of these, and fires a step only through a conditional
UPDATE on the level it saw — so overlapping sweeps, two workers or a retried task never
fire a step twice (the unique constraint on the Escalation row is the second guard).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, and_, or_, select, update
from sqlmodel import Session, col

from core.db import after_commit, saved_id, session_scope
from core.settings import Settings, get_settings
from dispatch import policies, sla
from dispatch.calendar import WorkCalendar
from dispatch.escalation_steps import record_notifications, record_step
from dispatch.models import Assignment, Clock, Escalation, SlaPolicy, Unit
from dispatch.rows import existing
from tickets import service as tickets

log = logging.getLogger(__name__)

# A sweep stops after this many batches and leaves the rest to the next run, so that one
# run always ends well before the next is scheduled.
MAX_BATCHES = 100

Enqueue = Callable[[int], Any]


# ---------------------------------------------------------------- arming


def _deadline(assignment: Assignment, clock: Clock) -> datetime:
    deadline: datetime = getattr(assignment, f"{Clock(clock).value}_due_at")
    return deadline


def schedule_for(
    assignment: Assignment, *, clock: Clock, policy: SlaPolicy, calendar: WorkCalendar
) -> list[sla.ScheduledStep]:
    """Every step of the policy's chain for one clock of one assignment."""
    _, unit = sla.clock_limit(policy, clock)
    return sla.escalation_times(
        start=assignment.started_at,
        due=_deadline(assignment, clock),
        unit=unit,
        warn_ratio=policy.warn_ratio,
        chain=sla.parse_chain(policy.chain),
        calendar=calendar,
    )


def arm(
    assignment: Assignment,
    *,
    clock: Clock | None,
    policy: SlaPolicy,
    calendar: WorkCalendar,
    level: int = 0,
) -> None:
    """Watch `clock` from `level` on (the number of its steps already fired for the current
    deadline); no clock, or a chain already exhausted, leaves nothing to fire."""
    if clock is None:
        disarm(assignment)
        return
    clock = Clock(clock)
    schedule = schedule_for(assignment, clock=clock, policy=policy, calendar=calendar)
    assignment.escalation_clock = clock
    assignment.escalation_level = level
    assignment.next_escalation_at = schedule[level].at if level < len(schedule) else None


def disarm(assignment: Assignment) -> None:
    assignment.escalation_clock = None
    assignment.next_escalation_at = None


# ---------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepResult:
    fired: int  # escalation steps fired
    assignments: int  # assignments that fired at least one step
    failed: int = 0  # assignments skipped after an error (logged; retried next sweep)


def sweep(
    session_factory: Callable[[], Session],
    *,
    now: datetime,
    batch: int = 500,
    enqueue: Enqueue | None = None,
    settings: Settings | None = None,
    max_batches: int = MAX_BATCHES,
) -> SweepResult:
    """Fire every escalation step due at `now`, each assignment in its own short
    transaction; a sweep that was missed catches up, firing every overdue step once.

    `enqueue(notification_id)` is called after each commit for the e-mails and webhooks to
    deliver; without it they stay pending.
    """
    settings = settings or get_settings()
    with session_scope(session_factory) as session:
        calendar = policies.load_calendar(session)
    fired = touched = failed = 0
    # Keyset over (next_escalation_at, id): an assignment that keeps failing is passed over
    # instead of being selected again and again, and the range stays on the index.
    after: tuple[datetime, int] | None = None
    for _ in range(max_batches):
        with session_scope(session_factory) as session:
            rows = session.execute(due_assignments(now=now, batch=batch, after=after)).all()
        for assignment_id, _ in rows:
            try:
                count = _advance(
                    session_factory,
                    assignment_id=assignment_id,
                    now=now,
                    calendar=calendar,
                    settings=settings,
                    enqueue=enqueue,
                )
            except Exception:
                log.exception(
                    "escalation of assignment %s failed; the next sweep retries it", assignment_id
                )
                failed += 1
                continue
            fired += count
            touched += count > 0
        if len(rows) < batch:
            break
        after = (rows[-1][1], rows[-1][0])
    return SweepResult(fired=fired, assignments=touched, failed=failed)


def due_assignments(
    *, now: datetime, batch: int, after: tuple[datetime, int] | None
) -> Select[int, datetime]:
    """(id, next_escalation_at) of the next `batch` assignments due at `now`, after the
    keyset position `after` — a range scan on ix_assignment_next_escalation."""
    due = col(Assignment.next_escalation_at)
    stmt = select(col(Assignment.id), due).where(due <= now)
    if after is not None:
        stmt = stmt.where(or_(due > after[0], and_(due == after[0], col(Assignment.id) > after[1])))
    # SQLModel types both columns as optional (as on a row not yet saved); in these rows
    # neither is NULL: an id is a primary key, and the WHERE clause compares the time.
    return cast("Select[int, datetime]", stmt.order_by(due, col(Assignment.id)).limit(batch))


def _advance(
    session_factory: Callable[[], Session],
    *,
    assignment_id: int,
    now: datetime,
    calendar: WorkCalendar,
    settings: Settings,
    enqueue: Enqueue | None,
) -> int:
    """Fire the due steps of one assignment; returns how many this call fired."""
    with session_scope(session_factory) as session:
        ticket_id = session.scalar(
            select(col(Assignment.ticket_id)).where(col(Assignment.id) == assignment_id)
        )
        if ticket_id is None:
            return 0
        # The ticket row first, as every dispatch operation does: one lock order, no
        # deadlock; and the note's event number cannot collide with a concurrent change.
        ticket = tickets.get_ticket(session, ticket_id, for_update=True)
        assignment = session.scalars(
            select(Assignment)
            .where(col(Assignment.id) == assignment_id)
            .execution_options(populate_existing=True)
        ).one()
        clock, level, next_at = (
            assignment.escalation_clock,
            assignment.escalation_level,
            assignment.next_escalation_at,
        )
        if clock is None or next_at is None or next_at > now:
            return 0
        policy = existing(session, SlaPolicy, assignment.policy_id)
        schedule = schedule_for(assignment, clock=clock, policy=policy, calendar=calendar)
        deadline = _deadline(assignment, clock)
        unit = existing(session, Unit, assignment.unit_id)
        fired: list[Escalation] = []
        while next_at is not None and next_at <= now:
            if level >= len(schedule):  # the policy's chain was shortened since arming
                _conditional_advance(
                    session,
                    assignment,
                    clock=clock,
                    deadline=deadline,
                    seen=level,
                    new_level=level,
                    next_at=None,
                    now=now,
                )
                break
            step = schedule[level]
            following = schedule[level + 1].at if level + 1 < len(schedule) else None
            if not _conditional_advance(
                session,
                assignment,
                clock=clock,
                deadline=deadline,
                seen=level,
                new_level=level + 1,
                next_at=following,
                now=now,
            ):
                break  # another sweep got there first and carries on from here
            escalation = record_step(
                session,
                ticket=ticket,
                assignment=assignment,
                unit=unit,
                clock=clock,
                step=step,
                scheduled_at=next_at,
                deadline=deadline,
                now=now,
                settings=settings,
            )
            if escalation is not None:
                fired.append(escalation)
            level, next_at = level + 1, following
        outbox = [
            saved_id(n)
            for e in fired
            for n in record_notifications(
                session, escalation=e, ticket=ticket, unit=unit, now=now, settings=settings
            )
        ]
        if enqueue is not None and outbox:
            after_commit(session, lambda: _enqueue_all(enqueue, outbox))
        return len(fired)


def _conditional_advance(
    session: Session,
    assignment: Assignment,
    *,
    clock: Clock,
    deadline: datetime,
    seen: int,
    new_level: int,
    next_at: datetime | None,
    now: datetime,
) -> bool:
    deadline_column = col(getattr(Assignment, f"{clock.value}_due_at"))
    # An UPDATE's result is a CursorResult, which has the rowcount; Session.execute is
    # typed for every statement.
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Assignment)
            .where(
                col(Assignment.id) == assignment.id,
                col(Assignment.escalation_level) == seen,
                col(Assignment.escalation_clock) == clock,
                deadline_column == deadline,
                col(Assignment.next_escalation_at) <= now,
            )
            .values(escalation_level=new_level, next_escalation_at=next_at)
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


def _enqueue_all(enqueue: Enqueue, notification_ids: list[int]) -> None:
    # The escalation is committed by now; a broker hiccup must not make it look failed.
    for notification_id in notification_ids:
        try:
            enqueue(notification_id)
        except Exception:
            log.exception("could not enqueue notification %s; it stays pending", notification_id)
