"""Who is asking and what they may see: the bearer token's user, and the tickets a user may
read — a handler only those their unit was ever assigned."""

from __future__ import annotations

from sqlalchemy import ColumnElement, bindparam, exists, select
from sqlmodel import Session, col

from accounts.models import CENTRE_ROLES, User
from accounts.service import hash_token
from core.db import loaded, table_of
from core.errors import Forbidden, NotFound
from dispatch import reference
from dispatch.models import Assignment
from tickets.models import Ticket

_USERS = table_of(User)
_BY_TOKEN = select(_USERS, reference.REVISION).where(_USERS.c.token_hash == bindparam("token_hash"))


def authenticate(session: Session, *, token: str) -> User | None:
    """The active user holding `token`. Only the SHA-256 is looked up, so timing reveals
    nothing about the token itself."""
    if not token:
        return None
    # A plain SELECT rather than an ORM query: this runs on every request, and it brings
    # the reference revision along, which nearly every request needs next.
    row = (
        session.connection()
        .execute(_BY_TOKEN, {"token_hash": hash_token(token)})
        .mappings()
        .first()
    )
    if row is None or not row["active"]:
        return None
    values = dict(row)
    reference.read_along(session, values.pop("reference_revision"))
    return loaded(session, User, values)


def visible_ticket_clause(user: User) -> ColumnElement[bool] | None:
    """None when `user` sees every ticket; for a handler, the tickets their unit was ever
    assigned — any assignment status, so a unit keeps seeing the history of its work."""
    if user.role in CENTRE_ROLES:
        return None
    return exists().where(
        col(Assignment.ticket_id) == Ticket.id, col(Assignment.unit_id) == user.unit_id
    )


def check_ticket_search(user: User, *, caller_phone: str | None) -> None:
    """Handlers see confidential callers masked; searching by phone number would let them
    confirm a guessed number, so that search is for centre staff only."""
    if caller_phone and user.role not in CENTRE_ROLES:
        raise Forbidden("searching by caller phone is for centre staff only")


def visible_ticket(
    session: Session, *, user: User, ticket_id: int | None = None, number: str | None = None
) -> Ticket:
    """The ticket, if `user` may see it. A ticket they may not see is reported as missing,
    so its existence does not leak."""
    if (ticket_id is None) == (number is None):
        raise ValueError("give exactly one of ticket_id and number")
    stmt = select(Ticket).where(
        (col(Ticket.id) == ticket_id) if number is None else (col(Ticket.number) == number)
    )
    clause = visible_ticket_clause(user)
    if clause is not None:
        stmt = stmt.where(clause)
    ticket = session.scalars(stmt).first()
    if ticket is None:
        ident = number if number is not None else ticket_id
        raise NotFound(
            f"ticket {ident} does not exist",
            **({"number": number} if number is not None else {"ticket_id": ticket_id}),
        )
    return ticket
