"""Live partial transcripts written to the call records from a thread of their own."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.clock import Clock
from core.db import session_scope
from core.runtime import SessionFactory
from hotline.calls.records import set_live_text

log = logging.getLogger(__name__)

# A call's running text, and a bridged call's running dialogue (None: the robot's call).
Pending = tuple[str, list[dict[str, Any]] | None]


class PartialWriter:
    """Writes live partial transcripts to the call records from one thread of its own: every
    `interval_s` at most, the latest text of each call that changed, all in one transaction
    (so a call's record changes at most that often, and a hundred live calls cost two commits
    a second, not two hundred). The decoder threads never wait on the database. A bridged
    call's dialogue goes in the same write as its caller's text."""

    def __init__(self, session_factory: SessionFactory, clock: Clock, interval_s: float) -> None:
        self._factory = session_factory
        self._clock = clock
        self._interval = interval_s
        self._cond = threading.Condition()
        self._pending: dict[str, Pending] = {}
        self._next = float("-inf")  # when the next write may run
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cdr-partials", daemon=True)
        self._thread.start()

    def offer(self, call_id: str, text: str, dialogue: list[dict[str, Any]] | None = None) -> None:
        with self._cond:
            self._pending[call_id] = (text, dialogue)
            self._cond.notify()

    def forget(self, call_id: str) -> None:
        with self._cond:
            self._pending.pop(call_id, None)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _due(self) -> dict[str, Pending]:
        """Under the lock: the texts to write now, waiting until a write is due."""
        while True:
            if self._stopping:
                due, self._pending = self._pending, {}
                return due
            if not self._pending:
                self._cond.wait()
                continue
            now = time.monotonic()
            if now >= self._next:
                due, self._pending = self._pending, {}
                self._next = now + self._interval
                return due
            self._cond.wait(self._next - now)

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due()
                stopping = self._stopping
            if due:
                self._write(due)
            if stopping:
                return

    def _write(self, due: dict[str, Pending]) -> None:
        now = self._clock.now()
        try:
            with session_scope(self._factory) as session:
                for call_id, (text, dialogue) in due.items():
                    set_live_text(session, call_id=call_id, text=text, now=now, dialogue=dialogue)
            return
        except Exception:
            log.warning(
                "writing %d live transcript(s) together failed; writing them one by one",
                len(due),
                exc_info=True,
            )
        for call_id, (text, dialogue) in due.items():
            try:
                with session_scope(self._factory) as session:
                    set_live_text(session, call_id=call_id, text=text, now=now, dialogue=dialogue)
            except Exception:
                log.exception("writing the live transcript of call %s failed", call_id)
