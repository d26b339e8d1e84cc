"""The queue engine (ACD): which waiting call rings which free agent, and when the robot or a
callback takes over instead.

It is pure and event-driven: no database, no polling. What it knows of agents it asks an
``AgentPool`` (``telephony.acd_memory`` in tests; ``hotline.calls.agent_pool`` in the platform);
ringing a seat is a ``Ringer``'s job (``telephony.acd_dial.DialRinger``: the edge's ``dial`` in a
thread). A call is offered an agent the moment it joins and the moment something changes: an
agent becomes ready (the pool's bell calls ``wake``), a ring is answered, missed or fails, a
call leaves.
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

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

from telephony.acd_types import (
    REPEAT_CALLER_PRIORITY,
    URGENT_PRIORITY,
    AcdConfig,
    AgentOffer,
    AgentPool,
    Clock,
    Connected,
    Outcome,
    Overflowed,
    OverflowReason,
    QueueEntry,
    QueueResult,
    Repair,
    RingAttempt,
    Ringer,
    Ringing,
    call_priority,
)
from telephony.endpoint import Call, Disposition

log = logging.getLogger(__name__)

_MAX_PASSES = 50
"""Passes of one ``_dispatch`` at most: each further pass follows a move made in the one
before (a reservation), so it ends when the agents or the calls do; the bound only keeps a
misbehaving pool from spinning."""

__all__ = [
    "Acd",
    "AcdConfig",
    "AgentOffer",
    "AgentPool",
    "Clock",
    "Connected",
    "Outcome",
    "OverflowReason",
    "Overflowed",
    "QueueEntry",
    "QueueResult",
    "REPEAT_CALLER_PRIORITY",
    "Repair",
    "RingAttempt",
    "Ringer",
    "Ringing",
    "URGENT_PRIORITY",
    "call_priority",
]


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
            with self._cond:  # looked up and finished at once: the flow may finish it first
                entry = self._bridged.get(key)
                if entry is None:
                    continue
                self.finished(key)
            agent = entry.agent.agent_id if entry.agent else None
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
