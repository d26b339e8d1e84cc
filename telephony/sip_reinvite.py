"""Re-INVITEs the edge sends (RFC 3261 §14.1): a new offer on an established dialog.

``reinvite(call, sdp)`` sends an INVITE inside the call's dialog — the next CSeq, the same
Call-ID, tags and route set, our Contact — retransmitted over UDP on T1..T2 (timer A) until
a response, given up after 64·T1 (timer B) without a final one. A 2xx is ACKed (a new
branch, to the remote target; a retransmitted 2xx is ACKed again) and its SDP is the answer;
any other final response is ACKed on the INVITE's branch and leaves the session as it was
(§14.1). A 491 (glare: both ends re-INVITEd at once) is retried after §14.1's random wait:
2.1–4 s when we chose the Call-ID, 0–2 s when the peer did. While ours is pending, a
re-INVITE from the peer gets 491 (``SipDialogs._on_reinvite``).

The caller of ``reinvite`` decides what the answer means for the media: ``reinvite_to_edge``
offers the edge's own RTP port again and points the call's media at the answer.
``ReinviteResult.dialog_gone`` says when RFC 3261 §12.2.1.2 advises ending the call (408,
481, no response at all); ``reinvite`` does not end it by itself.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from telephony import sip_message as sm
from telephony.endpoint import CallDirection, CallState
from telephony.sip_config import ALLOW
from telephony.sip_dialogs import SipCall, SipDialogs
from telephony.sip_sdp import Offer, build_sdp, read_offer

log = logging.getLogger(__name__)

TIMED_OUT = 0  # ``ReinviteResult.status`` when no final response came (timer B)
NOWHERE = ("0.0.0.0", 0)  # an RTP session's remote that it sends nothing to


@dataclass
class ReinviteResult:
    """How a re-INVITE ended: the final status (``TIMED_OUT`` without one), the answer's
    SDP and where it takes our RTP (a 2xx only), and how many 491s were met on the way."""

    status: int
    reason: str = ""
    body: bytes = b""
    answer: Offer | None = None
    glares: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def dialog_gone(self) -> bool:
        """RFC 3261 §12.2.1.2: after a 408, a 481 or no response the UAC SHOULD end the
        dialog."""
        return self.status in (TIMED_OUT, 408, 481)


class ReinviteRefused(RuntimeError):
    """A re-INVITE cannot be sent: the call is not answered, or has ended."""


def glare_delay(*, owner: bool, rng: random.Random) -> float:
    """RFC 3261 §14.1: the wait before retrying a re-INVITE that met 491, in units of 10 ms;
    2.1–4 s for the UAC that chose the Call-ID, 0–2 s for the other."""
    low, high = (210, 400) if owner else (0, 200)
    return rng.randint(low, high) / 100


def with_origin(body: bytes, *, session_id: int, version: int, host: str) -> bytes:
    """``body`` with our o= line: within a dialog an SDP's origin stays the same and only
    its version goes up (RFC 3264 §8), also when the SDP was made by a relay."""
    family = "IP6" if ":" in host else "IP4"
    origin = f"o=hotline {session_id} {version} IN {family} {host}".encode()
    lines = body.split(b"\r\n") if b"\r\n" in body else body.split(b"\n")
    out = [origin if line.startswith(b"o=") else line for line in lines]
    return b"\r\n".join(line.rstrip(b"\r") for line in out)


@dataclass
class _ReinviteTx:
    branch: str
    cseq: int
    uri: str
    response: sm.LenientSIPMessage | None = None
    done: threading.Event | None = None


class ReInvites(SipDialogs):
    """The re-INVITE client of ``SipEdge``."""

    glare_retries = 3  # 491s in a row before giving up
    _glare_rng = random.Random()

    def reinvite(self, call: SipCall, sdp: bytes) -> ReinviteResult:
        """Offer ``sdp`` to the peer of an answered ``call``; blocks until the outcome (at
        most 64·T1 per attempt plus the glare waits). Raises ``ReinviteRefused`` when the
        call is not answered; a call ending meanwhile ends the wait with ``TIMED_OUT``."""
        with call._reinvite_lock:  # one INVITE transaction of ours at a time (§14.1)
            glares = 0
            while True:
                result = self._reinvite_once(call, sdp)
                if result.status != 491 or glares >= self.glare_retries:
                    result.glares = glares
                    return result
                glares += 1
                delay = glare_delay(
                    owner=call.direction == CallDirection.OUTBOUND, rng=self._glare_rng
                )
                log.info("call %s: re-INVITE met 491, again in %.2f s", call.call_id, delay)
                if call.ended.wait(delay):
                    return ReinviteResult(TIMED_OUT, "call ended", glares=glares)

    def reinvite_away(self, call: SipCall, sdp: bytes) -> ReinviteResult:
        """``reinvite`` with an SDP of another media endpoint (a relay): on 2xx the edge's
        own session for the call stops sending (its comfort silence would reach the phone
        as a second stream) until ``reinvite_to_edge`` brings the media back."""
        result = self.reinvite(call, sdp)
        media = call._media
        if result.ok and media is not None:
            media.set_remote(NOWHERE)
        return result

    def media_back(self, call: SipCall) -> None:
        """The phone's own re-INVITE brought its media back to the edge (our 200 carries our
        port): the edge's session sends to the phone again."""
        media = call._media
        if media is not None:
            media.set_remote(call.remote_rtp)

    def reinvite_to_edge(self, call: SipCall) -> ReinviteResult:
        """Offer the edge's own RTP port (the call's codec) again and, on 2xx, send the
        call's media to the answer's address: media that went elsewhere (a relay) comes back
        to the edge."""
        sdp = build_sdp(
            host=self.advertised_host,
            port=call.rtp_port,
            session_id=call._session_id,
            version=call._sdp_version,
            payload_types=[call.payload_type],
            dtmf=call.dtmf_payload_type,
            dtmf_events=call.dtmf_events,
        )
        result = self.reinvite(call, sdp)
        if result.ok and result.answer is not None:
            call.remote_rtp = (result.answer.address, result.answer.port)
            media = call._media
            if media is not None:
                media.set_remote(call.remote_rtp)
        return result

    def _reinvite_once(self, call: SipCall, sdp: bytes) -> ReinviteResult:
        with call._lock:
            if call.state in (CallState.RINGING, CallState.ENDED):
                raise ReinviteRefused(f"call {call.call_id} is {call.state.value}")
            call._cseq += 1
            call._sdp_version += 1
            cseq = call._cseq
            body = with_origin(
                sdp,
                session_id=call._session_id,
                version=call._sdp_version,
                host=self.advertised_host,
            )
            call._reinviting = True
        tx = _ReinviteTx(
            branch=sm.new_branch(), cseq=cseq, uri=call._remote_target, done=threading.Event()
        )
        user = self.config.caller_user if call.direction == CallDirection.OUTBOUND else "hotline"
        headers = [
            *self._request_headers(call, branch=tx.branch, cseq=f"{cseq} INVITE", routes=True),
            *self._contact(user),
            ("Allow", ALLOW),
            ("User-Agent", self.config.user_agent),
            ("Content-Type", "application/sdp"),
        ]
        data = sm.build_request("INVITE", tx.uri, headers, body)
        key = (tx.branch, "INVITE")
        call._keys.add(key)
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            assert tx.done is not None
            tx.done.set()

        try:
            self._client_request(
                data,
                call._peer,
                key,
                lambda message: self._on_reinvite_response(call, tx, message),
                on_timeout=on_timeout,
            )
            deadline = time.monotonic() + 64 * self.config.t1
            assert tx.done is not None
            while not tx.done.wait(0.05):
                if call.ended.is_set() or time.monotonic() >= deadline:
                    break  # ended meanwhile; or provisional responses and then nothing
        finally:
            with call._lock:
                call._reinviting = False
        response = tx.response
        if response is None:
            why = "call ended" if call.ended.is_set() else "no final response"
            log.warning("call %s: re-INVITE CSeq %d: %s", call.call_id, cseq, why)
            with self._lock:
                self._retx.pop(("req",) + key, None)
            return ReinviteResult(TIMED_OUT, why)
        code = response.status_code
        result = ReinviteResult(code, response.reason)
        if result.ok:
            result.body = response.raw_message.body
            result.answer, problem = read_offer(response)
            if result.answer is None:
                log.warning(
                    "call %s: re-INVITE answered without usable SDP: %s", call.call_id, problem
                )
        else:
            log.info(
                "call %s: re-INVITE CSeq %d refused: %d %s",
                call.call_id,
                cseq,
                code,
                response.reason,
            )
        return result

    def _on_reinvite_response(
        self, call: SipCall, tx: _ReinviteTx, message: sm.LenientSIPMessage
    ) -> bool:
        code = message.status_code
        if code < 200:  # proceeding: no more retransmissions (§17.1.1.2)
            with self._lock:
                self._retx.pop(("req", tx.branch, "INVITE"), None)
            return False
        if tx.response is not None:  # a retransmitted final response: ACK it again
            if ack := call._acks.get(tx.cseq):
                self._send(ack, call._peer)
            return False
        raw = message.raw_message
        with call._lock:
            if 200 <= code < 300:
                call._remote_target = sm.uri_of(raw.get("Contact")) or call._remote_target
                ack_branch, ack_uri = sm.new_branch(), call._remote_target
            else:  # the ACK of a non-2xx is part of the INVITE's transaction (§17.1.1.3)
                ack_branch, ack_uri = tx.branch, tx.uri
            ack = sm.build_request(
                "ACK",
                ack_uri,
                self._request_headers(
                    call, branch=ack_branch, cseq=f"{tx.cseq} ACK", to=raw.get("To"), routes=True
                ),
            )
            call._acks[tx.cseq] = ack
        self._send(ack, call._peer)
        tx.response = message
        assert tx.done is not None
        tx.done.set()
        return False  # kept to ACK retransmitted final responses until the call ends
