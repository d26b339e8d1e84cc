"""Keys the bridge passes on, as our RTP sends them: RFC 4733 telephone-events that a phone
(and our own receiver) reads as one press each, the audio of their slots replaced."""

from __future__ import annotations

import struct

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES
from telephony.rtp_packet import parse_rtp
from telephony.rtp_session import RtpSession
from tests.conftest import wait_until
from tests.telephony.rtp_peers import DTMF_PT, HOST, Peer, new_session


def _packets(peer: Peer, count: int) -> list:
    return [parse_rtp(peer.receive()) for _ in range(count)]


def test_given_a_key_to_send_then_rfc4733_packets_with_one_timestamp_and_three_end_packets(
    peer, sessions
):
    session = new_session(peer)
    sessions.append(session)
    session.start()
    assert session.send_dtmf("7")
    seen = []
    for packet in _packets(peer, 60):
        if packet.payload_type == DTMF_PT:
            seen.append(packet)
        if len(seen) == 7:
            break
    # 100 ms: five packets, the last of them sent three times with the end bit.
    events = [struct.unpack("!BBH", p.payload[:4]) for p in seen[:7]]
    assert [e[0] for e in events] == [7] * 7
    assert [e[2] for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [bool(e[1] & 0x80) for e in events] == [False] * 4 + [True] * 3
    assert seen[0].marker and not any(p.marker for p in seen[1:7])
    assert len({p.timestamp for p in seen[:7]}) == 1
    sequences = [p.sequence for p in seen[:7]]
    assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(7)]


def test_given_keys_sent_then_our_own_receiver_reads_each_press_once(sessions):
    keys: list[str] = []
    receiver = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=None,
        payload_type=codecs.PCMU,
        dtmf_payload_type=DTMF_PT,
        on_dtmf=keys.append,
        latch=True,
    )
    sender = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=receiver.local_address,
        payload_type=codecs.PCMU,
        dtmf_payload_type=DTMF_PT,
    )
    sessions += [receiver, sender]
    receiver.start()
    sender.start()
    sender.send_audio(bytes(FRAME_BYTES * 10))
    for key in "1*1#":
        assert sender.send_dtmf(key)
    wait_until(lambda: len(keys) == 4, 5, message="four presses")
    assert keys == ["1", "*", "1", "#"]  # the repeated 1 is a new press, not a copy


def test_given_no_telephone_event_or_a_bad_key_then_not_sent(peer, sessions):
    session = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=peer.address,
        payload_type=codecs.PCMU,
        dtmf_payload_type=None,
    )
    sessions.append(session)
    assert not session.send_dtmf("5")
    with_events = new_session(peer)
    sessions.append(with_events)
    assert not with_events.send_dtmf("x") and not with_events.send_dtmf("12")


def test_audio_queued_is_reported_and_a_key_takes_the_place_of_the_audio_of_its_slots(
    peer, sessions
):
    session = new_session(peer)
    sessions.append(session)
    tone = tone_frames(10)
    session.send_audio(b"".join(tone))  # 200 ms
    assert session.queued_ms == 200
    session.send_dtmf("3", duration_ms=100)  # five slots
    session.start()
    packets = _packets(peer, 14)
    kinds = ["key" if p.payload_type == DTMF_PT else "audio" for p in packets]
    # The key's five slots (its end packet three times), then the audio left: 5 of 10 frames.
    assert kinds[:7] == ["key"] * 7
    sent = [p.payload for p in packets[7:]]
    assert sent[:5] == [codecs.ulaw_encode(f) for f in tone[5:]]
    wait_until(lambda: session.queued_ms == 0, 5, message="sent")


def tone_frames(count: int) -> list[bytes]:
    pcm = (8000 * np.sin(2 * np.pi * 440 * np.arange(160 * count) / 8000)).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
