"""The queue engine (ACD): which waiting call rings which free agent, and when the robot or a
callback takes over instead.

It is pure and event-driven: no database, no polling. What it knows of agents it asks an
``AgentPool`` (in memory here and in tests; the database one is ``accounts``' next session);
ringing a seat is a ``Ringer``'s job (``DialRinger``: the edge's ``dial`` in a thread). A call
is offered an agent the moment it joins and the moment something changes: an agent becomes
ready (the pool's bell calls ``wake``), a ring is answered, missed or fails, a call leaves.
The only timers are deadlines the engine sets itself — a ring's timeout, the pause before the
next agent, a call's overflow — and one thread waits on a condition until the nearest of them.
Its clock is injected: tests move it and call ``run_due`` (no thread, no sleeps).

The ring cycle: the longest-waiting call of the highest priority is offered the longest-idle
ready agent with its skills; the agent's seat rings for ``ring_timeout_s``; no answer → the
agent is missed (the pool makes them not-ready, so later calls don't ring an empty desk), and
after ``retry_pause_s`` the call, still first in line, is offered the next agent.

Overflow (to the voice-intake robot or a callback, the flow's choice) happens when a call has
waited ``overflow_after_s``, when it joins a queue already longer than
``overflow_queue_longer_than``, or when nobody who could take it is signed in.

Stuck states are what call-centre engines are known to die of (a caller shown ringing for an
hour, an agent reserved for a call long gone); ``reconcile`` compares the engine with the calls
that really exist, repairs every mismatch with a log line, and counts it in ``repairs``.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from telephony.endpoint import Call, CallFailed, Disposition

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds on a monotonic scale (``time.monotonic`` outside tests)."""


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AcdConfig:
    """The engine's rules; ``from_settings`` reads ``settings.acd``."""

    ring_timeout_s: float = 10.0
    retry_pause_s: float = 1.0
    # The ringer has its own ring timeout (``dial``'s); the engine's timer fires this much
    # later, so that an answer just inside the timeout is not thrown away by a race.
    ring_grace_s: float = 0.5
    position_every_s: float = 30.0
    overflow_after_s: float | None = 60.0  # None: never by wait
    overflow_queue_longer_than: int | None = 20  # None: never by length
    overflow_when_no_agents: bool = True
    # Until calls have been handled, expected waits assume this handle time.
    default_handle_s: float = 240.0
    handle_history: int = 50  # the recent handle times the estimate averages

    def __post_init__(self) -> None:
        if self.ring_timeout_s <= 0 or self.retry_pause_s < 0 or self.ring_grace_s < 0:
            raise ValueError("acd: ring_timeout_s must be > 0, retry_pause_s, ring_grace_s >= 0")
        if self.position_every_s <= 0 or self.default_handle_s <= 0 or self.handle_history < 1:
            raise ValueError("acd: position_every_s, default_handle_s, handle_history must be > 0")
        if self.overflow_after_s is not None and self.overflow_after_s <= 0:
            raise ValueError("acd: overflow_after_s must be > 0 (or None)")
        if self.overflow_queue_longer_than is not None and self.overflow_queue_longer_than < 0:
            raise ValueError("acd: overflow_queue_longer_than must be >= 0 (or None)")

    @classmethod
    def from_settings(cls, acd: Any) -> AcdConfig:
        """From ``core.settings.AcdSettings`` (duck-typed: telephony does not read settings)."""
        return cls(
            ring_timeout_s=acd.ring_timeout_s,
            retry_pause_s=acd.retry_pause_s,
            position_every_s=acd.position_every_s,
            overflow_after_s=acd.overflow_after_s,
            overflow_queue_longer_than=acd.overflow_queue_longer_than,
            overflow_when_no_agents=acd.overflow_when_no_agents,
        )


_MAX_PASSES = 50
"""Passes of one ``_dispatch`` at most: each further pass follows a move made in the one
before (a reservation), so it ends when the agents or the calls do; the bound only keeps a
misbehaving pool from spinning."""

URGENT_PRIORITY = 20
REPEAT_CALLER_PRIORITY = 10


def call_priority(
    *,
    dialled: str,
    repeat_caller: bool,
    urgent_lines: Collection[str] = (),
    repeat_caller_priority: bool = True,
) -> int:
    """A call's place in line: urgent lines first, then repeat callers of an open ticket
    (they are chasing something already promised), then everyone in order of arrival."""
    if dialled and dialled in urgent_lines:
        return URGENT_PRIORITY
    if repeat_caller and repeat_caller_priority:
        return REPEAT_CALLER_PRIORITY
    return 0


# ---------------------------------------------------------------- agents and ringing
@dataclass(frozen=True)
class AgentOffer:
    """An agent reserved (ringing) for one call."""

    agent_id: str
    extension: str  # the seat to ring
    skills: frozenset[str] = frozenset()


class AgentPool(Protocol):
    """The agents as the engine sees them. Every method is an atomic move of one agent's
    state keyed by the call, so that a repeated or late call of it does nothing."""

    def reserve(self, skills: frozenset[str], call_key: str) -> AgentOffer | None:
        """The longest-idle ready agent having ``skills`` with a bound seat, now ringing for
        ``call_key``; None when there is none."""

    def answered(self, agent_id: str, call_key: str) -> None:
        """The agent picked up: on call."""

    def missed(self, agent_id: str, call_key: str) -> None:
        """The ring went unanswered (or the seat could not be reached): not ready (missed)."""

    def release(self, agent_id: str, call_key: str) -> None:
        """The ring stopped through no fault of the agent (the caller hung up): ready again,
        keeping their place in the idle order."""

    def call_ended(self, agent_id: str, call_key: str) -> None:
        """The bridged call ended: wrap-up."""

    def signed_in(self, skills: frozenset[str]) -> int:
        """Agents signed in (in any state) who have ``skills``: none means nobody will come."""

    def next_change_at(self) -> float | None:
        """When an agent becomes ready by themselves (a wrap-up ends), on the engine's clock;
        the engine wakes then. None when no such change is pending."""


@dataclass(frozen=True)
class RingAttempt:
    """One ring of one agent's seat for one call; ``id`` tells a late report from the current."""

    id: int
    call_key: str
    offer: AgentOffer
    timeout_s: float
    started_at: float


class Ringer(Protocol):
    """Rings seats. ``ring`` must not block: the answer comes back as
    ``Acd.ring_answered(attempt, leg)`` (hang the leg up if it returns False) or
    ``Acd.ring_failed(attempt, disposition)``."""

    def ring(self, attempt: RingAttempt) -> None: ...

    def cancel(self, attempt: RingAttempt) -> None:
        """Stop ringing (the caller left, or the engine's timer gave up on it)."""


# ---------------------------------------------------------------- a waiting call
class Outcome(str, enum.Enum):
    ANSWERED = "answered"  # bridged to an agent
    OVERFLOW = "overflow"  # handed to the robot (or a callback) by an overflow rule
    CALLBACK = "callback"  # the caller pressed the callback key
    ABANDONED = "abandoned"  # the caller hung up while waiting


class OverflowReason(str, enum.Enum):
    WAITED = "waited"  # overflow_after_s in the queue
    QUEUE_LONG = "queue_long"  # joined a queue longer than overflow_queue_longer_than
    NO_AGENTS = "no_agents"  # nobody signed in who could take it


@dataclass(frozen=True)
class Ringing:
    offer: AgentOffer


@dataclass(frozen=True)
class Connected:
    """An agent answered: ``leg`` is the agent's call, to bridge with the caller."""

    offer: AgentOffer
    leg: Call


@dataclass(frozen=True)
class Overflowed:
    reason: OverflowReason


AcdEvent = Ringing | Connected | Overflowed


@dataclass(frozen=True)
class QueueResult:
    """How a call left the queue; the call record keeps it."""

    call_key: str
    outcome: Outcome
    waited_s: float  # joined → answered / left
    agent_id: str | None = None
    overflow: OverflowReason | None = None
    missed_agents: tuple[str, ...] = ()  # agents rung who did not answer, in order


@dataclass
class QueueEntry:
    """A call in the queue, as its flow holds it: events come in ``events`` (read them with
    ``next_event``), and the flow tells the engine how the call left."""

    call_key: str
    priority: int
    skills: frozenset[str]
    enqueued_at: float
    seq: int
    events: queue.Queue[AcdEvent] = field(default_factory=queue.Queue)
    ring: RingAttempt | None = None
    retry_at: float = 0.0
    agent: AgentOffer | None = None  # once answered
    answered_at: float | None = None
    result: QueueResult | None = None
    missed: list[str] = field(default_factory=list)

    def next_event(self, timeout: float = 0.0) -> AcdEvent | None:
        try:
            return self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return None

    @property
    def order(self) -> tuple[int, float, int]:
        return (-self.priority, self.enqueued_at, self.seq)


@dataclass(frozen=True)
class Repair:
    """A stuck state ``reconcile`` found and repaired."""

    kind: str  # "ring_overdue", "caller_gone", "bridged_call_gone"
    call_key: str
    agent_id: str | None


# ---------------------------------------------------------------- the engine
class Acd:
    """One queue. Thread-safe: flows, ringers, the bell and the timer thread all call in."""

    def __init__(
        self,
        *,
        pool: AgentPool,
        ringer: Ringer,
        config: AcdConfig | None = None,
        clock: Clock = time.monotonic,
        on_result: Callable[[QueueResult], None] | None = None,
    ) -> None:
        self.pool = pool
        self.ringer = ringer
        self.config = config or AcdConfig()
        self.clock = clock
        self.on_result = on_result
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._waiting: dict[str, QueueEntry] = {}  # joined, not answered, not left
        self._bridged: dict[str, QueueEntry] = {}  # answered, bridge not finished
        self._attempts = 0
        self._seq = 0
        self._handle_times: deque[float] = deque(maxlen=self.config.handle_history)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._woken = False
        self._dispatching = False  # a pass runs (under the lock: only its thread re-enters)
        self._dispatch_again = False
        self.repairs: Counter[str] = Counter()
        self.outcomes: Counter[Outcome] = Counter()

    # --- the timer thread ------------------------------------------------------------
    def start(self) -> None:
        """Serve timers and wake-ups on a thread of its own. Without it (tests) ``wake``
        runs the pass in the caller's thread and the test calls ``run_due`` after moving the
        clock."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="acd", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._woken:
                    deadline = self._next_deadline()
                    timeout = None if deadline is None else max(0.0, deadline - self.clock())
                    # Bounded only to survive a clock that jumps; nothing here polls state.
                    self._cond.wait(min(timeout, 60.0) if timeout is not None else 60.0)
                self._woken = False
            if self._stop.is_set():
                return
            try:
                self.run_due()
            except Exception:
                log.exception("ACD pass failed")

    def wake(self) -> None:
        """Something changed (an agent became ready): offer waiting calls now."""
        if self._thread is None:
            if self._lock._is_owned():  # type: ignore[attr-defined]
                # Rung from inside one of the engine's own moves (the pool's move rang an
                # in-process bell): that move's own pass sees the change — offering now
                # would find its call half-updated (a ring being set up, a call leaving).
                self._dispatch_again = True
                return
            self.run_due()
            return
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _next_deadline(self) -> float | None:
        deadlines: list[float] = []
        cfg = self.config
        for entry in self._waiting.values():
            if entry.ring is not None:
                deadlines.append(entry.ring.started_at + entry.ring.timeout_s + cfg.ring_grace_s)
            elif entry.retry_at > self.clock():
                deadlines.append(entry.retry_at)
            if cfg.overflow_after_s is not None:
                deadlines.append(entry.enqueued_at + cfg.overflow_after_s)
        if self._waiting:
            change = self.pool.next_change_at()
            if change is not None:
                deadlines.append(change)
        return min(deadlines, default=None)

    # --- joining and leaving -----------------------------------------------------------
    def enqueue(
        self, call_key: str, *, priority: int = 0, skills: Iterable[str] = ()
    ) -> QueueEntry:
        """A call joins the queue after its greeting. It may be offered an agent (or
        overflowed) before this returns: the flow reads ``entry.events``."""
        with self._cond:
            if call_key in self._waiting or call_key in self._bridged:
                raise ValueError(f"call {call_key} is already queued")
            self._seq += 1
            entry = QueueEntry(
                call_key=call_key,
                priority=priority,
                skills=frozenset(skills),
                enqueued_at=self.clock(),
                seq=self._seq,
            )
            longer = self.config.overflow_queue_longer_than
            already = len(self._waiting)
            self._waiting[call_key] = entry
            log.info("call %s queued (priority %d, %d ahead)", call_key, priority, already)
            self._dispatch()
            if entry.ring is None and call_key in self._waiting:
                if longer is not None and already >= longer:
                    self._overflow(entry, OverflowReason.QUEUE_LONG)
            self._cond.notify_all()
            return entry

    def abandon(self, call_key: str) -> QueueResult | None:
        """The caller hung up while waiting (or ringing an agent, who is released)."""
        return self._leave(call_key, Outcome.ABANDONED)

    def callback(self, call_key: str) -> QueueResult | None:
        """The caller asked to be called back and leaves the queue."""
        return self._leave(call_key, Outcome.CALLBACK)

    def _leave(self, call_key: str, outcome: Outcome) -> QueueResult | None:
        with self._cond:
            entry = self._waiting.get(call_key)
            if entry is None:
                return None
            ring = entry.ring
            if ring is not None:
                entry.ring = None
                self.pool.release(ring.offer.agent_id, call_key)
            result = self._finish(entry, outcome)
            self._dispatch()  # a released agent may take the next call
        if ring is not None:
            self.ringer.cancel(ring)
        return result

    def finished(self, call_key: str) -> None:
        """The bridged call ended (either side): the agent goes to wrap-up, and the handle
        time enters the expected-wait estimate."""
        with self._cond:
            entry = self._bridged.pop(call_key, None)
            if entry is None or entry.agent is None:
                return
            if entry.answered_at is not None:
                self._handle_times.append(max(0.0, self.clock() - entry.answered_at))
            self.pool.call_ended(entry.agent.agent_id, call_key)
            self._dispatch()

    def _finish(
        self,
        entry: QueueEntry,
        outcome: Outcome,
        *,
        overflow: OverflowReason | None = None,
    ) -> QueueResult:
        """Take a call out of the waiting line and report how it left (under the lock)."""
        self._waiting.pop(entry.call_key, None)
        now = self.clock()
        result = QueueResult(
            call_key=entry.call_key,
            outcome=outcome,
            waited_s=max(0.0, now - entry.enqueued_at),
            agent_id=entry.agent.agent_id if entry.agent else None,
            overflow=overflow,
            missed_agents=tuple(entry.missed),
        )
        entry.result = result
        self.outcomes[outcome] += 1
        log.info(
            "call %s left the queue: %s after %.1f s%s",
            entry.call_key,
            outcome.value,
            result.waited_s,
            f" ({overflow.value})" if overflow else "",
        )
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("on_result failed for %s", entry.call_key)
        return result

    def _overflow(self, entry: QueueEntry, reason: OverflowReason) -> None:
        self._finish(entry, Outcome.OVERFLOW, overflow=reason)
        entry.events.put(Overflowed(reason))

    # --- ringing -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Offer free agents to waiting calls in line order (under the lock). A pass that
        starts while one runs in this thread — the pool's own move rang an in-process bell,
        whose subscriber is ``wake`` — only asks the running pass to go round once more
        (it would otherwise offer a call whose ring is being set up a second agent)."""
        if self._dispatching:
            self._dispatch_again = True
            return
        self._dispatching = True
        try:
            for _ in range(_MAX_PASSES):
                self._dispatch_again = False
                self._dispatch_pass()
                if not self._dispatch_again:
                    break
        finally:
            self._dispatching = False

    def _dispatch_pass(self) -> None:
        """One pass of ``_dispatch``. A call in its retry pause keeps its place: calls behind
        it needing the same skills wait too."""
        now = self.clock()
        paused: set[frozenset[str]] = set()
        exhausted: set[frozenset[str]] = set()  # no agent for these skills this pass
        to_ring: list[RingAttempt] = []
        for entry in sorted(self._waiting.values(), key=lambda e: e.order):
            if entry.ring is not None:
                continue
            if entry.skills in paused or entry.skills in exhausted:
                continue
            if entry.retry_at > now:
                paused.add(entry.skills)
                continue
            try:
                offer = self.pool.reserve(entry.skills, entry.call_key)
            except Exception:
                # The pool's store is down: the calls wait (the next wake-up or deadline
                # tries again) rather than the caller's flow failing with it.
                log.exception("reserving an agent for %s failed", entry.call_key)
                break
            if offer is None:
                exhausted.add(entry.skills)
                continue
            self._attempts += 1
            entry.ring = RingAttempt(
                id=self._attempts,
                call_key=entry.call_key,
                offer=offer,
                timeout_s=self.config.ring_timeout_s,
                started_at=now,
            )
            entry.events.put(Ringing(offer))
            to_ring.append(entry.ring)
            log.info("call %s rings agent %s (%s)", entry.call_key, offer.agent_id, offer.extension)
        if self.config.overflow_when_no_agents:
            for skills in exhausted:
                if self.pool.signed_in(skills) == 0:
                    for entry in [e for e in self._waiting.values() if e.skills == skills]:
                        if entry.ring is None:
                            self._overflow(entry, OverflowReason.NO_AGENTS)
        for attempt in to_ring:
            try:
                self.ringer.ring(attempt)
            except Exception as exc:
                log.exception("ringing %s failed", attempt.offer.extension)
                self._ring_over(attempt, missed=True, why=f"ringer failed: {exc}")

    def ring_answered(self, attempt: RingAttempt, leg: Call) -> bool:
        """The agent answered. False: the ring is no longer wanted (the caller left, or the
        engine gave up on it) and the ringer must hang ``leg`` up."""
        with self._cond:
            entry = self._waiting.get(attempt.call_key)
            if entry is None or entry.ring is None or entry.ring.id != attempt.id:
                log.info("agent %s answered a ring no longer wanted", attempt.offer.agent_id)
                return False
            entry.ring = None
            entry.agent = attempt.offer
            entry.answered_at = self.clock()
            self.pool.answered(attempt.offer.agent_id, attempt.call_key)
            self._finish(entry, Outcome.ANSWERED)
            self._bridged[attempt.call_key] = entry
            entry.events.put(Connected(attempt.offer, leg))
            return True

    def ring_failed(self, attempt: RingAttempt, disposition: Disposition) -> None:
        """The seat did not answer (no answer, busy, unreachable): the agent is missed and
        the call, after the retry pause, is offered the next agent."""
        with self._cond:
            self._ring_over(attempt, missed=True, why=disposition.value)
            self._dispatch()

    def _ring_over(self, attempt: RingAttempt, *, missed: bool, why: str) -> bool:
        entry = self._waiting.get(attempt.call_key)
        if entry is None or entry.ring is None or entry.ring.id != attempt.id:
            return False
        entry.ring = None
        entry.retry_at = self.clock() + self.config.retry_pause_s
        if missed:
            entry.missed.append(attempt.offer.agent_id)
            self.pool.missed(attempt.offer.agent_id, attempt.call_key)
        log.info(
            "call %s: agent %s did not answer (%s)", attempt.call_key, attempt.offer.agent_id, why
        )
        return True

    # --- timers ------------------------------------------------------------------------
    def run_due(self) -> None:
        """Fire every deadline that has passed, then offer free agents."""
        cancelled: list[RingAttempt] = []
        with self._cond:
            now = self.clock()
            cfg = self.config
            for entry in sorted(self._waiting.values(), key=lambda e: e.order):
                ring = entry.ring
                if ring is not None and now >= ring.started_at + ring.timeout_s + cfg.ring_grace_s:
                    if self._ring_over(ring, missed=True, why="ring timeout"):
                        cancelled.append(ring)
            self._dispatch()
            if cfg.overflow_after_s is not None:
                for entry in list(self._waiting.values()):
                    if entry.ring is None and now - entry.enqueued_at >= cfg.overflow_after_s:
                        self._overflow(entry, OverflowReason.WAITED)
        for ring in cancelled:
            self.ringer.cancel(ring)

    # --- what the caller hears ---------------------------------------------------------
    def position(self, call_key: str) -> int | None:
        """1 for the next call to be offered an agent; None once the call left."""
        with self._lock:
            entry = self._waiting.get(call_key)
            if entry is None:
                return None
            return 1 + sum(1 for e in self._waiting.values() if e.order < entry.order)

    def average_handle_s(self) -> float:
        with self._lock:
            if not self._handle_times:
                return self.config.default_handle_s
            return sum(self._handle_times) / len(self._handle_times)

    def expected_wait_s(self, call_key: str) -> float | None:
        """Calls ahead, and this one, served by the agents signed in at the recent average
        handle time: ``ceil(position / agents) × handle``, the estimate callers are told. It
        errs long when agents are many and free, which callers forgive more than a short
        promise broken."""
        with self._lock:
            entry = self._waiting.get(call_key)
            position = self.position(call_key)
            if entry is None or position is None:
                return None
            agents = max(1, self.pool.signed_in(entry.skills))
            return math.ceil(position / agents) * self.average_handle_s()

    # --- stuck states ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What the engine believes, for the reconciler and the wallboard."""
        with self._lock:
            now = self.clock()
            return {
                "waiting": len(self._waiting),
                "ringing": {
                    e.call_key: e.ring.offer.agent_id
                    for e in self._waiting.values()
                    if e.ring is not None
                },
                "bridged": {key: e.agent.agent_id for key, e in self._bridged.items() if e.agent},
                "longest_wait_s": max(
                    (now - e.enqueued_at for e in self._waiting.values()), default=0.0
                ),
            }

    def reconcile(self, live_call_keys: Collection[str]) -> list[Repair]:
        """Compare the engine with the calls that exist (the edge's live calls) and repair:
        a waiting call that is gone is abandoned; a bridged call that is gone is finished
        (its agent goes to wrap-up); a ring past its deadline with no report is given up
        (a dead timer or a lost ringer report). Each repair is logged and counted."""
        repairs: list[Repair] = []
        live = set(live_call_keys)
        with self._cond:
            now = self.clock()
            overdue = [
                e.ring
                for e in self._waiting.values()
                if e.ring is not None
                and now > e.ring.started_at + e.ring.timeout_s + self.config.ring_grace_s
            ]
            gone_waiting = [key for key in self._waiting if key not in live]
            gone_bridged = [key for key in self._bridged if key not in live]
        for ring in overdue:
            with self._cond:
                fixed = self._ring_over(ring, missed=True, why="reconciler: ring overdue")
            if fixed:
                self.ringer.cancel(ring)
                repairs.append(Repair("ring_overdue", ring.call_key, ring.offer.agent_id))
        for key in gone_waiting:
            result = self.abandon(key)
            if result is not None:
                repairs.append(Repair("caller_gone", key, None))
        for key in gone_bridged:
            with self._lock:
                entry = self._bridged.get(key)
            agent = entry.agent.agent_id if entry and entry.agent else None
            self.finished(key)
            repairs.append(Repair("bridged_call_gone", key, agent))
        with self._cond:
            self._dispatch()
        for repair in repairs:
            self.repairs[repair.kind] += 1
            log.warning(
                "ACD repaired a stuck state: %s (call %s, agent %s)",
                repair.kind,
                repair.call_key,
                repair.agent_id,
            )
        return repairs


# ---------------------------------------------------------------- agents in memory
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


# ---------------------------------------------------------------- ringing with the edge
class DialRinger:
    """Rings a seat with the edge's blocking ``dial`` on a thread per ring. ``target_of``
    turns an extension into the URI to dial (``SipEdge.seat_target``); None: the seat is not
    registered, which counts as a failed ring.

    ``cancel`` (the caller hung up or asked for a callback while the seat rang) sets the
    event ``dial`` watches: the edge CANCELs the INVITE at once (``sip_outbound``), so the seat
    stops ringing; an answer that crosses the CANCEL is hung up — a short false ring for the
    agent, never a caller bridged to nobody."""

    def __init__(
        self,
        *,
        dial: Callable[..., Call],
        target_of: Callable[[str], str | None],
        acd: Callable[[], Acd],
    ) -> None:
        self._dial = dial
        self._target_of = target_of
        self._acd = acd
        self._cancels: dict[int, threading.Event] = {}  # attempt id -> its dial's cancel
        self._lock = threading.Lock()
        self.ring_delays_ms: deque[float] = deque(maxlen=1000)  # pick → INVITE sent

    def ring(self, attempt: RingAttempt) -> None:
        picked = time.monotonic()
        with self._lock:
            self._cancels[attempt.id] = threading.Event()
        thread = threading.Thread(
            target=self._ring, args=(attempt, picked), name=f"ring-{attempt.id}", daemon=True
        )
        thread.start()

    def cancel(self, attempt: RingAttempt) -> None:
        with self._lock:
            event = self._cancels.get(attempt.id)
        if event is not None:
            event.set()

    def _ring(self, attempt: RingAttempt, picked: float) -> None:
        with self._lock:
            cancel = self._cancels.setdefault(attempt.id, threading.Event())
        try:
            self._ring_once(attempt, picked, cancel)
        finally:
            with self._lock:
                self._cancels.pop(attempt.id, None)

    def _ring_once(self, attempt: RingAttempt, picked: float, cancel: threading.Event) -> None:
        acd = self._acd()
        target = self._target_of(attempt.offer.extension)
        if target is None:
            log.warning("seat %s is not registered: cannot ring it", attempt.offer.extension)
            acd.ring_failed(attempt, Disposition.FAILED)
            return
        self.ring_delays_ms.append(1000 * (time.monotonic() - picked))
        try:
            leg = self._dial(target, ring_timeout=attempt.timeout_s, cancel=cancel)
        except CallFailed as failure:
            acd.ring_failed(attempt, failure.disposition)
            return
        except Exception:
            log.exception("dialling seat %s failed", attempt.offer.extension)
            acd.ring_failed(attempt, Disposition.FAILED)
            return
        if cancel.is_set() or not acd.ring_answered(attempt, leg):
            leg.hangup()
