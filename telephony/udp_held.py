"""UDP datagrams sent and received without handing the GIL over: libc's ``recvfrom`` and
``sendto`` with ``MSG_DONTWAIT``, called through ``ctypes.PyDLL`` (which keeps the GIL).

Why. Every socket call of Python's ``socket`` module releases the GIL around the system
call, and in a busy process getting it back is a wait: the thread asks, and the holder
gives it up at its next switch interval (0.5-5 ms, ``sip_transport.gil_handover_for``),
after which any thread that asked may win it. The SIP receive thread made about sixteen
such calls per call (strace, 20 calls/s: receive, send, bind and set up the RTP socket,
close it, random tags, the log line), so at 200 calls/s it spent most of its time queueing
for the GIL, not working. A datagram call that cannot block takes a few microseconds:
holding the GIL through it costs the other threads nothing, and the receive thread keeps
the GIL for the whole batch it drains after one ``select``.

Where libc or ctypes is not there (not Linux), or for an address that is not a numeric IP,
``HeldUdp`` says so (``None``) and the caller uses the socket's own methods.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct
import threading

log = logging.getLogger(__name__)

MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_SOCKADDR_STORAGE = 128
_MAX_DATAGRAM = 65535
_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
_ADDRESSES_KEPT = 4096  # encoded destinations remembered (callers' addresses repeat)


def _libc() -> ctypes.PyDLL | None:
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        recvfrom, sendto = libc.recvfrom, libc.sendto
    except (OSError, AttributeError):
        return None
    # ssize_t recvfrom(int, void *, size_t, int, struct sockaddr *, socklen_t *)
    # ssize_t sendto(int, const void *, size_t, int, const struct sockaddr *, socklen_t)
    for function, buffer, address, length in (
        (recvfrom, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)),
        (sendto, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32),
    ):
        function.restype = ctypes.c_ssize_t
        function.argtypes = [ctypes.c_int, buffer, ctypes.c_size_t, ctypes.c_int, address, length]
    return libc


_LIBC = _libc()


def encode_address(family: int, address: tuple[str, int]) -> bytes | None:
    """A ``struct sockaddr_in``/``sockaddr_in6`` for a numeric address; None otherwise."""
    host, port = address[0], address[1]
    if not 0 <= port < 65536:
        return None
    try:
        if family == socket.AF_INET:
            return (
                struct.pack("=H", socket.AF_INET)
                + struct.pack("!H", port)
                + (socket.inet_pton(socket.AF_INET, host) + bytes(8))
            )
        if family == socket.AF_INET6:
            return (
                struct.pack("=H", socket.AF_INET6)
                + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host)
                + struct.pack("=I", 0)
            )
    except (OSError, TypeError, ValueError):
        return None
    return None


def decode_address(raw: bytes) -> tuple[str, int] | None:
    """(host, port) from a ``sockaddr`` libc filled in; None for a family not IP."""
    family = struct.unpack_from("=H", raw)[0]
    (port,) = struct.unpack_from("!H", raw, 2)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return None


class HeldUdp:
    """One UDP socket's datagrams with the GIL kept. ``recv`` and ``send`` are safe from
    any thread (receiving is done by one thread at a time: its buffer is shared)."""

    def __init__(self, sock: socket.socket) -> None:
        if _LIBC is None:
            raise OSError("libc's recvfrom/sendto are not reachable through ctypes here")
        self._libc = _LIBC
        self._sock = sock
        self._family = sock.family
        self._buffer = ctypes.create_string_buffer(_MAX_DATAGRAM)
        self._source = ctypes.create_string_buffer(_SOCKADDR_STORAGE)
        self._source_len = ctypes.c_uint32(_SOCKADDR_STORAGE)
        self._receiving = threading.Lock()
        self._encoded: dict[tuple[str, int], bytes | None] = {}

    @staticmethod
    def available() -> bool:
        return _LIBC is not None

    def recv(self) -> tuple[bytes, tuple[str, int]] | None:
        """The next datagram waiting and its source, or None when none is waiting.
        Raises OSError as ``socket.recvfrom`` would (an ICMP error of an earlier send)."""
        with self._receiving:
            self._source_len.value = _SOCKADDR_STORAGE
            n = self._libc.recvfrom(
                self._sock.fileno(),
                self._buffer,
                _MAX_DATAGRAM,
                MSG_DONTWAIT,
                self._source,
                ctypes.byref(self._source_len),
            )
            if n < 0:
                code = ctypes.get_errno()
                if code in _AGAIN:
                    return None
                raise OSError(code, f"recvfrom: {errno.errorcode.get(code, code)}")
            data = ctypes.string_at(self._buffer, n)
            source = decode_address(self._source.raw[: self._source_len.value])
        if source is None:  # not an IP peer: nothing a SIP edge can answer
            return b"", ("", 0)
        return data, source

    def send(self, data: bytes, address: tuple[str, int]) -> bool:
        """Sent at once (True); False when it could not be sent this way (a host name, a
        full send buffer), for the caller to send it the ordinary way. Raises OSError for
        other failures, as ``socket.sendto`` would."""
        key = (address[0], address[1])
        encoded = self._encoded.get(key)
        if encoded is None:
            if key in self._encoded:
                return False
            encoded = encode_address(self._family, key)
            if len(self._encoded) >= _ADDRESSES_KEPT:
                self._encoded.clear()
            self._encoded[key] = encoded
            if encoded is None:
                return False
        n = self._libc.sendto(
            self._sock.fileno(), data, len(data), MSG_DONTWAIT, encoded, len(encoded)
        )
        if n >= 0:
            return True
        code = ctypes.get_errno()
        if code in _AGAIN:
            return False
        raise OSError(code, f"sendto: {errno.errorcode.get(code, code)}")
