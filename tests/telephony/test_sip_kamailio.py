"""Registered mode against a real Kamailio on loopback (tests/telephony/kamailio/): the edge
registers as a line with digest qop=auth, and a caller reaches it through the proxy."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telephony.endpoint import Disposition
from telephony.sip_config import SipLine
from tests.conftest import wait_until
from tests.telephony.sip_peers import HOST, RtpPeer, free_udp_port, output, run_sipp, start_edge

CONFIG = Path(__file__).parent / "kamailio" / "kamailio.cfg"


def _answers_options(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.2)
        own = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{own};branch=z9hG4bKprobe{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@{HOST}>;tag=p\r\nTo: <sip:{HOST}:{port}>\r\n"
                f"Call-ID: probe-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, port),
        )
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except TimeoutError:
            return False


@pytest.fixture
def kamailio(tmp_path) -> Iterator[int]:
    port = free_udp_port()
    proc = subprocess.Popen(
        [
            "kamailio",
            "-f",
            str(CONFIG),
            "-DD",
            "-E",
            "-l",
            f"udp:{HOST}:{port}",
            "-Y",
            str(tmp_path),
            "-m",
            "32",
            "-M",
            "4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers_options(port), 10, message="kamailio up")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_given_kamailio_registrar_then_line_registers_and_calls_through_it_are_answered(kamailio):
    line = SipLine(user="alice", password="s3cret", registrar=f"{HOST}:{kamailio}")
    harness = start_edge(mode="registered", lines=(line,))
    rtp = RtpPeer()
    try:
        registration = harness.edge.registrations[0]
        wait_until(registration.registered.is_set, 5, message="registered with kamailio")
        assert registration.attempts == 2 and registration.expires == 300  # challenged once

        result = run_sipp(
            "uac_call_via_proxy.xml",
            target=f"{HOST}:{kamailio}",
            service="alice",
            keys={"rtp_port": rtp.port, "fmts": "0 101"},
            hold=500,
        )
        assert result.returncode == 0, output(result)
        assert len(harness.calls) == 1 and harness.calls[0].local_uri.startswith("sip:alice@")
        wait_until(lambda: harness.ended, 5)
        assert harness.ended[0].disposition == Disposition.CALLER_HUNG_UP
        assert rtp.packets
    finally:
        rtp.close()
        harness.edge.stop()


def test_given_call_through_kamailio_when_platform_hangs_up_then_bye_follows_the_route_set(
    kamailio,
):
    line = SipLine(user="alice", password="s3cret", registrar=f"{HOST}:{kamailio}")
    harness = start_edge(lambda call: call.read_frame(0.3), mode="registered", lines=(line,))
    rtp = RtpPeer()
    try:
        wait_until(harness.edge.registrations[0].registered.is_set, 5, message="registered")
        result = run_sipp(
            "uac_hung_up_via_proxy.xml",
            target=f"{HOST}:{kamailio}",
            service="alice",
            keys={"rtp_port": rtp.port, "fmts": "0"},
        )
        assert result.returncode == 0, output(result)  # our BYE reached sipp through kamailio
        wait_until(lambda: harness.ended, 5)
        assert harness.ended[0].disposition == Disposition.COMPLETED
        wait_until(lambda: harness.edge.stats()["transactions"] == 0, 5, message="BYE answered")
    finally:
        rtp.close()
        harness.edge.stop()


def test_given_wrong_password_then_not_registered_and_start_does_not_block(kamailio):
    line = SipLine(user="alice", password="wrong", registrar=f"{HOST}:{kamailio}")
    began = time.monotonic()
    harness = start_edge(mode="registered", lines=(line,))
    try:
        assert time.monotonic() - began < 5  # not the 30 s a blocking start waits
        registration = harness.edge.registrations[0]
        wait_until(lambda: registration.attempts >= 2 and registration.last_status == 401, 5)
        assert not registration.registered.is_set()
    finally:
        harness.edge.stop()
