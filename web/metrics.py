"""Prometheus ``GET /metrics`` and the middleware that times every request.

What a scrape shows, and where each figure comes from:

* recorded where it happens (core.metrics): request latency by route template, method and
  status (this middleware, in every web process); the SLA sweep's duration, the escalation
  steps it fired and the assignments it skipped (the Celery worker's ``dispatch.sweep_sla``);
  live ASR lag (the SIP edge's decoders). These live in other processes, so ``hotline run``
  gives its children a shared prometheus_client multiprocess directory under the data dir
  and the scrape adds up the files there (see core.metrics for why the supervisor sets it);
* read from the database at scrape time (hotline.gauges): calls waiting in the operators'
  queue and the longest wait, calls in progress, tickets waiting for manual dispatch and
  for review. The database is their truth: a counter kept in the SIP process would be wrong
  after a restart or with two edges; a COUNT over a few indexed rows is not. A database that
  does not answer leaves them out and sets ``hotline_metrics_database_up`` to 0, so the
  process figures are still scraped.

Access: open to loopback (a Prometheus or an agent on the same host); from anywhere else
only with ``Authorization: Bearer <HOTLINE_WEB__METRICS_TOKEN>``, and not at all while no
token is set. Behind a reverse proxy uvicorn's ``--proxy-headers`` makes the client the real
one, so the proxy does not open it to everybody. Not in the OpenAPI document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlmodel import Session

from core import metrics
from core.clock import Clock
from core.db import session_scope
from hotline.gauges import gauges
from web.errors import error_body

log = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"  # one label for every path no route knows: no label per URL


class RequestTimer:
    """Pure ASGI middleware: observes each HTTP request's duration under the template of
    the route that served it (``/api/v1/tickets/{ticket_id}``, never the URL itself), once
    the response has been sent (a live stream counts until it closes)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.REQUEST_SECONDS.labels(template(scope), scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def template(scope: dict[str, Any]) -> str:
    """The matched route's template with its router prefixes: the request's path with each
    path parameter's value put back as ``{name}``. (The router writes the route and its
    parameters into the scope it was handed; the route's own ``path`` lacks the prefixes of
    the routers it was included with.)"""
    route = scope.get("route")
    if route is None:
        # a mounted app (the static files) leaves only its prefix, in root_path
        mounted = scope.get("root_path", "").removeprefix(scope.get("app_root_path", ""))
        return f"{mounted}/{{path}}" if mounted and "endpoint" in scope else UNMATCHED
    path: str = scope.get("path", "")
    params = {name: str(value) for name, value in (scope.get("path_params") or {}).items()}
    for name, value in params.items():  # a {name:path} parameter: the rest of the path
        if "/" in value and path.endswith(value):
            path = path.removesuffix(value) + f"{{{name}}}"
    segments, at = path.split("/"), 0
    for name, value in params.items():
        if "/" in value or not value:
            continue
        while at < len(segments) and segments[at] != value:
            at += 1
        if at == len(segments):  # not in the path as written (a converter changed it)
            return str(getattr(route, "path", UNMATCHED))
        segments[at] = f"{{{name}}}"
    return "/".join(segments)


class DatabaseGauges(Collector):
    """hotline.gauges at scrape time, as gauge families."""

    def __init__(self, session_factory: Callable[[], Session], clock: Clock) -> None:
        self._session_factory = session_factory
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "hotline_metrics_database_up",
            "1 when the database answered this scrape's queries, else 0",
        )
        try:
            with session_scope(self._session_factory) as session:
                now = gauges(session, now=self._clock.now())
        except Exception:
            log.exception("/metrics: the database gauges could not be read")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        doc = metrics.SCRAPE_TIME_GAUGES
        waiting = GaugeMetricFamily(
            "hotline_calls_waiting", doc["hotline_calls_waiting"], labels=["queue"]
        )
        waiting.add_metric(["operators"], now.calls_waiting)
        longest = GaugeMetricFamily(
            "hotline_calls_longest_wait_seconds",
            doc["hotline_calls_longest_wait_seconds"],
            labels=["queue"],
        )
        longest.add_metric(["operators"], now.longest_wait_s or 0)
        talking = GaugeMetricFamily(
            "hotline_calls_in_progress", doc["hotline_calls_in_progress"], labels=["direction"]
        )
        for direction, count in now.calls_in_progress.items():
            talking.add_metric([direction], count)
        tickets = GaugeMetricFamily(
            "hotline_tickets_waiting", doc["hotline_tickets_waiting"], labels=["queue"]
        )
        for queue, count in now.tickets_waiting.items():
            tickets.add_metric([queue], count)
        return [up, waiting, longest, talking, tickets]


def exposition(session_factory: Callable[[], Session], clock: Clock) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.recorded())
    registry.register(DatabaseGauges(session_factory, clock))
    return generate_latest(registry)


def install(app: FastAPI) -> None:
    app.add_middleware(RequestTimer)

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        state = request.app.state
        client = request.client.host if request.client else None
        authorization = request.headers.get("authorization")
        if not metrics.allowed(client, authorization, state.settings.web.metrics_token):
            return JSONResponse(
                error_body("unauthorized", "/metrics needs a bearer token from here"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = exposition(state.session_factory, state.clock)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
