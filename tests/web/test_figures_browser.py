"""The figures' pages in Chromium at 1366×768 on the hand-made city of figures_fixtures with
a few weeks of located requests and a day of calls: the dashboard draws its charts (each an
ECharts canvas with a size), the XLSX downloaded from the page holds the page's numbers,
hot spots draw the map of located requests, a handler's page shows only their unit.
Screenshots figures-*.{zh-CN,en}.png."""

from __future__ import annotations

import io
import random
import secrets
from datetime import timedelta

import httpx
from openpyxl import load_workbook
from playwright.sync_api import Page, expect

from accounts.models import Role
from accounts.service import create_user
from accounts.signin import set_password
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome
from tests.hotline.figures_fixtures import NOW, L, build_city
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream
from tickets.models import Channel, Ticket
from web.pages import figures_common

PERIOD = "from=2026-12-01&to=2026-12-07"
PASSWORD = "Figures-12345"
CATEGORIES = [("020301", "供水"), ("020302", "供电"), ("0401", "噪声扰民"), ("0502", "道路维修"),
              ("0601", "物业管理"), ("0703", "劳动保障")]  # fmt: skip
DISTRICTS = [("黄浦区", 31.23, 121.48), ("徐汇区", 31.19, 121.44), ("浦东新区", 31.22, 121.54),
             ("闵行区", 31.11, 121.38), ("静安区", 31.23, 121.45)]  # fmt: skip


def _populate(site) -> None:
    site.clock.set(NOW)
    rng = random.Random(18)
    with site.session_factory() as session:
        city = build_city(session)
        for day in range(-6, 7):
            for _ in range(rng.randint(6, 14) + (8 if day > 0 else 0)):
                code, name = rng.choice(CATEGORIES[:3] if day > 0 else CATEGORIES)
                district, lat, lng = rng.choice(DISTRICTS)
                at = L(1, 8) + timedelta(
                    days=day, hours=rng.randint(0, 12), minutes=rng.randint(0, 59)
                )
                session.add(
                    Ticket(
                        number=f"B{secrets.token_hex(6)}", description="x",
                        channel=rng.choice([Channel.phone, Channel.web]),
                        created_at=at, updated_at=at, category_code=code, category_name=name,
                        district=district, latitude=lat + rng.uniform(-0.04, 0.04),
                        longitude=lng + rng.uniform(-0.04, 0.04),
                    )
                )  # fmt: skip
        for day in range(1, 8):
            for n in range(rng.randint(10, 25)):
                at = L(day, 9) + timedelta(minutes=7 * n)
                wait = rng.choice([3, 8, 12, 20, 40])
                outcome = QueueOutcome.abandoned if wait == 40 else QueueOutcome.agent
                session.add(
                    CallRecord(
                        call_id=secrets.token_hex(8), direction=CallDirection.INBOUND,
                        arrived_at=at, answered_at=at, queued_at=at,
                        queue_left_at=at + timedelta(seconds=wait), queue_outcome=outcome,
                        agent_answered_at=at + timedelta(seconds=wait)
                        if outcome == QueueOutcome.agent else None,
                        ended_at=at + timedelta(seconds=wait + 90), created_at=at, updated_at=at,
                    )
                )  # fmt: skip
        user, _token = create_user(
            session, username="street.fig", display_name="街道联络员", role=Role.handler,
            unit_id=city.units["STREET"], now=NOW,
        )  # fmt: skip
        assert user.id is not None
        set_password(session, user_id=user.id, password=PASSWORD, now=NOW)
        session.commit()


def _charts_drawn(page: Page) -> None:
    charts = page.locator("[data-chart]")
    count = charts.count()
    assert count > 0
    for i in range(count):
        chart = charts.nth(i)
        expect(chart).to_have_attribute("data-drawn", "true")
        size = chart.locator("canvas").first.evaluate("c => [c.width, c.height]")
        assert size[0] > 100 and size[1] > 100, (chart.get_attribute("data-chart"), size)


def _no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1366, width


def test_the_dashboard_draws_its_charts_and_its_xlsx_holds_the_pages_numbers(site, page) -> None:
    _populate(site)
    sign_in(page, site, "supervisor")
    page.goto(f"{site.url}/figures?{PERIOD}")
    _charts_drawn(page)
    _no_sideways_scroll(page)
    shot(page, "figures-dashboard")

    shown = {}
    for card in page.locator(".fig-card").all():
        shown[card.get_attribute("data-figure")] = (
            int(card.get_attribute("data-numerator") or -1),
            int(card.get_attribute("data-denominator") or -1),
        )
    assert len(shown) == 13 and shown["direct_answer_rate"][0] == 1
    with page.expect_download() as waiting:
        page.locator(".bar [data-export=xlsx]").click()
    download = waiting.value
    assert download.suggested_filename == "figures-2026-12-01-2026-12-07.xlsx"
    book = load_workbook(io.BytesIO(open(download.path(), "rb").read()), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    header = next(i for i, r in enumerate(rows) if r and r[0] == "指标")
    got = {r[0]: (r[2], r[3]) for r in rows[header + 1 :]}
    assert got == shown
    assert "统计口径" in next(book.worksheets[1].iter_rows(values_only=True))

    # the drill-down from a card lists as many tickets as the card counts
    page.locator('.fig-card[data-figure="direct_answer_rate"] .fig-den').click()
    expect(page.locator("#fig-drill")).to_have_attribute(
        "data-total", str(shown["direct_answer_rate"][1])
    )

    # and from the calls' numbers to the calls they count
    page.goto(f"{site.url}/figures?{PERIOD}")
    answered = page.locator("[data-calls=answered]").inner_text()
    page.locator("[data-calls=answered]").click()
    expect(page.locator("#fig-drill")).to_have_attribute("data-total", answered.split()[-1])
    shot(page, "figures-calls")

    page.goto(f"{site.url}/figures/hotspots?{PERIOD}")
    _charts_drawn(page)
    assert int(page.locator("#fig-located").get_attribute("data-total") or 0) > 50
    # from 2 Dec on only the first three categories were asked about, eight a day more
    rising = page.locator("#fig-rising tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.code)"
    )
    assert rising and set(rising) <= {"020301", "020302", "0401"}, rising
    _no_sideways_scroll(page)
    shot(page, "figures-hotspots")
    page.goto(f"{site.url}/figures/units?{PERIOD}")
    expect(page.locator("#fig-ranking tbody tr")).to_have_count(3)
    shot(page, "figures-units")

    page.click("button[lang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    shot(page, "figures-units")
    page.goto(f"{site.url}/figures?{PERIOD}")
    _charts_drawn(page)
    _no_sideways_scroll(page)
    shot(page, "figures-dashboard")
    page.goto(f"{site.url}/figures/hotspots?{PERIOD}")
    _charts_drawn(page)
    shot(page, "figures-hotspots")


def test_a_handlers_page_shows_only_their_unit(site, page) -> None:
    _populate(site)
    sign_in(page, site, "street.fig", PASSWORD)
    page.goto(f"{site.url}/figures/unit?{PERIOD}")
    _charts_drawn(page)
    expect(page.locator("#fig-mine .fig-band")).to_be_visible()
    body = page.locator("main").inner_text()
    assert "OTHER" not in body and "CITY" not in body
    _no_sideways_scroll(page)
    shot(page, "figures-unit")
    page.click("button[lang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    _charts_drawn(page)
    shot(page, "figures-unit")


def test_the_admin_sets_the_weights_on_the_page(site, page) -> None:
    sign_in(page, site, "admin")
    page.goto(f"{site.url}/admin/figures")
    page.fill("input[name='weights.response']", "40")
    page.click("#fig-settings button[type=submit]")
    expect(page.locator("#err-weights")).to_be_visible()  # 40 + 35 + 35 ≠ 100
    shot(page, "figures-admin")
    page.fill("input[name='weights.resolution']", "30")
    page.fill("input[name='weights.satisfaction']", "30")
    page.click("#fig-settings button[type=submit]")
    expect(page.locator(".alert.ok")).to_be_visible()
    expect(page.locator("input[name='weights.response']")).to_have_value("40")


def test_the_dashboard_reads_its_figures_again_after_a_change(site, page, monkeypatch) -> None:
    """A ticket taken while the dashboard is open: its stream reports the change, and the
    figures (cards and charts) are read again LIVE_REFRESH_S later, without a page load."""
    monkeypatch.setattr(figures_common, "LIVE_REFRESH_S", 1)
    _populate(site)
    watch_stream(page)
    sign_in(page, site, "supervisor")
    page.goto(f"{site.url}/figures?from=2026-12-01&to=2026-12-09")  # NOW is 9 Dec
    _charts_drawn(page)
    wait_for_stream(page)
    card = page.locator('.fig-card[data-figure="direct_answer_rate"]')
    before = int(card.get_attribute("data-denominator") or -1)
    page.evaluate("window.notReloaded = true")
    assert page.locator("#fig-live").get_attribute("data-refresh-s") == "1"

    response = httpx.post(
        f"{site.url}/api/v1/tickets",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"channel": "phone", "description": "小区门口的路灯坏了三天了"},
        timeout=20,
    )
    assert response.status_code == 201, response.text

    expect(card).to_have_attribute("data-denominator", str(before + 1), timeout=15_000)
    assert page.evaluate("window.notReloaded") is True  # swapped in place
    _charts_drawn(page)  # drawn again from the new data
