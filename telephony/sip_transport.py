"""The SIP edge's transport layer (RFC 3261 §18): the UDP socket, sending and receiving
datagrams, the address the edge advertises, and stateless responses routed back where the
request's top Via says (§18.2.2, with ``rport`` as RFC 3581 has it).

pyVoIP's response routing to its configured server (so that only one peer could ever call) is
not used: ``EdgeSIPClient`` is its ``SIPClient`` reduced to a socket.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import threading
from collections.abc import Callable

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone hits a circular import in 1.6.8)
from pyVoIP.SIP import SIPClient

from telephony import sip_message as sm
from telephony.sip_config import SipConfig
from telephony.udp_held import HeldUdp

log = logging.getLogger(__name__)

_BATCH = 64  # datagrams taken per wake-up at most, so that stop() is seen within a batch
# The interpreter's switch interval in a process with a SIP edge, by how many calls it
# carries. Its threads that answer calls and move RTP (receive, media loop) hand the GIL over
# at every socket call and must then wait for it while call threads run Python: up to the
# interval each time. Call setup at 200 calls/s was answered in 188 ms (p50) with Python's
# 5 ms, 56 ms with 1 ms, 20 ms with 0.5 ms (bench/calls.py, 2 cores, 2026-12-04). But every
# thread waiting for the GIL wakes once an interval to ask for it, and with hundreds of call
# threads woken by their audio that is hundreds of thousands of futile wake-ups a second: at
# 0.5 ms, 400 calls at once took the call threads 25 s of CPU in a 40 s step (12 s of it in
# the kernel, 2.9 million context switches in 15 s), the media loop starved and recordings
# lost their audio; at 2 ms 500 calls did the same; at 5 ms 500 calls ran clean
# (2026-12-05). So the interval grows with the calls: 0.5 ms up to 50 calls, 5 ms from 500.
SWITCH_INTERVAL_MIN_S = 0.0005
SWITCH_INTERVAL_MAX_S = 0.005
SWITCH_INTERVAL_PER_CALL_S = 0.00001


def gil_handover_for(calls: int) -> float:
    """Set the process's switch interval for an edge carrying ``calls`` (see above); it is
    changed only when it moves by more than a tenth. Returns the interval set."""
    interval = min(
        SWITCH_INTERVAL_MAX_S, max(SWITCH_INTERVAL_MIN_S, calls * SWITCH_INTERVAL_PER_CALL_S)
    )
    current = sys.getswitchinterval()
    if abs(current - interval) > 0.1 * interval:
        sys.setswitchinterval(interval)
        return interval
    return current


class EdgeSIPClient(SIPClient):
    """pyVoIP's SIPClient as a UDP transport only.

    pyVoIP's ``start`` REGISTERs unconditionally (blocking ~30 s without a registrar) and
    begins to listen only after a 1 s timer; its ``recv`` drops the source address, parses
    strictly and answers everything to the configured server. Here ``start`` binds and listens
    at once, and every datagram goes with its source to ``on_datagram``; a failing handler is
    logged and the loop goes on.
    """

    def __init__(
        self, *, host: str, port: int, on_datagram: Callable[[bytes, tuple[str, int]], None]
    ) -> None:
        super().__init__(
            server=host,
            port=port,
            username="",
            password="",
            # pyVoIP types the phone as required; only its REGISTER code, never called, uses it.
            phone=None,  # type: ignore[arg-type]
            myIP=host,
            myPort=port,
        )
        self._on_datagram = on_datagram
        self._thread: threading.Thread | None = None
        self._held: HeldUdp | None = None

    def start(self) -> None:
        gil_handover_for(0)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((self.myIP, self.myPort))
        self.out = self.s
        self.myPort = self.s.getsockname()[1]
        # Datagrams in and out without handing the GIL over (telephony/udp_held.py).
        self._held = HeldUdp(self.s) if HeldUdp.available() else None
        self.NSD = True
        self._thread = threading.Thread(target=self.recv_loop, name="sip-recv", daemon=True)
        self._thread.start()

    def recv_loop(self) -> None:
        # Every datagram waiting is taken after one select: each socket call hands the GIL
        # over, and in a busy process getting it back is a wait (up to the switch interval).
        self.s.setblocking(False)
        while self.NSD:
            try:
                ready, _, _ = select.select([self.s], [], [], 0.2)
            except (OSError, ValueError):
                if self.NSD:
                    log.exception("SIP socket failed")
                return
            for _ in range(_BATCH if ready else 0):
                try:
                    if self._held is not None:
                        got = self._held.recv()
                        if got is None:
                            break
                        data, source = got
                    else:
                        data, source = self.s.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if not self.NSD:
                        return
                    # ICMP errors of earlier sends surface here; the socket stays usable.
                    log.debug("SIP receive error: %s", exc)
                    continue
                if not data:
                    continue
                try:
                    self._on_datagram(data, source[:2])
                except Exception:
                    log.exception(
                        "SIP datagram from %s:%s not handled: %r", *source[:2], data[:200]
                    )

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            if self._held is None or not self._held.send(data, address):
                self.s.sendto(data, address)
        except OSError as exc:
            log.warning("SIP send to %s:%s failed: %s", *address, exc)

    def gen_tag(self) -> str:
        # pyVoIP keeps every tag it ever made in a list that only grows.
        return sm.new_tag()

    def stop(self) -> None:
        if not self.NSD:
            return
        self.NSD = False
        if self._thread is not None:
            self._thread.join(2)
        self._close_sockets()


def reachable_host(host: str) -> str:
    """The bind address, or for a wildcard bind the address of the default route's interface
    (a connected UDP socket sends nothing), since 0.0.0.0 in Via/Contact/SDP reaches no one."""
    if host not in ("0.0.0.0", ""):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class SipTransport:
    """The bottom layer of ``SipEdge``: the socket (from ``start`` on), the advertised address,
    and responses sent without a transaction (``_respond``)."""

    def __init__(self, config: SipConfig) -> None:
        self.config = config
        self.advertised_host = config.advertised_host or reachable_host(config.host)
        self._transport: EdgeSIPClient | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("the SIP edge is not started")
        return self.config.host, self._transport.myPort

    def _respond(
        self,
        message: sm.LenientSIPMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        *,
        to_tag: str = "",
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> bytes:
        raw = message.raw_message
        data = sm.build_response(
            raw,
            source,
            status,
            reason,
            to_tag=to_tag,
            extra=(extra or []) + self._common_headers(),
            body=body,
        )
        self._send(data, sm.via_target(raw.get("Via"), source))
        return data

    def _common_headers(self) -> list[tuple[str, str]]:
        return [("Server", self.config.user_agent)]

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.send(data, address)

    def _reject_unparseable(
        self, data: bytes, source: tuple[str, int], exc: sm.SipParseError
    ) -> None:
        log.warning("unparseable SIP from %s:%s (%s): %r", *source, exc, data[:120])
        if exc.status is None:
            return
        try:
            raw = sm.split_raw(data, strict=False)
        except sm.SipParseError:
            return
        if raw.start[0].upper() == "ACK" or raw.start[0].upper().startswith("SIP/"):
            return  # no response to an ACK or to a response
        if raw.get("Via"):
            self._send(
                sm.build_response(
                    raw, source, exc.status, "Bad Request", extra=self._common_headers()
                ),
                sm.via_target(raw.get("Via"), source),
            )
