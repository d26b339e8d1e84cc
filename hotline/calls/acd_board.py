"""The supervisors' wallboard's figures now (web.pages.wallboard): operators by state, the
calls in the operators' queue and the longest wait, and today's figures since the centre's
midnight (hotline.calls.acd_figures) for the centre and for each operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlmodel import Session

from accounts.models import AgentState, AgentStatus, NotReadyReason, User
from core.db import table_of
from hotline.calls.acd_figures import AgentFigures, Figures, Interval, midnight, report
from telephony.models import CallRecord

# A call still "in the queue" after this long was left there by an edge that died (crash
# recovery closes it): the wallboard does not count it as waiting.
WAITING_WITHIN = timedelta(hours=6)


@dataclass(frozen=True)
class BoardAgent:
    user_id: int
    display_name: str
    extension: str | None
    state: AgentState
    reason: NotReadyReason | None
    in_state_s: int
    today: AgentFigures
    call_ticket_id: int | None = None  # on a call: its ticket (a supervisor listens in there)


@dataclass(frozen=True)
class Board:
    now: datetime
    by_state: dict[AgentState, int]
    waiting: int
    longest_wait_s: int | None
    today: Figures
    agents: list[BoardAgent]


def waiting_calls(session: Session, now: datetime) -> tuple[int, int | None]:
    """Calls in the operators' queue now (joined, not left, not ended) and the longest wait
    in whole seconds; read on the ``arrived_at`` index within WAITING_WITHIN."""
    c = table_of(CallRecord).c
    count, oldest = session.execute(
        select(func.count(), func.min(c.queued_at)).where(
            c.arrived_at >= now - WAITING_WITHIN,
            c.queued_at.is_not(None),
            c.queue_left_at.is_(None),
            c.ended_at.is_(None),
        )
    ).one()
    if not count or oldest is None:
        return 0, None
    if oldest.tzinfo is None:  # SQLite's aggregate comes back as text-made naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), max(0, int((now - oldest).total_seconds()))


def board(
    session: Session,
    *,
    now: datetime,
    tz: ZoneInfo,
    answer_target_s: float,
    short_abandon_s: float,
) -> Board:
    """The wallboard: operators by state, the queue now, and today's figures (since the
    centre's midnight) for the centre and for each operator signed in or seen today."""
    since = midnight(now, tz)
    today = (
        report(
            session,
            start=since,
            end=now,
            interval=Interval.day,
            tz=tz,
            now=now,
            answer_target_s=answer_target_s,
            short_abandon_s=short_abandon_s,
        )
        if now > since
        else None
    )
    s = table_of(AgentStatus).c
    u = table_of(User).c
    rows = session.execute(
        select(s.user_id, s.state, s.reason, s.extension, s.since, s.call_key, u.display_name)
        .join_from(table_of(AgentStatus), table_of(User), u.id == s.user_id)
        .order_by(s.extension, s.user_id)
    ).all()
    on_call = [r.call_key for r in rows if r.state == AgentState.on_call and r.call_key]
    c = table_of(CallRecord).c
    tickets = (
        dict(
            session.execute(
                select(c.call_id, c.ticket_id).where(
                    c.call_id.in_(on_call), c.ended_at.is_(None), c.ticket_id.is_not(None)
                )
            ).all()
        )
        if on_call
        else {}
    )
    by_state = dict.fromkeys(AgentState, 0)
    agents = []
    for row in rows:
        state = AgentState(row.state)
        by_state[state] += 1
        figures = today.agents.get(row.user_id) if today else None
        if state == AgentState.signed_out and figures is None:
            continue
        since = row.since if row.since.tzinfo else row.since.replace(tzinfo=UTC)
        agents.append(
            BoardAgent(
                user_id=row.user_id,
                display_name=row.display_name,
                extension=row.extension,
                state=state,
                reason=NotReadyReason(row.reason) if row.reason else None,
                in_state_s=max(0, int((now - since).total_seconds())),
                today=figures or AgentFigures(),
                call_ticket_id=tickets.get(row.call_key) if state == AgentState.on_call else None,
            )
        )
    waiting, longest = waiting_calls(session, now)
    return Board(
        now=now,
        by_state=by_state,
        waiting=waiting,
        longest_wait_s=longest,
        today=today.total if today else Figures(),
        agents=agents,
    )
