"""Client applications and their API keys: issued and revoked by an administrator (the
admin page /admin/open311 and `hotline open311 client`), checked on every POST.

A key found valid is remembered by this process for `VERIFIED_FOR` (its SHA-256, the
client's id and name), so a partner's steady stream of POSTs costs no read of its row. A
revocation made in this process takes effect at once (the entry is dropped when the
revocation is made and again when it commits); one made in another process — another web
worker, the `hotline open311 client revoke` command — is seen here within `VERIFIED_FOR`.
Unknown and revoked keys are never remembered: each is read again (the per-address rate
limit, checked before, bounds how often)."""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from core.db import after_commit, table_of
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference
from hotline.open311.models import Open311Client

KEY_BYTES = 32
VERIFIED_FOR = timedelta(seconds=10)  # the bound on a revocation made in another process
MAX_VERIFIED = 1_000  # keys remembered at once: far more than the centre registers


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
    key_hash = client.key_hash
    _forget(key_hash)
    # and once committed: a POST that read the row before the commit may have remembered it
    after_commit(session, lambda: _forget(key_hash))
    return client


def list_clients(session: Session) -> list[Open311Client]:
    return list(session.exec(orm_select(Open311Client).order_by(col(Open311Client.id))))


@dataclass(frozen=True)
class Verified:
    """The client application an API key belongs to, as a POST needs it."""

    id: int
    name: str


_verified: dict[str, tuple[Verified, datetime]] = {}  # key hash → (client, valid until)
_lock = threading.Lock()


def _forget(key_hash: str) -> None:
    with _lock:
        _verified.pop(key_hash, None)


_CLIENTS = table_of(Open311Client)
_BY_KEY = select(_CLIENTS.c.id, _CLIENTS.c.name, _CLIENTS.c.revoked_at, reference.REVISION).where(
    _CLIENTS.c.key_hash == bindparam("key_hash")
)


def remembered(key: str, now: datetime) -> Verified | None:
    """The client of a key this process found valid less than `VERIFIED_FOR` ago, without
    reading the database; else None (which says nothing of the key)."""
    if not key or len(key) > 200:
        return None
    with _lock:
        hit = _verified.get(_digest(key))
    return hit[0] if hit is not None and now < hit[1] else None


def authenticate(session: Session, *, key: str, now: datetime) -> Verified | None:
    """The active client this key belongs to, or None (unknown or revoked): `remembered`,
    else a plain SELECT that brings the reference revision along, as
    dispatch.access.authenticate does: the intake that follows needs it, and it saves a
    round trip on every POST (a remembered key leaves that read to the intake)."""
    if not key or len(key) > 200:
        return None
    hit = remembered(key, now)
    if hit is not None:
        return hit
    key_hash = _digest(key)
    row = session.connection().execute(_BY_KEY, {"key_hash": key_hash}).first()
    if row is None or row.revoked_at is not None:
        _forget(key_hash)
        return None
    reference.read_along(session, row.reference_revision)
    client = Verified(row.id, row.name)
    with _lock:
        if len(_verified) >= MAX_VERIFIED:
            _verified.clear()
        _verified[key_hash] = (client, now + VERIFIED_FOR)
    return client
