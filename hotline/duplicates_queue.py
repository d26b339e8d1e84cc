"""Web and Open311 requests waiting to be compared with the open tickets, in production.

`hotline.duplicates.suggest_after_intake` leaves the comparison of a request no operator took
to the workers when the platform has Redis (production's broker): once the intake commits,
the web process pushes the ticket's id on a Redis list — one LPUSH, a tenth of a millisecond,
where sending a Celery task per request cost the web process a millisecond and more
(bench/open311.py) — and the beat task `duplicates.drain_pending`, every few seconds, pops
the waiting ids and compares each (`suggest_later`: a ticket merged or closed meanwhile, or
compared already, is skipped). The dispatcher sees the suggestion seconds after the request
came in. While Redis cannot take the id the web process compares the request itself, in a
unit of work of its own (the ticket is committed already: nothing to undo, nothing lost).

An id popped by a worker that dies before comparing it is not compared: the dispatcher then
has no suggestion for that request (the merge page still compares in full when opened).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from sqlmodel import Session

from core.clock import Clock
from core.db import session_scope
from hotline.duplicates import Defer, suggest_later

log = logging.getLogger(__name__)

PENDING_KEY = "hotline:duplicates:pending"
DRAIN_BATCH = 500  # ids a drain takes at once; the next drain takes the rest
DRAIN_EVERY_S = 5.0  # the beat's period (hotline.worker)


def client(url: str) -> Any:
    """A Redis client with short timeouts: a web request must not hang on it."""
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def by_redis(url: str, session_factory: Callable[[], Session], clock: Clock) -> Defer:
    """`Defer` through the Redis list the workers drain; compared here while Redis is away."""
    pending = client(url)

    def defer(ticket_id: int) -> None:
        try:
            pending.lpush(PENDING_KEY, ticket_id)
        except redis.RedisError as exc:
            log.warning(
                "duplicates of ticket %s compared here: Redis did not take it (%s)", ticket_id, exc
            )
            with session_scope(session_factory) as session:
                suggest_later(session, ticket_id=ticket_id, now=clock.now())

    return defer


def drain(
    pending: Any, session_factory: Callable[[], Session], *, now: datetime, limit: int = DRAIN_BATCH
) -> tuple[int, int]:
    """Compare the requests waiting, oldest first, up to `limit`: (compared, suggested)."""
    raw = pending.rpop(PENDING_KEY, limit) or []
    compared = suggested = 0
    for item in raw:
        try:
            ticket_id = int(item)
        except (TypeError, ValueError):
            log.warning("not a ticket id on %s: %r (dropped)", PENDING_KEY, item)
            continue
        with session_scope(session_factory) as session:
            suggested += suggest_later(session, ticket_id=ticket_id, now=now)
        compared += 1
    return compared, suggested
