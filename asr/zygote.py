"""The fork server of `asr.processes`: one process loads the speech model, then forks the
decoder processes, which share the model's pages copy-on-write instead of loading it each.

Why. A loaded Vosk model is ~600 MB of memory that decoding only reads; loaded in every
decoder process, one per CPU, it is most of the SIP edge's memory. Loaded once in a process
that then forks, it is counted once (bench/asr_memory.py measures it).

Why a process of its own. The SIP edge's process runs threads (calls' RTP and flow, the
decoders' readers); forking a threaded process copies locks that other threads held and
the child deadlocks on them. The zygote is started like any child (`python -m asr.zygote`,
a SOCK_SEQPACKET socket pair to the parent) and stays single-threaded: it loads the model
(libvosk's load starts no thread), then waits for requests and forks; before each fork it
checks that it has one thread (`/proc/self/task`) and refuses otherwise. The forked child
closes the zygote's sockets and serves exactly as `python -m asr.decoder_child` does
(`asr.decoder_child.serve`), starting its decoder threads only then.

The talk, pickled tuples, one a datagram: the parent sends `("load", AsrConfig)`, then
`("fork", None)` with the new child's end of its socket pair attached (SCM_RIGHTS); the
zygote answers each in order, `("ok", value)` or `("error", message)`, a fork's answer
carrying the child's pid and a pidfd for it (so the parent can wait for and kill a process
that is not its own child, without a recycled pid ever being hit). The zygote is the
children's parent: it reaps them on SIGCHLD and says `("exited", (pid, code))`, so the
parent can log how a child ended; the parent learns that a child died, as ever, from the
child's socket closing. `("stop", timeout)` waits for the children (told to stop by the
parent already), kills what is left after `timeout`, reaps them and exits. If the parent
goes away, the zygote exits, and so do its children (their sockets close too); if the
zygote dies, its children keep serving (the parent starts another zygote, which loads the
model again, for the children that die later).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from asr import decoder_child
from asr.config import AsrConfig, decoder_env
from asr.recognizer import AsrError

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]  # where `asr` is importable from
_MAX_MESSAGE = 1 << 16


# ------------------------------------------------------------------ the zygote process


def main(argv: Sequence[str]) -> None:
    """`python -m asr.zygote FD THREADS`: serve the parent on the SOCK_SEQPACKET socket FD,
    forking decoder processes of THREADS decoder threads each. Ctrl-C and SIGTERM reach the
    whole process group; the parent decides when its children stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=int(argv[0]))
    serve(control, threads=int(argv[1]) if len(argv) > 1 else 1)


def threads_now() -> int:
    """This process's threads as the kernel counts them (libvosk's included)."""
    return len(os.listdir("/proc/self/task"))


def serve(control: socket.socket, *, threads: int) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # A handler of our own, so the wake-up pipe says "a child exited" to the select below;
    # the reaping and the reports to the parent then happen in this loop, never in between
    # the bytes of another message.
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    signal.set_wakeup_fd(wake_w)
    children: set[int] = set()
    loaded = False
    while True:
        try:
            readable, _, _ = select.select([control.fileno(), wake_r], [], [])
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
        if wake_r in readable:
            _drain(wake_r)
            _reap(control, children)
        if control.fileno() not in readable:
            continue
        try:
            data, fds, _flags, _address = socket.recv_fds(control, _MAX_MESSAGE, 1)
        except OSError:
            data, fds = b"", []
        if not data:  # the parent is gone; the children see their sockets close too
            return
        op, arg = pickle.loads(data)
        try:
            if op == "load":
                from asr.vosk_engine import VoskRecognizer

                VoskRecognizer(arg).load()
                loaded = True
                # The objects alive now are the children's too: the collector must not
                # write to their pages in every child (the copy-on-write would copy them).
                gc.freeze()
                _send(control, ("ok", None))
            elif op == "fork":
                if len(fds) != 1:
                    raise AsrError("a fork request carries one socket")
                if not loaded:
                    raise AsrError("the zygote has no model yet")
                pid, pidfd = _fork(fds[0], threads, close=(control.fileno(), wake_r, wake_w))
                fds.clear()  # the zygote's copy is closed: only the child holds it
                children.add(pid)
                try:
                    socket.send_fds(control, [pickle.dumps(("ok", pid))], [pidfd])
                finally:
                    os.close(pidfd)
            elif op == "stop":
                _stop_children(children, wake_r, float(arg))
                return
            else:
                raise AsrError(f"unknown request {op!r}")
        except AsrError as exc:
            _send(control, ("error", str(exc)))
            if op == "load":
                return  # nothing to fork without a model
        except Exception as exc:
            _send(control, ("error", f"{type(exc).__name__}: {exc}"))
            if op == "load":
                return
        finally:
            for fd in fds:
                os.close(fd)


def _fork(fd: int, threads: int, *, close: Sequence[int]) -> tuple[int, int]:
    """Fork a decoder process serving the socket `fd`; (its pid, a pidfd for it)."""
    count = threads_now()
    if count != 1 or threading.active_count() != 1:
        raise AsrError(f"the zygote runs {count} threads; it forks only while it runs one")
    pid = os.fork()
    if pid == 0:  # the decoder process: never returns to the zygote's loop
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for other in close:
                os.close(other)
            decoder_child.serve(Connection(fd), threads=threads)
        except BaseException:
            code = 1
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            os._exit(code)
    os.close(fd)  # only the child holds it: its siblings must not keep it open
    return pid, os.pidfd_open(pid)  # not reaped before this loop runs again: no reuse


def _send(control: socket.socket, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: the loop ends on its EOF
        control.send(pickle.dumps(message))


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def _reap(control: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(control, ("exited", (pid, os.waitstatus_to_exitcode(status))))


def _stop_children(children: set[int], wake_r: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while children:
        left = deadline - time.monotonic()
        if left <= 0:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in list(children):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            children.clear()
            return
        select.select([wake_r], [], [], min(left, 0.5))
        _drain(wake_r)
        while children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)


# ------------------------------------------------------------------ the parent's side


class Forked:
    """The parent's handle on a decoder process the zygote forked: what a `Popen` offers
    the parent (`pid`, `wait`, `kill`), through a pidfd since it is not the parent's child.
    The pidfd stays open as long as the handle lives (closed when it is collected): a thread
    may be waiting on it while another one is done with it, and a closed number could be
    some other file's by then."""

    def __init__(self, pid: int, pidfd: int, zygote: Zygote, forked_by: object) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._zygote = zygote
        self._forked_by = forked_by
        self._lock = threading.Lock()
        self._exited = False
        self._code: int | None = None
        weakref.finalize(self, os.close, pidfd)

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code (negative: the signal) once it has exited, None if unknown (the
        zygote that forked it is gone); `subprocess.TimeoutExpired` after `timeout`."""
        if not self._exited and not select.select([self._pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"decoder process {self.pid}", timeout or 0)
        with self._lock:
            if not self._exited:
                self._code = self._zygote.exit_code(self.pid, self._forked_by, 2.0)
                self._exited = True
            return self._code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has exited: nothing to kill
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


class Zygote:
    """The parent's side of the zygote: starts it, asks it to load and to fork, hears how
    its children exit, and starts it again (`restart`) when it dies. Thread-safe."""

    def __init__(
        self, config: AsrConfig, *, threads: int, on_death: Callable[[Zygote], None]
    ) -> None:
        self._config = config
        self._threads = threads
        self._on_death = on_death
        self._lock = threading.Condition()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._answers: deque[Future] = deque()  # the zygote answers in order
        self._exits: dict[int, int] = {}
        self._state = "stopped"  # starting, ready, failed, down (restarting), stopped
        self._error: str | None = None
        self.pid: int | None = None

    def start(self) -> None:
        """Start the process and ask it to load the model; `wait_ready` then waits."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = decoder_env(self._config, _ROOT)
            process = subprocess.Popen(
                [sys.executable, "-m", "asr.zygote", str(theirs.fileno()), str(self._threads)],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise AsrError(f"cannot start the decoders' zygote: {exc}") from None
        finally:
            theirs.close()
        with self._lock:
            self._process, self._control, self.pid = process, ours, process.pid
            self._state, self._error = "starting", None
        loaded = self._request(("load", self._config))
        threading.Thread(
            target=self._read, args=(ours, process), name="asr-zygote", daemon=True
        ).start()
        loaded.add_done_callback(self._loaded)

    def _loaded(self, future: Future) -> None:
        with self._lock:
            if self._state != "starting":
                return
            if future.exception() is None:
                self._state = "ready"
            else:
                self._state, self._error = "failed", str(future.exception())
            self._lock.notify_all()

    def wait_ready(self, timeout: float) -> None:
        """Until the model is loaded; `AsrError` if it failed or took longer."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._state in ("starting", "down"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AsrError(
                        f"the decoders' zygote did not load the speech model within {timeout:g} s"
                    )
                self._lock.wait(left)
            if self._state != "ready":
                raise AsrError(self._error or "the decoders' zygote is not running")

    def fork(self, sock: socket.socket, timeout: float) -> Forked:
        """A new decoder process serving `sock` (the child's end; the caller closes its own
        copy). Waits up to `timeout` for a zygote that is (re)loading the model."""
        self.wait_ready(timeout)
        with self._lock:
            forked_by = self._process
        answer = self._request(("fork", None), fds=[sock.fileno()])
        try:
            pid, fds = answer.result(timeout)
        except FutureTimeout:
            raise AsrError(f"the decoders' zygote did not fork within {timeout:g} s") from None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise AsrError("the decoders' zygote answered a fork without a pidfd")
        return Forked(pid, fds[0], self, forked_by)

    def exit_code(self, pid: int, forked_by: object, timeout: float) -> int | None:
        """How the child `pid` of the zygote process `forked_by` exited, as that zygote
        reports it; None if it is gone or sent no report within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                gone = self._process is not forked_by or self._control is None
                if left <= 0 or gone:
                    return None
                self._lock.wait(left)
            return self._exits.pop(pid)

    def _request(self, message: tuple[str, Any], *, fds: Sequence[int] = ()) -> Future:
        future: Future = Future()
        with self._lock:
            control = self._control
            if control is None:
                future.set_exception(AsrError("the decoders' zygote is not running"))
                return future
            try:
                socket.send_fds(control, [pickle.dumps(message)], list(fds))
            except OSError as exc:
                future.set_exception(AsrError(f"the decoders' zygote is gone: {exc}"))
                return future
            self._answers.append(future)
        return future

    def _read(self, control: socket.socket, process: subprocess.Popen) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(control, _MAX_MESSAGE, 1)
            except OSError:
                break
            if not data:
                break
            kind, value = pickle.loads(data)
            with self._lock:
                if kind == "exited":
                    pid, code = value
                    self._exits[pid] = code
                    self._lock.notify_all()
                    continue
                future = self._answers.popleft() if self._answers else None
            if future is None:  # pragma: no cover - the zygote answers only requests
                continue
            if kind == "ok":
                future.set_result((value, fds))
            else:
                future.set_exception(AsrError(value))
        try:
            code = process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        control.close()
        with self._lock:
            failed, self._answers = self._answers, deque()
            if self._control is control:
                self._control = None
            stopping = self._state == "stopped"
            died = self._state == "ready"
            if self._state == "starting":
                self._state = "failed"
                self._error = (
                    f"the decoders' zygote exited with code {code} while loading the speech model"
                )
            elif died:
                self._state = "down"
            self._lock.notify_all()
        for future in failed:
            future.set_exception(AsrError(f"the decoders' zygote exited (code {code})"))
        if died and not stopping:
            log.error(
                "the decoders' zygote (pid %s) exited with code %s; the decoder processes "
                "go on; starting it again",
                process.pid,
                code,
            )
            self._on_death(self)

    def restart(
        self, closed: Callable[[], bool], delays: tuple[float, float], timeout: float
    ) -> None:
        """Start again after a death, with a growing delay while it keeps failing."""
        delay, limit = delays
        while not closed():
            time.sleep(delay)
            if closed():
                return
            try:
                self.start()
                self.wait_ready(timeout)
                if closed():  # closed while it started: it must not outlive the close
                    self.stop(10.0)
                    return
                log.info("the decoders' zygote started again (pid %s)", self.pid)
                return
            except AsrError as exc:
                log.error("the decoders' zygote did not start again: %s", exc)
                with self._lock:
                    if self._state == "failed":
                        self._state = "down"  # children waiting to fork wait on
            delay = min(delay * 2, limit)

    def stop(self, timeout: float) -> None:
        """Stop it after its children (told to stop already) are gone, or kill them after
        `timeout`."""
        with self._lock:
            self._state = "stopped"
            process = self._process
            self._lock.notify_all()
        self._request(("stop", timeout))
        if process is not None:
            try:
                process.wait(timeout + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
