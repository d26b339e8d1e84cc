"""The queue flow on a FakeCall whose simulated time is also the engine's clock: a caller's
five-minute wait runs in milliseconds, and every way out of the queue is walked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import AcdSettings
from telephony.acd import Acd, AcdConfig, Outcome, QueueResult, RingAttempt
from telephony.acd_memory import AgentState, MemoryAgentPool
from telephony.bridge import BridgeResult
from telephony.endpoint import FRAME_BYTES, CallState
from telephony.flows import FlowHooks, FlowSettings
from telephony.prompts import HOLD, PromptSet
from telephony.queue_flow import (
    QueueHooks,
    QueueOutcome,
    QueueSettings,
    position_pieces,
    serve_queue,
)
from telephony.recording import EndpointerSettings, EndReason, Side, frame_dbfs
from tests.telephony.fakes import FakeCall, FakePrompts, silence, speech


class FakeBridge:
    """Stands for ``telephony.bridge.Bridge`` (tested on its own): the agent talks for a
    while, then hangs up."""

    made: list[FakeBridge] = []

    def __init__(self, caller, agent, *, recording_dir, hold_audio, on_audio) -> None:
        self.caller, self.agent = caller, agent
        self.hold_audio = hold_audio
        self.on_audio = on_audio
        self.result = BridgeResult(ended_by=Side.AGENT, talk_s=90.0)
        FakeBridge.made.append(self)

    def start(self) -> None:
        self.on_audio(Side.CALLER, b"\1\0" * 160)
        self.on_audio(Side.AGENT, b"\2\0" * 160)

    def wait(self, timeout: float | None = None) -> bool:
        self.agent.hangup()
        return True


@dataclass
class Scene:
    """A caller, the engine on the caller's clock, agents in memory, a ringer whose agents
    answer after ``answer_after_ms`` (None: never)."""

    call: FakeCall
    tmp_path: Path
    answer_after_ms: int | None = 2000
    agents: int = 1
    ready: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    queue_settings: QueueSettings = field(default_factory=QueueSettings)
    at: list[tuple[int, Callable[[], None]]] = field(default_factory=list)  # scripted moves
    answer_by_agent: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock = lambda: self.call.now_ms / 1000
        self.pool = MemoryAgentPool(clock=self.clock)
        self.rings: list[tuple[RingAttempt, int]] = []  # (attempt, answer at ms)
        self.results: list[QueueResult] = []
        self.events: list[tuple] = []
        cfg: dict[str, Any] = {
            "ring_timeout_s": 10.0,
            "retry_pause_s": 1.0,
            "overflow_after_s": 60.0,
        }
        cfg.update(self.config)
        self.acd = Acd(
            pool=self.pool,
            ringer=self,
            config=AcdConfig(**cfg),
            clock=self.clock,
            on_result=self.results.append,
        )
        self.pool.on_change = self.acd.wake
        for n in range(self.agents):
            self.pool.sign_in(f"agent-{n}", f"80{n:02d}")
            if self.ready:
                self.pool.set_ready(f"agent-{n}")
        self.call.on_time = self.tick

    # the Ringer protocol
    def ring(self, attempt: RingAttempt) -> None:
        after = self.answer_by_agent.get(attempt.offer.agent_id, self.answer_after_ms)
        due = None if after is None else self.call.now_ms + after
        self.rings.append((attempt, due if due is not None else -1))

    def cancel(self, attempt: RingAttempt) -> None:
        self.events.append(("cancelled", attempt.offer.agent_id))

    def tick(self) -> None:
        now = self.call.now_ms
        while self.at and self.at[0][0] <= now:
            self.at.pop(0)[1]()
        for attempt, due in list(self.rings):
            if 0 <= due <= now:
                self.rings.remove((attempt, due))
                self.rings.append((attempt, -1))
                leg = FakeCall(call_id=f"leg-{attempt.id}", remote_number=attempt.offer.extension)
                self.acd.ring_answered(attempt, leg)
        self.acd.run_due()

    def serve(self, **queue_hooks) -> QueueOutcome:
        FakeBridge.made = []
        hooks = FlowHooks(
            on_callback_number=lambda call, n: self.events.append(("callback", n)),
            on_finished=lambda call, path, reason: self.events.append(("report", reason)),
        )
        base: dict[str, Any] = {
            "bridge_factory": FakeBridge,
            "on_bridged": lambda call, leg, offer: self.events.append(
                ("bridged", leg.call_id, offer.agent_id)
            ),
            "on_audio": lambda call, side, pcm: self.events.append(("audio", side)),
            "on_bridge_ended": lambda call, result: self.events.append(("ended", result.talk_s)),
            "on_outcome": lambda call, outcome: self.events.append(("outcome", outcome)),
        }
        base.update(queue_hooks)
        return serve_queue(
            self.call,
            acd=self.acd,
            prompts=self.prompts,
            hooks=hooks,
            settings=FlowSettings(
                recording_dir=self.tmp_path / "rec",
                endpointer=EndpointerSettings(end_silence_s=1.0, no_speech_timeout_s=4.0),
            ),
            queue_hooks=QueueHooks(**base),
            queue_settings=self.queue_settings,
        )

    @property
    def prompts(self) -> FakePrompts:
        if not hasattr(self, "_prompts"):
            self._prompts = FakePrompts()
        return self._prompts


def _without_hold(names: list[str]) -> list[str]:
    return [name for name in names if name != HOLD]


def test_given_a_ready_agent_then_it_rings_at_once_and_the_caller_is_bridged(tmp_path):
    scene = Scene(FakeCall(hangup_at_ms=600_000), tmp_path)
    assert scene.serve() == QueueOutcome.BRIDGED
    assert scene.rings[0][0].offer.agent_id == "agent-0"
    assert ("bridged", "leg-1", "agent-0") in scene.events
    assert ("audio", Side.CALLER) in scene.events and ("audio", Side.AGENT) in scene.events
    assert scene.events[-1] == ("outcome", QueueOutcome.BRIDGED)
    # No position announcement for a call rung at once: the welcome, then hold audio.
    assert _without_hold(scene.call.heard(scene.prompts)) == ["welcome"]
    assert scene.results[0].outcome is Outcome.ANSWERED
    assert scene.results[0].waited_s == pytest.approx(2.0, abs=0.25)
    assert scene.pool.state("agent-0") is AgentState.READY  # the bridge ended: back
    assert CallState.QUEUED in scene.call.states and CallState.BRIDGED in scene.call.states
    assert FakeBridge.made[0].hold_audio == scene.prompts.pcm(HOLD)


def test_given_all_busy_then_position_and_wait_every_period_then_overflow_to_the_robot(
    tmp_path,
):
    frames = silence(66_000) + speech(2000) + silence(2000)
    scene = Scene(
        FakeCall(frames=frames),
        tmp_path,
        ready=False,
        config={"overflow_after_s": 60.0, "default_handle_s": 150.0},
        queue_settings=QueueSettings(position_every_s=30.0, overflow_offer="choice"),
    )
    assert scene.serve() == QueueOutcome.OVERFLOW_INTAKE
    heard = _without_hold(scene.call.heard(scene.prompts))
    told = position_pieces(1, 150.0)
    offer = ["queue_callback_offer", "digit_1"]
    assert heard[:1] == ["welcome"]
    assert heard[1:] == [
        "queue_hold",
        *told,
        *offer,
        *told,  # at 30 s
        *offer,
        *offer,  # the overflow: the choice offered, no key
        "queue_overflow",
        "beep",
        "closing",
    ]
    assert told == ["queue_position", "digit_1", "queue_position_end"] + [
        "queue_wait",
        "digit_3",
        "queue_wait_end",
    ]
    assert scene.results[0].outcome is Outcome.OVERFLOW
    assert scene.results[0].waited_s == pytest.approx(60.0, abs=0.25)
    assert ("report", EndReason.SILENCE) in scene.events


def test_given_the_callback_key_while_waiting_then_a_callback_to_the_caller_s_number(tmp_path):
    scene = Scene(FakeCall(keys=[(5_000, "1")], hangup_at_ms=600_000), tmp_path, ready=False)
    assert scene.serve() == QueueOutcome.CALLBACK
    assert ("callback", "13800000000") in scene.events
    assert scene.call.heard(scene.prompts)[-1] == "queue_callback_recorded"
    assert scene.call.disposition is not None and scene.call.ended.is_set()
    assert scene.results[0].outcome is Outcome.CALLBACK
    assert scene.results[0].waited_s == pytest.approx(4.9, abs=0.25)


def test_given_an_anonymous_caller_asking_a_callback_then_the_number_is_keyed(tmp_path):
    keys = [(3_000, "1"), *((4_000 + 100 * i, d) for i, d in enumerate("13912345678#"))]
    scene = Scene(FakeCall(keys=keys, remote_number=""), tmp_path, ready=False)
    assert scene.serve() == QueueOutcome.CALLBACK
    assert ("callback", "13912345678") in scene.events


def test_given_the_caller_hangs_up_in_the_queue_then_abandoned_with_the_wait(tmp_path):
    scene = Scene(FakeCall(hangup_at_ms=12_100), tmp_path, ready=False)
    assert scene.serve() == QueueOutcome.ABANDONED
    assert scene.results[0].outcome is Outcome.ABANDONED
    assert scene.results[0].waited_s == pytest.approx(12.0, abs=0.25)
    assert scene.acd.snapshot()["waiting"] == 0
    assert scene.events[-1] == ("outcome", QueueOutcome.ABANDONED)


def test_given_an_agent_who_becomes_ready_while_the_caller_waits_then_rung_at_once(tmp_path):
    call = FakeCall(hangup_at_ms=600_000)
    scene = Scene(call, tmp_path, ready=False)
    scene.at.append((20_000, lambda: scene.pool.set_ready("agent-0")))
    assert scene.serve() == QueueOutcome.BRIDGED
    attempt = scene.rings[0][0]
    assert attempt.started_at == pytest.approx(20.0, abs=0.25)  # the tick it became ready


def test_given_a_ring_unanswered_then_the_next_agent_answers_and_the_first_is_missed(tmp_path):
    scene = Scene(FakeCall(hangup_at_ms=600_000), tmp_path, agents=2, answer_after_ms=None)
    # The first agent never answers; the second answers a second after being rung.
    scene.answer_by_agent = {"agent-1": 1000}
    assert scene.serve() == QueueOutcome.BRIDGED
    assert [a.offer.agent_id for a, _ in scene.rings] == ["agent-0", "agent-1"]
    assert scene.pool.state("agent-0") is AgentState.NOT_READY
    assert ("cancelled", "agent-0") in scene.events
    result = scene.results[0]
    assert result.missed_agents == ("agent-0",) and result.agent_id == "agent-1"
    assert result.waited_s == pytest.approx(10.5 + 1.0 + 1.0, abs=0.3)  # inside 15 s


def test_given_nobody_signed_in_then_straight_to_the_overflow_offer_and_a_key_asks_callback(
    tmp_path,
):
    scene = Scene(FakeCall(keys=[(400, "1")]), tmp_path, agents=0)
    assert scene.serve() == QueueOutcome.CALLBACK
    heard = _without_hold(scene.call.heard(scene.prompts))
    assert heard[:2] == ["welcome", "queue_callback_offer"]  # no position: nobody will come
    assert scene.results[0].overflow is not None


def test_given_overflow_offer_intake_then_the_robot_takes_it_without_a_choice(tmp_path):
    scene = Scene(
        FakeCall(frames=silence(1000) + speech(1500) + silence(1500)),
        tmp_path,
        agents=0,
        queue_settings=QueueSettings(overflow_offer="intake"),
    )
    assert scene.serve() == QueueOutcome.OVERFLOW_INTAKE
    assert _without_hold(scene.call.heard(scene.prompts))[:3] == [
        "welcome",
        "queue_overflow",
        "beep",
    ]


def test_queue_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="callback_key"):
        QueueSettings(callback_key="*")
    with pytest.raises(ValueError, match="needs a callback_key"):
        QueueSettings(callback_key=None, overflow_offer="choice")


def test_position_pieces_say_under_a_minute_and_whole_minutes_up():
    assert position_pieces(2, 30)[-1] == "queue_wait_short"
    assert position_pieces(12, 61)[:4] == ["queue_position", "ten", "digit_2", "queue_position_end"]
    assert position_pieces(12, 61)[-3:] == ["queue_wait", "count_2", "queue_wait_end"]
    assert position_pieces(2, 600)[1:3] == ["digit_2", "queue_position_end"]  # 第二位
    assert position_pieces(1, 1320)[-5:] == ["queue_wait", "digit_2", "ten", "digit_2"] + [
        "queue_wait_end"
    ]  # 二十二分钟


def test_queue_settings_come_from_settings():
    settings = QueueSettings.from_settings(AcdSettings(callback_key="2", overflow_offer="intake"))
    assert (settings.callback_key, settings.overflow_offer) == ("2", "intake")
    assert settings.position_every_s == 30


def test_the_hold_audio_needs_no_synthesis_and_is_never_silent(tmp_path):
    prompts = PromptSet(tmp_path, language="zh")  # nothing generated
    hold = prompts.pcm(HOLD)
    samples = np.frombuffer(hold, "<i2")
    assert len(samples) == 8 * 8000
    levels = [frame_dbfs(hold[i : i + FRAME_BYTES]) for i in range(0, len(hold), FRAME_BYTES)]
    assert max(levels) < -12 and min(levels) > -60  # soft under announcements, never a gap


def test_given_the_bridge_failing_to_start_then_the_agent_leg_is_hung_up_and_the_agent_freed(
    tmp_path,
):
    legs = []

    def broken(caller, agent, **kwargs):
        legs.append(agent)
        raise RuntimeError("no bridge")

    scene = Scene(FakeCall(hangup_at_ms=600_000), tmp_path)
    with pytest.raises(RuntimeError, match="no bridge"):
        scene.serve(bridge_factory=broken)
    assert legs[0].ended.is_set()
    assert scene.pool.state("agent-0") is AgentState.READY
