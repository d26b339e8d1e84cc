"""RTP ports for calls: ``RtpPortAllocator`` binds even UDP ports from a range and hands each
call its own, skipping ports held elsewhere.

The socket work is done ahead, on a thread of the allocator's own ("rtp-ports"): a few
sockets are kept bound and made ready (receive buffer, non-blocking) before a call asks,
and the sockets of ended calls are closed there too. A call is set up and ended on the SIP
receive thread, and each of those system calls (socket, bind, setsockopt, the blocking
mode, getsockname, close) handed the GIL over and waited for it back: in a busy process,
up to a switch interval each, behind every other thread (telephony/udp_held.py).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import weakref
from collections import deque

log = logging.getLogger(__name__)

# Sockets kept bound and ready ahead of calls, and when to bind more.
READY_AHEAD = 32
REFILL_BELOW = 16
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # headroom for bursts (the kernel caps it at rmem_max)

# Sockets this module made ready: the address each is bound to, and who closes it.
_prepared: weakref.WeakKeyDictionary[socket.socket, tuple[tuple[str, int], RtpPortAllocator]] = (
    weakref.WeakKeyDictionary()
)


class NoFreeRtpPort(Exception):
    def __init__(self, host: str, low: int, high: int) -> None:
        super().__init__(f"no free even UDP port on {host} in [{low}, {high})")


def prepare(sock: socket.socket, receive_buffer_bytes: int = RECEIVE_BUFFER_BYTES) -> None:
    """What every RTP socket needs before media runs on it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.setblocking(False)


def prepared_address(sock: socket.socket) -> tuple[str, int] | None:
    """The address an allocator's ready socket is bound to (no system call); None for a
    socket this module did not make ready."""
    entry = _prepared.get(sock)
    return None if entry is None else entry[0]


def close_later(sock: socket.socket) -> bool:
    """Close an allocator's socket on its thread (True), or say it is not one (False)."""
    entry = _prepared.get(sock)
    if entry is None:
        return False
    entry[1]._close_soon(sock)
    return True


class RtpPortAllocator:
    """Even UDP ports in ``[low, high)`` that are really bound, so a port held by another
    process (or another call) is skipped, not discovered when media fails. Thread-safe.
    ``close()`` stops its thread and closes the sockets bound ahead (not the ones calls
    hold: their calls release them)."""

    def __init__(
        self,
        host: str,
        low: int,
        high: int,
        *,
        ahead: int = READY_AHEAD,
        receive_buffer_bytes: int = RECEIVE_BUFFER_BYTES,
    ) -> None:
        if not 0 < low < high <= 65536:
            raise ValueError(f"bad RTP port range [{low}, {high})")
        self.host = host
        self.low = low + (low & 1)
        self.high = high
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._ahead = max(0, ahead)
        self._refill_below = min(REFILL_BELOW, self._ahead)
        self._receive_buffer = receive_buffer_bytes
        self._held: dict[int, socket.socket] = {}
        self._ready: deque[tuple[int, socket.socket]] = deque()
        self._to_close: deque[socket.socket] = deque()
        self._binding: set[int] = set()  # reserved by the thread, being bound
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._cursor = self.low
        self._thread: threading.Thread | None = None
        self._closed = False
        self._generation = 0  # a thread of an earlier generation stops
        self._busy = False  # the thread is closing or binding outside the lock
        self._starved = False  # its last pass could not bind enough: wait for a change

    def allocate(self) -> tuple[int, socket.socket]:
        with self._lock:
            while self._ready:
                port, sock = self._ready.popleft()
                if sock.fileno() >= 0:
                    self._held[port] = sock
                    self._wake_if_low()
                    return port, sock
            got = self._bind_next()
            if got is None:
                raise NoFreeRtpPort(self.host, self.low, self.high)
            port, sock = got
            self._held[port] = sock
            self._wake_if_low()
            return port, sock

    def release(self, port: int) -> None:
        with self._lock:
            sock = self._held.pop(port, None)
        if sock is not None and not close_later(sock):
            sock.close()

    @property
    def in_use(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the sockets of released ports are closed and as many are bound ahead
        as the thread keeps (tests, and what waits for a port to be free again)."""
        with self._lock:
            return self._work.wait_for(
                lambda: (
                    self._closed
                    or (
                        not self._to_close
                        and not self._binding
                        and not self._busy
                        and not self._wants_more()
                    )
                ),
                timeout,
            )

    def open(self) -> None:
        """Start binding ahead (an edge starting), again after ``close()``."""
        with self._lock:
            if self._closed:
                self._closed = False
                self._generation += 1
                self._thread = None
            if self._ahead > 0:
                self._start_or_wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready = [sock for _, sock in self._ready]
            self._ready.clear()
            closing = list(self._to_close)
            self._to_close.clear()
            self._work.notify_all()
            thread = self._thread
        for sock in ready + closing:
            sock.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2)

    # --- the allocator's thread ----------------------------------------------------------
    def _close_soon(self, sock: socket.socket) -> None:
        with self._lock:
            if self._closed or self._ahead == 0:  # no thread: closed here, as it was
                closing = True
            else:
                closing = False
                self._to_close.append(sock)
                self._start_or_wake()
        if closing:
            sock.close()

    def _wake_if_low(self) -> None:
        # (lock held)
        if not self._closed and len(self._ready) < self._refill_below:
            self._start_or_wake()

    def _start_or_wake(self) -> None:
        # (lock held)
        self._starved = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._serve, args=(self._generation,), name="rtp-ports", daemon=True
            )
            self._thread.start()
        else:
            self._work.notify_all()  # settle() waits on it too

    def _serve(self, generation: int) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._to_close and not self._wants_more():
                    self._work.wait()
                if self._closed or generation != self._generation:
                    return
                closing = list(self._to_close)
                self._to_close.clear()
                self._busy = True
            for old in closing:
                old.close()
            # Bind outside the lock (a call's allocate() never waits for it), at most one
            # try per port of the range a pass: ports bound elsewhere are skipped.
            for _ in range(len(range(self.low, self.high, 2))):
                with self._lock:
                    if self._closed or len(self._ready) >= self._ahead:
                        break
                    port = self._reserve_next()
                if port is None:
                    break
                try:
                    bound = self._bind(port)
                except OSError as exc:  # calls will meet it too, and say so
                    log.warning("binding RTP port %s ahead of calls failed: %s", port, exc)
                    with self._lock:
                        self._binding.discard(port)
                    break
                with self._lock:
                    self._binding.discard(port)
                    if bound is not None and not self._closed:
                        self._ready.append((port, bound))
                        bound = None
                if bound is not None:
                    bound.close()
            with self._lock:
                self._busy = False
                # Not refilled to the mark (the range is full, or held elsewhere): wait
                # until a call takes or gives back a port, not spin.
                self._starved = self._wants_more()
                self._work.notify_all()  # settle()

    def _free_ports(self) -> int:
        # (lock held) Even ports of the range no call holds (some may be bound elsewhere).
        return len(range(self.low, self.high, 2)) - len(self._held)

    def _wants_more(self) -> bool:
        # (lock held)
        return (
            not self._starved
            and self._ahead > 0
            and len(self._ready) < min(self._refill_below, self._free_ports())
        )

    def _reserve_next(self) -> int | None:
        # (lock held) The next even port from the cursor that no call, ready socket or
        # binding holds; the cursor moves past it.
        count = (self.high - self.low + 1) // 2
        ready = {port for port, _ in self._ready}
        for i in range(count):
            # Round robin: a port just released isn't handed out again at once, so late
            # packets of the previous call don't land in the next one.
            port = self.low + (self._cursor - self.low + 2 * i) % (2 * count)
            if port >= self.high or port in self._held or port in ready or port in self._binding:
                continue
            self._cursor = port + 2
            self._binding.add(port)
            return port
        return None

    def _bind(self, port: int) -> socket.socket | None:
        """The port bound and made ready; None when it is held elsewhere (OSError for
        anything else)."""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
            prepare(sock, self._receive_buffer)
            address = (sock.getsockname()[0], port)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            raise
        _prepared[sock] = (address, self)
        return sock

    def _bind_next(self) -> tuple[int, socket.socket] | None:
        # (lock held) No socket was ready: bind one here, the next free from the cursor,
        # after closing those waiting for the thread (their ports may be the free ones).
        closing = list(self._to_close)
        self._to_close.clear()
        for old in closing:
            old.close()
        for _ in range((self.high - self.low + 1) // 2):
            port = self._reserve_next()
            if port is None:
                return None
            self._binding.discard(port)
            bound = self._bind(port)
            if bound is not None:
                return port, bound
        return None
