"""The dispatcher's workspace in Chromium on the demo city: the manual-dispatch queue worked
from the keyboard (the count goes down), a return reviewed and re-dispatched with a reason,
an extension approved (the deadline moves), a callback recorded as dissatisfied (the ticket
reopens), and the escalation board filtered. Screenshots of the queues overview, the
dispatch form and the escalation board in Chinese and English."""

from __future__ import annotations

from datetime import timedelta

import httpx
from playwright.sync_api import expect

from dispatch import escalation
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream

WATER_CUT = "榆阳区人民路小区从昨天早上开始停水，到现在还没来水"
UNROUTED = "我想问一下上次打电话说的那个事情现在怎么样了"


def _api(site, who: str, method: str, path: str, **body) -> dict:
    response = httpx.request(
        method,
        f"{site.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {site.token(who)}"},
        json=body or None,
        timeout=20,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def _lead(site, ticket_id: int) -> dict:
    rows = _api(site, "dispatcher", "GET", f"/tickets/{ticket_id}/assignments")
    return [a for a in rows if a["role"] == "lead" and a["status"] != "withdrawn"][-1]


def test_dispatch_from_the_queue_and_review_a_return_with_the_keyboard(site, page):
    created = _api(site, "operator", "POST", "/tickets", channel="phone", description=UNROUTED)
    ticket = created["ticket"]
    assert ticket["status"] == "pending_dispatch", created

    sign_in(page, site, "dispatcher")
    page.goto(f"{site.url}/queues")
    expect(page.locator("h1")).to_have_text("派单工作台")
    expect(page.locator("#nav-count-queues")).to_have_text("1")
    shot(page, "queues")

    page.goto(f"{site.url}/queues/manual")
    expect(page.locator("#rows tbody tr")).to_have_count(1)
    expect(page.locator("#rows a.button.primary")).to_be_focused()  # the head of the queue
    shot(page, "queue-manual")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_contain_text(ticket["number"])
    expect(page.locator(".q-advice")).to_contain_text("未命中任何规则")
    shot(page, "dispatch")

    page.locator("#lead").focus()
    page.keyboard.type("WATER")
    expect(page.locator("#lead")).to_have_value("WATER")
    page.locator("input[name=co_unit_codes][value=HOUSING]").focus()
    page.keyboard.press("Space")
    page.locator("#reason").focus()
    page.keyboard.type("小区供水管网")
    page.keyboard.press("Enter")
    expect(page.locator(".alert.ok")).to_contain_text(f"工单 {ticket['number']} 已派单")
    expect(page.locator("#rows")).to_contain_text("此队列暂无待办")
    expect(page.locator("#nav-count-queues")).to_have_class("count zero")
    lead = _lead(site, ticket["id"])
    assert lead["unit_code"] == "WATER"

    _api(
        site,
        "water.handler",
        "POST",
        f"/assignments/{lead['id']}/return",
        reason_code="wrong_mandate",
        reason="小区内部管网归物业管理",
    )
    page.goto(f"{site.url}/queues/returns")
    expect(page.locator("#rows")).to_contain_text("小区内部管网归物业管理")
    expect(page.locator("#rows a.button.primary")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".q-returned")).to_contain_text("职能不符")
    shot(page, "queue-return")
    page.locator("#lead").focus()
    page.keyboard.type("HOUSING")
    expect(page.locator("#lead")).to_have_value("HOUSING")
    page.locator("#reason").focus()
    page.keyboard.press("Enter")  # no reason: refused in words, next to the field
    expect(page.locator("#reason-error")).to_have_text("改派须填写原因，承办单位可见。")
    expect(page.locator("#lead")).to_have_value("HOUSING")  # what was chosen stays
    page.locator("#reason").fill("物业管网属住建监管")
    page.locator("#reason").press("Enter")
    expect(page.locator(".alert.ok")).to_contain_text("已改派")
    assert _lead(site, ticket["id"])["unit_code"] == "HOUSING"

    page.click("button[lang=en]")
    expect(page.locator("h1")).to_have_text("Returns to review")
    page.goto(f"{site.url}/dispatch/{ticket['id']}")
    expect(page.locator("h1")).to_contain_text("Re-dispatch")
    shot(page, "redispatch")
    another = _api(site, "operator", "POST", "/tickets", description=UNROUTED + "？")["ticket"]
    page.goto(f"{site.url}/queues")
    expect(page.locator("#nav-count-queues")).to_have_text("1")
    shot(page, "queues")
    page.goto(f"{site.url}/dispatch/{another['id']}")
    expect(page.locator(".q-advice")).to_contain_text("no rule fired")
    shot(page, "dispatch")


def test_extension_callback_and_the_escalation_board(site, page, clock):
    ticket = _api(site, "operator", "POST", "/tickets", description=WATER_CUT)["ticket"]
    lead = _lead(site, ticket["id"])
    _api(site, "water.handler", "POST", f"/assignments/{lead['id']}/sign")
    _api(
        site,
        "water.handler",
        "POST",
        f"/assignments/{lead['id']}/extensions",
        extend_by=3,
        extend_unit="workdays",
        reason="需协调施工队更换主管",
    )

    sign_in(page, site, "dispatcher")
    page.goto(f"{site.url}/queues/extensions")
    expect(page.locator("#rows a.button.primary")).to_be_focused()  # the page is ready
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_contain_text(ticket["number"])
    shot(page, "queue-extension")
    page.locator("button[value=approve]").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".alert.ok")).to_contain_text("新期限")
    assert _lead(site, ticket["id"])["reply_due_at"] > lead["reply_due_at"]

    _api(site, "water.handler", "POST", f"/assignments/{lead['id']}/reply", text="已抢修恢复供水")
    page.goto(f"{site.url}/queues/replies")
    expect(page.locator("#rows a.button.primary")).to_be_focused()  # the page is ready
    page.keyboard.press("Enter")
    expect(page.locator(".q-reply")).to_have_text("已抢修恢复供水")
    shot(page, "queue-reply")
    page.locator("button[value=approve]").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".alert.ok")).to_contain_text("待回访")

    page.goto(f"{site.url}/queues/callbacks")
    expect(page.locator("#rows a.button.primary")).to_be_focused()  # the page is ready
    page.keyboard.press("Enter")
    page.locator("input[value=dissatisfied]").focus()
    page.keyboard.press("Space")
    page.locator("#comment").fill("水还是时有时无")
    shot(page, "queue-callback")
    page.locator("button.primary").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".alert.ok")).to_contain_text("已重办")
    reopened = _api(site, "dispatcher", "GET", f"/tickets/{ticket['id']}")
    assert reopened["status"] == "dispatched" and reopened["reopen_count"] == 1

    page.goto("about:blank")  # the live stream would reload the page once the session lapses
    clock.advance(timedelta(days=5))
    assert escalation.sweep(site.session_factory, now=clock.now(), settings=site.settings).fired
    sign_in(page, site, "dispatcher")  # five idle days end a session
    page.goto(f"{site.url}/escalations")
    expect(page.locator("h1")).to_have_text("督办看板")
    rows = page.locator("#board .q-list tbody tr")
    expect(rows.first).to_contain_text(ticket["number"])
    everyone = rows.count()
    page.select_option("select[name=level]", "1")  # htmx swaps the board, the URL follows
    expect(page).to_have_url(f"{site.url}/escalations?level=1&unit=&acknowledged=")
    assert 0 < rows.count() <= everyone
    shot(page, "escalations")
    page.click("button[lang=en]")
    expect(page.locator("h1")).to_have_text("Escalation board")
    shot(page, "escalations")


def test_two_changes_close_together_both_reach_the_navigation_count(site, page):
    """The top bar's counts refresh on `sse:nav throttle:2s` without being swapped, so htmx
    drops a second change inside the 2 s; live.js sends it again once the window is over
    and the count ends right (web/static/js/live.js)."""
    watch_stream(page)
    sign_in(page, site, "dispatcher")
    page.goto(f"{site.url}/queues")
    wait_for_stream(page)
    count = page.locator("#nav-count-queues")
    expect(count).to_have_class("count zero")
    _api(site, "operator", "POST", "/tickets", channel="phone", description=UNROUTED)
    expect(count).to_have_text("1")  # refreshed: its 2 s window began
    _api(site, "operator", "POST", "/tickets", channel="phone", description=UNROUTED + "。")
    expect(count).to_have_text("2", timeout=6000)
