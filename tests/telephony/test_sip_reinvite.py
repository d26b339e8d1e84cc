"""Re-INVITEs the edge sends (``telephony.sip_reinvite``), against sipp playing the called
phone: 200 (media moves), 491 then 200 (glare, retried), 488 and silence (the call goes on
with its old media)."""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telephony import codecs
from telephony.endpoint import CallState
from telephony.sip_reinvite import TIMED_OUT, ReinviteRefused, glare_delay, with_origin
from telephony.sip_sdp import build_sdp
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    dominant_frequency,
    free_udp_port,
    received,
    rms,
    start_edge,
    start_sipp,
    tone,
)
from tests.telephony.test_sip_baresip import _baresip_dir as baresip_dir


@pytest.fixture
def rtp2() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


def _header(block: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*?)\s*$", block, re.M)
    assert match, f"no {name} in {block}"
    return match.group(1)


def _dial(edges, rtp, rtp2, scenario: str, trace: Path, **config):
    harness = start_edge(**config)
    edges.append(harness)
    port = free_udp_port()
    sipp = start_sipp(
        scenario, port=port, keys={"rtp_port": rtp.port, "rtp_port2": rtp2.port}, trace=trace
    )
    call = harness.edge.dial(f"sip:agent@{HOST}:{port}", ring_timeout=5)
    return harness, sipp, call


def _invites(trace: Path) -> list[str]:
    text = trace.read_text()
    blocks = re.split(r"^-{10,}.*$", text, flags=re.M)
    return [b for b in blocks if "message received" in b and re.search(r"^INVITE ", b, re.M)]


def _hears(peer: RtpPeer, call, seconds: float = 0.4) -> bool:
    """The tone sent now reaches `peer` (polled: its packets are on their way over loopback)."""
    before = len(peer.packets)
    call.send_audio(tone(400, seconds))
    call.wait_sent(5)

    def loud() -> bool:
        fresh = [p.payload for p in peer.packets[before:] if p.payload_type == codecs.PCMU]
        return rms(b"".join(codecs.decoder(codecs.PCMU)(p) for p in fresh)) > 1000

    try:
        wait_until(loud, 5, message="the tone at the peer")
    except AssertionError:
        return False
    return True


def test_given_answered_call_when_reinvited_then_200_acked_and_media_moves(
    edges, rtp, rtp2, tmp_path
):
    trace = tmp_path / "sipp.log"
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_ok.xml", trace)
    assert _hears(rtp, call)

    result = harness.edge.reinvite_to_edge(call)

    assert result.ok and result.status == 200 and result.glares == 0
    assert result.answer is not None and result.answer.port == rtp2.port
    assert call.remote_rtp == (HOST, rtp2.port) and call.state == CallState.ANSWERED
    assert _hears(rtp2, call)
    call.hangup()
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]  # the ACK of the 200 and the BYE came
    first, again = _invites(trace)
    number = int(_header(first, "CSeq").split()[0])
    assert _header(again, "CSeq") == f"{number + 1} INVITE"
    assert _header(again, "Call-ID") == _header(first, "Call-ID")
    assert _header(again, "From") == _header(first, "From")  # our tag
    assert ";tag=" in _header(again, "To")  # theirs, from the 200
    assert _header(again, "Contact").startswith("<sip:")
    port = call.remote_uri.rsplit(":", 1)[1]
    assert re.search(rf"^INVITE sip:{HOST}:{port};transport=UDP SIP/2.0", again, re.M)  # Contact
    origin = [line for line in again.splitlines() if line.startswith("o=")]
    assert origin and origin[0].split()[1:3] != ["53655765", "2353687638"]
    assert received(trace, "ACK", f"{number + 1} ACK")


def test_given_glare_when_491_then_retried_after_the_rfc_wait_and_answered(
    edges, rtp, rtp2, tmp_path
):
    trace = tmp_path / "sipp.log"
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_glare.xml", trace)

    started = time.monotonic()
    result = harness.edge.reinvite_to_edge(call)
    waited = time.monotonic() - started

    assert result.ok and result.glares == 1
    assert waited >= 2.1  # we chose the Call-ID: RFC 3261 §14.1's 2.1-4 s
    assert _hears(rtp2, call)
    call.hangup()
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]  # the 491 was ACKed, the retry's 200 too
    first, refused, retried = _invites(trace)
    number = int(_header(first, "CSeq").split()[0])
    assert _header(refused, "CSeq") == f"{number + 1} INVITE"
    assert _header(retried, "CSeq") == f"{number + 2} INVITE"
    assert received(trace, "ACK", f"{number + 1} ACK")  # the 491's
    assert received(trace, "ACK", f"{number + 2} ACK")


def test_given_refusal_when_reinvited_then_call_goes_on_with_old_media(edges, rtp, rtp2, tmp_path):
    trace = tmp_path / "sipp.log"
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_refused.xml", trace)

    result = harness.edge.reinvite_to_edge(call)

    assert result.status == 488 and not result.ok and not result.dialog_gone
    assert call.state == CallState.ANSWERED and call.remote_rtp == (HOST, rtp.port)
    assert _hears(rtp, call)
    call.hangup()
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]


def test_given_silent_peer_when_reinvited_then_retransmitted_until_timer_b_and_call_goes_on(
    edges, rtp, rtp2, tmp_path
):
    trace = tmp_path / "sipp.log"
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_silent.xml", trace, t1=0.05, t2=0.4)

    result = harness.edge.reinvite_to_edge(call)

    assert result.status == TIMED_OUT and result.dialog_gone  # the caller decides
    assert call.state == CallState.ANSWERED and call.remote_rtp == (HOST, rtp.port)
    assert _hears(rtp, call)
    call.hangup()
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]
    first = _invites(trace)[0]
    number = int(_header(first, "CSeq").split()[0])
    # timer A: 0.05, 0.1, 0.2, 0.4, 0.4 ... within 64·T1 = 3.2 s: the first and 9 more
    assert len(received(trace, "INVITE", f"{number + 1} INVITE")) >= 5


def test_given_ended_call_when_reinvited_then_refused(edges, rtp, rtp2, tmp_path):
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_refused.xml", tmp_path / "t")
    call.hangup()
    with pytest.raises(ReinviteRefused):
        harness.edge.reinvite_to_edge(call)
    sipp.kill()
    sipp.communicate(timeout=10)


def test_glare_delay_is_rfc_3261_14_1():
    rng = random.Random(7)
    owners = [glare_delay(owner=True, rng=rng) for _ in range(500)]
    others = [glare_delay(owner=False, rng=rng) for _ in range(500)]
    assert 2.1 <= min(owners) and max(owners) <= 4.0
    assert 0.0 <= min(others) and max(others) <= 2.0
    assert all(abs(d * 100 - round(d * 100)) < 1e-9 for d in owners)  # in units of 10 ms


def test_with_origin_keeps_our_session_and_raises_its_version():
    relay = b"v=0\r\no=- 1 2 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\n"
    body = with_origin(relay, session_id=55, version=3, host="127.0.0.1")
    assert b"o=hotline 55 3 IN IP4 127.0.0.1\r\n" in body
    assert b"c=IN IP4 10.0.0.9" in body


def test_given_baresip_in_a_call_when_reinvited_elsewhere_then_it_sends_its_audio_there(
    tmp_path, rtp2
):
    """A real softphone (baresip) calls the edge; the edge re-INVITEs it with an SDP of
    another media endpoint (what rtpengine mode does) and baresip's audio moves there."""
    outcome: list = []

    def handler(call) -> None:
        call.read_frame(0.5)
        sdp = build_sdp(
            host=HOST,
            port=rtp2.port,
            session_id=1,
            version=1,
            payload_types=[call.payload_type],
            dtmf=None,
        )
        outcome.append(harness.edge.reinvite_away(call, sdp))
        while call.read_frame(1.0) is not None:
            pass

    harness = start_edge(handler, rtp_latch=True)  # baresip's SDP names eth0, it sends from lo
    try:
        host, port = harness.edge.address
        result = subprocess.run(
            ["baresip", "-f", str(baresip_dir(tmp_path)), "-e", f"/dial sip:12345@{host}:{port}"]
            + ["-t", "5"],
            capture_output=True,
            text=True,
            timeout=25,
            stdin=subprocess.DEVNULL,
        )
        assert outcome, result.stdout[-3000:] + result.stderr[-1000:]
        assert outcome[0].ok and outcome[0].answer is not None, outcome
        call = harness.calls[0]
        heard = rtp2.received_audio(call.payload_type)
        assert len(heard) > 8000  # over half a second of baresip's tone, at the new address
        assert abs(dominant_frequency(heard[len(heard) // 4 :]) - 1000) < 20
    finally:
        harness.edge.stop()


def test_given_our_reinvite_pending_when_the_peer_reinvites_then_491_and_ours_goes_on(
    edges, rtp, rtp2, tmp_path
):
    trace = tmp_path / "sipp.log"
    harness, sipp, call = _dial(edges, rtp, rtp2, "uas_reinvite_crossed.xml", trace)

    result = harness.edge.reinvite_to_edge(call)

    assert result.ok and result.answer is not None and result.answer.port == rtp2.port
    assert call.remote_direction == "sendrecv"  # their crossing hold was refused, not applied
    call.hangup()
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]  # it got the 491 it expects, and our ACK
    assert received(trace, "SIP/2.0 491", "7 INVITE")
