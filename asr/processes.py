"""Live decoding in processes of their own: the Recognizer a SIP edge uses on many cores.

Why processes. Each 20 ms frame a decoder feeds comes back from libvosk to Python twice
(the frame, the partial), so a decoder thread needs the GIL fifty times a second. In one
process that also runs every call's RTP and flow threads, decoders then queue for the GIL
behind preempted holders, and live ASR falls behind with cores idle (bench/calls.py measured
the SIP process's decoders at 70–78 % of what raw Vosk threads sustain, the CPU never full).
Here each decoder process has its own GIL and a few decoder threads (`threads`, by default
one per CPU) that take its streams in turn, a stream's batches in order, and the SIP process
keeps only the calls' media. Threads, not one decode at a time: streams are placed on a
child when they open and stay there, so a child with one stream more than the other would
otherwise be held to one core while the other child's core idled (bench/calls.py, 2 cores,
one thread per child: 9 live calls failed with the machine at 140 %).

The shape. `DecoderProcesses` starts `processes` children, a socket pair between the
parent and each (the child's serving loop is asr/decoder_child.py). By default they share
one loaded model: a fork server (asr/zygote.py, started like any child) loads it once and
forks the children, which share its pages copy-on-write (bench/asr_memory.py: a forked
child adds ~55 MB once it has decoded a call, one that loads the Korean model ~565 MB).
With `share_model=False` each child is `python -m asr.decoder_child` and loads the model
itself. Each keeps its own pool of warmed recognizers (a `VoskRecognizer`). A stream lives
in one child, the one with the fewest streams when it was opened; its audio goes there over
a pipe in the batches the live transcriber sends (0.4 s or more), and the child feeds the
engine 20 ms frames as ever, so the transcript is the one an offline decode
gives. Live admission (`max_live_streams`) is counted here, over all children.

When a child dies (libvosk aborts, the OOM killer), its streams fail with `AsrError` — the
live transcriber gives up and the call is transcribed offline from its recording — and the
child is started again in the background (forked again: no model to load); meanwhile the
others take the new streams. When the zygote dies, the children go on decoding and the
zygote is started again, with the same growing delay; a child that dies meanwhile waits for
it. The parent never forks (it runs threads): `subprocess.Popen`, not multiprocessing,
whose spawn would import the parent's __main__ (the whole CLI) again in every child.
"""

from __future__ import annotations

import itertools
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from asr.config import AsrConfig, decoder_env
from asr.recognizer import DEFAULT_SAMPLE_RATE, AsrError, Partial, Transcript, check_pcm
from asr.zygote import Zygote

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]  # where `asr` is importable from

# Batches of one stream on their way to its child at once (a batch is 100–500 ms of audio).
IN_FLIGHT = 4
# A request a child has not answered in this long is taken as a hung engine.
REQUEST_TIMEOUT_S = 60.0
# Loading the model in a fresh child (the Korean one: ~1.3 s on this machine, more when
# the disk cache is cold or several load at once).
START_TIMEOUT_S = 120.0
# A child that died is started again after this long, doubling while it keeps dying young.
RESTART_DELAY_S = (1.0, 60.0)


@dataclass(frozen=True)
class DecoderStats:
    processes: int  # configured
    ready: int  # children answering now
    live: int  # live streams admitted and not yet closed, over all children
    restarts: int  # children started again after dying
    zygote_restarts: int = 0  # the model-sharing fork server started again after dying


class DecoderProcesses:
    """A Recognizer whose streams decode in child processes. Thread-safe.

    `load()` starts the children and waits until each has loaded the model (a bad model
    path is then one clear `AsrError`); streams opened before that, or while every child is
    down, are refused (`try_open_stream` returns None: the call is transcribed offline).
    `close()` stops the children (and the zygote). `share_model=False`: each child loads the
    model itself (the way before the zygote, kept to measure against).
    """

    # Each child decodes its streams in turn on its own threads: no DecodeSlots in the parent.
    decodes_elsewhere = True

    def __init__(
        self,
        config: AsrConfig | None = None,
        *,
        processes: int = 1,
        threads: int = 1,
        share_model: bool = True,
    ) -> None:
        if processes < 1:
            raise AsrError(f"need at least one decoder process, got {processes}")
        if threads < 1:
            raise AsrError(f"need at least one decoder thread per process, got {threads}")
        self.config = config or AsrConfig()
        self.threads = threads
        self._zygote = (
            Zygote(self.config, threads=threads, on_death=self._zygote_died)
            if share_model
            else None
        )
        self._children = [
            _Child(index, self.config, self._child_died, threads=threads, zygote=self._zygote)
            for index in range(processes)
        ]
        self._lock = threading.Lock()
        self._live = 0
        self._restarts = 0
        self._zygote_restarts = 0
        self._closed = False

    def load(self, timeout: float = START_TIMEOUT_S) -> None:
        try:
            if self._zygote is not None:
                self._zygote.start()
                self._zygote.wait_ready(timeout)
            for child in self._children:
                child.start()
            for child in self._children:
                child.wait_ready(timeout)
        except AsrError:
            self.close()
            raise

    def open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> RemoteStream:
        with self._lock:
            child = self._pick()
        if child is None:
            raise AsrError("no decoder process is running")
        return RemoteStream(child, sample_rate, grammar, on_close=None)

    def try_open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> RemoteStream | None:
        with self._lock:
            if self._closed or self._live >= self.config.max_live_streams:
                return None
            child = self._pick()
            if child is None:
                return None
            self._live += 1
        return RemoteStream(child, sample_rate, grammar, on_close=self._release_live)

    def warm(
        self,
        pcm16: bytes,
        *,
        count: int,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        stop: threading.Event | None = None,
    ) -> int:
        """`VoskRecognizer.warm` in every child at once, `count` shared out among them (each
        child's streams find its own pool). Returns how many were warmed in all."""
        data = check_pcm(pcm16)
        if count < 0:
            raise AsrError(f"count must be >= 0, got {count}")
        children = [c for c in self._children if c.ready]
        if not children or count == 0:
            return 0
        share = math.ceil(count / len(children))
        futures = [(child, child.send("warm", 0, (data, share, sample_rate))) for child in children]
        total, errors = 0, []
        for _child, future in futures:
            while True:
                try:
                    total += future.result(timeout=0.2)
                    break
                except FutureTimeout:
                    if stop is not None and stop.is_set():
                        for other in children:
                            other.send("stop-warm", 0, None)
                        stop = None  # asked once; the children end their warm-up soon
                except AsrError as exc:  # that child died meanwhile; the others went on
                    errors.append(str(exc))
                    break
        if errors and not total:
            raise AsrError("; ".join(errors))
        return total

    def stats(self) -> DecoderStats:
        with self._lock:
            return DecoderStats(
                processes=len(self._children),
                ready=sum(c.ready for c in self._children),
                live=self._live,
                restarts=self._restarts,
                zygote_restarts=self._zygote_restarts,
            )

    def pids(self) -> list[int | None]:
        """The children's process ids (None: not running); for operators and tests."""
        return [c.pid for c in self._children]

    @property
    def zygote_pid(self) -> int | None:
        """The process that forks the children (None: `share_model=False`, or not started)."""
        return None if self._zygote is None else self._zygote.pid

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
        for child in self._children:
            child.stop(timeout)
        if self._zygote is not None:
            self._zygote.stop(timeout)

    def _pick(self) -> _Child | None:
        """The running child with the fewest streams, counted as taken (under `_lock`)."""
        child = min((c for c in self._children if c.ready), key=lambda c: c.streams, default=None)
        if child is not None:
            child.streams += 1
        return child

    def _release_live(self) -> None:
        with self._lock:
            self._live -= 1

    def _child_died(self, child: _Child) -> None:
        with self._lock:
            if self._closed:
                return
            self._restarts += 1
        threading.Thread(
            target=child.restart,
            args=(lambda: self._closed,),
            name=f"asr-decoder-{child.index}-restart",
            daemon=True,
        ).start()

    def _zygote_died(self, zygote: Zygote) -> None:
        with self._lock:
            if self._closed:
                return
            self._zygote_restarts += 1
        threading.Thread(
            target=zygote.restart,
            args=(lambda: self._closed, RESTART_DELAY_S, START_TIMEOUT_S),
            name="asr-zygote-restart",
            daemon=True,
        ).start()


class RemoteStream:
    """A Stream decoding in a child. Used by one thread at a time, like every Stream.

    `accept` does not wait for its own batch: up to `IN_FLIGHT` batches of a stream are on
    their way at once, so that the child always has this stream's next audio queued
    rather than idling while the parent's thread is scheduled to send it. What `accept`
    returns is the running text as of the batches answered so far; errors come back on a
    later `accept` or on `finish`, which waits for every batch."""

    _ids = itertools.count(1)

    def __init__(
        self,
        child: _Child,
        sample_rate: int,
        grammar: str | Sequence[str] | None,
        on_close: Callable[[], None] | None,
    ) -> None:
        self._child = child
        self._on_close = on_close
        self._id = next(self._ids)
        self._state = "open"
        # Not waited for either: the socket keeps order, so the child opens the stream
        # before it sees its audio, and a refusal (a bad grammar) comes back in its turn.
        grammar = grammar if grammar is None or isinstance(grammar, str) else list(grammar)
        self._in_flight: deque[Future] = deque(
            [child.send("open", self._id, (sample_rate, grammar))]
        )

    @property
    def process_index(self) -> int:
        return self._child.index

    def accept(self, pcm16: bytes) -> Partial | None:
        self._check_open()
        data = check_pcm(pcm16)
        if not data:
            return None
        self._in_flight.append(self._child.send("accept", self._id, data))
        text = None
        while self._in_flight and (len(self._in_flight) > IN_FLIGHT or self._in_flight[0].done()):
            answer = self._child.result(self._in_flight.popleft())
            if answer is not None:
                text = answer
        return None if text is None else Partial(text)

    def finish(self) -> Transcript:
        self._check_open()
        try:
            final = self._child.send("finish", self._id, None)
            while self._in_flight:
                self._child.result(self._in_flight.popleft())
            return self._child.result(final)
        finally:
            self._state = "finished"

    def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._child.streams = max(0, self._child.streams - 1)
        self._child.send("close", self._id, None)  # not waited for; a dead child has none
        if self._on_close is not None:
            self._on_close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise AsrError(f"the stream is {self._state}; it accepts no more audio")


class _Process(Protocol):
    """A decoder process as the parent holds it: a `subprocess.Popen`, or a
    `zygote.Forked`."""

    pid: int

    def wait(self, timeout: float | None = None) -> int | None: ...

    def kill(self) -> None: ...


class _Child:
    """The parent's side of one decoder process: a socket, the requests awaiting an answer,
    and a thread reading the answers."""

    def __init__(
        self,
        index: int,
        config: AsrConfig,
        on_death: Callable[[_Child], None],
        *,
        threads: int = 1,
        zygote: Zygote | None = None,
    ) -> None:
        self.index = index
        self._threads = threads
        self._zygote = zygote
        self._config = config
        self._on_death = on_death
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._process: _Process | None = None
        self._conn: Connection | None = None
        self._ready = threading.Event()
        self._start_error: str | None = None
        self._stopping = False
        self.streams = 0  # open in this child (approximate: for placement only)
        self.ready = False
        self.pid: int | None = None

    def start(self) -> None:
        """Start the process (forked by the zygote, else its own program); `wait_ready`
        then waits for its model."""
        ours, theirs = socket.socketpair()
        process: _Process
        try:
            if self._zygote is not None:
                process = self._zygote.fork(theirs, START_TIMEOUT_S)
            else:
                process = self._popen(theirs)
        except (OSError, AsrError) as exc:
            ours.close()
            raise AsrError(f"cannot start decoder process {self.index}: {exc}") from None
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        with self._lock:
            self._process, self._conn = process, conn
            self._ready.clear()
            self._start_error = None
            self._stopping = False
            self.pid = process.pid
        hello = self.send("hello", 0, self._config)
        threading.Thread(
            target=self._read, args=(conn, process), name=f"asr-decoder-{self.index}", daemon=True
        ).start()
        hello.add_done_callback(self._hello_done)

    def _popen(self, theirs: socket.socket) -> subprocess.Popen:
        env = decoder_env(self._config, _ROOT)
        return subprocess.Popen(
            [sys.executable, "-m", "asr.decoder_child", str(theirs.fileno()), str(self._threads)],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def _hello_done(self, future: Future) -> None:
        if future.exception() is None:
            self.ready = True
        else:
            self._start_error = str(future.exception())
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise AsrError(
                f"decoder process {self.index} did not load the speech model within {timeout:g} s"
            )
        if not self.ready:
            raise AsrError(self._start_error or f"decoder process {self.index} is not running")

    def send(self, op: str, stream: int, arg: Any) -> Future:
        future: Future = Future()
        with self._lock:
            conn = self._conn
            if conn is None or self._stopping:
                future.set_exception(AsrError(f"decoder process {self.index} is not running"))
                return future
            rid = next(self._ids)
            self._pending[rid] = future
            try:
                conn.send((rid, op, stream, arg))
            except (OSError, ValueError) as exc:
                del self._pending[rid]
                future.set_exception(AsrError(f"decoder process {self.index} is gone: {exc}"))
        return future

    def result(self, future: Future, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise AsrError(
                f"decoder process {self.index} did not answer within {timeout:g} s"
            ) from None

    def _read(self, conn: Connection, process: _Process) -> None:
        while True:
            try:
                rid, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = self._pending.pop(rid, None)
            if future is not None:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(AsrError(value))
        try:
            code = process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        with self._lock:
            failed, self._pending = self._pending, {}
            if self._conn is conn:
                self._conn = None
            stopping = self._stopping
        self.ready = False
        self.streams = 0
        for future in failed.values():
            future.set_exception(AsrError(f"decoder process {self.index} exited (code {code})"))
        conn.close()
        if self._start_error is None and not self._ready.is_set():
            self._start_error = (
                f"decoder process {self.index} exited with code {code} "
                "while loading the speech model"
            )
        self._ready.set()
        if not stopping and self._start_error is None:
            log.error(
                "decoder process %d (pid %s) exited with code %s; its live calls are "
                "transcribed from their recordings; starting it again",
                self.index,
                process.pid,
                code,
            )
            self._on_death(self)

    def restart(self, closed: Callable[[], bool]) -> None:
        """Start again after a death, with a growing delay while it keeps failing."""
        delay, limit = RESTART_DELAY_S
        while not closed():
            time.sleep(delay)
            if closed():
                return
            try:
                self.start()
                self.wait_ready(START_TIMEOUT_S)
                if closed():  # closed while it started: it must not outlive the close
                    self.stop(10.0)
                    return
                log.info("decoder process %d started again (pid %s)", self.index, self.pid)
                return
            except AsrError as exc:
                log.error("decoder process %d did not start again: %s", self.index, exc)
            delay = min(delay * 2, limit)

    def stop(self, timeout: float) -> None:
        with self._lock:
            self._stopping = True
            conn, process = self._conn, self._process
        if conn is not None:
            try:
                conn.send((0, "stop", 0, None))
            except (OSError, ValueError):
                pass
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.ready = False
