"""Parked sessions (issue 17): a leg whose media went to rtpengine (remote ``NOWHERE``) or
whose phone holds with c=0.0.0.0 has nothing to send, and the media loop's send pass leaves
it alone — no call a tick — until a new remote, audio or a key gives it work again; its RTP
clock then runs on as if it had been ticked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telephony.endpoint import FRAME_BYTES
from telephony.media_loop import MediaLoop
from telephony.rtp_packet import parse_rtp
from telephony.rtp_session import RtpSession
from telephony.sip_reinvite import NOWHERE
from tests.conftest import wait_until
from tests.telephony.rtp_peers import Peer, new_session


@pytest.fixture
def loop() -> Iterator[MediaLoop]:
    media_loop = MediaLoop(name="rtp-loop-parked")
    media_loop.start()
    yield media_loop
    media_loop.stop()


def _counting_sends(session: RtpSession) -> list[int]:
    """The loop's send-pass calls on ``session``, counted (one entry a call)."""
    calls: list[int] = []
    send_due = session._send_due

    def counted(now: float) -> bool:
        calls.append(1)
        return send_due(now)

    session._send_due = counted  # type: ignore[method-assign]
    return calls


def _ticks_pass(loop: MediaLoop, ticks: int) -> None:
    start = loop.ticks
    wait_until(lambda: loop.ticks - start >= ticks, 5, message=f"{ticks} ticks")


def test_given_a_leg_whose_media_went_elsewhere_then_the_loop_does_no_per_tick_work_on_it(
    loop, peer, sessions
):
    parked, talking = new_session(peer, loop=loop), new_session(Peer(), loop=loop)
    sessions.extend([parked, talking])
    parked.start()
    talking.start()
    parse_rtp(peer.receive())  # ticked: it sends
    sends = _counting_sends(parked)

    parked.set_remote(NOWHERE)  # re-INVITEd to rtpengine
    wait_until(lambda: not loop.is_ticked(parked), 2, message="parked")
    sends.clear()
    _ticks_pass(loop, 25)

    assert sends == []  # half a second of ticks, not one call
    assert len(loop) == 2 and loop.ticked == 1 and loop.is_ticked(talking)


def test_given_a_parked_leg_when_its_media_comes_back_then_it_sends_on_its_running_clock(
    loop, peer, sessions
):
    session = new_session(peer, loop=loop)
    sessions.append(session)
    session.start()
    last = parse_rtp(peer.receive())
    session.set_remote(NOWHERE)
    wait_until(lambda: not loop.is_ticked(session), 2, message="parked")
    _ticks_pass(loop, 25)

    session.set_remote(peer.address)  # the media given back to the edge (hold, transfer)

    wait_until(lambda: loop.is_ticked(session), 2, message="ticked again")
    while True:
        packet = parse_rtp(peer.receive())
        steps = (packet.sequence - last.sequence) & 0xFFFF
        if steps > 1:
            break  # the first packet after the move
        last = packet
    assert steps >= 25  # the packets of the parked time, counted but not sent
    assert (packet.timestamp - last.timestamp) & 0xFFFFFFFF == steps * 160


def test_given_a_parked_leg_when_audio_is_queued_then_it_drains_and_parks_again(
    loop, peer, sessions
):
    """Audio for a phone that is elsewhere goes nowhere, but must not wait forever: whoever
    waits for it to be sent (a prompt's ``wait_sent``) is told it was."""
    session = new_session(peer, loop=loop)
    sessions.append(session)
    session.start()
    session.set_remote(NOWHERE)
    wait_until(lambda: not loop.is_ticked(session), 2, message="parked")
    sent = session.stats["sent"]

    session.send_audio(bytes(10 * FRAME_BYTES))
    assert session.send_dtmf("5")

    assert session.wait_sent(3)
    wait_until(lambda: not loop.is_ticked(session), 2, message="parked again")
    assert session.stats["sent"] == sent  # nothing went anywhere
