"""The audit trail beyond tickets' own events: sign-ins (and failed ones), sign-outs, and every
action a person takes from a page — who, when, from which address, on what, with what outcome.
A ticket's change is also a ``TicketEvent`` with its actor; this trail adds the address and the
actions that change no ticket (an unlock, a password reset, a rule edit, a refused post)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import AuditEntry


def record(
    session: Session,
    *,
    at: datetime,
    action: str,
    user_id: int | None = None,
    username: str | None = None,
    target: str | None = None,
    outcome: str = "ok",
    address: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=at,
        action=action[:64],
        user_id=user_id,
        username=(username or "")[:64] or None,
        target=(target or "")[:200] or None,
        outcome=outcome[:32],
        address=(address or "")[:64] or None,
        detail=detail,
    )
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session,
    *,
    user_id: int | None = None,
    action: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; ``before_id`` pages on."""
    stmt = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(col(AuditEntry.user_id) == user_id)
    if action is not None:
        stmt = stmt.where(col(AuditEntry.action) == action)
    if before_id is not None:
        stmt = stmt.where(col(AuditEntry.id) < before_id)
    return list(session.scalars(stmt))
