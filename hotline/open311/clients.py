"""Client applications and their API keys: issued and revoked by an administrator (the
admin page /admin/open311 and `hotline open311 client`), checked on every POST."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from core.db import loaded, table_of
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference
from hotline.open311.models import Open311Client

KEY_BYTES = 32


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue(session: Session, *, name: str, actor: str, now: datetime) -> tuple[Open311Client, str]:
    """A new client and its key. The key is returned once, here: only its hash is stored."""
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("a client application needs a name", field="name")
    if len(name) > 100:
        raise InvalidInput("the name is longer than 100 characters", field="name")
    key = secrets.token_urlsafe(KEY_BYTES)
    client = Open311Client.model_validate(
        {"name": name, "key_hash": _digest(key), "created_at": now, "created_by": actor[:64]}
    )
    session.add(client)
    session.flush()
    return client, key


def revoke(session: Session, *, client_id: int, actor: str, now: datetime) -> Open311Client:
    client = session.get(Open311Client, client_id)
    if client is None:
        raise NotFound(f"no Open311 client {client_id}", client_id=client_id)
    if client.revoked_at is not None:
        raise Conflict(f"Open311 client {client_id} is already revoked", client_id=client_id)
    client.revoked_at = now
    client.revoked_by = actor[:64]
    session.add(client)
    session.flush()
    return client


def list_clients(session: Session) -> list[Open311Client]:
    return list(session.exec(orm_select(Open311Client).order_by(col(Open311Client.id))))


_CLIENTS = table_of(Open311Client)
_BY_KEY = select(_CLIENTS, reference.REVISION).where(_CLIENTS.c.key_hash == bindparam("key_hash"))


def authenticate(session: Session, *, key: str) -> Open311Client | None:
    """The active client this key belongs to, or None (unknown or revoked). A plain SELECT
    that brings the reference revision along, as dispatch.access.authenticate does: the
    intake that follows needs it, and it saves a round trip on every POST."""
    if not key or len(key) > 200:
        return None
    row = session.connection().execute(_BY_KEY, {"key_hash": _digest(key)}).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    values = dict(row)
    reference.read_along(session, values.pop("reference_revision"))
    return loaded(session, Open311Client, values)
