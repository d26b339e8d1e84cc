"""The status line: a caller keys in a ticket number and hears where it stands."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select
from sqlmodel import Session, col

from dispatch import assignments
from dispatch.models import Assignment, AssignmentRole
from telephony.flows import StatusAnswer
from tickets.models import (
    Status,
    Ticket,
)

log = logging.getLogger(__name__)


def ticket_number(digits: str) -> str:
    """A ticket number as keyed on a phone (no '-'): 20261127000042 → 20261127-000042."""
    keyed = re.sub(r"\D", "", digits)
    return f"{keyed[:8]}-{keyed[8:]}" if len(keyed) > 8 else keyed


def lookup_status(session: Session, *, number: str) -> StatusAnswer | None:
    ticket = session.scalars(
        select(Ticket).where(col(Ticket.number) == ticket_number(number))
    ).first()
    if ticket is None:
        return None
    if ticket.status == Status.merged and ticket.parent_id:
        ticket = session.get(Ticket, ticket.parent_id) or ticket
    deadline = None
    if ticket.status not in (Status.closed, Status.archived):
        deadline = session.scalar(
            select(col(Assignment.reply_due_at))
            .where(
                col(Assignment.ticket_id) == ticket.id,
                col(Assignment.role) == AssignmentRole.lead,
                col(Assignment.status).in_(assignments.LIVE),
            )
            .order_by(col(Assignment.id).desc())
            .limit(1)
        )
    return StatusAnswer(status=ticket.status.value, deadline=deadline)
