"""The receive-only session (``RtpReceiver``, what rtpengine's taps arrive on) against a raw UDP
peer on loopback: it reads exactly as ``RtpSession`` reads the same packets — loss, reordering,
silence suppression, a new SSRC, other packet sizes, both G.711 laws —, locks to its one source
in the kernel, sends nothing, and drops keys; and a full session whose remote is nowhere keeps
its RTP clock running as if it had sent."""

from __future__ import annotations

import select
import socket

import numpy as np
import pytest

from telephony import codecs
from telephony.endpoint import FRAME_BYTES, FRAME_SAMPLES
from telephony.rtp_packet import build_rtp, parse_rtp
from telephony.rtp_receiver import RtpReceiver
from tests.conftest import wait_until
from tests.telephony.rtp_peers import DTMF_PT, HOST, Peer, new_session, read_all, speechlike


def new_receiver(peer: Peer, *, pt: int = codecs.PCMU) -> RtpReceiver:
    return RtpReceiver(local_host=HOST, port=0, remote=peer.address, payload_type=pt)


def _tone(level: int, samples: int = FRAME_SAMPLES, pt: int = codecs.PCMU) -> bytes:
    return codecs.encoder(pt)((np.ones(samples) * level).astype("<i2").tobytes())


def _speech_packets(pt: int, samples: int = FRAME_SAMPLES) -> list[bytes]:
    source = speechlike(1.0)
    encode = codecs.encoder(pt)
    return [encode(source[i : i + samples].tobytes()) for i in range(0, len(source), samples)]


# Each plan: what the peer sends, in order — ("audio", payload, marker), ("skip", payload)
# (sent as lost: sequence and timestamp move on), ("hold", payload) / ("release",) (one
# packet delivered after its successor), ("dtx", samples) (time passes with nothing sent),
# ("ssrc", ssrc, seq, ts) (another source takes over).
def _plans() -> dict[str, tuple[int, list[tuple]]]:
    loud, low = _tone(10000), _tone(3000)
    lossy: list[tuple] = []
    for i in range(50):
        if i == 20:
            lossy.append(("hold", loud))
        elif i == 21:
            lossy += [("audio", loud, False), ("release",)]
        else:
            lossy.append(("skip", loud) if 30 <= i < 35 else ("audio", loud, False))
    talkspurts: list[tuple] = [("audio", loud, i == 0) for i in range(10)]
    talkspurts += [("dtx", 50 * FRAME_SAMPLES)] + [("audio", loud, i == 0) for i in range(10)]
    new_source: list[tuple] = [("audio", low, False)] * 5 + [("ssrc", 0x55, 7, 123_456)]
    new_source += [("audio", _tone(12000), False)] * 5
    return {
        "speech_pcmu": (codecs.PCMU, [("audio", p, False) for p in _speech_packets(codecs.PCMU)]),
        "speech_pcma_30ms": (
            codecs.PCMA,
            [("audio", p, False) for p in _speech_packets(codecs.PCMA, 240)],
        ),
        "lost_and_reordered": (codecs.PCMU, lossy),
        "silence_suppression": (codecs.PCMU, talkspurts),
        "new_ssrc": (codecs.PCMU, new_source),
    }


def _send(peer: Peer, to: tuple[str, int], plan: list[tuple], pt: int) -> int:
    """Play ``plan``; the number of 20 ms frames its timeline spans."""
    held: tuple[int, int, bytes] | None = None
    samples = 0
    for step in plan:
        kind = step[0]
        if kind == "audio":
            peer.send_audio(to, step[1], pt=pt, marker=step[2])
            samples += len(step[1])
        elif kind == "skip":
            peer.send_audio(to, step[1], pt=pt, skip=True)
            samples += len(step[1])
        elif kind == "hold":
            held = (peer.seq, peer.ts, step[1])
            peer.send_audio(to, step[1], pt=pt, skip=True)
            samples += len(step[1])
        elif kind == "release":
            assert held is not None
            seq, ts, payload = held
            peer.send_raw(
                to,
                build_rtp(
                    payload_type=pt, sequence=seq, timestamp=ts, ssrc=peer.ssrc, payload=payload
                ),
            )
        elif kind == "dtx":
            peer.ts = (peer.ts + step[1]) & 0xFFFFFFFF
            samples += step[1]
        elif kind == "ssrc":
            peer.ssrc, peer.seq, peer.ts = step[1], step[2], step[3]
    return samples // FRAME_SAMPLES


@pytest.mark.parametrize("plan", list(_plans()))
def test_given_the_same_packets_then_the_receiver_reads_what_a_full_session_reads(plan, sessions):
    pt, steps = _plans()[plan]
    full_peer, tap_peer = Peer(), Peer()
    try:
        full, tap = new_session(full_peer, pt=pt), new_receiver(tap_peer, pt=pt)
        sessions += [full, tap]
        for session in (full, tap):
            session.start()
        frames = _send(full_peer, full.local_address, steps, pt)
        assert _send(tap_peer, tap.local_address, steps, pt) == frames
        expected = read_all(full, frames)
        got = read_all(tap, frames)
    finally:
        full_peer.close()
        tap_peer.close()
    assert len(expected) == frames * FRAME_BYTES
    assert got == expected
    assert tap.stats["lost"] == full.stats["lost"]
    assert tap.stats["received"] == full.stats["received"]


def test_given_frames_read_in_one_piece_then_they_are_the_frames_read_one_by_one(peer, sessions):
    one_by_one = new_receiver(peer)
    other = Peer()
    try:
        in_pieces = new_receiver(other)
        sessions += [one_by_one, in_pieces]
        for session in (one_by_one, in_pieces):
            session.start()
        packets = _speech_packets(codecs.PCMU)
        for n, payload in enumerate(packets):
            for p, session in ((peer, one_by_one), (other, in_pieces)):
                p.send_audio(session.local_address, payload, pt=codecs.PCMU, skip=n == 20)
        pieces = bytearray()
        while len(pieces) < 50 * FRAME_BYTES:
            chunk = in_pieces.read_frames(0.5, 50)
            assert chunk  # all there: no timeout
            pieces += chunk
    finally:
        other.close()
    assert bytes(pieces) == read_all(one_by_one, 50)


def test_given_another_address_sends_then_the_kernel_drops_it_and_the_source_is_heard(
    peer, sessions
):
    tap = new_receiver(peer)
    sessions.append(tap)
    tap.start()
    intruder = Peer()
    try:
        for _ in range(5):
            intruder.send_audio(tap.local_address, _tone(20000), pt=codecs.PCMU)
        for _ in range(5):
            peer.send_audio(tap.local_address, _tone(1000), pt=codecs.PCMU)
        audio = np.frombuffer(read_all(tap, 5), "<i2")
    finally:
        intruder.close()
    assert np.abs(audio).max() < 2000  # the intruder's 20000 never got in
    assert tap.stats["received"] == 5
    assert tap.read_frame(0.05) == b""


def test_given_a_receiver_running_then_it_sends_nothing_and_refuses_to(peer, sessions):
    tap = new_receiver(peer)
    sessions.append(tap)
    tap.start()
    for _ in range(5):  # what a full session answers with comfort silence, 50 a second
        peer.send_audio(tap.local_address, _tone(1000), pt=codecs.PCMU)
    assert len(read_all(tap, 5)) == 5 * FRAME_BYTES
    peer.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        peer.receive()
    with pytest.raises(RuntimeError):
        tap.send_audio(bytes(FRAME_BYTES))
    with pytest.raises(RuntimeError):
        tap.send_dtmf("5")
    assert tap.stats["sent"] == 0


def test_given_keys_between_audio_then_they_are_dropped_and_the_audio_is_whole(peer, sessions):
    tap = new_receiver(peer)
    sessions.append(tap)
    tap.start()
    to = tap.local_address
    for i in range(6):
        peer.send_audio(to, _tone(5000), pt=codecs.PCMU)
        if i == 2:  # a key's event packet (RFC 4733) carries the same timeline
            peer.send_raw(
                to,
                build_rtp(
                    payload_type=DTMF_PT,
                    sequence=peer.seq,
                    timestamp=peer.ts,
                    ssrc=peer.ssrc,
                    payload=bytes([5, 0x80, 0, 160]),
                ),
            )
            peer.seq = (peer.seq + 1) & 0xFFFF
    audio = np.frombuffer(read_all(tap, 6), "<i2").reshape(6, -1)
    assert (np.abs(audio).mean(axis=1) > 4000).all()
    assert tap.stats["other_payload"] == 1 and tap.stats["received"] == 6


def test_given_stop_when_audio_was_received_then_it_is_read_before_none(peer, sessions):
    tap = new_receiver(peer)
    tap.start()
    for _ in range(3):
        peer.send_audio(tap.local_address, _tone(5000), pt=codecs.PCMU)
    wait_until(lambda: select.select([tap._sock], [], [], 0)[0], 3, message="arrived")
    tap.stop()
    frames = []
    while (frame := tap.read_frame(0.1)) is not None:
        frames.append(frame)
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3  # nothing received is lost on stop


def test_given_a_remote_nowhere_then_the_rtp_clock_runs_on_as_if_it_had_sent(peer, sessions):
    session = new_session(peer)
    sessions.append(session)
    session.start()
    last = parse_rtp(peer.receive())
    session.set_remote(("0.0.0.0", 0))  # the media went to rtpengine
    loop = session._loop  # parked meanwhile: the loop's ticks are the time passing
    moved_at = loop.ticks
    wait_until(lambda: loop.ticks - moved_at >= 20, 3, message="time passing")
    session.set_remote(peer.address)  # and back
    while True:
        packet = parse_rtp(peer.receive())
        steps = (packet.sequence - last.sequence) & 0xFFFF
        if steps > 1:
            break  # the first packet after the move
        last = packet
    assert steps >= 20
    assert (packet.timestamp - last.timestamp) & 0xFFFFFFFF == steps * FRAME_SAMPLES
    assert packet.ssrc == last.ssrc
