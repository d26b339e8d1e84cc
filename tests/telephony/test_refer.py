"""REFER (RFC 3515) from an operator's phone: Refer-To parsing (with RFC 3891 Replaces), the
dialog layer's answers to a REFER it cannot act on, and what the bridge does with one —
a blind transfer whose outcome goes back to the phone as a sipfrag status, before its BYE."""

from __future__ import annotations

import socket
import time

import pytest

from telephony.bridge import Bridge
from telephony.endpoint import CallFailed, Disposition
from telephony.recording import Side
from telephony.sip_refer import Refer, parse_refer_to
from telephony.transfer import TransferOutcome
from tests.conftest import wait_until
from tests.telephony.fakes import FakeDial, PipeCall
from tests.telephony.sip_peers import HOST, start_edge, start_sipp


# --- raw requests, as in tests/telephony/test_sip_rfc.py ---
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


def _request(method: str, *, cseq: str, call_id: str, tags: tuple[str, str]) -> bytes:
    """A request from the raw socket (PORT: its port); ``tags``: the From and To tags."""
    from_tag, to_tag = tags
    return (
        f"{method} sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK{time.monotonic_ns()};rport\r\n"
        f"From: <sip:13800000000@127.0.0.1>;tag={from_tag}\r\n"
        f"To: <sip:12345@127.0.0.1>{f';tag={to_tag}' if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_refer_to_gives_the_target_and_any_replaces_header():
    assert parse_refer_to("<sip:8002@10.0.0.5:5062>") == ("sip:8002@10.0.0.5:5062", "")
    assert parse_refer_to("sip:8002@seats.test;user=phone") == ("sip:8002@seats.test", "")
    assert parse_refer_to(
        "<sip:8002@seats.test?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>"
    ) == ("sip:8002@seats.test", "abc@host;to-tag=1;from-tag=2")
    assert parse_refer_to("<tel:12319>") == ("tel:12319", "")
    with pytest.raises(ValueError):
        parse_refer_to("<mailto:boss@example.com>")


def _refer(call, tags, *refer_to: str) -> bytes:
    request = _request("REFER", cseq="7 REFER", call_id=call.sip_call_id, tags=tags).decode()
    headers = "".join(f"Refer-To: {value}\r\n" for value in refer_to)
    return request.replace("Content-Length:", headers + "Content-Length:", 1).encode()


def test_given_refers_the_dialog_cannot_act_on_then_481_400_or_603_and_the_call_goes_on(edges, rtp):
    harness = _edge(edges)
    sipp = start_sipp(
        "uac_call.xml", target=harness.target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=2500
    )
    call = harness.answered.get(timeout=10)
    ours = harness.edge._local_tag(call)
    theirs = call._remote_header.rpartition("tag=")[2]
    cases = [
        (("strangers", "tags"), ["<sip:8002@127.0.0.1>"], 481),  # not this dialog
        ((theirs, ours), [], 400),  # no Refer-To
        ((theirs, ours), ["<sip:8002@127.0.0.1>", "<sip:8003@127.0.0.1>"], 400),  # two
        ((theirs, ours), ["<mailto:boss@example.com>"], 400),
        ((theirs, ours), ["<sip:8002@127.0.0.1>"], 603),  # nothing relays this call
    ]
    for tags, refer_to, status in cases:
        responses = _exchange(harness.edge.address, _refer(call, tags, *refer_to), wait=0.3)
        assert [_status(r) for r in responses] == [status], (tags, refer_to)
        assert harness.edge.live_calls == 1
    out, _ = sipp.communicate(timeout=20)
    assert sipp.returncode == 0, out[-2500:]  # no NOTIFY reached the caller; its BYE: 200


def _bridge(dial, **kwargs):
    caller, agent = PipeCall("caller-1"), PipeCall("agent-a", remote_number="8001")
    bridge = Bridge(caller, agent, recording_dir=None, read_timeout_s=0.05, dial=dial, **kwargs)
    bridge.start()
    return bridge, caller, agent


def _notified(agent: PipeCall) -> tuple[list[tuple[int, str, bool]], Refer]:
    """A Refer whose NOTIFYs are kept, each with whether A's leg had ended by then."""
    told: list[tuple[int, str, bool]] = []

    def notify(status: int, reason: str) -> None:
        told.append((status, reason, agent.ended.is_set()))

    return told, Refer(target="sip:8002@seats", replaces="", notify=notify)


def test_given_a_blind_refer_then_the_phone_hears_200_before_its_bye_and_the_target_takes_over():
    target = PipeCall("agent-b")
    dial = FakeDial(target)
    dial.answer.set()
    bridge, caller, agent = _bridge(dial, refer_target=lambda uri: uri + ";resolved")
    told, refer = _notified(agent)
    assert bridge._on_refer(agent, refer)
    # A's leg is hung up after the 200 is told (the target takes its place just before)
    wait_until(agent.ended.is_set, 5, message="A's leg hung up")
    assert bridge.legs[Side.AGENT] is target
    assert told == [(200, "OK", False)]  # told while A's leg still stood
    assert dial.dialled[0][0] == "sip:8002@seats;resolved"
    assert bridge.result.transfers[0].outcome is TransferOutcome.COMPLETED
    bridge.stop()
    assert bridge.wait(5)


@pytest.mark.parametrize(
    ("disposition", "status"),
    [(Disposition.BUSY, 486), (Disposition.NO_ANSWER, 408), (Disposition.FAILED, 503)],
)
def test_given_a_refer_to_a_target_that_fails_then_the_phone_is_told_why(disposition, status):
    bridge, caller, agent = _bridge(FakeDial(CallFailed(disposition)))
    told, refer = _notified(agent)
    assert bridge._on_refer(agent, refer)
    wait_until(lambda: bridge.result.transfers[0].done.is_set(), 5, message="done")
    assert told[0][0] == status and not agent.ended.is_set() and not bridge.held
    bridge.stop()
    assert bridge.wait(5)


def test_given_refers_the_bridge_cannot_do_then_declined():
    bridge, caller, agent = _bridge(FakeDial(PipeCall("agent-b")), refer_target=lambda uri: None)
    told, refer = _notified(agent)
    assert not bridge._on_refer(agent, refer)  # no seat behind that extension
    assert not bridge._on_refer(caller, refer)  # only the agent's phone transfers
    attended = Refer(
        target="sip:8002@seats", replaces="abc;to-tag=1;from-tag=2", notify=refer.notify
    )
    assert not bridge._on_refer(agent, attended)
    assert told == [] and bridge.result.transfers == []
    bridge.stop()
    assert bridge.wait(5)
