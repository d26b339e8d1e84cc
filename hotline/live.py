"""What changed, for the pages' live updates: the ticket events and the escalations stored since
a point, each with the units whose people may see it (a handler sees the tickets their unit
was ever assigned, as in ``dispatch.access``).

Both logs are append-only with increasing ids, so they are their own event feed: a web
process reads them after its cursor and fans the changes out to every open tab; a tab that
reconnects sends the cursor it last saw (``Last-Event-ID``) and is replayed what it missed,
from any web process. Ids are handed out before commit, so on PostgreSQL a smaller id can
become visible after a larger one: ``Cursor`` only moves past an id once every id below it has
been seen or the gap is older than ``GAP_WAIT`` (a rolled-back insert leaves a gap for good).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from dispatch.models import Assignment, Escalation
from tickets.models import Ticket, TicketEvent

GAP_WAIT = timedelta(seconds=10)
BATCH = 500


@dataclass(frozen=True)
class Change:
    """One stored change: ``kind`` "ticket" (a ticket event) or "escalation"."""

    kind: str
    id: int
    ticket_id: int
    number: str
    action: str  # the ticket event's action, or the escalation's kind
    status: str | None
    unit_ids: frozenset[int]  # units assigned to the ticket (who may see it)


@dataclass
class Cursor:
    """Where a feed is in one log: ``low`` is a resume point (every id ≤ low has been seen or
    given up on); ``seen`` the ids above it already delivered."""

    low: int = 0
    seen: set[int] = field(default_factory=set)
    gaps: dict[int, float] = field(default_factory=dict)  # missing id -> monotonic first noticed

    def accept(self, ids: Iterable[int], *, now: float, gap_wait_s: float) -> list[int]:
        """The ids not delivered before (deliver them), and the low water mark moved on."""
        fresh = [i for i in ids if i > self.low and i not in self.seen]
        self.seen.update(fresh)
        for found in fresh:
            self.gaps.pop(found, None)
        top = max(self.seen, default=self.low)
        for missing in range(self.low + 1, top):
            if missing not in self.seen:
                self.gaps.setdefault(missing, now)
        while True:
            nxt = self.low + 1
            if nxt in self.seen:
                self.seen.discard(nxt)
            elif nxt in self.gaps and now - self.gaps[nxt] >= gap_wait_s:
                del self.gaps[nxt]
            else:
                break
            self.low = nxt
        if len(self.gaps) > 10_000:  # a huge hole (ids skipped in bulk): give up on it
            self.gaps.clear()
            self.low = max(self.low, min(self.seen, default=self.low + 1) - 1)
        return fresh


def ticket_changes(session: Session, *, after: int, limit: int = BATCH) -> list[Change]:
    rows = session.execute(
        select(
            col(TicketEvent.id),
            col(TicketEvent.ticket_id),
            col(TicketEvent.action),
            col(TicketEvent.to_status),
            col(Ticket.number),
        )
        .join(Ticket, col(Ticket.id) == col(TicketEvent.ticket_id))
        .where(col(TicketEvent.id) > after)
        .order_by(col(TicketEvent.id))
        .limit(limit)
    ).all()
    units = _units_of(session, {r[1] for r in rows})
    return [
        Change(
            kind="ticket",
            id=r[0],
            ticket_id=r[1],
            number=r[4],
            action=r[2],
            status=r[3].value if r[3] is not None else None,
            unit_ids=units.get(r[1], frozenset()),
        )
        for r in rows
    ]


def escalation_changes(session: Session, *, after: int, limit: int = BATCH) -> list[Change]:
    rows = session.execute(
        select(
            col(Escalation.id),
            col(Escalation.ticket_id),
            col(Escalation.kind),
            col(Ticket.number),
            col(Ticket.status),
        )
        .join(Ticket, col(Ticket.id) == col(Escalation.ticket_id))
        .where(col(Escalation.id) > after)
        .order_by(col(Escalation.id))
        .limit(limit)
    ).all()
    units = _units_of(session, {r[1] for r in rows})
    return [
        Change(
            kind="escalation",
            id=r[0],
            ticket_id=r[1],
            number=r[3],
            action=r[2].value,
            status=r[4].value,
            unit_ids=units.get(r[1], frozenset()),
        )
        for r in rows
    ]


def latest_ids(session: Session) -> tuple[int, int]:
    """The newest ticket event and escalation ids: where a new feed starts."""
    from sqlalchemy import func

    t = session.scalar(select(func.max(col(TicketEvent.id)))) or 0
    e = session.scalar(select(func.max(col(Escalation.id)))) or 0
    return int(t), int(e)


def _units_of(session: Session, ticket_ids: set[int]) -> dict[int, frozenset[int]]:
    if not ticket_ids:
        return {}
    found: dict[int, set[int]] = defaultdict(set)
    for ticket_id, unit_id in session.execute(
        select(col(Assignment.ticket_id), col(Assignment.unit_id)).where(
            col(Assignment.ticket_id).in_(ticket_ids)
        )
    ):
        found[ticket_id].add(unit_id)
    return {k: frozenset(v) for k, v in found.items()}


# ---------------------------------------------------------------- calls in progress

CALLS_ENDED_WITHIN = timedelta(minutes=30)  # an ended call stays on the console this long


def call_key(call_id: str) -> str:
    """A call's name in event names and element ids (a Call-ID may hold any character)."""
    return hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class LiveCall:
    """A call the operator console shows: in progress, or ended a moment ago."""

    call_id: str
    caller_number: str
    arrived_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ticket_id: int | None
    live_seq: int
    live_text: str
    control_seq: int = 0  # the console's call controls changed (hotline.calls.call_control)
    # A call an operator took: both speakers' turns so far (None: the robot's call).
    dialogue: list[dict[str, Any]] | None = None


def live_calls(session: Session, *, now: datetime, ended_within: timedelta) -> list[LiveCall]:
    """Inbound calls not ended, and those ended within ``ended_within`` (their ticket to be
    completed), oldest first."""
    from telephony.endpoint import CallDirection
    from telephony.models import CallRecord

    table = CallRecord.__table__  # type: ignore[attr-defined]
    rows = session.execute(
        select(
            table.c.call_id,
            table.c.caller_number,
            table.c.arrived_at,
            table.c.answered_at,
            table.c.ended_at,
            table.c.ticket_id,
            table.c.live_seq,
            table.c.live_text,
            table.c.control_seq,
            table.c.dialogue,
        )
        .where(
            table.c.direction == CallDirection.INBOUND,
            table.c.answered_at.is_not(None),
            (table.c.ended_at.is_(None)) | (table.c.ended_at >= now - ended_within),
        )
        .order_by(table.c.arrived_at, table.c.id)
        .limit(500)
    ).all()
    return [LiveCall(*row) for row in rows]
