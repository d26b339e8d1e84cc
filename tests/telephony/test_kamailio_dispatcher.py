"""The production SIP front, deploy/kamailio/kamailio.cfg itself, on loopback: a real Kamailio
spreads sipp's calls over two SIP edges (dispatcher set 1, hash over Call-ID), fails over
when an edge dies and answers OPTIONS itself. Only the operator settings are overridden
(``-A``): the listen socket, the edge list, the control socket, the probe interval."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from telephony.endpoint import Disposition
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    Harness,
    RtpPeer,
    free_udp_port,
    output,
    run_sipp,
    start_edge,
)

DEPLOY = Path(__file__).parents[2] / "deploy" / "kamailio"
CONFIG = DEPLOY / "kamailio.cfg"


def status_of(port: int, method: str, uri: str, *, to_tag: str = "", route: str = "") -> int | None:
    """Send one out-of-the-blue request to Kamailio; the status it answers, None if silent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.2)
        own, unique = sock.getsockname()[1], time.monotonic_ns()
        sock.sendto(
            (
                f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{own};branch=z9hG4bK{unique};rport\r\n"
                + (f"Route: {route}\r\n" if route else "")
                + f"From: <sip:carrier@{HOST}>;tag=c\r\n"
                f"To: <sip:12345@{HOST}:{port}>{to_tag and ';tag=' + to_tag}\r\n"
                f"Call-ID: raw-{unique}\r\nCSeq: 1 {method}\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, port),
        )
        try:
            return int(sock.recv(4096).split(b" ", 2)[1])
        except TimeoutError:
            return None


def options_status(port: int) -> int | None:
    """What Kamailio answers a carrier's OPTIONS keep-alive with."""
    return status_of(port, "OPTIONS", f"sip:12345@{HOST}:{port}")


@dataclass
class Front:
    """A running Kamailio with the production config."""

    port: int
    ctl: str
    log: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def edge_states(self) -> dict[str, str]:
        """``dispatcher.list`` as {edge URI: flags}: ``AP`` in rotation, ``IP`` out of it."""
        result = subprocess.run(
            ["kamcmd", "-s", self.ctl, "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return dict(re.findall(r"URI: (\S+)\s+FLAGS: (\w+)", result.stdout))

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def edge_list(edges: list[Harness]) -> str:
    """The example deploy/kamailio/dispatcher.list with our edges' addresses in it."""
    entries = [
        line.split()
        for line in (DEPLOY / "dispatcher.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(entries) == len(edges)
    return "".join(
        " ".join([setid, f"sip:{edge.target}", *rest]) + "\n"
        for (setid, _, *rest), edge in zip(entries, edges, strict=False)
    )


def start_edges(handler: Callable | None = None, **config) -> list[Harness]:
    """Two edges that take calls only from the proxy's address."""
    return [start_edge(handler, allow=(f"{HOST}/32",), **config) for _ in range(2)]


@pytest.fixture
def edges() -> Iterator[list[Harness]]:
    harnesses = start_edges()
    try:
        yield harnesses
    finally:
        for harness in harnesses:
            harness.edge.stop()


@pytest.fixture
def rtp() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def start_front(tmp_path) -> Iterator[Callable[..., Front]]:
    procs: list[subprocess.Popen] = []

    def start(edges: list[Harness], *, ping_interval: int) -> Front:
        listing = tmp_path / "dispatcher.list"
        listing.write_text(edge_list(edges))
        port, ctl, log = free_udp_port(), f"unix:{tmp_path / 'ctl'}", tmp_path / "kamailio.log"
        with log.open("w") as sink:
            procs.append(
                subprocess.Popen(
                    [
                        "kamailio",
                        "-f",
                        str(CONFIG),
                        "-DD",
                        "-E",
                        "-Y",
                        str(tmp_path),
                        "-m",
                        "32",
                        "-M",
                        "4",
                        "-A",
                        f"LISTEN=udp:{HOST}:{port}",
                        "-A",
                        f'DISPATCHER_LIST="{listing}"',
                        "-A",
                        f'CTL_SOCKET="{ctl}"',
                        "-A",
                        f"PING_INTERVAL={ping_interval}",
                    ],
                    stdout=sink,
                    stderr=sink,
                    stdin=subprocess.DEVNULL,
                )
            )
        front = Front(port=port, ctl=ctl, log=log)
        wait_until(
            lambda: procs[-1].poll() is not None or options_status(port) == 200,
            10,
            message="kamailio up",
        )
        assert procs[-1].poll() is None, front.tail()
        return front

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def call_ids(harness: Harness) -> set[str]:
    return {call.call_id for call in harness.calls}


def settled(harness: Harness) -> bool:
    """Every call ended and nothing left: no dialog, no unacknowledged 200, no handler."""
    stats = harness.edge.stats()
    return all(
        stats[key] == 0
        for key in ("dialogs", "retransmissions", "transactions", "handlers", "rtp_ports")
    )


def run_calls(front: Front, rtp: RtpPeer, *, calls: int, call_id: str):
    """``calls`` sipp calls through the front; fixed Call-IDs (``call_id``-N@host) make the
    dispatcher's hash, and so the split over the edges, the same on every run."""
    return run_sipp(
        "uac_call_via_proxy.xml",
        target=front.target,
        calls=calls,
        rate=20,
        hold=200,
        keys={"rtp_port": rtp.port, "fmts": "0 101"},
        extra=["-cid_str", f"{call_id}-%u@%s"],
    )


def test_given_two_edges_when_ten_calls_arrive_then_both_take_some_and_each_call_ends_where_it_began(  # noqa: E501
    edges, rtp, start_front
):
    front = start_front(edges, ping_interval=5)

    result = run_calls(front, rtp, calls=10, call_id="spread")

    assert result.returncode == 0, output(result) + front.tail()  # every BYE got its 200
    first, second = (call_ids(edge) for edge in edges)
    assert first and second, f"one edge took every call: {first or second}"
    assert not first & second and len(first | second) == 10
    for edge in edges:
        wait_until(lambda: settled(edge), 5, message=f"edge {edge.target} settled")
        # on_ended is told off the SIP thread, just after the dialog is gone
        wait_until(lambda: len(edge.ended) == len(edge.calls), 5, message="every end told")
        # the caller's BYE reached the edge that answered: it hung up there, not timed out
        assert {call.disposition for call in edge.ended} == {Disposition.CALLER_HUNG_UP}


def test_given_an_edge_dies_unnoticed_when_calls_arrive_then_its_calls_fail_over_to_the_other(
    edges, rtp, start_front
):
    front = start_front(edges, ping_interval=3600)  # no probe will see it: failover alone
    dead, alive = edges
    dead_uri = f"sip:{dead.target}"
    dead.edge.stop()

    result = run_calls(front, rtp, calls=10, call_id="failover")

    assert result.returncode == 0, output(result) + front.tail()
    assert len(alive.calls) == 10 and not dead.calls
    # the first call that timed out on it took the dead edge out of rotation
    assert front.edge_states()[dead_uri].startswith("I")
    wait_until(lambda: settled(alive), 5, message="surviving edge settled")


def test_given_an_edge_stops_when_the_probes_notice_then_calls_go_to_the_other_and_none_waits(
    edges, rtp, start_front
):
    front = start_front(edges, ping_interval=1)
    dead, alive = edges
    dead_uri = f"sip:{dead.target}"
    assert set(front.edge_states().values()) == {"AP"}
    dead.edge.stop()

    wait_until(
        lambda: front.edge_states()[dead_uri].startswith("I"),
        8,
        message="dispatcher marks the stopped edge inactive",
    )
    began = time.monotonic()
    result = run_calls(front, rtp, calls=10, call_id="probed")

    assert result.returncode == 0, output(result) + front.tail()
    assert len(alive.calls) == 10 and not dead.calls
    # a call sent to the dead edge first would have waited EDGE_TIMEOUT (2 s) alone
    assert time.monotonic() - began < 2


def test_given_an_edge_up_then_options_get_200_and_with_none_up_503(edges, start_front):
    front = start_front(edges, ping_interval=1)

    result = run_sipp("uac_options.xml", target=front.target)
    assert result.returncode == 0, output(result)  # 200 with our Allow list

    for harness in edges:
        harness.edge.stop()
    wait_until(
        lambda: options_status(front.port) == 503,
        8,
        message="OPTIONS answered 503 once no edge is in rotation",
    )


def test_given_a_call_through_the_front_when_the_platform_hangs_up_then_its_bye_reaches_the_caller(
    rtp, start_front
):
    harnesses = start_edges(lambda call: call.read_frame(0.3))
    try:
        front = start_front(harnesses, ping_interval=5)
        result = run_sipp(
            "uac_hung_up_via_proxy.xml",
            target=front.target,
            keys={"rtp_port": rtp.port, "fmts": "0"},
        )
        assert result.returncode == 0, output(result) + front.tail()
        (edge,) = [harness for harness in harnesses if harness.calls]
        wait_until(lambda: edge.ended and settled(edge), 5, message="BYE answered")
        assert edge.ended[0].disposition == Disposition.COMPLETED
    finally:
        for harness in harnesses:
            harness.edge.stop()


def test_given_a_ringing_call_through_the_front_when_the_caller_cancels_then_the_edge_gets_it(
    rtp, start_front
):
    harnesses = start_edges(answer_delay=2.0)
    try:
        front = start_front(harnesses, ping_interval=5)
        result = run_sipp(
            "uac_cancel_via_proxy.xml", target=front.target, keys={"rtp_port": rtp.port}
        )
        assert result.returncode == 0, output(result) + front.tail()  # 200 and 487
        wait_until(lambda: any(harness.ended for harness in harnesses), 5, message="on_ended")
        (edge,) = [harness for harness in harnesses if harness.ended]
        # the proxy acknowledged the edge's 487 itself (hop by hop): nothing retransmits
        wait_until(lambda: settled(edge), 5, message="487 acknowledged")
        assert edge.ended[0].disposition == Disposition.CANCELLED and not edge.calls
    finally:
        for harness in harnesses:
            harness.edge.stop()


def test_given_a_forged_route_when_an_in_dialog_request_targets_no_edge_then_it_is_refused(
    edges, start_front
):
    front = start_front(edges, ping_interval=5)
    victim = f"sip:victim@{HOST}:{free_udp_port()}"

    status = status_of(front.port, "BYE", victim, to_tag="forged", route=f"<sip:{front.target};lr>")

    assert status == 403  # not relayed: the front is no open relay for in-dialog requests


@pytest.mark.parametrize("feature", ["WITH_PIKE", "WITH_RATELIMIT"])
def test_given_an_optional_protection_enabled_then_the_config_still_loads(tmp_path, feature):
    result = subprocess.run(
        [
            "kamailio",
            "-c",
            "-f",
            str(CONFIG),
            "-Y",
            str(tmp_path),
            "-A",
            f"LISTEN=udp:{HOST}:{free_udp_port()}",
            "-A",
            feature,
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr[-2000:]
