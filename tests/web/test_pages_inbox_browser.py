"""The department's day in Chromium: a WATER handler finds the ticket in the inbox, signs for
it on the ticket page, logs a call to the caller, replies with a photo, and sees the reply
and the file on the page; a handler of another unit gets the very page a missing ticket (or
file) gets. Screenshots of the inbox and the ticket page in Chinese and English."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _ticket(site, description: str) -> dict:
    response = httpx.post(
        f"{site.url}/api/v1/tickets",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"channel": "phone", "caller_phone": "13800001111", "description": description},
        timeout=20,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert any(a["unit_code"] == "WATER" for a in body["assignments"]), body
    return {**body["ticket"], "assignments": body["assignments"]}


def _main_text(page) -> str:
    return page.locator("main").inner_text()


def test_water_handler_signs_logs_a_contact_replies_with_a_photo_others_see_nothing(site, page):
    water = _ticket(site, "榆阳区人民路小区从昨天早上开始停水，到现在还没来水")
    _ticket(site, "长城路小区自来水管爆了，水流了一地，一直没人来修")

    watch_stream(page)
    sign_in(page, site, "water.handler")
    page.goto(f"{site.url}/inbox")
    expect(page.locator("h1")).to_have_text("本单位工单")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".clock")).to_have_count(3)  # sign-for, reply, close
    page.fill("input[name=q]", water["number"])  # htmx swaps only the results
    expect(rows).to_have_count(1)
    page.fill("input[name=q]", "")
    expect(rows).to_have_count(2)
    wait_for_stream(page)
    third = _ticket(site, "金沙路小区停水两天了，请尽快恢复供水")
    expect(rows).to_have_count(3)  # the live stream refreshed the list, no reload
    expect(page.locator("#results")).to_contain_text(third["number"])
    shot(page, "inbox")

    page.click(f"text={water['number']}")
    expect(page).to_have_url(f"{site.url}/tickets/{water['id']}")
    page.click("#sign button")
    expect(page.locator(".alert.ok")).to_contain_text("已签收")

    page.click("summary[accesskey=c]")
    page.select_option("#contact select[name=method]", "phone")
    page.fill("#contact textarea[name=text]", "已电话联系市民，告知今晚八点前恢复供水")
    page.click("#contact button[type=submit]")
    expect(page.locator(".alert.ok")).to_contain_text("联系记录已保存")
    expect(page.locator(".timeline")).to_contain_text("今晚八点前恢复供水")

    page.fill("#reply textarea[name=text]", "管道已抢修完毕，今晚已恢复供水。")
    page.set_input_files(
        "#reply input[type=file]",
        files=[{"name": "抢修现场.png", "mimeType": "image/png", "buffer": PNG}],
    )
    page.click("#reply button[type=submit]")
    expect(page.locator(".alert.ok")).to_contain_text("回复已提交中心审核")
    expect(page.locator("main")).to_contain_text("管道已抢修完毕")
    link = page.locator("a", has_text="抢修现场.png")
    expect(link).to_have_count(1)
    file_url = site.url + str(link.get_attribute("href"))
    assert re.fullmatch(rf"{re.escape(site.url)}/attachments/\d+", file_url)
    downloaded = page.request.get(file_url)
    assert downloaded.status == 200 and downloaded.body() == PNG
    shot(page, "ticket")

    co = next(a for a in water["assignments"] if a["role"] == "co")
    wait_for_stream(page)  # the page the reply came back to
    signed = httpx.post(
        f"{site.url}/api/v1/assignments/{co['id']}/sign",
        headers={"Authorization": f"Bearer {site.token(co['unit_code'].lower() + '.handler')}"},
        timeout=20,
    )
    assert signed.status_code == 200, signed.text
    # the co-handling unit's step reaches the open page by the live stream
    expect(page.locator("#units .badge.a-signed")).to_have_count(1)
    expect(page.locator("#timeline")).to_contain_text("协办单位签收")

    page.click("button[lang=en]")
    expect(page.locator("h1")).to_contain_text("Ticket")
    shot(page, "ticket")
    page.goto(f"{site.url}/inbox")
    expect(page.locator("h1")).to_have_text("My unit's work")
    shot(page, "inbox")

    page.context.clear_cookies()
    sign_in(page, site, "power.handler")
    missing_id = water["id"] + 10_000
    for theirs, missing in (
        (f"/tickets/{water['id']}", f"/tickets/{missing_id}"),
        (file_url.removeprefix(site.url), "/attachments/999999"),
    ):
        response = page.goto(site.url + theirs)
        assert response is not None and response.status == 404
        seen = _main_text(page)
        response = page.goto(site.url + missing)
        assert response is not None and response.status == 404
        assert _main_text(page) == seen and "页面不存在" in seen
