"""The sign-in and the start page in Chromium: a person signs in with the keyboard, searches
their tickets live (htmx swaps only the results), switches to English and back, signs out;
a handler sees only their unit's tickets. Screenshots of each page in both languages."""

from __future__ import annotations

import httpx
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream


def _ticket(site, description: str) -> dict:
    response = httpx.post(
        f"{site.url}/api/v1/tickets",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"channel": "phone", "caller_phone": "13800001111", "description": description},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


def test_sign_in_search_switch_language_sign_out(site, page):
    water = _ticket(site, "榆阳区人民路小区从昨天早上开始停水，到现在还没来水")
    heating = _ticket(site, "家里暖气一直不热，室温只有十二度，老人孩子都冻感冒了")
    watch_stream(page)

    page.goto(site.url)
    expect(page).to_have_url(f"{site.url}/signin")
    expect(page.locator("h1")).to_have_text("登录")
    shot(page, "signin")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", "wrong-Password-1")
    page.press("input[name=password]", "Enter")
    expect(page.locator(".alert.error")).to_have_text("用户名或密码错误。")

    sign_in(page, site, "operator")
    expect(page.locator("h1")).to_have_text("工单")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    shot(page, "tickets")

    wait_for_stream(page)
    third = _ticket(site, "小区门口的路灯坏了一个多月，晚上黑得看不见路")
    expect(rows).to_have_count(3)  # the live stream refreshed the list, no reload
    expect(rows.first).to_contain_text(third["number"])

    page.fill("input[name=q]", "暖气")  # htmx: only the results are swapped, the URL follows
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(heating["number"])
    assert "q=%E6%9A%96%E6%B0%94" in page.url
    page.fill("input[name=q]", water["number"])
    expect(rows.first).to_contain_text(water["number"])

    page.click("button[lang=en]")  # the page reloads with its filter (the URL htmx pushed)
    expect(page.locator("h1")).to_have_text("Tickets")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.wait_for_load_state("load")  # htmx is listening before the next keystroke
    expect(rows).to_have_count(1)
    page.fill("input[name=q]", "")
    expect(rows).to_have_count(3)
    shot(page, "tickets")
    page.goto(f"{site.url}/account")
    expect(page.locator("h1")).to_have_text("Your account")
    shot(page, "account")
    page.click("button[lang=zh-CN]")
    expect(page.locator("h1")).to_have_text("我的账号")
    shot(page, "account")

    page.click("text=退出")
    expect(page).to_have_url(f"{site.url}/signin")
    page.goto(site.url)
    expect(page).to_have_url(f"{site.url}/signin")


def test_a_live_refresh_in_flight_never_undoes_the_search_typed_meanwhile(site, page):
    """The list's live refresh (an SSE event) and a search typed while it is on its way:
    the search wins, whichever answer comes first."""
    water = _ticket(site, "榆阳区人民路小区从昨天早上开始停水，到现在还没来水")
    _ticket(site, "家里暖气一直不热，室温只有十二度，老人孩子都冻感冒了")
    watch_stream(page)
    sign_in(page, site, "operator")
    rows = page.locator("#results tbody tr")
    page.fill("input[name=q]", water["number"])
    expect(rows).to_have_count(1)
    wait_for_stream(page)

    refreshes: list = []  # requests of the list itself (its live refresh), held
    searches: list = []  # the search form's, held
    ended: list[str] = []
    page.on("requestfinished", lambda request: ended.append(request.url))
    page.on("requestfailed", lambda request: ended.append(request.url))

    def hold(route) -> None:
        if route.request.headers.get("hx-trigger") == "results":
            refreshes.append(route)
        elif route.request.headers.get("hx-request") and "q=&" in route.request.url:
            searches.append(route)
        else:
            route.continue_()

    def until(held: list, what: str) -> None:
        for _ in range(100):  # bounded: 10 s
            if held:
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"no {what} within 10 s")

    def release(route) -> None:
        try:
            route.continue_()
        except PlaywrightError:  # htmx aborted it meanwhile
            return
        for _ in range(100):
            if route.request.url in ended:
                break
            page.wait_for_timeout(100)
        page.wait_for_timeout(300)  # htmx's swap and settle

    page.route(f"{site.url}/?*", hold)
    _ticket(site, "小区门口的路灯坏了一个多月，晚上黑得看不见路")  # a "tickets" event
    until(refreshes, "live refresh of the list")
    assert "q=" + water["number"] in refreshes[0].request.url  # the filter it was shown with
    page.fill("input[name=q]", "")  # the person clears the search meanwhile
    until(searches, "search request")
    release(refreshes[0])  # the refresh's answer first (the old filter's one row) ...
    release(searches[0])  # ... then the search's
    page.unroute(f"{site.url}/?*")
    expect(rows).to_have_count(3)
    assert "q=&" in (page.locator("#results").get_attribute("hx-get") or "")


def test_a_handler_sees_only_their_units_tickets(site, page):
    water = _ticket(site, "榆阳区人民路小区从昨天早上开始停水，到现在还没来水")
    heating = _ticket(site, "家里暖气一直不热，室温只有十二度，老人孩子都冻感冒了")
    sign_in(page, site, "water.handler")
    expect(page.locator("h1")).to_have_text("工单")
    body = page.locator("#results")
    expect(body).to_contain_text(water["number"])
    expect(body).not_to_contain_text(heating["number"])


def test_a_change_close_behind_another_still_reaches_the_open_page(site, page):
    """A second ticket right behind the first reaches the open list too: the list is swapped
    whole, and whatever htmx's throttle drops meanwhile live.js sends again (the case that
    fails without it is the navigation count's, tests/web/test_pages_queues_browser.py)."""
    watch_stream(page)
    sign_in(page, site, "operator")
    expect(page.locator("h1")).to_have_text("工单")
    wait_for_stream(page)
    rows = page.locator("#results tbody tr")
    first = _ticket(site, "小区门口的路灯坏了一个多月，晚上黑得看不见路")
    expect(rows.first).to_contain_text(first["number"])  # refreshed: its window began
    second = _ticket(site, "楼下烧烤摊每天晚上油烟很大，窗户都不敢开")  # inside that window
    expect(rows.first).to_contain_text(second["number"], timeout=5000)
