"""The real app on the test database. Every request is its own unit of work and commits;
all of them, and the test's own `session`, share one outer transaction per test that is
rolled back at the end (their commits only release savepoints)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from core.clock import FrozenClock
from core.settings import Settings
from tests.factories import World, build_world
from web.app import create_app


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    conn = engine.connect()
    trans = conn.begin()
    try:
        yield conn
    finally:
        if trans.is_active:
            trans.rollback()
        conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> Callable[[], Session]:
    def factory() -> Session:
        return Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )

    return factory


@pytest.fixture
def session(session_factory: Callable[[], Session]) -> Iterator[Session]:
    """Overrides the root fixture: here the test sees what the requests committed."""
    sess = session_factory()
    try:
        yield sess
    finally:
        sess.close()


@pytest.fixture
def app(session_factory: Callable[[], Session], clock: FrozenClock):
    return create_app(
        settings=Settings(environment="test"), session_factory=session_factory, clock=clock
    )


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def world(session: Session, clock: FrozenClock) -> World:
    """Units, the default policies, the rules of tests.factories, and a user with a token
    for every centre role plus a handler and a head for every unit."""
    built = build_world(session, clock.now())
    session.commit()
    return built


@pytest.fixture
def auth(world: World) -> Callable[[str], dict[str, str]]:
    """auth("operator"), auth("water.handler"): the headers of that user."""
    return lambda who: {"Authorization": f"Bearer {world.tokens[who]}"}


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, once per test module (not per session: playwright's sync API keeps
    an event loop running in this thread while it lives, and other modules' asyncio.run()
    would fail beside it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(fresh_db_url, tmp_path, clock):
    """The app on a real uvicorn, on a fresh database with the demo city and its accounts."""
    from tests.web.browser import serve

    with serve(fresh_db_url, tmp_path / "var", clock) as running:
        yield running


@pytest.fixture
def page(chromium):
    """A fresh browser context (no cookies) at 1366×768 that cannot reach other hosts."""
    from tests.web.browser import new_page

    with new_page(chromium) as (opened, seen):
        yield opened
        assert seen.aborted == [] and seen.errors == [], (seen.aborted, seen.errors)
