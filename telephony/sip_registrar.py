"""The edge as registrar for operators' phones (seats): REGISTER as RFC 3261 §10.3 has it.

A seat is an extension a softphone or desk phone registers with, under digest authentication
(RFC 7616: MD5 and SHA-256 with qop=auth; each offered algorithm gets a challenge of its own,
in the configured order of preference, RFC 8760).
Nothing about a challenge is stored: the nonce is a timestamp and its HMAC under the edge's
secret, so any edge with the same secret verifies it, and an old one that verifies gets
``stale=true`` (the phone retries with the new nonce without asking its user). Replays of a
captured response are bounded by the nonce's lifetime, which is what a stateless registrar
can offer; the credential itself never crosses the wire.

Unknown and disabled seats and a wrong password are all answered 403 after the challenge, so
that the answers do not tell which extensions exist; a source that fails ``max_failures``
times within ``failure_window_s`` gets 403 without a look at its credentials until
``lockout_s`` has passed (a password guesser learns nothing for that while).

Bindings (Contact, the address the REGISTER came from, expiry) live behind ``SeatStore``: the
in-memory ``MemorySeatStore`` here for tests and the single process, the database one in
``hotline.calls.seats``. ``seat_target`` asks the store for the URI the edge dials: the
newest binding, where a phone behind NAT is reached at the address its REGISTER came from,
which rides in the URI as Kamailio's nathelper carries it (``;alias=host~port~1``) so that a
URI taken from one edge's store can be dialled by another; or, where the phones register
with Kamailio instead (production), ``proxy_uri``: the seat at the proxy, which looks it up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from telephony import sip_message as sm
from telephony.sip_registration import parse_challenge

log = logging.getLogger(__name__)

ALGORITHMS = ("SHA-256", "MD5")  # what the registrar can verify
# What it offers unless told otherwise: MD5 alone. baresip 1.0 (libre) gives up on a 401 that
# holds any challenge but MD5, whatever their order, and sipp 3.6 answers only the first one;
# phones that know SHA-256 get it where the admin lists it (then first, as RFC 8760 wants).
DEFAULT_ALGORITHMS = ("MD5",)
EXTENSION = re.compile(r"^\d{2,16}$")
DEFAULT_EXPIRES = 3600  # RFC 3261 §10.2.1.1: a REGISTER that names no expiry asks an hour


def seat_ha1(extension: str, realm: str, password: str) -> tuple[str, str]:
    """The stored secrets of a seat: H(user:realm:password) in MD5 and SHA-256 (RFC 7616
    §3.4.2), so that the password itself is never kept."""
    text = f"{extension}:{realm}:{password}".encode()
    return hashlib.md5(text).hexdigest(), hashlib.sha256(text).hexdigest()


@dataclass(frozen=True)
class SeatCredentials:
    extension: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    enabled: bool = True


@dataclass(frozen=True)
class SeatBinding:
    """One registered Contact of a seat. ``received``: where its REGISTER came from (the
    phone's NAT mapping), the address calls to it are sent to."""

    extension: str
    contact: str
    received: tuple[str, int]
    expires_at: datetime
    call_id: str
    cseq: int
    updated_at: datetime
    user_agent: str = ""
    edge_id: str = ""


class SeatStore(Protocol):
    """Where seats' credentials come from and their bindings go."""

    def credentials(self, extension: str) -> SeatCredentials | None: ...

    def save_binding(self, binding: SeatBinding) -> None:
        """Add or refresh the binding of (extension, contact)."""

    def remove_binding(self, extension: str, contact: str) -> None: ...

    def remove_bindings(self, extension: str) -> None: ...

    def bindings(self, extension: str, now: datetime) -> list[SeatBinding]:
        """The bindings not expired at ``now``, newest first."""

    def dial_target(self, extension: str, now: datetime) -> str | None:
        """The URI that rings the seat now (None: no phone is registered for it). The
        store decides, because it knows where the phones register: with this edge (the
        newest binding's ``dial_uri``) or with a registrar proxy in front."""


class MemorySeatStore:
    """``SeatStore`` in this process's memory (tests, and an edge without a database)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seats: dict[str, SeatCredentials] = {}
        self._bindings: dict[tuple[str, str], SeatBinding] = {}

    def add_seat(
        self, extension: str, password: str, *, realm: str, enabled: bool = True
    ) -> SeatCredentials:
        if not EXTENSION.match(extension):
            raise ValueError(f"an extension is 2 to 16 digits, not {extension!r}")
        md5, sha256 = seat_ha1(extension, realm, password)
        seat = SeatCredentials(extension, realm, md5, sha256, enabled)
        with self._lock:
            self._seats[extension] = seat
        return seat

    def disable(self, extension: str) -> None:
        with self._lock:
            self._seats[extension] = replace(self._seats[extension], enabled=False)
            for key in [k for k in self._bindings if k[0] == extension]:
                del self._bindings[key]

    def credentials(self, extension: str) -> SeatCredentials | None:
        with self._lock:
            return self._seats.get(extension)

    def save_binding(self, binding: SeatBinding) -> None:
        with self._lock:
            self._bindings[(binding.extension, binding.contact)] = binding

    def remove_binding(self, extension: str, contact: str) -> None:
        with self._lock:
            self._bindings.pop((extension, contact), None)

    def remove_bindings(self, extension: str) -> None:
        with self._lock:
            for key in [k for k in self._bindings if k[0] == extension]:
                del self._bindings[key]

    def bindings(self, extension: str, now: datetime) -> list[SeatBinding]:
        with self._lock:
            found = [b for b in self._bindings.values() if b.extension == extension]
        found = [b for b in found if b.expires_at > now]
        return sorted(found, key=lambda b: b.updated_at, reverse=True)

    def dial_target(self, extension: str, now: datetime) -> str | None:
        found = self.bindings(extension, now)
        return dial_uri(found[0]) if found else None


@dataclass(frozen=True)
class Answer:
    """The response to one REGISTER: status, reason and the headers it adds."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def dial_uri(binding: SeatBinding) -> str:
    """The URI that rings this binding: its Contact, with ``;alias=host~port~1`` when the
    REGISTER came from elsewhere than the Contact names (NAT)."""
    try:
        named = sm.uri_hostport(binding.contact)
    except ValueError:
        named = ("", 0)
    if named == binding.received:
        return binding.contact
    host, port = binding.received
    return f"{binding.contact};alias={host}~{port}~1"


def split_alias(uri: str) -> tuple[str, tuple[str, int] | None]:
    """A URI without its ``;alias=host~port~transport`` parameter, and the address the
    parameter names (None: there is none, send where the URI says)."""
    match = re.search(r";alias=([^;?>~]+)~(\d+)(?:~\d+)?", uri)
    if match is None:
        return uri, None
    return uri[: match.start()] + uri[match.end() :], (match.group(1), int(match.group(2)))


class Registrar:
    """Answers REGISTERs for the seats in ``store``. ``handle`` is called off the SIP
    receive thread (it may wait for the database); it is safe from several threads.

    ``secret``: the HMAC key of the nonces (edges that share it verify each other's);
    ``wall``: the time bindings expire by; ``seconds``: the time of nonces (epoch seconds,
    so that edges agree on a nonce's age) and of throttling.
    """

    def __init__(
        self,
        store: SeatStore,
        *,
        realm: str,
        secret: bytes,
        min_expires: int = 60,
        max_expires: int = 3600,
        nonce_ttl_s: float = 300.0,
        max_failures: int = 5,
        failure_window_s: float = 60.0,
        lockout_s: float = 300.0,
        max_bindings: int = 10,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        edge_id: str = "",
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        seconds: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the registrar needs a secret to sign its nonces")
        if not algorithms or set(algorithms) - set(ALGORITHMS):
            raise ValueError(f"digest algorithms are some of {ALGORITHMS}, not {algorithms}")
        self.algorithms = algorithms
        self.store = store
        self.realm = realm
        self.min_expires, self.max_expires = min_expires, max_expires
        self.nonce_ttl_s = nonce_ttl_s
        self.max_failures, self.failure_window_s, self.lockout_s = (
            max_failures,
            failure_window_s,
            lockout_s,
        )
        self.max_bindings = max_bindings
        self.edge_id = edge_id
        self._secret = secret
        self._wall, self._clock = wall, seconds
        self._lock = threading.Lock()
        # source host -> times of its recent failures; and until when it is locked out.
        # Bounded: the oldest source is forgotten first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked: dict[str, float] = {}
        self.rejected = 0  # REGISTERs refused for credentials or lock-out since the start

    # --- nonces ------------------------------------------------------------------------
    def nonce(self) -> str:
        stamp = f"{int(self._clock()):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), "sha256").hexdigest()[:32]

    def _nonce_state(self, nonce: str) -> str:
        """Whether a nonce is "fresh", "stale" (ours but old) or "bad" (not ours)."""
        stamp, _, mac = nonce.partition(".")
        if not stamp or not _same(mac, self._sign(stamp)):
            return "bad"
        try:
            age = self._clock() - int(stamp, 16)
        except ValueError:
            return "bad"
        return "fresh" if -5 <= age <= self.nonce_ttl_s else "stale"

    def challenge(self, *, stale: bool = False) -> Answer:
        nonce = self.nonce()
        headers = tuple(
            (
                "WWW-Authenticate",
                f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", '
                f"algorithm={algorithm}" + (", stale=true" if stale else ""),
            )
            for algorithm in self.algorithms
        )
        return Answer(401, "Unauthorized", headers)

    # --- throttling ----------------------------------------------------------------------
    def _locked_out(self, host: str) -> bool:
        with self._lock:
            until = self._locked.get(host)
            if until is None:
                return False
            if until > self._clock():
                return True
            del self._locked[host]
            self._failures.pop(host, None)
            return False

    def _failed(self, host: str) -> None:
        now = self._clock()
        with self._lock:
            times = self._failures.pop(host, None) or deque()
            times.append(now)
            while times and times[0] < now - self.failure_window_s:
                times.popleft()
            self._failures[host] = times
            while len(self._failures) > 10000:
                self._failures.popitem(last=False)
            if len(times) >= self.max_failures:
                self._locked[host] = now + self.lockout_s
                log.warning(
                    "REGISTER from %s locked out for %ss after %s failed digests",
                    host,
                    self.lockout_s,
                    len(times),
                )

    def _refuse(self, host: str, why: str, extension: str) -> Answer:
        self._failed(host)
        with self._lock:
            self.rejected += 1
        log.warning("REGISTER for seat %r from %s refused: %s", extension, host, why)
        return Answer(403, "Forbidden")

    # --- REGISTER ------------------------------------------------------------------------
    def handle(self, message: sm.LenientSIPMessage, source: tuple[str, int]) -> Answer:
        raw = message.raw_message
        host = source[0]
        extension = sm.uri_user(sm.uri_of(raw.get("To")))
        if self._locked_out(host):
            with self._lock:
                self.rejected += 1
            return Answer(403, "Forbidden")
        authorization = raw.get("Authorization")
        if not authorization:
            return self.challenge()
        params = parse_challenge(authorization)
        state = self._nonce_state(params.get("nonce", ""))
        if state == "bad":
            return self.challenge()
        seat = self.store.credentials(extension) if EXTENSION.match(extension) else None
        if seat is None or not seat.enabled:
            return self._refuse(host, "no such seat, or disabled", extension)
        if params.get("username") != extension or params.get("realm") != self.realm:
            return self._refuse(host, "credentials for another seat or realm", extension)
        if not self._digest_ok(seat, params):
            return self._refuse(host, "wrong password", extension)
        if state == "stale":
            return self.challenge(stale=True)
        return self._bind(message, source, extension)

    def _digest_ok(self, seat: SeatCredentials, params: dict[str, str]) -> bool:
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return False
        if algorithm == "MD5":
            ha1, digest = seat.ha1_md5, "md5"
        elif algorithm == "SHA-256":
            ha1, digest = seat.ha1_sha256, "sha256"
        else:
            return False

        def h(text: str) -> str:
            return hashlib.new(digest, text.encode()).hexdigest()

        nonce, uri = params.get("nonce", ""), params.get("uri", "")
        ha2 = h(f"REGISTER:{uri}")
        # qop=auth is what we offer, so an answer without it (RFC 2069) is refused: with it
        # the client's cnonce goes into the hash too, which a chosen-nonce attack needs.
        if params.get("qop", "").lower() != "auth" or not params.get("cnonce"):
            return False
        expected = h(f"{ha1}:{nonce}:{params.get('nc', '')}:{params['cnonce']}:auth:{ha2}")
        return _same(expected, params.get("response", "").lower())

    def _bind(
        self, message: sm.LenientSIPMessage, source: tuple[str, int], extension: str
    ) -> Answer:
        raw = message.raw_message
        now = self._wall()
        header_expires = raw.get("Expires").strip()
        if header_expires and not header_expires.isdigit():
            return Answer(400, "Bad Request", (("Warning", '399 hotline "bad Expires"'),))
        contacts = raw.get_all("Contact")
        if any(c.strip() == "*" for c in contacts):
            if len(contacts) != 1 or header_expires != "0":
                warning = '399 hotline "* needs Expires: 0"'
                return Answer(400, "Bad Request", (("Warning", warning),))
            self.store.remove_bindings(extension)
            log.info("seat %s: every binding removed", extension)
            return Answer(200, "OK")
        call_id, cseq = message.call_id, message.cseq[0]
        current = {b.contact: b for b in self.store.bindings(extension, now)}
        wanted: list[tuple[str, int]] = []
        for contact in contacts:
            uri = sm.uri_of(contact)
            try:
                sm.uri_hostport(uri)
            except ValueError:
                return Answer(400, "Bad Request", (("Warning", '399 hotline "bad Contact"'),))
            param = sm.header_param(contact, "expires")
            value = param or header_expires or str(DEFAULT_EXPIRES)
            if not value.isdigit():
                return Answer(400, "Bad Request", (("Warning", '399 hotline "bad expires"'),))
            expires = int(value)
            if 0 < expires < self.min_expires:
                return Answer(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
            wanted.append((uri, min(expires, self.max_expires)))
        for uri, _ in wanted:
            known = current.get(uri)
            if known is not None and known.call_id == call_id and cseq < known.cseq:
                # RFC 3261 §10.3 step 7: an older request arriving late changes nothing.
                return Answer(500, "Server Internal Error", (("Retry-After", "1"),))
        added = [uri for uri, expires in wanted if expires and uri not in current]
        if len(current) + len(added) > self.max_bindings:
            return Answer(403, "Forbidden", (("Warning", '399 hotline "too many contacts"'),))
        user_agent = raw.get("User-Agent")[:255]
        for uri, expires in wanted:
            if expires == 0:
                self.store.remove_binding(extension, uri)
                current.pop(uri, None)
                log.info("seat %s: %s unregistered", extension, uri)
                continue
            binding = SeatBinding(
                extension=extension,
                contact=uri,
                received=source,
                expires_at=now + timedelta(seconds=expires),
                call_id=call_id,
                cseq=cseq,
                updated_at=now,
                user_agent=user_agent,
                edge_id=self.edge_id,
            )
            self.store.save_binding(binding)
            if uri not in current:
                log.info("seat %s registered at %s from %s:%s", extension, uri, *source)
            current[uri] = binding
        headers = tuple(
            ("Contact", f"<{b.contact}>;expires={_remaining(b, now)}")
            for b in sorted(current.values(), key=lambda b: b.updated_at, reverse=True)
        )
        return Answer(200, "OK", headers)


def _same(a: str, b: str) -> bool:
    """Constant-time equality of what a phone sent (any text, non-ASCII too) and ours."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _remaining(binding: SeatBinding, now: datetime) -> int:
    return max(0, int((binding.expires_at - now).total_seconds()))


def seat_target(store: SeatStore, extension: str, now: datetime) -> str | None:
    """The URI that rings ``extension`` now (None: no phone is registered for it): its
    newest unexpired binding, or the registrar proxy's URI for it (``SeatStore.dial_target``)."""
    return store.dial_target(extension, now)


def proxy_uri(extension: str, proxy: tuple[str, int]) -> str:
    """The URI that rings a seat through the registrar proxy at ``proxy`` (Kamailio looks
    the extension up in its usrloc). The ``;alias=`` sends the INVITE to the proxy in either
    mode (``dial`` strips it), never to a line's registrar."""
    host, port = proxy
    shown = f"[{host}]" if ":" in host else host
    return f"sip:{extension}@{shown}:{port};alias={host}~{port}~1"
