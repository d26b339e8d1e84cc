"""Operators' time from their stored state changes (accounts.models.AgentStateChange): the
spans each was in each state over a range, and the sums occupancy is made of. The basis of
the per-operator figures in hotline.calls.acd_figures, which cuts the spans at its
intervals' boundaries."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from accounts.models import AgentState, AgentStateChange, AgentStatus, NotReadyReason
from core.db import table_of


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


@dataclass
class AgentTime:
    """One operator's time in one interval, from their state changes."""

    signed_in_s: float = 0.0
    not_ready_s: float = 0.0  # not ready for a reason other than after-call work
    busy_s: float = 0.0  # on a call, wrap-up, not ready for after-call work

    def add(self, other: AgentTime) -> None:
        self.signed_in_s += other.signed_in_s
        self.not_ready_s += other.not_ready_s
        self.busy_s += other.busy_s

    @property
    def available_s(self) -> float:
        return self.signed_in_s - self.not_ready_s

    @property
    def occupancy(self) -> float | None:
        return _ratio(self.busy_s, self.available_s)


Span = tuple[datetime, datetime, AgentState, NotReadyReason | None]


def agent_spans(
    session: Session, *, start: datetime, end: datetime, agent_id: int | None = None
) -> list[tuple[int, list[Span]]]:
    """Each operator's states over [start, end): the state they were in at ``start`` (their
    last change before it) and every change up to ``end``, as spans clipped to the range."""
    if end <= start:
        return []
    change = table_of(AgentStateChange)
    status = table_of(AgentStatus)
    # The last change before the range, per operator who ever signed in: one index seek each
    # (agent_state_change (user_id, at)) rather than a scan of all history.
    last = (
        select(change.c.id)
        .where(change.c.user_id == status.c.user_id, change.c.at < start)
        .order_by(change.c.at.desc(), change.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    operators = select(status.c.user_id, last.label("last_id"))
    if agent_id is not None:
        operators = operators.where(status.c.user_id == agent_id)
    before = {row.user_id: row.last_id for row in session.execute(operators)}
    nobody: tuple[AgentState, NotReadyReason | None] = (AgentState.signed_out, None)
    state_at = dict.fromkeys(before, nobody)
    ids = [i for i in before.values() if i is not None]
    if ids:
        for row in session.execute(
            select(change.c.user_id, change.c.to_state, change.c.reason).where(change.c.id.in_(ids))
        ):
            state_at[row.user_id] = _state(row.to_state, row.reason)
    moves = select(change.c.user_id, change.c.to_state, change.c.reason, change.c.at).where(
        change.c.at >= start, change.c.at < end
    )
    if agent_id is not None:
        moves = moves.where(change.c.user_id == agent_id)
    timeline: dict[int, list[tuple[datetime, AgentState, NotReadyReason | None]]] = defaultdict(
        list
    )
    for user_id, (state, reason) in state_at.items():
        timeline[user_id].append((start, state, reason))
    for row in session.execute(moves.order_by(change.c.user_id, change.c.at, change.c.id)):
        timeline[row.user_id].append((row.at, *_state(row.to_state, row.reason)))
    found: list[tuple[int, list[Span]]] = []
    for user_id in sorted(timeline):
        points = timeline[user_id]
        if not points or points[0][0] > start:
            points.insert(0, (start, AgentState.signed_out, None))
        spans: list[Span] = [
            (at, following[0] if following else end, state, reason)
            for (at, state, reason), following in zip(points, [*points[1:], None], strict=True)
            if state != AgentState.signed_out
        ]
        found.append((user_id, [s for s in spans if s[1] > s[0]]))
    return found


def _state(state: str, reason: str | None) -> tuple[AgentState, NotReadyReason | None]:
    return AgentState(state), NotReadyReason(reason) if reason is not None else None
