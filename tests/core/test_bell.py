"""The doorbell across real processes: a subprocess subscribes (on Redis, or on Unix sockets
in a directory both share) and reports each wake-up; this test rings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.bell import LocalBell, RedisBell, SocketBell, check_topic, for_settings

ROOT = Path(__file__).resolve().parents[2]

LISTENER = """
import sys, time
from pathlib import Path
from core.bell import RedisBell, SocketBell
kind, where, topic = sys.argv[1:4]
bell = RedisBell(where) if kind == "redis" else SocketBell(Path(where))
bell.subscribe(topic, lambda: print("rang", time.monotonic(), flush=True))
print("ready", flush=True)
sys.stdin.readline()  # until the test closes our stdin
bell.close()
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="bell-", dir="/tmp") as name:
        yield Path(name)


class Listener:
    """A subprocess subscribed to one topic; ``wait_rings`` reads its wake-ups."""

    def __init__(self, kind: str, where: str, topic: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, kind, where, topic],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._got = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda: "ready" in self.lines, "the listener subscribed")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._got:
                self.lines.append(line.strip())
                self._got.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = 15.0) -> None:
        with self._got:
            if not self._got.wait_for(predicate, timeout):
                raise AssertionError(f"{what}: not within {timeout}s; got {self.lines}")

    def rings(self) -> list[float]:
        with self._got:
            return [float(x.split()[1]) for x in self.lines if x.startswith("rang")]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _ring_and_measure(bell, listener: Listener, times: int = 5) -> list[float]:
    """Ring ``times`` times, each after the last was heard; the delays in ms."""
    delays = []
    for n in range(1, times + 1):
        sent = time.monotonic()
        bell.ring("agents")
        listener.wait_for(lambda n=n: len(listener.rings()) >= n, f"ring {n} heard")
        delays.append((listener.rings()[n - 1] - sent) * 1000)
    return delays


def test_socket_bell_wakes_a_subscriber_in_another_process(short_dir):
    listener = Listener("socket", str(short_dir), "agents")
    other = Listener("socket", str(short_dir), "calls")
    bell = SocketBell(short_dir)
    try:
        delays = _ring_and_measure(bell, listener)

        assert len(delays) == 5 and max(delays) < 1000
        assert other.rings() == []  # another topic hears nothing
        print(f"socket bell delay ms: median {sorted(delays)[2]:.2f} worst {max(delays):.2f}")
    finally:
        bell.close()
        listener.stop()
        other.stop()
    # Each subscription removes its socket when it ends.
    assert list(short_dir.glob("*.sock")) == []


def test_socket_bell_removes_the_socket_of_a_dead_process_and_rings_the_rest(short_dir):
    dead = short_dir / "agents.deadbeef0000.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(dead))  # bound, then closed: the socket file stays, nobody reads
    heard = threading.Event()
    bell = SocketBell(short_dir)
    try:
        bell.subscribe("agents", heard.set)

        bell.ring("agents")

        assert heard.wait(5)
        assert not dead.exists()
    finally:
        bell.close()


def test_socket_bell_in_a_directory_too_deep_for_a_socket_address_still_rings(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    listener = Listener("socket", str(deep), "agents")
    bell = SocketBell(deep)
    try:
        assert len(_ring_and_measure(bell, listener, times=2)) == 2
        assert len(list(deep.glob("agents.*.sock"))) == 1
    finally:
        bell.close()
        listener.stop()
    assert list(deep.glob("*.sock")) == []


def test_socket_bell_unsubscribed_hears_nothing_more(short_dir):
    heard: list[int] = []
    bell = SocketBell(short_dir)
    try:
        unsubscribe = bell.subscribe("agents", lambda: heard.append(1))
        bell.ring("agents")
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
        unsubscribe()

        bell.ring("agents")
        time.sleep(0.1)

        assert heard == [1]
        assert list(short_dir.glob("*.sock")) == []
    finally:
        bell.close()


def test_redis_bell_wakes_a_subscriber_in_another_process(redis_url):
    listener = Listener("redis", redis_url, "agents")
    bell = RedisBell(redis_url)
    try:
        delays = _ring_and_measure(bell, listener)

        assert len(delays) == 5 and max(delays) < 1000
        print(f"redis bell delay ms: median {sorted(delays)[2]:.2f} worst {max(delays):.2f}")
    finally:
        bell.close()
        listener.stop()


def test_redis_bells_of_different_databases_do_not_hear_each_other(redis_url):
    base, _, db = redis_url.rpartition("/")
    other_db = f"{base}/{(int(db) + 1) % 16}"
    heard_here, heard_there = threading.Event(), threading.Event()
    here, there = RedisBell(redis_url), RedisBell(other_db)
    try:
        here.subscribe("agents", heard_here.set)
        there.subscribe("agents", heard_there.set)

        here.ring("agents")

        assert heard_here.wait(5)
        assert not heard_there.wait(0.3)
    finally:
        here.close()
        there.close()


def test_local_bell_calls_every_subscriber_and_survives_one_that_fails():
    bell = LocalBell()
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("a subscriber's bug")

    bell.subscribe("agents", broken)
    stop = bell.subscribe("agents", lambda: heard.append("a"))
    bell.subscribe("calls", lambda: heard.append("c"))

    bell.ring("agents")
    stop()
    bell.ring("agents")

    assert heard == ["a"]


@pytest.mark.parametrize("topic", ["", "Agents", "a" * 33, "agents/../x", "1x", "a b"])
def test_a_topic_outside_the_allowed_names_is_refused(topic):
    with pytest.raises(ValueError, match="bell topic"):
        check_topic(topic)
    with pytest.raises(ValueError):
        LocalBell().ring(topic)


def test_for_settings_chooses_sockets_embedded_and_redis_with_a_redis_broker(short_dir, redis_url):
    embedded = for_settings(SimpleNamespace(broker_url=None, data_dir=short_dir))
    production = for_settings(SimpleNamespace(broker_url=redis_url, data_dir=short_dir))

    assert isinstance(embedded, SocketBell)
    assert embedded.directory == (short_dir / "run" / "bell").resolve()
    assert os.stat(embedded.directory).st_mode & 0o077 == 0
    assert isinstance(production, RedisBell)
    assert for_settings(SimpleNamespace(broker_url=None, data_dir=short_dir)) is embedded
