"""Assignments and the ground every dispatch operation shares: who acts (and how the audit
names them), reading a ticket's assignments, the checks a handler's step must pass, the
ticket's row lock, and withdrawing the live assignments.

Role checks (who may call what) live in the web layer; here we only enforce what is true
whoever calls: a handler acts for their own unit only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import Role, User
from core.errors import InvalidInput, NotFound
from dispatch import escalation
from dispatch.models import Assignment, AssignmentStatus
from tickets import service as tickets
from tickets.models import Ticket

LIVE = (
    AssignmentStatus.dispatched,
    AssignmentStatus.signed,
    AssignmentStatus.replied,
    AssignmentStatus.returned,
)

Actor = User | None


def who(actor: Actor) -> str:
    return "system" if actor is None else f"{actor.role.value}:{actor.username}"


def assignments_of(
    session: Session, *, ticket_id: int, live_only: bool = False
) -> list[Assignment]:
    stmt = select(Assignment).where(col(Assignment.ticket_id) == ticket_id)
    if live_only:
        stmt = stmt.where(col(Assignment.status).in_(LIVE))
    return list(session.scalars(stmt.order_by(col(Assignment.id))))


def get_assignment(session: Session, assignment_id: int) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"assignment {assignment_id} does not exist", assignment_id=assignment_id)
    return assignment


def require_own_unit(actor: Actor, assignment: Assignment) -> None:
    if actor is not None and actor.role == Role.handler and actor.unit_id != assignment.unit_id:
        # Do not reveal other units' work: a stranger's assignment simply is not there.
        raise NotFound(f"assignment {assignment.id} does not exist", assignment_id=assignment.id)


def required(text: str | None, message: str) -> str:
    if not text or not text.strip():
        raise InvalidInput(message)
    return text.strip()


def lock_ticket(session: Session, ticket_id: int) -> Ticket:
    return tickets.get_ticket(session, ticket_id, for_update=True)


def withdraw(
    session: Session,
    *,
    ticket_id: int,
    now: datetime,
    status: AssignmentStatus = AssignmentStatus.withdrawn,
) -> list[Assignment]:
    """End the ticket's live assignments (kept in history) and stop their clocks."""
    live = assignments_of(session, ticket_id=ticket_id, live_only=True)
    for assignment in live:
        assignment.status = status
        assignment.ended_at = now
        escalation.disarm(assignment)
        session.add(assignment)
    return live
