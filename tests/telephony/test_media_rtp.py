"""RtpSession against a raw UDP peer on loopback; every port comes from the OS or the
allocator, so parallel workers never collide."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from telephony import codecs
from telephony.endpoint import FRAME_BYTES, FRAME_SAMPLES
from telephony.rtp import (
    MediaLoop,
    NoFreeRtpPort,
    RtpPortAllocator,
    RtpSession,
    build_rtp,
    parse_rtp,
)
from tests.conftest import wait_until

HOST = "127.0.0.1"
DTMF_PT = 101


class Peer:
    """The far end: a bare UDP socket that speaks RTP by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2)
        self.address = self.sock.getsockname()
        self.seq = 65_500  # wraps too
        self.ts = 4_294_960_000  # wraps within the first second: unwrapping is exercised
        self.ssrc = 0x1234ABCD

    def send_raw(self, to: tuple[str, int], data: bytes) -> None:
        self.sock.sendto(data, to)

    def send_audio(
        self, to, payload: bytes, *, pt: int, skip: bool = False, marker: bool = False
    ) -> None:
        if not skip:
            self.sock.sendto(
                build_rtp(
                    payload_type=pt,
                    sequence=self.seq,
                    timestamp=self.ts,
                    ssrc=self.ssrc,
                    payload=payload,
                    marker=marker,
                ),
                to,
            )
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + len(payload)) & 0xFFFFFFFF

    def receive(self) -> bytes:
        return self.sock.recvfrom(4096)[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def _session(peer: Peer, *, pt: int = codecs.PCMU, **kwargs) -> RtpSession:
    return RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=peer.address,
        payload_type=pt,
        dtmf_payload_type=DTMF_PT,
        **kwargs,
    )


@pytest.fixture
def sessions() -> Iterator[list[RtpSession]]:
    made: list[RtpSession] = []
    yield made
    for s in made:
        s.stop()


def _speechlike(seconds: float, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    signal = sum(
        np.sin(2 * np.pi * f * t + f) / k for k, f in enumerate((220, 470, 1130, 2250), start=1)
    )
    return (amplitude * envelope * signal / 2).astype(np.int16)


def _read_all(session: RtpSession, frames: int, timeout: float = 5.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < frames * FRAME_BYTES and time.monotonic() < deadline:
        frame = session.read_frame(0.2)
        assert frame is not None
        out += frame
    return bytes(out)


def _snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    noise = decoded.astype(float) - reference.astype(float)
    return 10 * np.log10(np.sum(reference.astype(float) ** 2) / np.sum(noise**2))


@pytest.mark.parametrize("pt", [codecs.PCMU, codecs.PCMA])
def test_given_g711_stream_when_received_then_16_bit_audio_matches_the_input(peer, sessions, pt):
    session = _session(peer, pt=pt)
    sessions.append(session)
    session.start()
    source = _speechlike(1.0)
    encode = codecs.encoder(pt)
    for i in range(0, len(source), FRAME_SAMPLES):
        peer.send_audio(
            session.local_address,
            encode(source[i : i + FRAME_SAMPLES].tobytes()),
            pt=pt,
            marker=i == 0,
        )
    received = np.frombuffer(_read_all(session, len(source) // FRAME_SAMPLES), dtype="<i2")

    assert len(received) == len(source)
    assert np.corrcoef(source, received)[0, 1] > 0.99
    # G.711 gives ≈ 37 dB on speech-level signals; pyVoIP's 8-bit output gave ≈ 26 dB.
    assert _snr_db(source, received) > 33
    assert session.stats["received"] == 50
    assert session.stats["lost"] == 0


def test_given_pcma_call_when_sending_then_packets_carry_pt_8_and_alaw_with_sound_headers(
    peer, sessions
):
    session = _session(peer, pt=codecs.PCMA)
    sessions.append(session)
    source = _speechlike(0.2)
    session.send_audio(source.tobytes())
    session.start()
    assert session.wait_sent(timeout=3)
    packets = [parse_rtp(peer.receive()) for _ in range(14)]

    assert {p.payload_type for p in packets} == {codecs.PCMA}
    assert [p.marker for p in packets] == [True] + [False] * 13
    assert len({p.ssrc for p in packets}) == 1
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:], strict=False)
    )
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == FRAME_SAMPLES
        for a, b in zip(packets, packets[1:], strict=False)
    )
    audio = b"".join(p.payload for p in packets[:10])
    assert audio == codecs.alaw_encode(source.tobytes())
    # Once the queue is empty the stream goes on as A-law silence, not μ-law and not nothing.
    assert packets[12].payload == bytes([0xD5]) * FRAME_SAMPLES


def test_given_packets_arriving_20ms_apart_when_sending_then_pace_is_real_time(peer, sessions):
    session = _session(peer)
    sessions.append(session)
    session.start()
    peer.receive()
    started = time.monotonic()
    for _ in range(25):
        peer.receive()
    assert 0.4 < time.monotonic() - started < 0.7


def test_given_malformed_packets_when_received_then_counted_and_receiving_goes_on(peer, sessions):
    session = _session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    good = codecs.ulaw_encode(_speechlike(0.02).tobytes())
    peer.send_audio(to, good, pt=codecs.PCMU)
    peer.send_raw(to, b"\x80")  # 1 byte
    peer.send_raw(to, b"\x40" + bytes(11) + good)  # version 1
    peer.send_raw(to, struct.pack("!BBHII", 0x8F, 0, 1, 2, 3) + bytes(8))  # 15 CSRCs, 2 there
    peer.send_raw(to, struct.pack("!BBHIIHH", 0x90, 0, 1, 2, 3, 0xBEDE, 50) + bytes(8))
    peer.send_raw(to, struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + good[:10] + b"\xff")  # padding
    peer.send_raw(
        to,
        build_rtp(
            payload_type=DTMF_PT,
            sequence=peer.seq,
            timestamp=peer.ts,
            ssrc=peer.ssrc,
            payload=bytes([200, 0x8A, 0, 160]),
        ),
    )
    peer.seq += 1
    for _ in range(4):
        peer.send_audio(to, good, pt=codecs.PCMU)

    wait_until(lambda: session.stats["received"] == 6, timeout=3, message="good packets")
    assert session.stats["malformed"] == 5
    assert session.stats["ignored_events"] == 1
    assert len(_read_all(session, 5)) == 5 * FRAME_BYTES


def test_given_extension_and_csrc_when_well_formed_then_payload_found_after_them():
    payload = b"\x01\x02\x03"
    data = (
        struct.pack("!BBHII", 0x91, 8, 7, 8, 9)
        + b"CSRC"
        + struct.pack("!HH", 0xBEDE, 1)
        + b"EXT!"
        + payload
    )
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.payload) == (8, 7, payload)


def test_given_packets_from_another_address_when_received_then_ignored(peer, sessions):
    session = _session(peer)
    sessions.append(session)
    session.start()
    intruder = Peer()
    try:
        loud = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 20000).astype("<i2").tobytes())
        for _ in range(5):
            intruder.send_audio(session.local_address, loud, pt=codecs.PCMU)
        wait_until(lambda: session.stats["foreign_source"] == 5, timeout=3, message="foreign")
        assert session.read_frame(0.05) == b""
        assert session.stats["received"] == 0
    finally:
        intruder.close()


def test_given_latching_when_first_source_seen_then_locked_to_it_and_sent_to(sessions):
    first, second = Peer(), Peer()
    try:
        session = RtpSession(
            local_host=HOST,
            port=0,
            sock=None,
            remote=("192.0.2.1", 4000),
            payload_type=codecs.PCMU,
            dtmf_payload_type=None,
            latch=True,
        )
        sessions.append(session)
        session.start()
        frame = codecs.ulaw_encode(bytes(FRAME_BYTES))
        first.send_audio(session.local_address, frame, pt=codecs.PCMU)
        wait_until(lambda: session.stats["received"] == 1, timeout=3, message="latched")
        second.send_audio(session.local_address, frame, pt=codecs.PCMU)
        wait_until(lambda: session.stats["foreign_source"] == 1, timeout=3, message="locked")
        assert session.remote == first.address
        assert parse_rtp(first.receive()).payload_type == codecs.PCMU
    finally:
        first.close()
        second.close()


def test_given_a_quiet_caller_when_reading_then_returns_by_the_timeout(peer, sessions):
    session = _session(peer)
    sessions.append(session)
    session.start()
    started = time.monotonic()
    assert session.read_frame(0.1) == b""
    assert time.monotonic() - started < 0.5
    # Digital silence is audio too: it comes back as silence frames (pyVoIP spun on it).
    for _ in range(3):
        peer.send_audio(session.local_address, bytes([0xFF]) * FRAME_SAMPLES, pt=codecs.PCMU)
    assert _read_all(session, 3) == bytes(3 * FRAME_BYTES)


def test_given_lost_and_reordered_packets_when_read_then_timing_is_kept_with_silence(
    peer, sessions
):
    session = _session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    tone = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 10000).astype("<i2").tobytes())
    held = None
    for i in range(50):
        if i == 20:  # delivered after its successor
            held = (peer.seq, peer.ts)
            peer.send_audio(to, tone, pt=codecs.PCMU, skip=True)
            continue
        peer.send_audio(to, tone, pt=codecs.PCMU, skip=30 <= i < 35)
        if i == 21:
            peer.sock.sendto(
                build_rtp(
                    payload_type=0,
                    sequence=held[0],
                    timestamp=held[1],
                    ssrc=peer.ssrc,
                    payload=tone,
                ),
                to,
            )
    audio = np.frombuffer(_read_all(session, 50), dtype="<i2").reshape(50, FRAME_SAMPLES)

    assert audio.shape[0] == 50  # the recording is as long as what was sent
    loud = np.abs(audio).mean(axis=1) > 5000
    assert list(np.flatnonzero(~loud)) == [30, 31, 32, 33, 34]
    assert session.stats["lost"] == 5


def test_given_dtmf_with_retransmitted_ends_when_received_then_each_key_reported_once(
    peer, sessions
):
    keys: list[str] = []
    session = _session(peer, on_dtmf=keys.append)
    sessions.append(session)
    session.start()
    to = session.local_address
    for code in (1, 2, 11):  # "1", "2", "#"
        start = peer.ts
        for duration, end in (
            (160, False),
            (320, False),
            (480, False),
            (640, True),
            (640, True),
            (640, True),
        ):
            payload = bytes([code, 0x8A if end else 0x0A]) + duration.to_bytes(2, "big")
            peer.sock.sendto(
                build_rtp(
                    payload_type=DTMF_PT,
                    sequence=peer.seq,
                    timestamp=start,
                    ssrc=peer.ssrc,
                    payload=payload,
                    marker=duration == 160,
                ),
                to,
            )
            peer.seq += 1
        peer.ts += 800
    wait_until(lambda: session.stats["received"] == 18, timeout=3, message="events")
    assert keys == ["1", "2", "#"]


def test_given_a_sender_reusing_one_timestamp_for_two_presses_then_both_keys_count(peer, sessions):
    """A replayed capture (sipp's DTMF pcaps) sends "0" twice with identical headers; the
    second press opens with the marker bit after the first ended."""
    keys: list[str] = []
    session = _session(peer, on_dtmf=keys.append)
    sessions.append(session)
    session.start()
    start = peer.ts
    for _press in range(2):
        for duration, end in ((0, False), (160, False), (320, True), (320, True), (320, True)):
            payload = bytes([0, 0x8A if end else 0x0A]) + duration.to_bytes(2, "big")
            peer.sock.sendto(
                build_rtp(
                    payload_type=DTMF_PT,
                    sequence=peer.seq,
                    timestamp=start,
                    ssrc=peer.ssrc,
                    payload=payload,
                    marker=duration == 0,
                ),
                session.local_address,
            )
            peer.seq += 1
    # a late copy of a middle packet, after the end: still the second press
    payload = bytes([0, 0x0A]) + (160).to_bytes(2, "big")
    peer.sock.sendto(
        build_rtp(
            payload_type=DTMF_PT,
            sequence=peer.seq - 3,
            timestamp=start,
            ssrc=peer.ssrc,
            payload=payload,
        ),
        session.local_address,
    )
    wait_until(lambda: session.stats["received"] == 11, timeout=3, message="events")
    assert keys == ["0", "0"]


def test_given_stop_when_audio_was_buffered_then_it_is_read_before_none(peer, sessions):
    session = _session(peer)
    session.start()
    for _ in range(3):
        peer.send_audio(session.local_address, bytes([0x00]) * FRAME_SAMPLES, pt=codecs.PCMU)
    wait_until(lambda: session.stats["received"] == 3, timeout=3, message="received")
    session.stop()
    frames = [session.read_frame(0.1) for _ in range(4)]
    assert [len(f) for f in frames[:3]] == [FRAME_BYTES] * 3
    assert frames[3] is None
    assert session.wait_sent(0.1) is True  # nothing queued


def test_given_opus_only_offer_when_creating_a_session_then_refused_before_any_thread():
    with pytest.raises(codecs.UnsupportedCodec):
        RtpSession(
            local_host=HOST,
            port=0,
            sock=None,
            remote=(HOST, 9),
            payload_type=111,
            dtmf_payload_type=None,
        )


def _hold_even_port() -> tuple[socket.socket, int]:
    """An even port the OS picked and we hold, so no other test wants it."""
    while True:
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind((HOST, 0))
        port = holder.getsockname()[1]
        if port % 2 == 0 and port < 65000:
            return holder, port
        holder.close()


def test_given_a_port_held_elsewhere_when_allocating_then_it_is_skipped():
    holder, held = _hold_even_port()
    try:
        allocator = RtpPortAllocator(HOST, held, held + 20)
        port, sock = allocator.allocate()
        assert port != held and port % 2 == 0 and held < port < held + 20
        assert sock.getsockname()[1] == port
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError):
            probe.bind((HOST, port))
        probe.close()
        allocator.release(port)
        assert port not in allocator.in_use
    finally:
        holder.close()


def test_given_every_port_taken_when_allocating_then_a_clear_error():
    holder, held = _hold_even_port()
    try:
        with pytest.raises(NoFreeRtpPort):
            RtpPortAllocator(HOST, held, held + 1).allocate()
    finally:
        holder.close()


def test_given_two_sessions_when_one_plays_audio_then_the_other_records_it(sessions):
    a_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a_sock.bind((HOST, 0))
    b_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b_sock.bind((HOST, 0))
    a = RtpSession(
        local_host=HOST,
        port=a_sock.getsockname()[1],
        sock=a_sock,
        remote=b_sock.getsockname(),
        payload_type=codecs.PCMA,
        dtmf_payload_type=None,
    )
    b = RtpSession(
        local_host=HOST,
        port=b_sock.getsockname()[1],
        sock=b_sock,
        remote=a_sock.getsockname(),
        payload_type=codecs.PCMA,
        dtmf_payload_type=None,
    )
    sessions += [a, b]
    b.start()
    a.start()
    source = _speechlike(0.5)
    a.send_audio(source.tobytes())
    assert a.wait_sent(timeout=3)
    received = np.frombuffer(_read_all(b, 40, timeout=3), dtype="<i2")
    # Comfort silence first (A-law idle decodes to ±8), then the audio, packet-aligned.
    frames = received.reshape(-1, FRAME_SAMPLES)
    start = int(np.flatnonzero(np.abs(frames).mean(axis=1) > 100)[0]) * FRAME_SAMPLES
    got = received[start : start + len(source)]
    assert len(got) == len(source)
    assert np.corrcoef(source, got)[0, 1] > 0.99
    assert b.stats["foreign_source"] == 0 and b.stats["malformed"] == 0


def test_given_a_busy_cpu_and_a_late_reader_then_no_packet_is_lost(peer, sessions):
    """The ASR saturates the CPU and may hold the GIL; the receive thread must keep up."""
    import threading

    session = _session(peer)
    sessions.append(session)
    session.start()
    stop = threading.Event()

    def burn() -> None:  # pure Python: holds the GIL as much as the interpreter lets it
        x = 0
        while not stop.is_set():
            x = (x * 31 + 7) % 1_000_003

    burner = threading.Thread(target=burn, daemon=True)
    burner.start()
    try:
        source = _speechlike(1.5)
        encode = codecs.encoder(codecs.PCMU)
        started = time.monotonic()
        for n, i in enumerate(range(0, len(source), FRAME_SAMPLES)):
            peer.send_audio(
                session.local_address,
                encode(source[i : i + FRAME_SAMPLES].tobytes()),
                pt=codecs.PCMU,
            )
            delay = started + (n + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the caller's real-time pace
        received = np.frombuffer(_read_all(session, 75), dtype="<i2")
    finally:
        stop.set()
        burner.join()
    assert session.stats["received"] == 75 and session.stats["lost"] == 0
    assert np.corrcoef(source, received)[0, 1] > 0.99


def test_given_silence_suppression_when_a_talkspurt_resumes_then_the_pause_is_silence(
    peer, sessions
):
    session = _session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    tone = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 10000).astype("<i2").tobytes())
    for _ in range(10):
        peer.send_audio(to, tone, pt=codecs.PCMU)
    peer.ts += 50 * FRAME_SAMPLES  # one second sent as nothing (DTX), sequence unbroken
    for i in range(10):
        peer.send_audio(to, tone, pt=codecs.PCMU, marker=i == 0)
    audio = np.frombuffer(_read_all(session, 70), dtype="<i2").reshape(70, FRAME_SAMPLES)
    loud = np.abs(audio).mean(axis=1) > 5000
    assert loud[:10].all() and not loud[10:60].any() and loud[60:].all()
    assert session.stats["lost"] == 0


def test_given_30ms_packets_then_frames_are_still_20ms(peer, sessions):
    session = _session(peer, pt=codecs.PCMA)
    sessions.append(session)
    session.start()
    source = _speechlike(0.6)
    for i in range(0, len(source), 240):
        peer.send_audio(
            session.local_address, codecs.alaw_encode(source[i : i + 240].tobytes()), pt=codecs.PCMA
        )
    received = np.frombuffer(_read_all(session, 30), dtype="<i2")
    assert np.corrcoef(source, received)[0, 1] > 0.99


def test_given_a_new_ssrc_mid_call_then_both_streams_are_heard_in_order(peer, sessions):
    session = _session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    low = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 3000).astype("<i2").tobytes())
    high = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 12000).astype("<i2").tobytes())
    for _ in range(5):
        peer.send_audio(to, low, pt=codecs.PCMU)
    wait_until(lambda: session.stats["received"] == 5, timeout=3, message="first stream")
    peer.ssrc, peer.seq, peer.ts = 0x55, 7, 123_456  # a media server took over the call
    for _ in range(5):
        peer.send_audio(to, high, pt=codecs.PCMU)
    levels = np.abs(np.frombuffer(_read_all(session, 10), "<i2").reshape(10, -1)).mean(axis=1)
    assert (levels[:5] < 4000).all() and (levels[5:] > 10000).all()
    assert session.stats["lost"] == 0


def test_given_a_remote_on_hold_then_nothing_is_sent(sessions):
    session = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=("0.0.0.0", 0),
        payload_type=codecs.PCMU,
        dtmf_payload_type=None,
    )
    sessions.append(session)
    session.start()
    session.send_audio(bytes(FRAME_BYTES * 3))
    assert session.wait_sent(timeout=2)
    assert session.stats["sent"] == 0


@pytest.fixture
def loop() -> Iterator[MediaLoop]:
    media_loop = MediaLoop(name="rtp-loop-test")
    media_loop.start()
    yield media_loop
    media_loop.stop()


def test_given_many_calls_on_one_loop_then_one_thread_serves_them_all_at_real_time_pace(
    loop, sessions
):
    """The SIP process used to run two threads per call; the loop is one for all of them."""
    import threading

    threads_before = threading.active_count()
    peers = [Peer() for _ in range(20)]
    try:
        for p in peers:
            session = _session(p, loop=loop)
            sessions.append(session)
            session.start()
        assert threading.active_count() == threads_before
        wait_until(lambda: len(loop) == 20, timeout=2, message="the sessions joining")
        source = _speechlike(0.4)
        encode = codecs.encoder(codecs.PCMU)
        for p, session in zip(peers, sessions, strict=False):
            for i in range(0, len(source), FRAME_SAMPLES):
                p.send_audio(
                    session.local_address,
                    encode(source[i : i + FRAME_SAMPLES].tobytes()),
                    pt=codecs.PCMU,
                )
        for session in sessions:
            received = np.frombuffer(_read_all(session, 20), dtype="<i2")
            assert np.corrcoef(source, received)[0, 1] > 0.99
        # Every call gets its comfort noise at 50 packets a second, all from the one thread.
        for p in peers:
            while True:  # what queued up while the audio was read
                p.sock.settimeout(0)
                try:
                    p.receive()
                except BlockingIOError:
                    break
            p.sock.settimeout(2)
        started = time.monotonic()
        for _ in range(25):
            for p in peers:
                p.receive()
        assert 0.4 < time.monotonic() - started < 0.7
    finally:
        for p in peers:
            p.close()


def test_given_a_flood_on_one_call_port_then_other_calls_keep_their_audio_and_pace(loop, sessions):
    flooder, caller = Peer(), Peer()
    try:
        flooded = _session(flooder, loop=loop)
        victim = _session(caller, loop=loop)
        sessions += [flooded, victim]
        flooded.start()
        victim.start()
        source = _speechlike(1.0)
        encode = codecs.encoder(codecs.PCMU)
        junk = bytes([0x80, codecs.PCMU]) + bytes(10)  # 12 bytes: a header, an empty payload
        started = time.monotonic()
        for n, i in enumerate(range(0, len(source), FRAME_SAMPLES)):
            for _ in range(200):  # 10,000 packets a second at the flooded port
                flooder.send_raw(flooded.local_address, junk)
            caller.send_audio(
                victim.local_address,
                encode(source[i : i + FRAME_SAMPLES].tobytes()),
                pt=codecs.PCMU,
            )
            delay = started + (n + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        received = np.frombuffer(_read_all(victim, 50), dtype="<i2")
        assert victim.stats["received"] == 50 and victim.stats["lost"] == 0
        assert np.corrcoef(source, received)[0, 1] > 0.99
        # Read at its per-tick limit (the kernel drops the rest), not starved either.
        assert flooded.stats["malformed"] > 300
        assert victim.stats["sent"] >= 40  # its sending was not held up either
    finally:
        flooder.close()
        caller.close()


def test_given_a_key_listener_that_stops_its_own_call_then_the_loop_serves_the_others(
    loop, sessions
):
    keyer, other = Peer(), Peer()
    try:
        stopped: list[RtpSession] = []

        def hang_up(_key: str) -> None:
            session.stop()  # runs inside the loop's tick
            stopped.append(session)

        session = _session(keyer, loop=loop, on_dtmf=hang_up)
        bystander = _session(other, loop=loop)
        sessions.append(bystander)
        session.start()
        bystander.start()
        keyer.sock.sendto(
            build_rtp(
                payload_type=DTMF_PT,
                sequence=1,
                timestamp=1,
                ssrc=7,
                payload=bytes([5, 0x0A, 0, 160]),
                marker=True,
            ),
            session.local_address,
        )
        wait_until(lambda: stopped, timeout=3, message="the listener's stop")
        wait_until(lambda: len(loop) == 1, timeout=2, message="the stopped session leaving")
        assert session.read_frame(0.1) is None
        sent = bystander.stats["sent"]
        wait_until(
            lambda: bystander.stats["sent"] >= sent + 10,
            timeout=3,
            message="the other call's packets",
        )
    finally:
        keyer.close()
        other.close()


def test_given_a_stopped_loop_then_a_session_cannot_join_it(peer):
    media_loop = MediaLoop(name="rtp-loop-stopped")
    media_loop.start()
    media_loop.stop()
    session = _session(peer, loop=media_loop)
    with pytest.raises(RuntimeError, match="stopped"):
        session.start()
    session.stop()


def test_given_a_media_loop_held_up_then_the_reader_takes_the_audio_from_the_socket(peer):
    """A loop that does not tick (here: never started) must not turn audio into a gap: the
    reader, timed out, reads the socket itself before reporting that nothing came."""
    stalled = MediaLoop(name="rtp-loop-stalled")
    session = _session(peer, loop=stalled)
    session.start()
    try:
        source = _speechlike(0.2)
        encode = codecs.encoder(codecs.PCMU)
        for i in range(0, len(source), FRAME_SAMPLES):
            peer.send_audio(
                session.local_address,
                encode(source[i : i + FRAME_SAMPLES].tobytes()),
                pt=codecs.PCMU,
            )
        received = np.frombuffer(_read_all(session, 10), dtype="<i2")
        assert np.corrcoef(source, received)[0, 1] > 0.99
        assert session.read_frame(0.05) == b""  # and nothing more was there
    finally:
        session.stop()
