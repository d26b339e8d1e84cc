"""The SIP edge: pyVoIP 1.6.8 behind ``SipEndpoint``, with its defects fixed here.

What of pyVoIP is used and what replaces it:

* parsing: pyVoIP's ``SIPMessage`` (headers and SDP), fed by ``sip_message.LenientSIPMessage``
  so that compact/lower-case headers and an empty ``Supported:`` parse, and errors become
  400/488/505 responses instead of silence;
* transport: ``EdgeSIPClient``, a ``pyVoIP.SIP.SIPClient`` whose ``start`` binds and listens at
  once (no blocking REGISTER, no 1 s timer) and whose receive loop hands every datagram, with
  its source address, to the edge; pyVoIP's response routing to the configured server (so only
  one peer could ever call) is not used: responses follow the top Via / source (RFC 3581);
* transactions and dialogs: here (pyVoIP has none): 100 Trying at once, immediate answer,
  2xx/non-2xx final responses retransmitted on T1..T2 until ACK, retransmitted INVITEs absorbed
  (also for a short while after the call ended), CANCEL → 487, re-INVITE → 200 with the same
  SDP, OPTIONS → 200, BYE both ways, outbound INVITE with CANCEL on ring timeout;
* registration: ``Registration`` per ``SipLine``, non-blocking, digest with qop=auth
  (pyVoIP 1.6.8 has no qop and digests the wrong URI), refreshed before expiry;
* media: ``telephony.rtp`` (PCMU or PCMA as negotiated; pyVoIP sends μ-law whatever it
  negotiated and its 8-bit audio path needs ``audioop``), plugged in through ``media_factory``;
  RTP ports are bound from ``rtp_low``..``rtp_high`` and released at the call's end;
* admission: requests from outside ``allow`` get 403; beyond ``max_calls`` INVITEs get 503.

Threads, all bounded: one receives SIP, one runs timers (retransmissions, ring delays,
registration refreshes), one tells ``on_ended`` (so a slow observer never stalls SIP), one per
answered inbound call runs ``on_call`` (at most ``max_calls``), and the media's own per call.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
import logging
import queue
import random
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone hits a circular import in 1.6.8)
from pyVoIP.RTP import RTPProtocol
from pyVoIP.SIP import SIPClient

from telephony import sip_message as sm
from telephony.endpoint import (
    CallDirection,
    CallFailed,
    CallHandler,
    CallObserver,
    CallState,
    Disposition,
    check_transition,
)
from telephony.rtp import NoFreeRtpPort, RtpPortAllocator, RtpSession

log = logging.getLogger(__name__)

PCMU, PCMA = 0, 8
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
DTMF_PT = 101
BUSY_CODES = frozenset({486, 600, 603})
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


@dataclass(frozen=True)
class SipLine:
    """One account on a PBX/SBC: ``registrar`` is "host" or "host:port"."""

    user: str
    password: str
    registrar: str
    domain: str = ""  # the AOR's domain; the registrar host when empty
    auth_user: str = ""  # the digest user name; ``user`` when empty

    @property
    def registrar_address(self) -> tuple[str, int]:
        host, _, port = self.registrar.partition(":")
        return host, int(port or 5060)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain or self.registrar_address[0]}"


@dataclass(frozen=True)
class SipConfig:
    host: str = "127.0.0.1"  # bind address of SIP and RTP
    port: int = 5060  # 0: any free port (tests)
    mode: str = "direct"  # "direct": peers call us, no REGISTER; "registered": register lines
    # Who may send us requests. Loopback only by default, so that an edge started without
    # configuration is not an open relay for toll fraud; production lists its PBX/SBC CIDRs.
    # In registered mode the registrars' addresses are allowed as well.
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    lines: tuple[SipLine, ...] = ()
    advertised_host: str = ""  # in Via/Contact/SDP when the bind address is not reachable
    rtp_low: int = 10000
    rtp_high: int = 20000
    # Accept the caller's RTP from wherever it first comes and answer there (symmetric RTP)
    # instead of only from the SDP address: for phones behind NAT calling without an SBC.
    rtp_latch: bool = False
    max_calls: int = 60  # beyond it new INVITEs get 503 Service Unavailable
    user_agent: str = "hotline12345"
    caller_user: str = "hotline"  # our user part on outbound calls in direct mode
    answer_delay: float = 0.0  # ring time before the 200 (180 Ringing meanwhile)
    register_expires: int = 300
    register_retry: float = 30.0
    t1: float = 0.5  # RFC 3261 timers
    t2: float = 4.0
    ended_call_ttl: float = 32.0  # how long an ended Call-ID still absorbs retransmissions

    def __post_init__(self) -> None:
        if self.mode not in ("direct", "registered"):
            raise ValueError(f"mode must be direct or registered, not {self.mode!r}")
        if self.mode == "registered" and not self.lines:
            raise ValueError("registered mode needs at least one line")


class Media(Protocol):
    """What the edge needs of a call's RTP (``telephony.rtp.RtpSession``)."""

    @property
    def stats(self) -> dict: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def set_remote(self, addr: tuple[str, int]) -> None: ...
    def read_frame(self, timeout: float) -> bytes | None: ...
    def send_audio(self, pcm16: bytes) -> None: ...
    def wait_sent(self, timeout: float | None = None) -> bool: ...
    def clear_audio(self) -> None: ...


MediaFactory = Callable[..., Media]
"""``factory(local_host=, port=, sock=, remote=, payload_type=, dtmf_payload_type=,
on_dtmf=)``, as ``RtpSession``'s constructor."""


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


class _Timers:
    """One thread running callbacks at their time: retransmissions, refreshes, ring delays."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="sip-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> list:
        entry = [fn, False]
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), entry))
            self._cond.notify()
        return entry

    @staticmethod
    def cancel(entry: list | None) -> None:
        if entry is not None:
            entry[1] = True

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if not self._running:
                    return
                _, _, entry = heapq.heappop(self._heap)
            if not entry[1]:
                try:
                    entry[0]()
                except Exception:
                    log.exception("SIP timer callback failed")


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
            server=host, port=port, username="", password="", phone=None, myIP=host, myPort=port
        )
        self._on_datagram = on_datagram
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((self.myIP, self.myPort))
        self.out = self.s
        self.myPort = self.s.getsockname()[1]
        self.NSD = True
        self._thread = threading.Thread(target=self.recv_loop, name="sip-recv", daemon=True)
        self._thread.start()

    def recv_loop(self) -> None:
        while self.NSD:
            try:
                ready, _, _ = select.select([self.s], [], [], 0.2)
                if not ready:
                    continue
                data, source = self.s.recvfrom(65535)
            except (OSError, ValueError):
                if self.NSD:
                    log.exception("SIP socket failed")
                return
            try:
                self._on_datagram(data, source[:2])
            except Exception:
                log.exception("SIP datagram from %s:%s not handled: %r", *source[:2], data[:200])

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        try:
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


@dataclass
class _Offer:
    address: str
    port: int
    payload_type: int
    dtmf_payload_type: int | None


def read_offer(message: sm.LenientSIPMessage) -> tuple[_Offer | None, str]:
    """The remote RTP address and the codec to use from an SDP, or (None, why not)."""
    if message.body_error:
        return None, message.body_error
    if not message.raw_message.body:
        return None, "no SDP offer"
    if "application/sdp" not in message.raw_message.get("Content-Type").lower():
        return None, "body is not application/sdp"
    body = message.body
    audio = [m for m in body.get("m", []) if m["type"] == "audio" and m["port"] != 0]
    if not audio:
        return None, "no audio stream"
    media = audio[0]
    if media["protocol"] != RTPProtocol.AVP:
        return None, f"transport {media['protocol'].value} not supported"
    connections = body.get("c") or []
    if not connections:
        return None, "no c= line"
    chosen = None
    dtmf = None
    for pt in media["methods"]:
        rtpmap = media["attributes"].get(pt, {}).get("rtpmap", {})
        name = rtpmap.get("name", "").lower()
        if chosen is None and pt in ("0", "8"):
            chosen = int(pt)
        if name == "telephone-event" and rtpmap.get("frequency") == "8000" and pt.isdigit():
            dtmf = int(pt)
    if chosen is None:
        return None, "no offered codec is PCMU or PCMA"
    return _Offer(connections[-1]["address"], media["port"], chosen, dtmf), ""


def _sdp(
    *,
    host: str,
    port: int,
    session_id: int,
    version: int,
    payload_types: list[int],
    dtmf: int | None,
) -> bytes:
    pts = payload_types + ([dtmf] if dtmf is not None else [])
    lines = [
        "v=0",
        f"o=hotline {session_id} {version} IN IP4 {host}",
        "s=hotline",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
    ]
    lines += [f"a=rtpmap:{pt} {CODECS[pt]}/8000" for pt in payload_types]
    if dtmf is not None:
        lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def _reachable_host(host: str) -> str:
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


def _now() -> datetime:
    return datetime.now(UTC)


class SipCall:
    """One call on the edge; implements ``telephony.endpoint.Call``."""

    def __init__(
        self,
        *,
        edge: SipEdge,
        call_id: str,
        direction: CallDirection,
        local_uri: str,
        remote_uri: str,
        peer: tuple[str, int],
        rtp_port: int,
        rtp_sock: socket.socket | None,
    ) -> None:
        self.call_id = call_id
        self.direction = direction
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_number = sm.uri_user(remote_uri)
        self.codec = "PCMU"
        self.state = CallState.RINGING
        self.disposition: Disposition | None = None
        self.arrived_at = _now()
        self.answered_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.ended = threading.Event()
        self.rtp_port = rtp_port
        self.payload_type = PCMU
        self.dtmf_payload_type: int | None = None
        self.remote_rtp: tuple[str, int] = ("0.0.0.0", 0)
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
        self._keys: set = set()  # (branch, method) of our requests, dropped at the end

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

    def __repr__(self) -> str:
        return f"<SipCall {self.direction.value} {self.call_id} {self.state.value}>"


@dataclass
class _ClientTx:
    """An outbound INVITE waiting for its final response."""

    branch: str
    cseq: int
    response: sm.LenientSIPMessage | None = None
    final: threading.Event = field(default_factory=threading.Event)


class Registration:
    """Keeps one line registered: REGISTER, answer digest challenges, refresh before expiry,
    retry after failures. Never blocks the caller."""

    def __init__(self, edge: SipEdge, line: SipLine) -> None:
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
        self._timer: list | None = None
        self._expires = edge.config.register_expires
        self._stopped = False

    def start(self) -> None:
        self._send()

    def stop(self) -> None:
        """Unregister, best effort: the edge is closing and will not wait for the answer."""
        self._stopped = True
        _Timers.cancel(self._timer)
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


@dataclass
class _Tombstone:
    expires: float
    responses: dict[int, bytes]
    acks: dict[int, bytes]
    peer: tuple[str, int]


class SipEdge:
    """The ``SipEndpoint`` on pyVoIP. ``SipEdge(SipConfig(...)).start(on_call=, on_ended=)``.

    ``media_factory`` defaults to ``telephony.rtp.RtpSession``; RTP ports come from an
    ``RtpPortAllocator`` over ``config.rtp_low``..``rtp_high``.
    """

    def __init__(self, config: SipConfig, *, media_factory: MediaFactory = RtpSession) -> None:
        self.config = config
        self._media_factory = media_factory
        self._ports = RtpPortAllocator(config.host, config.rtp_low, config.rtp_high)
        self.advertised_host = config.advertised_host or _reachable_host(config.host)
        self._networks = [ipaddress.ip_network(c, strict=False) for c in config.allow]
        self._lock = threading.RLock()
        self._dialogs: dict[str, SipCall] = {}
        self._tombstones: dict[str, _Tombstone] = {}
        self._retx: dict[tuple, dict] = {}
        self._pending: dict[tuple, Callable[[sm.LenientSIPMessage], bool]] = {}
        self._handlers: set[threading.Thread] = set()
        self._observed: queue.Queue[SipCall | None] = queue.Queue()
        self._transport: EdgeSIPClient | None = None
        self._timers: _Timers | None = None
        self._on_call: CallHandler | None = None
        self._on_ended: CallObserver | None = None
        self.registrations: list[Registration] = []
        self._observer: threading.Thread | None = None

    # --- SipEndpoint -------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("the SIP edge is not started")
        return self.config.host, self._transport.myPort

    def start(self, *, on_call: CallHandler, on_ended: CallObserver) -> None:
        if self._transport is not None:
            raise RuntimeError("the SIP edge is already started")
        self._on_call, self._on_ended = on_call, on_ended
        self._timers = _Timers()
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
        self._observer.join(5)
        with self._lock:
            self._retx.clear()
            self._pending.clear()
            self._tombstones.clear()
        self._transport = None

    def dial(self, uri: str, *, ring_timeout: float) -> SipCall:
        if self._transport is None:
            raise RuntimeError("the SIP edge is not started")
        if self.live_calls >= self.config.max_calls:
            raise CallFailed(Disposition.FAILED, "no free call slot")
        line = self.config.lines[0] if self.config.mode == "registered" else None
        target = line.registrar_address if line else sm.uri_hostport(uri)
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
            self._dialogs[call.call_id] = call
        tx = self._send_invite(call, line, authorization=None)
        if tx.final.wait(ring_timeout) and tx.response.status_code in (401, 407) and line:
            tx = self._send_invite(call, line, authorization=tx.response)
            tx.final.wait(ring_timeout)
        if not tx.final.is_set():
            self._cancel(call, tx)
            self._finish(call, Disposition.NO_ANSWER)
            raise CallFailed(Disposition.NO_ANSWER, f"no answer within {ring_timeout}s")
        response = tx.response
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
                call.answered_at = _now()
        return call

    # --- inspection --------------------------------------------------------------------
    @property
    def live_calls(self) -> int:
        with self._lock:
            return len(self._dialogs)

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
        if handler is None:
            self._respond(message, source, 405, "Method Not Allowed", extra=[("Allow", ALLOW)])
            return
        handler(message, source)

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    # --- inbound INVITE ----------------------------------------------------------------
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
        if self.live_calls >= self.config.max_calls:
            self._reject_invite(
                message, source, 503, "Service Unavailable", extra=[("Retry-After", "5")]
            )
            return
        offer, problem = read_offer(message)
        delayed_offer = not message.raw_message.body  # we offer in the 200, they answer in ACK
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
            return
        raw = message.raw_message
        call = SipCall(
            edge=self,
            call_id=call_id,
            direction=CallDirection.INBOUND,
            local_uri=sm.uri_of(raw.get("To")),
            remote_uri=sm.uri_of(raw.get("From")),
            peer=source,
            rtp_port=port,
            rtp_sock=sock,
        )
        local_tag = sm.new_tag()
        call._local_header = f"{raw.get('To')};tag={local_tag}"
        call._remote_header = raw.get("From")
        call._remote_target = sm.uri_of(raw.get("Contact")) or call.remote_uri
        call._route_set = raw.get_all("Record-Route")
        call._invite, call._invite_source = message, source
        with self._lock:
            self._dialogs[call_id] = call
        call._responses[cseq] = self._respond(message, source, 100, "Trying")
        if self.config.answer_delay > 0:
            call._responses[cseq] = self._respond(
                message, source, 180, "Ringing", to_tag=local_tag, extra=self._contact()
            )
            self._timers.call_later(self.config.answer_delay, lambda: self._answer(call, offer))
        else:
            self._answer(call, offer)

    def _answer(self, call: SipCall, offer: _Offer | None) -> None:
        """Send the 200: our answer to their offer, or (``offer`` None) our offer, whose
        answer comes in the ACK; the handler starts once media runs."""
        with call._lock:
            if call.state != CallState.RINGING:
                return
            if offer is not None:
                try:
                    self._start_media(call, offer)
                except Exception:
                    log.exception("no media for %s", call.call_id)
                    self._hangup(call, Disposition.FAILED)
                    return
                body = self._our_sdp(call)
            else:
                body = _sdp(
                    host=self.advertised_host,
                    port=call.rtp_port,
                    session_id=call._session_id,
                    version=call._sdp_version,
                    payload_types=[PCMU, PCMA],
                    dtmf=DTMF_PT,
                )
            message, source = call._invite, call._invite_source
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
            call.answered_at = _now()
        if offer is not None:
            self._start_handler(call)

    def _start_handler(self, call: SipCall) -> None:
        thread = threading.Thread(
            target=self._serve, args=(call,), daemon=True, name=f"call-{call.call_id[:12]}"
        )
        with self._lock:
            self._handlers.add(thread)
        thread.start()

    def _serve(self, call: SipCall) -> None:
        try:
            self._on_call(call)
        except Exception:
            log.exception("call handler failed on %s", call.call_id)
        finally:
            self._hangup(call, Disposition.COMPLETED)
            with self._lock:
                self._handlers.discard(threading.current_thread())

    def _start_media(self, call: SipCall, offer: _Offer) -> None:
        call.payload_type, call.codec = offer.payload_type, CODECS[offer.payload_type]
        call.dtmf_payload_type = offer.dtmf_payload_type
        call.remote_rtp = (offer.address, offer.port)
        media = self._media_factory(
            local_host=self.config.host,
            port=call.rtp_port,
            sock=call._rtp_sock,
            remote=call.remote_rtp,
            payload_type=offer.payload_type,
            dtmf_payload_type=offer.dtmf_payload_type,
            on_dtmf=call._dtmf.put,
            **({"latch": True} if self.config.rtp_latch else {}),
        )
        media.start()
        call._media = media

    def _on_reinvite(
        self, call: SipCall, message: sm.LenientSIPMessage, source: tuple[str, int]
    ) -> None:
        cseq = message.cseq[0]
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
        call._sdp_version += 1
        call._responses[cseq] = self._final_response(
            message,
            source,
            200,
            "OK",
            extra=self._contact() + [("Content-Type", "application/sdp")],
            body=self._our_sdp(call),
        )

    def _our_sdp(self, call: SipCall) -> bytes:
        return _sdp(
            host=self.advertised_host,
            port=call.rtp_port,
            session_id=call._session_id,
            version=call._sdp_version,
            payload_types=[call.payload_type],
            dtmf=call.dtmf_payload_type,
        )

    def _reject_invite(
        self,
        message: sm.LenientSIPMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        extra: list | None = None,
    ) -> None:
        """A final non-2xx to a new INVITE: retransmitted until ACK, remembered for the
        Call-ID so that a retransmitted INVITE gets it again."""
        data = self._final_response(
            message, source, status, reason, to_tag=sm.new_tag(), extra=extra
        )
        with self._lock:
            self._bury(message.call_id, {message.cseq[0]: data}, {}, source)

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

    # --- CANCEL / BYE / OPTIONS --------------------------------------------------------
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
            ("Call-ID", call.call_id),
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
            call.ended_at = _now()
            media, call._media = call._media, None
        if media is not None:
            media.stop()
            call._media = _EndedMedia(media)
        self._ports.release(call.rtp_port)  # closes the socket if no media took it over
        with self._lock:
            self._dialogs.pop(call.call_id, None)
            for key in call._keys:  # our requests' transactions (final responses we sent
                self._pending.pop(key, None)  # keep retransmitting until their ACK)
                self._retx.pop(("req",) + key, None)
            self._bury(call.call_id, dict(call._responses), dict(call._acks), call._peer)
        call.ended.set()
        log.info("call %s ended: %s", call.call_id, disposition.value)
        self._observed.put(call)
        return True

    def _observe(self) -> None:
        """Tells ``on_ended`` about each ended call, off the SIP receive thread."""
        while (call := self._observed.get()) is not None:
            try:
                self._on_ended(call)
            except Exception:
                log.exception("on_ended failed for %s", call.call_id)

    def _bury(self, call_id: str, responses: dict, acks: dict, peer: tuple[str, int]) -> None:
        self._purge_tombstones()
        self._tombstones[call_id] = _Tombstone(
            time.monotonic() + self.config.ended_call_ttl, responses, acks, peer
        )

    def _purge_tombstones(self) -> None:
        now = time.monotonic()
        for call_id in [c for c, t in self._tombstones.items() if t.expires <= now]:
            del self._tombstones[call_id]

    def _live_tombstone(self, call_id: str) -> _Tombstone | None:
        tomb = self._tombstones.get(call_id)
        return tomb if tomb is not None and tomb.expires > time.monotonic() else None

    # --- outbound INVITE ---------------------------------------------------------------
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
        body = _sdp(
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
        if tx.final.is_set() and 200 <= tx.response.status_code < 300:
            self._send_bye(call)  # the 200 crossed our CANCEL

    # --- transactions ------------------------------------------------------------------
    def _client_request(
        self,
        data: bytes,
        address: tuple[str, int],
        key: tuple,
        on_response: Callable[[sm.LenientSIPMessage], bool],
        on_timeout: Callable[[], None] | None,
    ) -> None:
        """Send a request and retransmit it (RFC 3261 timers A/E) until a response comes;
        ``on_response`` returns True when the transaction is over."""

        def give_up() -> None:
            with self._lock:
                self._pending.pop(key, None)
            if on_timeout is not None:
                on_timeout()

        with self._lock:
            self._pending[key] = on_response
        # Armed before sending: on loopback the response can beat the next line.
        self._retransmit(("req",) + key, data, address, on_give_up=give_up)
        self._send(data, address)

    def _on_response(self, message: sm.LenientSIPMessage) -> None:
        branch = sm.header_param(message.raw_message.get("Via"), "branch")
        key = (branch, message.cseq[1])
        with self._lock:
            handler = self._pending.get(key)
            self._retx.pop(("req",) + key, None)
        if handler is None:
            self._absorb_response(message)
            return
        if handler(message):
            with self._lock:
                self._pending.pop(key, None)

    def _absorb_response(self, message: sm.LenientSIPMessage) -> None:
        """A 2xx retransmitted after the call ended still gets its ACK."""
        with self._lock:
            tomb = self._live_tombstone(message.call_id)
        if tomb is not None and (ack := tomb.acks.get(message.cseq[0])):
            self._send(ack, tomb.peer)

    def _retransmit(
        self,
        key: tuple,
        data: bytes,
        address: tuple[str, int],
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        t1 = self.config.t1
        entry = {"data": data, "interval": t1, "deadline": time.monotonic() + 64 * t1}

        def tick() -> None:
            with self._lock:
                if self._retx.get(key) is not entry:
                    return
                if time.monotonic() >= entry["deadline"]:
                    del self._retx[key]
                    expired = True
                else:
                    expired = False
            if expired:
                if on_give_up is not None:
                    on_give_up()
                return
            self._send(data, address)
            entry["interval"] = min(entry["interval"] * 2, self.config.t2)
            self._timers.call_later(entry["interval"], tick)

        with self._lock:
            self._retx[key] = entry
        self._timers.call_later(t1, tick)

    # --- helpers -----------------------------------------------------------------------
    def _respond(
        self,
        message: sm.LenientSIPMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        *,
        to_tag: str = "",
        extra: list | None = None,
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

    def _final_response(
        self,
        message: sm.LenientSIPMessage,
        source: tuple[str, int],
        status: int,
        reason: str,
        *,
        to_tag: str = "",
        extra: list | None = None,
        body: bytes = b"",
        on_give_up: Callable[[], None] | None = None,
    ) -> bytes:
        """A final response to an INVITE, retransmitted until its ACK (RFC 3261 timers G/H
        and 13.3.1.4); armed before sending, since the ACK can beat the next line."""
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
        target = sm.via_target(raw.get("Via"), source)
        self._retransmit(("ack", message.call_id, message.cseq[0]), data, target, on_give_up)
        self._send(data, target)
        return data

    def _common_headers(self) -> list[tuple[str, str]]:
        return [("Server", self.config.user_agent)]

    def _contact(self, user: str = "hotline") -> list[tuple[str, str]]:
        return [("Contact", f"<sip:{user}@{self.advertised_host}:{self.address[1]}>")]

    @staticmethod
    def _local_tag(call: SipCall) -> str:
        return sm.header_param(call._local_header, "tag")

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.send(data, address)


class _EndedMedia:
    """What a call reads after it ended: what was received and not read yet, then None."""

    def __init__(self, media: Media) -> None:
        self.stats = media.stats
        self._media = media

    def read_frame(self, timeout: float) -> bytes | None:
        frame = self._media.read_frame(0)
        return frame or None

    def send_audio(self, pcm: bytes) -> None:
        pass

    def wait_sent(self, timeout: float | None = None) -> bool:
        return False

    def clear_audio(self) -> None:
        pass

    def set_remote(self, addr: tuple[str, int]) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
