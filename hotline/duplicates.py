"""Duplicate suggestions at intake (重复件): the open tickets of the last days that are likely
the same matter as a new one — the same caller, the same address, or a similar text — with
the reasons, for the operator to merge with one click (``dispatch.closing.merge``).

Similarity is the overlap of the two texts' character pairs (Jaccard over bigrams of the
Chinese text without punctuation): robust to word order and to the operators' and the ASR's
differing wording, cheap on a few hundred recent tickets. It suggests; a person decides."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlmodel import Session, col

from tickets.models import Status, Ticket

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
    """Open tickets of the last ``WINDOW`` (not ``ticket``, not already merged) that share
    its caller or address or resemble its text, best first."""
    since = now - WINDOW
    base = select(Ticket).where(
        col(Ticket.id) != ticket.id,
        col(Ticket.created_at) >= since,
        col(Ticket.status).in_(OPEN),
    )
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
