"""The SIP edge's dialogs and calls: ``SipCall`` (a ``telephony.endpoint.Call``), the media it
speaks through, and the dialog layer of ``SipEdge``: the table of live calls, requests inside
a dialog (re-INVITE → 200 with the same SDP, or 491 while ours is pending (``sip_reinvite``),
the ACK that carries a delayed answer, BYE both ways, CANCEL → 487, OPTIONS → 200, REFER →
202 and sipfrag NOTIFYs), starting a call's media and handler, and ending a call once,
freeing what it held.

REFER (RFC 3515, a phone's transfer key) is parsed and answered by ``telephony.sip_refer``.

New dialogs are made by INVITEs: ``sip_inbound`` (theirs) and ``sip_outbound`` (ours).
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core import logging_setup
from telephony import sip_message as sm
from telephony.endpoint import (
    CallDirection,
    CallHandler,
    CallObserver,
    CallState,
    Disposition,
    check_transition,
)
from telephony.media_timeout import MEDIA_TIMEOUT
from telephony.rtp_ports import RtpPortAllocator
from telephony.sip_config import ALLOW, SipConfig
from telephony.sip_media import EndedMedia, Media
from telephony.sip_sdp import CODECS, PCMU, Offer, build_sdp, read_offer
from telephony.sip_transactions import SipTransactions, TxKey
from telephony.sip_transport import gil_handover_for

if TYPE_CHECKING:
    from telephony.media_relay import RtpengineRelay
    from telephony.sip_refer import Refer

log = logging.getLogger(__name__)


MediaFactory = Callable[..., Media]
"""``factory(local_host=, port=, sock=, remote=, payload_type=, dtmf_payload_type=,
on_dtmf=)``, as ``RtpSession``'s constructor."""


# Our answer's direction to the peer's offer (RFC 3264 §6.1).
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def offer_direction(body: bytes) -> str:
    """The direction an SDP offer asks for: its audio's (or the session's) a=sendonly,
    a=recvonly, a=inactive, else sendrecv; a c= of 0.0.0.0 (RFC 2543 hold) is inactive."""
    direction = "sendrecv"
    for raw in body.splitlines():
        line = raw.strip().decode("ascii", "replace").lower()
        if line[2:] in _ANSWER_DIRECTION and line.startswith("a="):
            direction = line[2:]
        elif line.startswith("c=") and line.split()[-1:] == ["0.0.0.0"]:
            return "inactive"
    return direction


def utc_now() -> datetime:
    """The time of a call's events: ``arrived_at``, ``answered_at``, ``ended_at``."""
    return datetime.now(UTC)


class SipCall:
    """One call on the edge; implements ``telephony.endpoint.Call``."""

    def __init__(
        self,
        *,
        edge: SipDialogs,
        call_id: str,
        direction: CallDirection,
        local_uri: str,
        remote_uri: str,
        peer: tuple[str, int],
        rtp_port: int,
        rtp_sock: socket.socket | None,
        sip_call_id: str = "",
    ) -> None:
        self.call_id = call_id  # the key the platform knows the call by
        self.sip_call_id = sip_call_id or call_id  # the Call-ID header of its dialog
        self.direction = direction
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_number = sm.uri_user(remote_uri)
        self.codec = "PCMU"
        self.state = CallState.RINGING
        self.disposition: Disposition | None = None
        self.arrived_at = utc_now()
        self.answered_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.ended = threading.Event()
        self.rtp_port = rtp_port
        self.payload_type = PCMU
        self.dtmf_payload_type: int | None = None
        self.dtmf_events = "0-16"  # the telephone-events of our SDP (their offer's, within ours)
        self.remote_rtp: tuple[str, int] = ("0.0.0.0", 0)
        # The direction of the peer's last offer (RFC 3264 §8.4): "sendonly" or "inactive"
        # (or c=0.0.0.0, RFC 2543) is a phone putting us on hold (``held_by_peer``).
        self.remote_direction = "sendrecv"
        self._edge = edge
        self._lock = threading.RLock()
        self._rtp_sock = rtp_sock
        self._media: Media | None = None
        self._dtmf: queue.Queue[str] = queue.Queue()
        self._peer = peer  # where in-dialog requests go
        self._local_header = ""  # our From/To value, tag included
        self._remote_header = ""
        self._remote_target = remote_uri  # Request-URI of in-dialog requests (their Contact)
        self._route_set: list[str] = []  # Route headers of in-dialog requests (RFC 3261 §12)
        self._cseq = random.randint(1, 10000)
        self._session_id = random.randint(1, 2**31)
        self._sdp_version = 1
        self._invite: sm.LenientSIPMessage | None = None
        self._invite_source: tuple[str, int] = peer
        self._responses: dict[int, bytes] = {}  # our last response per INVITE CSeq
        self._acks: dict[int, bytes] = {}  # our ACK per outbound INVITE CSeq
        self._keys: set[TxKey] = set()  # (branch, method) of our requests, dropped at the end
        self._reinvite_lock = threading.Lock()  # one re-INVITE of ours at a time (sip_reinvite)
        self._reinviting = False  # ours is pending: the peer's meets 491 (RFC 3261 §14.2)
        self.reinvites_received = 0  # answered 200 (``telephony.media_relay`` watches it)
        # A bridge hangs up a leg silent this long (``telephony.media_timeout``; 0: never),
        # and says so here when it did.
        self.rtp_timeout_s = edge.config.rtp_timeout_s
        self.media_timed_out = False
        # How ``call_id`` is decided when that may ask the database (``CallKeys.new_call``):
        # by the call's handler thread or the thread that reports the end, whichever comes
        # first, never the SIP receive thread (``_decide_key``).
        self._key_pending: Callable[[], str] | None = None
        self._key_lock = threading.Lock()
        # Told about a REFER from this call's phone; False declines it. Set by the bridge
        # for an agent's leg; None: REFERs are declined (603).
        self.on_refer: Callable[[Refer], bool] | None = None  # telephony.sip_refer

    def _decide_key(self) -> None:
        """Settle ``call_id`` once (see ``_key_pending``); until then it is the SIP Call-ID
        fitted to the column, which only a Call-ID met before changes."""
        with self._key_lock:
            decide, self._key_pending = self._key_pending, None
            if decide is not None:
                self.call_id = decide()

    # --- the Call protocol -------------------------------------------------------------
    def set_state(self, state: CallState) -> None:
        with self._lock:
            check_transition(self.state, state)
            self.state = state

    def read_frame(self, timeout: float) -> bytes | None:
        media = self._media
        if media is None:
            return None if self.ended.wait(timeout) else b""
        return media.read_frame(timeout)

    def read_frames(self, timeout: float, max_frames: int) -> bytes | None:
        """``read_frame``, with every whole frame ready (up to ``max_frames``) in one piece
        (``RtpSession.read_frames``); the call flows read this way when a call offers it."""
        media = self._media
        if media is None:
            return None if self.ended.wait(timeout) else b""
        reader = getattr(media, "read_frames", None)
        return media.read_frame(timeout) if reader is None else reader(timeout, max_frames)

    def send_audio(self, pcm: bytes) -> None:
        if self._media is not None and not self.ended.is_set():
            self._media.send_audio(pcm)

    def wait_sent(self, timeout: float | None = None) -> bool:
        if self._media is None or self.ended.is_set():
            return False
        return self._media.wait_sent(timeout) and not self.ended.is_set()

    def clear_audio(self) -> None:
        if self._media is not None:
            self._media.clear_audio()

    def read_dtmf(self, timeout: float) -> str | None:
        try:
            return self._dtmf.get(timeout=timeout)
        except queue.Empty:
            return None

    def hangup(self) -> None:
        self._edge._hangup(self, Disposition.COMPLETED)

    def hangup_media_timeout(self) -> None:
        """BYE: the bridge's media timeout (no RTP for ``rtp_timeout_s``) ended the call."""
        self.media_timed_out = True
        self._edge._hangup(self, MEDIA_TIMEOUT)

    @property
    def packets_in(self) -> int:
        """RTP packets from the phone so far (audio, keys, comfort noise): a sign of life."""
        return getattr(self._media, "packets_in", 0)

    # --- for a bridge (``telephony.endpoint.BridgeableCall``) ---------------------------
    def send_dtmf(self, key: str) -> bool:
        media = self._media
        if media is None or self.ended.is_set():
            return False
        return media.send_dtmf(key)

    @property
    def queued_ms(self) -> int:
        media = self._media
        return 0 if media is None else media.queued_ms

    @property
    def media_relay(self) -> RtpengineRelay | None:
        """Where a bridge puts this call's media: None, the edge's own relay."""
        return self._edge.media_relay

    @property
    def held_by_peer(self) -> bool:
        """The far end put the call on hold (an agent's hold key): a bridge plays its hold
        audio to the other side meanwhile."""
        return self.remote_direction in ("sendonly", "inactive")

    def __repr__(self) -> str:
        return f"<SipCall {self.direction.value} {self.call_id} {self.state.value}>"


class SipDialogs(SipTransactions):
    """The dialog layer of ``SipEdge``, over its transactions: live calls by Call-ID, their
    media (from ``media_factory`` on ports of ``config.rtp_low``..``rtp_high``) and handler
    threads, requests within a dialog, and the end of a call, told to ``on_ended`` off the
    SIP receive thread."""

    def __init__(self, config: SipConfig, *, media_factory: MediaFactory) -> None:
        super().__init__(config)
        self._media_factory = media_factory
        self._ports = RtpPortAllocator(config.host, config.rtp_low, config.rtp_high)
        self._dialogs: dict[str, SipCall] = {}
        self._handlers: set[threading.Thread] = set()
        self._to_start: queue.Queue[SipCall] = queue.Queue()
        self._starter: threading.Thread | None = None
        self._observed: queue.Queue[SipCall | None] = queue.Queue()
        self._on_call: CallHandler | None = None
        self._on_ended: CallObserver | None = None
        self.media_relay: RtpengineRelay | None = None
        if config.media_relay == "rtpengine":
            from telephony import media_relay, rtpengine  # the own relay's edge needs neither

            self.media_relay = media_relay.RtpengineRelay(
                ng=rtpengine.NgClient(media_relay.ng_address(config.rtpengine_ng)),
                tap_host=self.advertised_host,
                ports=self._ports,  # the taps' ports are the edge's: one firewall range
                edge=self,  # type: ignore[arg-type]  # ReInvites, the class SipEdge has
            )

    @property
    def live_calls(self) -> int:
        with self._lock:
            return len(self._dialogs)

    # --- a call's media and handler ----------------------------------------------------
    def _start_handler(self, call: SipCall) -> None:
        """The call's handler thread is started by the ``sip-start`` thread, not here:
        ``Thread.start`` waits until the new thread runs, which in a busy process is a
        wait for the GIL or two, and here is the SIP receive thread, whose next INVITE
        would wait with it (at 120 calls/s the 200s came seconds late)."""
        with self._lock:
            if self._starter is None or not self._starter.is_alive():
                self._starter = threading.Thread(
                    target=self._start_handlers, name="sip-start", daemon=True
                )
                self._starter.start()
        self._to_start.put(call)

    def _start_handlers(self) -> None:
        while True:
            call = self._to_start.get()
            thread = threading.Thread(
                target=self._serve, args=(call,), daemon=True, name=f"call-{call.call_id[:12]}"
            )
            with self._lock:
                self._handlers.add(thread)
            try:
                thread.start()
            except RuntimeError:  # no more threads: the call cannot be served
                log.exception("no thread for call %s", call.call_id)
                with self._lock:
                    self._handlers.discard(thread)
                self._hangup(call, Disposition.FAILED)

    def _serve(self, call: SipCall) -> None:
        logging_setup.bind(call=call.call_id)  # the thread's own context: every line of the call
        try:
            # In the call's own thread: a key check that asks the database would, on the
            # thread starting every call's handler, hold up the greetings of those behind it.
            call._decide_key()
            if self._on_call is None:
                raise RuntimeError("the SIP edge is not started")
            self._on_call(call)
        except Exception:
            log.exception("call handler failed on %s", call.call_id)
        finally:
            self._hangup(call, Disposition.COMPLETED)
            with self._lock:
                self._handlers.discard(threading.current_thread())

    def _start_media(self, call: SipCall, offer: Offer) -> None:
        call.payload_type, call.codec = offer.payload_type, CODECS[offer.payload_type]
        call.dtmf_payload_type = offer.dtmf_payload_type
        call.dtmf_events = offer.dtmf_events or "0-16"
        call.remote_rtp = (offer.address, offer.port)
        media = self._media_factory(
            local_host=self.config.host,
            port=call.rtp_port,
            sock=call._rtp_sock,
            remote=call.remote_rtp,
            payload_type=offer.payload_type,
            dtmf_payload_type=offer.dtmf_payload_type,
            on_dtmf=call._dtmf.put,
            # Symmetric RTP (RFC 4961): latch to the first packet from the SDP's host or
            # the host the INVITE came from (a phone behind NAT), logged by the session.
            **(
                {"latch": True, "latch_from": (offer.address, call._peer[0])}
                if self.config.rtp_latch
                else {}
            ),
        )
        media.start()
        call._media = media

    def _our_sdp(self, call: SipCall) -> bytes:
        sdp = build_sdp(
            host=self.advertised_host,
            port=call.rtp_port,
            session_id=call._session_id,
            version=call._sdp_version,
            payload_types=[call.payload_type],
            dtmf=call.dtmf_payload_type,
            dtmf_events=call.dtmf_events,
        )
        answer = _ANSWER_DIRECTION[call.remote_direction]
        return sdp if answer == "sendrecv" else sdp.replace(b"a=sendrecv", f"a={answer}".encode())

    # --- requests within a dialog: re-INVITE, ACK, CANCEL, BYE, OPTIONS -----------------
    def _on_reinvite(
        self, call: SipCall, message: sm.LenientSIPMessage, source: tuple[str, int]
    ) -> None:
        cseq = message.cseq[0]
        if call._reinviting:  # glare: both ends re-INVITE at once
            call._responses[cseq] = self._final_response(message, source, 491, "Request Pending")
            return
        offer, problem = read_offer(message)
        if offer is None and message.raw_message.body:
            call._responses[cseq] = self._final_response(
                message,
                source,
                488,
                "Not Acceptable Here",
                extra=[("Warning", f'305 hotline "{problem}"')],
            )
            return
        if offer is not None and (offer.address, offer.port) != call.remote_rtp:
            call.remote_rtp = (offer.address, offer.port)
            if call._media is not None:
                call._media.set_remote(call.remote_rtp)
        if contact := sm.uri_of(message.raw_message.get("Contact")):
            call._remote_target = contact
        if offer is not None:
            direction = offer_direction(message.raw_message.body)
            if direction != call.remote_direction:
                log.info("call %s: the peer's media is now %s", call.call_id, direction)
            call.remote_direction = direction
        call._sdp_version += 1
        call.reinvites_received += 1
        call._responses[cseq] = self._final_response(
            message,
            source,
            200,
            "OK",
            extra=self._contact() + [("Content-Type", "application/sdp")],
            body=self._our_sdp(call),
        )

    def _on_ack(self, message: sm.LenientSIPMessage) -> None:
        key = ("ack", message.call_id, message.cseq[0])
        with self._lock:
            self._retx.pop(key, None)
            call = self._dialogs.get(message.call_id)
        if call is None or call._media is not None or call.state != CallState.ANSWERED:
            return
        # The ACK of a 200 that carried our offer (delayed offer): it holds their answer.
        answer, problem = read_offer(message)
        try:
            if answer is None:
                raise ValueError(problem)
            self._start_media(call, answer)
        except Exception as exc:
            log.warning("call %s: no usable answer in the ACK: %s", call.call_id, exc)
            self._hangup(call, Disposition.FAILED)
            return
        self._start_handler(call)

    def _on_cancel(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        with self._lock:
            call = self._dialogs.get(message.call_id)
            tomb = self._live_tombstone(message.call_id)
        if call is None or call._invite is None or call._invite.cseq[0] != message.cseq[0]:
            if tomb is not None:
                self._respond(message, source, 200, "OK")
            else:
                self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(message, source, 200, "OK")
        with call._lock:
            if call.state != CallState.RINGING:
                return  # answered already: the CANCEL has no effect (RFC 3261 §9.2)
            invite, cseq = call._invite, call._invite.cseq[0]
            call._responses[cseq] = self._final_response(
                invite, call._invite_source, 487, "Request Terminated", to_tag=self._local_tag(call)
            )
        self._finish(call, Disposition.CANCELLED)

    def _on_bye(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        with self._lock:
            call = self._dialogs.get(message.call_id)
            tomb = self._live_tombstone(message.call_id)
        if call is None:
            if tomb is not None:
                self._respond(message, source, 200, "OK")
            else:
                self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        if (message.tag("To"), message.tag("From")) != (
            self._local_tag(call),
            sm.header_param(call._remote_header, "tag"),
        ):  # another dialog's BYE (RFC 3261 §12.2.2): the call goes on
            log.warning("BYE for call %s with foreign tags from %s:%s: 481", call.call_id, *source)
            self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(message, source, 200, "OK")
        self._finish(call, Disposition.CALLER_HUNG_UP)

    def _on_options(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        self._respond(
            message,
            source,
            200,
            "OK",
            to_tag=sm.new_tag(),
            extra=[("Allow", ALLOW), ("Accept", "application/sdp")],
        )

    # --- ending ------------------------------------------------------------------------
    def _hangup(self, call: SipCall, disposition: Disposition) -> None:
        """End from our side: BYE once answered, 480 to an inbound call still ringing."""
        with call._lock:
            state = call.state
            if state == CallState.ENDED:
                return
            if state == CallState.RINGING and call._invite is not None:
                invite, cseq = call._invite, call._invite.cseq[0]
                call._responses[cseq] = self._final_response(
                    invite,
                    call._invite_source,
                    480,
                    "Temporarily Unavailable",
                    to_tag=self._local_tag(call),
                )
        if self._finish(call, disposition) and state != CallState.RINGING:
            self._send_bye(call)

    def _request_headers(
        self, call: SipCall, *, branch: str, cseq: str, to: str | None = None, routes: bool = False
    ) -> list[tuple[str, str]]:
        """The headers every request of ours in a call carries: Via, Max-Forwards, From, To
        (``to``: the To of a final response, for its ACK), the route set once the dialog
        has one (``routes``), Call-ID and CSeq."""
        return [
            ("Via", f"SIP/2.0/UDP {self.advertised_host}:{self.address[1]};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", call._local_header),
            ("To", to if to is not None else call._remote_header),
            *(("Route", route) for route in (call._route_set if routes else ())),
            ("Call-ID", call.sip_call_id),
            ("CSeq", cseq),
        ]

    def _send_bye(self, call: SipCall) -> None:
        call._cseq += 1
        branch = sm.new_branch()
        data = sm.build_request(
            "BYE",
            call._remote_target,
            [
                *self._request_headers(call, branch=branch, cseq=f"{call._cseq} BYE", routes=True),
                ("User-Agent", self.config.user_agent),
            ],
        )
        self._client_request(
            data, call._peer, (branch, "BYE"), lambda m: m.status_code >= 200, None
        )

    def _finish(self, call: SipCall, disposition: Disposition) -> bool:
        """End the call once (False if it had ended already) and free what it held."""
        with call._lock:
            if call.state == CallState.ENDED:
                return False
            check_transition(call.state, CallState.ENDED)
            call.state = CallState.ENDED
            call.disposition = disposition
            call.ended_at = utc_now()
            media, call._media = call._media, None
        if media is not None:
            media.stop()
            call._media = EndedMedia(media)
        self._ports.release(call.rtp_port)  # closes the socket if no media took it over
        with self._lock:
            self._dialogs.pop(call.sip_call_id, None)
            gil_handover_for(len(self._dialogs))
            for key in call._keys:  # our requests' transactions (final responses we sent
                self._pending.pop(key, None)  # keep retransmitting until their ACK)
                self._retx.pop(("req",) + key, None)
            self._bury(call.sip_call_id, dict(call._responses), dict(call._acks), call._peer)
        call.ended.set()
        log.info("call %s ended: %s", call.call_id, disposition.value)
        self._observed.put(call)
        return True

    def _observe(self) -> None:
        """Tells ``on_ended`` about each ended call, off the SIP receive thread."""
        while (call := self._observed.get()) is not None:
            try:
                call._decide_key()
                if self._on_ended is None:
                    raise RuntimeError("the SIP edge is not started")
                with logging_setup.bound(call=call.call_id):  # its transcription task too
                    self._on_ended(call)
            except Exception:
                log.exception("on_ended failed for %s", call.call_id)

    # --- helpers -----------------------------------------------------------------------
    def _contact(self, user: str = "hotline") -> list[tuple[str, str]]:
        return [("Contact", f"<sip:{user}@{self.advertised_host}:{self.address[1]}>")]

    @staticmethod
    def _local_tag(call: SipCall) -> str:
        return sm.header_param(call._local_header, "tag")
