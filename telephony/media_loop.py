"""The media loop: one thread per process serving every call's RTP on a 20 ms tick.

Each tick it drains the sockets that have packets, doing the least it can per packet (parse,
source check, insert into the jitter buffer: ``RtpSession._drain``), wakes each call's reader
at most once, and sends each call its next packet: audio when some is queued, comfort silence
otherwise, because phones and SBCs treat a silent RTP stream as a dead call. Decoding G.711
happens in the reader's thread. Two threads per call (a receiver woken by every packet, a
sender by every 20 ms timer) made a busy SIP process wake thousands of times a second, and
each wake-up preempted a speech decoder on the same cores; a shared tick wakes 50 times a
second whatever the number of calls, and the sockets' receive buffers hold the packets
between ticks.

A session with nowhere to send and nothing queued — a leg whose media went to rtpengine
(``sip_reinvite.NOWHERE``), a phone holding with c=0.0.0.0 — is *parked*: it leaves the
tick's send pass until something gives it work again (``RtpSession.set_remote``,
``send_audio``, ``send_dtmf`` ask ``unpark``), its clock then moved on by the time it was
away. Its socket stays registered, so a stray packet is still drained (epoll costs nothing
for a quiet socket). 512 parked legs of 256 calls relayed by rtpengine cost the loop 11–15 %
of a core when it still called each of them every 20 ms.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telephony.rtp_session import RtpSession

log = logging.getLogger(__name__)

TICK_S = 0.02
# Readers are woken every this many ticks (100 ms): well inside a reader's 200 ms timeout and
# a DTMF key's or a barge-in's reaction time, a fifth of the wake-ups of every tick; a reader
# takes the frames of a wake-up in one piece (``RtpSession.read_frames``). At 60 ms the
# readers' wake-ups were the largest share of a 400-call SIP process's CPU.
# Each session has its own tick among those (its phase, dealt in turn as sessions join), so a
# tick wakes a fifth of the readers, not all of them every fifth tick: every thread woken
# waits for the GIL, and a thread waiting for it wakes once a switch interval to ask for it
# (``sip_transport.gil_handover_for``), so fewer readers woken at once means fewer futile
# wake-ups and a shorter wait for the loop's next tick.
_WAKE_READERS_EVERY = 5
_REPORT_EVERY_S = 30.0  # the loop logs its tick times this often while it carries calls
MAX_SEND_BEHIND_S = 0.2  # a sender (and the loop) this far behind its pace resumes it
# Datagrams one session may take per tick: 12 times a 20 ms stream's rate, so a phone's burst
# after a network stall drains at once, while a flood on one port leaves time for the others.
_DRAIN_LIMIT = 12
_JOIN, _LEAVE, _UNPARK = 0, 1, 2  # the changes ``add``, ``remove`` and ``unpark`` queue


class MediaLoop:
    """One thread serving the RTP of many sessions on a 20 ms tick (see the module
    docstring). ``shared()`` is the process's loop, started on first use; a loop of one's own
    is for tests and for a process that wants its media on more than one thread.

    ``add`` and ``remove`` only queue the change, which the loop applies at its next tick:
    they are called from the SIP receive thread, which must not wait for a tick in progress.
    """

    _shared: MediaLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(
        self,
        *,
        name: str = "rtp-loop",
        tick_s: float = TICK_S,
        wake_readers_every: int = _WAKE_READERS_EVERY,
    ) -> None:
        if wake_readers_every < 1:
            raise ValueError(f"wake_readers_every must be at least 1, got {wake_readers_every}")
        self.name = name
        self.tick_s = tick_s
        self.wake_readers_every = wake_readers_every
        # Sessions with audio they have not been woken for, by their phase (the tick among
        # every ``wake_readers_every`` that wakes them).
        self._readers: list[dict[int, RtpSession]] = [{} for _ in range(wake_readers_every)]
        self._phases: dict[int, int] = {}  # by session id
        self._next_phase = 0
        self._selector = selectors.DefaultSelector()
        self._sessions: dict[int, RtpSession] = {}  # by id; only the loop's thread touches it
        # Those the send pass ticks: every session but the parked ones (the loop's thread).
        self._ticked: dict[int, RtpSession] = {}
        self._changes: deque[tuple[int, RtpSession]] = deque()  # (_JOIN…, session), in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.late_ticks = 0  # ticks that began after the next one was due
        self._durations: list[float] = []  # of the ticks since the last report
        self._reported = time.monotonic()

    @classmethod
    def shared(cls) -> MediaLoop:
        with cls._shared_lock:
            if cls._shared is None or not cls._shared.running:
                cls._shared = cls()
                cls._shared.start()
            return cls._shared

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def __len__(self) -> int:
        """Sessions served as of the last tick."""
        return len(self._sessions)

    @property
    def ticked(self) -> int:
        """Sessions the send pass ticked at the last tick (the parked ones not)."""
        return len(self._ticked)

    def is_ticked(self, session: RtpSession) -> bool:
        return id(session) in self._ticked

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._selector.close()

    def add(self, session: RtpSession) -> None:
        if self._stop.is_set():
            raise RuntimeError(f"media loop {self.name} is stopped")
        self._changes.append((_JOIN, session))

    def remove(self, session: RtpSession) -> None:
        self._changes.append((_LEAVE, session))

    def unpark(self, session: RtpSession) -> None:
        """A parked session has work again: ticked from the next tick on. Any thread; a
        session that is not parked is left as it is."""
        self._changes.append((_UNPARK, session))

    def _apply_changes(self, now: float) -> None:
        # In order, so a socket closed and its descriptor number reused by a new session's
        # socket is unregistered before the new one registers.
        while self._changes:
            change, session = self._changes.popleft()
            key = id(session)
            if change == _JOIN:
                if session._stopped or key in self._sessions:
                    continue
                self._selector.register(session._sock, selectors.EVENT_READ, session)
                self._sessions[key] = session
                self._ticked[key] = session
                self._phases[key] = self._next_phase
                self._next_phase = (self._next_phase + 1) % self.wake_readers_every
            elif change == _UNPARK:
                if session._parked and self._sessions.get(key) is session:
                    session._parked = False
                    session._resume(now)
                    self._ticked[key] = session
            elif self._sessions.pop(key, None) is not None:
                self._ticked.pop(key, None)
                self._readers[self._phases.pop(key)].pop(key, None)
                try:
                    self._selector.unregister(session._sock)
                except (KeyError, ValueError, OSError):
                    pass

    def _park(self, session: RtpSession) -> None:
        """Out of the send pass until ``unpark``. Marked first, then looked at again: work
        given meanwhile by a thread that saw it not yet parked (and so asked no ``unpark``)
        keeps it ticked."""
        session._parked = True
        if session._idle():
            self._ticked.pop(id(session), None)
        else:
            session._parked = False

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._tick(began)
            except Exception:
                log.exception("media loop %s tick failed", self.name)
            self.ticks += 1
            if self._sessions:
                self._durations.append(time.monotonic() - began)
                if began - self._reported >= _REPORT_EVERY_S:
                    self._report(began)
            due += self.tick_s
            delay = due - time.monotonic()
            if delay < -MAX_SEND_BEHIND_S:
                self.late_ticks += 1
                due = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)
            else:
                self.late_ticks += 1

    def _report(self, now: float) -> None:
        durations = sorted(self._durations)
        late = self.late_ticks - getattr(self, "_late_reported", 0)
        log.info(
            "media loop %s: %d calls (%d parked); %d ticks in %.0f s, %d late; tick p50 "
            "%.1f ms, p99 %.1f ms, max %.1f ms",
            self.name,
            len(self._sessions),
            len(self._sessions) - len(self._ticked),
            len(durations),
            now - self._reported,
            late,
            1000 * durations[len(durations) // 2],
            1000 * durations[int(len(durations) * 0.99)],
            1000 * durations[-1],
        )
        self._late_reported = self.late_ticks
        self._durations = []
        self._reported = now

    def _tick(self, now: float) -> None:
        self._apply_changes(now)
        if not self._sessions:
            return
        readers, phases = self._readers, self._phases
        for key, _ in self._selector.select(0):
            session = key.data
            if session._stopped or not session._recv_lock.acquire(blocking=False):
                continue  # stopped, or its reader is draining it: the loop must not wait
            try:
                if session._drain(_DRAIN_LIMIT):
                    readers[phases[id(session)]][id(session)] = session
            except Exception:
                log.exception("RTP receive on %s failed", session.local_address)
            finally:
                session._recv_lock.release()
        idle: list[RtpSession] = []
        for session in self._ticked.values():
            if session._stopped:
                continue  # by a DTMF listener earlier in this tick, or by another thread
            try:
                if session._send_due(now):
                    idle.append(session)
            except Exception:
                log.exception("RTP send on %s failed", session.local_address)
        for session in idle:
            self._park(session)
        # Readers are woken last: woken during the tick, they would contend for the GIL
        # with the loop at every one of its socket calls. And each only every few ticks (its
        # phase): a reader then takes a few frames a wake-up, every wake-up of the SIP
        # process is one more preemption of a speech decoder on the same cores, and a tick
        # wakes only the readers of its phase (see ``_WAKE_READERS_EVERY``).
        due = readers[self.ticks % self.wake_readers_every]
        if due:
            for session in due.values():
                session._wake_reader()
            due.clear()
