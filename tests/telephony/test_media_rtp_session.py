"""One call's RtpSession against a raw UDP peer on loopback: G.711 both ways, real-time
pacing, malformed and foreign packets, latching, loss, reordering and silence suppression,
RFC 4733 keys, SSRC changes and hold."""

from __future__ import annotations

import logging
import struct
import time

import numpy as np
import pytest

from telephony import codecs
from telephony.endpoint import FRAME_BYTES, FRAME_SAMPLES
from telephony.rtp_packet import build_rtp, parse_rtp
from telephony.rtp_session import RtpSession
from tests.conftest import wait_until
from tests.telephony.rtp_peers import (
    DTMF_PT,
    HOST,
    Peer,
    new_session,
    read_all,
    snr_db,
    speechlike,
)


@pytest.mark.parametrize("pt", [codecs.PCMU, codecs.PCMA])
def test_given_g711_stream_when_received_then_16_bit_audio_matches_the_input(peer, sessions, pt):
    session = new_session(peer, pt=pt)
    sessions.append(session)
    session.start()
    source = speechlike(1.0)
    encode = codecs.encoder(pt)
    for i in range(0, len(source), FRAME_SAMPLES):
        peer.send_audio(
            session.local_address,
            encode(source[i : i + FRAME_SAMPLES].tobytes()),
            pt=pt,
            marker=i == 0,
        )
    received = np.frombuffer(read_all(session, len(source) // FRAME_SAMPLES), dtype="<i2")

    assert len(received) == len(source)
    assert np.corrcoef(source, received)[0, 1] > 0.99
    # G.711 gives ≈ 37 dB on speech-level signals; pyVoIP's 8-bit output gave ≈ 26 dB.
    assert snr_db(source, received) > 33
    assert session.stats["received"] == 50
    assert session.stats["lost"] == 0


def test_given_pcma_call_when_sending_then_packets_carry_pt_8_and_alaw_with_sound_headers(
    peer, sessions
):
    session = new_session(peer, pt=codecs.PCMA)
    sessions.append(session)
    source = speechlike(0.2)
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
    session = new_session(peer)
    sessions.append(session)
    session.start()
    peer.receive()
    started = time.monotonic()
    for _ in range(25):
        peer.receive()
    assert 0.4 < time.monotonic() - started < 0.7


def test_given_malformed_packets_when_received_then_counted_and_receiving_goes_on(peer, sessions):
    session = new_session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    good = codecs.ulaw_encode(speechlike(0.02).tobytes())
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
    assert len(read_all(session, 5)) == 5 * FRAME_BYTES


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
    session = new_session(peer)
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
    session = new_session(peer)
    sessions.append(session)
    session.start()
    started = time.monotonic()
    assert session.read_frame(0.1) == b""
    assert time.monotonic() - started < 2  # not blocked for good; wide for a loaded machine
    # Digital silence is audio too: it comes back as silence frames (pyVoIP spun on it).
    for _ in range(3):
        peer.send_audio(session.local_address, bytes([0xFF]) * FRAME_SAMPLES, pt=codecs.PCMU)
    assert read_all(session, 3) == bytes(3 * FRAME_BYTES)


def test_given_lost_and_reordered_packets_when_read_then_timing_is_kept_with_silence(
    peer, sessions
):
    session = new_session(peer)
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
    audio = np.frombuffer(read_all(session, 50), dtype="<i2").reshape(50, FRAME_SAMPLES)

    assert audio.shape[0] == 50  # the recording is as long as what was sent
    loud = np.abs(audio).mean(axis=1) > 5000
    assert list(np.flatnonzero(~loud)) == [30, 31, 32, 33, 34]
    assert session.stats["lost"] == 5


def test_given_dtmf_with_retransmitted_ends_when_received_then_each_key_reported_once(
    peer, sessions
):
    keys: list[str] = []
    session = new_session(peer, on_dtmf=keys.append)
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
    session = new_session(peer, on_dtmf=keys.append)
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
    session = new_session(peer)
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


def test_given_silence_suppression_when_a_talkspurt_resumes_then_the_pause_is_silence(
    peer, sessions
):
    session = new_session(peer)
    sessions.append(session)
    session.start()
    to = session.local_address
    tone = codecs.ulaw_encode((np.ones(FRAME_SAMPLES) * 10000).astype("<i2").tobytes())
    for _ in range(10):
        peer.send_audio(to, tone, pt=codecs.PCMU)
    peer.ts += 50 * FRAME_SAMPLES  # one second sent as nothing (DTX), sequence unbroken
    for i in range(10):
        peer.send_audio(to, tone, pt=codecs.PCMU, marker=i == 0)
    audio = np.frombuffer(read_all(session, 70), dtype="<i2").reshape(70, FRAME_SAMPLES)
    loud = np.abs(audio).mean(axis=1) > 5000
    assert loud[:10].all() and not loud[10:60].any() and loud[60:].all()
    assert session.stats["lost"] == 0


def test_given_30ms_packets_then_frames_are_still_20ms(peer, sessions):
    session = new_session(peer, pt=codecs.PCMA)
    sessions.append(session)
    session.start()
    source = speechlike(0.6)
    for i in range(0, len(source), 240):
        peer.send_audio(
            session.local_address, codecs.alaw_encode(source[i : i + 240].tobytes()), pt=codecs.PCMA
        )
    received = np.frombuffer(read_all(session, 30), dtype="<i2")
    assert np.corrcoef(source, received)[0, 1] > 0.99


def test_given_a_new_ssrc_mid_call_then_both_streams_are_heard_in_order(peer, sessions):
    session = new_session(peer)
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
    levels = np.abs(np.frombuffer(read_all(session, 10), "<i2").reshape(10, -1)).mean(axis=1)
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


def test_given_latching_from_other_hosts_when_a_stranger_sends_then_dropped_and_logged(
    sessions, caplog
):
    stranger = Peer()
    try:
        session = RtpSession(
            local_host=HOST,
            port=0,
            sock=None,
            remote=("192.0.2.1", 4000),
            payload_type=codecs.PCMU,
            dtmf_payload_type=None,
            latch=True,
            latch_from=("192.0.2.1", "198.51.100.7"),  # the SDP's host, the INVITE's source
        )
        sessions.append(session)
        session.start()
        frame = codecs.ulaw_encode(bytes(FRAME_BYTES))
        with caplog.at_level(logging.WARNING, logger="telephony.rtp_session"):
            for _ in range(3):
                stranger.send_audio(session.local_address, frame, pt=codecs.PCMU)
            wait_until(lambda: session.stats["foreign_source"] == 3, timeout=3, message="drops")
        assert session.remote == ("192.0.2.1", 4000) and session.stats["received"] == 0
        dropped = [r for r in caplog.records if "RTP from" in r.getMessage()]
        assert len(dropped) == 1  # once per source, not per packet
    finally:
        stranger.close()


def test_given_frames_buffered_when_read_in_one_piece_then_they_match_reading_them_one_by_one(
    peer, sessions
):
    one_by_one, in_pieces = new_session(peer), new_session(peer)
    sessions += [one_by_one, in_pieces]
    for session in (one_by_one, in_pieces):
        session.start()
    source = speechlike(1.0)
    encode = codecs.encoder(codecs.PCMU)
    for n, i in enumerate(range(0, len(source), FRAME_SAMPLES)):
        if n == 20:
            continue  # one lost packet: its 20 ms come back as silence either way
        packet = build_rtp(
            payload_type=codecs.PCMU,
            sequence=n,
            timestamp=n * FRAME_SAMPLES,
            ssrc=0x5EED,
            payload=encode(source[i : i + FRAME_SAMPLES].tobytes()),
            marker=n == 0,
        )
        for session in (one_by_one, in_pieces):
            peer.send_raw(session.local_address, packet)
    expected = read_all(one_by_one, 50)
    pieces: list[bytes] = []
    deadline = time.monotonic() + 5
    while sum(map(len, pieces)) < len(expected) and time.monotonic() < deadline:
        piece = in_pieces.read_frames(0.2, 7)
        assert piece is not None
        assert len(piece) % FRAME_BYTES == 0 and len(piece) <= 7 * FRAME_BYTES
        pieces.append(piece)

    assert b"".join(pieces) == expected
    assert any(len(piece) > FRAME_BYTES for piece in pieces)  # more than one frame a read
    assert expected[20 * FRAME_BYTES : 21 * FRAME_BYTES] == bytes(FRAME_BYTES)
