"""Bridged calls through rtpengine (``media_relay="rtpengine"``): a sipp caller queues at the
edge, a sipp agent seat answers the ring, and the edge moves both phones onto a real rtpengine
by re-INVITE (``telephony.media_relay``). What each side sends to rtpengine must reach the
other (correlation ≥ 0.99), keys included, the stereo file and the live transcript's feed
must hold each side (from rtpengine's taps), and the caller's hang-up ends both legs and the
call in rtpengine. Without rtpengine the same call runs on the edge's own relay."""

from __future__ import annotations

import random
import re
import socket
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from telephony import codecs, media_relay
from telephony.acd import Acd, AcdConfig
from telephony.acd_dial import DialRinger
from telephony.acd_memory import MemoryAgentPool
from telephony.bridge import Bridge, BridgeResult
from telephony.endpoint import Call, Disposition
from telephony.flows import FlowHooks, FlowSettings
from telephony.queue_flow import QueueHooks, QueueOutcome, serve_queue
from telephony.recording import Side
from telephony.rtpengine import Daemon, NgClient
from telephony.sip_config import SipConfig
from tests.conftest import wait_until
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire, paced_send
from tests.telephony.fakes import FakePrompts
from tests.telephony.sip_peers import (
    HOST,
    Harness,
    RtpPeer,
    free_udp_port,
    rms,
    start_edge,
    start_sipp,
)

DTMF_PT = 101


@pytest.fixture
def ng(tmp_path: Path) -> Iterator[NgClient]:
    low = random.randrange(40_000, 59_000, 2)  # a window of its own for parallel workers
    with Daemon(
        ng_port=free_udp_port(),
        port_min=low,
        port_max=low + 200,
        log_path=tmp_path / "rtpengine.log",
    ) as client:
        yield client


@pytest.fixture
def silent_ng() -> Iterator[str]:
    """An ng address where nothing answers: a UDP socket held bound for the test and never
    read. A port only found free would do until a parallel worker's rtpengine took it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        yield f"{HOST}:{sock.getsockname()[1]}"


@pytest.fixture
def agent_rtp() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


@dataclass
class Centre:
    harness: Harness
    acd: Acd
    bridged: list[tuple[Call, Call]] = field(default_factory=list)
    ended: list[BridgeResult] = field(default_factory=list)
    outcomes: list[QueueOutcome] = field(default_factory=list)
    heard: dict[Side, list[bytes]] = field(default_factory=lambda: {s: [] for s in Side})
    bridges: list[Bridge] = field(default_factory=list)

    def bridge(self, *args, **options) -> Bridge:
        made = Bridge(*args, **options)
        self.bridges.append(made)
        return made


def start_centre(edges, tmp_path: Path, seat_port: int, **edge_config) -> Centre:
    """An edge whose handler is the queue flow, one ready agent whose seat is ``seat_port``."""
    box: list[Centre] = []
    ringer = DialRinger(
        dial=lambda uri, ring_timeout, cancel=None: box[0].harness.edge.dial(
            uri, ring_timeout=ring_timeout, cancel=cancel
        ),
        target_of=lambda extension: f"sip:{extension}@{HOST}:{seat_port}",
        acd=lambda: box[0].acd,
    )
    pool = MemoryAgentPool()
    acd = Acd(pool=pool, ringer=ringer, config=AcdConfig(ring_timeout_s=5.0, overflow_after_s=None))
    pool.on_change = acd.wake
    pool.sign_in("li", "8001")
    pool.set_ready("li")
    centre_box: dict[str, Centre] = {}

    def handler(call: Call) -> None:
        centre = centre_box["c"]
        serve_queue(
            call,
            acd=acd,
            prompts=FakePrompts(),
            hooks=FlowHooks(),
            settings=FlowSettings(recording_dir=tmp_path),
            queue_hooks=QueueHooks(
                on_bridged=lambda c, leg, offer: centre.bridged.append((c, leg)),
                on_audio=lambda c, side, pcm: centre.heard[side].append(pcm),
                on_bridge_ended=lambda c, result: centre.ended.append(result),
                on_outcome=lambda c, outcome: centre.outcomes.append(outcome),
                bridge_factory=centre.bridge,
            ),
        )

    harness = start_edge(handler, **edge_config)
    edges.append(harness)
    centre = Centre(harness, acd)
    centre_box["c"] = centre
    box.append(centre)
    acd.start()
    return centre


def reinvited_to(trace: Path) -> list[tuple[str, int]]:
    """Where each re-INVITE the phone received told it to send, in order (sipp's trace):
    every INVITE with an SDP it received, but for the agent's seat the edge's first INVITE."""
    text = trace.read_text() if trace.exists() else ""
    found = []
    for block in re.split(r"^-{10,}.*$", text, flags=re.M):
        if "message received" in block and re.search(r"^INVITE ", block, re.M):
            port = re.search(r"^m=audio (\d+)", block, re.M)
            host = re.search(r"^c=IN IP4 (\S+)", block, re.M)
            if port and host:
                found.append((host.group(1), int(port.group(1))))
    return found[1:] if "agent" in trace.name else found


def relay_address(trace: Path) -> tuple[str, int] | None:
    """Where the first re-INVITE told the phone to send: rtpengine; None before it came."""
    moves = reinvited_to(trace)
    return moves[0] if moves else None


def test_given_rtpengine_mode_then_phones_talk_through_rtpengine_and_the_edge_records_both(
    edges, ng, rtp, agent_rtp, tmp_path
):
    seat_port = free_udp_port()
    agent_trace, caller_trace = tmp_path / "agent.log", tmp_path / "caller.log"
    agent_phone = start_sipp(
        "uas_agent_reinvited.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
        trace=agent_trace,
    )
    centre = start_centre(
        edges,
        tmp_path,
        seat_port,
        media_relay="rtpengine",
        rtpengine_ng=f"{ng.address[0]}:{ng.address[1]}",
    )
    caller_phone = start_sipp(
        "uac_call_reinvited.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=6000,
        timeout=40,
        trace=caller_trace,
    )
    try:
        wait_until(lambda: centre.bridged, 15, message="bridged")
        caller_leg, agent_leg = centre.bridged[0]
        wait_until(lambda: relay_address(caller_trace), 15, message="the caller re-INVITEd")
        wait_until(lambda: relay_address(agent_trace), 15, message="the agent re-INVITEd")
        to_rtpengine_caller = relay_address(caller_trace)
        to_rtpengine_agent = relay_address(agent_trace)
        assert to_rtpengine_caller and to_rtpengine_agent
        edge_ports = (caller_leg.rtp_port, agent_leg.rtp_port)
        assert to_rtpengine_caller[1] not in edge_ports
        assert to_rtpengine_agent[1] not in edge_ports
        assert ng.list_calls() == [f"{caller_leg.sip_call_id}/bridge"]
        said_by_caller, said_by_agent = noise(2.0, 1), noise(2.0, 2)
        senders = [
            paced_send(rtp, to_rtpengine_caller, said_by_caller, 0x1111),
            paced_send(agent_rtp, to_rtpengine_agent, said_by_agent, 0x2222),
        ]
        for sender in senders:
            sender.join(5)
        rtp.send_key(to_rtpengine_caller, "5", payload_type=DTMF_PT)
        wait_until(
            lambda: any(p.payload_type == DTMF_PT for p in agent_rtp.packets),
            3,
            message="the key at the agent's phone",
        )
        wait_until(lambda: centre.ended, 20, message="the caller's BYE ended the bridge")
    finally:
        centre.acd.stop()
        out_agent, _ = agent_phone.communicate(timeout=40)
        out_caller, _ = caller_phone.communicate(timeout=40)
    assert agent_phone.returncode == 0, out_agent[-2500:]  # re-INVITEd, ACKed, our BYE
    assert caller_phone.returncode == 0, out_caller[-2500:]

    heard_by_agent = agent_rtp.received_audio(codecs.PCMU)
    heard_by_caller = rtp.received_audio(codecs.PCMU)
    to_agent = best_lag_correlation(on_the_wire(said_by_caller), heard_by_agent)
    to_caller = best_lag_correlation(on_the_wire(said_by_agent), heard_by_caller)
    assert to_agent >= 0.99 and to_caller >= 0.99, (to_agent, to_caller)
    events = [p for p in agent_rtp.packets if p.payload_type == DTMF_PT]
    assert struct.unpack("!BBH", events[0].payload[:4])[0] == 5

    result = centre.ended[0]
    assert result.ended_by is Side.CALLER and centre.outcomes == [QueueOutcome.BRIDGED]
    assert result.recording is not None
    with wave.open(str(result.recording)) as wav:
        assert wav.getnchannels() == 2
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    left, right = samples[0::2].tobytes(), samples[1::2].tobytes()
    assert best_lag_correlation(on_the_wire(said_by_caller), left) >= 0.99
    assert best_lag_correlation(on_the_wire(said_by_agent), right) >= 0.99
    assert best_lag_correlation(on_the_wire(said_by_agent), left) < 0.3
    live = b"".join(centre.heard[Side.CALLER])  # what the live transcript was fed
    assert best_lag_correlation(on_the_wire(said_by_caller), live) >= 0.99

    wait_until(lambda: ng.list_calls() == [], 5, message="the call deleted in rtpengine")
    wait_until(lambda: len(centre.harness.ended) == 2, 5, message="both legs ended")
    by_leg = {call.call_id: call.disposition for call in centre.harness.ended}
    assert by_leg[caller_leg.call_id] == Disposition.CALLER_HUNG_UP
    assert by_leg[agent_leg.call_id] == Disposition.COMPLETED


def test_given_rtpengine_cannot_play_the_hold_audio_then_both_phones_come_back_to_the_edge(
    edges, ng, rtp, agent_rtp, tmp_path, monkeypatch
):
    # rtpengine plays the hold audio itself (tests/telephony/test_rtpengine_edge.py); a file
    # it cannot read makes it refuse, and the edge then plays it on its own relay.
    monkeypatch.setattr(media_relay, "hold_wav", lambda pcm: b"not a media file")
    seat_port = free_udp_port()
    agent_trace, caller_trace = tmp_path / "agent.log", tmp_path / "caller.log"
    agent_phone = start_sipp(
        "uas_agent_reinvited_back.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
        trace=agent_trace,
    )
    centre = start_centre(
        edges,
        tmp_path,
        seat_port,
        media_relay="rtpengine",
        rtpengine_ng=f"{ng.address[0]}:{ng.address[1]}",
    )
    caller_phone = start_sipp(
        "uac_call_reinvited_back.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=6000,
        timeout=40,
        trace=caller_trace,
    )
    try:
        wait_until(lambda: centre.bridged and ng.list_calls(), 15, message="on rtpengine")
        caller_leg, agent_leg = centre.bridged[0]
        bridge = centre.bridges[0]
        # rtpengine sets up a playback against the media it carries: hold once the caller's
        # RTP has reached it (asked too early, it took the unreadable file without an error
        # in 2 of ~5 loaded runs, and the call stayed held on rtpengine).
        wait_until(
            lambda: (
                bridge._relayed is not None
                and bridge._relayed.still_heard(media_relay.Side.CALLER, 2.0)
            ),
            15,
            message="rtpengine hears the caller",
        )

        bridge.hold()  # rtpengine refuses to play: the media comes back, the edge plays it

        assert bridge.held and ng.list_calls() == []
        assert reinvited_to(caller_trace)[-1] == (HOST, caller_leg.rtp_port)
        assert reinvited_to(agent_trace)[-1] == (HOST, agent_leg.rtp_port)
        before = len(rtp.packets)
        wait_until(
            lambda: (
                rms(b"".join(codecs.ulaw_decode(p.payload) for p in rtp.packets[before:])) > 500
            ),
            5,
            message="the hold audio at the caller's phone, from the edge",
        )
        bridge.unhold()
        said_by_caller = noise(1.0, 4)
        paced_send(rtp, (HOST, caller_leg.rtp_port), said_by_caller, 0x1111).join(5)
        wait_until(lambda: centre.ended, 20, message="the caller's BYE ended the bridge")
    finally:
        centre.acd.stop()
        out_agent, _ = agent_phone.communicate(timeout=40)
        out_caller, _ = caller_phone.communicate(timeout=40)
    assert agent_phone.returncode == 0, out_agent[-2500:]  # both re-INVITEs, our BYE
    assert caller_phone.returncode == 0, out_caller[-2500:]
    heard_by_agent = agent_rtp.received_audio(codecs.PCMU)
    assert best_lag_correlation(on_the_wire(said_by_caller), heard_by_agent) >= 0.99
    assert centre.ended[0].hold_s > 0


def test_given_rtpengine_away_then_the_bridge_runs_on_the_edge_s_own_relay(
    edges, rtp, agent_rtp, silent_ng, tmp_path
):
    seat_port = free_udp_port()
    agent_phone = start_sipp(
        "uas_agent_answer.xml", port=seat_port, keys={"rtp_port": agent_rtp.port}, timeout=40
    )
    centre = start_centre(
        edges,
        tmp_path,
        seat_port,
        media_relay="rtpengine",
        rtpengine_ng=silent_ng,
    )
    caller_phone = start_sipp(
        "uac_call.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=8000,
        timeout=40,
    )
    try:
        wait_until(lambda: centre.bridged, 15, message="bridged")
        caller_leg, agent_leg = centre.bridged[0]
        said_by_caller = noise(1.0, 3)
        # The bridge first waits out the ng client's attempts (3 x 1 s), then relays itself.
        wait_until(lambda: centre.heard[Side.CALLER], 10, message="the own relay reads")
        paced_send(rtp, (HOST, caller_leg.rtp_port), said_by_caller, 0x1111).join(5)
        wait_until(lambda: centre.ended, 20, message="the caller's BYE ended the bridge")
    finally:
        centre.acd.stop()
        out_agent, _ = agent_phone.communicate(timeout=40)
        out_caller, _ = caller_phone.communicate(timeout=40)
    assert agent_phone.returncode == 0, out_agent[-2500:]
    assert caller_phone.returncode == 0, out_caller[-2500:]
    heard_by_agent = agent_rtp.received_audio(codecs.PCMU)
    assert best_lag_correlation(on_the_wire(said_by_caller), heard_by_agent) >= 0.99


def test_media_relay_setting_is_checked():
    with pytest.raises(ValueError, match="rtpengine_ng"):
        SipConfig(media_relay="rtpengine")
    with pytest.raises(ValueError, match="own or rtpengine"):
        SipConfig(media_relay="kamailio")
    assert SipConfig().media_relay == "own"


def test_telephony_settings_default_to_the_own_relay(monkeypatch):
    from core.settings import TelephonySettings

    assert TelephonySettings().media_relay == "own"
    with pytest.raises(ValueError, match="rtpengine_ng"):
        TelephonySettings(media_relay="rtpengine")
    assert TelephonySettings(media_relay="rtpengine", rtpengine_ng="127.0.0.1:2223").rtpengine_ng
