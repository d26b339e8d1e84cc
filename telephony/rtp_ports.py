"""RTP ports for calls: ``RtpPortAllocator`` binds even UDP ports from a range and hands each
call its own, skipping ports held elsewhere."""

from __future__ import annotations

import errno
import socket
import threading


class NoFreeRtpPort(Exception):
    def __init__(self, host: str, low: int, high: int) -> None:
        super().__init__(f"no free even UDP port on {host} in [{low}, {high})")


class RtpPortAllocator:
    """Even UDP ports in ``[low, high)`` that are really bound, so a port held by another
    process (or another call) is skipped, not discovered when media fails."""

    def __init__(self, host: str, low: int, high: int) -> None:
        if not 0 < low < high <= 65536:
            raise ValueError(f"bad RTP port range [{low}, {high})")
        self.host = host
        self.low = low + (low & 1)
        self.high = high
        self._held: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._cursor = self.low

    def allocate(self) -> tuple[int, socket.socket]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with self._lock:
            count = (self.high - self.low + 1) // 2
            for i in range(count):
                # Round robin: a port just released isn't handed out again at once, so late
                # packets of the previous call don't land in the next one.
                port = self.low + (self._cursor - self.low + 2 * i) % (2 * count)
                if port >= self.high or port in self._held:
                    continue
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    sock.bind((self.host, port))
                except OSError as exc:
                    sock.close()
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise
                self._held[port] = sock
                self._cursor = port + 2
                return port, sock
        raise NoFreeRtpPort(self.host, self.low, self.high)

    def release(self, port: int) -> None:
        with self._lock:
            sock = self._held.pop(port, None)
        if sock is not None:
            sock.close()

    @property
    def in_use(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)
