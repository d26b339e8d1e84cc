"""The call figures of issue 18 — 接通率, answered within 15 s and 30 s, average wait,
abandonment — as Figures over the period, built on hotline.calls.acd_figures (which
defines and counts them for the contact-centre reports) rather than counted a second way.

Calls are filtered by the period only (``CallRecord.arrived_at``): a call belongs to no
unit, category or district until it becomes a ticket, and every call is the phone channel.
Drill-down lists call record ids (``call_record.id``), not ticket ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlmodel import Session

from core.db import table_of
from hotline.calls import acd_figures
from hotline.calls.acd_figures import ANSWER_30_S, Interval
from hotline.figures.compute import Figure
from hotline.figures.filters import Filters
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

C = table_of(CallRecord)


@dataclass(frozen=True)
class CallFigures:
    """接通率 (``answer_rate``): calls a person answered / calls counted, where counted =
    calls that joined the operators' queue less short abandons (the caller hung up within
    ``short_abandon_s``, 5 s by default) — the national practice. ``within_15s`` /
    ``within_30s``: answered with a queue wait (queue_left_at − queued_at) of at most
    15 s / 30 s, inclusive, over the same calls counted. ``abandon_rate``: abandons longer
    than the short ones / calls counted. ``average_wait_s``: mean queue wait of answered
    calls (abandons not included); None when nobody was answered."""

    answer_rate: Figure
    within_15s: Figure
    within_30s: Figure
    abandon_rate: Figure
    average_wait_s: float | None


def call_figures(
    session: Session,
    *,
    filters: Filters,
    now: datetime,
    tz: ZoneInfo,
    answer_target_s: float = 15.0,
    short_abandon_s: float = 5.0,
) -> CallFigures:
    """The call figures of [filters.start, filters.end), from acd_figures' day report."""
    total = acd_figures.report(
        session,
        start=filters.start,
        end=filters.end,
        interval=Interval.day,
        tz=tz,
        now=now,
        answer_target_s=answer_target_s,
        short_abandon_s=short_abandon_s,
    ).total
    dialect = session.get_bind().dialect.name
    # acd_figures' own definition of the wait, so the ids listed are the calls it counted
    wait = acd_figures.seconds_between(dialect, C.c.queue_left_at, C.c.queued_at)
    agent = C.c.queue_outcome == QueueOutcome.agent.value
    abandoned = C.c.queue_outcome == QueueOutcome.abandoned.value
    counted = and_(
        C.c.queued_at.is_not(None),
        or_(~abandoned, C.c.queue_outcome.is_(None), wait.is_(None), wait > short_abandon_s),
    )

    def ids(condition: ColumnElement[bool]) -> Select[int]:
        return select(C.c.id.label("call_id")).where(
            C.c.direction == CallDirection.INBOUND.value,
            C.c.arrived_at >= filters.start,
            C.c.arrived_at < filters.end,
            condition,
        )

    def figure(name: str, zh: str, numerator: int, condition: ColumnElement[bool]) -> Figure:
        return Figure(name, zh, numerator, total.counted, ids(condition), ids(counted))

    return CallFigures(
        answer_rate=figure("answer_rate", "接通率", total.answered, agent),
        within_15s=figure(
            "within_15s",
            "15秒接通率",
            total.answered_within_target,
            and_(agent, wait <= answer_target_s),
        ),
        within_30s=figure(
            "within_30s", "30秒接通率", total.answered_within_30s, and_(agent, wait <= ANSWER_30_S)
        ),
        abandon_rate=figure(
            "abandon_rate",
            "放弃率",
            total.abandoned - total.short_abandoned,
            and_(abandoned, wait > short_abandon_s),
        ),
        average_wait_s=total.asa_s,
    )
