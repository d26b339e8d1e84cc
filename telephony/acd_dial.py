"""Ringing seats with the edge: the ``telephony.acd.Ringer`` that dials an agent's seat
(``SipEdge.seat_target``) with the edge's own ``dial``, one thread per ring."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from telephony.acd import Acd, RingAttempt
from telephony.endpoint import Call, CallFailed, Disposition

log = logging.getLogger(__name__)


class DialRinger:
    """Rings a seat with the edge's blocking ``dial`` on a thread per ring. ``target_of``
    turns an extension into the URI to dial (``SipEdge.seat_target``); None: the seat is not
    registered, which counts as a failed ring.

    ``cancel`` (the caller hung up or asked for a callback while the seat rang) sets the
    event ``dial`` watches: the edge CANCELs the INVITE at once (``sip_outbound``), so the seat
    stops ringing; an answer that crosses the CANCEL is hung up — a short false ring for the
    agent, never a caller bridged to nobody."""

    def __init__(
        self,
        *,
        dial: Callable[..., Call],
        target_of: Callable[[str], str | None],
        acd: Callable[[], Acd],
    ) -> None:
        self._dial = dial
        self._target_of = target_of
        self._acd = acd
        self._cancels: dict[int, threading.Event] = {}  # attempt id -> its dial's cancel
        self._lock = threading.Lock()
        self.ring_delays_ms: deque[float] = deque(maxlen=1000)  # pick → INVITE sent

    def ring(self, attempt: RingAttempt) -> None:
        picked = time.monotonic()
        with self._lock:
            self._cancels[attempt.id] = threading.Event()
        thread = threading.Thread(
            target=self._ring, args=(attempt, picked), name=f"ring-{attempt.id}", daemon=True
        )
        thread.start()

    def cancel(self, attempt: RingAttempt) -> None:
        with self._lock:
            event = self._cancels.get(attempt.id)
        if event is not None:
            event.set()

    def _ring(self, attempt: RingAttempt, picked: float) -> None:
        with self._lock:
            cancel = self._cancels.setdefault(attempt.id, threading.Event())
        try:
            self._ring_once(attempt, picked, cancel)
        finally:
            with self._lock:
                self._cancels.pop(attempt.id, None)

    def _ring_once(self, attempt: RingAttempt, picked: float, cancel: threading.Event) -> None:
        acd = self._acd()
        target = self._target_of(attempt.offer.extension)
        if target is None:
            log.warning("seat %s is not registered: cannot ring it", attempt.offer.extension)
            acd.ring_failed(attempt, Disposition.FAILED)
            return
        self.ring_delays_ms.append(1000 * (time.monotonic() - picked))
        try:
            leg = self._dial(target, ring_timeout=attempt.timeout_s, cancel=cancel)
        except CallFailed as failure:
            acd.ring_failed(attempt, failure.disposition)
            return
        except Exception:
            log.exception("dialling seat %s failed", attempt.offer.extension)
            acd.ring_failed(attempt, Disposition.FAILED)
            return
        if cancel.is_set() or not acd.ring_answered(attempt, leg):
            leg.hangup()
