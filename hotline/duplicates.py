"""Duplicate suggestions at intake (重复件): the open tickets of the last days that are likely
the same matter as a new one — the same caller, the same address, or a similar text — with
the reasons, for the operator to merge with one click (``dispatch.closing.merge``).

Similarity is the overlap of the two texts' character pairs (Jaccard over bigrams of the
Chinese text without punctuation): robust to word order and to the operators' and the ASR's
differing wording, cheap on a few hundred recent tickets. It suggests; a person decides —
and when a dispatcher says two tickets are not the same request (``dismiss``), the pair is
never suggested again, here or in the merge-candidates queue."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import saved_id
from core.errors import Conflict, InvalidInput
from dispatch.assignments import Actor, lock_ticket, who
from tickets import service as tickets
from tickets.models import MergeDismissal, Status, Ticket

WINDOW = timedelta(days=7)
SIMILAR = 0.35  # bigram Jaccard from which two texts are "similar"
SCAN = 300  # the newest recent tickets compared by text
OPEN = (
    Status.intake,
    Status.pending_dispatch,
    Status.dispatched,
    Status.signed,
    Status.in_progress,
    Status.replied,
    Status.reviewed,
    Status.returned,
    Status.reopened,
)
_NOT_TEXT = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    ticket: Ticket
    same_caller: bool
    same_address: bool
    similarity: float  # 0..1

    @property
    def score(self) -> float:
        return self.similarity + 0.5 * self.same_caller + 0.4 * self.same_address


def bigrams(text: str) -> set[str]:
    plain = _NOT_TEXT.sub("", text or "").lower()
    return {plain[i : i + 2] for i in range(len(plain) - 1)}


def similarity(a: str, b: str) -> float:
    x, y = bigrams(a), bigrams(b)
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


def candidates(
    session: Session, *, ticket: Ticket, now: datetime, limit: int = 8
) -> list[Candidate]:
    """Open tickets of the last ``WINDOW`` (not ``ticket``, not already merged, not
    dismissed as another request) that share its caller or address or resemble its text,
    best first."""
    since = now - WINDOW
    base = select(Ticket).where(
        col(Ticket.id) != ticket.id,
        col(Ticket.created_at) >= since,
        col(Ticket.status).in_(OPEN),
    )
    dismissed = dismissed_with(session, saved_id(ticket)) if ticket.id is not None else set()
    if dismissed:
        base = base.where(col(Ticket.id).not_in(dismissed))
    same: list[Ticket] = []
    keys = []
    if ticket.caller_phone:
        keys.append(col(Ticket.caller_phone) == ticket.caller_phone)
    if ticket.address:
        keys.append(col(Ticket.address) == ticket.address)
    if keys:
        same = list(session.scalars(base.where(or_(*keys)).limit(SCAN)))
    recent = list(session.scalars(base.order_by(col(Ticket.created_at).desc()).limit(SCAN)))
    found: dict[int, Candidate] = {}
    for other in [*same, *recent]:
        if other.id in found or other.id is None:
            continue
        candidate = Candidate(
            ticket=other,
            same_caller=bool(ticket.caller_phone) and other.caller_phone == ticket.caller_phone,
            same_address=bool(ticket.address) and other.address == ticket.address,
            similarity=round(similarity(ticket.description, other.description), 2),
        )
        if candidate.same_caller or candidate.same_address or candidate.similarity >= SIMILAR:
            found[other.id] = candidate
    return sorted(found.values(), key=lambda c: (-c.score, -(c.ticket.id or 0)))[:limit]


def caller_history(session: Session, *, phone: str, limit: int = 10) -> list[Ticket]:
    """The caller's earlier tickets: open ones first, then the newest."""
    if not phone:
        return []
    rows = list(
        session.scalars(
            select(Ticket)
            .where(col(Ticket.caller_phone) == phone)
            .order_by(col(Ticket.created_at).desc())
            .limit(100)
        )
    )
    rows.sort(key=lambda t: (t.status not in OPEN,))  # stable: newest first within each
    return rows[:limit]


# ---------------------------------------------------------------- 不是重复件 dismissal


def dismissed_with(session: Session, ticket_id: int) -> set[int]:
    """The tickets a dispatcher said are not the same request as ``ticket_id``."""
    rows = session.execute(
        select(col(MergeDismissal.ticket_id), col(MergeDismissal.other_ticket_id)).where(
            or_(
                col(MergeDismissal.ticket_id) == ticket_id,
                col(MergeDismissal.other_ticket_id) == ticket_id,
            )
        )
    ).all()
    return {b if a == ticket_id else a for a, b in rows}


def dismiss(
    session: Session,
    *,
    ticket_id: int,
    other_id: int,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> MergeDismissal:
    """不是重复件: ``ticket_id`` and ``other_id`` are two requests, not one reported twice.
    The pair is stored once (lower id first), so it is found from either side, and both
    tickets' histories say who decided and why. Saying it twice is refused (Conflict): the
    second dispatcher's page was out of date, and nothing changes."""
    if ticket_id == other_id:
        raise InvalidInput("a ticket is always the same request as itself")
    low, high = sorted((ticket_id, other_id))
    # locked in id order: the same pair dismissed from either side at once waits, never
    # deadlocks, and the second finds the first's row
    first, second = lock_ticket(session, low), lock_ticket(session, high)
    if high in dismissed_with(session, low):
        raise Conflict(f"tickets {first.number} and {second.number} are already dismissed")
    reason = (reason or "").strip() or None
    row = MergeDismissal(
        ticket_id=low,
        other_ticket_id=high,
        by_user_id=actor.id if actor is not None else None,
        at=now,
        reason=reason,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent dismissal of the same pair won
        raise Conflict(f"tickets {first.number} and {second.number} are already dismissed") from exc
    for ticket, other in ((first, second), (second, first)):
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="merge_dismissed",
            reason=reason,
            data={"other": other.number, "other_id": saved_id(other)},
        )
    return row
