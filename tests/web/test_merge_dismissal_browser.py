"""In Chromium: a dispatcher opens a merge candidate, says it is not the same request as the
earlier ticket from the same phone (htmx swaps the candidates in place, no page load), and
the merge queue no longer lists it."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.web.browser import shot, sign_in

PHONE = "13900003333"


def _ticket(site, description: str) -> dict:
    response = httpx.post(
        f"{site.url}/api/v1/tickets",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"channel": "phone", "description": description, "caller_phone": PHONE},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


def test_a_dispatcher_keeps_two_tickets_from_one_phone_apart(site, page):
    first = _ticket(site, "我想问一下上次打电话说的那个事情现在怎么样了")
    second = _ticket(site, "另外一件事：楼道里的灯坏了")

    sign_in(page, site, "dispatcher")
    page.goto(f"{site.url}/queues/merge")
    expect(page.locator("#rows")).to_contain_text(second["number"])
    page.goto(f"{site.url}/queues/merge/{second['id']}")
    expect(page.locator("#candidates tbody tr")).to_have_count(1)
    url = page.url

    row = page.locator("#candidates tbody tr", has_text=first["number"])
    dismiss = row.locator("form[action$='/dismiss']")
    dismiss.locator("input[name=reason]").fill("不是同一件事")
    dismiss.locator("button").click()

    expect(page.locator("#candidates .alert.ok")).to_contain_text(second["number"])
    expect(page.locator("#candidates tbody tr")).to_have_count(0)
    assert page.url == url  # swapped in place by htmx
    shot(page, "merge-dismissed")
    page.goto(f"{site.url}/queues/merge")
    expect(page.locator("#rows")).not_to_contain_text(second["number"])
