"""One fired escalation step: its bilingual message, who it is addressed to, the Escalation
row with the ticket's audit note, and the notifications it sends — in-app notices (stored,
so delivered), and the e-mails and webhook call dispatch.notify delivers after commit.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import saved_id
from core.settings import Settings
from dispatch import sla
from dispatch.models import (
    Assignment,
    Clock,
    Escalation,
    EscalationKind,
    Notification,
    NotificationStatus,
    Unit,
)
from dispatch.rows import existing
from tickets import service as tickets
from tickets.models import Ticket

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"

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
        stmt = stmt.where(col(User.unit_id) == unit.id, col(User.role) == Role.handler)
    elif addressee == "head":
        stmt = stmt.where(col(User.unit_id) == unit.id, col(User.is_head).is_(True))
    else:
        stmt = stmt.where(col(User.role) == Role.supervisor)
    return list(session.scalars(stmt.order_by(col(User.id))))


def record_step(
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
        ticket_id=saved_id(ticket),
        assignment_id=saved_id(assignment),
        unit_id=saved_id(unit),
        clock=clock,
        level=step.level,
        kind=step.kind,
        deadline=deadline,
        scheduled_at=scheduled_at,
        fired_at=now,
        addressee=ADDRESSEE[step.kind],
        recipients=[saved_id(u) for u in recipients],
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


def record_notifications(
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
    users = [existing(session, User, uid) for uid in escalation.recipients]

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
    same bytes under the same `webhook-id` (each attempt is signed with its own timestamp)."""
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
