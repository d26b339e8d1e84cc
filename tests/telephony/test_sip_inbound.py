"""Inbound calls to the SIP edge from sipp on loopback: each test fixes one pyVoIP 1.6.8
defect measured against real peers (see telephony/sip_edge.py)."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from telephony import codecs
from telephony.endpoint import CallState, Disposition
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    dominant_frequency,
    output,
    received,
    rms,
    run_sipp,
    serve_until_hangup,
    start_edge,
    start_sipp,
    tone,
)


def _edge(edges: list, handler=None, **config):
    harness = start_edge(handler, **config)
    edges.append(harness)
    return harness


def _talking_handler(harness_ref: list, reply: bytes):
    """Plays ``reply`` to the caller and listens until the caller hangs up."""

    def handler(call):
        call.send_audio(reply)
        serve_until_hangup(call, harness_ref[0].frames[call.call_id])

    return handler


def _raw_request(target: tuple[str, int], data: bytes, *, expect: bool = True) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2 if expect else 0.5)
        sock.sendto(data.replace(b"PORT", str(sock.getsockname()[1]).encode()), target)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def _request(
    method: str = "INVITE", version: str = "SIP/2.0", headers: str | None = None, body: str = ""
) -> bytes:
    headers = (
        headers
        if headers is not None
        else (
            "Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bKraw1;rport\r\n"
            "From: <sip:13800000000@127.0.0.1>;tag=raw1\r\n"
            "To: <sip:12345@127.0.0.1>\r\n"
            f"Call-ID: raw-{time.monotonic_ns()}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
        )
    )
    return (
        f"{method} sip:12345@127.0.0.1 {version}\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_given_pcmu_caller_when_calling_then_answered_at_once_and_audio_flows_both_ways(edges, rtp):
    ref: list = []
    harness = _edge(edges, _talking_handler(ref, tone(400, 0.6)))
    ref.append(harness)
    sipp = start_sipp(
        "uac_call.xml",
        target=harness.target,
        keys={"rtp_port": rtp.port, "fmts": "0 8 101"},
        hold=1500,
    )
    call = harness.answered.get(timeout=10)
    rtp.send((HOST, call.rtp_port), tone(1000, 0.4), payload_type=codecs.PCMU)
    rtp.send_key((HOST, call.rtp_port), "5")
    assert call.read_dtmf(2) == "5"  # telephone-event was offered, so it was answered too
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]

    wait_until(lambda: harness.ended, 5, message="on_ended")
    assert call.codec == "PCMU" and call.disposition == Disposition.CALLER_HUNG_UP
    # pyVoIP waited a built-in second before answering.
    assert (call.answered_at - call.arrived_at).total_seconds() < 0.3
    heard = b"".join(harness.frames[call.call_id])
    assert rms(heard) > 1000 and abs(dominant_frequency(heard) - 1000) < 20
    sent = rtp.received_audio(codecs.PCMU)
    loud = b"".join(
        sent[i : i + 320] for i in range(0, len(sent), 320) if rms(sent[i : i + 320]) > 2000
    )
    assert len(loud) >= 0.5 * 16000 and abs(dominant_frequency(loud) - 400) < 20


def test_given_pcma_first_offer_then_pcma_is_negotiated_and_sent(edges, rtp):
    ref: list = []
    harness = _edge(edges, _talking_handler(ref, tone(400, 0.6)))
    ref.append(harness)
    result = run_sipp(
        "uac_call.xml",
        target=harness.target,
        keys={"rtp_port": rtp.port, "fmts": "8 0 101"},
        hold=1200,
    )
    assert result.returncode == 0, output(result)
    call = harness.calls[0]
    assert call.codec == "PCMA"
    assert {p.payload_type for p in rtp.packets} == {codecs.PCMA}  # pyVoIP sent μ-law
    sent = rtp.received_audio(codecs.PCMA)
    loud = b"".join(
        sent[i : i + 320] for i in range(0, len(sent), 320) if rms(sent[i : i + 320]) > 2000
    )
    assert abs(rms(loud) - 8000 / 2**0.5) < 400 and abs(dominant_frequency(loud) - 400) < 20


def test_given_call_ended_when_same_invite_retransmitted_then_same_response_and_no_new_call(
    edges, rtp, tmp_path
):
    harness = _edge(edges)
    trace = tmp_path / "trace.log"
    result = run_sipp(
        "uac_retransmit_after_end.xml",
        target=harness.target,
        keys={"rtp_port": rtp.port},
        trace=trace,
    )
    assert result.returncode == 0, output(result)
    time.sleep(0.3)  # a ghost call would be answered by now
    assert len(harness.calls) == 1 and len(harness.ended) == 1
    oks = received(trace, "SIP/2.0 200 OK", "1 INVITE")
    assert len(oks) == 2
    assert oks[0].split("\n", 3)[3] == oks[1].split("\n", 3)[3]  # the same response


def test_given_200_not_acked_then_it_is_retransmitted_until_ack(edges, rtp, tmp_path):
    harness = _edge(edges, t1=0.25)
    trace = tmp_path / "trace.log"
    result = run_sipp(
        "uac_no_ack.xml", target=harness.target, keys={"rtp_port": rtp.port}, trace=trace
    )
    assert result.returncode == 0, output(result)
    # Sent at 0, then T1 doubling: 0.25 s and 0.75 s before the ACK at 1.5 s, none after.
    assert len(received(trace, "SIP/2.0 200 OK", "1 INVITE")) == 3
    wait_until(lambda: harness.ended, 5)
    assert harness.ended[0].disposition == Disposition.CALLER_HUNG_UP
    wait_until(lambda: harness.edge.stats()["retransmissions"] == 0, 5)


def test_given_200_never_acked_then_call_ends_failed_with_a_bye(edges):
    harness = _edge(edges, t1=0.05)  # gives up after 64 × T1 = 3.2 s
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(6)
        port = sock.getsockname()[1]
        invite = _request(
            headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKnoack;rport\r\n"
            f"From: <sip:13800000000@127.0.0.1:{port}>;tag=n1\r\n"
            "To: <sip:12345@127.0.0.1>\r\nCall-ID: noack@127.0.0.1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.1:{port}>\r\n"
            "Content-Type: application/sdp\r\n",
            body=sdp,
        )
        sock.sendto(invite, harness.edge.address)
        starts = []
        while not starts or not starts[-1].startswith(b"BYE "):
            starts.append(sock.recv(65535))
    assert starts[0].startswith(b"SIP/2.0 200 ")  # answered at once: no 100 before it
    assert sum(s.startswith(b"SIP/2.0 200 ") for s in starts) >= 5  # T1, 2T1, 4T1, ...
    wait_until(lambda: harness.ended, 5)
    assert harness.ended[0].disposition == Disposition.FAILED


def test_given_invite_without_sdp_then_we_offer_in_200_and_take_the_answer_from_ack(edges, rtp):
    harness = _edge(edges)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        dialog = (
            f"From: <sip:13800000000@127.0.0.1:{port}>;tag=d1\r\nCall-ID: delayed@127.0.0.1\r\n"
        )
        invite = _request(
            headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKd1;rport\r\n"
            f"{dialog}To: <sip:12345@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:c@127.0.0.1:{port}>\r\n"
        )
        sock.sendto(invite, harness.edge.address)
        ok = sock.recv(65535).decode()
        assert ok.startswith("SIP/2.0 200 ") and "RTP/AVP 0 8 101" in ok  # our offer
        to = re.search(r"^To: (.*)$", ok, re.M).group(1).strip()
        answer = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.port} RTP/AVP 8\r\n"
        )
        sock.sendto(
            _request(
                "ACK",
                headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKd2"
                f";rport\r\n{dialog}To: {to}\r\nCSeq: 1 ACK\r\n"
                "Content-Type: application/sdp\r\n",
                body=answer,
            ),
            harness.edge.address,
        )
        call = harness.answered.get(timeout=5)
        assert call.codec == "PCMA"
        wait_until(lambda: len(rtp.packets) > 3, 5, message="RTP after the ACK")
        assert {p.payload_type for p in rtp.packets} == {codecs.PCMA}
        sock.sendto(
            _request(
                "BYE",
                headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKd3"
                f";rport\r\n{dialog}To: {to}\r\nCSeq: 2 BYE\r\n",
            ),
            harness.edge.address,
        )
        assert sock.recv(65535).startswith(b"SIP/2.0 200 ")
    wait_until(lambda: harness.ended, 5)
    assert harness.ended[0].disposition == Disposition.CALLER_HUNG_UP


def test_given_ringing_call_when_cancelled_then_487_and_cancelled_record_and_no_handler(edges, rtp):
    harness = _edge(edges, answer_delay=2.0)
    result = run_sipp("uac_cancel.xml", target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    wait_until(lambda: harness.ended, 5, message="on_ended")
    call = harness.ended[0]
    assert call.disposition == Disposition.CANCELLED and call.answered_at is None
    time.sleep(2.2)  # past the ring time: pyVoIP answered the cancelled call here
    assert harness.calls == [] and len(harness.ended) == 1
    assert harness.edge.stats()["dialogs"] == 0 and not rtp.packets


def test_given_call_when_reinvite_moves_media_then_200_and_audio_keeps_flowing(edges, rtp):
    moved = RtpPeer()
    try:
        harness = _edge(edges)
        sipp = start_sipp(
            "uac_reinvite.xml",
            target=harness.target,
            keys={"rtp_port": rtp.port, "rtp_port2": moved.port},
            hold=1000,
        )
        call = harness.answered.get(timeout=10)
        wait_until(lambda: len(moved.packets) > 5, 10, message="RTP at the new address")
        count = len(harness.frames[call.call_id])
        moved.send((HOST, call.rtp_port), tone(1000, 0.3), payload_type=codecs.PCMU)
        out, _ = sipp.communicate(timeout=20)
        assert sipp.returncode == 0, out[-2500:]
        after = b"".join(harness.frames[call.call_id][count:])
        assert rms(after) > 1000  # the caller's audio from the new address is heard
        assert call.remote_rtp == (HOST, moved.port)
    finally:
        moved.close()


def test_given_rtp_port_in_use_by_another_process_then_call_gets_a_free_one(edges, rtp):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for low in range(40000, 60000, 4):  # two adjacent even ports, the first one taken
            try:
                squatter.bind((HOST, low))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((HOST, low + 2))
                break
            except OSError:
                squatter.close()
                squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        harness = _edge(edges, rtp_low=low, rtp_high=low + 4)
        result = run_sipp(
            "uac_call.xml",
            target=harness.target,
            keys={"rtp_port": rtp.port, "fmts": "0"},
            hold=200,
        )
        assert result.returncode == 0, output(result)
        assert harness.calls[0].rtp_port == low + 2  # pyVoIP handed out ports unchecked
    finally:
        squatter.close()


def test_given_options_keepalive_then_200_with_allow(edges):
    harness = _edge(edges)
    result = run_sipp("uac_options.xml", target=harness.target)
    assert result.returncode == 0, output(result)


def test_given_compact_and_lower_case_headers_and_empty_supported_then_call_is_answered(edges, rtp):
    harness = _edge(edges)
    result = run_sipp("uac_compact.xml", target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    assert len(harness.calls) == 1


def test_given_malformed_requests_then_400_or_505_and_garbage_is_dropped_then_calls_work(
    edges, rtp
):
    harness = _edge(edges)
    target = harness.edge.address
    missing_cseq = _request(
        headers="Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bKm;rport\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
        "Call-ID: bad-1\r\n"
    )
    assert _raw_request(target, missing_cseq).startswith(b"SIP/2.0 400 ")
    broken_header = _request(
        headers="Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bKb;rport\r\n"
        "this is not a header\r\nCall-ID: bad-2\r\n"
    )
    assert _raw_request(target, broken_header).startswith(b"SIP/2.0 400 ")
    assert _raw_request(target, _request(version="SIP/3.0")).startswith(b"SIP/2.0 505 ")
    assert _raw_request(target, b"\x00\xff\x13garbage\r\n\r\n", expect=False) is None
    assert _raw_request(target, b"hello world", expect=False) is None
    assert _raw_request(target, _request("OPTIONS")).startswith(b"SIP/2.0 200 ")

    result = run_sipp(
        "uac_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=200
    )
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("scenario", ["uac_opus_only.xml", "uac_no_connection.xml"])
def test_given_unusable_sdp_then_488_and_no_call(edges, rtp, scenario):
    harness = _edge(edges)
    result = run_sipp(scenario, target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    assert harness.calls == [] and harness.edge.stats()["rtp_ports"] == 0


def test_given_peer_outside_allow_list_then_403(edges, rtp):
    harness = _edge(edges, allow=("10.0.0.0/8",))
    result = run_sipp("uac_forbidden.xml", target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    assert harness.calls == []


def test_given_two_peers_calling_at_once_then_each_gets_its_own_answers(edges):
    harness = _edge(edges)
    peers = [RtpPeer(), RtpPeer()]
    try:
        runs = [
            start_sipp(
                "uac_call.xml",
                target=harness.target,
                keys={"rtp_port": peer.port, "fmts": "0"},
                hold=1500,
            )
            for peer in peers
        ]
        wait_until(lambda: harness.edge.live_calls == 2, 10, message="two live calls")
        for run in runs:
            out, _ = run.communicate(timeout=20)
            assert run.returncode == 0, out[-2500:]
        assert all(peer.packets for peer in peers)  # each caller got its own media too
        wait_until(lambda: len(harness.ended) == 2, 5)
    finally:
        for peer in peers:
            peer.close()


def test_given_all_call_slots_taken_then_503(edges, rtp):
    harness = _edge(edges, max_calls=1)
    first = start_sipp(
        "uac_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=2500
    )
    harness.answered.get(timeout=10)
    result = run_sipp("uac_busy.xml", target=harness.target, keys={"rtp_port": rtp.port})
    assert result.returncode == 0, output(result)
    out, _ = first.communicate(timeout=20)
    assert first.returncode == 0, out[-2500:]


def test_given_many_calls_then_edge_keeps_answering_and_frees_every_port_and_dialog(edges, rtp):
    harness = _edge(edges, max_calls=60)
    load = start_sipp(
        "uac_call.xml",
        target=harness.target,
        calls=50,
        rate=50,
        keys={"rtp_port": rtp.port, "fmts": "0"},
        hold=2000,
        timeout=30,
    )
    wait_until(lambda: harness.edge.live_calls >= 40, 15, message="40 live calls")
    probe = run_sipp("uac_options.xml", target=harness.target)  # a PBX keep-alive meanwhile
    assert probe.returncode == 0, output(probe)
    out, _ = load.communicate(timeout=40)
    assert load.returncode == 0, out[-2500:]
    wait_until(lambda: len(harness.ended) == 50, 10, message="50 call records")
    assert {c.disposition for c in harness.ended} == {Disposition.CALLER_HUNG_UP}
    assert all(c.state == CallState.ENDED and c.ended.is_set() for c in harness.calls)
    wait_until(
        lambda: (
            harness.edge.stats()
            == {
                "dialogs": 0,
                "rtp_ports": 0,
                "retransmissions": 0,
                "transactions": 0,
                "handlers": 0,
                "ended_call_ids": 50,
            }
        ),
        10,
        message="no state left",
    )


def test_given_a_slow_call_key_check_then_the_200_does_not_wait_for_it_and_every_side_sees_its_key(
    edges, rtp
):
    """The key check may ask the database (``SipConfig.call_key_known``): it runs off the SIP
    receive thread, so the answer does not wait for it, and the handler and the end of the
    call both see the key it decided."""
    release = threading.Event()
    asked_on: list[str] = []

    def known(key: str) -> bool:
        asked_on.append(threading.current_thread().name)
        release.wait(10)
        return not key.endswith("~2")  # the Call-ID was taken before: this call is ~2

    harness = _edge(edges, lambda call: call.ended.wait(10), call_key_known=known)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        dialog = (
            f"From: <sip:13800000000@127.0.0.1:{port}>;tag=k1\r\nCall-ID: slowkey@127.0.0.1\r\n"
        )
        offer = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.port} RTP/AVP 0\r\n"
        )
        sock.sendto(
            _request(
                headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKk1;rport\r\n"
                f"{dialog}To: <sip:12345@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:c@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n",
                body=offer,
            ),
            harness.edge.address,
        )
        ok = sock.recv(65535).decode()  # while the check is still held
        assert ok.startswith("SIP/2.0 200 ") and not release.is_set()
        to = re.search(r"^To: (.*)$", ok, re.M).group(1).strip()
        assert harness.answered.empty()  # the handler waits for its key
        release.set()
        call = harness.answered.get(timeout=5)
        sock.sendto(
            _request(
                "BYE",
                headers=f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKk2"
                f";rport\r\n{dialog}To: {to}\r\nCSeq: 2 BYE\r\n",
            ),
            harness.edge.address,
        )
        assert sock.recv(65535).startswith(b"SIP/2.0 200 ")
    wait_until(lambda: harness.ended, 5)
    assert call.call_id == harness.ended[0].call_id == "slowkey@127.0.0.1~2"
    assert asked_on and "sip-recv" not in asked_on
