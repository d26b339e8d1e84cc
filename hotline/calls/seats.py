"""Seats: the SIP extensions operators' phones register with, kept in the database.

``DbSeatStore`` is the ``telephony.sip_registrar.SeatStore`` every edge on the database
shares: a phone registered with one edge is rung by any other. The operations for the CLI and
the admin page: ``create_seat`` (with a generated password, shown once and never stored: only
its digest hashes are), ``reset_password``, ``disable_seat`` and ``list_seats`` with each
seat's registration state.

In production the phones register with Kamailio instead (deploy/kamailio, WITH_SEATS): it
authenticates them against the ``subscriber`` view over ``seat`` and writes their bindings
through to ``location`` (``telephony.models.KamailioLocation``). Seats are still made and
disabled here, in one place; a seat's phone is registered when either table has a live
binding for it, and with ``settings.acd.seat_proxy`` set the edges ring a seat through the
proxy, only when ``location`` has one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Executable, Select, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from core import runtime
from core.db import session_scope, table_of
from core.errors import Conflict, InvalidInput, NotFound
from core.runtime import SessionFactory
from telephony import sip_message as sm
from telephony.models import KamailioLocation, Seat, SeatRegistration
from telephony.sip_registrar import (
    EXTENSION,
    SeatBinding,
    SeatCredentials,
    dial_uri,
    proxy_uri,
    seat_ha1,
)

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
    """The seat's bindings end here, the edges' and Kamailio's: nothing rings the seat any
    more. Kamailio's in-memory copy rings on only if asked directly, and the phone's next
    REGISTER fails its digest (a disabled seat is not in ``subscriber``)."""
    table, location = table_of(SeatRegistration), table_of(KamailioLocation)
    session.execute(delete(table).where(table.c.extension == extension))
    session.execute(delete(location).where(location.c.username == extension))


@dataclass(frozen=True)
class _Live:
    """One live binding as the pages show it, from either registrar's table."""

    extension: str
    contact: str
    received: str  # "host:port" the REGISTER came from
    user_agent: str
    expires_at: datetime
    updated_at: datetime


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _location_live(row: Any) -> _Live:
    """A ``location`` row: ``received`` ("sip:host:port") is set only for a phone behind NAT,
    else the REGISTER came from where the Contact names."""
    try:
        host, port = sm.uri_hostport(row.received or row.contact)
        received = f"{host}:{port}"
    except ValueError:
        received = ""
    return _Live(
        extension=row.username,
        contact=row.contact,
        received=received,
        user_agent=row.user_agent,
        expires_at=_epoch(row.expires),
        updated_at=_epoch(row.last_modified),
    )


def _live_locations(now: datetime, extension: str | None = None) -> Select:
    """Kamailio's live bindings of enabled seats (a REGISTER that raced the seat's
    disabling must not count)."""
    location, seats = table_of(KamailioLocation), table_of(Seat)
    query = (
        select(location)
        .join(seats, seats.c.extension == location.c.username)
        .where(location.c.expires > int(now.timestamp()), seats.c.enabled.is_(True))
    )
    if extension is not None:
        query = query.where(location.c.username == extension)
    return query


def list_seats(*, session: Session, now: datetime) -> list[SeatView]:
    """Every seat by extension, with its live registrations (the newest one shown), with
    the edges or with Kamailio."""
    seats = session.exec(select_rows(Seat).order_by(col(Seat.extension))).all()
    table = table_of(SeatRegistration)
    rows = session.execute(select(table).where(table.c.expires_at > now)).all()
    live = [
        _Live(
            extension=row.extension,
            contact=row.contact,
            received=f"{row.received_host}:{row.received_port}",
            user_agent=row.user_agent,
            expires_at=row.expires_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]
    live += [_location_live(row) for row in session.execute(_live_locations(now)).all()]
    by_ext: dict[str, list[_Live]] = {}
    for binding in sorted(live, key=lambda b: b.updated_at, reverse=True):
        by_ext.setdefault(binding.extension, []).append(binding)
    views = []
    for seat in seats:
        found = by_ext.get(seat.extension, [])
        newest = found[0] if found else None
        views.append(
            SeatView(
                extension=seat.extension,
                display_name=seat.display_name,
                realm=seat.realm,
                enabled=seat.enabled,
                created_at=seat.created_at,
                registrations=len(found),
                contact=newest.contact if newest else None,
                received=newest.received if newest else None,
                user_agent=newest.user_agent if newest else None,
                expires_at=newest.expires_at if newest else None,
            )
        )
    return views


def proxy_address(proxy: str) -> tuple[str, int]:
    """``settings.acd.seat_proxy`` ("sip:10.0.0.5:5060", or without "sip:") as an address."""
    text = proxy.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        host, port = sm.uri_hostport(text)
    except ValueError:
        host, port = "", 0
    if not host or "@" in text or not 0 < port < 65536:
        raise ValueError(f"acd.seat_proxy must be like sip:10.0.0.5:5060, not {proxy!r}")
    return host, port


class DbSeatStore:
    """``SeatStore`` on the database: one short unit of work per call (the registrar's
    thread calls it, never the SIP receive thread).

    ``proxy``: where the phones register instead of the edges (Kamailio, "sip:host:port");
    a seat is then rung through it, when ``location`` holds a live binding for it. None:
    ``settings.acd.seat_proxy``; "": none, the edges are the registrar."""

    def __init__(self, session_factory: SessionFactory, *, proxy: str | None = None) -> None:
        self._session_factory = session_factory
        self._upserts: dict[str, Executable] = {}
        if proxy is None:
            proxy = runtime.get_settings().acd.seat_proxy
        self.proxy = proxy_address(proxy) if proxy else None

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

    def dial_target(self, extension: str, now: datetime) -> str | None:
        if self.proxy is None:
            found = self.bindings(extension, now)
            return dial_uri(found[0]) if found else None
        with session_scope(self._session_factory) as session:
            registered = session.execute(_live_locations(now, extension).limit(1)).first()
        return proxy_uri(extension, self.proxy) if registered else None
