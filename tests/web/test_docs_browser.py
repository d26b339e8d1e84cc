"""/docs and /redoc in a real headless Chromium (Debian's) against a real uvicorn, with every
request to a host other than loopback refused: the pages must render from the app alone,
as on a network without the internet."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import ConsoleMessage, Page, Route, sync_playwright

from core.settings import Settings
from tests import services
from tests.conftest import wait_until
from web.app import create_app

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    # The docs need no database: the app's lazy session factory is never asked for one.
    app = create_app(
        settings=Settings(environment="test", database_url=f"sqlite:///{tmp_path}/db/core.db")
    )
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
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
    assert not (tmp_path / "db").exists()


class Offline:
    """What a page tried that an offline network (or the page's own policy) refused."""

    def __init__(self) -> None:
        self.aborted: list[str] = []  # requests to other hosts, aborted by the route
        self.blocked: list[str] = []  # refused by the Content-Security-Policy
        self.errors: list[str] = []  # uncaught exceptions of the page

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.blocked.append(message.text)


@pytest.fixture
def browser_page() -> Iterator[tuple[Page, Offline]]:
    """A page in Chromium whose requests to other hosts are aborted."""
    seen = Offline()

    def offline(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            seen.aborted.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.route("**/*", offline)
            page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
            page.on("console", seen.console)
            yield page, seen
        finally:
            browser.close()


def _operation_count(site: str) -> int:
    paths = httpx.get(f"{site}/openapi.json").json()["paths"]
    return sum(1 for ops in paths.values() for method in ops if method != "parameters")


def test_given_no_internet_when_docs_opened_then_swagger_ui_lists_every_operation(
    site, browser_page
):
    page, seen = browser_page
    operations = _operation_count(site)
    page.goto(f"{site}/docs")
    page.locator(".opblock").nth(operations - 1).wait_for(timeout=20_000)
    assert page.locator(".opblock").count() == operations
    assert page.locator(".info .title").inner_text().startswith("12345 government service hotline")
    assert page.locator(".opblock-summary-path").first.inner_text().startswith("/api/v1/")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "docs.png")
    assert (seen.aborted, seen.blocked, seen.errors) == ([], [], [])


def test_given_no_internet_when_redoc_opened_then_it_renders_the_operations(site, browser_page):
    page, seen = browser_page
    page.goto(f"{site}/redoc")
    operations = page.locator('[data-section-id^="operation/"]')
    operations.first.wait_for(timeout=30_000)
    assert operations.count() == _operation_count(site)
    assert "12345 government service hotline" in page.locator("h1").first.inner_text()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "redoc.png")
    assert (seen.aborted, seen.errors) == ([], [])
    # Its one reach outside: the sidebar's "API docs by Redocly" logo, which it hides
    # when the image does not load.
    assert seen.blocked
    assert all("https://cdn.redoc.ly/redoc/logo-mini.svg" in text for text in seen.blocked)
