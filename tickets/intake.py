"""Ticket intake: the day's ticket numbers, a new ticket with its creation event (and
whatever dispatch decided in memory) written in one go — one statement on PostgreSQL — and
idempotent retries of the same submission."""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic_core import to_jsonable_python
from sqlalchemy import Column, Table, TextClause, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import attach, build_row, table_of
from core.errors import Conflict
from tickets.lifecycle import Action
from tickets.models import IdempotencyKey, Status, Ticket, TicketCounter, TicketCreate, TicketEvent
from tickets.service import AUDITED_FIELDS

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")


# ---------------------------------------------------------------- numbering


def next_ticket_number(
    session: Session, *, now: datetime, tz: ZoneInfo = DEFAULT_TZ, width: int = 6
) -> str:
    """`YYYYMMDD-NNNNNN` in the centre's local day; an atomic upsert keeps it unique when
    many intakes run at once (the counter row is locked until the transaction ends)."""
    day = now.astimezone(tz).strftime("%Y%m%d")
    table = TicketCounter.__tablename__
    last = (
        session.connection()
        .execute(
            text(
                f"INSERT INTO {table} (day, last) VALUES (:day, 1) "
                f"ON CONFLICT (day) DO UPDATE SET last = {table}.last + 1 RETURNING last"
            ),
            {"day": day},
        )
        .scalar_one()
    )
    return f"{day}-{last:0{width}d}"


# ---------------------------------------------------------------- intake


@dataclass
class Companion:
    """Rows of another table that point at the new ticket, written with it: `rows` hold
    every column but `ticket_id`; `written(ticket_id, ids)` gets their ids in row order
    and returns the objects to attach to the session."""

    table: Table
    rows: list[dict[str, Any]]
    written: Callable[[int, list[int]], Sequence[Any]]


Planner = Callable[[Ticket, list[dict[str, Any]]], Companion | None]


@dataclass(frozen=True)
class Intake:
    ticket: Ticket
    created: bool  # False when an idempotent retry returned the earlier ticket
    written: list[Any] = field(default_factory=list)  # rows `then` wrote with the ticket


def _fingerprint(data: TicketCreate) -> str:
    raw = json.dumps(data.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def create_ticket(
    session: Session,
    *,
    data: TicketCreate,
    actor: str,
    now: datetime,
    idempotency_key: str | None = None,
    idempotency_scope: str = "api",
    tz: ZoneInfo = DEFAULT_TZ,
    then: Planner | None = None,
) -> Intake:
    """Create a ticket in status intake. With an idempotency key a repeated submission
    returns the first ticket; the same key with a different payload is a Conflict.

    `then(ticket, events)` runs on the ticket in memory before anything is written: it may
    `apply` further steps (dispatch does), appending their events, and may return a
    Companion — rows of another table to write with the ticket, in the same statement on
    PostgreSQL. What its `written` returns is attached to the session with the ticket and
    handed back in `Intake.written`."""
    fingerprint = _fingerprint(data) if idempotency_key else ""
    if idempotency_key:
        existing = _idempotent_hit(session, idempotency_scope, idempotency_key, fingerprint)
        if existing:
            return Intake(existing, created=False)
    ticket, created = new_ticket(data, actor=actor, now=now)
    events = [created]
    companion = then(ticket, events) if then else None

    def write() -> list[Any]:
        written = insert_new(
            session, ticket=ticket, events=events, now=now, tz=tz, companion=companion
        )
        if idempotency_key:
            session.execute(
                insert(table_of(IdempotencyKey)),
                {
                    "scope": idempotency_scope,
                    "key": idempotency_key,
                    "fingerprint": fingerprint,
                    "ticket_id": ticket.id,
                    "created_at": now,
                },
            )
        return written

    if not idempotency_key:
        written = write()
    else:
        try:
            with session.begin_nested():
                written = write()
        except IntegrityError:
            # A concurrent twin won the race: the savepoint took back our ticket, its
            # events and what `then` wrote; return theirs.
            existing = _idempotent_hit(session, idempotency_scope, idempotency_key, fingerprint)
            if existing is None:
                raise
            return Intake(existing, created=False)
    attach(session, ticket, *written)
    return Intake(ticket, created=True, written=written)


def new_ticket(data: TicketCreate, *, actor: str, now: datetime) -> tuple[Ticket, dict[str, Any]]:
    """A ticket in status intake held in memory — no id or number yet — and the values of
    its creation event. Further steps may be `apply`-ed before `insert_new` writes it."""
    # TicketCreate has validated every field it carries, under the same constraints.
    ticket = build_row(
        Ticket,
        {
            **data.model_dump(),
            "number": "",
            "status": Status.intake,
            "created_at": now,
            "updated_at": now,
            "created_by": actor,
            "event_seq": 1,
        },
    )
    fields = ticket.__dict__  # a row just built: every field is there
    snapshot = {f: fields[f] for f in AUDITED_FIELDS if f != "status"}
    created = {
        "ticket_id": None,
        "seq": 1,
        "at": now,
        "actor": actor,
        "action": Action.create.value,
        "from_status": None,
        "to_status": Status.intake,
        "reason": None,
        "rule": None,
        "data": {"set": to_jsonable_python(snapshot)},
    }
    return ticket, created


_TICKET_TABLE, _EVENT_TABLE = table_of(Ticket), table_of(TicketEvent)
_TICKET_COLUMNS = tuple(c.key for c in _TICKET_TABLE.columns if c.key != "id")
_INSERT_TICKET = insert(_TICKET_TABLE).returning(_TICKET_TABLE.c.id)


_EVENT_COLUMNS = tuple(c.key for c in _EVENT_TABLE.columns if c.key not in {"id", "ticket_id"})


def _pg_type(column: Column[Any]) -> str:
    # SQLAlchemy leaves the psycopg2 dialect's constructor unannotated.
    return column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]


def _recordset(table: Table, keys: Sequence[str]) -> str:
    """`jsonb_to_recordset`'s column list for `keys` of `table`, with their SQL types."""
    return ", ".join(f'"{k}" {_pg_type(table.c[k])}' for k in keys)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _json_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """The rows as one JSON array, each with its position `ord` (ids follow it)."""
    return json.dumps(
        [{**{k: _json_value(row[k]) for k in keys}, "ord": i} for i, row in enumerate(rows)],
        ensure_ascii=False,
    )


@functools.cache
def _pg_intake_sql(
    companion_table: Table | None, companion_keys: tuple[str, ...], width: int = 6
) -> TextClause:
    ticket, event = _TICKET_TABLE, _EVENT_TABLE
    rest = [c.key for c in ticket.columns if c.key not in {"id", "number"}]
    ev = ", ".join(f'e."{k}"' for k in _EVENT_COLUMNS if k != "data")
    sql = f"""
WITH counter AS (
    INSERT INTO ticket_counter AS c (day, last) VALUES (:day, 1)
    ON CONFLICT (day) DO UPDATE SET last = c.last + 1
    RETURNING last
), t AS (
    INSERT INTO ticket (number, {", ".join(f'"{k}"' for k in rest)})
    SELECT :day || '-' || lpad(last::text, greatest({width}, length(last::text)), '0'),
           {", ".join(f":{k}" for k in rest)}
    FROM counter
    RETURNING id, number
), e AS (
    INSERT INTO ticket_event (ticket_id, {", ".join(f'"{k}"' for k in _EVENT_COLUMNS)})
    SELECT t.id, {ev},
           (CASE WHEN e.seq = 1 THEN jsonb_set(e.data, '{{set,number}}', to_jsonb(t.number))
                 ELSE e.data END)::{_pg_type(event.c.data)}
    FROM t, jsonb_to_recordset(CAST(:events AS jsonb))
         AS e({_recordset(event, [k for k in _EVENT_COLUMNS if k != "data"])}, data jsonb)
)"""
    if companion_table is None:
        sql += "\nSELECT t.id, t.number, NULL FROM t"
    else:
        name = companion_table.name
        cols = ", ".join(f'"{k}"' for k in companion_keys)
        sql += f""", x AS (
    INSERT INTO "{name}" (ticket_id, {cols})
    SELECT t.id, {", ".join(f'r."{k}"' for k in companion_keys)}
    FROM t, jsonb_to_recordset(CAST(:companion AS jsonb))
         AS r({_recordset(companion_table, companion_keys)}, ord integer)
    ORDER BY r.ord
    RETURNING id
)
SELECT t.id, t.number, (SELECT array_agg(id ORDER BY id) FROM x) FROM t"""
    bind = [bindparam(k, type_=ticket.c[k].type) for k in rest]
    return text(sql).bindparams(*bind)


def _pg_intake(
    values: dict[str, Any], events: list[dict[str, Any]], companion: Companion | None, *, day: str
) -> tuple[TextClause, dict[str, Any]]:
    params = {k: v for k, v in values.items() if k != "number"}
    params["day"] = day
    params["events"] = _json_rows(events, _EVENT_COLUMNS)
    if companion is None:
        return _pg_intake_sql(None, ()), params
    keys = tuple(k for k in companion.rows[0] if k != "ticket_id")
    params["companion"] = _json_rows(companion.rows, keys)
    return _pg_intake_sql(companion.table, keys), params


_INSERT_EVENT = insert(_EVENT_TABLE)


def insert_new(
    session: Session,
    *,
    ticket: Ticket,
    events: list[dict[str, Any]],
    now: datetime,
    tz: ZoneInfo = DEFAULT_TZ,
    companion: Companion | None = None,
) -> list[Any]:
    """Write a ticket made by `new_ticket` (its first event the creation) with its events
    and a companion's rows, and no unit-of-work flush: the path every intake takes. On
    PostgreSQL that is one statement — the day's number, the ticket, its events and the
    companion rows as data-modifying CTEs — so the day's counter row is locked only from
    there to the commit; elsewhere four. Returns what the companion's `written` returns.
    Call `attach` once the ticket is final."""
    connection = session.connection()
    fields = ticket.__dict__  # built by new_ticket, never loaded: every column is there
    values = {k: fields[k] for k in _TICKET_COLUMNS}
    if connection.dialect.name == "postgresql":
        statement, params = _pg_intake(
            values, events, companion, day=now.astimezone(tz).strftime("%Y%m%d")
        )
        ticket.id, ticket.number, ids = connection.execute(statement, params).one()
        events[0]["data"]["set"]["number"] = ticket.number
        for event in events:
            event["ticket_id"] = ticket.id
    else:
        ticket.number = values["number"] = next_ticket_number(session, now=now, tz=tz)
        ticket.id = connection.execute(_INSERT_TICKET, values).scalar_one()
        events[0]["data"]["set"]["number"] = ticket.number
        for event in events:
            event["ticket_id"] = ticket.id
        connection.execute(_INSERT_EVENT, events)
        ids = []
        if companion is not None:
            table = companion.table
            ids = (
                connection.execute(
                    insert(table).returning(table.c.id, sort_by_parameter_order=True),
                    [{**row, "ticket_id": ticket.id} for row in companion.rows],
                )
                .scalars()
                .all()
            )
    return list(companion.written(ticket.id, list(ids or []))) if companion else []


def _idempotent_hit(session: Session, scope: str, key: str, fingerprint: str) -> Ticket | None:
    hit = session.scalars(
        select(IdempotencyKey).where(
            col(IdempotencyKey.scope) == scope, col(IdempotencyKey.key) == key
        )
    ).first()
    if hit is None:
        return None
    if hit.fingerprint != fingerprint:
        raise Conflict(
            "Idempotency-Key was already used for a different request",
            key=key,
            ticket_id=hit.ticket_id,
        )
    return session.get(Ticket, hit.ticket_id)
