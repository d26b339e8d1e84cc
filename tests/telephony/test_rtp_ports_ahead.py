"""telephony/rtp_ports.py: RTP sockets bound and made ready ahead of calls, on the
allocator's thread, and the sockets of ended calls closed there — so that the SIP receive
thread, which sets calls up and ends them, makes none of those system calls."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from telephony import rtp_ports
from telephony.rtp_ports import NoFreeRtpPort, RtpPortAllocator
from telephony.rtp_session import RtpSession
from telephony.sip_message import new_branch, new_tag


def free_range(size: int) -> tuple[int, int]:
    """An even-aligned range of UDP ports no one holds now (probed by binding each)."""
    for low in range(41000, 60000, 2 * size):
        probes = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
        return low, low + size
    raise RuntimeError("no free port range")


@pytest.fixture
def allocator() -> Iterator[RtpPortAllocator]:
    low, high = free_range(80)
    ports = RtpPortAllocator("127.0.0.1", low, high, ahead=8)
    ports.open()
    yield ports
    ports.close()


class BindWatch:
    """Counts socket binds and closes per thread while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.binds: list[str] = []
        self.closes: list[str] = []
        real_bind, real_close = socket.socket.bind, socket.socket.close

        def bind(sock: socket.socket, address: object) -> None:
            self.binds.append(threading.current_thread().name)
            real_bind(sock, address)  # type: ignore[arg-type]

        def close(sock: socket.socket) -> None:
            if sock.fileno() >= 0:
                self.closes.append(threading.current_thread().name)
            real_close(sock)

        monkeypatch.setattr(socket.socket, "bind", bind)
        monkeypatch.setattr(socket.socket, "close", close)


def test_a_call_gets_a_ready_socket_without_binding_on_its_thread(
    allocator: RtpPortAllocator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert allocator.settle()
    watch = BindWatch(monkeypatch)
    port, sock = allocator.allocate()
    assert watch.binds == []  # bound ahead, on the allocator's thread
    assert sock.getsockname() == ("127.0.0.1", port)
    assert sock.gettimeout() == 0.0  # non-blocking already
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
    assert rtp_ports.prepared_address(sock) == ("127.0.0.1", port)
    assert port in allocator.in_use
    assert allocator.settle()
    assert set(watch.binds) <= {"rtp-ports"}


def test_an_ended_calls_socket_is_closed_on_the_allocators_thread(
    allocator: RtpPortAllocator, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, sock = allocator.allocate()
    session = RtpSession(
        local_host="127.0.0.1",
        port=port,
        sock=sock,
        remote=("127.0.0.1", 9),
        payload_type=0,
        dtmf_payload_type=None,
    )
    assert session.local_address == ("127.0.0.1", port)
    assert allocator.settle()
    watch = BindWatch(monkeypatch)
    session.stop()
    allocator.release(port)
    assert watch.closes == []  # not on the thread that ended the call
    assert allocator.settle()
    assert sock.fileno() == -1
    assert watch.closes == ["rtp-ports"]
    assert port not in allocator.in_use


def test_ports_go_round_and_a_released_port_is_not_handed_out_at_once(
    allocator: RtpPortAllocator,
) -> None:
    first, _ = allocator.allocate()
    allocator.release(first)
    given = [allocator.allocate()[0] for _ in range(20)]
    assert first not in given
    assert len(set(given)) == 20
    assert all(p % 2 == 0 and allocator.low <= p < allocator.high for p in given)


def test_a_port_held_elsewhere_is_skipped_and_the_range_can_run_out() -> None:
    low, high = free_range(8)  # 4 even ports
    elsewhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elsewhere.bind(("127.0.0.1", low + 2))
    ports = RtpPortAllocator("127.0.0.1", low, high, ahead=8)
    try:
        ports.open()
        assert ports.settle()
        got = sorted(ports.allocate()[0] for _ in range(3))
        assert got == [low, low + 4, low + 6]
        with pytest.raises(NoFreeRtpPort):
            ports.allocate()
        ports.release(low)
        assert ports.settle()
        assert ports.allocate()[0] == low
    finally:
        ports.close()
        elsewhere.close()


def test_without_binding_ahead_a_call_binds_its_own() -> None:
    low, high = free_range(8)
    ports = RtpPortAllocator("127.0.0.1", low, high, ahead=0)
    port, sock = ports.allocate()
    assert sock.getsockname() == ("127.0.0.1", port)
    ports.release(port)
    assert sock.fileno() == -1  # no thread: closed at once
    ports.close()


def test_closed_then_opened_again_it_binds_ahead_again() -> None:
    low, high = free_range(40)
    ports = RtpPortAllocator("127.0.0.1", low, high, ahead=4)
    ports.open()
    assert ports.settle()
    ports.close()
    port, sock = ports.allocate()  # still usable closed: binds inline
    ports.release(port)
    assert sock.fileno() == -1
    ports.open()
    assert ports.settle()
    try:
        ready = ports.allocate()[1]
        assert rtp_ports.prepared_address(ready) is not None
    finally:
        ports.close()


def test_tags_and_branches_are_random_and_a_forked_child_gets_its_own() -> None:
    tags = {new_tag() for _ in range(20000)}
    assert len(tags) == 20000 and all(len(t) == 12 for t in tags)
    assert new_branch().startswith("z9hG4bK") and len(new_branch()) == 31
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, new_tag().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_tag()  # the parent's next bytes were not the child's
    assert len(child) == 12
