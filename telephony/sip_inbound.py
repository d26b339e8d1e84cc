"""Calls made to the edge: the server side of INVITE (RFC 3261 §13.3).

A new INVITE gets a 200 with our answer at once, or with our offer when theirs is delayed to
the ACK; with an ``answer_delay``, 100 Trying and 180 Ringing first (RFC 3261 §17.2.1 owes a
100 only when no response goes out within 200 ms; at hundreds of calls a second it was a
third of what the receive thread sent). The call's handler starts once media runs. Refusals
are final responses retransmitted until their ACK and
remembered for the Call-ID: 488 for an offer without PCMU/PCMA or with media we cannot reach
(IPv6 to an IPv4 edge), 503 beyond ``max_calls`` or without a free RTP port (a missed call:
told to ``on_ended`` with ``Disposition.REFUSED``), 481/482 for INVITEs that match no dialog.
Each new call gets its key (``Call.call_id``) from ``sip_call_keys``, decided off the receive
thread before the handler starts or the end is reported (it may ask the database). A
retransmitted INVITE gets the same response again, also for a while after the call ended; one
inside a dialog is a re-INVITE (``sip_dialogs``).
"""

from __future__ import annotations

import logging
from functools import partial

from telephony import sip_message as sm
from telephony.endpoint import CallDirection, CallState, Disposition
from telephony.rtp_ports import NoFreeRtpPort
from telephony.sip_call_keys import CallKeys, fit
from telephony.sip_config import SipConfig
from telephony.sip_dialogs import MediaFactory, SipCall, SipDialogs, utc_now
from telephony.sip_sdp import (
    DTMF_PT,
    PCMA,
    PCMU,
    Offer,
    address_problem,
    build_sdp,
    read_offer,
)
from telephony.sip_transport import gil_handover_for

log = logging.getLogger(__name__)


class InboundCalls(SipDialogs):
    """The user-agent server part of ``SipEdge``: INVITEs that make new calls."""

    def __init__(self, config: SipConfig, *, media_factory: MediaFactory) -> None:
        super().__init__(config, media_factory=media_factory)
        self._call_keys = CallKeys(known=config.call_key_known)
        self._refused = 0
        self._draining = False  # set by SipEdge.drain: every new INVITE gets 503

    @property
    def refused_calls(self) -> int:
        """How many INVITEs were turned away for capacity since the start (each also told
        to ``on_ended`` as a call with ``Disposition.REFUSED``)."""
        with self._lock:
            return self._refused

    def _on_invite(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        call_id, (cseq, _) = message.call_id, message.cseq
        with self._lock:
            call = self._dialogs.get(call_id)
            tomb = self._live_tombstone(call_id)
        if call is not None:
            if cseq in call._responses:
                self._send(
                    call._responses[cseq], sm.via_target(message.raw_message.get("Via"), source)
                )
            elif message.tag("To") and message.tag("To") == self._local_tag(call):
                self._on_reinvite(call, message, source)
            else:
                self._respond(message, source, 482, "Loop Detected")
            return
        if tomb is not None:
            if cseq in tomb.responses:  # a retransmission: the same answer, never a new call
                self._send(
                    tomb.responses[cseq], sm.via_target(message.raw_message.get("Via"), source)
                )
            else:
                self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        if message.tag("To"):
            self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        if self._draining:
            self._reject_invite(
                message, source, 503, "Service Unavailable", extra=[("Retry-After", "60")]
            )
            self._report_refused(message, source, "the edge is draining")
            return
        if self.live_calls >= self.config.max_calls:
            self._reject_invite(
                message, source, 503, "Service Unavailable", extra=[("Retry-After", "5")]
            )
            self._report_refused(message, source, f"all {self.config.max_calls} call slots busy")
            return
        offer, problem = read_offer(message)
        delayed_offer = not message.raw_message.body  # we offer in the 200, they answer in ACK
        if offer is not None and (unreachable := address_problem(offer, self.config.host)):
            log.info("INVITE %s refused: %s", call_id, unreachable)
            self._reject_invite(
                message,
                source,
                488,
                "Not Acceptable Here",
                extra=[("Warning", f'301 hotline "{unreachable}"')],
            )
            return
        if offer is None and not delayed_offer:
            log.info("INVITE %s refused: %s", call_id, problem)
            self._reject_invite(
                message,
                source,
                488,
                "Not Acceptable Here",
                extra=[("Warning", f'305 hotline "{problem}"')],
            )
            return
        try:
            port, sock = self._ports.allocate()
        except NoFreeRtpPort:
            self._reject_invite(message, source, 503, "Service Unavailable")
            self._report_refused(message, source, "no free RTP port")
            return
        raw = message.raw_message
        call = SipCall(
            edge=self,
            call_id=fit(call_id),
            sip_call_id=call_id,
            direction=CallDirection.INBOUND,
            local_uri=sm.uri_of(raw.get("To")),
            remote_uri=sm.uri_of(raw.get("From")),
            peer=source,
            rtp_port=port,
            rtp_sock=sock,
        )
        # The key may cost a database lookup: decided off this thread (SipCall._decide_key).
        call._key_pending = partial(self._call_keys.new_call, call_id)
        local_tag = sm.new_tag()
        call._local_header = f"{raw.get('To')};tag={local_tag}"
        call._remote_header = raw.get("From")
        call._remote_target = sm.uri_of(raw.get("Contact")) or call.remote_uri
        call._route_set = raw.get_all("Record-Route")
        call._invite, call._invite_source = message, source
        with self._lock:
            self._dialogs[call_id] = call
            gil_handover_for(len(self._dialogs))
        if self.config.answer_delay > 0:
            call._responses[cseq] = self._respond(message, source, 100, "Trying")
            call._responses[cseq] = self._respond(
                message, source, 180, "Ringing", to_tag=local_tag, extra=self._contact()
            )
            self._timers.call_later(self.config.answer_delay, lambda: self._answer(call, offer))
        else:
            self._answer(call, offer)

    def _report_refused(
        self, message: sm.LenientSIPMessage, source: tuple[str, int], why: str
    ) -> None:
        """A call turned away for capacity is a missed call: counted, logged, and told to
        ``on_ended`` (once: a retransmitted INVITE meets the tombstone) as an ended call
        with ``Disposition.REFUSED``, so that its record holds the number to call back."""
        raw = message.raw_message
        call = SipCall(
            edge=self,
            call_id=fit(message.call_id),
            sip_call_id=message.call_id,
            direction=CallDirection.INBOUND,
            local_uri=sm.uri_of(raw.get("To")),
            remote_uri=sm.uri_of(raw.get("From")),
            peer=source,
            rtp_port=0,
            rtp_sock=None,
        )
        call._key_pending = partial(self._call_keys.new_call, message.call_id)
        call.set_state(CallState.ENDED)
        call.disposition, call.ended_at = Disposition.REFUSED, call.arrived_at
        call.ended.set()
        with self._lock:
            self._refused += 1
        log.warning(
            "call %s from %r refused with 503 (%s): a missed call to call back",
            call.call_id,
            call.remote_number,
            why,
        )
        self._observed.put(call)

    def _answer(self, call: SipCall, offer: Offer | None) -> None:
        """Send the 200: our answer to their offer, or (``offer`` None) our offer, whose
        answer comes in the ACK; the handler starts once media runs."""
        with call._lock:
            if call.state != CallState.RINGING:
                return
            message, source = call._invite, call._invite_source
            if message is None:
                raise RuntimeError(f"call {call.call_id} has no INVITE to answer")
            if offer is not None:
                try:
                    self._start_media(call, offer)
                except Exception:
                    log.exception("no media for %s", call.call_id)
                    self._hangup(call, Disposition.FAILED)
                    return
                body = self._our_sdp(call)
            else:
                body = build_sdp(
                    host=self.advertised_host,
                    port=call.rtp_port,
                    session_id=call._session_id,
                    version=call._sdp_version,
                    payload_types=[PCMU, PCMA],
                    dtmf=DTMF_PT,
                )
            cseq = message.cseq[0]
            call._responses[cseq] = self._final_response(
                message,
                source,
                200,
                "OK",
                to_tag=self._local_tag(call),
                extra=self._contact() + [("Content-Type", "application/sdp")],
                body=body,
                on_give_up=lambda: self._hangup(call, Disposition.FAILED),
            )
            call.set_state(CallState.ANSWERED)
            call.answered_at = utc_now()
        if offer is not None:
            self._start_handler(call)

    def _reject_invite(
        self,
        message: sm.LenientSIPMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """A final non-2xx to a new INVITE: retransmitted until ACK, remembered for the
        Call-ID so that a retransmitted INVITE gets it again."""
        data = self._final_response(
            message, source, status, reason, to_tag=sm.new_tag(), extra=extra
        )
        with self._lock:
            self._bury(message.call_id, {message.cseq[0]: data}, {}, source)
