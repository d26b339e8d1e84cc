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
* dialogs (``sip_dialogs``, ``sip_inbound``, ``sip_outbound``): 100 Trying at once, immediate
  answer, CANCEL → 487, re-INVITE → 200 with the same SDP, OPTIONS → 200, BYE both ways,
  outbound INVITE with CANCEL on ring timeout; SDP offer/answer in ``sip_sdp``;
* registration (``sip_registration``): ``Registration`` per ``SipLine``, non-blocking, digest
  with qop=auth (pyVoIP 1.6.8 has no qop and digests the wrong URI), refreshed before expiry;
* media: ``telephony.rtp_session`` (PCMU or PCMA as negotiated; pyVoIP sends μ-law whatever it
  negotiated and its 8-bit audio path needs ``audioop``), plugged in through ``media_factory``;
  RTP ports are bound from ``rtp_low``..``rtp_high`` and released at the call's end;
* admission (here): requests from outside ``allow`` get 403; beyond ``max_calls`` INVITEs get
  503 and are reported as missed calls (``sip_inbound``); known methods we do not serve get
  405, unknown ones 501. In ``registered`` mode the lines' registrars are allowed as well;
  in ``direct`` mode peers call the edge without any REGISTER.

Threads, all bounded: one receives SIP, one runs timers (retransmissions, ring delays,
registration refreshes), one tells ``on_ended`` (so a slow observer never stalls SIP), one per
answered inbound call runs ``on_call`` (at most ``max_calls``), and the media's own per call.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

from telephony import sip_message as sm
from telephony.endpoint import Call, CallHandler, CallObserver, Disposition
from telephony.rtp_session import RtpSession
from telephony.sip_config import ALLOW, SipConfig
from telephony.sip_dialogs import MediaFactory
from telephony.sip_inbound import InboundCalls
from telephony.sip_outbound import OutboundCalls
from telephony.sip_registration import Registration
from telephony.sip_transactions import Timers
from telephony.sip_transport import EdgeSIPClient

log = logging.getLogger(__name__)


class SipEdge(InboundCalls, OutboundCalls):
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

    # --- SipEndpoint (``address``: see SipTransport; ``dial``: OutboundCalls) ----------
    def start(self, *, on_call: CallHandler, on_ended: CallObserver) -> None:
        if self._transport is not None:
            raise RuntimeError("the SIP edge is already started")
        self._on_call, self._on_ended = on_call, on_ended
        self._timer_thread = Timers()
        self._observer = threading.Thread(target=self._observe, name="sip-ended", daemon=True)
        self._observer.start()
        self._transport = EdgeSIPClient(
            host=self.config.host, port=self.config.port, on_datagram=self._on_datagram
        )
        self._transport.start()
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
        self._timers.stop()
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
        }.get(method)
        if handler is None and method in sm.KNOWN_METHODS:
            self._respond(message, source, 405, "Method Not Allowed", extra=[("Allow", ALLOW)])
            return
        if handler is None:
            self._respond(message, source, 501, "Not Implemented", extra=[("Allow", ALLOW)])
            return
        handler(message, source)

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)
