"""Agents in memory: the ``telephony.acd.AgentPool`` for tests and for a single-process centre
without a database (the platform's is ``hotline.calls.agent_pool.DbAgentPool``). The same moves
as the stored operators (``accounts.agents``): ready, not ready with a reason, ringing, on a
call, wrap-up ending in ready by itself; the longest-idle ready agent is reserved first."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from telephony.acd import AgentOffer, Clock


class AgentState(str, enum.Enum):
    SIGNED_OUT = "signed_out"
    READY = "ready"
    NOT_READY = "not_ready"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


@dataclass
class MemoryAgent:
    agent_id: str
    extension: str
    skills: frozenset[str]
    state: AgentState = AgentState.READY
    idle_since: float = 0.0
    call_key: str | None = None
    wrap_up_until: float | None = None
    reason: str = ""


class MemoryAgentPool:
    """An ``AgentPool`` in memory: tests, and a single-process centre without a database.
    ``on_change`` is the bell: told whenever an agent may have become free."""

    def __init__(self, *, clock: Clock = time.monotonic, wrap_up_s: float = 0.0) -> None:
        self.clock = clock
        self.wrap_up_s = wrap_up_s
        self.agents: dict[str, MemoryAgent] = {}
        self.on_change: Callable[[], None] | None = None
        self.history: list[tuple[str, AgentState, str]] = []  # (agent, new state, call key)
        self._lock = threading.Lock()

    def _move(self, agent: MemoryAgent, state: AgentState, call_key: str | None) -> None:
        agent.state = state
        agent.call_key = call_key
        self.history.append((agent.agent_id, state, call_key or ""))

    def _ring_bell(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- console moves ------------------------------------------------------------------
    def sign_in(self, agent_id: str, extension: str, skills: Iterable[str] = ()) -> None:
        with self._lock:
            agent = MemoryAgent(agent_id, extension, frozenset(skills), AgentState.NOT_READY)
            self.agents[agent_id] = agent
            self.history.append((agent_id, agent.state, ""))

    def set_ready(self, agent_id: str) -> None:
        with self._lock:
            agent = self.agents[agent_id]
            if agent.state in (AgentState.RINGING, AgentState.ON_CALL):
                raise ValueError(f"agent {agent_id} is {agent.state.value}")
            agent.idle_since = self.clock()
            agent.reason = ""
            self._move(agent, AgentState.READY, None)
        self._ring_bell()

    def set_not_ready(self, agent_id: str, reason: str = "break") -> None:
        with self._lock:
            agent = self.agents[agent_id]
            if agent.state in (AgentState.RINGING, AgentState.ON_CALL):
                raise ValueError(f"agent {agent_id} is {agent.state.value}")
            agent.reason = reason
            self._move(agent, AgentState.NOT_READY, None)

    def sign_out(self, agent_id: str) -> None:
        with self._lock:
            agent = self.agents.pop(agent_id)
            self._move(agent, AgentState.SIGNED_OUT, None)
        self._ring_bell()  # the last one out: waiting calls overflow

    # --- the AgentPool protocol -----------------------------------------------------------
    def _end_wrap_ups(self, now: float) -> None:
        for agent in self.agents.values():
            if agent.state is AgentState.WRAP_UP and (agent.wrap_up_until or 0) <= now:
                agent.idle_since = agent.wrap_up_until or now
                agent.wrap_up_until = None
                self._move(agent, AgentState.READY, None)

    def reserve(self, skills: frozenset[str], call_key: str) -> AgentOffer | None:
        with self._lock:
            self._end_wrap_ups(self.clock())
            ready = [
                a
                for a in self.agents.values()
                if a.state is AgentState.READY and skills <= a.skills and a.extension
            ]
            if not ready:
                return None
            agent = min(ready, key=lambda a: (a.idle_since, a.agent_id))
            self._move(agent, AgentState.RINGING, call_key)
            return AgentOffer(agent.agent_id, agent.extension, agent.skills)

    def _mine(self, agent_id: str, call_key: str, *states: AgentState) -> MemoryAgent | None:
        agent = self.agents.get(agent_id)
        if agent is None or agent.call_key != call_key or agent.state not in states:
            return None
        return agent

    def answered(self, agent_id: str, call_key: str) -> None:
        with self._lock:
            agent = self._mine(agent_id, call_key, AgentState.RINGING)
            if agent is not None:
                self._move(agent, AgentState.ON_CALL, call_key)

    def missed(self, agent_id: str, call_key: str) -> None:
        with self._lock:
            agent = self._mine(agent_id, call_key, AgentState.RINGING)
            if agent is not None:
                agent.reason = "missed"
                self._move(agent, AgentState.NOT_READY, None)

    def release(self, agent_id: str, call_key: str) -> None:
        with self._lock:
            agent = self._mine(agent_id, call_key, AgentState.RINGING)
            if agent is not None:
                self._move(agent, AgentState.READY, None)  # idle_since kept: their turn

    def call_ended(self, agent_id: str, call_key: str) -> None:
        with self._lock:
            agent = self._mine(agent_id, call_key, AgentState.ON_CALL)
            if agent is None:
                return
            now = self.clock()
            if self.wrap_up_s > 0:
                agent.wrap_up_until = now + self.wrap_up_s
                self._move(agent, AgentState.WRAP_UP, None)
            else:
                agent.idle_since = now
                self._move(agent, AgentState.READY, None)

    def signed_in(self, skills: frozenset[str]) -> int:
        with self._lock:
            return sum(1 for a in self.agents.values() if skills <= a.skills)

    def next_change_at(self) -> float | None:
        with self._lock:
            ends = [
                a.wrap_up_until
                for a in self.agents.values()
                if a.state is AgentState.WRAP_UP and a.wrap_up_until is not None
            ]
            return min(ends, default=None)

    def state(self, agent_id: str) -> AgentState:
        with self._lock:
            agent = self.agents.get(agent_id)
            return AgentState.SIGNED_OUT if agent is None else agent.state
