"""A scripted Call for flow tests, on simulated time: no sleeps, no sockets.

Time (``now_ms``) moves only when the flow waits: reading a frame that hasn't "arrived" yet,
a DTMF timeout, or waiting for playback to finish. Caller frame i arrives at 20·(i+1) ms and
stays buffered until read, as in ``RtpSession``; keys arrive at their scripted time.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import numpy as np

from telephony.endpoint import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    CallDirection,
    CallState,
    Disposition,
    check_transition,
)

START = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def speech(ms: int, level: float = 6000) -> list[bytes]:
    """Frames loud enough to be speech (≈ -18 dBFS), a 300 Hz tone."""
    t = np.arange(FRAME_SAMPLES * (ms // FRAME_MS)) / 8000
    pcm = (level * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def silence(ms: int, level: float = 0) -> list[bytes]:
    rng = np.random.default_rng(ms)
    frames = []
    for _ in range(ms // FRAME_MS):
        frames.append((rng.standard_normal(FRAME_SAMPLES) * level).astype("<i2").tobytes())
    return frames


class FakeCall:
    def __init__(
        self,
        *,
        frames: Iterable[bytes] = (),
        keys: Iterable[tuple[int, str]] = (),
        hangup_at_ms: int | None = None,
        call_id: str = "fake-call-1",
        direction: CallDirection = CallDirection.INBOUND,
        remote_number: str = "13800000000",
        codec: str = "PCMU",
    ) -> None:
        self.call_id = call_id
        self.direction = direction
        self.local_uri = "sip:12345@hotline.test"
        self.remote_number = remote_number
        self.remote_uri = f"sip:{remote_number}@caller.test"
        self.codec = codec
        self.state = CallState.ANSWERED
        self.disposition: Disposition | None = None
        self.arrived_at = START
        self.answered_at: datetime | None = START
        self.ended_at: datetime | None = None
        self.ended = threading.Event()

        self.now_ms = 0
        self._frames = list(frames)
        self._cursor = 0
        self._keys = deque(sorted(keys, key=lambda k: k[0]))
        self._hangup_at = hangup_at_ms
        self._play_end_ms = 0
        self.played: list[tuple[int, bytes]] = []  # (start ms, pcm) as queued
        self.cleared_at: list[int] = []
        self._cuts: list[tuple[int, int]] = []  # (how many items were queued, ms)
        self.states: list[CallState] = []
        self.frames_read = 0
        self.keys_sent: list[str] = []
        # Told after every move of the simulated time: a queue engine on this call's clock
        # fires its deadlines from here (tests/telephony/test_queue_flow.py).
        self.on_time: Callable[[], None] | None = None

    # ---------------------------------------------------------------- time
    def _advance_to(self, ms: float) -> None:
        ms = int(ms)
        if self._hangup_at is not None and ms >= self._hangup_at and not self.ended.is_set():
            self.now_ms = max(self.now_ms, self._hangup_at)
            self._end(Disposition.CALLER_HUNG_UP)
            return
        self.now_ms = max(self.now_ms, ms)
        if self.on_time is not None:
            self.on_time()

    def _end(self, disposition: Disposition) -> None:
        self.state = CallState.ENDED
        self.states.append(CallState.ENDED)
        self.disposition = disposition
        self.ended_at = START
        self.ended.set()

    # ---------------------------------------------------------------- Call protocol
    def set_state(self, state: CallState) -> None:
        check_transition(self.state, state)
        self.state = state
        self.states.append(state)

    def read_frame(self, timeout: float) -> bytes | None:
        if self.ended.is_set():
            # As a real call: what arrived before the end is still read, then None.
            if self._cursor < len(self._frames) and FRAME_MS * (self._cursor + 1) < self.now_ms:
                self._cursor += 1
                self.frames_read += 1
                return self._frames[self._cursor - 1]
            return None
        if self._cursor < len(self._frames):
            arrives = FRAME_MS * (self._cursor + 1)
            if arrives > self.now_ms + timeout * 1000:
                self._advance_to(self.now_ms + timeout * 1000)
                return None if self.ended.is_set() else b""
            self._advance_to(arrives)
            if self.ended.is_set():
                return None
            frame = self._frames[self._cursor]
            self._cursor += 1
            self.frames_read += 1
            return frame
        self._advance_to(self.now_ms + timeout * 1000)
        return None if self.ended.is_set() else b""

    def send_audio(self, pcm: bytes) -> None:
        start = max(self.now_ms, self._play_end_ms)
        self.played.append((start, pcm))
        self._play_end_ms = start + len(pcm) // 16  # 16 bytes a millisecond

    def wait_sent(self, timeout: float | None = None) -> bool:
        if self.ended.is_set():
            return False
        self._advance_to(self._play_end_ms)
        return not self.ended.is_set()

    def clear_audio(self) -> None:
        self.cleared_at.append(self.now_ms)
        self._cuts.append((len(self.played), self.now_ms))
        self._play_end_ms = self.now_ms

    def read_dtmf(self, timeout: float) -> str | None:
        if self.ended.is_set():
            return None
        if self._keys and self._keys[0][0] <= self.now_ms + timeout * 1000:
            at, key = self._keys.popleft()
            self._advance_to(at)
            return None if self.ended.is_set() else key
        self._advance_to(self.now_ms + timeout * 1000)
        return None

    def hangup(self) -> None:
        if not self.ended.is_set():
            self._end(Disposition.COMPLETED)

    def send_dtmf(self, key: str) -> bool:
        self.keys_sent.append(key)
        return not self.ended.is_set()

    @property
    def queued_ms(self) -> int:
        return max(0, self._play_end_ms - self.now_ms)

    # ---------------------------------------------------------------- for assertions
    def heard(self, prompts: FakePrompts) -> list[str]:
        """The prompt pieces the caller heard, in order (cut prompts up to the cut)."""
        names: list[str] = []
        for i, (start, pcm) in enumerate(self.played):
            cut = next((ms for queued, ms in self._cuts if queued > i), None)
            if cut is not None:
                pcm = pcm[: max(0, cut - start) * 16]
            names += prompts.decode(pcm)
        return names


class FakePrompts:
    """Each prompt is 100 ms of a constant sample unique to its name, so played audio can be
    decoded back to names."""

    PIECE_BYTES = 1600

    def __init__(self) -> None:
        self._by_value: dict[int, str] = {}
        self._by_name: dict[str, bytes] = {}

    def pcm(self, name: str) -> bytes:
        if name not in self._by_name:
            value = 1000 + len(self._by_name)
            self._by_value[value] = name
            self._by_name[name] = np.full(self.PIECE_BYTES // 2, value, "<i2").tobytes()
        return self._by_name[name]

    def decode(self, pcm: bytes) -> list[str]:
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], "<i2")
        names = []
        for i in range(0, len(samples), self.PIECE_BYTES // 2):
            names.append(self._by_value[int(samples[i])])
        return names


class PipeCall:
    """A Call on real time for the bridge's threads: the test feeds the far end's frames
    and keys (``feed``, ``press``); what the call is sent collects in ``sent``."""

    def __init__(self, call_id: str = "pipe-call", *, remote_number: str = "13800000000") -> None:
        self.call_id = call_id
        self.direction = CallDirection.INBOUND
        self.local_uri = "sip:12345@hotline.test"
        self.remote_number = remote_number
        self.remote_uri = f"sip:{remote_number}@caller.test"
        self.codec = "PCMU"
        self.state = CallState.ANSWERED
        self.disposition: Disposition | None = None
        self.arrived_at = START
        self.answered_at: datetime | None = START
        self.ended_at: datetime | None = None
        self.ended = threading.Event()
        self._frames: queue.Queue[bytes] = queue.Queue()
        self._keys: queue.Queue[str] = queue.Queue()
        self.sent = bytearray()
        self.cleared = 0
        self.keys_sent: list[str] = []
        self.takes_keys = True
        # What the bridge sees queued to this call; a test sets it to walk the delay bound.
        self.queued_ms = 10
        self._lock = threading.Lock()

    def feed(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME_BYTES):
            self._frames.put(pcm[i : i + FRAME_BYTES])

    def press(self, key: str) -> None:
        self._keys.put(key)

    def far_end_hangs_up(self) -> None:
        self._end(Disposition.CALLER_HUNG_UP)

    def _end(self, disposition: Disposition) -> None:
        with self._lock:
            if self.ended.is_set():
                return
            self.state = CallState.ENDED
            self.disposition = disposition
            self.ended.set()

    def set_state(self, state: CallState) -> None:
        check_transition(self.state, state)
        self.state = state

    def read_frame(self, timeout: float) -> bytes | None:
        try:
            return self._frames.get(timeout=0 if self.ended.is_set() else timeout)
        except queue.Empty:
            return None if self.ended.is_set() else b""

    def send_audio(self, pcm: bytes) -> None:
        if not self.ended.is_set():
            with self._lock:
                self.sent += pcm

    def wait_sent(self, timeout: float | None = None) -> bool:
        return not self.ended.is_set()

    def clear_audio(self) -> None:
        self.cleared += 1

    def read_dtmf(self, timeout: float) -> str | None:
        try:
            return self._keys.get(timeout=timeout) if timeout > 0 else self._keys.get_nowait()
        except queue.Empty:
            return None

    def hangup(self) -> None:
        self._end(Disposition.COMPLETED)

    def send_dtmf(self, key: str) -> bool:
        if not self.takes_keys or self.ended.is_set():
            return False
        self.keys_sent.append(key)
        return True


class FakeDial:
    """``dial`` for transfer tests: each call hands out the next scripted answer — a
    ``PipeCall`` (answered once ``answer`` is set) or a ``CallFailed`` to raise — and honours
    ``cancel`` as the edge does (``CallFailed(CANCELLED)`` soon after it is set)."""

    def __init__(self, *answers: PipeCall | Exception) -> None:
        self.answers = list(answers)
        self.answer = threading.Event()
        self.dialled: list[tuple[str, float]] = []
        self.cancelled = threading.Event()

    def __call__(
        self, uri: str, *, ring_timeout: float, cancel: threading.Event | None = None
    ) -> PipeCall:
        from telephony.endpoint import CallFailed

        self.dialled.append((uri, ring_timeout))
        if not self.answers:
            raise RuntimeError("nothing more scripted: a dial that breaks")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        for _ in range(int(ring_timeout / 0.01)):
            if cancel is not None and cancel.is_set():
                self.cancelled.set()
                raise CallFailed(Disposition.CANCELLED)
            if self.answer.wait(0.01):
                return answer
        raise CallFailed(Disposition.NO_ANSWER)
