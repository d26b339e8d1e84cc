"""Many calls in one process: the shared MediaLoop serving sessions at real-time pace under
load, floods and stalls, two sessions talking to each other, and the RtpPortAllocator that
gives each call its port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from telephony import codecs
from telephony.endpoint import FRAME_SAMPLES
from telephony.media_loop import MediaLoop
from telephony.rtp_packet import build_rtp
from telephony.rtp_ports import NoFreeRtpPort, RtpPortAllocator
from telephony.rtp_session import RtpSession
from tests.conftest import wait_until
from tests.telephony.rtp_peers import (
    DTMF_PT,
    HOST,
    Peer,
    new_session,
    read_all,
    speechlike,
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
    source = speechlike(0.5)
    a.send_audio(source.tobytes())
    assert a.wait_sent(timeout=3)
    received = np.frombuffer(read_all(b, 40, timeout=3), dtype="<i2")
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

    session = new_session(peer)
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
        source = speechlike(1.5)
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
        received = np.frombuffer(read_all(session, 75), dtype="<i2")
    finally:
        stop.set()
        burner.join()
    assert session.stats["received"] == 75 and session.stats["lost"] == 0
    assert np.corrcoef(source, received)[0, 1] > 0.99


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
            session = new_session(p, loop=loop)
            sessions.append(session)
            session.start()
        assert threading.active_count() == threads_before
        wait_until(lambda: len(loop) == 20, timeout=2, message="the sessions joining")
        source = speechlike(0.4)
        encode = codecs.encoder(codecs.PCMU)
        for p, session in zip(peers, sessions, strict=False):
            for i in range(0, len(source), FRAME_SAMPLES):
                p.send_audio(
                    session.local_address,
                    encode(source[i : i + FRAME_SAMPLES].tobytes()),
                    pt=codecs.PCMU,
                )
        for session in sessions:
            received = np.frombuffer(read_all(session, 20), dtype="<i2")
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
        flooded = new_session(flooder, loop=loop)
        victim = new_session(caller, loop=loop)
        sessions += [flooded, victim]
        flooded.start()
        victim.start()
        source = speechlike(1.0)
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
        received = np.frombuffer(read_all(victim, 50), dtype="<i2")
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

        session = new_session(keyer, loop=loop, on_dtmf=hang_up)
        bystander = new_session(other, loop=loop)
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
    session = new_session(peer, loop=media_loop)
    with pytest.raises(RuntimeError, match="stopped"):
        session.start()
    session.stop()


def test_given_a_media_loop_held_up_then_the_reader_takes_the_audio_from_the_socket(peer):
    """A loop that does not tick (here: never started) must not turn audio into a gap: the
    reader, timed out, reads the socket itself before reporting that nothing came."""
    stalled = MediaLoop(name="rtp-loop-stalled")
    session = new_session(peer, loop=stalled)
    session.start()
    try:
        source = speechlike(0.2)
        encode = codecs.encoder(codecs.PCMU)
        for i in range(0, len(source), FRAME_SAMPLES):
            peer.send_audio(
                session.local_address,
                encode(source[i : i + FRAME_SAMPLES].tobytes()),
                pt=codecs.PCMU,
            )
        received = np.frombuffer(read_all(session, 10), dtype="<i2")
        assert np.corrcoef(source, received)[0, 1] > 0.99
        assert session.read_frame(0.05) == b""  # and nothing more was there
    finally:
        session.stop()


class _ReadableSession:
    """What the loop needs of a session, with audio waiting at every tick: a socket that
    stays readable (a datagram nobody takes) and a count of its reader's wake-ups."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, 0))
        self._sock.sendto(b"x", self._sock.getsockname())
        self._stopped = False
        self._parked = False
        self._recv_lock = threading.Lock()
        self.wakes: list[int] = []
        self.loop_tick = 0

    def _drain(self, limit: int) -> bool:
        return True  # audio buffered

    def _send_due(self, now: float) -> bool:
        return False  # not idle: stays ticked

    def _idle(self) -> bool:
        return False

    def _wake_reader(self) -> None:
        self.wakes.append(self.loop_tick)


def test_given_many_readers_with_audio_then_each_tick_wakes_only_its_share_of_them():
    """Each reader is woken every fifth tick, but not all on the same tick: every thread
    woken waits for the GIL, so waking them all at once made a crowd at each fifth tick."""
    loop = MediaLoop(wake_readers_every=5)  # not started: the test ticks it
    sessions = [_ReadableSession() for _ in range(10)]
    try:
        for session in sessions:
            loop.add(session)
        woken_per_tick = []
        for tick in range(10):
            for session in sessions:
                session.loop_tick = tick
            before = sum(len(s.wakes) for s in sessions)
            loop._tick(time.monotonic())
            loop.ticks += 1
            woken_per_tick.append(sum(len(s.wakes) for s in sessions) - before)
    finally:
        for session in sessions:
            session._sock.close()
        loop.stop()

    assert woken_per_tick == [2] * 10
    for session in sessions:  # every fifth tick, each on its own phase
        assert len(session.wakes) == 2 and session.wakes[1] - session.wakes[0] == 5
