"""Seats: the SIP extensions operators' phones register with, kept in the database.

``DbSeatStore`` is the ``telephony.sip_registrar.SeatStore`` every edge on the database
shares: a phone registered with one edge is rung by any other. The operations for the CLI and
the admin page: ``create_seat`` (with a generated password, shown once and never stored: only
its digest hashes are), ``reset_password``, ``disable_seat`` and ``list_seats`` with each
seat's registration state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Executable, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from core.db import session_scope, table_of
from core.errors import Conflict, InvalidInput, NotFound
from core.runtime import SessionFactory
from telephony.models import Seat, SeatRegistration
from telephony.sip_registrar import EXTENSION, SeatBinding, SeatCredentials, seat_ha1

# No 0/O, 1/l/I: the password is read off a screen and typed into a phone's settings.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 16


def new_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))


@dataclass(frozen=True)
class SeatView:
    """A seat as the admin sees it: registered when it has a live binding."""

    extension: str
    display_name: str
    realm: str  # its password's realm: another than the edge's fails every digest
    enabled: bool
    created_at: datetime
    registrations: int
    contact: str | None
    received: str | None  # "host:port" the newest REGISTER came from
    user_agent: str | None
    expires_at: datetime | None

    @property
    def registered(self) -> bool:
        return self.registrations > 0


def _seat(session: Session, extension: str) -> Seat:
    seat = session.exec(select_rows(Seat).where(Seat.extension == extension)).first()
    if seat is None:
        raise NotFound(f"no seat {extension}")
    return seat


def create_seat(
    *, session: Session, extension: str, display_name: str = "", realm: str, now: datetime
) -> tuple[Seat, str]:
    """A new seat and its password (the only time the password is seen)."""
    if not EXTENSION.match(extension):
        raise InvalidInput(f"an extension is 2 to 16 digits, not {extension!r}")
    if len(display_name) > 100:
        raise InvalidInput("a seat's name is at most 100 characters")
    found = session.exec(select_rows(Seat).where(Seat.extension == extension)).first()
    if found is not None:
        raise Conflict(f"seat {extension} exists already")
    password = new_password()
    md5, sha256 = seat_ha1(extension, realm, password)
    seat = Seat.model_validate(
        {
            "extension": extension,
            "display_name": display_name.strip(),
            "realm": realm,
            "ha1_md5": md5,
            "ha1_sha256": sha256,
            "enabled": True,
            "created_at": now,
        }
    )
    session.add(seat)
    session.flush()
    return seat, password


def reset_password(*, session: Session, extension: str, realm: str) -> str:
    """A new password for the seat (its phones must be set up again: their registrations
    are dropped, so the seat is not rung at a phone that will fail to re-register)."""
    seat = _seat(session, extension)
    password = new_password()
    seat.realm = realm
    seat.ha1_md5, seat.ha1_sha256 = seat_ha1(extension, realm, password)
    seat.enabled = True
    session.add(seat)
    _drop_registrations(session, extension)
    session.flush()
    return password


def disable_seat(*, session: Session, extension: str) -> Seat:
    """No phone registers with the seat any more and its registrations end now."""
    seat = _seat(session, extension)
    seat.enabled = False
    session.add(seat)
    _drop_registrations(session, extension)
    session.flush()
    return seat


def _drop_registrations(session: Session, extension: str) -> None:
    table = table_of(SeatRegistration)
    session.execute(delete(table).where(table.c.extension == extension))


def list_seats(*, session: Session, now: datetime) -> list[SeatView]:
    """Every seat by extension, with its live registrations (the newest one shown)."""
    seats = session.exec(select_rows(Seat).order_by(col(Seat.extension))).all()
    table = table_of(SeatRegistration)
    rows = session.execute(
        select(table)
        .where(table.c.expires_at > now)
        .order_by(table.c.extension, table.c.updated_at.desc())
    ).all()
    by_ext: dict[str, list] = {}
    for row in rows:
        by_ext.setdefault(row.extension, []).append(row)
    views = []
    for seat in seats:
        live = by_ext.get(seat.extension, [])
        newest = live[0] if live else None
        views.append(
            SeatView(
                extension=seat.extension,
                display_name=seat.display_name,
                realm=seat.realm,
                enabled=seat.enabled,
                created_at=seat.created_at,
                registrations=len(live),
                contact=newest.contact if newest else None,
                received=f"{newest.received_host}:{newest.received_port}" if newest else None,
                user_agent=newest.user_agent if newest else None,
                expires_at=newest.expires_at if newest else None,
            )
        )
    return views


class DbSeatStore:
    """``SeatStore`` on the database: one short unit of work per call (the registrar's
    thread calls it, never the SIP receive thread)."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self._session_factory = session_factory
        self._upserts: dict[str, Executable] = {}

    def credentials(self, extension: str) -> SeatCredentials | None:
        table = table_of(Seat)
        with session_scope(self._session_factory) as session:
            row = session.execute(select(table).where(table.c.extension == extension)).first()
        if row is None:
            return None
        return SeatCredentials(
            extension=row.extension,
            realm=row.realm,
            ha1_md5=row.ha1_md5,
            ha1_sha256=row.ha1_sha256,
            enabled=row.enabled,
        )

    def save_binding(self, binding: SeatBinding) -> None:
        values = {
            "extension": binding.extension,
            "contact": binding.contact,
            "received_host": binding.received[0],
            "received_port": binding.received[1],
            "expires_at": binding.expires_at,
            "call_id": binding.call_id,
            "cseq": binding.cseq,
            "user_agent": binding.user_agent,
            "edge_id": binding.edge_id,
            "updated_at": binding.updated_at,
        }
        table = table_of(SeatRegistration)
        with session_scope(self._session_factory) as session:
            session.execute(self._upsert(session.get_bind().dialect.name), values)
            # The seat's expired rows go here, on its own index: a softphone that names a
            # new Contact at every start (baresip does) would otherwise leave one per start.
            session.execute(
                delete(table).where(
                    table.c.extension == binding.extension,
                    table.c.expires_at <= binding.updated_at,
                )
            )

    def _upsert(self, dialect: str) -> Executable:
        """One statement for add-or-refresh, so that two edges (or a retransmission racing
        its original) never trip over the unique (extension, contact)."""
        stmt = self._upserts.get(dialect)
        if stmt is None:
            table = table_of(SeatRegistration)
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            columns = [c.name for c in table.columns if c.name != "id"]
            base = insert(table).values(
                {name: bindparam(name, type_=table.c[name].type) for name in columns}
            )
            stmt = base.on_conflict_do_update(
                index_elements=[table.c.extension, table.c.contact],
                set_={
                    name: base.excluded[name]
                    for name in columns
                    if name not in ("extension", "contact")
                },
            )
            self._upserts[dialect] = stmt
        return stmt

    def remove_binding(self, extension: str, contact: str) -> None:
        table = table_of(SeatRegistration)
        with session_scope(self._session_factory) as session:
            session.execute(
                delete(table).where(table.c.extension == extension, table.c.contact == contact)
            )

    def remove_bindings(self, extension: str) -> None:
        with session_scope(self._session_factory) as session:
            _drop_registrations(session, extension)

    def bindings(self, extension: str, now: datetime) -> list[SeatBinding]:
        """The enabled seat's live bindings, newest first."""
        table, seats = table_of(SeatRegistration), table_of(Seat)
        # Only an enabled seat's: a REGISTER that raced the seat's disabling may have
        # written a row after it, and must not make the seat ring.
        with session_scope(self._session_factory) as session:
            rows = session.execute(
                select(table)
                .join(seats, seats.c.extension == table.c.extension)
                .where(
                    table.c.extension == extension,
                    table.c.expires_at > now,
                    seats.c.enabled.is_(True),
                )
                .order_by(table.c.updated_at.desc(), table.c.id.desc())
            ).all()
        return [
            SeatBinding(
                extension=row.extension,
                contact=row.contact,
                received=(row.received_host, row.received_port),
                expires_at=row.expires_at,
                call_id=row.call_id,
                cseq=row.cseq,
                updated_at=row.updated_at,
                user_agent=row.user_agent,
                edge_id=row.edge_id,
            )
            for row in rows
        ]
