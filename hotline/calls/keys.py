"""Call keys across processes: a SIP Call-ID that an earlier run of the edge (or another edge
on the same database) already took must not fold a new call into the old record and ticket.
``telephony.sip_call_keys.CallKeys`` asks ``known_call_key`` for each Call-ID its own process
has not met, and takes ``~2``, ``~3``… while a call record holds the key.

Every new call asks, so the asking must cost next to nothing on the SIP process's one GIL: a
session of its own per call (three round trips and the ORM's Python work in each call's
thread) made the SIP receive thread wait for the GIL behind hundreds of lookups at 200 calls/s
(answer delay p50 188–276 ms), and the lookups settled one by one on a single thread made
greetings queue behind each other under load. ``KnownKeys`` does both right: the call threads
hand their keys to one thread, which looks up everything waiting in one query
(``call_id IN (…)``) and answers each; a burst of calls costs one round trip, an idle edge
none. On PostgreSQL that thread keeps one connection in autocommit for its lookups: a
session per lookup cost a pool checkout with its ping, BEGIN and COMMIT — four round trips
and the ORM's Python for a one-row read — and the lookups were a seventh of the SIP
process's CPU at 200 calls/s (py-spy, bench/calls.py, 2026-12-05)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from sqlalchemy import Connection, Engine, bindparam, select

from core.db import table_of
from core.runtime import SessionFactory
from telephony.models import CallRecord

log = logging.getLogger(__name__)

BATCH_MAX = 500
"""Keys looked up in one query at most (bound parameters: SQLite allows 32,766)."""
ANSWER_TIMEOUT_S = 5.0
"""How long a call waits for its answer; beyond it ``CallKeys`` logs and uses the key as
this process sees it (a call is never refused for this check)."""


class KnownKeys:
    """``known(key) -> bool`` for ``SipConfig.call_key_known``, batched on one thread (started
    at the first question, a daemon: it holds nothing that needs flushing)."""

    def __init__(self, session_factory: SessionFactory, *, batch_max: int = BATCH_MAX) -> None:
        self._factory = session_factory
        self._batch_max = batch_max
        self._pending: list[tuple[str, Future[bool]]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.queries = 0  # how many lookups ran (tests: a burst is one query)
        self._conn: Connection | None = None  # PostgreSQL: the lookups' own, in autocommit
        table = table_of(CallRecord)
        self._stmt = select(table.c.call_id).where(
            table.c.call_id.in_(bindparam("keys", expanding=True))
        )

    def __call__(self, key: str) -> bool:
        answer: Future[bool] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the call-key lookup is closed")
            self._pending.append((key, answer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="call-keys", daemon=True)
                self._thread.start()
            self._cond.notify()
        return answer.result(timeout=ANSWER_TIMEOUT_S)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            pending, self._pending = self._pending, []
        for _, answer in pending:
            answer.set_exception(RuntimeError("the call-key lookup is closed"))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._drop_connection(broken=False)
                    return
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
            keys = sorted({key for key, _ in batch})
            try:
                found = self._lookup(keys)
                self.queries += 1
            except Exception as exc:  # every caller logs it and goes on with its key
                self._drop_connection()
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for key, answer in batch:
                if not answer.done():
                    answer.set_result(key in found)

    def _lookup(self, keys: list[str]) -> set[str]:
        if self._conn is None:
            with self._factory() as session:
                bind = session.get_bind()
                if bind.dialect.name != "postgresql" or not isinstance(bind, Engine):
                    # SQLite: in-process, no round trips to save (and its sessions begin
                    # with BEGIN IMMEDIATE, which a held connection would keep).
                    return set(session.scalars(self._stmt, {"keys": keys}))
            self._conn = bind.connect().execution_options(isolation_level="AUTOCOMMIT")
        return set(self._conn.execute(self._stmt, {"keys": keys}).scalars())

    def _drop_connection(self, *, broken: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if broken:
                    conn.invalidate()  # it may be the broken one: never back into the pool
                conn.close()
            except Exception:
                log.debug("closing the call-key lookups' connection failed", exc_info=True)


def known_call_key(session_factory: SessionFactory) -> Callable[[str], bool]:
    """A check for ``SipConfig.call_key_known``: whether a call record holds the key, asked
    of the database in batches (``KnownKeys``)."""
    return KnownKeys(session_factory)
