"""The public site's rate limits (web.pages.public): submissions per client address and per
phone number, failed lookups per client address — each at most `limit` hits in any
`window`, a sliding window.

Embedded (no Redis) a limiter lives in the one web process. In production several web
processes serve the site behind one address, so the count is kept in Redis when the
platform has one (its broker, ``HOTLINE_BROKER_URL``): a sorted set of hit times per key,
changed by one Lua script, so that two processes never both take the last place. The
times are the injected clock's, as everywhere.

A Redis outage fails open to the process's own limiter — not to no limit, and not shut:
the site is how a citizen reaches the government when the phone lines are busy, and a
cache failing must not turn into the web channel refusing every request. The per-process
limiter still stops a flood from one address (at `limit` × processes, the bound the site
had before); after a failure Redis is left alone for `RETRY`, so an outage costs one
connection timeout per process every few seconds, not one per request.

The Open311 POST buckets (hotline.open311.limits) are shared the same way, with the same
client, outage handling (`Outage`) and hashed keys, and a token bucket script (`BUCKETS`)
beside the sliding window's."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import redis

    from core.settings import Settings

log = logging.getLogger(__name__)

RETRY = timedelta(seconds=10)  # Redis is not asked again this long after it failed
TIMEOUT_S = 0.25  # a loopback or LAN Redis answers in well under a millisecond
PREFIX = "hotline:public-limit"
T = TypeVar("T")


class Window(Protocol):
    limit: int
    window: timedelta

    def blocked(self, key: str, now: datetime) -> bool: ...

    def hit(self, key: str, now: datetime) -> bool:
        """Count one hit; False (and not counted) when the key is already at its limit."""
        ...


class Limiter:
    """At most `limit` hits per key in any `window`, in this process only (each web worker
    keeps its own, so the real bound is `limit` × workers). It remembers at most `max_keys`
    keys, the least recently seen forgotten first, so a flood of addresses cannot grow it
    without end."""

    def __init__(self, *, limit: int, window: timedelta, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def blocked(self, key: str, now: datetime) -> bool:
        with self._lock:
            return len(self._recent(key, now)) >= self.limit

    def hit(self, key: str, now: datetime) -> bool:
        """Count one hit; False (and not counted) when the key is already at its limit."""
        with self._lock:
            hits = self._recent(key, now)
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True

    def __len__(self) -> int:
        return len(self._hits)


# Drop the hits that left the window, then count one if there is room: in one script, so
# that the check and the count are one step for every process sharing the key.
_HIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Token buckets (hotline.open311.limits): each `tokens` and the time `at` they were counted,
# in a hash. For each bucket in order: refill for the time since, up to the burst, then take
# a token if there is one, else stop there — in one script, as above, and one call for
# several buckets. ARGV: now (ms), then for each bucket its refill per ms, its burst and
# its key's lifetime (ms: the time to refill from empty, after which a missing key is the
# same full bucket). Returns {0, 0} when every bucket gave a token, else {the position of
# the first that had none (from 1), the milliseconds until it has one (at least 1)}. A
# clock behind the one that counted last refills nothing and does not move `at` back.
BUCKETS = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = burst
    at = now
  end
  if now > at then
    tokens = math.min(burst, tokens + (now - at) * rate)
    at = now
  end
  local wait = 0
  if tokens < 1 then
    wait = math.max(1, math.ceil((1 - tokens) / rate))
  else
    tokens = tokens - 1
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(at))
  redis.call('PEXPIRE', key, ARGV[3 * i + 1])
  if wait > 0 then
    return {i, wait}
  end
end
return {0, 0}
"""


def ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def hashed_key(prefix: str, name: str, key: str) -> str:
    """The Redis key of `key` under limiter `name`: a hash, so that no phone number or
    address is readable in Redis."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{prefix}:{name}:{digest}"


class Outage:
    """Whether a shared limiter asks Redis: not for `RETRY` after a failure (the limiter
    answers from its process's own count meanwhile), with one warning per outage."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._down_until: datetime | None = None

    def up(self, now: datetime) -> bool:
        return self._down_until is None or now >= self._down_until

    def failed(self, now: datetime, exc: Exception) -> None:
        if self._down_until is None:
            log.warning("%s: Redis failed (%s); counting in this process only", self.what, exc)
        self._down_until = now + RETRY

    def answered(self) -> None:
        self._down_until = None

    def guarded(self, now: datetime, shared: Callable[[], T], local: Callable[[], T]) -> T:
        """`shared()` while Redis answers, else `local()`."""
        import redis

        if self.up(now):
            try:
                value = shared()
            except redis.RedisError as exc:
                self.failed(now, exc)
            else:
                self.answered()
                return value
        return local()


class SharedLimiter:
    """The same limit as `Limiter`, counted in Redis for every process that uses the same
    `name`. Keys are hashed: a phone number is not readable in Redis. On a Redis error it
    answers from `fallback` (this process's own count) until `RETRY` has passed."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        limit: int,
        window: timedelta,
        fallback: Limiter | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.limit = limit
        self.window = window
        self.fallback = fallback or Limiter(limit=limit, window=window)
        self._script = client.register_script(_HIT)
        self.outage = Outage(f"public-site limiter {name}")

    def _key(self, key: str) -> str:
        return hashed_key(PREFIX, self.name, key)

    def blocked(self, key: str, now: datetime) -> bool:
        def shared() -> bool:
            since = ms(now - self.window)
            return int(self.client.zcount(self._key(key), f"({since}", "+inf")) >= self.limit

        return self.outage.guarded(now, shared, lambda: self.fallback.blocked(key, now))

    def hit(self, key: str, now: datetime) -> bool:
        def shared() -> bool:
            window_ms = max(1, int(self.window.total_seconds() * 1000))
            member = f"{ms(now)}-{secrets.token_hex(6)}"
            taken = self._script(
                keys=[self._key(key)], args=[ms(now), window_ms, self.limit, member]
            )
            # counted here as well, so that an outage starts from what was seen
            if taken:
                self.fallback.hit(key, now)
            return bool(taken)

        return self.outage.guarded(now, shared, lambda: self.fallback.hit(key, now))


def redis_client(url: str) -> redis.Redis:
    """A client that gives up quickly: a limiter waits on Redis in a citizen's request."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def shared_url(settings: Settings) -> str | None:
    """The Redis the limits are shared through: the platform's broker, when it is one."""
    url = settings.broker
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


# name: (limit, window)
DEFAULTS: dict[str, tuple[int, timedelta]] = {
    "per_address": (10, timedelta(hours=1)),
    "per_phone": (5, timedelta(days=1)),
    "failed_lookups": (10, timedelta(minutes=15)),
}


def _local(name: str) -> Limiter:
    limit, window = DEFAULTS[name]
    return Limiter(limit=limit, window=window)


@dataclass
class Limits:
    """The public site's limiters: submissions per client address and per phone number,
    failed lookups per client address."""

    per_address: Window = field(default_factory=lambda: _local("per_address"))
    per_phone: Window = field(default_factory=lambda: _local("per_phone"))
    failed_lookups: Window = field(default_factory=lambda: _local("failed_lookups"))

    @classmethod
    def shared(cls, client: Any) -> Limits:
        """The default limits, counted in Redis through `client`."""
        made = {
            name: SharedLimiter(client, name=name, limit=limit, window=window)
            for name, (limit, window) in DEFAULTS.items()
        }
        return cls(**made)

    @classmethod
    def for_settings(cls, settings: Settings) -> Limits:
        """Shared through Redis when the platform has one, else in this process."""
        url = shared_url(settings)
        return cls.shared(redis_client(url)) if url else cls()

    def allow_submission(self, *, address: str, phone: str | None, now: datetime) -> bool:
        phone_key = re.sub(r"\D", "", phone or "")
        if phone_key and self.per_phone.blocked(phone_key, now):
            return False
        if not self.per_address.hit(address, now):
            return False
        return not phone_key or self.per_phone.hit(phone_key, now)
