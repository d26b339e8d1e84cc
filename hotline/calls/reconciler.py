"""The queue's stuck-state reconciler: what the queue engine and the operators' rows believe,
compared with the calls that really exist, every ``settings.acd.reconcile_every_s``.

Stuck states are what call-centre engines are known to die of — a caller shown waiting for
an hour, an operator reserved or "on call" for a call long gone, a wrap-up nobody ends — and
the cause is always a report that never came (a thread that died, a process killed, a
database away for a moment). The normal paths are event-driven and say nothing about what
they missed; this looks, on a slow timer of its own, and repairs each mismatch with one
warning line and a count per kind (``Reconciler.counts``; the project has no Prometheus
metrics, so the counts live on the object and in the log):

1. the engine vs this edge's live calls (``Acd.reconcile``): ``caller_gone``,
   ``bridged_call_gone``, ``ring_overdue`` (the engine logs these lines itself);
2. operators ringing or on a call vs the calls: ``agent_call_ended`` (its record has ended),
   ``agent_call_unknown`` (this edge's call, gone from the edge, that the engine does not
   hold for them), ``agent_call_missing`` (no record at all after a grace),
   ``agent_call_edge_dead`` (the call's edge died and crash recovery has not closed it
   within a generous bound; before that, recovery closes the call and frees them);
3. ``wrap_up_overdue``: a wrap-up past its end that nobody ended;
4. ``queue_left_open``: a call record still "in the queue" whose call has ended, written
   abandoned with its wait (``lost`` when crash recovery closed it: the platform's fault,
   not the caller's), never over an outcome written meanwhile.

Every move is a compare-and-set on what was read, so a repair never overrides a report that
came after all, and two edges reconciling the same rows never both count one repair. Each
check leaves a fresh state alone for a while (``Bounds``): the normal path reports within
milliseconds, a repair only after ``settle_s``.

Ending wrap-ups on time is also done here: nothing else does when no call waits (the engine
ends them when it picks an agent, the console when an operator looks), and the occupancy
figures are made of the moves' times. The thread wakes at the next wrap-up's end, and at
every "agents" doorbell ring to look again; what it still misses is case 3.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from accounts import agents
from accounts.models import AgentState
from core.bell import Bell, Unsubscribe
from core.clock import Clock
from core.db import session_scope, table_of
from core.runtime import SessionFactory
from core.settings import Settings
from hotline.calls.recovery import EDGE_LOST
from telephony.acd import Acd, Repair
from telephony.models import CallRecord, QueueOutcome, SipEdgeRecord

log = logging.getLogger(__name__)

ENGINE_KINDS = ("caller_gone", "bridged_call_gone", "ring_overdue")
KINDS = (
    *ENGINE_KINDS,
    "agent_call_ended",
    "agent_call_unknown",
    "agent_call_missing",
    "agent_call_edge_dead",
    "wrap_up_overdue",
    "queue_left_open",
)
_HELD = (AgentState.ringing, AgentState.on_call)
_MIN_WAIT_S = 0.05  # a wrap-up that cannot be ended (a race lost) is not spun on


@dataclass(frozen=True)
class Bounds:
    """How long each kind of state is left to its normal path before it counts as stuck."""

    settle_s: float = 10.0  # a call's end reported by its own flow (milliseconds, normally)
    record_grace_s: float = 60.0  # an operator's call with no record at all
    edge_stale_after_s: float = 60.0  # settings.telephony.edge_stale_after_s
    dead_edge_grace_s: float = 900.0  # a dead edge's calls are crash recovery's until then
    wrap_up_late_s: float = 5.0  # a wrap-up past its end that the timer here missed
    queue_lookback_s: float = 2 * 86400.0  # queued records looked at (by arrival: indexed)
    batch: int = 500  # records repaired in one pass at most


@dataclass(frozen=True)
class _Call:
    ended_at: datetime | None
    edge_id: str | None


class Reconciler:
    """One per ``hotline sip`` process. ``run_once`` is a whole pass (tests call it after
    moving their clock); ``start`` runs passes on a thread until ``stop``."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        clock: Clock,
        wrap_up_s: float,
        every_s: float = 30.0,
        edge_id: str | None = None,
        engine: Acd | None = None,
        live_calls: Callable[[], Iterable[str]] | None = None,
        bell: Bell | None = None,
        bounds: Bounds | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s <= 0:
            raise ValueError("the reconciler's period must be > 0 s")
        self._factory = session_factory
        self._clock = clock
        self._wrap_up_s = wrap_up_s
        self.every_s = every_s
        self.edge_id = edge_id
        self.engine = engine
        self._live_calls = live_calls
        self._bell = bell
        self.bounds = bounds or Bounds()
        self._monotonic = monotonic
        self.counts: Counter[str] = Counter(dict.fromkeys(KINDS, 0))
        self.passes = 0
        # The edge's calls at the previous pass: a call is taken for gone only when two
        # successive samples miss it (one ending now is its own flow's to report).
        self._previous_live: set[str] | None = None
        self._maybe_live: set[str] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Unsubscribe | None = None

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> list[Repair]:
        """Every check once, then the wrap-ups that are due. A check that fails (the
        database away) is logged and the others still run: the next pass tries again."""
        repairs: list[Repair] = []
        try:
            self._maybe_live = self._sample_edge()
        except Exception:
            log.exception("listing the edge's calls failed")
            self._maybe_live = None
        for check in (
            self._engine_vs_edge,
            self._agents_vs_calls,
            self._lost_wrap_ups,
            self._queue_left_open,
        ):
            try:
                repairs += check(self._clock.now())
            except Exception:
                log.exception("the reconciler's %s check failed", check.__name__.strip("_"))
        for repair in repairs:
            self.counts[repair.kind] += 1
            if repair.kind not in ENGINE_KINDS:  # Acd.reconcile wrote their lines
                log.warning(
                    "reconciler repaired a stuck state: %s (call %s, agent %s)",
                    repair.kind,
                    repair.call_key,
                    repair.agent_id,
                )
        self.end_due_wrap_ups()
        self.passes += 1
        return repairs

    def _sample_edge(self) -> set[str] | None:
        """The calls that may still exist on this edge: in this sample or the previous one
        (a call ending now is its own flow's to report). None until there are two."""
        if self._live_calls is None:
            return None
        live = set(self._live_calls())
        previous, self._previous_live = self._previous_live, live
        return None if previous is None else live | previous

    def _engine_vs_edge(self, now: datetime) -> list[Repair]:
        if self.engine is None or self._maybe_live is None:
            return []
        return self.engine.reconcile(self._maybe_live)

    def _agents_vs_calls(self, now: datetime) -> list[Repair]:
        # The rows are read before the engine's snapshot: a ring or an answer the engine
        # makes is stored under its lock before the snapshot can be taken, so an operator
        # read as held for this edge's call is in the snapshot unless the engine let go —
        # and then it moved them, and the compare-and-set below finds a newer version.
        with session_scope(self._factory) as session:
            held = [a for a in agents.list_agents(session) if a.state in _HELD]
            if not held:
                return []
            calls = _calls(session, {a.call_key for a in held if a.call_key})
            live_edges = _live_edges(
                session,
                {c.edge_id for c in calls.values() if c.edge_id},
                now - timedelta(seconds=self.bounds.edge_stale_after_s),
            )
        snapshot = self.engine.snapshot() if self.engine is not None else None
        repairs = []
        for agent in held:
            verdict = self._verdict(agent, calls, live_edges, snapshot, now)
            if verdict is None:
                continue
            kind, ended_at = verdict
            wrap_until = ended_at + timedelta(seconds=self._wrap_up_s)
            with session_scope(self._factory) as session:
                moved = agents.free_from_lost_call(
                    session,
                    agent,
                    now,
                    wrap_up_until=wrap_until if self._wrap_up_s > 0 else None,
                    bell=self._bell,
                )
            if moved is not None:
                repairs.append(Repair(kind, agent.call_key or "", str(agent.user_id)))
        return repairs

    def _verdict(
        self,
        agent: agents.Agent,
        calls: dict[str, _Call],
        live_edges: set[str],
        snapshot: dict[str, Any] | None,
        now: datetime,
    ) -> tuple[str, datetime] | None:
        """Why ``agent`` is held by a call that is gone, and when that call ended (the
        wrap-up runs from there); None while it may still be real."""
        b = self.bounds
        held_s = (now - agent.since).total_seconds()
        call = calls.get(agent.call_key) if agent.call_key else None
        if call is None:
            return ("agent_call_missing", now) if held_s >= b.record_grace_s else None
        if call.ended_at is not None:
            if (now - call.ended_at).total_seconds() >= b.settle_s:
                return "agent_call_ended", call.ended_at
            return None
        if call.edge_id is not None and call.edge_id == self.edge_id:
            # A call still on the edge may hold operators the engine does not know of (a
            # transfer's target, rung and then on it, is the call controls'): it is theirs.
            maybe_live = self._maybe_live
            if maybe_live is None or agent.call_key in maybe_live:
                return None
            if held_s < b.settle_s or _engine_holds(snapshot, agent):
                return None
            return "agent_call_unknown", now
        if call.edge_id in live_edges:
            return None  # that edge's own reconciler looks after it
        return ("agent_call_edge_dead", now) if held_s >= b.dead_edge_grace_s else None

    def _lost_wrap_ups(self, now: datetime) -> list[Repair]:
        late_by = timedelta(seconds=self.bounds.wrap_up_late_s)
        with session_scope(self._factory) as session:
            before = {
                a.user_id: a.call_key
                for a in agents.list_agents(session)
                if a.state == AgentState.wrap_up
            }
            moved = agents.end_lost_wrap_ups(session, now, late_by=late_by, bell=self._bell)
        return [
            Repair("wrap_up_overdue", before.get(a.user_id) or "", str(a.user_id)) for a in moved
        ]

    def _queue_left_open(self, now: datetime) -> list[Repair]:
        b, table = self.bounds, table_of(CallRecord)
        with session_scope(self._factory) as session:
            rows = session.execute(
                select(table.c.call_id, table.c.queued_at, table.c.ended_at, table.c.end_reason)
                .where(
                    table.c.arrived_at >= now - timedelta(seconds=b.queue_lookback_s),
                    table.c.queued_at.is_not(None),
                    table.c.queue_left_at.is_(None),
                    table.c.ended_at <= now - timedelta(seconds=b.settle_s),
                )
                .order_by(table.c.arrived_at)
                .limit(b.batch)
            ).all()
            repairs = []
            for row in rows:
                done = session.execute(
                    update(table)
                    .where(table.c.call_id == row.call_id, table.c.queue_left_at.is_(None))
                    .values(
                        queue_left_at=max(row.ended_at, row.queued_at),
                        # Closed by crash recovery: the platform lost it, not the caller.
                        queue_outcome=QueueOutcome.lost
                        if row.end_reason == EDGE_LOST
                        else QueueOutcome.abandoned,
                        updated_at=now,
                    )
                )
                if done.rowcount == 1:  # type: ignore[attr-defined]  # a CursorResult's
                    repairs.append(Repair("queue_left_open", row.call_id, None))
        return repairs

    # ------------------------------------------------------------------ wrap-ups on time
    def end_due_wrap_ups(self) -> int:
        """Every wrap-up whose time is over becomes ready (the queue's own move, as when it
        picks an agent); how many."""
        try:
            with session_scope(self._factory) as session:
                moved = agents.end_wrap_ups(session, self._clock.now(), bell=self._bell)
        except Exception:
            log.exception("ending the wrap-ups that are over failed")
            return 0
        if moved:
            log.info("wrap-up over: %s ready", ", ".join(str(a.user_id) for a in moved))
        return len(moved)

    def _next_wrap_up_in(self) -> float | None:
        try:
            with session_scope(self._factory) as session:
                ends = agents.next_wrap_up_end(session)
        except Exception:
            log.exception("reading the next wrap-up's end failed")
            return None
        if ends is None:
            return None
        return max(0.0, (ends - self._clock.now()).total_seconds())

    # ------------------------------------------------------------------ the thread
    def start(self) -> Reconciler:
        """A pass now (states left by a previous process are repaired at once), then every
        ``every_s``; between passes, wrap-ups are ended when they are due."""
        self._stop.clear()
        if self._bell is not None:
            self._unsubscribe = self._bell.subscribe(agents.TOPIC, self._wake.set)
        self._thread = threading.Thread(target=self._run, name="acd-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
        self._thread = None

    def _run(self) -> None:
        next_pass = self._monotonic()
        while not self._stop.is_set():
            self._wake.clear()  # a ring from now on wakes the wait below
            try:
                if self._monotonic() >= next_pass:
                    self.run_once()
                    next_pass = self._monotonic() + self.every_s
                else:
                    self.end_due_wrap_ups()
                wait = next_pass - self._monotonic()
                wrap_up = self._next_wrap_up_in()
                if wrap_up is not None:
                    wait = min(wait, wrap_up)
            except Exception:  # a dead reconciler is the very failure it is here for
                log.exception("the reconciler's pass failed")
                next_pass = self._monotonic() + self.every_s
                wait = self.every_s
            self._wake.wait(max(_MIN_WAIT_S, wait))


def _calls(session: Any, keys: set[str]) -> dict[str, _Call]:
    if not keys:
        return {}
    table = table_of(CallRecord)
    rows = session.execute(
        select(table.c.call_id, table.c.ended_at, table.c.edge_id).where(
            table.c.call_id.in_(sorted(keys))
        )
    ).all()
    return {row.call_id: _Call(row.ended_at, row.edge_id) for row in rows}


def _live_edges(session: Any, edge_ids: set[str], stale_before: datetime) -> set[str]:
    """Those of ``edge_ids`` that still beat (the rest are dead, or gone without a row)."""
    if not edge_ids:
        return set()
    table = table_of(SipEdgeRecord)
    rows = session.execute(
        select(table.c.id).where(
            table.c.id.in_(sorted(edge_ids)),
            table.c.dead_at.is_(None),
            table.c.heartbeat_at >= stale_before,
        )
    ).all()
    return {row.id for row in rows}


def _engine_holds(snapshot: dict[str, Any] | None, agent: agents.Agent) -> bool:
    if snapshot is None or agent.call_key is None:
        return False
    held = snapshot["ringing"] if agent.state == AgentState.ringing else snapshot["bridged"]
    return bool(held.get(agent.call_key) == str(agent.user_id))


def start_reconciler(
    session_factory: SessionFactory,
    *,
    settings: Settings,
    clock: Clock,
    engine: Acd,
    edge: Any,
    edge_id: str,
    bell: Bell | None = None,
) -> Reconciler:
    """The reconciler of a ``hotline sip`` process, started; ``edge`` is its SipEdge, whose
    ``calls()`` are the calls that exist."""
    return Reconciler(
        session_factory,
        clock=clock,
        wrap_up_s=settings.acd.wrap_up_s,
        every_s=settings.acd.reconcile_every_s,
        edge_id=edge_id,
        engine=engine,
        live_calls=lambda: [call.call_id for call in edge.calls()],
        bell=bell,
        bounds=Bounds(edge_stale_after_s=settings.telephony.edge_stale_after_s),
    ).start()
