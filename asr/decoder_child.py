"""One decoder process: the child side of `asr.processes`, forked by the zygote that loaded
the speech model (asr/zygote.py) or run as `python -m asr.decoder_child`.

Either way it gets the child's end of a socket pair and the number of decoder threads; the
process loads the speech model when the parent says "hello" (a forked one finds it loaded
already, shared with its zygote and siblings), then decodes the streams the parent opens
in it, each stream's requests in order, until the parent says stop or goes away. The
requests and answers are pickled tuples over the socket: `(rid, op, stream, arg)` in,
`(rid, ok, value)` out.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from asr.recognizer import AsrError


def main(argv: Sequence[str]) -> None:
    """`python -m asr.decoder_child FD [THREADS]`: serve the parent on the socket FD until it
    says stop or goes away. Ctrl-C and SIGTERM reach the whole process group; the parent, not
    the signal, decides when its children stop (it may still be finishing calls)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(argv[0])), threads=int(argv[1]) if len(argv) > 1 else 1)


_STREAM_OPS = frozenset({"open", "accept", "finish", "close"})
_ENDING_OPS = frozenset({"finish", "close"})


def serve(conn: Connection, *, threads: int = 1) -> None:
    """A decoder process's loop. The first request ("hello") carries the AsrConfig and loads
    the model. A stream's requests run in the order they came, one at a time; `threads`
    decoder threads take the streams with work in turn (round robin, one request each; the
    ending ones first: `_StreamQueue`), so that a child with more streams than its share is
    not held to one core while another child's core idles — libvosk releases the GIL while
    it decodes. A warm-up runs alongside, on as many threads.
    """
    from asr.vosk_engine import VoskRecognizer

    send_lock = threading.Lock()

    def reply(rid: int, ok: bool, value: Any) -> None:
        with send_lock:
            try:
                conn.send((rid, ok, value))
            except (OSError, ValueError):
                pass  # the parent is gone; the loop ends on its next recv

    recognizer: VoskRecognizer | None = None
    streams: dict[int, Any] = {}
    warm_stop = threading.Event()

    def warm(engine: VoskRecognizer, rid: int, data: bytes, count: int, rate: int) -> None:
        # On as many threads as decode (libvosk releases the GIL): one process of two
        # threads on 2 cores would otherwise warm its pool on one core, twice as long.
        added: list[int] = []
        errors: list[str] = []

        def one() -> None:
            try:
                added.append(engine.warm(data, count=count, sample_rate=rate, stop=warm_stop))
            except AsrError as exc:
                errors.append(str(exc))

        workers = [
            threading.Thread(target=one, name=f"asr-warm-up-{n}", daemon=True)
            for n in range(max(1, min(threads, count)))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors and not sum(added):
            reply(rid, False, errors[0])
        else:
            reply(rid, True, sum(added))

    def run(rid: int, op: str, sid: int, arg: Any) -> None:
        try:
            if recognizer is None:
                raise AsrError("the decoder process has no model yet")
            if op == "open":
                sample_rate, grammar = arg
                streams[sid] = recognizer.open_stream(sample_rate=sample_rate, grammar=grammar)
                value = None
            elif op == "accept":
                partial = _stream(streams, sid).accept(arg)
                value = None if partial is None else partial.text
            elif op == "finish":
                value = _stream(streams, sid).finish()
            else:  # close
                stream = streams.pop(sid, None)
                if stream is not None:
                    stream.close()
                value = None
        except AsrError as exc:
            reply(rid, False, str(exc))
        except Exception as exc:
            reply(rid, False, f"{type(exc).__name__}: {exc}")
        else:
            reply(rid, True, value)

    queue = _StreamQueue()

    def decoder_thread() -> None:
        while True:
            sid, (rid, op, arg) = queue.take()
            run(rid, op, sid, arg)
            queue.done(sid)

    for n in range(max(1, threads)):
        threading.Thread(target=decoder_thread, name=f"asr-decode-{n}", daemon=True).start()

    while True:
        try:
            rid, op, sid, arg = conn.recv()
        except (EOFError, OSError):
            return
        if op == "stop":
            warm_stop.set()
            return
        if op in _STREAM_OPS:
            queue.put(sid, (rid, op, arg), ending=op in _ENDING_OPS)
            continue
        try:
            if op == "hello":
                candidate = VoskRecognizer(arg)
                try:
                    candidate.load()
                except AsrError as exc:
                    reply(rid, False, str(exc))
                    return  # nothing to serve without a model
                recognizer, value = candidate, None
            elif op == "warm":
                if recognizer is None:
                    raise AsrError("the decoder process has no model yet")
                threading.Thread(
                    target=warm, args=(recognizer, rid, *arg), name="asr-warm-up", daemon=True
                ).start()
                continue
            elif op == "stop-warm":
                warm_stop.set()
                value = None
            else:
                raise AsrError(f"unknown request {op!r}")
        except AsrError as exc:
            reply(rid, False, str(exc))
        except Exception as exc:
            reply(rid, False, f"{type(exc).__name__}: {exc}")
        else:
            reply(rid, True, value)


class _StreamQueue:
    """A decoder process's requests, per stream: a stream's run one at a time in the order
    they came; the streams with requests waiting take turns (round robin, one request each),
    except that the streams that are ending (their "finish" or "close" has come) go first,
    in the order they ended, each until it is done: its caller has hung up and the ticket
    waits for its transcript, while a live call's next partial can come a batch later. In
    turns, a finishing stream waited one round for its last audio and another for its final
    result: 1.6-1.8 s of the 2 s lag bound with ten streams on a busy core."""

    def __init__(self) -> None:
        self._pending: dict[int, deque[tuple[Any, ...]]] = {}
        # Streams with requests that no thread is running now, in one of the two.
        self._ending: deque[int] = deque()
        self._turns: deque[int] = deque()
        self._ended: set[int] = set()
        self._work = threading.Condition()

    def put(self, sid: int, request: tuple[Any, ...], *, ending: bool = False) -> None:
        with self._work:
            queue = self._pending.get(sid)
            if ending and sid not in self._ended:
                self._ended.add(sid)
                if queue is not None and sid in self._turns:  # waiting its turn: go first
                    self._turns.remove(sid)
                    self._ending.append(sid)
            if queue is None:
                self._pending[sid] = deque([request])
                (self._ending if sid in self._ended else self._turns).append(sid)
                self._work.notify()
            else:
                queue.append(request)

    def take(self) -> tuple[int, tuple[Any, ...]]:
        """The next stream's next request; the stream is then being run until `done`."""
        with self._work:
            while not (self._ending or self._turns):
                self._work.wait()
            sid = (self._ending or self._turns).popleft()
            return sid, self._pending[sid].popleft()

    def done(self, sid: int) -> None:
        with self._work:
            if not self._pending[sid]:
                del self._pending[sid]
                self._ended.discard(sid)
                return
            if sid in self._ended:
                self._ending.appendleft(sid)  # an ending stream keeps going until done
            else:
                self._turns.append(sid)  # to the back: the other streams go first
            self._work.notify()


def _stream(streams: dict[int, Any], sid: int) -> Any:
    stream = streams.get(sid)
    if stream is None:
        raise AsrError(
            "the stream was not opened in this decoder process (it refused it, "
            "or the process was started again)"
        )
    return stream


if __name__ == "__main__":
    main(sys.argv[1:])
