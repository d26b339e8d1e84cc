"""The edge around rtpengine-relayed (and own-relay) bridged calls, with real sipp phones and a
real rtpengine on loopback: the taps listen on the edge's own RTP ports (``rtp_low`` …
``rtp_high``, so a firewall opened for the edge is enough) and give them back at the hang-up;
a phone that stops sending is hung up on both sides by the media timeout, on rtpengine and on
the edge's own relay; hold audio on a relayed call is played by rtpengine, the phones staying
where they are."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from core.settings import TelephonySettings
from telephony import codecs
from telephony.acd import Acd, AcdConfig
from telephony.acd_dial import DialRinger
from telephony.acd_memory import MemoryAgentPool
from telephony.bridge import Bridge, BridgeResult
from telephony.endpoint import FRAME_BYTES, Call
from telephony.flows import FlowHooks, FlowSettings
from telephony.media_relay import hold_wav
from telephony.media_timeout import MEDIA_TIMEOUT, MediaWatch
from telephony.prompts import hold_music
from telephony.queue_flow import QueueHooks, serve_queue
from telephony.recording import Side
from telephony.rtp_packet import build_rtp
from telephony.rtp_session import RtpSession
from telephony.rtpengine import NgClient
from telephony.sip_config import SipConfig
from telephony.sip_reinvite import NOWHERE
from tests.conftest import wait_until
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire, paced_send
from tests.telephony.fakes import FakePrompts
from tests.telephony.sip_peers import (
    HOST,
    Harness,
    RtpPeer,
    dominant_frequency,
    free_udp_port,
    rms,
    start_edge,
    start_sipp,
)
from tests.telephony.test_rtpengine_bridge import (  # noqa: F401 - ng, agent_rtp: fixtures
    agent_rtp,
    ng,
    reinvited_to,
    relay_address,
)

HOLD_MUSIC = hold_music(2.0)  # one turn of the arpeggio: C5 E5 G5 E5, 0.5 s each


@pytest.fixture
def talking() -> Iterator[threading.Event]:
    """Set at the end of the test: phones ``keep_talking`` stop."""
    stop = threading.Event()
    yield stop
    stop.set()


def keep_talking(
    peer: RtpPeer, to: tuple[str, int], stop: threading.Event, ssrc: int
) -> threading.Thread:
    """A phone that sends a quiet tone every 20 ms until ``stop`` (at most a minute)."""
    tone = (300 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()
    payload = codecs.ulaw_encode(tone)

    def run() -> None:
        start = time.monotonic()
        for i in range(3000):
            if stop.wait(max(0.0, start + 0.02 * i - time.monotonic())):
                return
            packet = build_rtp(
                payload_type=codecs.PCMU, sequence=i, timestamp=160 * i, ssrc=ssrc, payload=payload
            )
            try:
                peer.sock.sendto(packet, to)
            except OSError:
                return

    thread = threading.Thread(target=run, name="talking-phone", daemon=True)
    thread.start()
    return thread


@dataclass
class Centre:
    harness: Harness
    acd: Acd
    bridged: list[tuple[Call, Call]] = field(default_factory=list)
    ended: list[tuple[float, BridgeResult]] = field(default_factory=list)  # (monotonic, result)
    bridges: list[Bridge] = field(default_factory=list)

    def bridge(self, *args, **options) -> Bridge:
        made = Bridge(*args, **{**options, "hold_audio": HOLD_MUSIC})
        self.bridges.append(made)
        return made


def start_centre(
    edges, tmp_path: Path, seat_port: int, *, agents: int = 1, **edge_config
) -> Centre:
    """An edge whose handler is the queue flow; ``agents`` ready operators, every one's seat
    the phone at ``seat_port``."""
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
    for n in range(agents):
        pool.sign_in(f"agent{n}", f"80{n:02d}")
        pool.set_ready(f"agent{n}")

    def handler(call: Call) -> None:
        centre = box[0]
        serve_queue(
            call,
            acd=acd,
            prompts=FakePrompts(),
            hooks=FlowHooks(),
            settings=FlowSettings(recording_dir=tmp_path),
            queue_hooks=QueueHooks(
                on_bridged=lambda c, leg, offer: centre.bridged.append((c, leg)),
                on_bridge_ended=lambda c, result: centre.ended.append((time.monotonic(), result)),
                bridge_factory=centre.bridge,
            ),
        )

    harness = start_edge(handler, **edge_config)
    edges.append(harness)
    box.append(Centre(harness, acd))
    acd.start()
    return box[0]


def rtpengine_mode(ng: NgClient) -> dict[str, object]:
    return {"media_relay": "rtpengine", "rtpengine_ng": f"{ng.address[0]}:{ng.address[1]}"}


def finish(*phones) -> list[str]:
    """Each sipp's exit: the problems of those that did not end well."""
    problems = []
    for phone in phones:
        out, _ = phone.communicate(timeout=40)
        if phone.returncode != 0:
            problems.append(out[-2500:])
    return problems


# ------------------------------------------------------------------ the taps' ports


def test_given_relayed_calls_then_the_taps_use_the_edge_s_rtp_ports_and_give_them_back(
    edges, ng, rtp, agent_rtp, tmp_path
):
    calls = 3
    low = random.randrange(30_000, 39_000, 2)
    high = low + 60
    seat_port = free_udp_port()
    agent_phone = start_sipp(
        "uas_agent_reinvited.xml",
        port=seat_port,
        calls=calls,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
    )
    centre = start_centre(
        edges, tmp_path, seat_port, agents=calls, rtp_low=low, rtp_high=high, **rtpengine_mode(ng)
    )
    ports = centre.harness.edge._ports
    before = ports.in_use
    caller_phone = start_sipp(
        "uac_call_reinvited.xml",
        target=centre.harness.target,
        calls=calls,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=4000,
        timeout=40,
    )
    try:
        wait_until(
            lambda: len(centre.bridges) == calls and all(b._relayed for b in centre.bridges),
            20,
            message="every call on rtpengine",
        )
        held = ports.in_use
        tapped = {
            session.local_address[1]
            for bridge in centre.bridges
            for session in bridge._relayed.tap.sessions.values()
        }
        assert len(tapped) == 2 * calls
        assert all(low <= port < high for port in tapped), (sorted(tapped), low, high)
        assert tapped <= held  # handed out by the edge's allocator, not the OS
        wait_until(lambda: len(centre.ended) == calls, 20, message="every call ended")
    finally:
        centre.acd.stop()
        problems = finish(agent_phone, caller_phone)
    assert not problems, problems
    wait_until(lambda: ports.in_use == before, 5, message="every port given back")
    assert ng.list_calls() == []


# ------------------------------------------------------------------ the media timeout


def test_given_a_relayed_caller_who_goes_silent_then_both_legs_are_hung_up_by_the_timeout(
    edges, ng, rtp, agent_rtp, talking, tmp_path
):
    seat_port = free_udp_port()
    caller_trace, agent_trace = tmp_path / "caller.log", tmp_path / "agent.log"
    agent_phone = start_sipp(
        "uas_agent_reinvited.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
        trace=agent_trace,
    )
    centre = start_centre(edges, tmp_path, seat_port, rtp_timeout_s=2.0, **rtpengine_mode(ng))
    caller_phone = start_sipp(
        "uac_call_reinvited_until_bye.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        timeout=40,
        trace=caller_trace,
    )
    try:
        wait_until(lambda: relay_address(caller_trace), 15, message="the caller re-INVITEd")
        wait_until(lambda: relay_address(agent_trace), 15, message="the agent re-INVITEd")
        caller_leg, agent_leg = centre.bridged[0]
        to_caller_side, to_agent_side = relay_address(caller_trace), relay_address(agent_trace)
        assert to_caller_side and to_agent_side
        keep_talking(agent_rtp, to_agent_side, talking, 0x2222)  # the operator stays
        paced_send(rtp, to_caller_side, noise(1.0, 1), 0x1111).join(5)
        silent_since = time.monotonic()  # the caller's phone is gone, without a BYE
        wait_until(lambda: centre.ended, 15, message="the media timeout ended the call")
    finally:
        talking.set()
        centre.acd.stop()
        problems = finish(agent_phone, caller_phone)
    assert not problems, problems  # each phone got the edge's BYE and answered it
    ended_at, result = centre.ended[0]
    assert result.media_timeout is Side.CALLER and result.ended_by is None
    assert ended_at - silent_since >= 1.8  # not before the timeout
    wait_until(lambda: len(centre.harness.ended) == 2, 5, message="both legs ended")
    assert {call.disposition for call in centre.harness.ended} == {MEDIA_TIMEOUT}
    assert caller_leg.media_timed_out and agent_leg.media_timed_out
    wait_until(lambda: ng.list_calls() == [], 5, message="the call deleted in rtpengine")


def test_given_taps_that_stop_reaching_the_edge_then_talking_phones_are_not_hung_up(
    edges, ng, rtp, agent_rtp, talking, tmp_path, caplog
):
    """The edge's media timeout in rtpengine mode watches the taps; when they go quiet while
    rtpengine still hears the phones (a firewall drops the copies), the call goes on."""
    seat_port = free_udp_port()
    caller_trace, agent_trace = tmp_path / "caller.log", tmp_path / "agent.log"
    agent_phone = start_sipp(
        "uas_agent_reinvited.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
        trace=agent_trace,
    )
    centre = start_centre(edges, tmp_path, seat_port, rtp_timeout_s=1.5, **rtpengine_mode(ng))
    caller_phone = start_sipp(
        "uac_call_reinvited.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=6000,
        timeout=40,
        trace=caller_trace,
    )
    try:
        wait_until(lambda: relay_address(caller_trace), 15, message="the caller re-INVITEd")
        wait_until(lambda: relay_address(agent_trace), 15, message="the agent re-INVITEd")
        to_caller_side, to_agent_side = relay_address(caller_trace), relay_address(agent_trace)
        assert to_caller_side and to_agent_side
        keep_talking(rtp, to_caller_side, talking, 0x1111)
        keep_talking(agent_rtp, to_agent_side, talking, 0x2222)
        relayed = centre.bridges[0]._relayed
        assert relayed is not None
        for session in relayed.tap.sessions.values():
            session.set_remote((HOST, 9))  # a firewall: rtpengine's copies no longer come in
        with caplog.at_level(logging.WARNING, logger="telephony.bridge"):
            wait_until(lambda: centre.ended, 20, message="the caller's BYE ended the bridge")
    finally:
        talking.set()
        centre.acd.stop()
        problems = finish(agent_phone, caller_phone)
    assert not problems, problems
    _, result = centre.ended[0]
    assert result.media_timeout is None and result.ended_by is Side.CALLER
    assert "copies do not reach the edge" in caplog.text


def test_given_an_own_relay_caller_who_goes_silent_then_both_legs_are_hung_up_by_the_timeout(
    edges, rtp, agent_rtp, talking, tmp_path
):
    seat_port = free_udp_port()
    agent_phone = start_sipp(
        "uas_agent_answer.xml", port=seat_port, keys={"rtp_port": agent_rtp.port}, timeout=40
    )
    centre = start_centre(edges, tmp_path, seat_port, rtp_timeout_s=2.0)
    caller_phone = start_sipp(
        "uac_call_until_bye.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        timeout=40,
    )
    try:
        wait_until(lambda: centre.bridged, 15, message="bridged")
        caller_leg, agent_leg = centre.bridged[0]
        keep_talking(agent_rtp, (HOST, agent_leg.rtp_port), talking, 0x2222)
        paced_send(rtp, (HOST, caller_leg.rtp_port), noise(1.0, 1), 0x1111).join(5)
        silent_since = time.monotonic()
        wait_until(lambda: centre.ended, 15, message="the media timeout ended the call")
    finally:
        talking.set()
        centre.acd.stop()
        problems = finish(agent_phone, caller_phone)
    assert not problems, problems
    ended_at, result = centre.ended[0]
    assert result.media_timeout is Side.CALLER and result.ended_by is None
    assert ended_at - silent_since >= 1.8
    wait_until(lambda: len(centre.harness.ended) == 2, 5, message="both legs ended")
    assert {call.disposition for call in centre.harness.ended} == {MEDIA_TIMEOUT}
    assert caller_leg.media_timed_out and agent_leg.media_timed_out


def test_media_watch_counts_only_expected_silence():
    watch = MediaWatch(2.0)
    assert not watch.quiet("leg", 10, 0.0)  # first look: the clock starts
    assert not watch.quiet("leg", 10, 1.9)
    assert not watch.quiet("leg", 11, 2.5)  # a packet came: again
    assert not watch.quiet("leg", 11, 4.0)
    assert watch.quiet("leg", 11, 4.5)
    assert not watch.quiet("held", 5, 0.0, expected=False)  # on hold: never
    assert not watch.quiet("held", 5, 10.0, expected=False)
    assert not watch.quiet("held", 5, 11.0)  # back: the clock starts then
    assert watch.quiet("held", 5, 13.0)
    assert not MediaWatch(0).quiet("leg", 1, 1e9)  # 0: no timeout
    assert not watch.quiet("fake", None, 1e9)  # nothing to count


# ------------------------------------------------------------------ hold on rtpengine


def test_hold_wav_is_a_mu_law_file_within_one_ng_datagram(tmp_path):
    blob = hold_wav(hold_music(8.0))
    assert len(blob) < 60_000
    header = blob[:64]
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE"
    assert int.from_bytes(header[20:22], "little") == 7  # WAVE_FORMAT_MULAW
    data = blob[blob.index(b"data") + 8 :]
    assert len(data) == 6 * 8000
    assert data == codecs.ulaw_encode(hold_music(8.0)[: 6 * 8000 * 2])


def test_given_a_relayed_call_on_hold_then_rtpengine_plays_the_hold_audio_to_the_caller(
    edges, ng, rtp, agent_rtp, tmp_path
):
    seat_port = free_udp_port()
    agent_trace, caller_trace = tmp_path / "agent.log", tmp_path / "caller.log"
    # Each phone takes exactly one re-INVITE (to rtpengine): holding must not move them back.
    agent_phone = start_sipp(
        "uas_agent_reinvited.xml",
        port=seat_port,
        keys={"rtp_port": agent_rtp.port},
        timeout=40,
        trace=agent_trace,
    )
    centre = start_centre(edges, tmp_path, seat_port, **rtpengine_mode(ng))
    caller_phone = start_sipp(
        "uac_call_reinvited.xml",
        target=centre.harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        hold=9000,
        timeout=40,
        trace=caller_trace,
    )
    try:
        wait_until(lambda: relay_address(caller_trace), 15, message="the caller re-INVITEd")
        wait_until(lambda: relay_address(agent_trace), 15, message="the agent re-INVITEd")
        to_caller_side, to_agent_side = relay_address(caller_trace), relay_address(agent_trace)
        assert to_caller_side and to_agent_side
        bridge = centre.bridges[0]
        call_id = ng.list_calls()[0]

        bridge.hold()

        assert bridge.held and ng.list_calls() == [call_id]  # still relayed by rtpengine
        before = len(rtp.packets)
        wait_until(
            lambda: (
                rms(b"".join(codecs.ulaw_decode(p.payload) for p in rtp.packets[before:])) > 500
            ),
            15,  # 5 s was missed once by CI on a loaded machine (2026-12-06)
            message="the hold audio at the caller's phone, from rtpengine",
        )
        heard_before = len(agent_rtp.packets)
        said_on_hold = noise(1.0, 5)
        paced_send(rtp, to_caller_side, said_on_hold, 0x1111).join(5)
        wait_until(lambda: len(rtp.packets) > before + 100, 5, message="1.5 s of hold audio")
        held_audio = [p for p in rtp.packets[before:] if p.payload_type == codecs.PCMU]
        on_hold = agent_rtp.packets[heard_before:]

        bridge.unhold()

        said_after = noise(1.0, 6)
        heard_after = len(agent_rtp.packets)
        paced_send(rtp, to_caller_side, said_after, 0x1112).join(5)
        wait_until(lambda: centre.ended, 20, message="the caller's BYE ended the bridge")
    finally:
        centre.acd.stop()
        problems = finish(agent_phone, caller_phone)
    assert not problems, problems  # neither phone was re-INVITEd back to the edge
    assert len(reinvited_to(caller_trace)) == 1 and len(reinvited_to(agent_trace)) == 1

    # What the caller heard on hold is the hold music (from one SSRC: rtpengine's player).
    assert len({p.ssrc for p in held_audio[-50:]}) == 1
    played = b"".join(codecs.ulaw_decode(p.payload) for p in held_audio[-50:])
    assert 500 < dominant_frequency(played) < 800
    looped = on_the_wire(HOLD_MUSIC * 3)
    assert best_lag_correlation(played[: FRAME_BYTES * 25], looped) >= 0.95
    # The operator heard nothing of the caller meanwhile, and the caller again after.
    heard_on_hold = b"".join(codecs.ulaw_decode(p.payload) for p in on_hold)
    assert best_lag_correlation(on_the_wire(said_on_hold), heard_on_hold.ljust(16000, b"\0")) < 0.3
    heard = b"".join(codecs.ulaw_decode(p.payload) for p in agent_rtp.packets[heard_after:])
    assert best_lag_correlation(on_the_wire(said_after), heard) >= 0.99
    _, result = centre.ended[0]
    assert result.hold_s > 0
    # The recording goes on after the hold (rtpengine 10.5 blocks the taps with the flow).
    assert result.recording is not None
    with wave.open(str(result.recording)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert best_lag_correlation(on_the_wire(said_after), samples[0::2].tobytes()) >= 0.99


def test_the_media_timeout_is_a_setting_of_the_edge():
    assert TelephonySettings().rtp_timeout_s == 60.0  # what `hotline sip` gives its edge
    assert SipConfig().rtp_timeout_s == 0  # an edge made without it: no media timeout
    assert TelephonySettings(rtp_timeout_s=0).rtp_timeout_s == 0  # never
    with pytest.raises(ValueError):
        TelephonySettings(rtp_timeout_s=-1)
    with pytest.raises(ValueError, match="rtp_timeout_s"):
        SipConfig(rtp_timeout_s=-1)


# ------------------------------------------------------------------ a leg whose media moved


def test_given_a_leg_moved_to_rtpengine_when_a_straggler_comes_then_the_edge_sends_it_nothing():
    """A packet the phone sent just before it followed the re-INVITE to rtpengine reaches the
    edge's own session after it was told to send nowhere; latching on to it would send the
    phone the edge's comfort silence again, a second stream beside rtpengine's."""
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind((HOST, 0))
    phone.settimeout(0.3)
    session = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=phone.getsockname(),
        payload_type=codecs.PCMU,
        dtmf_payload_type=None,
        latch=True,
        latch_from=[HOST],
    )
    session.start()
    try:
        phone.recv(2048)  # the edge sends to the phone
        session.set_remote(NOWHERE)  # what ``reinvite_away`` does once the phone moved
        with contextlib.suppress(TimeoutError):
            while True:
                phone.recv(2048)  # what was sent before the move
        straggler = build_rtp(
            payload_type=codecs.PCMU, sequence=1, timestamp=160, ssrc=5, payload=b"\xff" * 160
        )
        phone.sendto(straggler, session.local_address)
        wait_until(lambda: session.stats["foreign_source"] == 1, 3, message="the straggler")
        with pytest.raises(TimeoutError):
            phone.recv(2048)
        assert session.remote == NOWHERE
    finally:
        session.stop()
        phone.close()
