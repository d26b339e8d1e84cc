"""Ticket lists: the filters of the ticket search and keyset pagination, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlmodel import Session, col

from core.db import keyset_cursor, parse_keyset_cursor, saved_id
from tickets.models import Status, Ticket


@dataclass
class TicketFilters:
    status: list[Status] | None = None
    channel: str | None = None
    request_type: str | None = None
    urgency: str | None = None
    district: str | None = None
    category_prefix: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    caller_phone: str | None = None
    q: str | None = None
    # False for a reader who is shown confidential callers masked: `q` then matches the
    # free text of non-confidential tickets only (and any ticket by its number), so a search
    # cannot confirm a guessed number or name that the reader sees masked.
    q_in_confidential: bool = True


def list_tickets(
    session: Session,
    *,
    filters: TicketFilters,
    limit: int = 50,
    cursor: str | None = None,
    restrict: ColumnElement[bool] | None = None,
) -> tuple[list[Ticket], str | None]:
    """Newest first, keyset-paginated on (created_at, id). `restrict` narrows visibility
    (a handler sees only their unit's tickets)."""
    stmt = select(Ticket)
    conds: list[ColumnElement[bool]] = []
    f = filters
    if f.status:
        conds.append(col(Ticket.status).in_(list(f.status)))
    for name in ("channel", "request_type", "urgency", "district", "caller_phone"):
        value = getattr(f, name)
        if value:
            conds.append(col(getattr(Ticket, name)) == value)
    if f.category_prefix:
        conds.append(col(Ticket.category_code).startswith(f.category_prefix))
    if f.created_from:
        conds.append(col(Ticket.created_at) >= f.created_from)
    if f.created_to:
        conds.append(col(Ticket.created_at) < f.created_to)
    if f.q:
        # The words as typed: `%`, `_` and the escape character match only themselves.
        text = or_(
            col(Ticket.description).contains(f.q, autoescape=True),
            col(Ticket.title).contains(f.q, autoescape=True),
            col(Ticket.address).contains(f.q, autoescape=True),
        )
        if not f.q_in_confidential:
            text = and_(col(Ticket.confidential).is_(False), text)
        conds.append(or_(text, col(Ticket.number) == f.q))
    if restrict is not None:
        conds.append(restrict)
    if cursor:
        at, ident = parse_keyset_cursor(cursor)
        conds.append(
            or_(
                col(Ticket.created_at) < at,
                and_(col(Ticket.created_at) == at, col(Ticket.id) < ident),
            )
        )
    if conds:
        stmt = stmt.where(and_(*conds))
    stmt = stmt.order_by(col(Ticket.created_at).desc(), col(Ticket.id).desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = keyset_cursor(last.created_at, saved_id(last)) if last else None
    return rows[:limit], next_cursor
