"""Lenient SIP parsing on top of pyVoIP's ``SIPMessage``, and the response builders.

pyVoIP's parser wants exact ``Name: value`` lines with canonical capitalisation, knows four
methods, and raises on anything else (compact headers, lower-case names, an empty
``Supported:`` as baresip sends it, LF-only line ends, comma-joined Via values). We normalise
the raw datagram first (RFC 3261 §7.3: names are case-insensitive, compact forms, folding)
and hand pyVoIP a canonical message, keeping the original header values for responses, which
must copy Via/From/To/Call-ID/CSeq verbatim (§8.2.6.2).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone hits a circular import in 1.6.8)
from pyVoIP.SIP import SIPMessage, SIPMessageType

SIP_VERSION = "SIP/2.0"
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
KNOWN_METHODS = ALLOWED_METHODS + (
    "REGISTER",  # RFC 3261
    "INFO",  # RFC 6086
    "PRACK",  # RFC 3262
    "UPDATE",  # RFC 3311
    "SUBSCRIBE",  # RFC 6665
    "NOTIFY",
    "REFER",  # RFC 3515
    "MESSAGE",  # RFC 3428
    "PUBLISH",  # RFC 3903
)
"""Methods the edge recognises: those it does not answer get 405 with Allow, any other 501
(RFC 3261 §8.2.1, §21.5.2)."""

_COMPACT = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "r": "Refer-To",
}
_KNOWN = (
    "Accept",
    "Allow",
    "Authorization",
    "Call-ID",
    "Contact",
    "Content-Encoding",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Expires",
    "From",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Record-Route",
    "Require",
    "Retry-After",
    "Route",
    "Server",
    "Subject",
    "Supported",
    "To",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Session-Expires",
    "Allow-Events",
    "Event",
)
_CANONICAL = {name.lower(): name for name in _KNOWN}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
# Headers pyVoIP parses into structures; the rest it keeps as strings.
_FOR_PYVOIP = (
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Content-Type",
    "Content-Length",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Contact",
    "Expires",
)


class SipParseError(Exception):
    """The datagram is not SIP we can answer; ``status`` is the response to send if the
    request still carries enough to route one (None: drop it)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def canonical_name(name: str) -> str:
    name = name.strip()
    if len(name) == 1 and name.lower() in _COMPACT:
        return _COMPACT[name.lower()]
    return _CANONICAL.get(name.lower(), name)


@dataclass
class Raw:
    """The message as received, with header names canonicalised and values kept verbatim."""

    start: list[str]
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def split_raw(data: bytes, *, strict: bool = True) -> Raw:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("not UTF-8") from exc
    text = text.lstrip("\r\n")  # RFC 3261 §7.5: leading CRLFs are keep-alives/padding
    match = re.search(r"\r?\n\r?\n", text)
    head, body = (text[: match.start()], text[match.end() :]) if match else (text, "")
    lines: list[str] = []
    for line in re.split(r"\r?\n", head):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # header folding
        else:
            lines.append(line)
    start = lines[0].split(None, 2) if lines else []
    if len(start) != 3:
        raise SipParseError("no request or status line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            if not strict:
                continue
            raise SipParseError(f"bad header line {line!r}", 400)
        name, value = canonical_name(name), value.strip()
        if name in ("Via", "Contact", "Record-Route", "Route"):
            headers.extend((name, part) for part in _split_commas(value) if part)
        else:
            headers.append((name, value))
    raw_body = body.encode("utf-8")
    length = next((v for k, v in headers if k == "Content-Length"), None)
    if length is not None:
        if length.isdigit():
            if strict and int(length) > len(raw_body):  # RFC 3261 §18.3: 400 to a request
                raise SipParseError("Content-Length larger than the body", 400)
            raw_body = raw_body[: int(length)]
        elif strict:
            raise SipParseError("bad Content-Length", 400)
    return Raw(start=start, headers=headers, body=raw_body)


def _split_commas(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            depth += 1
        elif ch == ">" and not quoted:
            depth -= 1
        if ch == "," and not quoted and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


class LenientSIPMessage(SIPMessage):
    """pyVoIP's parser fed a canonical rendering of what arrived.

    Adds ``raw_message`` (the verbatim headers), ``request_uri``, ``received_version`` (a
    request with another version than SIP/2.0 still parses, so that a 505 can be routed),
    ``status_code``/``reason`` (any code, where pyVoIP knows only its enum) and
    ``body_error`` (an SDP pyVoIP could not read: the headers are still usable).
    """

    raw_message: Raw
    request_uri: str = ""
    received_version: str = SIP_VERSION
    status_code: int = 0
    reason: str = ""
    body_error: str = ""

    def parse(self, data: bytes) -> None:
        raw = split_raw(data)
        self.raw_message = raw
        first = raw.start
        method = None
        if first[0].upper().startswith("SIP/"):
            self.received_version = first[0].upper()
            if not (first[1].isdigit() and len(first[1]) == 3):
                raise SipParseError("bad status code")
            self.status_code, self.reason = int(first[1]), first[2]
            # pyVoIP's SIPStatus enum lacks many codes; it gets the class, we keep the code.
            heading = f"{SIP_VERSION} {first[1][0]}00 -"
        else:
            if not _TOKEN.match(first[0]) or not first[2].upper().startswith("SIP/"):
                raise SipParseError("bad request line", 400)
            method = first[0].upper()
            self.received_version = first[2].upper()
            self.request_uri = first[1]
            heading = f"{method} {first[1]} {SIP_VERSION}"
        for required in ("Via", "From", "To", "Call-ID", "CSeq"):
            if not raw.get(required):
                raise SipParseError(f"missing {required}", 400 if raw.get("Via") else None)
        if not re.match(r"^\d+\s+[A-Za-z]+$", raw.get("CSeq")):
            raise SipParseError("bad CSeq", 400)
        if method and raw.get("CSeq").split()[1].upper() != method:  # RFC 3261 §8.1.1.5
            raise SipParseError("CSeq method is not the request method", 400)
        for name in ("From", "To"):
            if not _URI_SCHEME.match(uri_of(raw.get(name))):
                raise SipParseError(f"{name} holds no URI", 400)
        lines = [heading]
        for name, value in raw.headers:
            if name in _FOR_PYVOIP and value and name != "Content-Length":
                lines.append(f"{name}: {_for_pyvoip(name, value)}")
        body = _tidy_sdp(raw.body)
        if body and not raw.get("Content-Type"):
            raise SipParseError("body without Content-Type", 400)
        # pyVoIP only parses the methods it knows; any token is a request method here.
        self.SIPCompatibleMethods = [method] if method else []
        self.SIPCompatibleVersions = [SIP_VERSION]
        try:
            super().parse(_canonical(lines, body))
        except Exception as exc:
            if not body:
                raise SipParseError(f"pyVoIP parser: {exc!r}", 400) from exc
            self.body_error = f"unreadable body: {exc!r}"
            self.headers, self.body = {"Via": []}, {}
            try:
                super().parse(_canonical(lines, b""))
            except Exception as again:
                raise SipParseError(f"pyVoIP parser: {again!r}", 400) from again

    @property
    def is_request(self) -> bool:
        return self.type == SIPMessageType.MESSAGE

    @property
    def method_name(self) -> str:
        return getattr(self, "method", "")

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.raw_message.get("CSeq").split()
        return int(number), method.upper()

    @property
    def call_id(self) -> str:
        return self.raw_message.get("Call-ID")

    def tag(self, header: str) -> str:
        return header_param(self.raw_message.get(header), "tag")


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S")
"""An absolute URI (RFC 3986 §3.1): From/To may hold any, e.g. ``tel:`` (RFC 3966)."""


def _for_pyvoip(name: str, value: str) -> str:
    """pyVoIP's From/To reader crashes on any URI but ``sip:``: it gets a sip: stand-in for
    a tel:/other URI (its structures are not used; ``raw_message`` keeps the value)."""
    if name not in ("From", "To") or re.match(r"^\s*sips?:", uri_of(value), re.I):
        return value
    tag = header_param(value, "tag")
    return "<sip:invalid>" + (f";tag={tag}" if tag else "")


def _tidy_sdp(body: bytes) -> bytes:
    """Drop what pyVoIP's SDP reader crashes on but RFC 4566 lets pass: blank lines, and
    rtpmap/fmtp attributes for payload types the m= line does not list."""
    lines, formats = [], None
    for line in re.split(rb"\r?\n", body):
        if not line.strip():
            continue
        if line.startswith(b"m="):
            formats = set(line.split()[3:])
        elif line.startswith((b"a=rtpmap:", b"a=fmtp:")):
            pt = line.split(b":", 1)[1].split(b" ", 1)[0]
            if formats is None or pt not in formats:
                continue
        lines.append(line)
    return b"\r\n".join(lines)


def _canonical(lines: list[str], body: bytes) -> bytes:
    head = "\r\n".join(lines + [f"Content-Length: {len(body)}"])
    return (head + "\r\n\r\n").encode("utf-8") + body


def parse(data: bytes) -> LenientSIPMessage:
    return LenientSIPMessage(data)


def header_param(value: str, name: str) -> str:
    """A ;param of a From/To/Via/Contact value, outside the <uri> brackets."""
    if ">" in value:
        value = value.rsplit(">", 1)[1]
    for part in value.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return ""


def uri_of(value: str) -> str:
    """The URI inside a From/To/Contact value."""
    match = re.search(r"<([^>]*)>", value)
    if match:
        return match.group(1)
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str:
    """The user part of a sip:/sips: URI, the number of a tel: URI (RFC 3966, its visual
    separators dropped); "" when anonymous or absent."""
    tel = re.match(r"^\s*tel:([^;?>]*)", uri, re.I)
    if tel:
        user = re.sub(r"[-.()\s]", "", tel.group(1))
    else:
        match = re.match(r"^\s*sips?:(?:([^@;>]*)@)?", uri, re.I)
        user = match.group(1) if match and match.group(1) else ""
    return "" if user.lower() == "anonymous" else user


def uri_hostport(uri: str, default_port: int = 5060) -> tuple[str, int]:
    match = re.match(r"^\s*sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;>?]+)(?::(\d+))?", uri)
    if not match:
        raise ValueError(f"not a SIP URI: {uri!r}")
    return match.group(1).strip("[]"), int(match.group(2) or default_port)


def via_target(via: str, source: tuple[str, int]) -> tuple[str, int]:
    """Where a response goes: the source address when the top Via asks for rport (RFC 3581),
    else the source IP (the ``received`` rule of RFC 3261 §18.2.2) at the sent-by port."""
    params = [p.strip().lower() for p in via.split(";")[1:]]
    if any(p == "rport" or p.startswith("rport=") for p in params):
        return source
    sent_by = via.split(None, 1)[1].split(";", 1)[0].strip() if " " in via.strip() else ""
    port = sent_by.rsplit(":", 1)[1] if sent_by.count(":") == 1 else ""
    return source[0], int(port) if port.isdigit() else 5060


def stamp_via(via: str, source: tuple[str, int]) -> str:
    """The top Via with received= and rport= filled in, as the response echoes it."""
    params = via.split(";")
    out = [params[0]]
    has_received = False
    for param in params[1:]:
        key = param.split("=", 1)[0].strip().lower()
        if key == "rport":
            out.append(f"rport={source[1]}")
        elif key == "received":
            has_received = True
            out.append(f"received={source[0]}")
        else:
            out.append(param)
    if not has_received:
        out.append(f"received={source[0]}")
    return ";".join(out)


class _RandomHex:
    """Cryptographically random hex (RFC 3261 §19.3 asks that of tags and branches) from
    ``os.urandom`` 4 KiB at a time: each call of it is a system call that hands the GIL
    over, and the SIP receive thread made one or two per call it answered (uuid4)."""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def __call__(self, digits: int) -> str:
        size = (digits + 1) // 2
        with self._lock:
            if self._at + size > len(self._pool):
                self._pool, self._at = os.urandom(self._CHUNK), 0
            piece = self._pool[self._at : self._at + size]
            self._at += size
        return piece.hex()[:digits]

    def forget(self) -> None:
        """A forked child must not hand out its parent's bytes again."""
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.forget)


def new_branch() -> str:
    return "z9hG4bK" + _random_hex(24)


def new_tag() -> str:
    return _random_hex(12)


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def encode(self) -> bytes:
        lines = [f"{SIP_VERSION} {self.status} {self.reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def build_response(
    raw: Raw,
    source: tuple[str, int],
    status: int,
    reason: str,
    *,
    to_tag: str = "",
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    vias = raw.get_all("Via")
    headers: list[tuple[str, str]] = []
    if vias:
        headers.append(("Via", stamp_via(vias[0], source)))
        headers += [("Via", via) for via in vias[1:]]
    headers += [("Record-Route", value) for value in raw.get_all("Record-Route")]
    to = raw.get("To")
    if to_tag and not header_param(to, "tag") and status > 100:
        to = f"{to};tag={to_tag}"
    headers += [
        ("From", raw.get("From")),
        ("To", to),
        ("Call-ID", raw.get("Call-ID")),
        ("CSeq", raw.get("CSeq")),
    ]
    headers += extra or []
    return Response(status, reason, headers, body).encode()


def build_request(
    method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {uri} {SIP_VERSION}"] + [f"{n}: {v}" for n, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
