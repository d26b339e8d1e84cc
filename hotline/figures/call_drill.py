"""The calls behind a call figure: the drill-down of 接通率, 15/30-second 接通率 and 放弃率
(hotline.figures.calls), as the tickets behind a ticket figure are listed by board.tickets.

A call figure's numerator and denominator select call record ids (``call_record.id``) with
acd_figures' own definitions, so a list holds exactly the calls its number counts. A row
shows what a supervisor checks a number with — when the call came, from whom (the number
masked, as everywhere on the pages), how long it waited in the queue, how it left the queue,
the operator who answered and the ticket the call became — never the recording or the words.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlmodel import Session

from accounts.models import User
from accounts.privacy import mask_phone
from core.db import table_of
from hotline.calls import acd_figures
from hotline.figures.board import Ask
from hotline.figures.calls import call_figures
from hotline.figures.compute import Figure
from telephony.models import CallRecord
from tickets.models import Ticket

C = table_of(CallRecord)
T = table_of(Ticket)
U = table_of(User)

CALL_FIGURES = ("answer_rate", "within_15s", "within_30s", "abandon_rate")
STREAM_ROWS = 2_000


@dataclass(frozen=True)
class CallRow:
    call_id: int  # call_record.id
    arrived_at: datetime
    caller: str  # masked; "" when anonymous
    queue_wait_s: float | None  # queued → left the queue
    outcome: str | None  # QueueOutcome's value
    agent_extension: str | None
    agent_name: str | None  # the operator who answered (accounts' display name)
    ticket_id: int | None
    ticket_number: str | None


def figure(session: Session, ask: Ask, name: str) -> Figure:
    """One call figure of the period (names: CALL_FIGURES)."""
    if name not in CALL_FIGURES:
        raise KeyError(name)
    figures = call_figures(
        session,
        filters=ask.filters,
        now=ask.now,
        tz=ask.tz,
        answer_target_s=ask.answer_target_s,
        short_abandon_s=ask.short_abandon_s,
    )
    found: Figure = getattr(figures, name)
    return found


def _query(session: Session, ids: Select[int]) -> Select:
    inner = ids.subquery("ids")
    wait = acd_figures.seconds_between(
        session.get_bind().dialect.name, C.c.queue_left_at, C.c.queued_at
    )
    return (
        select(
            C.c.id,
            C.c.arrived_at,
            C.c.caller_number,
            wait.label("queue_wait_s"),
            C.c.queue_outcome,
            C.c.agent_extension,
            C.c.ticket_id,
            T.c.number,
            U.c.display_name,
        )
        .select_from(
            C.outerjoin(T, T.c.id == C.c.ticket_id).outerjoin(U, U.c.id == C.c.agent_user_id)
        )
        .where(C.c.id.in_(select(inner.c[0])))
        .order_by(C.c.arrived_at.desc(), C.c.id.desc())
    )


def _row(r: tuple) -> CallRow:
    wait = None if r[3] is None else round(float(r[3]), 1)
    outcome = None if r[4] is None else str(getattr(r[4], "value", r[4]))
    caller = mask_phone(r[2]) if r[2] else ""
    return CallRow(r[0], r[1], caller, wait, outcome, r[5], r[8], r[6], r[7])


def calls(
    session: Session, ids: Select[int], *, offset: int = 0, limit: int = 50
) -> tuple[list[CallRow], int]:
    """The calls a call figure's select names, newest first, one page; and how many."""
    total = int(session.scalar(select(func.count()).select_from(ids.subquery("n"))) or 0)
    query = _query(session, ids).offset(offset).limit(limit)
    return [_row(tuple(r)) for r in session.execute(query)], total


def all_calls(session: Session, ids: Select[int]) -> Iterator[CallRow]:
    """Every call a select names, newest first, read in batches (for the exports)."""
    query = _query(session, ids).execution_options(yield_per=STREAM_ROWS)
    for r in session.execute(query):
        yield _row(tuple(r))
