"""The doorbell: cross-process wake-ups without polling.

Something changed that another process may be waiting for — an operator went ready, a call
joined the queue — and that process should look *now* rather than at its next poll. A ring
carries no data, only its topic: the one who hears it reads the database, which stays the
only truth. Rings may be merged or repeated, and one may be lost when a subscriber is slow
or gone; subscribers treat every ring as "look again", and keep a slow safety timer of their
own (the ACD's reconciler), so a lost ring delays and never loses work.

Three implementations of one protocol, chosen by ``for_settings``:

    RedisBell    pub/sub on the broker's Redis (production: several hosts), the channel
                 ``<prefix>:bell:<db>:<topic>`` so that two deployments on one Redis do not
                 hear each other
    SocketBell   Unix datagram sockets under ``<data_dir>/run/bell/`` (the embedded mode on
                 one host): every subscription binds one, a ring sends a byte to each
    LocalBell    within one process (tests, and a single process needing no transport)

Callbacks run on the bell's own listener thread (LocalBell: in the ringer's thread); they
should only wake something up — set an event, notify a condition — and return."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TOPIC = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its terminating NUL

Callback = Callable[[], None]
Unsubscribe = Callable[[], None]


class Bell(Protocol):
    def ring(self, topic: str) -> None:
        """Wake every subscriber of ``topic`` in every process. Never raises: a ring that
        cannot be delivered is logged and dropped (see the module's docstring)."""
        ...

    def subscribe(self, topic: str, callback: Callback) -> Unsubscribe:
        """Call ``callback`` on each ring of ``topic`` from now on, until the returned
        function is called."""
        ...

    def close(self) -> None: ...


def check_topic(topic: str) -> str:
    if not TOPIC.match(topic):
        raise ValueError(
            f"a bell topic is 1-32 of a-z, 0-9, _ and -, starting with a letter: {topic!r}"
        )
    return topic


def _call(callback: Callback, topic: str) -> None:
    try:
        callback()
    except Exception:  # one subscriber's bug must not silence the others
        log.exception("a subscriber of the bell's %r topic failed", topic)


# ---------------------------------------------------------------- in one process


class LocalBell:
    """Subscribers in this process, called in the ringer's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Callback]] = {}

    def ring(self, topic: str) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(check_topic(topic), ()))
        for callback in callbacks:
            _call(callback, topic)

    def subscribe(self, topic: str, callback: Callback) -> Unsubscribe:
        with self._lock:
            self._subscribers.setdefault(check_topic(topic), []).append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.get(topic, []).remove(callback)

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            self._subscribers.clear()


# ---------------------------------------------------------------- Unix datagram sockets


class SocketBell:
    """One host, no broker: each subscription binds a datagram socket named
    ``<topic>.<random>.sock`` in ``directory`` and a thread receives on it; a ring sends one
    byte to every socket of the topic. A socket left behind by a process that died refuses
    the datagram, and the ringer removes it. A subscriber whose queue is full already has a
    wake-up waiting, so that ring is skipped rather than waited for."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A socket's address is at most 107 bytes. A deeper data directory is reached through
        # this process's descriptor of it (Linux: /proc/self/fd/<n>/<name>), which is short.
        self._dirfd: int | None = None
        if len(os.fsencode(self.directory / f"{'x' * 32}.{'0' * 12}.sock")) > SOCKET_PATH_MAX:
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            if not Path(f"/proc/self/fd/{self._dirfd}").is_dir():
                os.close(self._dirfd)
                raise ValueError(
                    f"the bell's directory {self.directory} is too long a path for Unix "
                    f"sockets (at most {SOCKET_PATH_MAX - 52} bytes): set a shorter data_dir"
                )
        self._lock = threading.Lock()
        self._subscriptions: set[_SocketSubscription] = set()
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def ring(self, topic: str) -> None:
        check_topic(topic)
        for path in self.directory.glob(f"{topic}.*.sock"):
            try:
                with self._lock:
                    self._sender.sendto(b"!", self.address(path.name))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its process is gone
            except BlockingIOError:
                pass  # its queue is full: a wake-up is already waiting there
            except OSError:
                log.exception("ringing %s failed", path)

    def address(self, name: str) -> str:
        """The address of the socket ``name`` in the directory, short enough to bind."""
        if self._dirfd is None:
            return str(self.directory / name)
        return f"/proc/self/fd/{self._dirfd}/{name}"

    def subscribe(self, topic: str, callback: Callback) -> Unsubscribe:
        check_topic(topic)
        name = f"{topic}.{secrets.token_hex(6)}.sock"
        subscription = _SocketSubscription(
            self.directory / name, self.address(name), topic, callback
        )
        with self._lock:
            self._subscriptions.add(subscription)

        def unsubscribe() -> None:
            with self._lock:
                self._subscriptions.discard(subscription)
            subscription.stop()

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            subscriptions, self._subscriptions = list(self._subscriptions), set()
        for subscription in subscriptions:
            subscription.stop()
        self._sender.close()
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None


class _SocketSubscription:
    def __init__(self, path: Path, address: str, topic: str, callback: Callback) -> None:
        self.path, self.topic, self.callback = path, topic, callback
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        os.chmod(path, 0o600)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"bell-{topic}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(64)
            except OSError:
                return
            if self.stopping or data == b"":
                return
            _call(self.callback, self.topic)

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # Wake the receiver so that it sees `stopping` (shutdown alone does not on every
        # kernel for an unconnected datagram socket).
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke,
        ):
            poke.sendto(b"", self.sock.getsockname())
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(2)
        self.sock.close()


# ---------------------------------------------------------------- Redis pub/sub


class RedisBell:
    """Pub/sub on Redis. One connection listens for all this process's subscriptions (a
    thread of redis-py's), one publishes. Publishing is fire-and-forget: a subscriber not
    connected at that moment does not hear it (see the module's docstring)."""

    def __init__(self, url: str, prefix: str = "hotline") -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self._prefix = f"{prefix}:bell:{db}:"
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callback]] = {}
        self._pubsub: Any = None
        self._thread: Any = None

    def channel(self, topic: str) -> str:
        return self._prefix + check_topic(topic)

    def ring(self, topic: str) -> None:
        try:
            self._redis.publish(self.channel(topic), b"!")
        except ValueError:
            raise
        except Exception:
            log.exception("ringing the bell's %r topic on Redis failed", topic)

    def subscribe(self, topic: str, callback: Callback) -> Unsubscribe:
        channel = self.channel(topic)
        with self._lock:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            first = channel not in self._callbacks
            self._callbacks.setdefault(channel, []).append(callback)
            if first:
                self._pubsub.subscribe(**{channel: self._deliver})
            if self._thread is None:
                # Subscribed before the thread starts, so that the subscription is in place
                # when subscribe() returns (the SUBSCRIBE reply is read by the thread).
                self._thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True)
        self._confirm(channel)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._callbacks.get(channel, [])
                with contextlib.suppress(ValueError):
                    callbacks.remove(callback)
                if not callbacks and channel in self._callbacks:
                    del self._callbacks[channel]
                    with contextlib.suppress(Exception):
                        self._pubsub.unsubscribe(channel)

        return unsubscribe

    def _confirm(self, channel: str, timeout_s: float = 5.0) -> None:
        """Wait until Redis counts this connection among the channel's subscribers: a ring
        sent after subscribe() returns is then heard."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = dict(self._redis.pubsub_numsub(channel))
            if counts.get(channel.encode(), counts.get(channel, 0)):
                return
            time.sleep(0.01)
        raise TimeoutError(f"Redis did not confirm the subscription to {channel}")

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        with self._lock:
            callbacks = list(self._callbacks.get(channel, ()))
        topic = channel.removeprefix(self._prefix)
        for callback in callbacks:
            _call(callback, topic)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            pubsub, self._pubsub = self._pubsub, None
            self._callbacks.clear()
        if thread is not None:
            thread.stop()
            thread.join(2)
        if pubsub is not None:
            pubsub.close()
        self._redis.close()


# ---------------------------------------------------------------- which one


_bells: dict[tuple[str, str], Bell] = {}
_bells_lock = threading.Lock()


def for_settings(settings: Any) -> Bell:
    """The process's bell for a deployment (one per broker or data directory, made on first
    use): Redis when the broker is Redis, else Unix sockets under ``<data_dir>/run/bell``."""
    broker: str | None = settings.broker_url
    if broker and broker.startswith(("redis://", "rediss://", "unix://")):
        key = ("redis", broker)
    else:
        key = ("socket", str((Path(settings.data_dir) / "run" / "bell").resolve()))
    with _bells_lock:
        bell = _bells.get(key)
        if bell is None:
            bell = RedisBell(key[1]) if key[0] == "redis" else SocketBell(Path(key[1]))
            _bells[key] = bell
        return bell
