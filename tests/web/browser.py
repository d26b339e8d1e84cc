"""Browser tests of the pages: a real uvicorn serving the app on a fresh database seeded with
the demo city (``hotline.seed``: its units, rules and accounts with passwords), and Debian's
headless Chromium driven by playwright (``/usr/bin/chromium``; never ``playwright install``)
with every request to another host aborted. Screenshots at 1366×768 go to tests/screenshots/
(``shot``), one per workspace and language, for people to look at."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from playwright.sync_api import Browser, Page, Route, expect
from sqlmodel import select

from core.clock import Clock
from core.db import make_engine, make_session_factory
from core.settings import Settings, WebSettings
from hotline.seed import seed_demo
from hotline.tables import metadata
from telephony.models import CallRecord
from tests import services
from tests.conftest import wait_until
from web.app import create_app

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@dataclass
class Site:
    url: str
    settings: Settings
    session_factory: Any
    clock: Clock
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def password(self, username: str) -> str:
        return str(self.users[username]["password"])

    def token(self, username: str) -> str:
        return str(self.users[username]["token"])


@contextmanager
def serve(db_url: str, data_dir: Path, clock: Clock) -> Iterator[Site]:
    """The app on a free loopback port, its database made and seeded with the demo city."""
    engine = make_engine(db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        seeded = seed_demo(session=session, now=clock.now())
        session.commit()
    settings = Settings(
        environment="test",
        database_url=db_url,
        data_dir=data_dir,
        web=WebSettings(login_delay_s=0),
    )
    app = create_app(settings=settings, session_factory=factory, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=services.free_port(),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,  # open live streams are cut, as `hotline web` does
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, message="uvicorn started")
        yield Site(
            url=f"http://127.0.0.1:{server.config.port}",
            settings=settings,
            session_factory=factory,
            clock=clock,
            users={u["username"]: u for u in seeded["users"]},
        )
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


class Offline:
    """Requests to other hosts (aborted) and the page's uncaught errors."""

    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.errors: list[str] = []

    def route(self, route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort("internetdisconnected")


@contextmanager
def new_page(browser: Browser) -> Iterator[tuple[Page, Offline]]:
    seen = Offline()
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.route("**/*", seen.route)
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
        yield page, seen
    finally:
        context.close()


def sign_in(page: Page, site: Site, username: str, password: str | None = None) -> None:
    page.goto(f"{site.url}/signin")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password or site.password(username))
    page.press("input[name=password]", "Enter")
    page.wait_for_load_state("networkidle")


# The page's live stream is open: its tab has joined the server's feed (web/live.py joins
# before the response starts), so a change made from now on reaches the page. The page's
# connect URL resumes from where the page was read (web/live.py PagePosition), which covers
# tickets and escalations; the calls and agents a console watches are not replayed, and a
# test that expects a change to arrive live waits for the stream before causing it.
STREAM_OPEN = (
    "document.addEventListener('htmx:sseOpen', function () { window.streamOpen = true; }, true);"
)


def watch_stream(page: Page) -> None:
    """Note, in every document the page loads from now on, when its live stream opens."""
    page.add_init_script(STREAM_OPEN)


def wait_for_stream(page: Page) -> None:
    """Until the current document's live stream is open (`watch_stream` first)."""
    page.wait_for_function("window.streamOpen === true", timeout=15_000)


def shot(page: Page, name: str) -> Path:
    """A screenshot of the viewport, named after the workspace and the page's language."""
    lang = page.evaluate("document.documentElement.lang") or "xx"
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.{lang}.png"
    page.screenshot(path=str(path))
    return path


def live_words_seen(page: Page, card: Any, site: Site, services: Any, call: Any) -> None:
    """Waits (bounded) until the call's live words replace the "waiting" line on the console;
    if they never do, says where they stopped: the recognizer's streams, the call's live
    transcriber, the record's live text, and what the page shows."""
    try:
        expect(card.locator("p.transcript")).not_to_contain_text("等待来电人说话", timeout=45_000)
    except AssertionError as exc:
        with site.session_factory() as session:
            record = session.exec(
                select(CallRecord).where(CallRecord.call_id == call.call_id)
            ).first()
        transcriber = services._live.get(call.call_id)
        where = {
            "recognizer": services.recognizer.stats(),
            "live_transcriber": None
            if transcriber is None
            else {
                "behind_s": transcriber.behind_s,
                "failure": transcriber.failure,
                "degraded": transcriber.degraded,
            },
            "record_live_text": None if record is None else record.live_text[:200],
            "record_ended_at": None if record is None else record.ended_at,
            "call_state": getattr(call, "state", None),
            "page_url": page.url,
        }
        raise AssertionError(f"the live words never reached the console: {where}") from exc
