"""What the SIP edge is configured with: ``SipConfig``, its ``SipLine`` accounts, and the
methods it answers (``ALLOW``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telephony.sip_registrar import SeatStore

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER"  # REFER: inside a call (sip_refer)


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
    # Accept the caller's RTP from where its first packet comes and answer there (symmetric
    # RTP, RFC 4961, as SBCs do) instead of only from the SDP address: for phones behind NAT
    # calling without an SBC. Only the SDP's host or the INVITE's source host can be latched
    # to; False: strictly the SDP's address (other sources are dropped and logged).
    rtp_latch: bool = True
    max_calls: int = 60  # beyond it new INVITEs get 503 Service Unavailable
    user_agent: str = "hotline12345"
    caller_user: str = "hotline"  # our user part on outbound calls in direct mode
    answer_delay: float = 0.0  # ring time before the 200 (180 Ringing meanwhile)
    register_expires: int = 300
    register_retry: float = 30.0
    t1: float = 0.5  # RFC 3261 timers
    t2: float = 4.0
    ended_call_ttl: float = 32.0  # how long an ended Call-ID still absorbs retransmissions
    # Whether a call key (``Call.call_id``) is already held by a call record: a Call-ID an
    # earlier run of this edge (or another edge) took gets ``~2``… here too (CallKeys).
    call_key_known: Callable[[str], bool] | None = None
    # Operators' phones (seats) register here: None answers REGISTER 405 (the edge is no
    # registrar). The nonce secret signs digest challenges; edges that share it accept each
    # other's nonces; empty: a random one for this process.
    seats: SeatStore | None = None
    seat_realm: str = "hotline12345"
    register_min_expires: int = 60
    register_max_expires: int = 3600
    registrar_secret: str = ""
    # Offered in this order of preference, one challenge each (RFC 8760): "SHA-256", "MD5".
    # MD5 alone by default: baresip 1.0 refuses a 401 with any other challenge in it.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    edge_id: str = ""  # written with each binding: which edge the phone registered with
    # Bridged calls' media: "own" relays it here (``telephony.bridge``); "rtpengine" puts the
    # phones on the rtpengine whose ng listener is ``rtpengine_ng`` ("host:port"), the edge
    # reading taps for the recording and transcript (``telephony.media_relay``).
    media_relay: str = "own"
    rtpengine_ng: str = ""
    # A bridged call whose phone sent no RTP for this long (a caller gone without a BYE) is
    # hung up on both sides (``telephony.media_timeout``); 0: never. A held leg is exempt.
    # `hotline sip` sets it from ``TelephonySettings.rtp_timeout_s`` (60 s by default).
    rtp_timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("direct", "registered"):
            raise ValueError(f"mode must be direct or registered, not {self.mode!r}")
        if self.mode == "registered" and not self.lines:
            raise ValueError("registered mode needs at least one line")
        if self.media_relay not in ("own", "rtpengine"):
            raise ValueError(f"media_relay must be own or rtpengine, not {self.media_relay!r}")
        if self.media_relay == "rtpengine" and not self.rtpengine_ng:
            raise ValueError("media_relay rtpengine needs rtpengine_ng (host:port)")
        if self.rtp_timeout_s < 0:
            raise ValueError("rtp_timeout_s must be >= 0 (0: no media timeout)")
