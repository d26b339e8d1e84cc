"""Phone calls into the ticket platform: the `FlowHooks` the SIP edge runs, the call record
(CDR), transcripts, the status line and satisfaction callbacks (回访).

An answered call becomes a ticket at once (status intake, idempotent by SIP Call-ID); the
caller's words reach it when the report ends — from live ASR when it had room for the
call, else from the recording, transcribed offline by the Celery task
`calls.transcribe_recording` — and only then is it dispatched by the rules. Every step is
idempotent: a repeated hook or a retried task finds the transcript attached and the ticket
no longer in intake, and does nothing twice.

Nothing here runs in a call's thread for long: the ticket is one short write; partial
transcripts go to a writer thread; the end of a call is finished in a small pool.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from asr.config import AsrConfig
from asr.live import DecodeSlots, LiveTranscriber, LiveTranscriptUnavailable
from asr.offline import read_wav, transcribe_wav
from asr.recognizer import AsrError, Recognizer
from dispatch import reference
from dispatch import service as dispatching
from dispatch.models import Assignment, AssignmentRole, Unit, UnitLevel
from hotline import pipeline
from hotline.clock import Clock
from hotline.config import Settings
from hotline.db import after_commit, keyset_cursor, parse_keyset_cursor, session_scope
from hotline.errors import DomainError, NotFound
from telephony.endpoint import (
    SAMPLE_RATE,
    Call,
    CallDirection,
    CallFailed,
    Disposition,
    SipEndpoint,
)
from telephony.flows import FlowHooks, FlowSettings, Prompts, StatusAnswer, survey
from telephony.models import (
    ANSWERED_OUTCOMES,
    CallbackAttempt,
    CallbackOutcome,
    CallRead,
    CallRecord,
    TranscribedBy,
)
from telephony.prompts import PromptError, PromptSet, convert_wav
from telephony.recording import EndReason
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketCreate, TicketUpdate

if TYPE_CHECKING:
    from asr.processes import DecoderProcesses
    from asr.vosk_engine import VoskRecognizer

log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]

PLACEHOLDER = "电话受理中（录音转写进行中）"
NO_SPEECH = "（来电未听到可识别的语音，请回拨核实诉求）"
IDEMPOTENCY_SCOPE = "sip"
ABANDON_AFTER_S = 60.0
TEXT_LIMIT = 20000
_PHONE = re.compile(r"^\+?[0-9\- ]{3,32}$")


# ---------------------------------------------------------------- settings mapping


def asr_config(settings: Settings) -> AsrConfig:
    asr = settings.asr
    extra = {} if asr.max_live_streams is None else {"max_live_streams": asr.max_live_streams}
    return AsrConfig(model_path=asr.model_path, pool_size=asr.pool_size,
                     live_lag_s=asr.live_lag_s, live_backlog_limit_s=asr.live_backlog_limit_s,
                     live_batch_s=asr.live_batch_s, quiet_engine_log=asr.quiet_engine_log, **extra)


def live_recognizer(settings: Settings) -> VoskRecognizer | DecoderProcesses:
    """The SIP edge's recognizer: decoder processes (default, one per CPU), or the engine
    in this process's threads when `asr.decode_processes` is 0. Call `load()` before use
    and `close()` (processes) at the end."""
    from asr.processes import DecoderProcesses
    from asr.vosk_engine import VoskRecognizer

    config = asr_config(settings)
    count = settings.asr.decode_processes
    if count is None:
        count = os.cpu_count() or 1
    if count == 0:
        return VoskRecognizer(config)
    return DecoderProcesses(config, processes=count,
                            threads=decode_threads(settings.asr.decode_threads, count))


def decode_threads(setting: int | None, processes: int) -> int:
    """Decoder threads per decoder process: the setting, else the CPUs shared out among the
    processes (one each at the default of one process per CPU). More runnable decoders than
    cores cost CPU, not capacity: on 2 cores, 2 processes of 2 threads spent ~18 % more CPU
    per call than 2 of 1 and carried 18 live calls where those carried 22 (bench/calls.py)."""
    if setting is not None:
        return setting
    return max(1, math.ceil((os.cpu_count() or 1) / max(1, processes)))


def warm_recognizers(settings: Settings, recognizer: VoskRecognizer | DecoderProcesses,
                     prompts: PromptSet,
                     stop: threading.Event) -> int:
    """Warm the live pool at start (the SIP edge runs this in a thread of its own while it
    already answers calls); logs what it did, never raises. Returns how many were warmed."""
    asr = settings.asr
    config = recognizer.config
    count = (min(config.max_live_streams, config.pool_size) if asr.warm_recognizers is None
             else asr.warm_recognizers)
    if count <= 0:
        return 0
    began = time.monotonic()
    try:
        if asr.warmup_audio is None:
            pcm = prompts.pcm("greeting")
            source = "the greeting prompt"
        else:
            with tempfile.TemporaryDirectory(prefix="hotline-warmup-") as tmp:
                converted = Path(tmp) / "warmup.wav"
                convert_wav(asr.warmup_audio, converted)  # 8 kHz 16-bit mono
                pcm, _ = read_wav(converted)
            source = str(asr.warmup_audio)
        warmed = recognizer.warm(pcm, count=count, sample_rate=SAMPLE_RATE, stop=stop)
    except (AsrError, PromptError, OSError, wave.Error) as exc:
        log.error("ASR warm-up skipped: %s (the first live calls decode on fresh "
                  "recognizers)", exc)
        return 0
    log.info("ASR warm-up: %d recognizer(s) warmed on %s (%.1f s of audio) in %.1f s",
             warmed, source, len(pcm) / 2 / SAMPLE_RATE, time.monotonic() - began)
    return warmed


def prompt_set(settings: Settings, *, language: str | None = None) -> PromptSet:
    """The prompts the SIP edge plays: synthesised at setup, recorded ones where configured."""
    t = settings.telephony
    overrides = dict(t.prompt_wavs)
    if t.greeting_wav is not None:
        overrides["greeting"] = t.greeting_wav
    return PromptSet(settings.prompts_dir, language=language or t.prompt_language,
                     overrides=overrides)


def flow_settings(settings: Settings) -> FlowSettings:
    return FlowSettings(recording_dir=settings.recording_dir,
                        menu_enabled=settings.telephony.menu_enabled, tz=settings.tz)


# ---------------------------------------------------------------- five-element hints


_CN_DIGITS = str.maketrans("零〇幺一二三四五六七八九", "001123456789")
_PHONE_LIKE = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8}|\d{7,8})(?!\d)")


@dataclass(frozen=True)
class Place:
    kind: str  # district | street
    name: str  # as a ticket's district/street field holds it
    district: str | None
    aliases: tuple[str, ...]


@dataclass
class Hints:
    districts: list[str] = field(default_factory=list)
    streets: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.districts or self.streets or self.phones)

    def as_dict(self) -> dict[str, list[str]]:
        return {"districts": self.districts, "streets": self.streets, "phones": self.phones}


def places_of(units: Iterable[Unit]) -> list[Place]:
    """Districts and streets a transcript may name, from the district and street units."""
    out: list[Place] = []
    for unit in units:
        if not unit.active:
            continue
        if unit.level == UnitLevel.district and unit.district:
            core = unit.district[:-1] if len(unit.district) > 2 else unit.district
            out.append(Place("district", unit.district, unit.district,
                             tuple(dict.fromkeys((unit.district, core)))))
        elif unit.level == UnitLevel.street:
            name = unit.name.removesuffix("办事处")
            if unit.district:
                name = name.removeprefix(unit.district)
            core = name.removesuffix("街道").removesuffix("镇").removesuffix("乡")
            aliases = tuple(dict.fromkeys(a for a in (name, core) if len(a) >= 2))
            if aliases:
                out.append(Place("street", name, unit.district, aliases))
    return out


def five_element_hints(text: str, *, places: Sequence[Place]) -> Hints:
    """Where (districts, streets named in the text) and who (digit strings that look like
    phone numbers, spoken Chinese digits included) — hints for the operator, not facts."""
    hints = Hints()
    for place in places:
        if any(alias in text for alias in place.aliases):
            target = hints.districts if place.kind == "district" else hints.streets
            if place.name not in target:
                target.append(place.name)
            if place.kind == "street" and place.district and place.district not in hints.districts:
                hints.districts.append(place.district)
    digits = text.translate(_CN_DIGITS)
    digits = re.sub(r"(?<=\d)[\s,，-]+(?=\d)", "", digits)
    for found in _PHONE_LIKE.findall(digits):
        number = found.replace("-", "")
        if number not in hints.phones:
            hints.phones.append(number)
    return hints


def describe(text: str, hints: Hints) -> str:
    lines = [f"【电话录音转写】{text}" if text else NO_SPEECH]
    parts = []
    if hints.districts:
        parts.append("区县：" + "、".join(hints.districts))
    if hints.streets:
        parts.append("街道：" + "、".join(hints.streets))
    if hints.phones:
        parts.append("电话：" + "、".join(hints.phones))
    if parts:
        lines.append("【要素提示】" + "；".join(parts))
    return "\n".join(lines)[:TEXT_LIMIT]


# ---------------------------------------------------------------- the call record


def _insert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def call_values(call: Call) -> dict[str, Any]:
    inbound = call.direction == CallDirection.INBOUND
    return {
        "call_id": call.call_id,
        "direction": call.direction,
        "from_uri": (call.remote_uri if inbound else call.local_uri)[:500],
        "to_uri": (call.local_uri if inbound else call.remote_uri)[:500],
        "caller_number": (call.remote_number or "")[:64],
        "codec": call.codec,
        "arrived_at": call.arrived_at,
        "answered_at": call.answered_at,
    }


def upsert_call(session: Session, *, call: Call, now: datetime, **extra: Any) -> None:
    """Write the call's record, or bring it up to date: the call's own fields and `extra`
    are set, every other column is left as it is — the hooks, the end-of-call observer and
    the transcription all write one row, in whatever order they come."""
    values = {**call_values(call), **extra, "updated_at": now}
    if values["answered_at"] is None:
        values.pop("answered_at")
    table = CallRecord.__table__
    stmt = _insert(session)(table).values(**values, created_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.call_id],
                                      set_={k: stmt.excluded[k] for k in values})
    session.execute(stmt)


def end_values(call: Call) -> dict[str, Any]:
    ended = call.ended_at
    values: dict[str, Any] = {"ended_at": ended, "disposition": call.disposition}
    if ended is not None:
        until_answer = call.answered_at or ended
        values["wait_s"] = max(0.0, (until_answer - call.arrived_at).total_seconds())
        values["talk_s"] = (max(0.0, (ended - call.answered_at).total_seconds())
                            if call.answered_at else 0.0)
    return values


def get_call(session: Session, call_id: str, *, for_update: bool = False) -> CallRecord:
    stmt = select(CallRecord).where(CallRecord.call_id == call_id)
    if for_update:
        stmt = stmt.with_for_update()
    record = session.scalars(stmt).first()
    if record is None:
        raise NotFound(f"call {call_id} does not exist", call_id=call_id)
    return record


def set_live_text(session: Session, *, call_id: str, text: str, now: datetime) -> bool:
    """The running transcript, until the final one is attached (a late partial must not
    overwrite it)."""
    table = CallRecord.__table__
    done = session.execute(
        update(table).where(table.c.call_id == call_id, table.c.transcript.is_(None))
        .values(live_text=text[:TEXT_LIMIT], live_seq=table.c.live_seq + 1, updated_at=now))
    return done.rowcount == 1


# ---------------------------------------------------------------- ticket of a call


def _idempotency_key(call_id: str) -> str:
    return call_id if len(call_id) <= 200 else hashlib.sha256(call_id.encode()).hexdigest()


def open_ticket(session: Session, *, call: Call, now: datetime, settings: Settings,
                description: str = PLACEHOLDER) -> Ticket:
    """The call's ticket, created on the first call of this for a Call-ID."""
    number = call.remote_number if _PHONE.match(call.remote_number or "") else None
    data = TicketCreate(channel=Channel.phone, caller_phone=number, description=description)
    submission = pipeline.submit(session, data=data, actor=None, now=now,
                                 idempotency_key=_idempotency_key(call.call_id),
                                 idempotency_scope=IDEMPOTENCY_SCOPE, auto_dispatch=False,
                                 tz=settings.tz)
    return submission.ticket


def attach_transcript(session: Session, *, call_id: str, text: str,
                      transcribed_by: TranscribedBy, now: datetime,
                      settings: Settings) -> Ticket | None:
    """Put the caller's words on the call record and its ticket, then dispatch the ticket
    by the rules. Idempotent: a transcript already attached stays; a ticket no longer in
    intake (dispatched, queued, edited on by an operator) is not dispatched again."""
    record = get_call(session, call_id, for_update=True)
    if record.transcript is None:
        record.transcript = text[:TEXT_LIMIT]
        record.transcribed_by = transcribed_by
        record.live_text = text[:TEXT_LIMIT]
        record.live_seq += 1
        record.updated_at = now
        session.add(record)
    if record.ticket_id is None:
        return None
    ticket = tickets.get_ticket(session, record.ticket_id, for_update=True)
    if ticket.status != Status.intake:
        return ticket
    text = record.transcript or ""
    hints = five_element_hints(text, places=places_of(reference.snapshot(session).units.values()))
    changes: dict[str, Any] = {}
    if ticket.description == PLACEHOLDER:
        changes["description"] = describe(text, hints)
    if not ticket.district and len(hints.districts) == 1:
        changes["district"] = hints.districts[0]
    if not ticket.street and len(hints.streets) == 1:
        changes["street"] = hints.streets[0]
    tickets.update_ticket(session, ticket=ticket, data=TicketUpdate(**changes), actor="system",
                          now=now, reason=f"call transcript ({record.transcribed_by.value})")
    tickets.add_note(session, ticket=ticket, actor="system", now=now, kind="call",
                     data={"call_id": call_id, "recording": record.recording_path,
                           "transcribed_by": record.transcribed_by.value,
                           "transcript": record.transcript, "hints": hints.as_dict()})
    # Nothing was said: a person must listen and decide, no fallback unit.
    fallback = settings.dispatch.fallback_unit_code if text else None
    try:
        dispatching.dispatch_ticket(session, ticket_id=ticket.id, now=now, ticket=ticket,
                                    fallback_unit_code=fallback, tz=settings.tz)
    except DomainError as exc:
        # dispatch refuses before it writes: the ticket waits in the manual queue
        log.warning("dispatch of ticket %s failed: %s", ticket.number, exc.message)
        tickets.record(session, ticket=ticket, action=Action.queue, actor="system", now=now,
                       reason=f"automatic dispatch failed: {exc.message}")
    return ticket


def transcribe_recording(*, session_factory: SessionFactory, recognizer: Recognizer,
                         call_id: str, clock: Clock, settings: Settings) -> str:
    """Decode a call's recording offline and attach it (the Celery task's body). The
    decoding runs outside any transaction; attaching is idempotent."""
    with session_scope(session_factory) as session:
        record = get_call(session, call_id)
        if record.transcript is not None:
            ticket = session.get(Ticket, record.ticket_id) if record.ticket_id else None
            if ticket is None or ticket.status != Status.intake:
                return "already transcribed"
        path = Path(record.recording_path) if record.recording_path else None
    if path is not None and path.is_file():
        text, by = transcribe_wav(recognizer=recognizer, path=path).text, TranscribedBy.offline
    else:
        log.warning("call %s has no recording at %s; its ticket goes to the manual queue",
                    call_id, path)
        text, by = "", TranscribedBy.none
    with session_scope(session_factory) as session:
        attach_transcript(session, call_id=call_id, text=text, transcribed_by=by,
                          now=clock.now(), settings=settings)
    return "transcribed"


def untranscribed(session: Session, *, now: datetime, older_than: timedelta = timedelta(minutes=10),
                  limit: int = 100) -> list[str]:
    """Calls that ended a while ago with a recording and still no transcript: their
    transcription task was lost (a broker outage, the SIP process stopped mid-call)."""
    table = CallRecord.__table__
    return list(session.scalars(
        select(table.c.call_id).where(
            table.c.transcript.is_(None), table.c.ticket_id.is_not(None),
            table.c.recording_path.is_not(None), table.c.ended_at < now - older_than)
        .order_by(table.c.ended_at).limit(limit)))


# ---------------------------------------------------------------- the status line


def ticket_number(digits: str) -> str:
    """A ticket number as keyed on a phone (no '-'): 20261127000042 → 20261127-000042."""
    keyed = re.sub(r"\D", "", digits)
    return f"{keyed[:8]}-{keyed[8:]}" if len(keyed) > 8 else keyed


def lookup_status(session: Session, *, number: str) -> StatusAnswer | None:
    ticket = session.scalars(select(Ticket).where(Ticket.number == ticket_number(number))).first()
    if ticket is None:
        return None
    if ticket.status == Status.merged and ticket.parent_id:
        ticket = session.get(Ticket, ticket.parent_id) or ticket
    deadline = None
    if ticket.status not in (Status.closed, Status.archived):
        deadline = session.scalar(
            select(Assignment.reply_due_at)
            .where(Assignment.ticket_id == ticket.id, Assignment.role == AssignmentRole.lead,
                   col(Assignment.status).in_(dispatching.LIVE))
            .order_by(col(Assignment.id).desc()).limit(1))
    return StatusAnswer(status=ticket.status.value, deadline=deadline)


# ---------------------------------------------------------------- callbacks (回访)


def _in_hours(now: datetime, settings: Settings) -> bool:
    start, end = settings.telephony.callback_hours
    return start <= now.astimezone(settings.tz).hour < end


def schedule_callbacks(session: Session, *, now: datetime, limit: int = 200) -> int:
    """A first attempt for every ticket waiting for its callback (reviewed, with a phone
    number) that has none in its current round; pending attempts of tickets that stopped
    waiting (closed by hand, sent back) are cancelled. Safe to run anywhere, any time."""
    attempts, tickets_t = CallbackAttempt.__table__, Ticket.__table__
    due = session.execute(
        select(tickets_t.c.id, tickets_t.c.caller_phone, tickets_t.c.reopen_count).where(
            tickets_t.c.status == Status.reviewed, tickets_t.c.caller_phone.is_not(None),
            ~exists().where(attempts.c.ticket_id == tickets_t.c.id,
                            attempts.c.round == tickets_t.c.reopen_count))
        .order_by(tickets_t.c.id).limit(limit)).all()
    made = 0
    for ticket_id, phone, round_ in due:
        stmt = _insert(session)(attempts).values(
            ticket_id=ticket_id, round=round_, attempt_no=1, number=phone, due_at=now,
            created_at=now).on_conflict_do_nothing().returning(attempts.c.id)
        made += len(session.execute(stmt).all())
    session.execute(
        update(attempts).where(
            attempts.c.outcome.is_(None), attempts.c.started_at.is_(None),
            attempts.c.ticket_id.in_(select(tickets_t.c.id).where(
                tickets_t.c.status != Status.reviewed)))
        .values(outcome=CallbackOutcome.cancelled, ended_at=now,
                detail="the ticket no longer waits for a callback"))
    return made


def claim_callback(session: Session, *, now: datetime, settings: Settings) -> CallbackAttempt | None:
    """The next due attempt, claimed for this process: a conditional UPDATE, so across
    processes and threads each attempt is dialled once. Commit to publish the claim."""
    if not _in_hours(now, settings):
        return None
    attempts, tickets_t = CallbackAttempt.__table__, Ticket.__table__
    candidates = session.scalars(
        select(attempts.c.id)
        .join(tickets_t, tickets_t.c.id == attempts.c.ticket_id)
        .where(attempts.c.started_at.is_(None), attempts.c.outcome.is_(None),
               attempts.c.due_at <= now, tickets_t.c.status == Status.reviewed)
        .order_by(attempts.c.due_at, attempts.c.id).limit(5)).all()
    for attempt_id in candidates:
        claimed = session.execute(
            update(attempts).where(attempts.c.id == attempt_id, attempts.c.started_at.is_(None),
                                   attempts.c.outcome.is_(None))
            .values(started_at=now))
        if claimed.rowcount == 1:
            return session.get(CallbackAttempt, attempt_id, populate_existing=True)
    return None


def record_callback_outcome(session: Session, *, attempt_id: int, outcome: CallbackOutcome,
                            now: datetime, settings: Settings, call_id: str | None = None,
                            detail: str | None = None) -> CallbackAttempt | None:
    """Record how an attempt ended. An answer goes to the ticket (dispatch.service.callback:
    satisfied closes it, dissatisfied reopens it); no answer schedules the next attempt by
    `callback_retry_minutes`. Returns the next attempt, if one was scheduled. Recording an
    attempt that already has its outcome does nothing."""
    attempt = session.scalars(select(CallbackAttempt).where(CallbackAttempt.id == attempt_id)
                              .with_for_update()).first()
    if attempt is None:
        raise NotFound(f"callback attempt {attempt_id} does not exist")
    if attempt.outcome is not None:
        return None
    attempt.outcome, attempt.ended_at, attempt.call_id = outcome, now, call_id or attempt.call_id
    attempt.detail = detail[:500] if detail else None
    session.add(attempt)
    ticket = tickets.get_ticket(session, attempt.ticket_id, for_update=True)
    awaited = ticket.status == Status.reviewed and ticket.reopen_count == attempt.round
    if outcome in ANSWERED_OUTCOMES:
        if awaited:
            dispatching.callback(session, ticket_id=ticket.id, actor=None, now=now,
                                 satisfaction=Satisfaction(outcome.value),
                                 comment=f"电话回访按键（第{attempt.attempt_no}次）")
        else:
            attempt.detail = "answered after the ticket stopped waiting for a callback"
        return None
    delays = settings.telephony.callback_retry_minutes
    if awaited and attempt.attempt_no <= len(delays):
        following = CallbackAttempt.model_validate({
            "ticket_id": attempt.ticket_id, "round": attempt.round,
            "attempt_no": attempt.attempt_no + 1, "number": attempt.number,
            "due_at": now + timedelta(minutes=delays[attempt.attempt_no - 1]),
            "created_at": now})
        session.add(following)
        session.flush()
        return following
    if awaited:
        tickets.add_note(session, ticket=ticket, actor="system", now=now, kind="callback_failed",
                         reason=f"回访未接通：已拨打 {attempt.attempt_no} 次，请人工处理")
    return None


def reap_stale_attempts(session: Session, *, now: datetime, settings: Settings,
                        older_than: timedelta = timedelta(minutes=15)) -> int:
    """Attempts claimed by a process that stopped before recording their outcome."""
    stale = session.scalars(select(CallbackAttempt.id).where(
        CallbackAttempt.started_at < now - older_than,
        col(CallbackAttempt.outcome).is_(None))).all()
    for attempt_id in stale:
        record_callback_outcome(session, attempt_id=attempt_id, outcome=CallbackOutcome.failed,
                                now=now, settings=settings,
                                detail="the dialling process stopped during the attempt")
    return len(stale)


_FAILED_OUTCOME = {Disposition.BUSY: CallbackOutcome.busy,
                   Disposition.NO_ANSWER: CallbackOutcome.no_answer}


# ---------------------------------------------------------------- the runtime pieces


class PartialWriter:
    """Writes live partial transcripts to the call records from one thread of its own: every
    `interval_s` at most, the latest text of each call that changed, all in one transaction
    (so a call's record changes at most that often, and a hundred live calls cost two commits
    a second, not two hundred). The decoder threads never wait on the database."""

    def __init__(self, session_factory: SessionFactory, clock: Clock, interval_s: float) -> None:
        self._factory = session_factory
        self._clock = clock
        self._interval = interval_s
        self._cond = threading.Condition()
        self._pending: dict[str, str] = {}
        self._next = float("-inf")  # when the next write may run
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cdr-partials", daemon=True)
        self._thread.start()

    def offer(self, call_id: str, text: str) -> None:
        with self._cond:
            self._pending[call_id] = text
            self._cond.notify()

    def forget(self, call_id: str) -> None:
        with self._cond:
            self._pending.pop(call_id, None)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _due(self) -> dict[str, str]:
        """Under the lock: the texts to write now, waiting until a write is due."""
        while True:
            if self._stopping:
                due, self._pending = self._pending, {}
                return due
            if not self._pending:
                self._cond.wait()
                continue
            now = time.monotonic()
            if now >= self._next:
                due, self._pending = self._pending, {}
                self._next = now + self._interval
                return due
            self._cond.wait(self._next - now)

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due()
                stopping = self._stopping
            if due:
                self._write(due)
            if stopping:
                return

    def _write(self, due: dict[str, str]) -> None:
        now = self._clock.now()
        try:
            with session_scope(self._factory) as session:
                for call_id, text in due.items():
                    set_live_text(session, call_id=call_id, text=text, now=now)
            return
        except Exception:  # noqa: BLE001 - one at a time, so that one bad row costs only itself
            log.warning("writing %d live transcript(s) together failed; writing them one by "
                        "one", len(due), exc_info=True)
        for call_id, text in due.items():
            try:
                with session_scope(self._factory) as session:
                    set_live_text(session, call_id=call_id, text=text, now=now)
            except Exception:  # noqa: BLE001 - a lost partial only delays the live view
                log.exception("writing the live transcript of call %s failed", call_id)


class CallServices:
    """The platform behind the SIP edge: `hooks()` for the call flows, `on_ended` for the
    edge's observer. One object serves every call."""

    def __init__(self, *, session_factory: SessionFactory, clock: Clock, settings: Settings,
                 recognizer: Recognizer | None,
                 enqueue_transcription: Callable[[str], Any] | None = None,
                 finishers: int = 2) -> None:
        self.session_factory = session_factory
        self.clock = clock
        self.settings = settings
        self.recognizer = recognizer
        self._enqueue = enqueue_transcription or _send_transcription_task
        self._live: dict[str, LiveTranscriber] = {}
        self._lock = threading.Lock()
        self._writer = PartialWriter(session_factory, clock, settings.telephony.partial_interval_s)
        # Decoder processes take streams in turn by themselves; threads here need slots.
        self._slots = (None if getattr(recognizer, "decodes_elsewhere", False) else
                       DecodeSlots(settings.asr.decode_slots or (os.cpu_count() or 1) + 1))
        self._pool = ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="call-finish")
        # Waiting for a live transcript to drain is not work: a waiter per live stream, so
        # that no call's transcript queues behind another's (the writes stay in `_pool`).
        self._waiters = ThreadPoolExecutor(
            max_workers=max(1, asr_config(settings).max_live_streams),
            thread_name_prefix="call-transcript")
        self._futures: set[Future] = set()

    def hooks(self) -> FlowHooks:
        return FlowHooks(on_answered=self.on_answered, on_audio=self.on_audio,
                         on_finished=self.on_finished, lookup_status=self.lookup_status,
                         on_callback_number=self.on_callback_number)

    # -------------------------------------------------------------- the hooks
    def on_answered(self, call: Call) -> None:
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings)
            upsert_call(session, call=call, now=now, ticket_id=ticket.id)
        log.info("call %s from %r: ticket %s", call.call_id, call.remote_number, ticket.number)
        with self._lock:
            if call.call_id in self._live or self.recognizer is None:
                return
            stream = self.recognizer.try_open_stream()
            if stream is None:
                log.info("live ASR is full: call %s will be transcribed from its recording",
                         call.call_id)
                return
            asr = asr_config(self.settings)
            self._live[call.call_id] = LiveTranscriber(
                stream, on_partial=partial(self._writer.offer, call.call_id),
                lag_s=asr.live_lag_s, backlog_limit_s=asr.live_backlog_limit_s,
                batch_s=asr.live_batch_s, slots=self._slots, name=f"asr-{call.call_id[:16]}")

    def on_audio(self, call: Call, frame: bytes) -> None:
        transcriber = self._live.get(call.call_id)
        if transcriber is not None:
            try:
                transcriber.feed(frame)
            except AsrError:
                pass  # finished or given up: the recording is the source now

    def on_finished(self, call: Call, recording: Path | None, reason: EndReason) -> None:
        with self._lock:
            transcriber = self._live.pop(call.call_id, None)
        if transcriber is not None and recording is not None:
            self._submit(self._waiters, self._await_transcript, call, transcriber, recording,
                         reason)
            return
        if transcriber is not None:  # the caller left before the report began
            transcriber.cancel()
        self._submit(self._pool, self._write_end, call, None if recording else "", recording,
                     reason)

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            future = pool.submit(fn, *args)
            self._futures.add(future)
        future.add_done_callback(self._done)

    def on_ended(self, call: Call) -> None:
        """The edge's CallObserver: every call, answered or not, gets its record."""
        with self._lock:
            live = call.call_id in self._live
        if live:
            # A caller who hangs up mid-report is usually seen here before the flow's thread
            # reaches on_finished, which still wants the live transcript; only a flow that
            # never finishes would leave it, and that one is let go after a while.
            timer = threading.Timer(ABANDON_AFTER_S, self._abandon, args=(call.call_id,))
            timer.daemon = True
            timer.start()
        try:
            with session_scope(self.session_factory) as session:
                upsert_call(session, call=call, now=self.clock.now(), **end_values(call))
        except Exception:  # noqa: BLE001 - the edge's observer thread must go on
            log.exception("recording the end of call %s failed", call.call_id)

    def _abandon(self, call_id: str) -> None:
        with self._lock:
            transcriber = self._live.pop(call_id, None)
        if transcriber is not None:
            log.warning("call %s ended without finishing its report; live ASR released", call_id)
            transcriber.cancel()

    def lookup_status(self, number: str) -> StatusAnswer | None:
        with session_scope(self.session_factory) as session:
            return lookup_status(session, number=number)

    def on_callback_number(self, call: Call, number: str) -> None:
        """The caller keyed a number to be called back on (menu 3): a ticket for the
        operators' queue — no report was recorded, so there is nothing to dispatch by."""
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings,
                                 description=f"来电要求回拨，回拨号码：{number}")
            upsert_call(session, call=call, now=now, ticket_id=ticket.id)
            if ticket.status == Status.intake:
                tickets.add_note(session, ticket=ticket, actor="system", now=now,
                                 kind="callback_number", data={"number": number})
                tickets.record(session, ticket=ticket, action=Action.queue, actor="system",
                               now=now, reason="来电要求回拨：请人工回电受理")

    # -------------------------------------------------------------- the end of a report
    def _await_transcript(self, call: Call, transcriber: LiveTranscriber, recording: Path,
                          reason: EndReason) -> None:
        text = None
        try:
            text = transcriber.finish(self.settings.telephony.live_finish_timeout_s).text
        except LiveTranscriptUnavailable as exc:
            log.warning("live transcript of call %s unavailable (%s): transcribing the "
                        "recording", call.call_id, exc)
        self._submit(self._pool, self._write_end, call, text, recording, reason)

    def _write_end(self, call: Call, text: str | None, recording: Path | None,
                   reason: EndReason) -> None:
        """`text`: the live transcript; None to transcribe the recording offline; "" when
        there was no report to transcribe."""
        by = TranscribedBy.none if recording is None else TranscribedBy.live
        self._writer.forget(call.call_id)
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings)
            upsert_call(session, call=call, now=now, ticket_id=ticket.id, end_reason=reason.value,
                        recording_path=str(recording) if recording is not None else None)
            if text is None and get_call(session, call.call_id).transcript is None:
                after_commit(session, partial(self._enqueue, call.call_id))
            else:
                attach_transcript(session, call_id=call.call_id, text=text or "",
                                  transcribed_by=by, now=now, settings=self.settings)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)
        if future.exception() is not None:
            log.error("finishing a call failed", exc_info=future.exception())

    def drain(self, timeout: float | None = 60.0) -> None:
        """Wait for the calls being finished (shutdown, tests); re-raises their failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: list[Future] = []
        while True:  # a live transcript's wait hands its write on as a new future
            with self._lock:
                futures = [f for f in self._futures if f not in seen]
            if not futures:
                break
            seen += futures
            wait(futures, None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                break
        for future in seen:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def close(self) -> None:
        self.drain()
        self._waiters.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self._writer.stop()
        with self._lock:
            live, self._live = list(self._live.values()), {}
        for transcriber in live:
            transcriber.cancel()


def _send_transcription_task(call_id: str) -> None:
    from hotline.worker import app

    app.send_task("calls.transcribe_recording", args=[call_id])


class CallbackDialer:
    """The SIP process's callback loop: schedule, claim one due attempt, dial, run the
    survey, record the outcome — one call at a time, so the line is never flooded."""

    def __init__(self, *, services: CallServices, endpoint: SipEndpoint, prompts: Prompts,
                 flow: FlowSettings) -> None:
        self.services = services
        self.endpoint = endpoint
        self.prompts = prompts
        self.flow = flow

    @property
    def _telephony(self):
        return self.services.settings.telephony

    def run_once(self) -> CallbackAttempt | None:
        """Handle one due attempt, if there is one; returns it with its outcome."""
        s = self.services
        now = s.clock.now()
        with session_scope(s.session_factory) as session:
            schedule_callbacks(session, now=now)
            reap_stale_attempts(session, now=now, settings=s.settings)
        with session_scope(s.session_factory) as session:
            attempt = claim_callback(session, now=now, settings=s.settings)
        if attempt is None:
            return None
        uri = (self._telephony.callback_uri or "").format(number=attempt.number)
        call_id, detail = None, None
        try:
            call = self.endpoint.dial(uri, ring_timeout=self._telephony.callback_ring_timeout_s)
        except CallFailed as exc:
            outcome = _FAILED_OUTCOME.get(exc.disposition, CallbackOutcome.failed)
            detail = str(exc)
        else:
            call_id = call.call_id
            with session_scope(s.session_factory) as session:
                upsert_call(session, call=call, now=s.clock.now(), ticket_id=attempt.ticket_id)
            result = survey(call, prompts=self.prompts, hooks=FlowHooks(), settings=self.flow)
            outcome = (CallbackOutcome(result.value) if result is not None
                       else CallbackOutcome.no_input)
        with session_scope(s.session_factory) as session:
            record_callback_outcome(session, attempt_id=attempt.id, outcome=outcome,
                                    now=s.clock.now(), settings=s.settings, call_id=call_id,
                                    detail=detail)
        attempt.outcome, attempt.call_id = outcome, call_id
        log.info("callback of ticket %s (attempt %d): %s", attempt.ticket_id, attempt.attempt_no,
                 outcome.value)
        return attempt

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                while not stop.is_set() and self.run_once() is not None:
                    pass
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.exception("callback loop iteration failed")
            stop.wait(self._telephony.callback_poll_s)



# ---------------------------------------------------------------- reading calls


@dataclass
class CallFilters:
    direction: CallDirection | None = None
    disposition: Disposition | None = None
    caller_number: str | None = None
    ticket_id: int | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None


def list_calls(session: Session, *, filters: CallFilters, limit: int = 50,
               cursor: str | None = None) -> tuple[list[CallRecord], str | None]:
    """Newest first, keyset-paginated on (arrived_at, id)."""
    f, conds = filters, []
    for name in ("direction", "disposition", "caller_number", "ticket_id"):
        value = getattr(f, name)
        if value is not None:
            conds.append(getattr(CallRecord, name) == value)
    if f.arrived_from:
        conds.append(CallRecord.arrived_at >= f.arrived_from)
    if f.arrived_to:
        conds.append(CallRecord.arrived_at < f.arrived_to)
    if cursor:
        at, ident = parse_keyset_cursor(cursor)
        conds.append(or_(CallRecord.arrived_at < at,
                         and_(CallRecord.arrived_at == at, col(CallRecord.id) < ident)))
    stmt = (select(CallRecord).where(*conds)
            .order_by(col(CallRecord.arrived_at).desc(), col(CallRecord.id).desc())
            .limit(limit + 1))
    rows = list(session.scalars(stmt))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], (keyset_cursor(last.arrived_at, last.id) if last else None)


def call_read(record: CallRecord) -> CallRead:
    return CallRead.model_validate(record, update={"has_recording": bool(record.recording_path)})


def recording_of(session: Session, *, call_id: str) -> Path:
    path = get_call(session, call_id).recording_path
    if not path or not Path(path).is_file():
        raise NotFound(f"call {call_id} has no recording", call_id=call_id)
    return Path(path)


def callback_attempts(session: Session, *, ticket_id: int) -> list[CallbackAttempt]:
    return list(session.scalars(
        select(CallbackAttempt).where(CallbackAttempt.ticket_id == ticket_id)
        .order_by(CallbackAttempt.round, CallbackAttempt.attempt_no)))


@dataclass(frozen=True)
class LiveView:
    """What the transcript stream shows of a call at one moment."""

    seq: int
    text: str
    final: bool  # nothing more will come: the transcript is attached, or never will be
    transcript: str | None
    transcribed_by: TranscribedBy
    ticket_id: int | None


def live_view(session: Session, *, call_id: str) -> LiveView:
    table = CallRecord.__table__
    row = session.execute(
        select(table.c.live_seq, table.c.live_text, table.c.transcript, table.c.transcribed_by,
               table.c.ticket_id, table.c.ended_at).where(table.c.call_id == call_id)).first()
    if row is None:
        raise NotFound(f"call {call_id} does not exist", call_id=call_id)
    # A call that ended without a ticket (cancelled, a status query) gets no transcript.
    final = row.transcript is not None or (row.ended_at is not None and row.ticket_id is None)
    return LiveView(seq=row.live_seq, text=row.live_text, final=final,
                    transcript=row.transcript, transcribed_by=TranscribedBy(row.transcribed_by),
                    ticket_id=row.ticket_id)
