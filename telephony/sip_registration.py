"""Registration of the edge's ``SipLine`` accounts, and the digest authentication it and
outbound INVITEs answer challenges with.

``Registration`` keeps one line registered without ever blocking: REGISTER, answer a 401/407
with RFC 2617 MD5 digest (qop=auth when offered: pyVoIP 1.6.8 has no qop and digests the
wrong URI), refresh before expiry, retry after failures.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid

from telephony import sip_message as sm
from telephony.sip_config import ALLOW, SipLine
from telephony.sip_transactions import ScheduledCall, SipTransactions, Timers

log = logging.getLogger(__name__)


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a ``Digest`` WWW-/Proxy-Authenticate value (quoted commas kept)."""
    _, _, params = value.strip().partition(" ")
    out: dict[str, str] = {}
    for part in sm._split_commas(params):
        key, _, val = part.partition("=")
        if key.strip():
            out[key.strip().lower()] = val.strip().strip('"')
    return out


def digest_authorization(
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    challenge: dict[str, str],
    cnonce: str,
    nc: int = 1,
) -> str:
    """An Authorization value for RFC 2617 MD5 digest, with qop=auth when offered."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode("utf-8")).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    ha1 = md5(f"{username}:{realm}:{password}")
    if challenge.get("algorithm", "MD5").upper() == "MD5-SESS":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = md5(f"{method}:{uri}")
    qops = [q.strip().lower() for q in challenge.get("qop", "").split(",")]
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in qops:
        response = md5(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"')
    parts.append(f"algorithm={challenge.get('algorithm', 'MD5')}")
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


class Registration:
    """Keeps one line registered: REGISTER, answer digest challenges, refresh before expiry,
    retry after failures. Never blocks the caller."""

    def __init__(self, edge: SipTransactions, line: SipLine) -> None:
        self.line = line
        self.registered = threading.Event()
        self.attempts = 0
        self.last_status = 0
        self.expires = 0
        self._edge = edge
        self._call_id = f"{uuid.uuid4().hex}@{edge.advertised_host}"
        self._tag = sm.new_tag()
        self._cseq = 0
        self._nonce_tried = ""
        self._timer: ScheduledCall | None = None
        self._expires = edge.config.register_expires
        self._stopped = False

    def start(self) -> None:
        self._send()

    def stop(self) -> None:
        """Unregister, best effort: the edge is closing and will not wait for the answer."""
        self._stopped = True
        Timers.cancel(self._timer)
        if self.registered.is_set():
            self._expires = 0
            self._send()

    def _send(self, authorization: tuple[str, str] | None = None) -> None:
        edge, line = self._edge, self.line
        self._cseq += 1
        self.attempts += 1
        branch = sm.new_branch()
        uri = f"sip:{line.domain or line.registrar_address[0]}"
        headers = [
            ("Via", f"SIP/2.0/UDP {edge.advertised_host}:{edge.address[1]};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{line.aor}>;tag={self._tag}"),
            ("To", f"<{line.aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<sip:{line.user}@{edge.advertised_host}:{edge.address[1]}>"),
            ("Expires", str(self._expires)),
            ("Allow", ALLOW),
            ("User-Agent", edge.config.user_agent),
        ]
        if authorization:
            headers.append(authorization)
        data = sm.build_request("REGISTER", uri, headers)
        edge._client_request(
            data, line.registrar_address, (branch, "REGISTER"), self._on_response, self._on_timeout
        )

    def _on_response(self, message: sm.LenientSIPMessage) -> bool:
        code = message.status_code
        self.last_status = code
        if code < 200:
            return False
        if code in (401, 407):
            header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
            challenge = parse_challenge(message.raw_message.get(header))
            stale = challenge.get("stale", "").lower() == "true"
            if "nonce" not in challenge or (challenge["nonce"] == self._nonce_tried and not stale):
                log.warning("line %s: registrar refused the credentials", self.line.aor)
                self._retry_later()
                return True
            self._nonce_tried = challenge["nonce"]
            uri = f"sip:{self.line.domain or self.line.registrar_address[0]}"
            value = digest_authorization(
                method="REGISTER",
                uri=uri,
                username=self.line.auth_user or self.line.user,
                password=self.line.password,
                challenge=challenge,
                cnonce=uuid.uuid4().hex[:16],
            )
            self._send(("Authorization" if code == 401 else "Proxy-Authorization", value))
            return True
        if 200 <= code < 300 and self._stopped:
            self.registered.clear()
            return True
        if 200 <= code < 300:
            self.expires = self._granted(message)
            self.registered.set()
            self._nonce_tried = ""
            refresh = max(1.0, self.expires - 30 if self.expires > 60 else self.expires / 2)
            self._timer = self._edge._timers.call_later(refresh, self._send)
            log.info("line %s registered for %ss", self.line.aor, self.expires)
            return True
        log.warning("line %s: REGISTER answered %s %s", self.line.aor, code, message.reason)
        self._retry_later()
        return True

    def _granted(self, message: sm.LenientSIPMessage) -> int:
        for contact in message.raw_message.get_all("Contact"):
            if f"{self._edge.advertised_host}:{self._edge.address[1]}" in contact:
                value = sm.header_param(contact, "expires")
                if value.isdigit():
                    return int(value)
        value = message.raw_message.get("Expires")
        return int(value) if value.isdigit() else self._edge.config.register_expires

    def _on_timeout(self) -> None:
        log.warning("line %s: registrar %s did not answer", self.line.aor, self.line.registrar)
        self._retry_later()

    def _retry_later(self) -> None:
        self.registered.clear()
        if self._stopped:
            return
        self._timer = self._edge._timers.call_later(self._edge.config.register_retry, self._send)
