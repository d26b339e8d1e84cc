"""The stuck-state reconciler (issue 17): each mismatch between what the queue and the
operators' rows believe and the calls that exist is made on purpose, one pass is run on an
injected clock, and the repair is checked — the state, its stored move, the count and the
log line; a healthy call and operator are left alone. The real queue engine on the operators
stored in the database (``DbAgentPool``), a fake list of the edge's live calls; SQLite and
PostgreSQL, real commits."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, AgentStateChange, NotReadyReason, Role
from accounts.service import create_user
from core.bell import LocalBell
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, saved_id, session_scope, table_of
from core.runtime import SessionFactory
from hotline.calls import recovery
from hotline.calls.agent_pool import DbAgentPool
from hotline.calls.reconciler import KINDS, Reconciler
from hotline.calls.recovery import EDGE_LOST
from hotline.tables import metadata
from telephony.acd import Acd, AcdConfig, Outcome, RingAttempt
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome, SipEdgeRecord
from tests.conftest import wait_until
from tests.telephony.fakes import FakeCall

HERE, OTHER, DEAD = "edge-here", "edge-other", "edge-dead"
WRAP_UP_S = 15.0


class Ticks:  # the engine's monotonic seconds
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedRinger:
    def __init__(self) -> None:
        self.rings: list[RingAttempt] = []
        self.cancelled: list[RingAttempt] = []

    def ring(self, attempt: RingAttempt) -> None:
        self.rings.append(attempt)

    def cancel(self, attempt: RingAttempt) -> None:
        self.cancelled.append(attempt)


@dataclass
class World:
    factory: SessionFactory
    clock: FrozenClock
    ticks: Ticks
    acd: Acd
    ringer: ScriptedRinger
    reconciler: Reconciler
    ids: dict[str, int]
    live: set[str] = field(default_factory=set)

    def agent(self, name: str) -> agents.Agent:
        with session_scope(self.factory) as session:
            return agents.status(session, self.ids[name], self.clock.now())

    def moves(self, name: str) -> list[tuple[str, str, str]]:
        with session_scope(self.factory) as session:
            return [
                (c.from_state.value, c.to_state.value, c.source)
                for c in agents.changes_of(session, self.ids[name])
            ]

    def record(self, call_id: str) -> CallRecord:
        with session_scope(self.factory) as session:
            found = session.scalars(
                select(CallRecord).where(col(CallRecord.call_id) == call_id)
            ).one()
            session.expunge(found)
            return found

    def add_call(self, call_id: str, *, edge: str | None = HERE, **values: object) -> None:
        now = self.clock.now()
        data = {
            "call_id": call_id,
            "direction": CallDirection.INBOUND,
            "arrived_at": now,
            "created_at": now,
            "updated_at": now,
            "edge_id": edge,
            **values,
        }
        with session_scope(self.factory) as session:
            session.add(CallRecord.model_validate(data))

    def set_call(self, call_id: str, **values: object) -> None:
        table = table_of(CallRecord)
        with session_scope(self.factory) as session:
            session.execute(update(table).where(table.c.call_id == call_id).values(**values))

    def hold(self, name: str, call_key: str, *, answer: bool = True) -> None:
        """The operator rung (and on) a call the engine knows nothing of."""
        with session_scope(self.factory) as session:
            others = [
                i
                for n, i in self.ids.items()
                if n != name
                and agents.status(session, i, self.clock.now()).state is AgentState.ready
            ]
            for user_id in others:  # so that reserve picks this one
                agents.set_not_ready(session, user_id, NotReadyReason.meeting, self.clock.now())
            rung = agents.reserve(session, [], call_key, self.clock.now())
            assert rung is not None and rung.user_id == self.ids[name]
            if answer:
                agents.answered(session, rung.user_id, call_key, self.clock.now())
            for user_id in others:
                agents.set_ready(session, user_id, self.clock.now())

    def beat(self, *edges: str) -> None:
        for edge in edges:
            recovery.beat(self.factory, edge_id=edge, now=self.clock.now())

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds=seconds)
        self.ticks.now += seconds
        self.beat(HERE, OTHER)


@pytest.fixture
def world(fresh_db_url: str, clock: FrozenClock):
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    bell = LocalBell()
    ticks, ringer = Ticks(), ScriptedRinger()
    pool = DbAgentPool(factory, clock=clock, wrap_up_s=WRAP_UP_S, bell=bell, monotonic=ticks)
    acd = Acd(
        pool=pool,
        ringer=ringer,
        config=AcdConfig(ring_timeout_s=10.0, retry_pause_s=1.0, overflow_after_s=None),
        clock=ticks,
    )
    pool.watch(acd.wake)
    now = clock.now()
    with session_scope(factory) as session:
        for edge in (HERE, OTHER, DEAD):
            session.add(SipEdgeRecord(id=edge, host=edge, pid=1, started_at=now, heartbeat_at=now))
        ids = {}
        for n, name in enumerate(("li", "wang")):
            user, _ = create_user(
                session, username=name, display_name=name, role=Role.operator, now=now
            )
            session.flush()
            agents.sign_in(session, user, f"80{n + 1:02d}", "", now)
            agents.set_ready(session, saved_id(user), now)
            ids[name] = saved_id(user)
    recovery.mark_stopped(factory, edge_id=DEAD, now=now)
    live: set[str] = set()
    reconciler = Reconciler(
        factory,
        clock=clock,
        wrap_up_s=WRAP_UP_S,
        edge_id=HERE,
        engine=acd,
        live_calls=lambda: sorted(live),
        bell=bell,
    )
    clock.advance(seconds=1)
    yield World(factory, clock, ticks, acd, ringer, reconciler, ids, live)
    reconciler.stop()
    acd.stop()
    engine.dispose()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _only(world: World, kind: str, n: int = 1) -> None:
    assert world.reconciler.counts[kind] == n
    assert sum(world.reconciler.counts.values()) == n, world.reconciler.counts


# ---------------------------------------------------------------- the engine vs the edge


def test_given_a_waiting_caller_gone_from_the_edge_when_two_passes_miss_it_then_abandoned(
    world, caplog
):
    with session_scope(world.factory) as session:  # nobody free: the call waits
        for user_id in world.ids.values():
            agents.set_not_ready(session, user_id, NotReadyReason.meeting, world.clock.now())
    world.live.update({"waiting@edge", "staying@edge"})
    world.acd.enqueue("waiting@edge")
    world.acd.enqueue("staying@edge")
    assert world.reconciler.run_once() == []  # the first sample
    world.live.discard("waiting@edge")  # the caller hung up; the flow never said so
    assert world.reconciler.run_once() == []  # one sample missing it: its flow's to report
    [repair] = world.reconciler.run_once()
    assert (repair.kind, repair.call_key) == ("caller_gone", "waiting@edge")
    assert world.acd.outcomes[Outcome.ABANDONED] == 1
    assert world.acd.position("waiting@edge") is None
    assert world.acd.position("staying@edge") == 1  # a live one is left alone
    _only(world, "caller_gone")
    assert any("stuck state: caller_gone (call waiting@edge" in m for m in _warnings(caplog))


def test_given_a_bridged_call_gone_from_the_edge_when_reconciled_then_the_operator_wraps_up(
    world, caplog
):
    world.live.add("bridged@edge")
    world.acd.enqueue("bridged@edge")
    (ring,) = world.ringer.rings
    assert world.acd.ring_answered(ring, FakeCall(call_id="leg"))
    assert world.agent("li").state is AgentState.on_call
    world.reconciler.run_once()
    world.live.clear()
    world.reconciler.run_once()
    assert world.reconciler.run_once()[0].kind == "bridged_call_gone"
    li = world.agent("li")
    assert (li.state, li.call_key) == (AgentState.wrap_up, "bridged@edge")
    assert world.moves("li")[-1] == ("on_call", "wrap_up", "acd")  # as the call's end would
    assert world.acd.snapshot()["bridged"] == {}
    _only(world, "bridged_call_gone")
    assert any("bridged_call_gone (call bridged@edge" in m for m in _warnings(caplog))


def test_given_a_ring_past_its_deadline_that_nobody_reported_then_the_agent_is_missed(
    world, caplog
):
    world.live.add("rung@edge")
    world.acd.enqueue("rung@edge")
    (ring,) = world.ringer.rings
    world.later(10.0)
    assert world.reconciler.run_once() == []  # within the ring's grace
    world.later(1.0)  # the engine's timer never fired (run_due not called)
    [repair] = world.reconciler.run_once()
    assert (repair.kind, repair.agent_id) == ("ring_overdue", str(world.ids["li"]))
    li = world.agent("li")
    assert (li.state, li.reason) == (AgentState.not_ready, NotReadyReason.missed)
    assert world.ringer.cancelled == [ring]
    _only(world, "ring_overdue")
    assert any("ring_overdue" in m for m in _warnings(caplog))


# ---------------------------------------------------------------- operators vs the calls


def test_given_an_operator_on_a_call_whose_record_ended_then_wrap_up_runs_from_its_end(
    world, caplog
):
    world.add_call("ended@edge")
    world.hold("li", "ended@edge")
    world.later(60)
    world.set_call("ended@edge", ended_at=world.clock.now())
    world.later(5)
    assert world.reconciler.run_once() == []  # its flow may report it yet
    world.later(6)
    [repair] = world.reconciler.run_once()
    assert (repair.kind, repair.call_key) == ("agent_call_ended", "ended@edge")
    li = world.agent("li")
    assert li.state is AgentState.wrap_up
    assert li.wrap_up_until == world.clock.now() + timedelta(seconds=WRAP_UP_S - 11)
    assert world.moves("li")[-1] == ("on_call", "wrap_up", "reconciler")
    _only(world, "agent_call_ended")
    assert (
        f"reconciler repaired a stuck state: agent_call_ended (call ended@edge, agent "
        f"{world.ids['li']})" in _warnings(caplog)
    )


def test_given_an_operator_on_a_call_that_ended_long_ago_then_ready_at_once(world):
    world.add_call("old@edge")
    world.hold("wang", "old@edge")
    world.set_call("old@edge", ended_at=world.clock.now())
    world.later(3600)
    assert world.reconciler.run_once()[0].kind == "agent_call_ended"
    wang = world.agent("wang")
    assert (wang.state, wang.call_key, wang.idle_since) == (
        AgentState.ready,
        None,
        world.clock.now(),
    )
    with session_scope(world.factory) as session:
        change = session.scalars(
            select(AgentStateChange).order_by(col(AgentStateChange.id).desc())
        ).first()
    assert change is not None
    assert (change.to_state, change.call_key, change.source) == (
        AgentState.ready,
        "old@edge",
        "reconciler",
    )


def test_given_a_ringing_operator_for_this_edge_s_call_the_engine_never_held_then_ready(
    world, caplog
):
    world.add_call("phantom@edge")
    world.hold("li", "phantom@edge", answer=False)
    before = world.agent("li")
    world.live.add("phantom@edge")
    world.later(11)
    assert world.reconciler.run_once() == []  # a first sample
    assert world.reconciler.run_once() == []  # on the edge: the call controls' (a transfer)
    world.live.clear()
    assert world.reconciler.run_once() == []  # the previous sample still had it
    [repair] = world.reconciler.run_once()
    assert repair.kind == "agent_call_unknown"
    li = world.agent("li")
    assert (li.state, li.idle_since) == (AgentState.ready, before.idle_since)  # kept its place
    assert world.moves("li")[-1] == ("ringing", "ready", "reconciler")
    _only(world, "agent_call_unknown")
    assert any("agent_call_unknown (call phantom@edge" in m for m in _warnings(caplog))


def test_given_an_operator_on_a_call_with_no_record_then_freed_after_the_grace(world, caplog):
    world.hold("li", "never-existed@edge")
    world.later(59)
    assert world.reconciler.run_once() == []
    world.later(2)
    [repair] = world.reconciler.run_once()
    assert repair.kind == "agent_call_missing"
    li = world.agent("li")
    assert li.state is AgentState.wrap_up  # the call's end is now: a whole wrap-up
    assert li.wrap_up_until == world.clock.now() + timedelta(seconds=WRAP_UP_S)
    _only(world, "agent_call_missing")
    assert any("agent_call_missing" in m for m in _warnings(caplog))


def test_given_an_operator_on_a_dead_edge_s_call_then_left_to_recovery_until_the_bound(world):
    world.add_call("lost@edge", edge=DEAD)
    world.add_call("elsewhere@edge", edge=OTHER)
    world.hold("li", "lost@edge")
    world.hold("wang", "elsewhere@edge")
    world.later(600)
    assert world.reconciler.run_once() == []  # crash recovery's to close first
    world.later(301)
    [repair] = world.reconciler.run_once()
    assert (repair.kind, repair.call_key) == ("agent_call_edge_dead", "lost@edge")
    assert world.agent("li").state is AgentState.wrap_up
    # A call of another edge that still beats is that edge's: left alone however long.
    assert world.agent("wang").state is AgentState.on_call
    _only(world, "agent_call_edge_dead")


def test_given_a_healthy_bridged_call_and_operators_then_nothing_is_touched(world, caplog):
    world.add_call("healthy@edge")
    world.live.add("healthy@edge")
    world.acd.enqueue("healthy@edge")
    (ring,) = world.ringer.rings
    assert world.acd.ring_answered(ring, FakeCall(call_id="leg"))
    with session_scope(world.factory) as session:  # a transfer to wang: the engine's unaware
        agents.ring_for(session, world.ids["wang"], "healthy@edge", world.clock.now())
    moves = (world.moves("li"), world.moves("wang"))
    for n in range(3):
        world.later(1200)  # however long the call
        assert world.reconciler.run_once() == []
        if n == 0:
            with session_scope(world.factory) as session:  # wang answers the transfer
                agents.answered(session, world.ids["wang"], "healthy@edge", world.clock.now())
            moves = (world.moves("li"), world.moves("wang"))
    assert world.agent("li").state is AgentState.on_call
    assert world.agent("wang").state is AgentState.on_call
    assert (world.moves("li"), world.moves("wang")) == moves
    assert set(world.reconciler.counts) == set(KINDS)
    assert sum(world.reconciler.counts.values()) == 0
    assert _warnings(caplog) == []


# ---------------------------------------------------------------- wrap-ups and queued records


def test_given_a_wrap_up_nobody_ended_then_ready_and_a_due_one_ends_on_time_uncounted(
    world, caplog
):
    for name in ("li", "wang"):
        world.hold(name, f"{name}@edge")
    with session_scope(world.factory) as session:
        agents.call_ended(session, world.ids["li"], "li@edge", world.clock.now())
    world.later(10)
    with session_scope(world.factory) as session:
        agents.call_ended(session, world.ids["wang"], "wang@edge", world.clock.now())
    world.later(WRAP_UP_S - 2)  # li's wrap-up ended 8 s ago (lost); wang's in 2 s
    world.live.update({"li@edge", "wang@edge"})
    [repair] = world.reconciler.run_once()
    assert (repair.kind, repair.call_key) == ("wrap_up_overdue", "li@edge")
    assert world.agent("li").state is AgentState.ready
    assert world.moves("li")[-1] == ("wrap_up", "ready", "reconciler")
    assert world.agent("wang").state is AgentState.wrap_up
    world.later(2)
    assert world.reconciler.end_due_wrap_ups() == 1  # the timer here, on time
    assert world.moves("wang")[-1] == ("wrap_up", "ready", "acd")
    _only(world, "wrap_up_overdue")
    assert sum("wrap_up_overdue" in m for m in _warnings(caplog)) == 1


def test_given_a_queued_record_whose_call_ended_then_abandoned_with_its_wait(world, caplog):
    queued_at = world.clock.now()
    world.add_call("hung-up@edge", queued_at=queued_at)
    world.add_call("answered@edge", queued_at=queued_at)
    world.add_call("still-waiting@edge", queued_at=queued_at)
    world.add_call("just-ended@edge", queued_at=queued_at)
    world.add_call("edge-lost@edge", queued_at=queued_at, edge=DEAD, end_reason=EDGE_LOST)
    world.later(40)
    ended = world.clock.now()
    world.set_call("hung-up@edge", ended_at=ended)
    world.set_call("edge-lost@edge", ended_at=ended)
    world.set_call(
        "answered@edge", ended_at=ended, queue_left_at=ended, queue_outcome=QueueOutcome.agent
    )
    world.later(9)
    world.set_call("just-ended@edge", ended_at=world.clock.now())
    world.later(1)
    repairs = world.reconciler.run_once()
    assert sorted((r.kind, r.call_key) for r in repairs) == [
        ("queue_left_open", "edge-lost@edge"),
        ("queue_left_open", "hung-up@edge"),
    ]
    assert world.record("edge-lost@edge").queue_outcome is QueueOutcome.lost  # not the caller's
    hung_up = world.record("hung-up@edge")
    assert (hung_up.queue_outcome, hung_up.queue_left_at) == (QueueOutcome.abandoned, ended)
    assert (hung_up.queue_left_at - queued_at).total_seconds() == 40  # the wait it is listed by
    assert world.record("answered@edge").queue_outcome is QueueOutcome.agent  # never over
    assert world.record("still-waiting@edge").queue_left_at is None
    assert world.record("just-ended@edge").queue_left_at is None  # its own report may come
    _only(world, "queue_left_open", 2)
    assert any("queue_left_open (call hung-up@edge" in m for m in _warnings(caplog))
    assert world.reconciler.run_once() == []  # once


# ---------------------------------------------------------------- the thread


def test_the_thread_repairs_at_its_first_pass_and_stops_cleanly(world):
    world.hold("li", "never-existed@edge")
    world.later(120)
    world.reconciler.every_s = 0.05
    world.reconciler.start()
    wait_until(lambda: world.reconciler.counts["agent_call_missing"] == 1, 5, message="repair")
    wait_until(lambda: world.reconciler.passes >= 3, 5, message="passes on schedule")
    thread = world.reconciler._thread
    world.reconciler.stop()
    assert thread is not None and not thread.is_alive()
    assert world.agent("li").state is AgentState.wrap_up
