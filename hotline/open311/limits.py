"""Rate limits on Open311 POSTs: a token bucket per API key and one per client address. Each
bucket holds up to `burst` requests and refills at `per_minute`; a POST takes one token
from both, or is refused (429) without touching the database.

Embedded (no Redis) the buckets live in the one web process. In production several web
processes serve the endpoint, so the buckets are kept in Redis when the platform has one
(its broker), the way the public site's limits are (hotline.public_limits): one Lua script
refills and takes a token in one step for every process, the keys are hashed (no client
address is readable in Redis), the times are the injected clock's. A Redis outage fails
open to each process's own buckets — a partner system filing for citizens is not cut off
because a cache is down, and a flood is still stopped, at the allowance × processes — and
Redis is left alone for `public_limits.RETRY` after a failure."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from hotline import public_limits

if TYPE_CHECKING:
    import redis

    from core.settings import Settings

MAX_KEYS = 10_000  # buckets kept before the full (idle) ones are dropped
PREFIX = "hotline:open311-limit"


class Bucket(Protocol):
    per_minute: float
    burst: int

    def take(self, key: str, now: datetime) -> float | None:
        """None when a token was taken, else the seconds until one is there."""
        ...


@dataclass
class TokenBucket:
    """A bucket per key in this process only."""

    per_minute: float
    burst: int

    def __post_init__(self) -> None:
        self._state: dict[str, tuple[float, datetime]] = {}
        self._lock = threading.Lock()

    def _level(self, key: str, now: datetime) -> float:
        tokens, at = self._state.get(key, (float(self.burst), now))
        elapsed = max((now - at).total_seconds(), 0.0)
        return min(float(self.burst), tokens + elapsed * self.per_minute / 60)

    def take(self, key: str, now: datetime) -> float | None:
        """None when a token was taken, else the seconds until one is there."""
        with self._lock:
            level = self._level(key, now)
            if level < 1:
                self._state[key] = (level, now)
                return (1 - level) * 60 / self.per_minute
            self._state[key] = (level - 1, now)
            if len(self._state) > MAX_KEYS:
                self._forget_idle(now)
            return None

    def _forget_idle(self, now: datetime) -> None:
        for key in [k for k in self._state if self._level(k, now) >= self.burst]:
            del self._state[key]


class SharedBucket:
    """The same bucket as `TokenBucket`, kept in Redis for every process that uses the same
    `name`; on a Redis error it answers from `fallback` (this process's own bucket) until
    `public_limits.RETRY` has passed (`outage`: buckets on one client share theirs)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        per_minute: float,
        burst: int,
        fallback: TokenBucket | None = None,
        outage: public_limits.Outage | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.per_minute = per_minute
        self.burst = burst
        self.fallback = fallback or TokenBucket(per_minute, burst)
        self.outage = outage or public_limits.Outage(f"Open311 limit {name}")
        self._script = client.register_script(public_limits.BUCKETS)
        self._rate_ms = per_minute / 60_000
        # a bucket left alone this long is full again: Redis may forget it
        self._lifetime_ms = max(1000, math.ceil(burst / self._rate_ms) + 1000)

    def take(self, key: str, now: datetime) -> float | None:
        refused = take_in_turn([(self, key)], now)
        return None if refused is None else refused[1]


def take_in_turn(buckets: Sequence[tuple[Bucket, str]], now: datetime) -> tuple[int, float] | None:
    """A token from each (bucket, key) in turn, stopping at the first that has none: None
    when every one gave a token, else (that one's position, the seconds until it has a
    token). Buckets kept in Redis through one client are asked in one call."""
    first = buckets[0][0]
    if isinstance(first, SharedBucket) and all(
        isinstance(b, SharedBucket) and b.client is first.client and b.outage is first.outage
        for b, _ in buckets
    ):
        shared = [(b, k) for b, k in buckets if isinstance(b, SharedBucket)]
        return first.outage.guarded(
            now,
            lambda: _in_redis(first._script, shared, now),
            lambda: _in_turn([(b.fallback, k) for b, k in shared], now),
        )
    return _in_turn(buckets, now)


def _in_turn(buckets: Sequence[tuple[Bucket, str]], now: datetime) -> tuple[int, float] | None:
    for position, (bucket, key) in enumerate(buckets):
        wait = bucket.take(key, now)
        if wait is not None:
            return position, wait
    return None


def _in_redis(
    script: Any, buckets: Sequence[tuple[SharedBucket, str]], now: datetime
) -> tuple[int, float] | None:
    args: list[float] = [public_limits.ms(now)]
    for bucket, _ in buckets:
        args += [bucket._rate_ms, bucket.burst, bucket._lifetime_ms]
    keys = [public_limits.hashed_key(PREFIX, bucket.name, key) for bucket, key in buckets]
    position, wait_ms = (int(v) for v in script(keys=keys, args=args))
    # counted here as well, so that an outage starts from what was seen
    given = len(buckets) if not position else position - 1
    for bucket, key in buckets[:given]:
        bucket.fallback.take(key, now)
    return (position - 1, wait_ms / 1000) if position else None


# A partner system files for many citizens: 10 a second, bursts of 120. One address: 1 a
# second on average, bursts of 30. (per_minute, burst)
PER_KEY = (600.0, 120)
PER_ADDRESS = (60.0, 30)


@dataclass
class PostLimits:
    per_key: Bucket
    per_address: Bucket

    @classmethod
    def default(cls) -> PostLimits:
        """The default limits, in this process."""
        return cls(TokenBucket(*PER_KEY), TokenBucket(*PER_ADDRESS))

    @classmethod
    def shared(
        cls,
        client: Any,
        *,
        per_key: tuple[float, int] = PER_KEY,
        per_address: tuple[float, int] = PER_ADDRESS,
    ) -> PostLimits:
        """The limits kept in Redis through `client`, for every process that shares it."""
        outage = public_limits.Outage("Open311 limits")
        return cls(
            SharedBucket(
                client, name="per_key", per_minute=per_key[0], burst=per_key[1], outage=outage
            ),
            SharedBucket(
                client,
                name="per_address",
                per_minute=per_address[0],
                burst=per_address[1],
                outage=outage,
            ),
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> PostLimits:
        """Shared through Redis when the platform has one, else in this process."""
        url = public_limits.shared_url(settings)
        return cls.shared(public_limits.redis_client(url)) if url else cls.default()

    def check_address(self, address: str, now: datetime) -> float | None:
        """Before the key is looked up: a flood of bad keys costs no database read."""
        return self.per_address.take(address, now)

    def check_key(self, client_id: int, now: datetime) -> float | None:
        return self.per_key.take(str(client_id), now)

    def check(self, *, address: str, client_id: int, now: datetime) -> tuple[int, float] | None:
        """Both, the address's first, for a key known without reading the database (one
        call to Redis): None, or (0 for the address, 1 for the key; the wait in seconds)."""
        return take_in_turn([(self.per_address, address), (self.per_key, str(client_id))], now)
