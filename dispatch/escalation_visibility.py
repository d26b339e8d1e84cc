"""Linked visibility of escalation steps — the steps on a ticket and the tickets merged
with it, the steps addressed to a user or their unit — and their acknowledgement.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlmodel import Session, col

from accounts.models import Role, User
from core.errors import NotFound
from dispatch.access import visible_ticket_clause
from dispatch.models import Escalation, Notification
from tickets import service as tickets
from tickets.models import Ticket


def escalations_for_ticket(
    session: Session, *, ticket_id: int, user: User | None = None
) -> list[Escalation]:
    """Every step on the ticket (all its units, lead and co-handling alike), on the ticket it
    was merged into, and on the tickets merged into it — oldest first.

    With `user`, a linked ticket counts only if the user may see it: a handler whose ticket
    absorbed another unit's duplicate does not see that unit's steps."""
    ticket = tickets.get_ticket(session, ticket_id)
    linked = {ticket.id}
    others = select(col(Ticket.id)).where(
        or_(col(Ticket.parent_id) == ticket.id, col(Ticket.id) == ticket.parent_id)
    )
    clause = visible_ticket_clause(user) if user is not None else None
    if clause is not None:
        others = others.where(clause)
    linked.update(session.scalars(others))
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
    addressed = select(col(Notification.escalation_id)).where(
        col(Notification.user_id) == user.id, col(Notification.channel) == "inapp"
    )
    mine: ColumnElement[bool] = col(Escalation.id).in_(addressed)
    if user.unit_id is not None:
        mine = or_(mine, col(Escalation.unit_id) == user.unit_id)
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


def _missing(escalation_id: int) -> NotFound:
    return NotFound(f"escalation {escalation_id} does not exist", escalation_id=escalation_id)


def acknowledge(session: Session, *, escalation_id: int, user: User, now: datetime) -> Escalation:
    """The unit (or the centre) has seen the step. A second acknowledgement keeps the first.

    A step the user may not acknowledge is reported as missing, like one that does not
    exist, so that escalation ids cannot be enumerated."""
    ticket_id = session.scalar(
        select(col(Escalation.ticket_id)).where(col(Escalation.id) == escalation_id)
    )
    if ticket_id is None:
        raise _missing(escalation_id)
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    escalation = session.scalars(
        select(Escalation)
        .where(col(Escalation.id) == escalation_id)
        .execution_options(populate_existing=True)
    ).one()
    if not _may_acknowledge(user, escalation):
        raise _missing(escalation_id)
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
