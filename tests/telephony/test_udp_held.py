"""telephony/udp_held.py: datagrams in and out without handing the GIL over, on real
loopback sockets, and the SIP edge's transport using it."""

from __future__ import annotations

import ctypes
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from telephony import udp_held
from telephony.udp_held import HeldUdp, decode_address, encode_address


@contextmanager
def udp_pair(family: int = socket.AF_INET) -> Iterator[tuple[socket.socket, socket.socket]]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    try:
        a.bind((host, 0))
        b.bind((host, 0))
        a.setblocking(False)
        b.settimeout(5)
        yield a, b
    finally:
        a.close()
        b.close()


def wait_readable(sock: socket.socket) -> None:
    import select

    ready, _, _ = select.select([sock], [], [], 5)
    assert ready, "no datagram came within 5 s"


def test_libc_is_reachable_here() -> None:
    assert HeldUdp.available()  # Debian: the SIP edge must not fall back silently


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_receives_and_sends_with_the_source_and_none_when_empty(family: int) -> None:
    with udp_pair(family) as (a, b):
        held = HeldUdp(a)
        assert held.recv() is None  # nothing waiting: no wait, no error
        b.sendto(b"INVITE sip:x SIP/2.0\r\n\r\n", a.getsockname()[:2])
        wait_readable(a)
        got = held.recv()
        assert got is not None
        data, source = got
        assert data == b"INVITE sip:x SIP/2.0\r\n\r\n"
        assert source == b.getsockname()[:2]
        assert held.recv() is None

        assert held.send(b"SIP/2.0 200 OK\r\n\r\n", source) is True
        reply, whence = b.recvfrom(65535)
        assert reply == b"SIP/2.0 200 OK\r\n\r\n"
        assert whence[:2] == a.getsockname()[:2]


def test_a_large_datagram_arrives_whole() -> None:
    with udp_pair() as (a, b):
        held = HeldUdp(a)
        body = bytes(range(256)) * 200  # 51,200 bytes
        b.sendto(body, a.getsockname())
        wait_readable(a)
        got = held.recv()
        assert got is not None and got[0] == body


def test_a_host_name_is_left_to_the_socket_and_a_bad_port_refused() -> None:
    with udp_pair() as (a, _):
        held = HeldUdp(a)
        assert held.send(b"x", ("localhost", 5060)) is False
        assert held.send(b"x", ("localhost", 5060)) is False  # remembered, same answer
        assert encode_address(socket.AF_INET, ("127.0.0.1", 70000)) is None
        assert encode_address(socket.AF_INET, ("::1", 5060)) is None  # wrong family


def test_addresses_round_trip() -> None:
    for family, address in ((socket.AF_INET, ("10.1.2.3", 5060)), (socket.AF_INET6, ("::1", 9))):
        raw = encode_address(family, address)
        assert raw is not None
        assert decode_address(raw) == address


def test_a_closed_socket_raises_as_the_socket_would() -> None:
    with udp_pair() as (a, _):
        held = HeldUdp(a)
        a.close()
        with pytest.raises(OSError):
            held.recv()
        with pytest.raises(OSError):
            held.send(b"x", ("127.0.0.1", 9))


def _runs_of_other_thread(calls: Callable[[], None], *, times: int, enough: int) -> int:
    """How many times a spinning thread got the GIL while ``calls`` ran ``times`` times on
    this one (stopping once it got it ``enough`` times), with a switch interval so long
    (50 ms) that it gets it only when this thread gives it up."""
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        started.set()
        while not stop.is_set():
            counter[0] += 1

    old = sys.getswitchinterval()
    thread = threading.Thread(target=spin, daemon=True)
    try:
        sys.setswitchinterval(0.05)
        thread.start()
        started.wait(5)
        runs = 0
        seen = counter[0]
        for _ in range(times):
            calls()
            if counter[0] != seen:
                runs += 1
                seen = counter[0]
                if runs >= enough:
                    break
        return runs
    finally:
        stop.set()
        sys.setswitchinterval(old)
        thread.join(5)


def test_the_gil_is_kept_through_receive_and_send() -> None:
    """The point of the module: a socket call of Python's hands the GIL over (and a busy
    process makes the caller wait for it back); these do not."""
    with udp_pair() as (a, b):
        held = HeldUdp(a)
        target = b.getsockname()

        def held_calls() -> None:
            held.recv()
            held.send(b"x", target)

        # Never (at most once: the spinner may be let in once as it starts).
        assert _runs_of_other_thread(held_calls, times=50, enough=50) <= 1
        # Kept by construction: a PyDLL's functions run without releasing the GIL (a CDLL's
        # release it, as the socket module does). On an idle machine the same harness lets
        # the spinner in at socket.recvfrom/sendto within a few calls; on a busy one the
        # scheduler may not run it in time, so that is not asserted here.
        assert isinstance(udp_held._LIBC, ctypes.PyDLL)
