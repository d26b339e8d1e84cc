"""Transfers asked for by a phone: REFER inside a call's dialog (RFC 3515).

An operator's phone asks to transfer with its transfer key: a REFER inside the call's dialog,
Refer-To naming the target (with a ``Replaces`` header, RFC 3891, for an attended transfer the
phone consulted itself). ``ReferHandling`` (a part of ``SipEdge``) parses and accepts it, and
reports progress back to the phone as NOTIFYs of ``message/sipfrag`` (§2.4.4); what the
transfer *does* belongs to whoever relays the call — the bridge sets ``SipCall.on_refer``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from telephony import sip_message as sm
from telephony.endpoint import CallState
from telephony.sip_dialogs import SipCall, SipDialogs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refer:
    """A transfer asked for by a call's phone (a REFER in its dialog)."""

    target: str  # the Refer-To URI without its ?headers
    replaces: str  # its Replaces header (RFC 3891): "" for a blind transfer
    # Progress back to the phone as a sipfrag status line ("SIP/2.0 200 OK"); a final status
    # (>= 200) ends the implicit subscription (RFC 3515 §2.4.5).
    notify: Callable[[int, str], None]


def parse_refer_to(value: str) -> tuple[str, str]:
    """(target URI, Replaces) of a Refer-To value, e.g.
    ``<sip:8002@host?Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2>``."""
    uri = sm.uri_of(value)
    target, _, headers = uri.partition("?")
    replaces = ""
    for part in headers.split("&") if headers else ():
        name, _, val = part.partition("=")
        if name.strip().lower() == "replaces":
            replaces = unquote(val)
    if not target.lower().startswith(("sip:", "sips:", "tel:")):
        raise ValueError(f"not a SIP or tel URI: {target!r}")
    return target, replaces


class ReferHandling(SipDialogs):
    """The REFER part of ``SipEdge``."""

    def _on_refer(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> None:
        """A phone's transfer key (RFC 3515): 202, then NOTIFYs of how it goes."""
        with self._lock:
            call = self._dialogs.get(message.call_id)
        if call is None or (message.tag("To"), message.tag("From")) != (
            self._local_tag(call),
            sm.header_param(call._remote_header, "tag"),
        ):
            self._respond(message, source, 481, "Call/Transaction Does Not Exist")
            return
        values = message.raw_message.get_all("Refer-To")
        if len(values) != 1:  # exactly one (§2.4.1)
            self._respond(message, source, 400, "Bad Request: exactly one Refer-To")
            return
        try:
            target, replaces = parse_refer_to(values[0])
        except ValueError as exc:
            log.warning("REFER in call %s with a bad Refer-To: %s", call.call_id, exc)
            self._respond(message, source, 400, "Bad Request: Refer-To")
            return
        handler = call.on_refer
        if handler is None:
            log.info("REFER in call %s declined: nothing relays it", call.call_id)
            self._respond(message, source, 603, "Decline")
            return
        self._respond(message, source, 202, "Accepted")
        notify = functools.partial(self._send_notify, call)
        notify(100, "Trying")
        try:
            accepted = handler(Refer(target=target, replaces=replaces, notify=notify))
        except Exception:
            log.exception("on_refer failed for %s", call.call_id)
            accepted = False
        if not accepted:
            notify(603, "Declined")

    def _send_notify(self, call: SipCall, status: int, reason: str) -> None:
        """A sipfrag NOTIFY of the REFER's progress; a final status ends the subscription."""
        with call._lock:
            if call.state == CallState.ENDED:
                return
            call._cseq += 1
            cseq = call._cseq
        branch = sm.new_branch()
        final = status >= 200
        data = sm.build_request(
            "NOTIFY",
            call._remote_target,
            [
                *self._request_headers(call, branch=branch, cseq=f"{cseq} NOTIFY", routes=True),
                *self._contact(),
                ("Event", "refer"),
                (
                    "Subscription-State",
                    "terminated;reason=noresource" if final else "active;expires=60",
                ),
                ("Content-Type", "message/sipfrag;version=2.0"),
                ("User-Agent", self.config.user_agent),
            ],
            f"SIP/2.0 {status} {reason}\r\n".encode(),
        )
        self._client_request(
            data, call._peer, (branch, "NOTIFY"), lambda m: m.status_code >= 200, None
        )
