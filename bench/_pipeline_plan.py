"""What bench/pipeline.py's parts share: the moment every figure is taken at, the rule
book's size, the plans (full and quick) and the platform's settings for a benchmark."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from core.settings import Settings

# A Tuesday, 10:00 in Shanghai: a working day chinese-calendar knows, so workday deadlines
# are computed from the real calendar.
NOW = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
N_RULES = 1000


@dataclass(frozen=True)
class Plan:
    tickets: int  # per timed round of the in-process pipeline
    rounds: int
    warmup: int
    http_requests: int  # per app, over all rounds
    http_rounds: int
    concurrency: int
    sweep_sizes: tuple[int, int]
    sweep_due: int
    sweep_reps: int
    profile: bool
    profile_tickets: int = 300


FULL = Plan(
    tickets=1500,
    rounds=3,
    warmup=30,
    http_requests=2000,
    http_rounds=4,
    concurrency=8,
    sweep_sizes=(10_000, 1_000_000),
    sweep_due=200,
    sweep_reps=3,
    profile=False,
)
QUICK = Plan(
    tickets=200,
    rounds=3,
    warmup=20,
    http_requests=300,
    http_rounds=2,
    concurrency=8,
    sweep_sizes=(10_000, 100_000),
    sweep_due=50,
    sweep_reps=2,
    profile=False,
)


def bench_settings(url: str | None = None) -> Settings:
    # Outside development the default secret is refused; a benchmark needs any real one.
    return Settings(environment="test", secret_key=secrets.token_hex(32), database_url=url)
