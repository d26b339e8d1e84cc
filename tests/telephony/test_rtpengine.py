"""The ng client against a real rtpengine (Debian's rtpengine-daemon, userspace forwarding) on
loopback: two plain UDP peers set up a call through it by offer/answer, each hears the other
through rtpengine's ports, a tap (subscribe) gets a copy of one side, delete ends it all. The
bencode and the retry are checked against bytes and a scripted UDP server."""

from __future__ import annotations

import random
import socket
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from telephony import codecs
from telephony.bencode import BencodeError, bdecode, bencode
from telephony.recording import Side
from telephony.rtp_packet import build_rtp, parse_rtp
from telephony.rtpengine import (
    Daemon,
    MediaTap,
    NgClient,
    RtpengineError,
    TapPump,
    audio_sdp,
    media_address,
    relay_bridge,
)
from tests.conftest import wait_until
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire, paced_send
from tests.telephony.sip_peers import HOST, free_udp_port


class UdpPeer:
    """One leg's phone: a socket that sends numbered RTP and reads what comes."""

    def __init__(self, ssrc: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2)
        self.port = self.sock.getsockname()[1]
        self.ssrc = ssrc
        self.seq = 0

    def send(self, to: tuple[str, int], payload: bytes) -> None:
        self.sock.sendto(
            build_rtp(
                payload_type=0,
                sequence=self.seq,
                timestamp=self.seq * 160,
                ssrc=self.ssrc,
                payload=payload,
            ),
            to,
        )
        self.seq += 1

    def receive(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return parse_rtp(self.sock.recv(2048)).payload
        except TimeoutError:
            return None


@pytest.fixture
def ng(tmp_path: Path) -> Iterator[NgClient]:
    # A window of its own in the high ports, so parallel workers rarely share one (rtpengine
    # skips a port already taken anyway).
    low = random.randrange(40_000, 59_000, 2)
    with Daemon(
        ng_port=free_udp_port(),
        port_min=low,
        port_max=low + 200,
        log_path=tmp_path / "rtpengine.log",
    ) as client:
        yield client


@pytest.fixture
def legs() -> Iterator[tuple[UdpPeer, UdpPeer]]:
    a, b = UdpPeer(0xA), UdpPeer(0xB)
    yield a, b
    a.sock.close()
    b.sock.close()


def _frame(byte: int) -> bytes:
    return bytes([byte]) * 160


def _bridge(ng: NgClient, a: UdpPeer, b: UdpPeer, call_id: str = "call-1"):
    """Offer from A, answer from B: where A and B must each send (rtpengine's ports)."""
    to_b = ng.offer(call_id=call_id, from_tag="tag-a", sdp=audio_sdp(HOST, a.port))
    to_a = ng.answer(call_id=call_id, from_tag="tag-a", to_tag="tag-b", sdp=audio_sdp(HOST, b.port))
    return media_address(to_a), media_address(to_b)


# --------------------------------------------------------------------------- bencode


def test_given_nested_values_then_bencode_round_trips_with_keys_sorted():
    value = {"sdp": "v=0\r\n", "flags": ["a", "b"], "n": 42, "neg": -3, "d": {"z": 1, "a": []}}
    raw = bencode(value)
    assert raw == b"d1:dd1:ale1:zi1ee5:flagsl1:a1:be1:ni42e3:negi-3e3:sdp5:v=0\r\ne"
    assert bdecode(raw) == value


@pytest.mark.parametrize("raw", [b"i12", b"5:abc", b"l1:a", b"d1:ae", b"x", b"i1ei2e", b""])
def test_given_malformed_bencode_then_it_is_refused(raw):
    with pytest.raises(BencodeError):
        bdecode(raw)


def test_given_an_sdp_then_its_first_audio_address_is_read_media_level_c_first():
    sdp = (
        "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n"
        "m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.3\r\n"
    )
    assert media_address(sdp) == ("10.0.0.2", 4000)
    assert media_address(audio_sdp("127.0.0.1", 7000)) == ("127.0.0.1", 7000)
    with pytest.raises(ValueError):
        media_address("v=0\r\nm=video 5000 RTP/AVP 96\r\n")


# --------------------------------------------------------------------------- protocol


def test_given_a_lost_answer_then_the_request_is_resent_with_the_same_cookie():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((HOST, 0))
    server.settimeout(5)
    seen: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            data, source = server.recvfrom(4096)
            seen.append(data)
        cookie = data.partition(b" ")[0]
        server.sendto(b"stale " + bencode({"result": "error"}), source)  # not ours: skipped
        server.sendto(cookie + b" " + bencode({"result": "pong"}), source)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert NgClient(server.getsockname(), timeout=0.3, attempts=3).ping()
    finally:
        thread.join(5)
        server.close()
    assert len(seen) == 2 and seen[0] == seen[1]
    assert bdecode(seen[0].partition(b" ")[2]) == {"command": "ping"}


def test_given_nobody_listens_then_the_client_gives_up_with_an_error():
    client = NgClient((HOST, free_udp_port()), timeout=0.1, attempts=2)
    with pytest.raises(RtpengineError, match="did not answer 'ping'"):
        client.ping()


# --------------------------------------------------------------------------- real rtpengine


def test_given_rtpengine_running_then_ping_answers_pong(ng):
    assert ng.ping()


def test_given_offer_and_answer_then_each_leg_hears_the_other_through_rtpengine(ng, legs):
    a, b = legs
    a_sends_to, b_sends_to = _bridge(ng, a, b)
    assert a_sends_to[1] not in (a.port, b.port) and b_sends_to[1] not in (a.port, b.port)
    for i in range(5):
        a.send(a_sends_to, _frame(i))
        assert b.receive() == _frame(i)
        b.send(b_sends_to, _frame(100 + i))
        assert a.receive() == _frame(100 + i)
    totals = ng.query(call_id="call-1")["totals"]["RTP"]
    assert totals["packets"] >= 10 and totals["errors"] == 0
    assert "call-1" in ng.list_calls()


def test_given_delete_then_the_call_is_gone_and_nothing_more_is_relayed(ng, legs):
    a, b = legs
    a_sends_to, _ = _bridge(ng, a, b)
    a.send(a_sends_to, _frame(1))
    assert b.receive() == _frame(1)
    ng.delete(call_id="call-1")
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        ng.query(call_id="call-1")
    assert "call-1" not in ng.list_calls()
    a.send(a_sends_to, _frame(2))
    assert b.receive(timeout=0.5) is None


def test_given_an_answer_for_an_unknown_call_then_rtpengine_refuses_it(ng, legs):
    _, b = legs
    with pytest.raises(RtpengineError, match="answer"):
        ng.answer(call_id="nope", from_tag="x", to_tag="y", sdp=audio_sdp(HOST, b.port))


def test_given_a_subscription_to_the_caller_then_the_tap_gets_the_caller_only(ng, legs):
    a, b = legs
    tap = UdpPeer(0xC)
    try:
        a_sends_to, b_sends_to = _bridge(ng, a, b)
        sub = ng.subscribe_request(call_id="call-1", from_tag="tag-a")
        assert "a=sendonly" in sub.sdp and sub.to_tag
        ng.subscribe_answer(
            call_id="call-1",
            to_tag=sub.to_tag,
            sdp=audio_sdp(HOST, tap.port, direction="recvonly"),
        )
        for i in range(3):
            a.send(a_sends_to, _frame(i))
            assert b.receive() == _frame(i)
            assert tap.receive() == _frame(i)
        b.send(b_sends_to, _frame(200))
        assert a.receive() == _frame(200)
        assert tap.receive(timeout=0.5) is None  # the agent's side is not in this tap
        ng.unsubscribe(call_id="call-1", to_tag=sub.to_tag)
        a.send(a_sends_to, _frame(9))
        assert b.receive() == _frame(9)
        assert tap.receive(timeout=0.5) is None
    finally:
        tap.sock.close()


def test_given_a_daemon_that_cannot_start_then_the_error_says_so(tmp_path):
    daemon = Daemon(
        ng_port=free_udp_port(),
        port_min=40_000,
        port_max=40_010,
        log_path=tmp_path / "log",
        extra_args=["--no-such-option"],
    )
    with pytest.raises(RtpengineError, match="did not start"):
        daemon.start(timeout=5)
    assert daemon.process is None


def test_given_a_relayed_bridge_with_a_tap_then_each_side_hears_the_other_and_the_edge_records_both(
    ng, legs, tmp_path
):
    a, b = legs
    caller_says, agent_says = noise(1.0, seed=1), noise(1.0, seed=2)
    heard_by_asr: list[bytes] = []
    tap = MediaTap(
        host=HOST,
        recording=tmp_path / "bridge.wav",
        on_audio=lambda side, pcm: heard_by_asr.append(pcm) if side is Side.CALLER else None,
        read_timeout_s=0.1,
    )
    relayed = relay_bridge(
        ng,
        call_id="call-t",
        caller_sdp=audio_sdp(HOST, a.port),
        agent_sdp=audio_sdp(HOST, b.port),
        tap=tap,
    )
    assert len(relayed.taps) == 2
    tap.start()
    try:
        senders = [
            paced_send(a, media_address(relayed.to_caller), caller_says, ssrc=0xA),
            paced_send(b, media_address(relayed.to_agent), agent_says, ssrc=0xB),
        ]
        got_by_agent = [b.receive() for _ in range(50)]
        got_by_caller = [a.receive() for _ in range(50)]
        for sender in senders:
            sender.join(10)
        wait_until(lambda: sum(map(len, heard_by_asr)) >= len(caller_says), 10, message="asr")
    finally:
        tap.stop()
        ng.delete(call_id="call-t")
    assert b"".join(p for p in got_by_agent if p) == codecs.ulaw_encode(caller_says)
    assert b"".join(p for p in got_by_caller if p) == codecs.ulaw_encode(agent_says)
    with wave.open(str(tmp_path / "bridge.wav")) as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    left, right = frames[0::2].tobytes(), frames[1::2].tobytes()
    assert best_lag_correlation(on_the_wire(caller_says), left) > 0.99
    assert best_lag_correlation(on_the_wire(agent_says), right) > 0.99
    assert best_lag_correlation(on_the_wire(caller_says), b"".join(heard_by_asr)) > 0.99


def test_given_a_tap_then_the_edge_sends_rtpengine_nothing_back(ng, legs):
    """The taps are receive-only: no comfort silence paced back to rtpengine's tap ports
    (which it would count and drop), 50 packets a second per party of every call."""
    a, b = legs
    tap = MediaTap(host=HOST, read_timeout_s=0.1)
    relayed = relay_bridge(
        ng,
        call_id="call-q",
        caller_sdp=audio_sdp(HOST, a.port),
        agent_sdp=audio_sdp(HOST, b.port),
        tap=tap,
    )
    subscribers = {sub.to_tag for sub in relayed.taps}
    tap.start()
    try:
        sender = paced_send(a, media_address(relayed.to_caller), noise(0.5, seed=3), ssrc=0xA)
        sender.join(10)
        wait_until(lambda: tap.sessions[Side.CALLER].stats["received"] >= 20, 5, message="the copy")
        tags = ng.query(call_id="call-q")["tags"]
    finally:
        tap.stop()
        ng.delete(call_id="call-q")
    from_edge = [
        stream["stats"]["packets"]
        for tag in subscribers
        for media in tags[tag]["medias"]
        for stream in media["streams"]
    ]
    assert from_edge and sum(from_edge) == 0


def test_given_many_taps_then_one_pump_thread_reads_them_all():
    """Two reader threads per call, each woken ten times a second, were the SIP process's
    CPU at a hundred relayed calls: every tap is read by the process's one pump."""
    pump = TapPump(interval_s=0.05, name="tap-pump-under-test")
    before = set(threading.enumerate())
    taps = [MediaTap(host=HOST) for _ in range(20)]
    try:
        for tap in taps:
            tap.start(pump)
        assert len(pump) == 20
        started = [t.name for t in threading.enumerate() if t not in before]
        assert started == ["tap-pump-under-test"]
        wait_until(lambda: pump.sweeps >= 3, 5, message="sweeps")
    finally:
        for tap in taps:
            tap.stop()
        pump.stop()
    assert len(pump) == 0


def test_given_a_tap_stopped_then_what_its_socket_held_reaches_the_sink_and_no_more(legs):
    a, _ = legs
    heard: list[tuple[Side, bytes]] = []
    pump = TapPump(interval_s=0.05)
    tap = MediaTap(host=HOST, read_timeout_s=0.1)
    tap.sessions[Side.CALLER].set_remote(("127.0.0.1", a.port))
    try:
        tap.open(lambda side, pcm: heard.append((side, pcm)))
        pump.add(tap)
        caller_port = tap.sessions[Side.CALLER].local_address
        for i in range(10):
            a.send(caller_port, _frame(0x20 + i))
        tap.stop()  # before the pump came round, most likely: nothing may be lost
        got = b"".join(pcm for side, pcm in heard if side is Side.CALLER)
        count = len(heard)
        wait_until(lambda: pump.sweeps >= 2, 5, message="sweeps after the stop")
    finally:
        pump.stop()
    expected = codecs.ulaw_decode(b"".join(_frame(0x20 + i) for i in range(10)))
    assert got.endswith(expected) and not got[: -len(expected)].strip(b"\0")
    assert len(heard) == count  # not pumped after its stop
