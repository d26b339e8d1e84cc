"""The queue's agents in the database: ``telephony.acd.AgentPool`` over ``accounts.agents``.

The queue engine (``telephony.acd``) knows agents only through this protocol; here each of its
moves is one short unit of work on the operators' stored state (``agent_status``), made by
compare-and-set, so that the queue of any SIP edge and the console in any web process never
both move one operator. Every move rings the "agents" doorbell after its commit (the console
panels and every edge's queue hear it); ``watch`` wakes the engine with that bell, so a call
waiting on one edge is offered the operator who just pressed "ready" in a browser at once —
no polling loop anywhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from accounts import agents
from core.bell import Bell, Unsubscribe
from core.clock import Clock
from core.db import session_scope
from core.runtime import SessionFactory
from telephony.acd import AgentOffer

TOPIC = "agents"


class DbAgentPool:
    """The operators stored by ``accounts.agents`` as the queue's ``AgentPool``. Agent ids
    are the operators' user ids as strings (the protocol's ids are opaque strings)."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        clock: Clock,
        wrap_up_s: float,
        bell: Bell | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = session_factory
        self._clock = clock
        self._wrap_up_s = wrap_up_s
        self._bell = bell
        self._monotonic = monotonic
        # Whether anyone is signed in is asked by every new call (``call_handler``): kept
        # here and forgotten whenever the doorbell says an operator moved, so a busy edge
        # does not ask the database 200 times a second what changes a few times an hour.
        self._signed_in: dict[frozenset[str], int] = {}
        self._cache_lock = threading.Lock()
        self._cache_epoch = 0
        if bell is not None:
            bell.subscribe(TOPIC, self._forget)

    def _forget(self) -> None:
        with self._cache_lock:
            self._signed_in.clear()
            self._cache_epoch += 1

    def watch(self, wake: Callable[[], None]) -> Unsubscribe | None:
        """Call ``wake`` (``Acd.wake``) whenever any operator moves, in any process."""
        if self._bell is None:
            return None
        return self._bell.subscribe(TOPIC, wake)

    # --- telephony.acd.AgentPool ---------------------------------------------------
    def reserve(self, skills: frozenset[str], call_key: str) -> AgentOffer | None:
        with session_scope(self._factory) as session:
            agent = agents.reserve(session, skills, call_key, self._now(), bell=self._bell)
        if agent is None or agent.extension is None:
            return None
        return AgentOffer(str(agent.user_id), agent.extension, agent.skills)

    def answered(self, agent_id: str, call_key: str) -> None:
        with session_scope(self._factory) as session:
            agents.answered(session, int(agent_id), call_key, self._now(), bell=self._bell)

    def missed(self, agent_id: str, call_key: str) -> None:
        with session_scope(self._factory) as session:
            agents.missed(session, int(agent_id), call_key, self._now(), bell=self._bell)

    def release(self, agent_id: str, call_key: str) -> None:
        with session_scope(self._factory) as session:
            agents.release(session, int(agent_id), call_key, self._now(), bell=self._bell)

    def call_ended(self, agent_id: str, call_key: str) -> None:
        with session_scope(self._factory) as session:
            agents.call_ended(
                session,
                int(agent_id),
                call_key,
                self._now(),
                wrap_up_s=self._wrap_up_s,
                bell=self._bell,
            )

    def signed_in(self, skills: frozenset[str]) -> int:
        """Operators signed in with ``skills``; from the cache the bell keeps true (without
        a bell, from the database every time)."""
        with self._cache_lock:
            cached = self._signed_in.get(skills)
            epoch = self._cache_epoch
        if cached is not None:
            return cached
        with session_scope(self._factory) as session:
            count = agents.signed_in_count(session, skills)
        with self._cache_lock:
            # A move rung meanwhile may not be in what was read: keep it only if none was.
            if self._bell is not None and epoch == self._cache_epoch:
                self._signed_in[skills] = count
        return count

    def next_change_at(self) -> float | None:
        """The next wrap-up's end on the engine's monotonic clock: the engine's timer wakes
        then and ``reserve`` finds the operator ready (``end_wrap_ups``)."""
        with session_scope(self._factory) as session:
            ends = agents.next_wrap_up_end(session)
        if ends is None:
            return None
        return self._monotonic() + max(0.0, (ends - self._now()).total_seconds())

    def _now(self) -> datetime:
        return self._clock.now()
