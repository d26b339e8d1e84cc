"""What is waiting and what is in progress now, read from the database (for /metrics at
scrape time: the database is the truth whichever process made the change)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from core.db import table_of
from hotline.calls.acd_board import WAITING_WITHIN, waiting_calls
from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tickets.models import Status, Ticket

# The centre's own queues of tickets: no rule routed them (派单 by hand), a unit replied
# (审核 of the reply), a unit sent one back (退单 审核).
TICKET_QUEUES = {
    Status.pending_dispatch: "manual_dispatch",
    Status.replied: "review_reply",
    Status.returned: "review_return",
}


@dataclass(frozen=True)
class Gauges:
    calls_waiting: int  # in the operators' queue
    longest_wait_s: int | None
    calls_in_progress: dict[str, int]  # by direction: answered, not ended
    tickets_waiting: dict[str, int]  # by TICKET_QUEUES' names


def gauges(session: Session, *, now: datetime) -> Gauges:
    waiting, longest = waiting_calls(session, now)
    c = table_of(CallRecord).c
    talking = dict.fromkeys((d.value for d in CallDirection), 0)
    rows = session.execute(
        select(c.direction, func.count())
        .where(
            # a call left open by an edge that died is not in progress (crash recovery
            # closes it), as on the wallboard
            c.arrived_at >= now - WAITING_WITHIN,
            c.answered_at.is_not(None),
            c.ended_at.is_(None),
        )
        .group_by(c.direction)
    ).all()
    for direction, count in rows:
        talking[CallDirection(direction).value] = int(count)
    t = table_of(Ticket).c
    queued = dict.fromkeys(TICKET_QUEUES.values(), 0)
    for status, count in session.execute(
        select(t.status, func.count()).where(t.status.in_(list(TICKET_QUEUES))).group_by(t.status)
    ):
        queued[TICKET_QUEUES[Status(status)]] = int(count)
    return Gauges(waiting, longest, talking, queued)
