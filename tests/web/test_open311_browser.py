"""The Open311 clients page in Chromium: an administrator registers an application, reads its
key off the page once, the key files a request over the API; revoking it makes the next
POST a 403. Screenshots admin-open311.{zh-CN,en}.png."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.web.browser import shot
from tests.web.browser import sign_in as sign_in_browser


def _post(site, key: str) -> httpx.Response:
    return httpx.post(
        f"{site.url}/open311/v2/requests.json",
        data={
            "api_key": key,
            "service_code": "020402",
            "address_string": "榆阳区人民路",
            "description": "井盖丢失",
        },
    )


def test_in_chromium_admin_issues_a_key_that_files_requests_then_revokes_it(site, page):
    sign_in_browser(page, site, "admin")
    page.goto(f"{site.url}/admin/open311")
    expect(page.locator(".open311-clients")).to_contain_text("尚无接入应用")
    page.fill("#new-client input[name=name]", "市民随手拍 App")
    page.click("#new-client button[type=submit]")
    key = page.locator("#open311-key code.secret").inner_text().strip()
    assert len(key) >= 43
    shot(page, "admin-open311")

    assert _post(site, key).status_code == 201

    page.goto(f"{site.url}/admin/open311")
    row = page.locator(".open311-clients tbody tr").first
    expect(row).to_contain_text("市民随手拍 App")
    expect(row.locator(".badge.ok")).to_be_visible()
    expect(page.locator("#open311-key")).to_have_count(0)
    row.locator("form[action$='/revoke'] button").click()
    expect(page.locator(".alert.ok")).to_contain_text("已吊销")
    expect(page.locator(".open311-clients tbody tr").first.locator(".badge.muted")).to_be_visible()

    refused = _post(site, key)
    assert refused.status_code == 403
    assert "revoked" in refused.json()[0]["description"]

    page.click("button[lang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Open311 clients")
    shot(page, "admin-open311")
