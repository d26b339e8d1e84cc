"""Call keys across processes: a SIP Call-ID that an earlier run of the edge (or another edge
on the same database) already took must not fold a new call into the old record and ticket.
``telephony.sip_call_keys.CallKeys`` asks ``known_call_key`` for each Call-ID its own process
has not met, and takes ``~2``, ``~3``… while a call record holds the key."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from core.db import session_scope, table_of
from core.runtime import SessionFactory
from telephony.models import CallRecord


def known_call_key(session_factory: SessionFactory) -> Callable[[str], bool]:
    """A check for ``SipConfig.call_key_known``: one indexed lookup on the unique
    ``call_record.call_id`` per new Call-ID."""
    table = table_of(CallRecord)

    def known(key: str) -> bool:
        with session_scope(session_factory) as session:
            stmt = select(table.c.id).where(table.c.call_id == key).limit(1)
            return session.scalars(stmt).first() is not None

    return known
