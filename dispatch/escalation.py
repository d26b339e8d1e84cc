"""Linked escalation (预警 → 催办 → 督办 → 通报): arming an assignment's watched clock, the SLA
sweep that fires each due step exactly once, and who sees and acknowledges the steps.

An assignment carries its escalation state in three columns: the watched clock, the last
level fired, and when the next level is due (NULL when nothing more can fire). The sweep is
an indexed range query on the last of these, and fires a step only through a conditional
UPDATE on the level it saw — so overlapping sweeps, two workers or a retried task never
fire a step twice (the unique constraint on the Escalation row is the second guard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import after_commit, session_scope
from core.errors import Forbidden, NotFound
from core.settings import Settings, get_settings
from dispatch import policies, sla
from dispatch.calendar import WorkCalendar
from dispatch.models import (
    Assignment,
    Clock,
    Escalation,
    EscalationKind,
    Notification,
    NotificationStatus,
    SlaPolicy,
    Unit,
)
from tickets import service as tickets
from tickets.models import Ticket

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
# A sweep stops after this many batches and leaves the rest to the next run, so that one
# run always ends well before the next is scheduled.
MAX_BATCHES = 100

Enqueue = Callable[[int], Any]


# ---------------------------------------------------------------- arming


def _deadline(assignment: Assignment, clock: Clock) -> datetime:
    return getattr(assignment, f"{Clock(clock).value}_due_at")


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
) -> Select[tuple[int, datetime]]:
    """(id, next_escalation_at) of the next `batch` assignments due at `now`, after the
    keyset position `after` — a range scan on ix_assignment_next_escalation."""
    due = col(Assignment.next_escalation_at)
    stmt = select(Assignment.id, Assignment.next_escalation_at).where(due <= now)
    if after is not None:
        stmt = stmt.where(or_(due > after[0], and_(due == after[0], col(Assignment.id) > after[1])))
    return stmt.order_by(due, col(Assignment.id)).limit(batch)


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
            select(Assignment.ticket_id).where(Assignment.id == assignment_id)
        )
        if ticket_id is None:
            return 0
        # The ticket row first, as every dispatch operation does: one lock order, no
        # deadlock; and the note's event number cannot collide with a concurrent change.
        ticket = tickets.get_ticket(session, ticket_id, for_update=True)
        assignment = session.scalars(
            select(Assignment)
            .where(Assignment.id == assignment_id)
            .execution_options(populate_existing=True)
        ).one()
        clock, level, next_at = (
            assignment.escalation_clock,
            assignment.escalation_level,
            assignment.next_escalation_at,
        )
        if clock is None or next_at is None or next_at > now:
            return 0
        policy = session.get(SlaPolicy, assignment.policy_id)
        schedule = schedule_for(assignment, clock=clock, policy=policy, calendar=calendar)
        deadline = _deadline(assignment, clock)
        unit = session.get(Unit, assignment.unit_id)
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
            escalation = _record_step(
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
            n.id
            for e in fired
            for n in _notify(
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
    deadline_column = getattr(Assignment, f"{clock.value}_due_at")
    result = session.execute(
        update(Assignment)
        .where(
            Assignment.id == assignment.id,
            Assignment.escalation_level == seen,
            Assignment.escalation_clock == clock,
            deadline_column == deadline,
            col(Assignment.next_escalation_at) <= now,
        )
        .values(escalation_level=new_level, next_escalation_at=next_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _enqueue_all(enqueue: Enqueue, notification_ids: list[int]) -> None:
    # The escalation is committed by now; a broker hiccup must not make it look failed.
    for notification_id in notification_ids:
        try:
            enqueue(notification_id)
        except Exception:
            log.exception("could not enqueue notification %s; it stays pending", notification_id)


# ---------------------------------------------------------------- one fired step

ADDRESSEE = {
    EscalationKind.warning: "handlers",
    EscalationKind.chase: "handlers",
    EscalationKind.supervision: "head",
    EscalationKind.leadership: "leadership",
}
_KIND_ZH = {
    EscalationKind.warning: "预警",
    EscalationKind.chase: "催办",
    EscalationKind.supervision: "督办",
    EscalationKind.leadership: "通报",
}
_CLOCK_ZH = {Clock.sign: "签收", Clock.reply: "回复", Clock.close: "办结"}
_CLOCK_EN = {Clock.sign: "sign-for", Clock.reply: "reply", Clock.close: "completion"}


def _compose(
    *,
    kind: EscalationKind,
    clock: Clock,
    number: str,
    unit_name: str,
    deadline: datetime,
    scheduled_at: datetime,
    tz: ZoneInfo,
) -> tuple[str, str]:
    """The subject and the bilingual message of one step, deadlines in the centre's time."""
    due = deadline.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    zh_clock, en_clock = _CLOCK_ZH[clock], _CLOCK_EN[clock]
    hours = f"{(scheduled_at - deadline) / timedelta(hours=1):g}"
    tag = f"【{_KIND_ZH[kind]}】工单 {number}"
    if kind is EscalationKind.warning:
        subject = f"{tag} 即将到达{zh_clock}时限"
        zh = f"{tag}（{unit_name}）将于 {due} 到达{zh_clock}时限，请尽快{zh_clock}。"
        en = f"Warning: ticket {number} ({unit_name}) is due for {en_clock} by {due}."
    elif kind is EscalationKind.chase:
        subject = f"{tag} 已超过{zh_clock}时限"
        zh = f"{tag}（{unit_name}）已超过{zh_clock}时限（{due}），请立即{zh_clock}。"
        en = (
            f"Chase: ticket {number} ({unit_name}) missed its {en_clock} deadline of {due}; "
            f"act on it now."
        )
    elif kind is EscalationKind.supervision:
        subject = f"{tag} 超过{zh_clock}时限 {hours} 小时"
        zh = f"{tag}（{unit_name}）超过{zh_clock}时限（{due}）{hours} 小时，请单位负责人督促办理。"
        en = (
            f"Supervision order: ticket {number} ({unit_name}) is {hours} h past its "
            f"{en_clock} deadline of {due}; the head of the unit is asked to see to it."
        )
    else:
        subject = f"{tag} 超过{zh_clock}时限 {hours} 小时，报中心领导"
        zh = f"{tag}（{unit_name}）超过{zh_clock}时限（{due}）{hours} 小时，已报中心领导。"
        en = (
            f"Leadership: ticket {number} ({unit_name}) is {hours} h past its {en_clock} "
            f"deadline of {due}; reported to the centre leadership."
        )
    return subject, f"{zh}\n{en}"


def _recipients(session: Session, *, kind: EscalationKind, unit: Unit) -> list[User]:
    stmt = select(User).where(col(User.active).is_(True))
    addressee = ADDRESSEE[kind]
    if addressee == "handlers":
        stmt = stmt.where(User.unit_id == unit.id, User.role == Role.handler)
    elif addressee == "head":
        stmt = stmt.where(User.unit_id == unit.id, col(User.is_head).is_(True))
    else:
        stmt = stmt.where(User.role == Role.supervisor)
    return list(session.scalars(stmt.order_by(User.id)))


def _record_step(
    session: Session,
    *,
    ticket: Ticket,
    assignment: Assignment,
    unit: Unit,
    clock: Clock,
    step: sla.ScheduledStep,
    scheduled_at: datetime,
    deadline: datetime,
    now: datetime,
    settings: Settings,
) -> Escalation | None:
    """The Escalation row and the ticket's audit note; None if the step was already there."""
    recipients = _recipients(session, kind=step.kind, unit=unit)
    _, message = _compose(
        kind=step.kind,
        clock=clock,
        number=ticket.number,
        unit_name=unit.name,
        deadline=deadline,
        scheduled_at=scheduled_at,
        tz=settings.tz,
    )
    escalation = Escalation(
        ticket_id=ticket.id,
        assignment_id=assignment.id,
        unit_id=unit.id,
        clock=clock,
        level=step.level,
        kind=step.kind,
        deadline=deadline,
        scheduled_at=scheduled_at,
        fired_at=now,
        addressee=ADDRESSEE[step.kind],
        recipients=[u.id for u in recipients],
        message=message,
    )
    try:
        with session.begin_nested():
            session.add(escalation)
            session.flush()
    except IntegrityError:
        log.warning(
            "escalation step %s of assignment %s (%s, deadline %s) already exists",
            step.level,
            assignment.id,
            clock.value,
            deadline.isoformat(),
        )
        return None
    tickets.add_note(
        session,
        ticket=ticket,
        actor=SYSTEM_ACTOR,
        now=now,
        kind="escalation",
        reason=message,
        data={
            "escalation_id": escalation.id,
            "assignment_id": assignment.id,
            "unit": unit.code,
            "clock": clock.value,
            "level": step.level,
            "escalation_kind": step.kind.value,
            "addressee": escalation.addressee,
            "deadline": deadline.isoformat(),
            "scheduled_at": scheduled_at.isoformat(),
        },
    )
    return escalation


def _notify(
    session: Session,
    *,
    escalation: Escalation,
    ticket: Ticket,
    unit: Unit,
    now: datetime,
    settings: Settings,
) -> list[Notification]:
    """In-app notices (delivered by being stored), plus the e-mails and the webhook call
    to deliver after commit; returns the latter."""
    subject, _ = _compose(
        kind=escalation.kind,
        clock=escalation.clock,
        number=ticket.number,
        unit_name=unit.name,
        deadline=escalation.deadline,
        scheduled_at=escalation.scheduled_at,
        tz=settings.tz,
    )
    users = [session.get(User, uid) for uid in escalation.recipients]

    def note(
        channel: str,
        *,
        user_id: int | None = None,
        address: str | None = None,
        body: str = escalation.message,
    ) -> Notification:
        sent = channel == "inapp"
        row = Notification(
            escalation_id=escalation.id,
            user_id=user_id,
            channel=channel,
            address=address,
            subject=subject,
            body=body,
            created_at=now,
            status=NotificationStatus.sent if sent else NotificationStatus.pending,
            sent_at=now if sent else None,
        )
        session.add(row)
        return row

    for user in users:
        note("inapp", user_id=user.id)
    outbox: list[Notification] = []
    if settings.smtp.host:
        addresses: dict[str, int | None] = {u.email: u.id for u in users if u.email}
        if escalation.addressee == "head" and unit.head_email:
            addresses.setdefault(unit.head_email, None)
        outbox += [note("email", user_id=uid, address=addr) for addr, uid in addresses.items()]
    if settings.webhook.url:
        outbox.append(
            note(
                "webhook",
                address=settings.webhook.url,
                body=_webhook_body(escalation, ticket=ticket, unit=unit),
            )
        )
    session.flush()
    return outbox


def _webhook_body(escalation: Escalation, *, ticket: Ticket, unit: Unit) -> str:
    """The JSON a webhook receives, fixed when the step fires so every retry sends the
    same bytes (and the same signature)."""
    return json.dumps(
        {
            "event": "escalation",
            "escalation_id": escalation.id,
            "ticket_number": ticket.number,
            "kind": escalation.kind.value,
            "level": escalation.level,
            "clock": escalation.clock.value,
            "unit": {"code": unit.code, "name": unit.name},
            "deadline": escalation.deadline.isoformat(),
            "scheduled_at": escalation.scheduled_at.isoformat(),
            "fired_at": escalation.fired_at.isoformat(),
            "addressee": escalation.addressee,
            "message": escalation.message,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


# ---------------------------------------------------------------- linked visibility


def escalations_for_ticket(session: Session, *, ticket_id: int) -> list[Escalation]:
    """Every step on the ticket (all its units, lead and co-handling alike), on the ticket it
    was merged into, and on the tickets merged into it — oldest first."""
    ticket = tickets.get_ticket(session, ticket_id)
    linked = {ticket.id}
    if ticket.parent_id is not None:
        linked.add(ticket.parent_id)
    linked.update(session.scalars(select(Ticket.id).where(Ticket.parent_id == ticket.id)))
    return list(
        session.scalars(
            select(Escalation)
            .where(col(Escalation.ticket_id).in_(linked))
            .order_by(col(Escalation.fired_at), col(Escalation.id))
        )
    )


def escalations_for_user(
    session: Session, *, user: User, unacknowledged_only: bool = False, limit: int = 100
) -> list[Escalation]:
    """The steps addressed to the user or to their unit, newest first."""
    addressed = select(Notification.escalation_id).where(
        Notification.user_id == user.id, Notification.channel == "inapp"
    )
    mine = col(Escalation.id).in_(addressed)
    if user.unit_id is not None:
        mine = or_(mine, Escalation.unit_id == user.unit_id)
    stmt = select(Escalation).where(mine)
    if unacknowledged_only:
        stmt = stmt.where(col(Escalation.acknowledged_at).is_(None))
    return list(
        session.scalars(
            stmt.order_by(col(Escalation.fired_at).desc(), col(Escalation.id).desc()).limit(limit)
        )
    )


def _may_acknowledge(user: User, escalation: Escalation) -> bool:
    if not user.active:
        return False
    if user.role in (Role.supervisor, Role.admin) or user.id in escalation.recipients:
        return True
    return user.unit_id == escalation.unit_id and (user.role == Role.handler or user.is_head)


def acknowledge(session: Session, *, escalation_id: int, user: User, now: datetime) -> Escalation:
    """The unit (or the centre) has seen the step. A second acknowledgement keeps the first."""
    ticket_id = session.scalar(select(Escalation.ticket_id).where(Escalation.id == escalation_id))
    if ticket_id is None:
        raise NotFound(f"escalation {escalation_id} does not exist", escalation_id=escalation_id)
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    escalation = session.scalars(
        select(Escalation)
        .where(Escalation.id == escalation_id)
        .execution_options(populate_existing=True)
    ).one()
    if not _may_acknowledge(user, escalation):
        raise Forbidden(
            f"{user.username} may not acknowledge escalation {escalation_id}",
            escalation_id=escalation_id,
        )
    if escalation.acknowledged_at is not None:
        return escalation
    escalation.acknowledged_at = now
    escalation.acknowledged_by_id = user.id
    session.add(escalation)
    tickets.add_note(
        session,
        ticket=ticket,
        actor=f"{user.role.value}:{user.username}",
        now=now,
        kind="escalation_ack",
        data={
            "escalation_id": escalation.id,
            "level": escalation.level,
            "escalation_kind": escalation.kind.value,
        },
    )
    return escalation
