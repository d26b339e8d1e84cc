"""The SIP process's switch interval follows the calls it carries
(``telephony.sip_transport.gil_handover_for``): short while few calls run, so the receive
thread answers an INVITE without waiting long for the GIL; longer with hundreds, where every
thread waiting for the GIL waking each interval to ask for it starved the media loop (at
0.5 ms, 400 calls at once lost their recordings' audio in bench/calls.py)."""

from __future__ import annotations

import re
import socket
import sys

import pytest

from telephony import sip_transport
from telephony.sip_transport import (
    SWITCH_INTERVAL_MAX_S,
    SWITCH_INTERVAL_MIN_S,
    gil_handover_for,
)
from tests.conftest import wait_until
from tests.telephony.sip_peers import HOST, start_edge
from tests.telephony.test_sip_answer_at_once import _invite


@pytest.fixture
def interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.parametrize(
    ("calls", "expected"),
    [(0, SWITCH_INTERVAL_MIN_S), (50, SWITCH_INTERVAL_MIN_S), (200, 0.002), (500, 0.005)],
)
def test_given_calls_then_the_interval_grows_with_them_within_its_bounds(interval, calls, expected):
    assert gil_handover_for(calls) == pytest.approx(expected)
    assert sys.getswitchinterval() == pytest.approx(expected)
    assert gil_handover_for(calls * 100 + 10_000) == pytest.approx(SWITCH_INTERVAL_MAX_S)


def test_given_an_edge_then_its_calls_set_the_interval_and_their_end_gives_it_back(
    interval, edges, rtp, monkeypatch
):
    # One millisecond a call, so that two calls show it (the real step is 10 µs a call).
    monkeypatch.setattr(sip_transport, "SWITCH_INTERVAL_PER_CALL_S", 0.001)
    harness = start_edge(None)
    edges.append(harness)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_MIN_S)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        answers = []
        for n in (1, 2):
            sock.sendto(_invite(port, rtp.port, f"gil{n}"), harness.edge.address)
            answers.append(sock.recv(65535).decode())
        assert all(a.startswith("SIP/2.0 200 ") for a in answers)
        assert sys.getswitchinterval() == pytest.approx(0.002)

        for n, answer in zip((1, 2), answers, strict=True):
            to = re.search(r"^To: (.*)$", answer, re.M).group(1).strip()
            sock.sendto(_bye(port, f"gil{n}", to), harness.edge.address)
        wait_until(lambda: harness.edge.live_calls == 0, timeout=5)

    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_MIN_S)


def _bye(port: int, call_id: str, to: str) -> bytes:
    return (
        "BYE sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbye{call_id};rport\r\n"
        f"From: <sip:13800000000@127.0.0.1:{port}>;tag=t-{call_id}\r\n"
        f"To: {to}\r\nCall-ID: {call_id}@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
