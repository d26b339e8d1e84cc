"""Calls the edge makes: the client side of INVITE (RFC 3261 §13.2, §17.1.1).

``dial`` sends an INVITE with our offer (PCMU and PCMA, telephone-events) to the peer in the
URI, or in registered mode to the first line's registrar, answering a 401/407 once with
digest credentials. A seat's URI (``SipEdge.seat_target``) goes straight to the phone in
either mode, at the address its ``;alias=`` names (where its REGISTER came from). Every final
response is ACKed, retransmitted ones again; a 2xx gives the dialog its remote target and
route set, a 486/600/603 is busy. Without a final response within the ring timeout (or once
the caller's ``cancel`` event is set) the INVITE is CANCELled (a 200 that crosses the CANCEL
gets a BYE).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from telephony import sip_message as sm
from telephony.endpoint import CallDirection, CallFailed, CallState, Disposition
from telephony.rtp_ports import NoFreeRtpPort
from telephony.sip_config import ALLOW, SipLine
from telephony.sip_dialogs import SipCall, utc_now
from telephony.sip_registrar import split_alias
from telephony.sip_registration import digest_authorization, parse_challenge
from telephony.sip_reinvite import ReInvites
from telephony.sip_sdp import DTMF_PT, PCMA, PCMU, build_sdp, read_offer
from telephony.sip_transport import gil_handover_for

BUSY_CODES = frozenset({486, 600, 603})


@dataclass
class _ClientTx:
    """An outbound INVITE waiting for its final response."""

    branch: str
    cseq: int
    response: sm.LenientSIPMessage | None = None
    final: threading.Event = field(default_factory=threading.Event)

    def final_response(self) -> sm.LenientSIPMessage:
        """The final response, once ``final`` is set."""
        if self.response is None:
            raise RuntimeError(f"INVITE {self.branch} has no final response yet")
        return self.response


CANCEL_CHECK_S = 0.05  # how soon a set ``cancel`` stops the ringing


def _wait_final(tx: _ClientTx, timeout: float, cancel: threading.Event | None) -> bool:
    """Wait for the INVITE's final response; False on timeout or when ``cancel`` is set.
    Two events cannot be waited for at once: ``cancel`` is looked at every CANCEL_CHECK_S."""
    if cancel is None:
        return tx.final.wait(timeout)
    deadline = time.monotonic() + timeout
    while not cancel.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if tx.final.wait(min(CANCEL_CHECK_S, remaining)):
            return True
    return tx.final.is_set()


class OutboundCalls(ReInvites):
    """The user-agent client part of ``SipEdge``: ``dial`` and its INVITE; re-INVITEs
    (``reinvite``) from ``ReInvites``."""

    _draining: bool = False  # SipEdge.drain sets it (InboundCalls holds the instance's)

    def dial(
        self, uri: str, *, ring_timeout: float, cancel: threading.Event | None = None
    ) -> SipCall:
        """Ring ``uri`` for at most ``ring_timeout`` s. ``cancel``: set by another thread to
        stop the ringing early (the queued caller hung up while an agent's seat rang): the
        INVITE is CANCELled within ``CANCEL_CHECK_S`` and ``CallFailed(CANCELLED)`` raised."""
        if self._transport is None:
            raise RuntimeError("the SIP edge is not started")
        if self._draining:  # the process is going away: nothing new is started
            raise CallFailed(Disposition.FAILED, "the SIP edge is draining")
        if self.live_calls >= self.config.max_calls:
            raise CallFailed(Disposition.FAILED, "no free call slot")
        uri, received = split_alias(uri)
        line = (
            self.config.lines[0] if self.config.mode == "registered" and received is None else None
        )
        target = line.registrar_address if line else (received or sm.uri_hostport(uri))
        local_uri = (
            line.aor
            if line
            else (f"sip:{self.config.caller_user}@{self.advertised_host}:{self.address[1]}")
        )
        try:
            port, sock = self._ports.allocate()
        except NoFreeRtpPort as exc:
            raise CallFailed(Disposition.FAILED, str(exc)) from exc
        call = SipCall(
            edge=self,
            call_id=f"{uuid.uuid4().hex}@{self.advertised_host}",
            direction=CallDirection.OUTBOUND,
            local_uri=local_uri,
            remote_uri=uri,
            peer=target,
            rtp_port=port,
            rtp_sock=sock,
        )
        call._local_header = f"<{local_uri}>;tag={sm.new_tag()}"
        call._remote_header = f"<{uri}>"
        with self._lock:
            self._dialogs[call.sip_call_id] = call
            gil_handover_for(len(self._dialogs))
        tx = self._send_invite(call, line, authorization=None)
        if (
            _wait_final(tx, ring_timeout, cancel)
            and tx.final_response().status_code in (401, 407)
            and line
        ):
            tx = self._send_invite(call, line, authorization=tx.final_response())
            _wait_final(tx, ring_timeout, cancel)
        if not tx.final.is_set():
            self._cancel(call, tx)
            if cancel is not None and cancel.is_set():
                self._finish(call, Disposition.CANCELLED)
                raise CallFailed(Disposition.CANCELLED, "cancelled while ringing")
            self._finish(call, Disposition.NO_ANSWER)
            raise CallFailed(Disposition.NO_ANSWER, f"no answer within {ring_timeout}s")
        response = tx.final_response()
        code = response.status_code
        if code >= 300:
            disposition = Disposition.BUSY if code in BUSY_CODES else Disposition.FAILED
            self._finish(call, disposition)
            raise CallFailed(disposition, f"{code} {response.reason}")
        offer, problem = read_offer(response)
        try:
            if offer is None:
                raise ValueError(f"unusable SDP answer: {problem}")
            self._start_media(call, offer)
        except Exception as exc:
            self._send_bye(call)
            self._finish(call, Disposition.FAILED)
            raise CallFailed(Disposition.FAILED, str(exc)) from exc
        with call._lock:
            if call.state == CallState.RINGING:  # else the callee's BYE beat us to it
                call.set_state(CallState.ANSWERED)
                call.answered_at = utc_now()
        return call

    def _send_invite(
        self, call: SipCall, line: SipLine | None, authorization: sm.LenientSIPMessage | None
    ) -> _ClientTx:
        call._cseq += 1
        branch = sm.new_branch()
        headers = [
            *self._request_headers(call, branch=branch, cseq=f"{call._cseq} INVITE"),
            *self._contact(line.user if line else self.config.caller_user),
            ("Allow", ALLOW),
            ("User-Agent", self.config.user_agent),
            ("Content-Type", "application/sdp"),
        ]
        if authorization is not None and line is not None:
            code = authorization.status_code
            challenge = parse_challenge(
                authorization.raw_message.get(
                    "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
                )
            )
            headers.append(
                (
                    "Authorization" if code == 401 else "Proxy-Authorization",
                    digest_authorization(
                        method="INVITE",
                        uri=call.remote_uri,
                        username=line.auth_user or line.user,
                        password=line.password,
                        challenge=challenge,
                        cnonce=uuid.uuid4().hex[:16],
                    ),
                )
            )
        body = build_sdp(
            host=self.advertised_host,
            port=call.rtp_port,
            session_id=call._session_id,
            version=call._sdp_version,
            payload_types=[PCMU, PCMA],
            dtmf=DTMF_PT,
        )
        data = sm.build_request("INVITE", call.remote_uri, headers, body)
        tx = _ClientTx(branch=branch, cseq=call._cseq)
        key = (branch, "INVITE")
        call._keys.add(key)
        self._client_request(
            data,
            call._peer,
            key,
            lambda message: self._on_invite_response(call, tx, message),
            on_timeout=None,
        )
        return tx

    def _on_invite_response(
        self, call: SipCall, tx: _ClientTx, message: sm.LenientSIPMessage
    ) -> bool:
        code = message.status_code
        if code < 200:
            with self._lock:
                self._retx.pop(("req", tx.branch, "INVITE"), None)
            return False
        if tx.final.is_set():  # a retransmitted final response: ACK it again
            if ack := call._acks.get(tx.cseq):
                self._send(ack, call._peer)
            return False
        raw = message.raw_message
        with call._lock:
            call._remote_header = raw.get("To")
            if 200 <= code < 300:
                call._remote_target = sm.uri_of(raw.get("Contact")) or call.remote_uri
                call._route_set = raw.get_all("Record-Route")[::-1]
                ack_branch, ack_uri = sm.new_branch(), call._remote_target
            else:
                ack_branch, ack_uri = tx.branch, call.remote_uri
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
        tx.final.set()
        if 200 <= code < 300 and call.state == CallState.ENDED:
            self._send_bye(call)  # answered after we gave up (CANCEL crossed the 200)
        return False  # keep the transaction to ACK retransmitted final responses

    def _cancel(self, call: SipCall, tx: _ClientTx) -> None:
        with self._lock:
            self._retx.pop(("req", tx.branch, "INVITE"), None)
        data = sm.build_request(
            "CANCEL",
            call.remote_uri,
            [
                *self._request_headers(call, branch=tx.branch, cseq=f"{tx.cseq} CANCEL"),
                ("User-Agent", self.config.user_agent),
            ],
        )
        done = threading.Event()
        key = (tx.branch, "CANCEL")
        call._keys.add(key)

        def on_response(message: sm.LenientSIPMessage) -> bool:
            done.set()
            return message.status_code >= 200

        self._client_request(data, call._peer, key, on_response, on_timeout=done.set)
        tx.final.wait(4 * self.config.t1 + 1)  # the 487, ACKed by _on_invite_response
        if tx.final.is_set() and 200 <= tx.final_response().status_code < 300:
            self._send_bye(call)  # the 200 crossed our CANCEL
