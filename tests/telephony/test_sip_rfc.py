"""The SIP edge against RFC 3261/3966 corners that real SBCs and softphones send (issue 15):
each request gets the answer the RFC gives it, from sipp or a raw socket on loopback."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from sqlalchemy import select

from hotline.calls.records import end_values, upsert_call
from telephony import sip_message as sm
from telephony.endpoint import Disposition
from telephony.models import CallRecord
from telephony.sip_sdp import build_sdp, read_offer
from tests.conftest import wait_until
from tests.telephony.sip_peers import HOST, output, received, run_sipp, start_edge, start_sipp


def _edge(edges: list, handler=None, **config):
    harness = start_edge(handler, **config)
    edges.append(harness)
    return harness


def _exchange(target: tuple[str, int], *datagrams: bytes, wait: float = 1.0) -> list[bytes]:
    """Send ``datagrams`` from one socket (PORT replaced by its port) and collect every
    response for ``wait`` seconds after the last."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port = str(sock.getsockname()[1]).encode()
        got: list[bytes] = []
        for data in datagrams:
            sock.sendto(data.replace(b"PORT", port), target)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                break
        return got


def test_given_tel_uri_caller_when_calling_then_answered_with_the_number(edges, rtp):
    harness = _edge(edges)
    result = run_sipp(
        "uac_tel_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}
    )
    assert result.returncode == 0, output(result)
    wait_until(lambda: harness.ended, 5, message="on_ended")
    call = harness.calls[0]
    assert call.remote_number == "+8613800000000"
    assert call.disposition == Disposition.CALLER_HUNG_UP


def test_given_tel_uri_caller_refused_when_4xx_acked_then_not_retransmitted(edges, rtp, tmp_path):
    harness = _edge(edges, t1=0.1)
    trace = tmp_path / "trace.log"
    result = run_sipp(
        "uac_tel_refused.xml", target=harness.target, keys={"rtp_port": rtp.port}, trace=trace
    )
    assert result.returncode == 0, output(result)
    assert len(received(trace, "SIP/2.0 488", "1 INVITE")) == 1
    assert harness.edge.stats()["retransmissions"] == 0


def _request(
    method: str = "INVITE",
    *,
    cseq: str | None = None,
    call_id: str | None = None,
    tags: tuple[str, str] = ("raw1", ""),
    body: str = "",
    length: int | None = None,
) -> bytes:
    """A request from the raw socket (PORT: its port); ``tags``: the From and To tags."""
    from_tag, to_tag = tags
    return (
        f"{method} sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK{time.monotonic_ns()};rport\r\n"
        f"From: <sip:13800000000@127.0.0.1>;tag={from_tag}\r\n"
        f"To: <sip:12345@127.0.0.1>{f';tag={to_tag}' if to_tag else ''}\r\n"
        f"Call-ID: {call_id or f'raw-{time.monotonic_ns()}@127.0.0.1'}\r\n"
        f"CSeq: {cseq or f'1 {method}'}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n{body}"
    ).encode()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_given_live_call_when_bye_with_foreign_tags_then_481_and_call_goes_on(edges, rtp):
    harness = _edge(edges)
    sipp = start_sipp(
        "uac_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=1500
    )
    call = harness.answered.get(timeout=10)
    for tags in (("strangers", "tags"), ("strangers", ""), ("", "")):
        bye = _request("BYE", cseq="9 BYE", call_id=call.call_id, tags=tags)
        assert [_status(r) for r in _exchange(harness.edge.address, bye, wait=0.3)] == [481]
        assert harness.edge.live_calls == 1 and not harness.ended
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]  # the caller's own BYE still ends it: 200
    wait_until(lambda: harness.ended, 5, message="on_ended")
    assert call.disposition == Disposition.CALLER_HUNG_UP


def test_given_cseq_method_not_the_request_method_then_400_and_no_call(edges):
    harness = _edge(edges)
    for request in (_request("INVITE", cseq="1 BYE"), _request("OPTIONS", cseq="1 INVITE")):
        assert [_status(r) for r in _exchange(harness.edge.address, request, wait=0.3)] == [400]
    assert harness.edge.live_calls == 0 and harness.calls == []


def test_given_methods_then_known_but_unsupported_405_with_allow_and_unknown_501(edges):
    harness = _edge(edges)
    for method, status in (("INFO", 405), ("REGISTER", 405), ("SUBSCRIBE", 405), ("FOO", 501)):
        (response,) = _exchange(harness.edge.address, _request(method), wait=0.3)
        assert _status(response) == status, method
        assert b"\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, REFER\r\n" in response


def test_given_content_length_larger_than_the_body_then_400(edges):
    harness = _edge(edges)
    truncated = _request("OPTIONS", length=300)  # the datagram ends before the body would
    assert [_status(r) for r in _exchange(harness.edge.address, truncated, wait=0.3)] == [400]


def _store(session, call) -> CallRecord:
    """What the platform does at the answer and the end: the call record, on both backends
    (PostgreSQL enforces the column's length)."""
    upsert_call(session, call=call, now=call.arrived_at)
    upsert_call(session, call=call, now=call.arrived_at, **end_values(call))
    session.flush()
    return session.scalars(select(CallRecord).where(CallRecord.call_id == call.call_id)).one()


def test_given_call_id_longer_than_the_column_when_calling_then_answered_and_stored(
    edges, rtp, session
):
    harness = _edge(edges)
    long_id = "x" * 300 + "-%u@%s"
    result = run_sipp(
        "uac_call.xml",
        target=harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0"},
        extra=["-cid_str", long_id],
    )
    assert result.returncode == 0, output(result)  # answered, and its BYE matched the call
    wait_until(lambda: harness.ended, 5, message="on_ended")
    # the call as it ended (on a loaded machine the caller's BYE can come before its
    # handler's thread has run)
    call = harness.ended[0]
    record = _store(session, call)
    assert record.disposition == Disposition.CALLER_HUNG_UP
    assert call.sip_call_id.startswith("x" * 300) and len(call.call_id) <= 255


def test_given_call_id_used_again_after_the_first_call_then_a_new_call_and_record(
    edges, rtp, session
):
    harness = _edge(edges, ended_call_ttl=0.2)
    for n in (1, 2):
        result = run_sipp(
            "uac_call.xml",
            target=harness.target,
            keys={"rtp_port": rtp.port, "fmts": "0"},
            extra=["-cid_str", "same-call-id@127.0.0.1"],
        )
        assert result.returncode == 0, output(result)
        wait_until(lambda: len(harness.calls) == len(harness.ended) == n, 5)
        wait_until(lambda: harness.edge.stats()["ended_call_ids"] == 0, 5)
    first, second = harness.calls
    assert _store(session, first).id != _store(session, second).id
    assert first.call_id != second.call_id
    assert first.sip_call_id == second.sip_call_id == "same-call-id@127.0.0.1"


def test_given_all_call_slots_taken_when_refused_with_503_then_a_missed_call_is_recorded(
    edges, rtp, session, caplog
):
    harness = _edge(edges, max_calls=1)
    first = start_sipp(
        "uac_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=2500
    )
    harness.answered.get(timeout=10)
    with caplog.at_level(logging.WARNING, logger="telephony.sip_inbound"):
        result = run_sipp("uac_busy.xml", target=harness.target, keys={"rtp_port": rtp.port})
        assert result.returncode == 0, output(result)
        wait_until(lambda: harness.ended, 5, message="the refused call told to on_ended")
    (refused,) = harness.ended
    assert refused.disposition == Disposition.REFUSED and refused.answered_at is None
    assert harness.edge.refused_calls == 1
    assert any("refused with 503" in r.getMessage() for r in caplog.records)
    record = _store(session, refused)
    assert (record.disposition, record.caller_number) == (Disposition.REFUSED, "13800000000")
    assert record.talk_s == 0 and record.answered_at is None
    out, _ = first.communicate(timeout=20)
    assert first.returncode == 0, out[-2500:]
    wait_until(lambda: len(harness.ended) == 2, 5, message="the first call's end")
    assert harness.edge.refused_calls == 1  # told once


def test_given_ipv6_media_offer_to_an_ipv4_edge_then_488_with_warning_301_and_no_call(edges, rtp):
    harness = _edge(edges)
    result = run_sipp("uac_ipv6_media.xml", target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    assert harness.calls == [] and harness.edge.stats()["rtp_ports"] == 0


def test_given_ipv6_host_then_our_sdp_says_ip6():
    sdp = build_sdp(host="::1", port=4000, session_id=1, version=1, payload_types=[0], dtmf=None)
    assert b"\r\nc=IN IP6 ::1\r\n" in sdp and b"o=hotline 1 1 IN IP6 ::1\r\n" in sdp


def _offer(fmtp: str):
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:96 telephone-event/8000\r\n{fmtp}"
    )
    message = sm.parse(
        _request("INVITE", body=sdp)
        .replace(b"Content-Length", b"Content-Type: application/sdp\r\nContent-Length")
        .replace(b"PORT", b"5070")
    )
    return read_offer(message)[0]


@pytest.mark.parametrize(
    ("fmtp", "dtmf", "answered"),
    [
        ("a=fmtp:96 0-15\r\n", 96, "0-15"),
        ("", 96, "0-15"),  # RFC 4733 §7.1.1: no fmtp means 0-15
        ("a=fmtp:96 0-16,32-35\r\n", 96, "0-16"),  # only the events we take
        ("a=fmtp:96 0-11, 16\r\n", 96, "0-11,16"),
        ("a=fmtp:96 16\r\n", None, ""),  # flash only: no digit to read
    ],
)
def test_given_telephone_event_fmtp_then_answer_lists_their_events_we_take(fmtp, dtmf, answered):
    offer = _offer(fmtp)
    assert offer is not None and (offer.dtmf_payload_type, offer.dtmf_events) == (dtmf, answered)
    sdp = build_sdp(
        host="127.0.0.1",
        port=4000,
        session_id=1,
        version=1,
        payload_types=[offer.payload_type],
        dtmf=offer.dtmf_payload_type,
        dtmf_events=offer.dtmf_events,
    )
    assert (f"a=fmtp:96 {answered}\r\n".encode() in sdp) == (dtmf is not None)
