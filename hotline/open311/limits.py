"""Rate limits on Open311 POSTs: a token bucket per API key and one per client address, held
in the web process. Each bucket holds up to `burst` requests and refills at `per_minute`;
a POST takes one token from both, or is refused (429) without touching the database. The
buckets live in one process: with several web workers the allowance is per worker, which
is enough to stop a runaway client or a flood from one address, not to meter exactly."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

MAX_KEYS = 10_000  # buckets kept before the full (idle) ones are dropped


@dataclass
class TokenBucket:
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


@dataclass
class PostLimits:
    per_key: TokenBucket
    per_address: TokenBucket

    @classmethod
    def default(cls) -> PostLimits:
        # A partner system files for many citizens: 10 a second, bursts of 120. One
        # address: 1 a second on average, bursts of 30.
        return cls(TokenBucket(600, 120), TokenBucket(60, 30))

    def check_address(self, address: str, now: datetime) -> float | None:
        """Before the key is looked up: a flood of bad keys costs no database read."""
        return self.per_address.take(address, now)

    def check_key(self, client_id: int, now: datetime) -> float | None:
        return self.per_key.take(str(client_id), now)
