"""The queue engine on an injected clock: every path of the ring cycle, overflow, priority,
skills, abandon and the stuck-state repairs, with agents in memory and a scripted ringer."""

from __future__ import annotations

import threading
import time

import pytest

from core.settings import AcdSettings
from telephony.acd import (
    Acd,
    AcdConfig,
    Connected,
    Outcome,
    Overflowed,
    OverflowReason,
    QueueResult,
    RingAttempt,
    Ringing,
    call_priority,
)
from telephony.acd_memory import AgentState, MemoryAgentPool
from telephony.endpoint import Disposition
from tests.telephony.fakes import FakeCall


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedRinger:
    """Records rings; the test answers or fails them."""

    def __init__(self) -> None:
        self.rings: list[RingAttempt] = []
        self.cancelled: list[RingAttempt] = []

    def ring(self, attempt: RingAttempt) -> None:
        self.rings.append(attempt)

    def cancel(self, attempt: RingAttempt) -> None:
        self.cancelled.append(attempt)


class World:
    def __init__(self, *, wrap_up_s: float = 0.0, **config: object) -> None:
        self.clock = Clock()
        self.pool = MemoryAgentPool(clock=self.clock, wrap_up_s=wrap_up_s)
        self.ringer = ScriptedRinger()
        self.results: list[QueueResult] = []
        cfg = {"ring_timeout_s": 10.0, "retry_pause_s": 1.0, "ring_grace_s": 0.5, **config}
        self.acd = Acd(
            pool=self.pool,
            ringer=self.ringer,
            config=AcdConfig(**cfg),  # type: ignore[arg-type]
            clock=self.clock,
            on_result=self.results.append,
        )
        self.pool.on_change = self.acd.wake

    def agent(self, agent_id: str, *, skills: tuple[str, ...] = (), ready: bool = True) -> None:
        self.pool.sign_in(agent_id, f"80{len(self.pool.agents) + 1:02d}", skills)
        if ready:
            self.pool.set_ready(agent_id)
            self.clock.now += 1  # a distinct idle order

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.acd.run_due()


def events(entry) -> list:
    out = []
    while (event := entry.next_event()) is not None:
        out.append(event)
    return out


def test_given_a_ready_agent_when_a_call_joins_then_it_rings_at_once_and_an_answer_connects():
    w = World()
    w.agent("li")
    entry = w.acd.enqueue("c1")
    assert [r.offer.agent_id for r in w.ringer.rings] == ["li"]
    assert w.pool.state("li") is AgentState.RINGING
    leg = FakeCall(call_id="agent-leg")
    w.clock.now += 3
    assert w.acd.ring_answered(w.ringer.rings[0], leg) is True
    got = events(entry)
    assert isinstance(got[0], Ringing) and isinstance(got[1], Connected) and got[1].leg is leg
    assert w.pool.state("li") is AgentState.ON_CALL
    assert w.results[0].outcome is Outcome.ANSWERED and w.results[0].waited_s == 3
    w.clock.now += 120
    w.acd.finished("c1")
    assert w.pool.state("li") is AgentState.READY
    assert w.acd.average_handle_s() == 120


def test_given_an_unanswered_ring_then_the_agent_is_missed_and_the_next_rings_after_the_pause():
    w = World()
    w.agent("li")
    w.agent("wang")
    entry = w.acd.enqueue("c1")
    assert [r.offer.agent_id for r in w.ringer.rings] == ["li"]  # longest idle first
    w.advance(10.4)
    assert len(w.ringer.rings) == 1  # the ringer's own timeout has the grace to report
    w.advance(0.2)  # the engine's timer gives up on it
    assert w.ringer.cancelled == [w.ringer.rings[0]]
    assert w.pool.state("li") is AgentState.NOT_READY and w.pool.agents["li"].reason == "missed"
    assert len(w.ringer.rings) == 1  # the retry pause
    w.advance(1.0)
    assert [r.offer.agent_id for r in w.ringer.rings] == ["li", "wang"]
    assert w.acd.ring_answered(w.ringer.rings[1], FakeCall()) is True
    assert w.results[0].missed_agents == ("li",) and w.results[0].agent_id == "wang"
    # The whole cycle stayed inside the 15-second answer target.
    assert w.results[0].waited_s < 15
    # The first ring reported late is ignored, and a late answer is refused.
    w.acd.ring_failed(w.ringer.rings[0], Disposition.NO_ANSWER)
    assert w.acd.ring_answered(w.ringer.rings[0], FakeCall()) is False
    assert isinstance(events(entry)[-1], Connected)


def test_given_a_busy_seat_then_the_ringer_failure_moves_on_like_a_timeout():
    w = World(retry_pause_s=0.0)
    w.agent("li")
    w.agent("wang")
    w.acd.enqueue("c1")
    w.acd.ring_failed(w.ringer.rings[0], Disposition.BUSY)
    assert [r.offer.agent_id for r in w.ringer.rings] == ["li", "wang"]
    assert w.pool.state("li") is AgentState.NOT_READY


def test_given_all_agents_busy_then_position_and_wait_are_told_and_the_call_overflows_by_wait():
    w = World(overflow_after_s=60.0, default_handle_s=200.0)
    w.agent("li")
    w.acd.enqueue("c0")
    w.acd.ring_answered(w.ringer.rings[0], FakeCall())  # li is on call
    first = w.acd.enqueue("c1")
    second = w.acd.enqueue("c2")
    assert (w.acd.position("c1"), w.acd.position("c2")) == (1, 2)
    assert w.acd.expected_wait_s("c1") == 200 and w.acd.expected_wait_s("c2") == 400
    w.advance(59)
    assert events(first) == []
    w.advance(1)
    assert events(first) == [Overflowed(OverflowReason.WAITED)]
    assert events(second) == [Overflowed(OverflowReason.WAITED)]
    assert w.acd.position("c1") is None
    assert [r.outcome for r in w.results[1:]] == [Outcome.OVERFLOW, Outcome.OVERFLOW]
    assert w.results[1].waited_s == 60 and w.results[1].overflow is OverflowReason.WAITED


def test_given_a_long_queue_then_the_next_caller_overflows_at_once():
    w = World(overflow_queue_longer_than=2)
    w.agent("li", ready=False)  # signed in, not ready: nobody free but somebody there
    w.acd.enqueue("c1")
    w.acd.enqueue("c2")
    third = w.acd.enqueue("c3")
    assert events(third) == [Overflowed(OverflowReason.QUEUE_LONG)]
    assert w.acd.position("c2") == 2


def test_given_nobody_signed_in_then_the_call_overflows_and_when_the_last_leaves_the_waiting_do():
    w = World()
    night = w.acd.enqueue("c1")
    assert events(night) == [Overflowed(OverflowReason.NO_AGENTS)]
    w.agent("li", ready=False)
    waiting = w.acd.enqueue("c2")
    assert events(waiting) == []
    w.pool.sign_out("li")  # the bell rings: the engine sees nobody will come
    assert events(waiting) == [Overflowed(OverflowReason.NO_AGENTS)]


def test_given_overflow_when_no_agents_off_then_the_call_waits():
    w = World(overflow_when_no_agents=False, overflow_after_s=None)
    entry = w.acd.enqueue("c1")
    w.advance(3600)
    assert events(entry) == [] and w.acd.position("c1") == 1


def test_given_a_caller_hanging_up_while_waiting_then_abandoned_with_the_wait():
    w = World()
    w.agent("li", ready=False)
    w.acd.enqueue("c1")
    w.clock.now += 42
    result = w.acd.abandon("c1")
    assert result is not None and result.outcome is Outcome.ABANDONED and result.waited_s == 42
    assert w.acd.abandon("c1") is None  # once


def test_given_a_caller_hanging_up_while_an_agent_rings_then_the_agent_is_released_not_missed():
    w = World()
    w.agent("li")
    w.acd.enqueue("c1")
    w.acd.abandon("c1")
    assert w.ringer.cancelled == [w.ringer.rings[0]]
    assert w.pool.state("li") is AgentState.READY
    assert w.acd.ring_answered(w.ringer.rings[0], FakeCall()) is False


def test_given_the_callback_key_then_the_call_leaves_as_a_callback():
    w = World()
    w.agent("li", ready=False)
    w.acd.enqueue("c1")
    w.clock.now += 5
    result = w.acd.callback("c1")
    assert result is not None and result.outcome is Outcome.CALLBACK and result.waited_s == 5


def test_given_priorities_then_urgent_and_repeat_callers_go_first_and_order_holds_otherwise():
    w = World()
    w.agent("li", ready=False)
    w.acd.enqueue("plain-1")
    w.clock.now += 1
    w.acd.enqueue("repeat", priority=call_priority(dialled="12345", repeat_caller=True))
    w.acd.enqueue(
        "urgent",
        priority=call_priority(dialled="110", repeat_caller=False, urgent_lines=["110"]),
    )
    w.acd.enqueue("plain-2")
    assert [w.acd.position(k) for k in ("urgent", "repeat", "plain-1", "plain-2")] == [1, 2, 3, 4]
    w.pool.set_ready("li")
    assert w.ringer.rings[-1].call_key == "urgent"
    assert call_priority(dialled="12345", repeat_caller=True, repeat_caller_priority=False) == 0


def test_given_skills_then_a_call_rings_only_an_agent_who_has_them_and_others_pass_it():
    w = World()
    w.agent("li", skills=("zh",))
    w.agent("kim", skills=("zh", "ko"), ready=False)
    korean = w.acd.enqueue("ko-call", skills=["ko"])
    assert w.ringer.rings == []  # li lacks Korean; kim is signed in, so no overflow
    plain = w.acd.enqueue("zh-call", skills=["zh"])
    assert [r.call_key for r in w.ringer.rings] == ["zh-call"]  # passes the Korean call
    assert events(plain)[0] == Ringing(w.ringer.rings[0].offer)
    w.pool.set_ready("kim")
    assert w.ringer.rings[-1].call_key == "ko-call" and w.ringer.rings[-1].offer.agent_id == "kim"
    assert isinstance(events(korean)[0], Ringing)


def test_given_a_missed_ring_then_the_call_keeps_its_place_through_the_retry_pause():
    w = World()
    w.agent("li")
    w.acd.enqueue("first")
    w.acd.enqueue("second")
    w.acd.ring_failed(w.ringer.rings[0], Disposition.NO_ANSWER)
    w.agent("wang")  # becomes ready during first's pause: it must not go to second
    assert [r.call_key for r in w.ringer.rings] == ["first"]
    w.advance(1.0)
    assert [r.call_key for r in w.ringer.rings] == ["first", "first"]
    assert w.ringer.rings[1].offer.agent_id == "wang"


def test_given_wrap_up_then_the_agent_takes_the_next_call_when_it_ends():
    w = World(wrap_up_s=15.0)
    w.agent("li")
    w.acd.enqueue("c1")
    w.acd.ring_answered(w.ringer.rings[0], FakeCall())
    w.acd.enqueue("c2")
    w.acd.finished("c1")
    assert w.pool.state("li") is AgentState.WRAP_UP
    assert w.acd._next_deadline() == w.clock.now + 15  # the engine wakes for it
    w.advance(14.9)
    assert len(w.ringer.rings) == 1
    w.advance(0.1)
    assert [r.call_key for r in w.ringer.rings] == ["c1", "c2"]


def test_given_the_timer_thread_when_an_agent_becomes_ready_then_the_waiting_call_rings_at_once():
    pool = MemoryAgentPool()
    rung = threading.Event()
    picked: list[float] = []

    class Ringer:
        def ring(self, attempt: RingAttempt) -> None:
            picked.append(time.monotonic())
            rung.set()

        def cancel(self, attempt: RingAttempt) -> None:
            pass

    acd = Acd(pool=pool, ringer=Ringer(), config=AcdConfig(overflow_after_s=None))
    pool.on_change = acd.wake
    pool.sign_in("li", "8001")
    acd.start()
    try:
        acd.enqueue("c1")
        assert not rung.wait(0.2)
        ready_at = time.monotonic()
        pool.set_ready("li")
        assert rung.wait(2)
        # No polling interval between ready and ring (the thread would otherwise sleep up
        # to a minute); the bound leaves room for a loaded machine's scheduling.
        assert picked[0] - ready_at < 0.2
    finally:
        acd.stop()


def test_given_the_timer_thread_then_a_ring_timeout_fires_on_the_real_clock():
    pool = MemoryAgentPool()
    ringer = ScriptedRinger()
    acd = Acd(
        pool=pool,
        ringer=ringer,
        config=AcdConfig(ring_timeout_s=0.2, ring_grace_s=0.0, retry_pause_s=0.1),
    )
    pool.on_change = acd.wake
    pool.sign_in("li", "8001")
    pool.set_ready("li")
    pool.sign_in("wang", "8002")
    pool.set_ready("wang")
    acd.start()
    try:
        acd.enqueue("c1")
        deadline = time.monotonic() + 3
        while len(ringer.rings) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.offer.agent_id for r in ringer.rings] == ["li", "wang"]
        gap = ringer.rings[1].started_at - ringer.rings[0].started_at
        assert 0.28 <= gap < 1.0  # timeout 0.2 + pause 0.1, on the real clock
    finally:
        acd.stop()


def test_given_stuck_states_then_reconcile_repairs_each_and_counts_it():
    w = World()
    w.agent("li")
    w.agent("wang")
    w.agent("zhao")
    w.acd.enqueue("ringing-forever")
    w.acd.enqueue("bridged-gone")
    w.acd.ring_answered(w.ringer.rings[1], FakeCall())
    w.acd.enqueue("caller-gone")
    assert w.acd.snapshot()["ringing"] == {"ringing-forever": "li", "caller-gone": "zhao"}
    # The timer thread died: no run_due while the clock moves past the ring's deadline.
    w.clock.now += 30
    repairs = w.acd.reconcile(live_call_keys={"ringing-forever"})
    kinds = {(r.kind, r.call_key, r.agent_id) for r in repairs}
    assert kinds == {
        ("ring_overdue", "ringing-forever", "li"),
        ("ring_overdue", "caller-gone", "zhao"),
        ("caller_gone", "caller-gone", None),
        ("bridged_call_gone", "bridged-gone", "wang"),
    }
    assert w.pool.state("li") is AgentState.NOT_READY  # missed
    assert w.pool.state("wang") is AgentState.READY  # back from the call that is gone
    assert w.acd.repairs["ring_overdue"] == 2 and w.acd.repairs["bridged_call_gone"] == 1
    assert w.acd.reconcile(live_call_keys={"ringing-forever"}) == []  # nothing left to fix


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="ring_timeout_s"):
        AcdConfig(ring_timeout_s=0)
    with pytest.raises(ValueError, match="overflow_after_s"):
        AcdConfig(overflow_after_s=-1)


def test_a_call_cannot_be_queued_twice():
    w = World()
    w.agent("li", ready=False)
    w.acd.enqueue("c1")
    with pytest.raises(ValueError, match="already queued"):
        w.acd.enqueue("c1")


def test_the_engine_s_rules_come_from_settings():
    acd = AcdSettings(ring_timeout_s=8, retry_pause_s=0.5, overflow_queue_longer_than=5)
    config = AcdConfig.from_settings(acd)
    assert (config.ring_timeout_s, config.retry_pause_s) == (8, 0.5)
    assert config.overflow_queue_longer_than == 5 and config.overflow_after_s == 60


def test_given_the_pool_failing_then_the_call_waits_and_is_offered_when_it_recovers():
    w = World()
    w.agent("li")
    real = w.pool.reserve

    def down(skills: frozenset[str], call_key: str) -> None:
        raise OSError("the database is down")

    w.pool.reserve = down
    entry = w.acd.enqueue("c1")
    assert w.ringer.rings == [] and w.acd.position("c1") == 1
    w.pool.reserve = real
    w.acd.wake()
    assert [r.call_key for r in w.ringer.rings] == ["c1"]
    assert isinstance(events(entry)[0], Ringing)
