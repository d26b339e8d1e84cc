"""The call records' writes of one SIP process, grouped: every call's record at answer (its
ticket and row) and at its end goes through one thread, which writes whatever is waiting in
one transaction (a group commit).

A transaction of its own for each write (a session, a pooled connection, BEGIN and COMMIT)
cost about a third of the CPU of a call's record at answer and most of its end's, three
times a call, each in a thread of its own competing for the SIP process's one GIL with the
receive thread that answers the next INVITE. Here the waiting writes of many calls share one
transaction: a burst costs one commit, an idle edge none, and nothing waits on purpose (what
comes while a batch commits is the next batch).

Nothing is acknowledged before its commit: a call's flow waits for its record at answer (the
greeting starts once the record is durable, as before), and the end of a call is written
moments after it ended — a process killed in between leaves the call as one killed mid-call,
which crash recovery closes (``hotline.calls.recovery``). A write that fails takes its batch
back with it; the batch is then written again one write a transaction, so one bad call costs
the others nothing (every write is an upsert or idempotent: running it again is safe)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlmodel import Session

from core.db import session_scope
from core.runtime import SessionFactory

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MAX = 200
"""Writes in one transaction at most (a burst of answers waits for one commit, not more)."""


class CallRecordWriter:
    """``submit(work)`` runs ``work(session)`` on the writer's thread inside a transaction
    shared with the other waiting writes; the future has its result once committed."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        batch_max: int = BATCH_MAX,
        name: str = "cdr-writer",
    ) -> None:
        self._factory = session_factory
        self._batch_max = max(1, batch_max)
        self._name = name
        self._pending: deque[tuple[Callable[[Session], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.transactions = 0  # committed (tests: a burst is one)

    def submit(self, work: Callable[[Session], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the call record writer is closed")
            self._pending.append((work, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is waiting, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return  # closed, and everything written
                batch = [
                    self._pending.popleft() for _ in range(min(self._batch_max, len(self._pending)))
                ]
            self._write(batch)

    def _write(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            with session_scope(self._factory) as session:
                for work, _ in batch:
                    results.append(work(session))
        except Exception as exc:
            if len(batch) > 1:
                for one in batch:  # each alone: the failing one fails by itself
                    self._write([one])
                return
            batch[0][1].set_exception(exc)
            return
        self.transactions += 1
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
