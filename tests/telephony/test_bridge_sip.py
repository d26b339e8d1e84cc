"""Queue → ring → bridge on loopback with real SIP peers: a sipp caller calls the edge, whose
handler is the queue flow; the engine rings an agent in memory whose seat is a sipp UAS, by
the edge's own ``dial``; the two talk through the bridge. What each side sent must reach
the other (normalised cross-correlation ≥ 0.99) and the stereo file must hold the caller
left and the agent right; a key the caller presses reaches the agent's phone as RFC 4733."""

from __future__ import annotations

import functools
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from telephony import codecs
from telephony.acd import Acd, AcdConfig, Outcome, OverflowReason, QueueResult
from telephony.acd_dial import DialRinger
from telephony.acd_memory import AgentState, MemoryAgentPool
from telephony.bridge import BridgeResult
from telephony.endpoint import Call, CallState
from telephony.flows import FlowHooks, FlowSettings
from telephony.prompts import HOLD
from telephony.queue_flow import QueueHooks, QueueOutcome, QueueSettings, serve_queue
from tests.conftest import wait_until
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire, paced_send
from tests.telephony.fakes import FakePrompts
from tests.telephony.sip_peers import (
    HOST,
    Harness,
    RtpPeer,
    free_udp_port,
    start_edge,
    start_sipp,
)

DTMF_PT = 101


@pytest.fixture
def agent_rtp() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


@dataclass
class Centre:
    """An edge whose handler is the queue flow, an engine ringing seats with the edge's
    ``dial``, agents in memory, and what the hooks were told."""

    harness: Harness
    acd: Acd
    pool: MemoryAgentPool
    ringer: DialRinger
    results: list[QueueResult] = field(default_factory=list)
    bridged: list[tuple[Call, Call]] = field(default_factory=list)
    ended: list[BridgeResult] = field(default_factory=list)
    outcomes: list[QueueOutcome] = field(default_factory=list)


def start_centre(
    edges,
    tmp_path,
    seats: dict[str, int],
    config: AcdConfig,
    pool: MemoryAgentPool,
    *,
    ready: bool = True,
    queue_settings: QueueSettings | None = None,
    prompts: FakePrompts | None = None,
) -> Centre:
    """``seats``: agent → the UDP port their seat's phone listens on (all signed in, and
    unless ``ready`` is False ready in this order, so the first is the longest idle)."""
    extension_port = {f"80{n:02d}": port for n, port in enumerate(seats.values(), start=1)}
    box: list[Centre] = []
    ringer = DialRinger(
        dial=lambda uri, ring_timeout, cancel=None: box[0].harness.edge.dial(
            uri, ring_timeout=ring_timeout, cancel=cancel
        ),
        target_of=lambda extension: f"sip:{extension}@{HOST}:{extension_port[extension]}",
        acd=lambda: box[0].acd,
    )
    results: list[QueueResult] = []
    acd = Acd(pool=pool, ringer=ringer, config=config, on_result=results.append)
    pool.on_change = acd.wake
    for n, agent in enumerate(seats, start=1):
        pool.sign_in(agent, f"80{n:02d}")
        if ready:
            pool.set_ready(agent)
            time.sleep(0.002)  # a distinct idle order on the real clock
    bridged: list[tuple[Call, Call]] = []
    ended: list[BridgeResult] = []
    outcomes: list[QueueOutcome] = []
    serve = functools.partial(
        serve_queue,
        acd=acd,
        prompts=prompts or FakePrompts(),
        hooks=FlowHooks(),
        settings=FlowSettings(recording_dir=tmp_path),
        queue_hooks=QueueHooks(
            on_bridged=lambda call, leg, offer: bridged.append((call, leg)),
            on_bridge_ended=lambda call, result: ended.append(result),
            on_outcome=lambda call, outcome: outcomes.append(outcome),
        ),
        queue_settings=queue_settings,
    )

    def handler(call: Call) -> None:
        serve(call)

    harness = start_edge(handler)
    edges.append(harness)
    centre = Centre(harness, acd, pool, ringer, results, bridged, ended, outcomes)
    box.append(centre)
    acd.start()
    return centre


def test_given_a_caller_and_a_ready_agent_seat_then_bridged_audio_both_ways_and_a_stereo_file(
    edges, rtp, agent_rtp, tmp_path
):
    seat_port = free_udp_port()
    agent_phone = start_sipp(
        "uas_agent_answer.xml", port=seat_port, keys={"rtp_port": agent_rtp.port}, timeout=30
    )
    pool = MemoryAgentPool()
    centre = start_centre(
        edges,
        tmp_path,
        {"li": seat_port},
        AcdConfig(ring_timeout_s=5.0, overflow_after_s=None),
        pool,
    )
    acd, harness = centre.acd, centre.harness
    bridged, ended, results, outcomes = (
        centre.bridged,
        centre.ended,
        centre.results,
        centre.outcomes,
    )
    caller_phone = start_sipp(
        "uac_call.xml",
        target=harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=5000,
        timeout=30,
    )
    try:
        wait_until(lambda: bridged, 10, message="bridged")
        caller_leg, agent_leg = bridged[0]
        assert caller_leg.state == CallState.BRIDGED
        said_by_caller, said_by_agent = noise(2.0, 1), noise(2.0, 2)
        senders = [
            paced_send(rtp, (HOST, caller_leg.rtp_port), said_by_caller, 0x1111),
            paced_send(agent_rtp, (HOST, agent_leg.rtp_port), said_by_agent, 0x2222),
        ]
        for sender in senders:
            sender.join(5)
        time.sleep(0.4)  # the last packets cross the relay (bounded: a few reader wake-ups)
        rtp.send_key((HOST, caller_leg.rtp_port), "5", payload_type=DTMF_PT)
        wait_until(
            lambda: any(p.payload_type == DTMF_PT for p in agent_rtp.packets),
            3,
            message="the key at the agent's phone",
        )
        wait_until(lambda: ended, 15, message="the caller's BYE ended the bridge")
    finally:
        acd.stop()
        out_agent, _ = agent_phone.communicate(timeout=30)
        out_caller, _ = caller_phone.communicate(timeout=30)
    assert agent_phone.returncode == 0, out_agent[-2500:]  # the agent's seat got our BYE
    assert caller_phone.returncode == 0, out_caller[-2500:]

    heard_by_agent = agent_rtp.received_audio(codecs.PCMU)
    heard_by_caller = rtp.received_audio(codecs.PCMU)
    to_agent = best_lag_correlation(on_the_wire(said_by_caller), heard_by_agent)
    to_caller = best_lag_correlation(on_the_wire(said_by_agent), heard_by_caller)
    assert to_agent >= 0.99 and to_caller >= 0.99, (to_agent, to_caller)

    events = [p for p in agent_rtp.packets if p.payload_type == DTMF_PT]
    code, flags, _ = struct.unpack("!BBH", events[0].payload[:4])
    assert code == 5 and any(struct.unpack("!BBH", e.payload[:4])[1] & 0x80 for e in events)

    result = ended[0]
    assert result.recording is not None
    with wave.open(str(result.recording)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    left, right = samples[0::2].tobytes(), samples[1::2].tobytes()
    assert best_lag_correlation(on_the_wire(said_by_caller), left) >= 0.99
    assert best_lag_correlation(on_the_wire(said_by_agent), right) >= 0.99
    # Each channel is its own speaker: the other's audio is not in it.
    assert best_lag_correlation(on_the_wire(said_by_agent), left) < 0.3
    assert ("caller", "5") in [(s.value, k) for s, k in result.keys]

    assert outcomes == [QueueOutcome.BRIDGED]
    assert results[0].outcome is Outcome.ANSWERED and results[0].agent_id == "li"
    wait_until(lambda: pool.state("li").value == "ready", 5, message="li back to ready")


def test_given_an_agent_seat_that_does_not_answer_then_the_next_agent_is_rung_and_bridged(
    edges, rtp, agent_rtp, tmp_path
):
    silent_port, answering_port = free_udp_port(), free_udp_port()
    silent_phone = start_sipp("uas_no_answer.xml", port=silent_port, timeout=30)
    answering_phone = start_sipp(
        "uas_agent_answer.xml", port=answering_port, keys={"rtp_port": agent_rtp.port}, timeout=30
    )
    pool = MemoryAgentPool()
    centre = start_centre(
        edges,
        tmp_path,
        {"li": silent_port, "wang": answering_port},
        AcdConfig(ring_timeout_s=1.0, ring_grace_s=0.3, retry_pause_s=0.2, overflow_after_s=None),
        pool,
    )
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=4000,
        timeout=30,
    )
    try:
        wait_until(lambda: centre.ended, 15, message="bridged with wang, then the caller's BYE")
    finally:
        centre.acd.stop()
        outputs = [
            p.communicate(timeout=30)[0] for p in (silent_phone, answering_phone, caller_phone)
        ]
        if not centre.ended:  # shown with the failure: which phone did what
            for name, out in zip(("li", "wang", "caller"), outputs, strict=True):
                print(f"--- {name}'s sipp ---\n{out[-2500:]}")
    # li's phone got our CANCEL (the scenario's script), wang's our BYE, the caller our 200.
    for phone, out in zip((silent_phone, answering_phone, caller_phone), outputs, strict=True):
        assert phone.returncode == 0, out[-2500:]
    result = centre.results[0]
    assert result.outcome is Outcome.ANSWERED and result.agent_id == "wang"
    assert result.missed_agents == ("li",)
    assert 1.0 <= result.waited_s < 4.0, result.waited_s  # one missed ring, well inside 15 s
    assert pool.state("li") is AgentState.NOT_READY and pool.agents["li"].reason == "missed"


def test_given_a_caller_who_hangs_up_while_a_seat_rings_then_the_seat_stops_ringing_at_once(
    edges, rtp, tmp_path
):
    """The ring is CANCELled when the caller leaves, not left to ring out its timeout (an
    agent picking up would find nobody), and the agent keeps their turn: not their miss.
    The ring timeout (60 s) is far beyond the caller's 2 s, and the seat waits up to 40 s
    for the CANCEL: a loaded machine delays it, only a missing CANCEL fails."""
    seat_port = free_udp_port()
    ringing_phone = start_sipp("uas_rings_until_cancel.xml", port=seat_port, timeout=60)
    pool = MemoryAgentPool()
    centre = start_centre(
        edges,
        tmp_path,
        {"li": seat_port},
        AcdConfig(ring_timeout_s=60.0, overflow_after_s=None),
        pool,
    )
    started = time.monotonic()
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=2000,
        timeout=30,
    )
    try:
        out, _ = caller_phone.communicate(timeout=30)
        assert caller_phone.returncode == 0, out[-2500:]
        seat_out, _ = ringing_phone.communicate(timeout=60)
        rang_s = time.monotonic() - started
    finally:
        centre.acd.stop()
    assert ringing_phone.returncode == 0, seat_out[-2500:]  # it received our CANCEL
    assert rang_s < 45.0, rang_s  # CANCELled because the caller left, not rung out (60 s)
    assert centre.results[0].outcome is Outcome.ABANDONED
    wait_until(lambda: pool.state("li") is AgentState.READY, 5, message="li ready again")


def test_given_no_agent_free_then_hold_audio_and_hanging_up_in_the_queue_is_an_abandon(
    edges, rtp, tmp_path
):
    pool = MemoryAgentPool()
    centre = start_centre(edges, tmp_path, {"li": free_udp_port()}, AcdConfig(), pool, ready=False)
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=3000,
        timeout=30,
    )
    try:
        out, _ = caller_phone.communicate(timeout=30)
        assert caller_phone.returncode == 0, out[-2500:]
        wait_until(lambda: centre.outcomes, 5, message="the flow ended")
    finally:
        centre.acd.stop()
    assert centre.outcomes == [QueueOutcome.ABANDONED]
    result = centre.results[0]
    assert result.outcome is Outcome.ABANDONED and 2.0 < result.waited_s < 4.0
    assert centre.acd.snapshot()["waiting"] == 0 and pool.state("li") is AgentState.NOT_READY
    # The caller heard the queue without dead air: welcome, announcement, hold audio.
    heard = np.frombuffer(rtp.received_audio(codecs.PCMU), "<i2")
    frames = heard[: len(heard) // 160 * 160].reshape(-1, 160)
    sounding = np.nonzero(np.abs(frames).max(axis=1) > 100)[0]
    assert len(sounding) >= 100  # 2 s and more
    span = frames[sounding[0] : sounding[-1] + 1]
    assert (np.abs(span).max(axis=1) > 100).mean() > 0.95


def test_given_nobody_signed_in_then_the_robot_takes_the_call(edges, rtp, tmp_path):
    centre = start_centre(
        edges,
        tmp_path,
        {},
        AcdConfig(),
        MemoryAgentPool(),
        queue_settings=QueueSettings(overflow_offer="intake"),
    )
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=2000,
        timeout=30,
    )
    try:
        out, _ = caller_phone.communicate(timeout=30)
        assert caller_phone.returncode == 0, out[-2500:]
        wait_until(lambda: centre.outcomes, 5, message="the flow ended")
    finally:
        centre.acd.stop()
    assert centre.outcomes == [QueueOutcome.OVERFLOW_INTAKE]
    assert centre.results[0].overflow is OverflowReason.NO_AGENTS
    assert list(tmp_path.glob("*.wav"))  # the robot recorded the caller


def test_given_the_agent_s_phone_holds_then_the_caller_hears_hold_audio_until_it_resumes(
    edges, rtp, agent_rtp, tmp_path
):
    seat_port = free_udp_port()
    trace = tmp_path / "seat.log"
    agent_phone = start_sipp(
        "uas_agent_hold.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=30,
        trace=trace,
    )
    prompts = FakePrompts()
    hold_audio = prompts.pcm(HOLD)
    centre = start_centre(
        edges,
        tmp_path,
        {"li": seat_port},
        AcdConfig(ring_timeout_s=5.0, overflow_after_s=None),
        MemoryAgentPool(),
        prompts=prompts,
    )
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=4500,
        timeout=30,
    )
    try:
        wait_until(lambda: centre.bridged, 10, message="bridged")
        caller_leg, agent_leg = centre.bridged[0]
        wait_until(lambda: agent_leg.held_by_peer, 5, message="the agent's phone holds")
        held_at = len(rtp.packets)
        wait_until(lambda: not agent_leg.held_by_peer, 5, message="the agent's phone resumes")
        resumed_at = len(rtp.packets)
        wait_until(lambda: centre.ended, 15, message="the caller's BYE ended the bridge")
    finally:
        centre.acd.stop()
        out_agent, _ = agent_phone.communicate(timeout=30)
        out_caller, _ = caller_phone.communicate(timeout=30)
    # The seat's script checked our answers: a=recvonly to its hold, a=sendrecv to resume.
    assert agent_phone.returncode == 0, out_agent[-2500:] + trace.read_text()[-3000:]
    assert caller_phone.returncode == 0, out_caller[-2500:]
    result = centre.ended[0]
    assert 1.0 <= result.hold_s <= 2.5, result.hold_s
    # What the caller heard while held: the hold audio, with no gap.
    codec = codecs.decoder(codecs.PCMU)
    held = b"".join(codec(p.payload) for p in rtp.packets[held_at + 10 : resumed_at])
    music = np.frombuffer(on_the_wire(hold_audio[:2]), "<i2")[0]
    samples = np.frombuffer(held, "<i2")
    assert len(samples) >= 8000 and (samples == music).mean() > 0.9
