"""The web application factory. Run it with `uvicorn --factory web.app:create_app`
(`hotline web` serves `create_served_app`: the same app, its start-up objects frozen).

Everything the routes depend on sits on `app.state` — settings, the clock and the session
factory — so tests hand in a frozen clock and a session factory bound to their own
transaction, and nothing here touches the database until the first request needs it.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from accounts import privacy
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory
from core.settings import Settings, get_settings
from dispatch import classifier
from hotline import duplicates_queue
from web import api, assets, docs, errors, health, live, metrics, open311, pages
from web.api import acd as acd_api
from web.api import agents as agents_api
from web.deps import OPENAPI_MODELS, LoopLimiter
from web.guards import RejectNul
from web.pages import agent_panel, call_control, console_knowledge, missed_calls, wallboard
from web.pages import figures as figures_pages
from web.pages import figures_admin as figures_admin_pages
from web.pages import figures_calls as figures_calls_pages
from web.pages import figures_export as figures_export_pages
from web.pages import knowledge as knowledge_pages
from web.pages import knowledge_forms as knowledge_forms_pages
from web.pages import public as public_pages
from web.request_ids import RequestIds


class LazySessionFactory:
    """Creates the engine on the first session asked for."""

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url
        self._factory: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Session:
        if self._factory is None:
            with self._lock:
                if self._factory is None:
                    self._factory = make_session_factory(make_engine(self._db_url))
        return self._factory()


LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def create_app(
    *,
    settings: Settings | None = None,
    session_factory: Callable[[], Session] | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    # uvicorn has set up its loggers by now: its access log would carry ?caller_phone= in clear.
    privacy.mask_logs(h for name in LOGGERS for h in logging.getLogger(name).handlers)
    app = FastAPI(
        title="12345 government service hotline",
        version="1",
        description="Intake, dispatch and supervision of 12345 hotline tickets.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Tickets the API routes get the learned suggestion the worker trains (dispatch.classifier).
    classifier.watch(settings.data_dir / classifier.MODEL_FILE)
    app.state.clock = clock or SystemClock()
    app.state.session_factory = session_factory or LazySessionFactory(settings.db_url)
    app.state.intake_limiter = LoopLimiter(settings.web.intake_concurrency)
    # Web and Open311 requests are compared with the open tickets by a worker in production
    # (Redis, workers beside the web processes); inline in the embedded mode.
    app.state.defer_duplicates = (
        duplicates_queue.by_redis(settings.broker_url, app.state.session_factory, app.state.clock)
        if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://"))
        else None
    )
    errors.install(app)
    app.add_middleware(RejectNul)
    app.add_middleware(RequestIds)  # X-Request-ID: on every log line of the request
    open311.install(app)  # first: one prefix test for every other request (web.open311)
    for router in api.ROUTERS:
        app.include_router(router, prefix=api.PREFIX)
    app.include_router(agents_api.router, prefix=api.PREFIX)
    app.include_router(acd_api.router, prefix=api.PREFIX)
    _document_parsed_bodies(app)
    # Early: routes are matched in order, and each route passed costs a request ~30 µs.
    app.include_router(open311.router)
    assets.install(app)
    docs.install(app)
    health.install(app)
    metrics.install(app)

    pages.install(app)
    app.include_router(agent_panel.router)
    app.include_router(call_control.router)
    app.include_router(console_knowledge.router)
    app.include_router(missed_calls.router)
    app.include_router(figures_pages.router)
    app.include_router(figures_export_pages.router)
    app.include_router(figures_calls_pages.router)
    app.include_router(figures_admin_pages.router)
    app.include_router(wallboard.router)
    app.include_router(knowledge_forms_pages.router)  # /knowledge/new before /knowledge/{id}
    app.include_router(knowledge_pages.router)
    app.include_router(public_pages.router)
    live.install(app)

    return app


def create_served_app() -> FastAPI:
    """``create_app`` for a process that serves it (``hotline web``'s uvicorn workers): the
    objects built at start-up (the app, its routes and models, the rule pack, the imported
    libraries: ~160,000 of them) are moved out of the garbage collector's sight once built,
    so that a full collection no longer walks them all in the middle of a request — one
    request in 7–20 paid 60–100 ms for it (bench/pages.py, 1,000,000 tickets). Not in
    ``create_app`` itself: a process that builds many apps (the tests) would keep every
    frozen one for good."""
    app = create_app()
    gc.collect()
    gc.freeze()
    return app


def _document_parsed_bodies(app: FastAPI) -> None:
    """Put the models of bodies that routes parse themselves (web.deps.json_body_schema)
    into the OpenAPI components, where those routes' request bodies point."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        _, extra = models_json_schema(
            [(m, "validation") for m in OPENAPI_MODELS], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in extra.get("$defs", {}).items():
            components.setdefault(name, definition)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
