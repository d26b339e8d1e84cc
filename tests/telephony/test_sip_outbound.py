"""Outbound calls (satisfaction-survey call-backs) and line registration, against sipp
playing the citizen's phone or the PBX's registrar on loopback."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator

import pytest

from telephony import codecs
from telephony.endpoint import CallFailed, CallState, Disposition
from telephony.sip_config import SipLine
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    free_udp_port,
    received,
    rms,
    start_edge,
    start_sipp,
    tone,
)


@pytest.fixture
def harness() -> Iterator:
    started = start_edge()
    yield started
    started.edge.stop()


@pytest.fixture
def rtp() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


def _callee(scenario: str, **kwargs):
    port = free_udp_port()
    return start_sipp(scenario, port=port, **kwargs), f"sip:13800000000@{HOST}:{port}"


def test_given_answering_callee_when_dialled_then_call_is_up_with_media_and_our_bye_ends_it(
    harness, rtp
):
    sipp, uri = _callee("uas_answer.xml", keys={"rtp_port": rtp.port})
    call = harness.edge.dial(uri, ring_timeout=5)
    assert call.state == CallState.ANSWERED and call.codec == "PCMU"
    assert call.remote_number == "13800000000"
    call.send_audio(tone(400, 0.3))
    rtp.send((HOST, call.rtp_port), tone(1000, 0.3), payload_type=codecs.PCMU)
    assert call.wait_sent(5)
    frames = [call.read_frame(1.0) for _ in range(10)]
    assert rms(b"".join(f for f in frames if f)) > 1000
    call.hangup()
    out, _ = sipp.communicate(timeout=15)
    assert sipp.returncode == 0, out[-2500:]
    assert rms(rtp.received_audio(codecs.PCMU)) > 1000
    wait_until(lambda: harness.ended, 5)
    assert harness.ended == [call] and call.disposition == Disposition.COMPLETED
    assert harness.calls == []  # outbound calls are not handed to on_call


def test_given_busy_callee_when_dialled_then_call_failed_busy(harness):
    sipp, uri = _callee("uas_busy.xml")
    with pytest.raises(CallFailed) as failure:
        harness.edge.dial(uri, ring_timeout=5)
    assert failure.value.disposition == Disposition.BUSY
    out, _ = sipp.communicate(timeout=15)
    assert sipp.returncode == 0, out[-2500:]  # our ACK of the 486 arrived
    wait_until(lambda: harness.ended, 5)
    assert harness.ended[0].disposition == Disposition.BUSY


def test_given_a_draining_edge_when_dialling_then_refused_and_nothing_sent(harness):
    """SIGTERM drains the edge: no callback is started while it goes away."""
    harness.edge.drain()
    with pytest.raises(CallFailed, match="draining") as failure:
        harness.edge.dial(f"sip:13800000000@{HOST}:{free_udp_port()}", ring_timeout=5)
    assert failure.value.disposition == Disposition.FAILED
    assert harness.edge.live_calls == 0 and harness.ended == []


def test_given_callee_not_answering_when_ring_timeout_then_cancel_and_no_answer(harness):
    sipp, uri = _callee("uas_no_answer.xml")
    started = time.monotonic()
    with pytest.raises(CallFailed) as failure:
        harness.edge.dial(uri, ring_timeout=1.0)
    assert failure.value.disposition == Disposition.NO_ANSWER
    assert time.monotonic() - started < 4
    out, _ = sipp.communicate(timeout=15)
    assert sipp.returncode == 0, out[-2500:]  # it got our CANCEL, then our ACK of the 487
    wait_until(lambda: harness.ended, 5)
    assert harness.ended[0].disposition == Disposition.NO_ANSWER
    wait_until(
        lambda: harness.edge.stats()["dialogs"] == 0 and harness.edge.stats()["rtp_ports"] == 0, 5
    )


def test_given_registrar_with_qop_digest_then_line_registers_without_blocking_and_refreshes(
    tmp_path,
):
    port = free_udp_port()
    trace = tmp_path / "registrar.log"
    sipp = start_sipp("uas_registrar.xml", port=port, trace=trace, timeout=20)
    line = SipLine(
        user="alice", password="s3cret", registrar=f"{HOST}:{port}", domain="hotline.test"
    )
    began = time.monotonic()
    # T1 of 1 s: no REGISTER retransmission on a loaded machine to upset sipp's script.
    harness = start_edge(mode="registered", lines=(line,), register_expires=60, t1=1.0)
    try:
        assert time.monotonic() - began < 5  # pyVoIP blocked here up to 30 s
        registration = harness.edge.registrations[0]
        wait_until(registration.registered.is_set, 5, message="registered")
        out, _ = sipp.communicate(timeout=20)
        assert sipp.returncode == 0, out[-2500:]  # registered, refreshed, registered again
        assert registration.expires == 2
        for cseq in ("2 REGISTER", "4 REGISTER"):
            (request,) = received(trace, "REGISTER sip:hotline.test SIP/2.0", cseq)
            assert _digest_is_valid(request, "REGISTER", password="s3cret")
    finally:
        harness.edge.stop()


def _digest_is_valid(request: str, method: str, *, password: str) -> bool:
    """RFC 2617 §3.2.2 with qop=auth, computed independently of telephony.sip_registration."""
    found = re.search(r"^Authorization: Digest (.*)$", request, re.M)
    assert found is not None, "no Authorization header"
    header = found.group(1)
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', header))
    assert params["qop"] == "auth" and params["nc"] == "00000001" and params["cnonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    expected = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    return params["response"] == expected and params["opaque"] == "0pq"
