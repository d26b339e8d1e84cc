"""A call becomes a ticket: opened at answer (status intake, idempotent by SIP Call-ID), its
transcript attached when the report ends — live, or from the recording decoded offline — and
only then classified and dispatched by the rules."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from accounts import privacy
from asr.offline import transcribe_channels
from asr.recognizer import Recognizer
from core.clock import Clock
from core.db import session_scope
from core.errors import DomainError
from core.runtime import SessionFactory
from core.settings import Settings
from dispatch import reference, routing
from hotline import intake
from hotline.calls.dialogue import final_dialogue
from hotline.calls.hints import describe, five_element_hints, places_of
from hotline.calls.records import TEXT_LIMIT, get_call, set_dialogue, table_of
from telephony.endpoint import (
    Call,
)
from telephony.models import (
    CallRecord,
    TranscribedBy,
)
from tickets import service as tickets
from tickets.lifecycle import EDITABLE, Action
from tickets.models import (
    Channel,
    Status,
    Ticket,
    TicketCreate,
    TicketUpdate,
)

log = logging.getLogger(__name__)


PLACEHOLDER = "电话受理中（录音转写进行中）"
IDEMPOTENCY_SCOPE = "sip"
_PHONE = re.compile(r"^\+?[0-9\- ]{3,32}$")


def _idempotency_key(call_id: str) -> str:
    return call_id if len(call_id) <= 200 else hashlib.sha256(call_id.encode()).hexdigest()


def open_ticket(
    session: Session,
    *,
    call: Call,
    now: datetime,
    settings: Settings,
    description: str = PLACEHOLDER,
) -> Ticket:
    """The call's ticket, created on the first call of this for a Call-ID."""
    number = call.remote_number if _PHONE.match(call.remote_number or "") else None
    data = TicketCreate(channel=Channel.phone, caller_phone=number, description=description)
    submission = intake.submit(
        session,
        data=data,
        actor=None,
        now=now,
        idempotency_key=_idempotency_key(call.call_id),
        idempotency_scope=IDEMPOTENCY_SCOPE,
        auto_dispatch=False,
        tz=settings.tz,
    )
    return submission.ticket


def attach_transcript(
    session: Session,
    *,
    call_id: str,
    text: str,
    transcribed_by: TranscribedBy,
    now: datetime,
    settings: Settings,
) -> Ticket | None:
    """Put the caller's words on the call record and its ticket, then dispatch the ticket
    by the rules (a robot's call: one an operator took stays with them). Idempotent: a
    transcript already attached stays; a ticket no longer in intake (dispatched, queued,
    answered or merged by an operator) is not dispatched again.

    The operator may have acted on the ticket before the words arrived — the console opens
    the form as the call ends, and decoding the recording takes longer than a quick save.
    Whatever they did, the words still reach the ticket: the placeholder description, which
    nobody wrote, is replaced; a description the operator wrote is theirs and stays, and
    the transcript is kept beside it (the call note the ticket page shows)."""
    record = get_call(session, call_id, for_update=True)
    fresh = record.transcript is None
    if fresh:
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
        if fresh:
            _put_on_ticket(session, ticket=ticket, record=record, now=now)
        return ticket
    text = _put_on_ticket(session, ticket=ticket, record=record, now=now)
    if record.agent_user_id is not None:
        # An operator took the call: the ticket is theirs to decide (answer it directly,
        # dispatch it, or save it for the dispatchers). Only the voice-intake robot's calls
        # are classified and dispatched by themselves.
        return ticket
    # Nothing was said: a person must listen and decide, no fallback unit.
    fallback = settings.dispatch.fallback_unit_code if text else None
    try:
        routing.dispatch_ticket(
            session,
            ticket_id=record.ticket_id,  # the ticket read above
            now=now,
            ticket=ticket,
            fallback_unit_code=fallback,
            tz=settings.tz,
        )
    except DomainError as exc:
        # dispatch refuses before it writes: the ticket waits in the manual queue
        log.warning("dispatch of ticket %s failed: %s", ticket.number, exc.message)
        tickets.record(
            session,
            ticket=ticket,
            action=Action.queue,
            actor="system",
            now=now,
            reason=f"automatic dispatch failed: {exc.message}",
        )
    return ticket


def _put_on_ticket(session: Session, *, ticket: Ticket, record: CallRecord, now: datetime) -> str:
    """The transcript into the fields nobody has filled (the placeholder description, a
    blank district or street) and onto the ticket as the call note; the transcript."""
    text = record.transcript or ""
    hints = five_element_hints(text, places=places_of(reference.snapshot(session).units.values()))
    changes: dict[str, Any] = {}
    if ticket.description == PLACEHOLDER:  # nothing said: NO_SPEECH, for the dispatcher
        changes["description"] = describe(text, hints)
    if not ticket.district and len(hints.districts) == 1:
        changes["district"] = hints.districts[0]
    if not ticket.street and len(hints.streets) == 1:
        changes["street"] = hints.streets[0]
    if ticket.status in EDITABLE:  # a closed or merged ticket keeps its fields
        tickets.update_ticket(
            session,
            ticket=ticket,
            data=TicketUpdate(**changes),
            actor="system",
            now=now,
            reason=f"call transcript ({record.transcribed_by.value})",
        )
    tickets.add_note(
        session,
        ticket=ticket,
        actor="system",
        now=now,
        kind="call",
        data={
            "call_id": record.call_id,
            "recording": record.recording_path,
            "transcribed_by": record.transcribed_by.value,
            "transcript": record.transcript,
            "hints": hints.as_dict(),
        },
    )
    return text


@dataclass(frozen=True)
class CallWords:
    """A call of a ticket's and the caller's words: final once attached, else the live text
    so far (None: the transcript is still being made)."""

    call_id: str
    transcript: str | None
    live_text: str
    transcribed_by: TranscribedBy
    # A call an operator took: both speakers' turns (None: the robot's call, or one from
    # before seats — its words are the caller's alone).
    dialogue: list[dict[str, Any]] | None = None


def ticket_calls(session: Session, *, ticket_id: int) -> list[CallWords]:
    """The calls that made or joined a ticket, oldest first, with their words."""
    table = table_of(CallRecord)
    rows = session.execute(
        select(
            table.c.call_id,
            table.c.transcript,
            table.c.live_text,
            table.c.transcribed_by,
            table.c.dialogue,
        )
        .where(table.c.ticket_id == ticket_id)
        .order_by(table.c.arrived_at, table.c.call_id)
    ).all()
    return [
        CallWords(
            call_id=r.call_id,
            transcript=r.transcript,
            live_text=r.live_text or "",
            transcribed_by=TranscribedBy(r.transcribed_by),
            dialogue=r.dialogue,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ShownWords:
    """A call's words as a page shows them: the caller's transcript, and for a call an
    operator took, the turns of both speakers. Reads as the transcript where a page still
    prints it as text."""

    transcript: str
    dialogue: list[dict[str, Any]] | None

    def __str__(self) -> str:
        return self.transcript


def shown_words(
    session: Session, *, ticket_id: int, mask_names: list[str | None] | None = None
) -> list[ShownWords]:
    """The words of a ticket's transcribed calls, oldest first; with ``mask_names`` (a
    confidential caller, a reader who may not see who it is) masked as the fields are —
    the operator's turns too, which repeat the caller's number and name back."""

    def shown(text: str) -> str:
        return privacy.mask_text(text, names=mask_names) if mask_names is not None else text

    return [
        ShownWords(
            transcript=shown(c.transcript),
            dialogue=[{**turn, "text": shown(turn["text"])} for turn in c.dialogue]
            if c.dialogue
            else None,
        )
        for c in ticket_calls(session, ticket_id=ticket_id)
        if c.transcript
    ]


def transcribe_recording(
    *,
    session_factory: SessionFactory,
    recognizer: Recognizer,
    call_id: str,
    clock: Clock,
    settings: Settings,
) -> str:
    """Decode a call's recording offline and attach it (the Celery task's body). The
    decoding runs outside any transaction; attaching is idempotent.

    A call an operator took is recorded in stereo (caller left, operator right): both
    channels are decoded and their words merged into the call's dialogue, which replaces
    the live one; the caller's words are attached as a robot's are, unless the live ones
    already were (then only the dialogue was missing: the operator's side had no live
    stream)."""
    with session_scope(session_factory) as session:
        record = get_call(session, call_id)
        # on_bridged marks a two-speaker call with an empty dialogue from the start.
        bridged = record.dialogue is not None or record.agent_user_id is not None
        attached = record.transcript is not None
        if attached and not bridged:
            ticket = session.get(Ticket, record.ticket_id) if record.ticket_id else None
            if ticket is None or ticket.status != Status.intake:
                return "already transcribed"
        path = Path(record.recording_path) if record.recording_path else None
    dialogue = None
    if path is not None and path.is_file():
        sides = transcribe_channels(recognizer=recognizer, path=path)
        text, by = sides[0].text, TranscribedBy.offline
        if bridged:
            dialogue = final_dialogue(sides[0], sides[1] if len(sides) > 1 else None)
    else:
        log.warning(
            "call %s has no recording at %s; its ticket goes to the manual queue", call_id, path
        )
        text, by = "", TranscribedBy.none
    with session_scope(session_factory) as session:
        now = clock.now()
        if dialogue is not None:
            set_dialogue(session, call_id=call_id, dialogue=dialogue, now=now)
        if not (bridged and attached):
            attach_transcript(
                session, call_id=call_id, text=text, transcribed_by=by, now=now, settings=settings
            )
    return "transcribed"


def untranscribed(
    session: Session,
    *,
    now: datetime,
    older_than: timedelta = timedelta(minutes=10),
    limit: int = 100,
) -> list[str]:
    """Calls that ended a while ago with a recording and still no transcript: their
    transcription task was lost (a broker outage, the SIP process stopped mid-call)."""
    table = table_of(CallRecord)
    return list(
        session.scalars(
            select(table.c.call_id)
            .where(
                table.c.transcript.is_(None),
                table.c.ticket_id.is_not(None),
                table.c.recording_path.is_not(None),
                table.c.ended_at < now - older_than,
            )
            .order_by(table.c.ended_at)
            .limit(limit)
        )
    )
