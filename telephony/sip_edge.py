"""The SIP edge: pyVoIP 1.6.8 behind ``SipEndpoint``, with its defects fixed here.

``SipEdge`` is the ``telephony.endpoint.SipEndpoint`` implementation: it starts the threads,
lets requests in (or not), and hands each datagram to the layer that handles it. The layers it
is built of, each in its own module, bottom up:

* parsing: pyVoIP's ``SIPMessage`` (headers and SDP), fed by ``sip_message.LenientSIPMessage``
  so that compact/lower-case headers and an empty ``Supported:`` parse, and errors become
  400/488/505 responses instead of silence;
* transport (``sip_transport``): ``EdgeSIPClient``, a ``pyVoIP.SIP.SIPClient`` whose ``start``
  binds and listens at once (no blocking REGISTER, no 1 s timer) and whose receive loop hands
  every datagram, with its source address, to the edge; pyVoIP's response routing to the
  configured server (so only one peer could ever call) is not used: responses follow the top
  Via / source (RFC 3581);
* transactions (``sip_transactions``; pyVoIP has none): requests and 2xx/non-2xx final
  responses retransmitted on T1..T2 until answered or ACKed, retransmitted INVITEs absorbed
  (also for a short while after the call ended);
* dialogs (``sip_dialogs``, ``sip_inbound``, ``sip_outbound``): immediate answer (100 Trying
  first only when the answer waits: RFC 3261 §17.2.1), CANCEL → 487, re-INVITE → 200 with
  the same SDP, OPTIONS → 200, BYE both ways, outbound INVITE with CANCEL on ring timeout;
  SDP offer/answer in ``sip_sdp``;
* registration (``sip_registration``): ``Registration`` per ``SipLine``, non-blocking, digest
  with qop=auth (pyVoIP 1.6.8 has no qop and digests the wrong URI), refreshed before expiry;
* media: ``telephony.rtp_session`` (PCMU or PCMA as negotiated; pyVoIP sends μ-law whatever it
  negotiated and its 8-bit audio path needs ``audioop``), plugged in through ``media_factory``;
  RTP ports are bound from ``rtp_low``..``rtp_high`` and released at the call's end;
* admission (here): requests from outside ``allow`` get 403; beyond ``max_calls`` INVITEs get
  503 and are reported as missed calls (``sip_inbound``); known methods we do not serve get
  405, unknown ones 501. In ``registered`` mode the lines' registrars are allowed as well;
  in ``direct`` mode peers call the edge without any REGISTER.
* seats (``sip_registrar``): with ``config.seats`` the edge is the registrar of operators'
  phones; their REGISTERs are answered on a thread of their own (the store may be a
  database), a retransmission gets the same answer again (or none while the first waits for
  its turn: its answer is coming), and ``seat_target`` gives the URI that rings a seat
  (through Kamailio where the phones register there: the store knows). Without it REGISTER
  gets 405.

Threads, all bounded: one receives SIP, one runs timers (retransmissions, ring delays,
registration refreshes), one tells ``on_ended`` (so a slow observer never stalls SIP), one per
answered inbound call runs ``on_call`` (at most ``max_calls``), and the media's own per call.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import secrets
import socket
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime

from telephony import sip_message as sm
from telephony.endpoint import Call, CallHandler, CallObserver, Disposition
from telephony.rtp_session import RtpSession
from telephony.sip_config import ALLOW, SipConfig
from telephony.sip_dialogs import MediaFactory
from telephony.sip_inbound import InboundCalls
from telephony.sip_outbound import OutboundCalls
from telephony.sip_refer import ReferHandling
from telephony.sip_registrar import Answer, Registrar, seat_target
from telephony.sip_registration import Registration
from telephony.sip_transactions import Timers
from telephony.sip_transport import EdgeSIPClient

log = logging.getLogger(__name__)

_REGISTER_BACKLOG = 256  # REGISTERs waiting for the registrar; beyond: 503, the phone retries
_REGISTER_ANSWERS = 4096  # answers kept for retransmitted REGISTERs (RFC 3261 §17.2.2)


class SipEdge(InboundCalls, OutboundCalls, ReferHandling):
    """The ``SipEndpoint`` on pyVoIP. ``SipEdge(SipConfig(...)).start(on_call=, on_ended=)``.

    ``media_factory`` defaults to ``telephony.rtp_session.RtpSession``; RTP ports come from an
    ``RtpPortAllocator`` over ``config.rtp_low``..``rtp_high``. ``dial`` is
    ``OutboundCalls.dial``.
    """

    def __init__(self, config: SipConfig, *, media_factory: MediaFactory = RtpSession) -> None:
        super().__init__(config, media_factory=media_factory)
        self._networks = [ipaddress.ip_network(c, strict=False) for c in config.allow]
        self.registrations: list[Registration] = []
        self._observer: threading.Thread | None = None
        self.registrar: Registrar | None = None
        self._allow = ALLOW
        if config.seats is not None:
            self.registrar = Registrar(
                config.seats,
                realm=config.seat_realm,
                secret=(config.registrar_secret.encode() or secrets.token_bytes(32)),
                min_expires=config.register_min_expires,
                max_expires=config.register_max_expires,
                algorithms=config.digest_algorithms,
                edge_id=config.edge_id,
            )
            self._allow = ALLOW + ", REGISTER"
        self._registers: queue.Queue[tuple[sm.LenientSIPMessage, tuple[str, int]] | None] = (
            queue.Queue(_REGISTER_BACKLOG)
        )
        self._register_thread: threading.Thread | None = None
        # (Call-ID, CSeq, branch) -> (when, the response): a retransmitted REGISTER is
        # answered from here for as long as its client retransmits (64*T1).
        self._register_answers: OrderedDict[tuple[str, int, str], tuple[float, bytes]] = (
            OrderedDict()
        )
        self._registers_waiting: set[tuple[str, int, str]] = set()  # queued, not answered

    # --- SipEndpoint (``address``: see SipTransport; ``dial``: OutboundCalls) ----------
    def start(self, *, on_call: CallHandler, on_ended: CallObserver) -> None:
        if self._transport is not None:
            raise RuntimeError("the SIP edge is already started")
        self._on_call, self._on_ended = on_call, on_ended
        self._ports.open()
        self._timer_thread = Timers()
        self._observer = threading.Thread(target=self._observe, name="sip-ended", daemon=True)
        self._observer.start()
        self._transport = EdgeSIPClient(
            host=self.config.host, port=self.config.port, on_datagram=self._on_datagram
        )
        self._transport.start()
        if self.registrar is not None:
            self._register_thread = threading.Thread(
                target=self._serve_registers, name="sip-registrar", daemon=True
            )
            self._register_thread.start()
        if self.config.mode == "registered":
            for line in self.config.lines:
                host = socket.gethostbyname(line.registrar_address[0])
                self._networks.append(ipaddress.ip_network(host))
                registration = Registration(self, line)
                self.registrations.append(registration)
                registration.start()
        log.info("SIP edge listening on %s:%s (%s)", *self.address, self.config.mode)

    def stop(self) -> None:
        if self._transport is None:
            return
        with self._lock:
            calls = list(self._dialogs.values())
        for call in calls:
            self._hangup(call, Disposition.COMPLETED)
        for registration in self.registrations:
            registration.stop()
        for thread in list(self._handlers):
            if thread is not threading.current_thread():  # a handler may stop the edge
                thread.join(2)
        self._transport.stop()
        if self._register_thread is not None:
            self._registers.put(None)
            self._register_thread.join(5)
            self._register_thread = None
            with self._lock:
                self._register_answers.clear()
                self._registers_waiting.clear()
        self._timers.stop()
        self._ports.close()  # the sockets bound ahead; the calls' were released above
        self._observed.put(None)
        if self._observer is not None:
            self._observer.join(5)
        with self._lock:
            self._retx.clear()
            self._pending.clear()
            self._tombstones.clear()
        self._transport = None

    def drain(self) -> None:
        """From now on every new INVITE gets 503 with ``Retry-After`` and is reported as a
        refused (missed) call; calls in progress go on."""
        with self._lock:
            self._draining = True
        log.info("SIP edge draining: new calls get 503")

    def calls(self) -> list[Call]:
        """The calls in progress."""
        with self._lock:
            return list(self._dialogs.values())

    def seat_target(self, extension: str) -> str | None:
        """The URI that rings the seat ``extension`` now (its newest unexpired binding; a
        phone behind NAT at the address its REGISTER came from; or, where the phones register
        with a registrar proxy, the proxy's URI for the seat); None when no phone is
        registered for it, or the edge keeps no seats. ``dial`` takes it as it is."""
        if self.config.seats is None:
            return None
        return seat_target(self.config.seats, extension, datetime.now(UTC))

    # --- inspection (``live_calls``: see SipDialogs) ------------------------------------
    def stats(self) -> dict[str, int]:
        """What state the edge holds: after every call has ended and its retransmission
        window passed, everything but ``ended_call_ids`` is 0."""
        with self._lock:
            self._purge_tombstones()
            return {
                "dialogs": len(self._dialogs),
                "rtp_ports": len(self._ports.in_use),
                "retransmissions": len(self._retx),
                "transactions": len(self._pending),
                "handlers": len(self._handlers),
                "ended_call_ids": len(self._tombstones),
            }

    # --- datagrams -----------------------------------------------------------------------
    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if not data.strip(b"\r\n\x00 "):
            return  # CRLF keep-alive
        try:
            message = sm.parse(data)
        except sm.SipParseError as exc:
            self._reject_unparseable(data, source, exc)
            return
        if message.is_request:
            self._on_request(message, source)
        else:
            self._on_response(message)

    def _on_request(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        method = message.method_name
        if method == "ACK":
            self._on_ack(message)
            return
        refusal = None
        if not self._allowed(source[0]):
            log.warning("%s from %s:%s refused: not in the allow-list", method, *source)
            refusal = (403, "Forbidden")
        elif message.received_version != sm.SIP_VERSION:
            refusal = (505, "Version Not Supported")
        if refusal and method == "INVITE":
            self._reject_invite(message, source, *refusal)
            return
        if refusal:
            self._respond(message, source, *refusal)
            return
        handler = {
            "INVITE": self._on_invite,
            "BYE": self._on_bye,
            "CANCEL": self._on_cancel,
            "OPTIONS": self._on_options,
            "REFER": self._on_refer,  # a phone's transfer key, inside a call (RFC 3515)
            "REGISTER": self._on_register if self.registrar is not None else None,
        }.get(method)
        if handler is None and method in sm.KNOWN_METHODS:
            self._respond(
                message, source, 405, "Method Not Allowed", extra=[("Allow", self._allow)]
            )
            return
        if handler is None:
            self._respond(message, source, 501, "Not Implemented", extra=[("Allow", self._allow)])
            return
        handler(message, source)

    # --- seats ---------------------------------------------------------------------------
    def _register_key(self, message: sm.LenientSIPMessage) -> tuple[str, int, str]:
        branch = message.raw_message.get("Via").partition("branch=")[2].split(";", 1)[0]
        return message.call_id, message.cseq[0], branch.strip()

    def _on_register(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        key = self._register_key(message)
        with self._lock:
            answered = self._register_answers.get(key)
            if answered is None and key in self._registers_waiting:
                return  # a retransmission of one not answered yet: its answer is coming
            if answered is None:
                self._registers_waiting.add(key)
        if answered is not None:
            self._send(answered[1], sm.via_target(message.raw_message.get("Via"), source))
            return
        try:
            self._registers.put_nowait((message, source))
        except queue.Full:
            with self._lock:
                self._registers_waiting.discard(key)
            log.warning("REGISTER from %s:%s: the registrar is behind, 503", *source)
            self._respond(message, source, 503, "Service Unavailable", extra=[("Retry-After", "5")])

    def _serve_registers(self) -> None:
        """The registrar's thread: the store may be a database, never waited for on the
        thread that receives every call's SIP."""
        registrar = self.registrar
        if registrar is None:
            return
        while (item := self._registers.get()) is not None:
            message, source = item
            try:
                answer = registrar.handle(message, source)
            except Exception:
                log.exception("REGISTER from %s:%s failed", *source)
                answer = Answer(500, "Server Internal Error", (("Retry-After", "5"),))
            raw = message.raw_message
            data = sm.build_response(
                raw,
                source,
                answer.status,
                answer.reason,
                to_tag=sm.new_tag(),
                extra=list(answer.headers) + self._common_headers(),
            )
            now = time.monotonic()
            with self._lock:  # kept before it is sent: the retransmission may beat us here
                answers = self._register_answers
                key = self._register_key(message)
                answers[key] = (now, data)
                self._registers_waiting.discard(key)
                while answers and (
                    len(answers) > _REGISTER_ANSWERS
                    or next(iter(answers.values()))[0] < now - 64 * self.config.t1
                ):
                    answers.popitem(last=False)
            self._send(data, sm.via_target(raw.get("Via"), source))

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)
