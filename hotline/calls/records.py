"""The call record (CDR): written as a call is answered and ends, its live text, and the
queries that read calls back (lists, recordings, callbacks of a ticket, the live view)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from core.db import keyset_cursor, parse_keyset_cursor, table_of
from core.errors import NotFound
from telephony.endpoint import (
    Call,
    CallDirection,
    Disposition,
)
from telephony.models import (
    CallbackAttempt,
    CallRead,
    CallRecord,
    TranscribedBy,
)

log = logging.getLogger(__name__)


TEXT_LIMIT = 20000


def insert_stmt(session: Session):
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
    stmt = _upsert_statement(session.get_bind().dialect.name, frozenset(values))
    session.execute(stmt, {f"v_{k}": v for k, v in {**values, "created_at": now}.items()})


# The upsert for each set of columns written, built once: building it (the ``excluded``
# alias proxies every column of the table) cost more than running it, three times a call.
_UPSERTS: dict[tuple[str, frozenset[str]], Any] = {}


def _upsert_statement(dialect: str, columns: frozenset[str]) -> Any:
    stmt = _UPSERTS.get((dialect, columns))
    if stmt is None:
        table = table_of(CallRecord)
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        # bindparam names may not be column names in an INSERT's VALUES: prefixed.
        written = sorted(columns | {"created_at"})
        base = insert(table).values(
            {k: bindparam(f"v_{k}", type_=table.c[k].type) for k in written}
        )
        stmt = base.on_conflict_do_update(
            index_elements=[table.c.call_id],
            set_={k: base.excluded[k] for k in sorted(columns)},
        )
        _UPSERTS[(dialect, columns)] = stmt
    return stmt


def end_values(call: Call) -> dict[str, Any]:
    ended = call.ended_at
    values: dict[str, Any] = {"ended_at": ended, "disposition": call.disposition}
    if ended is not None:
        until_answer = call.answered_at or ended
        values["wait_s"] = max(0.0, (until_answer - call.arrived_at).total_seconds())
        values["talk_s"] = (
            max(0.0, (ended - call.answered_at).total_seconds()) if call.answered_at else 0.0
        )
    return values


def get_call(session: Session, call_id: str, *, for_update: bool = False) -> CallRecord:
    stmt = select(CallRecord).where(col(CallRecord.call_id) == call_id)
    if for_update:
        stmt = stmt.with_for_update()
    record = session.scalars(stmt).first()
    if record is None:
        raise NotFound(f"call {call_id} does not exist", call_id=call_id)
    return record


def recorded_at(session: Session, call_id: str) -> str | None:
    """The recording path on the call's record; None without one (or without a record)."""
    table = table_of(CallRecord)
    return session.scalars(select(table.c.recording_path).where(table.c.call_id == call_id)).first()


def set_live_text(
    session: Session,
    *,
    call_id: str,
    text: str,
    now: datetime,
    dialogue: list[dict[str, Any]] | None = None,
) -> bool:
    """The running transcript (and a bridged call's running dialogue), until the final one
    is attached (a late partial must not overwrite it)."""
    table = table_of(CallRecord)
    values: dict[str, Any] = {
        "live_text": text[:TEXT_LIMIT],
        "live_seq": table.c.live_seq + 1,
        "updated_at": now,
    }
    if dialogue is not None:
        values["dialogue"] = dialogue
    done = session.exec(
        update(table)
        .where(table.c.call_id == call_id, table.c.transcript.is_(None))
        .values(**values)
    )
    return done.rowcount == 1


def set_dialogue(
    session: Session, *, call_id: str, dialogue: list[dict[str, Any]], now: datetime
) -> None:
    """A bridged call's final two-speaker transcript; ``live_seq`` moves so the pages that
    show it refresh."""
    table = table_of(CallRecord)
    session.exec(
        update(table)
        .where(table.c.call_id == call_id)
        .values(dialogue=dialogue, live_seq=table.c.live_seq + 1, updated_at=now)
    )


def call_dialogue(session: Session, *, call_id: str) -> list[dict[str, Any]] | None:
    """A call's turns as they stand (None: not a call an operator took)."""
    table = table_of(CallRecord)
    row = session.execute(select(table.c.dialogue).where(table.c.call_id == call_id)).first()
    if row is None:
        raise NotFound(f"call {call_id} does not exist", call_id=call_id)
    return row.dialogue


@dataclass
class CallFilters:
    direction: CallDirection | None = None
    disposition: Disposition | None = None
    caller_number: str | None = None
    ticket_id: int | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None


def list_calls(
    session: Session, *, filters: CallFilters, limit: int = 50, cursor: str | None = None
) -> tuple[list[CallRecord], str | None]:
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
        conds.append(
            or_(
                col(CallRecord.arrived_at) < at,
                and_(col(CallRecord.arrived_at) == at, col(CallRecord.id) < ident),
            )
        )
    stmt = (
        select(CallRecord)
        .where(*conds)
        .order_by(col(CallRecord.arrived_at).desc(), col(CallRecord.id).desc())
        .limit(limit + 1)
    )
    rows = list(session.scalars(stmt))
    last = rows[limit - 1] if len(rows) > limit else None
    if last is None:
        return rows[:limit], None
    assert last.id is not None  # a row read from the table
    return rows[:limit], keyset_cursor(last.arrived_at, last.id)


def call_read(record: CallRecord) -> CallRead:
    return CallRead.model_validate(record, update={"has_recording": bool(record.recording_path)})


def recording_of(session: Session, *, call_id: str) -> Path:
    path = get_call(session, call_id).recording_path
    if not path or not Path(path).is_file():
        raise NotFound(f"call {call_id} has no recording", call_id=call_id)
    return Path(path)


def callback_attempts(session: Session, *, ticket_id: int) -> list[CallbackAttempt]:
    return list(
        session.scalars(
            select(CallbackAttempt)
            .where(col(CallbackAttempt.ticket_id) == ticket_id)
            .order_by(col(CallbackAttempt.round), col(CallbackAttempt.attempt_no))
        )
    )


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
    table = table_of(CallRecord)
    row = session.execute(
        select(
            table.c.live_seq,
            table.c.live_text,
            table.c.transcript,
            table.c.transcribed_by,
            table.c.ticket_id,
            table.c.ended_at,
        ).where(table.c.call_id == call_id)
    ).first()
    if row is None:
        raise NotFound(f"call {call_id} does not exist", call_id=call_id)
    # A call that ended without a ticket (cancelled, a status query) gets no transcript.
    final = row.transcript is not None or (row.ended_at is not None and row.ticket_id is None)
    return LiveView(
        seq=row.live_seq,
        text=row.live_text,
        final=final,
        transcript=row.transcript,
        transcribed_by=TranscribedBy(row.transcribed_by),
        ticket_id=row.ticket_id,
    )
