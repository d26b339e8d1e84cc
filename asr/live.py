"""Live transcription of a call: one stream decoded in a thread of its own.

The caller is the call's media thread, which must never wait on decoding, so `feed` only
appends the frame to a queue under a lock that the decoder also holds just for a pop. The
decoder is woken once per `batch_s` of audio, not per 20 ms frame (a busy SIP process runs
thousands of threads' wake-ups a second); it still feeds the engine frame by frame, so the
transcript is the one an offline decode of the same frames gives.

When decoding falls behind (a CPU spike, another stream warming a fresh recognizer) the
frames are kept, not dropped: dropped audio would make a complaint's transcript silently
miss words, while a stall is usually brief and the decoder catches up — the libvosk calls
release the GIL, so streams decode in parallel on the cores. Past `lag_s` the live transcript
is marked `degraded` (its partials come late). Past `backlog_limit_s` the decoder is not
keeping up at all; holding more audio would only grow memory and end late anyway, so the
transcriber gives up, frees the stream, and `finish` raises `LiveTranscriptUnavailable`:
the call is then transcribed offline from its recording, like a call live ASR never took.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from asr.recognizer import DEFAULT_SAMPLE_RATE, FRAME_MS, AsrError, Stream, Transcript
from core import metrics

log = logging.getLogger(__name__)

# Audio a stream decodes per turn in a slot, before the slot passes to the next stream.
QUANTUM_S = 0.5


class DecodeSlots:
    """At most `count` live streams decode at once, the others wait their turn in order.

    Decoding is CPU work in libvosk with the GIL released, but each 20 ms frame comes back
    to Python twice (the frame, the partial). With a thread per call all decoding at once,
    a busy SIP process has many more runnable threads than cores; the kernel then preempts
    threads that hold the GIL, and every decoder returning from libvosk waits for them, so
    decoding falls behind with cores idle. With about one slot per core the cores stay busy
    and the GIL changes hands between few threads. A stream keeps its slot for a quantum
    (`QUANTUM_S` of audio, or less when less is pending), which also keeps one
    recognizer's state hot in the CPU cache for a while.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise AsrError(f"need at least one decode slot, got {count}")
        self.count = count
        self._busy = 0
        self._waiting: deque[threading.Lock] = deque()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._busy < self.count and not self._waiting:
                self._busy += 1
                turn = None
            else:
                turn = threading.Lock()
                turn.acquire()
                self._waiting.append(turn)
        if turn is not None:
            turn.acquire()  # released by the stream handing its slot over
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting.popleft().release()  # the slot passes on, in order
                else:
                    self._busy -= 1


class LiveTranscriptUnavailable(AsrError):
    """The live transcript could not be completed; transcribe the recording offline."""


class LiveTranscriber:
    """Call `finish` or `cancel` once the call ends: until then the thread waits for audio
    and the stream (a live slot and a pooled recognizer) stays taken."""

    def __init__(
        self,
        stream: Stream,
        *,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        on_partial: Callable[[str], object] | None = None,
        lag_s: float = 2.0,
        backlog_limit_s: float = 120.0,
        batch_s: float = 0.1,
        slots: DecodeSlots | None = None,
        name: str = "asr-live",
    ) -> None:
        """Takes ownership of `stream` (closes it). `on_partial` runs on the decoder thread.
        `slots`, shared by the process's transcribers, bounds how many decode at once."""
        self._stream = stream
        self._on_partial = on_partial
        self._bytes_per_s = sample_rate * 2
        self._lag_bytes = int(lag_s * self._bytes_per_s)
        self._limit_bytes = int(backlog_limit_s * self._bytes_per_s)
        self._batch_bytes = max(2, int(batch_s * self._bytes_per_s))
        self._slots = slots or DecodeSlots(1)  # none shared: decodes whenever it has audio
        # A turn takes at least a whole batch: a batch is one trip to a decoder process.
        self._quantum_frames = max(1, int(max(QUANTUM_S, batch_s) * 1000 / FRAME_MS))
        self._cond = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._ending = False
        self._degraded = False
        self._failure: str | None = None
        self._result: Transcript | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def degraded(self) -> bool:
        """Decoding fell more than `lag_s` behind at some point: partials were late."""
        return self._degraded

    @property
    def behind_s(self) -> float:
        return self._pending_bytes / self._bytes_per_s

    @property
    def failure(self) -> str | None:
        return self._failure

    def feed(self, frame: bytes) -> None:
        """Queue 16-bit PCM for decoding; returns at once whatever the decoder is doing."""
        if len(frame) % 2:
            raise AsrError(f"audio of {len(frame)} bytes is not a whole number of 16-bit samples")
        with self._cond:
            if self._ending:
                raise AsrError("the live transcript is finished; it accepts no more audio")
            if self._failure is not None:
                return  # given up: the call's recording is the source now
            self._pending.append(bytes(frame))
            self._pending_bytes += len(frame)
            if self._pending_bytes > self._lag_bytes:
                self._degraded = True
            if self._pending_bytes > self._limit_bytes:
                self._give_up(
                    f"live decoding fell more than "
                    f"{self._limit_bytes / self._bytes_per_s:g} s behind"
                )
            if self._pending_bytes >= self._batch_bytes:
                self._cond.notify()

    def finish(self, timeout: float = 30.0) -> Transcript:
        """The final transcript once every fed frame is decoded."""
        with self._cond:
            self._ending = True
            self._cond.notify()
        if not self._done.wait(timeout):
            with self._cond:
                self._give_up(f"live decoding did not finish within {timeout:g} s")
                if self._result is not None:  # it finished in the meantime
                    return self._result
            raise LiveTranscriptUnavailable(self._failure or "live decoding did not finish")
        if self._failure is not None:
            raise LiveTranscriptUnavailable(self._failure)
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop decoding and free the stream; the transcript is not wanted."""
        with self._cond:
            self._give_up("cancelled")

    def _give_up(self, reason: str) -> None:
        if self._failure is None and self._result is None:
            self._failure = reason
        self._pending.clear()
        self._pending_bytes = 0
        self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    # A batch, the end, or a failure; frames short of a batch wait for more.
                    while (
                        self._pending_bytes < self._batch_bytes
                        and not self._ending
                        and self._failure is None
                    ):
                        self._cond.wait()
                    if self._failure is not None:
                        return
                    if not self._pending:
                        break
                with self._slots.slot():
                    self._decode_some()
                metrics.ASR_LIVE_LAG_SECONDS.observe(self.behind_s)
            with self._slots.slot():
                result = self._stream.finish()
            with self._cond:
                if self._failure is None:
                    self._result = result
        except Exception as exc:
            log.exception("live transcription failed")
            with self._cond:
                self._give_up(f"live decoding failed: {exc}")
        finally:
            self._stream.close()
            self._done.set()

    def _decode_some(self) -> None:
        """Up to a quantum of the pending audio in one `accept` (the engine still decodes
        it frame by frame), then the slot goes on. One call per batch, not per frame: a
        stream decoding in another process costs one round trip per batch."""
        with self._cond:
            if self._failure is not None or not self._pending:
                return
            count = min(self._quantum_frames, len(self._pending))
            batch = b"".join(self._pending.popleft() for _ in range(count))
            self._pending_bytes -= len(batch)
        partial = self._stream.accept(batch)
        if partial is not None and self._on_partial is not None:
            self._publish(partial.text)

    def _publish(self, text: str) -> None:
        try:
            self._on_partial(text)  # type: ignore[misc]
        except Exception:
            # A broken subscriber (a closed websocket) must not cost the transcript.
            log.exception("on_partial failed")
