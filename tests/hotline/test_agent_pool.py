"""The queue engine on the operators stored in the database (``DbAgentPool``): the call rings
the longest-idle ready operator's seat, an unanswered ring makes them not ready (missed) and
rings the next, an answer puts them on the call and its end into wrap-up; and an operator who
becomes ready in another session (the console, another process) wakes a waiting call through
the doorbell at once — no polling. SQLite and PostgreSQL, real commits."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from accounts import agents
from accounts.models import AgentState, NotReadyReason, Role, User
from accounts.service import create_user
from core.bell import LocalBell
from core.db import make_engine, make_session_factory, saved_id, session_scope
from hotline.calls.agent_pool import DbAgentPool
from hotline.tables import metadata
from telephony.acd import Acd, AcdConfig, Outcome, RingAttempt
from telephony.endpoint import Disposition
from tests.telephony.fakes import FakeCall


class Clock:  # the engine's monotonic seconds
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


def _operator(session: Session, name: str, clock) -> User:
    user, _ = create_user(
        session, username=name, display_name=name, role=Role.operator, now=clock.now()
    )
    session.flush()
    return user


@pytest.fixture
def world(fresh_db_url, clock):
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    bell = LocalBell()
    ticks, ringer, results = Clock(), ScriptedRinger(), []
    pool = DbAgentPool(factory, clock=clock, wrap_up_s=15.0, bell=bell, monotonic=ticks)
    acd = Acd(
        pool=pool,
        ringer=ringer,
        config=AcdConfig(ring_timeout_s=10.0, retry_pause_s=1.0, overflow_after_s=None),
        clock=ticks,
        on_result=results.append,
    )
    pool.watch(acd.wake)
    with session_scope(factory) as session:
        ids = {}
        for n, name in enumerate(("li", "wang")):
            user = _operator(session, name, clock)
            agents.sign_in(session, user, f"80{n + 1:02d}", "", clock.now(), bell=bell)
            agents.set_ready(session, saved_id(user), clock.now(), bell=bell)
            clock.advance(seconds=5)  # li has been idle longest
            ids[name] = saved_id(user)
    yield factory, acd, ringer, results, ids, ticks, bell
    acd.stop()
    engine.dispose()


def _state(factory, user_id: int, clock) -> agents.Agent:
    with session_scope(factory) as session:
        return agents.status(session, user_id, clock.now())


def test_a_missed_ring_rings_the_next_operator_and_the_answer_and_end_are_stored(world, clock):
    factory, acd, ringer, results, ids, ticks, _ = world
    acd.enqueue("call-1@edge")
    (first,) = ringer.rings
    assert (first.offer.agent_id, first.offer.extension) == (str(ids["li"]), "8001")
    assert _state(factory, ids["li"], clock).state is AgentState.ringing

    acd.ring_failed(first, Disposition.NO_ANSWER)
    li = _state(factory, ids["li"], clock)
    assert (li.state, li.reason) == (AgentState.not_ready, NotReadyReason.missed)
    ticks.now += 1.0  # the retry pause
    acd.run_due()
    second = ringer.rings[-1]
    assert second.offer.agent_id == str(ids["wang"])

    assert acd.ring_answered(second, FakeCall(call_id="wang-leg"))
    assert _state(factory, ids["wang"], clock).state is AgentState.on_call
    acd.finished("call-1@edge")
    wang = _state(factory, ids["wang"], clock)
    assert wang.state is AgentState.wrap_up and wang.call_key == "call-1@edge"
    assert [r.outcome for r in results] == [Outcome.ANSWERED]
    assert results[0].missed_agents == (str(ids["li"]),)


def test_an_operator_ready_in_another_session_takes_the_waiting_call_at_once(world, clock):
    factory, acd, ringer, _, ids, _, bell = world
    with session_scope(factory) as session:  # both busy elsewhere: not ready
        for user_id in ids.values():
            agents.set_not_ready(session, user_id, NotReadyReason.meeting, clock.now(), bell=bell)
    acd.enqueue("call-2@edge")
    assert ringer.rings == []  # signed in, none ready: the call waits
    with session_scope(factory) as session:  # wang presses "ready" on the console
        agents.set_ready(session, ids["wang"], clock.now(), bell=bell)
    # The bell rang after that commit and woke the engine: no timer, no poll.
    (ring,) = ringer.rings
    assert ring.offer.agent_id == str(ids["wang"]) and ring.call_key == "call-2@edge"


def test_a_caller_who_leaves_while_the_seat_rings_leaves_the_operator_first_in_line(world, clock):
    factory, acd, ringer, results, ids, _, _ = world
    acd.enqueue("call-3@edge")
    (ring,) = ringer.rings
    acd.abandon("call-3@edge")
    assert ringer.cancelled == [ring]
    li = _state(factory, ids["li"], clock)
    assert li.state is AgentState.ready
    acd.enqueue("call-4@edge")
    assert ringer.rings[-1].offer.agent_id == str(ids["li"])  # still the longest idle
    assert [r.outcome for r in results] == [Outcome.ABANDONED]


def test_with_nobody_signed_in_the_call_overflows(world, clock):
    factory, acd, ringer, results, ids, _, bell = world
    with session_scope(factory) as session:
        for user_id in ids.values():
            agents.sign_out(session, user_id, clock.now(), bell=bell)
    entry = acd.enqueue("call-5@edge")
    assert ringer.rings == []
    assert [r.outcome for r in results] == [Outcome.OVERFLOW]
    assert entry is not None


def test_a_wrap_up_ending_is_the_engine_s_next_deadline(world, clock):
    factory, acd, ringer, _, ids, ticks, _ = world
    acd.enqueue("call-6@edge")
    (ring,) = ringer.rings
    assert acd.ring_answered(ring, FakeCall(call_id="li-leg"))
    acd.finished("call-6@edge")
    pool = acd.pool
    assert pool.next_change_at() == pytest.approx(ticks.now + 15.0)


def test_whether_anyone_is_signed_in_is_kept_until_the_bell_says_an_operator_moved(world, clock):
    """Every new call asks; the answer is kept and forgotten at each ring of the bell."""
    factory, acd, _, _, ids, _, bell = world
    pool = acd.pool
    assert pool.signed_in(frozenset()) == 2
    with session_scope(factory) as session:  # a move nobody rang (no bell): not seen yet
        agents.sign_out(session, ids["wang"], clock.now())
    assert pool.signed_in(frozenset()) == 2
    with session_scope(factory) as session:  # a move rung after its commit: seen at once
        agents.sign_out(session, ids["li"], clock.now(), bell=bell)
    assert pool.signed_in(frozenset()) == 0
