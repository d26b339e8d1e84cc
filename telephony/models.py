"""Call records (CDR) and outbound callback attempts.

Telephony knows nothing of tickets: a ticket is referred to by its table name only
("ticket.id"), so the platform can link a call to the ticket it created without this
package importing the tickets domain.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type
from telephony.endpoint import CallDirection, Disposition


class TranscribedBy(StrEnum):
    live = "live"  # decoded while the caller spoke
    offline = "offline"  # decoded from the recording after the call (live ASR was full)
    none = "none"  # not (yet) transcribed


class QueueOutcome(StrEnum):
    """How a call left the queue of operators (the ACD), or why it never joined it."""

    agent = "agent"  # an operator answered it
    robot = "robot"  # the voice-intake robot took it by design (ACD disabled, a robot line)
    overflowed = "overflowed"  # the overflow rules sent it to the robot (overflow_reason)
    callback_requested = "callback_requested"  # the caller pressed the key: a callback task
    abandoned = "abandoned"  # the caller hung up while waiting
    refused = "refused"  # not queued at all (the edge was full, the call was rejected)
    # The platform lost it while it waited: its SIP edge died (crash recovery closes it). Not
    # the caller's abandon — the figures must not blame the caller for the platform's fault.
    lost = "lost"


class CallRecord(SQLModel, table=True):
    """One row per call, answered or not, keyed by its SIP Call-ID."""

    __tablename__ = "call_record"
    __table_args__ = (Index("ix_call_record_arrived_id", "arrived_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(max_length=255, unique=True, index=True)
    direction: CallDirection = Field(sa_type=enum_type(CallDirection))
    from_uri: str = Field(default="", max_length=500)
    to_uri: str = Field(default="", max_length=500)
    caller_number: str = Field(default="", max_length=64, index=True)  # "" when anonymous
    codec: str | None = Field(default=None, max_length=16)
    arrived_at: datetime = Field(sa_type=UTCDateTime)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    wait_s: float | None = None  # arrival to answer (or to the end, when never answered)
    talk_s: float | None = None  # answer to end
    disposition: Disposition | None = Field(default=None, sa_type=enum_type(Disposition))
    end_reason: str | None = Field(default=None, max_length=16)  # how the report ended
    recording_path: str | None = Field(default=None, max_length=500)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    # The `hotline sip` process that answered the call (SipEdgeRecord.id): a call left open
    # by an edge that died is found by it and closed by crash recovery.
    edge_id: str | None = Field(default=None, max_length=36, index=True)
    # The running text of live ASR; `live_seq` grows with every change, so a reader in
    # another process (the web's event stream) sees each change once.
    live_text: str = Field(default="", max_length=20000)
    live_seq: int = 0
    transcript: str | None = Field(default=None, max_length=20000)  # final, once attached
    transcribed_by: TranscribedBy = Field(
        default=TranscribedBy.none, sa_type=enum_type(TranscribedBy)
    )
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    # ---- the queue of operators (issue 17): what the contact-centre figures are made of
    # (hotline.calls.acd_figures has each figure's definition). All NULL for a call that
    # never reached the queue's decision (outbound calls, calls from before seats).
    queued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # joined the queue
    # Left it: an agent answered, the robot took it, a callback was asked for, hung up.
    queue_left_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    queue_outcome: QueueOutcome | None = Field(default=None, sa_type=enum_type(QueueOutcome))
    overflow_reason: str | None = Field(default=None, max_length=32)  # waited, queue_long, ...
    # The operator who answered (accounts' user.id: telephony sits below accounts, no FK).
    agent_user_id: int | None = Field(default=None, index=True)
    agent_extension: str | None = Field(default=None, max_length=16)
    agent_answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    hold_s: float | None = None  # seconds the caller was on hold during the agent's talk
    wrap_up_s: float | None = None  # the agent's after-call work for this call
    transfers: int | None = None  # blind or attended transfers made by the agent
    rings: int | None = None  # agents rung for this call (1 = the first one answered)
    priority: int | None = None  # the queue priority it had (higher goes first)
    skills: str | None = Field(default=None, max_length=200)  # comma list it needed
    # A bridged call's two-speaker transcript: turns {speaker: caller|operator, start_s,
    # end_s, text}, times from the answer; written live, final at the end. NULL for a call
    # no operator took (the robot's: its words are ``transcript``).
    dialogue: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )
    # What the operator's console controls of the bridged call stand at (JSON, written by
    # the edge that holds it: hold, a transfer under way and its state, a three-way, who
    # listens in); "" when none. ``control_seq`` grows with every change, as ``live_seq``.
    control: str = Field(default="", max_length=2000)
    control_seq: int = 0
    # A caller who hung up in the queue is called back (漏话回拨): the attempts made from the
    # missed-calls list, the last one's time, who made it and how it went.
    callback_attempts: int = 0
    called_back_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    called_back_by: int | None = None  # accounts' user.id
    callback_outcome: str | None = Field(default=None, max_length=16)  # reached, no_answer


class SipEdgeRecord(SQLModel, table=True):
    """One `hotline sip` process: written at its start, its heartbeat refreshed while it
    lives; `dead_at` is set when it stops or when crash recovery has closed its calls."""

    __tablename__ = "sip_edge"

    id: str = Field(primary_key=True, max_length=36)  # a uuid4, new at every start
    host: str = Field(max_length=255, index=True)
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)
    dead_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CallbackOutcome(StrEnum):
    satisfied = "satisfied"
    basically_satisfied = "basically_satisfied"
    dissatisfied = "dissatisfied"
    no_answer = "no_answer"
    busy = "busy"
    failed = "failed"
    no_input = "no_input"  # answered, but no valid key
    cancelled = "cancelled"  # the ticket no longer waited for a callback when it came due


ANSWERED_OUTCOMES = frozenset(
    {CallbackOutcome.satisfied, CallbackOutcome.basically_satisfied, CallbackOutcome.dissatisfied}
)


class CallbackAttempt(SQLModel, table=True):
    """One try at the satisfaction callback (回访) of a ticket. `round` is the ticket's
    reopen count when the callback became due, so a reopened ticket that is reviewed again
    gets a new round of attempts."""

    __tablename__ = "callback_attempt"
    __table_args__ = (
        UniqueConstraint("ticket_id", "round", "attempt_no", name="uq_callback_attempt"),
        Index("ix_callback_attempt_due", "started_at", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    round: int = 0
    attempt_no: int = 1
    number: str = Field(max_length=32)  # dialled
    due_at: datetime = Field(sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # claimed
    call_id: str | None = Field(default=None, max_length=255)
    outcome: CallbackOutcome | None = Field(default=None, sa_type=enum_type(CallbackOutcome))
    detail: str | None = Field(default=None, max_length=500)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


# ---------------------------------------------------------------- schemas


class CallRead(SQLModel):
    id: int
    call_id: str
    direction: CallDirection
    from_uri: str
    to_uri: str
    caller_number: str
    codec: str | None
    arrived_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    wait_s: float | None
    talk_s: float | None
    disposition: Disposition | None
    end_reason: str | None
    has_recording: bool
    ticket_id: int | None
    live_text: str
    live_seq: int
    transcript: str | None
    transcribed_by: TranscribedBy


class CallbackAttemptRead(SQLModel):
    id: int
    ticket_id: int
    round: int
    attempt_no: int
    number: str
    due_at: datetime
    started_at: datetime | None
    call_id: str | None
    outcome: CallbackOutcome | None
    detail: str | None
    ended_at: datetime | None


# ---------------------------------------------------------------- seats (operators' phones)


class Seat(SQLModel, table=True):
    """A SIP extension an operator's phone registers with (``telephony.sip_registrar``).
    Only the digest hashes of its password are kept (H(ext:realm:password) in MD5 and in
    SHA-256): they change with the realm, so a new realm needs new passwords."""

    __tablename__ = "seat"

    id: int | None = Field(default=None, primary_key=True)
    extension: str = Field(max_length=16, unique=True, index=True)
    display_name: str = Field(default="", max_length=100)
    realm: str = Field(max_length=100)
    ha1_md5: str = Field(max_length=32)
    ha1_sha256: str = Field(max_length=64)
    enabled: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime)


class SeatRegistration(SQLModel, table=True):
    """One registered Contact of a seat: where its phone is reached (``received_*``, the
    address its REGISTER came from, for phones behind NAT) until ``expires_at``."""

    __tablename__ = "seat_registration"
    __table_args__ = (
        UniqueConstraint("extension", "contact", name="uq_seat_registration_contact"),
        Index("ix_seat_registration_extension_expires", "extension", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    extension: str = Field(max_length=16)
    contact: str = Field(max_length=500)
    received_host: str = Field(max_length=64)
    received_port: int
    expires_at: datetime = Field(sa_type=UTCDateTime)
    call_id: str = Field(max_length=255)
    cseq: int
    user_agent: str = Field(default="", max_length=255)
    edge_id: str = Field(default="", max_length=36)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class CallCommandKind(StrEnum):
    """What an operator (or a supervisor) asks of a bridged call from the console."""

    hold = "hold"
    unhold = "unhold"
    transfer = "transfer"  # blind: ring the target, the caller goes on to it
    consult = "consult"  # attended: the operator talks to the target first
    complete = "complete"  # the consulted target takes the caller
    three_way = "three_way"  # the consulted target joins caller and operator (三方通话)
    cancel = "cancel"  # the transfer or consultation is given up: back to the caller
    monitor = "monitor"  # a supervisor's seat listens in silently


class CallCommandState(StrEnum):
    pending = "pending"  # waiting for the edge that holds the call
    running = "running"  # taken by that edge
    done = "done"
    failed = "failed"  # with ``detail`` saying why


class CallCommand(SQLModel, table=True):
    """A console's request to the SIP edge that holds a bridged call. The web process writes
    it and rings the doorbell; the edge whose call it is takes it (pending -> running by
    compare-and-set, so two edges or two wake-ups never run one twice), carries it out and
    writes the result. A command nobody takes within its deadline is failed by the next
    look at it (``hotline.calls.call_control``)."""

    __tablename__ = "call_command"
    __table_args__ = (Index("ix_call_command_state_call", "state", "call_id"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(max_length=255, index=True)
    edge_id: str | None = Field(default=None, max_length=36)  # the edge that held the call
    kind: CallCommandKind = Field(sa_type=enum_type(CallCommandKind))
    target: str = Field(default="", max_length=64)  # a seat extension or an outside number
    requested_by: int | None = None  # accounts' user.id (no FK: telephony is below accounts)
    requested_at: datetime = Field(sa_type=UTCDateTime)
    state: CallCommandState = Field(
        default=CallCommandState.pending, sa_type=enum_type(CallCommandState)
    )
    detail: str = Field(default="", max_length=500)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# ------------------------------------------- Kamailio's registrar tables (production seats)


class KamailioLocation(SQLModel, table=True):
    """A seat's phone registered with Kamailio (usrloc, ``db_mode`` 1: every change written
    through), in Kamailio 5.6's own ``location`` schema (version 9) so that its ``usrloc``
    reads and writes it unchanged. Two departures, both set in deploy/kamailio/kamailio.cfg:
    ``expires`` and ``last_modified`` are epoch seconds (usrloc ``expires_type`` 1), because
    Kamailio writes a timestamp without zone in its own local time; and ``username`` alone
    is the seat (``use_domain`` 0). ``received`` is "sip:host:port" of a phone behind NAT.
    Server defaults are Kamailio's: it leaves out the columns it does not use."""

    __tablename__ = "location"
    __table_args__ = (
        UniqueConstraint("ruid", name="location_ruid_idx"),
        Index("location_account_contact_idx", "username", "domain", "contact"),
        Index("location_expires_idx", "expires"),
        Index("location_connection_idx", "server_id", "connection_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ruid: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    username: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    domain: str | None = Field(default=None, max_length=64)
    contact: str = Field(default="", max_length=512, sa_column_kwargs={"server_default": ""})
    received: str | None = Field(default=None, max_length=128)
    path: str | None = Field(default=None, max_length=512)
    expires: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    q: float = Field(default=1.0, sa_column_kwargs={"server_default": "1.0"})
    callid: str = Field(
        default="Default-Call-ID",
        max_length=255,
        sa_column_kwargs={"server_default": "Default-Call-ID"},
    )
    cseq: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    last_modified: int = Field(
        default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    flags: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    cflags: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    user_agent: str = Field(default="", max_length=255, sa_column_kwargs={"server_default": ""})
    socket: str | None = Field(default=None, max_length=64)
    methods: int | None = None
    instance: str | None = Field(default=None, max_length=255)
    reg_id: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    server_id: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    connection_id: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    keepalive: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    partition: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class KamailioVersion(SQLModel, table=True):
    """Kamailio's table of table versions, which its database modules check at start
    (``location`` 9, ``subscriber`` 7 in 5.6); named by kamailio.cfg's ``version_table`` so
    that a table called just ``version`` is not taken in the platform's database."""

    __tablename__ = "kamailio_version"

    table_name: str = Field(primary_key=True, max_length=32)
    table_version: int = 0
