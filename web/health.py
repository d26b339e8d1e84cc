"""/health and /ready for load balancers and monitoring. Neither needs a sign-in, and
neither is in the OpenAPI document: they are for the platform's operators, not for API
clients, and /ready's 503 is its answer rather than an error of the API.

/health is liveness: the process answers; it touches nothing else, so a slow database never
gets a web process restarted.

/ready is readiness: can this process serve requests now? It checks, each within
`CHECK_TIMEOUT_S` (the broker alongside the other two),
- database: `SELECT 1` through the app's own session factory;
- broker: the Celery broker the app queues work on — Redis answers PING (other kombu
  transports are connected to); the embedded filesystem transport needs no server;
- sip_edge: a SIP edge (`hotline sip`) whose heartbeat in the sip_edge table is fresher than
  TELEPHONY__EDGE_STALE_AFTER_S;
- calendar: the working calendar is confirmed by an administrator for this year and, from
  1 December, for the next (dispatch.calendar.years_to_confirm, on the app's clock in the
  centre's time zone).
and answers 200 when every required check is ok, 503 otherwise, with every check's status
and a short detail. The SIP edge is reported but not required by default: the pages and
the API work without telephony, and a web tier that every load balancer drops because the
SIP edge died (or because a deployment has none) would turn a telephony outage into a total
one. `/ready?require=sip_edge` makes it count, for monitoring the telephony, or for a
single-host install whose one box is useless without it.

The calendar is reported and never required (nor can it be asked for): an unconfirmed year
changes no deadline, only flags it, and a 503 for it would drop every web node from the
load balancer on 1 December. It is there so that monitoring sees "2027 not confirmed"
before 1 January does.

A failing check's detail names the exception's type only; its message — hosts, ports,
database names — goes to the log, not to whoever can reach the port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from core.clock import Clock
from core.db import table_of
from core.settings import Settings
from dispatch.calendar import confirmed_years, years_to_confirm
from telephony.models import SipEdgeRecord

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}
CHECKS = ("database", "broker", "sip_edge", "calendar")
REQUIRED_BY_DEFAULT = frozenset({"database", "broker"})


class CheckFailed(Exception):
    """A check that ran and found something wrong; its message is safe to show."""


# ---------------------------------------------------------------- the checks


def check_database(session_factory: Callable[[], Any]) -> str:
    with session_factory() as session:
        session.execute(text("SELECT 1"))
    return "SELECT 1 answered"


def _broker_ping(url: str) -> Callable[[], str]:
    """A check of the broker at `url`; a Redis client is made once and its pool reused."""
    if url.startswith("filesystem://"):
        return lambda: "embedded filesystem transport (no server)"
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CHECK_TIMEOUT_S / 2,
            socket_timeout=CHECK_TIMEOUT_S / 2,
            retry=Retry(NoBackoff(), 0),
        )

        def ping_redis() -> str:
            if not client.ping():
                raise CheckFailed("Redis did not answer PING")
            return "Redis answered PING"

        return ping_redis

    def connect() -> str:
        from kombu import Connection

        with Connection(url, connect_timeout=CHECK_TIMEOUT_S / 2) as conn:
            conn.ensure_connection(max_retries=1)
        return f"{url.split(':', 1)[0]} broker connected"

    return connect


def _age(now: datetime, then: datetime) -> str:
    return f"{max(0.0, (now - then).total_seconds()):.0f} s"


def check_sip_edge(session_factory: Callable[[], Any], *, now: datetime, stale_after: float) -> str:
    table = table_of(SipEdgeRecord)
    fresh_since = now - timedelta(seconds=stale_after)
    alive = (table.c.dead_at.is_(None)) & (table.c.heartbeat_at >= fresh_since)
    with session_factory() as session:
        count, newest = session.execute(
            select(func.count(), func.max(table.c.heartbeat_at)).where(alive)
        ).one()
        if count:
            return f"{count} edge(s) alive; newest heartbeat {_age(now, newest)} ago"
        last = session.execute(
            select(table.c.heartbeat_at, table.c.dead_at)
            .order_by(table.c.heartbeat_at.desc())
            .limit(1)
        ).first()
    if last is None:
        raise CheckFailed("no SIP edge has ever run")
    if last.dead_at is not None:
        raise CheckFailed(f"no SIP edge runs; the last one stopped {_age(now, last.dead_at)} ago")
    raise CheckFailed(
        f"no heartbeat within {stale_after:g} s; the newest is {_age(now, last.heartbeat_at)} old"
    )


def check_calendar(session_factory: Callable[[], Any], *, now: datetime, tz: ZoneInfo) -> str:
    today = now.astimezone(tz).date()
    with session_factory() as session:
        confirmed = confirmed_years(session)
    waiting = years_to_confirm(today, confirmed)
    if waiting:
        raise CheckFailed("working calendar not confirmed: " + ", ".join(map(str, waiting)))
    watched = years_to_confirm(today, ())
    return "confirmed: " + ", ".join(map(str, watched))


# ---------------------------------------------------------------- running them


class Readiness:
    """Runs the checks; remembers each one's last outcome so that the log says when a
    check starts failing and when it recovers, not at every probe."""

    def __init__(
        self, *, settings: Settings, session_factory: Callable[[], Any], clock: Clock
    ) -> None:
        self._settings = settings
        self._clock = clock
        ping_broker = _broker_ping(settings.broker)
        self._checks: dict[str, Callable[[], str]] = {
            "database": lambda: check_database(session_factory),
            "broker": ping_broker,
            "sip_edge": lambda: check_sip_edge(
                session_factory,
                now=self._clock.now(),
                stale_after=self._settings.telephony.edge_stale_after_s,
            ),
            "calendar": lambda: check_calendar(
                session_factory, now=self._clock.now(), tz=self._settings.tz
            ),
        }
        self._failing: set[str] = set()
        self._lock = threading.Lock()
        # Threads of their own: a check that hangs past its timeout is abandoned, not
        # stopped, and must not hold the threads the app's routes run in.
        self._threads = anyio.CapacityLimiter(len(CHECKS) * 2)

    async def run(self, required: frozenset[str]) -> tuple[bool, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}

        async def database_then_what_it_holds() -> None:
            # One after the other: the SIP edge and the calendar are read from the same
            # database, whose own failure they would only repeat.
            results["database"] = await self._run_one("database")
            for name in ("sip_edge", "calendar"):
                if results["database"]["status"] == "ok":
                    results[name] = await self._run_one(name)
                else:
                    results[name] = {"status": "error", "detail": "the database is down", "ms": 0.0}

        async def broker() -> None:
            results["broker"] = await self._run_one("broker")

        async with anyio.create_task_group() as group:
            group.start_soon(database_then_what_it_holds)
            group.start_soon(broker)
        for name, result in results.items():
            result["required"] = name in required
        ready = all(results[name]["status"] == "ok" for name in required)
        return ready, {
            "status": "ok" if ready else "error",
            "checks": {name: results[name] for name in CHECKS},
        }

    async def _run_one(self, name: str) -> dict[str, Any]:
        start = time.perf_counter()
        error: str | None = None
        detail = ""
        with anyio.move_on_after(CHECK_TIMEOUT_S) as scope:
            try:
                detail = await anyio.to_thread.run_sync(
                    self._checks[name], abandon_on_cancel=True, limiter=self._threads
                )
            except CheckFailed as exc:
                error = detail = str(exc)
            except Exception as exc:
                error = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
                detail = f"failed: {type(exc).__name__} (the web log has the message)"
        if scope.cancelled_caught:
            error = detail = f"no answer within {CHECK_TIMEOUT_S:g} s"
        self._note(name, error)
        return {
            "status": "ok" if error is None else "error",
            "detail": detail,
            "ms": round((time.perf_counter() - start) * 1000, 1),
        }

    def _note(self, name: str, error: str | None) -> None:
        with self._lock:
            was_failing = name in self._failing
            if error is not None and not was_failing:
                self._failing.add(name)
                log.warning("readiness check %s failed: %s", name, error)
            elif error is None and was_failing:
                self._failing.discard(name)
                log.info("readiness check %s is ok again", name)


def install(app: FastAPI) -> None:
    readiness: Readiness | None = None

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=NO_STORE)

    @app.api_route("/ready", methods=["GET", "HEAD"], include_in_schema=False)
    async def ready(
        request: Request,
        require: Annotated[list[Literal["sip_edge"]] | None, Query()] = None,
    ) -> JSONResponse:
        nonlocal readiness
        if readiness is None:  # settings and the session factory are on app.state by now
            state = request.app.state
            readiness = Readiness(
                settings=state.settings, session_factory=state.session_factory, clock=state.clock
            )
        ok, body = await readiness.run(REQUIRED_BY_DEFAULT | frozenset(require or ()))
        return JSONResponse(body, status_code=200 if ok else 503, headers=NO_STORE)
