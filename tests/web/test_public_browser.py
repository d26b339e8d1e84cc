"""The public site in Chromium, on a phone (390×844) and a desktop (1366×768), with no
sign-in: a citizen sends a request with a photo and a map point, gets the ticket number and
lookup code at once, follows it by number and code, sees it on the public map and list,
and switches to English. Screenshots public-*.{zh-CN,en}.png."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect
from sqlmodel import select

from accounts.models import Role, User
from dispatch import handling, review
from dispatch.models import Assignment, AssignmentRole
from tests.web.browser import Offline, shot
from tickets.models import Ticket

PHONE = {"width": 390, "height": 844}


def _png(width: int = 8, height: int = 8) -> bytes:
    """A real (tiny, red) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xcc\x22\x22" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@contextmanager
def phone_page(browser: Browser) -> Iterator[Page]:
    seen = Offline()
    context = browser.new_context(
        viewport=PHONE,  # type: ignore[arg-type]
        locale="zh-CN",
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    try:
        page = context.new_page()
        page.route("**/*", seen.route)
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
        yield page
        assert seen.aborted == [] and seen.errors == [], (seen.aborted, seen.errors)
    finally:
        context.close()


def _fits(page: Page) -> None:
    """Nothing wider than the screen: no sideways scrolling on a phone."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    assert viewport is not None and width <= viewport["width"], width


def _send(page: Page, site, tmp_path, *, description: str, lat: str, lon: str) -> tuple[str, str]:
    page.goto(f"{site.url}/public/new")
    page.select_option("select[name=category]", "090104")
    page.fill("textarea[name=description]", description)
    page.fill("input[name=address]", "榆阳区幸福小区3号楼")
    page.fill("input[name=latitude]", lat)
    page.fill("input[name=longitude]", lon)
    photo = tmp_path / "现场.png"
    photo.write_bytes(_png())
    page.set_input_files("input[name=photos]", str(photo))
    page.fill("input[name=phone]", "13800001234")
    page.click("button.pub-primary")
    expect(page.locator("#lookup-code")).to_be_visible()
    number = page.locator("#ticket-number").inner_text().strip()
    code = page.locator("#lookup-code").inner_text().strip()
    assert len(code) == 6 and number.count("-") == 1
    return number, code


def _unit_replies(site, number: str, text: str) -> None:
    """The lead unit signs for the ticket and replies; the centre approves the reply."""
    with site.session_factory() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        lead = session.exec(
            select(Assignment).where(
                Assignment.ticket_id == ticket.id, Assignment.role == AssignmentRole.lead
            )
        ).one()
        handler = session.exec(
            select(User).where(User.unit_id == lead.unit_id, User.role == Role.handler)
        ).first()
        dispatcher = session.exec(select(User).where(User.role == Role.dispatcher)).first()
        now = site.clock.now()
        handling.sign(session, assignment_id=lead.id, actor=handler, now=now)
        handling.reply(session, assignment_id=lead.id, text=text, actor=handler, now=now)
        review.review_reply(session, ticket_id=ticket.id, approve=True, actor=dispatcher, now=now)
        session.commit()


def test_on_a_phone_send_a_request_get_number_and_code_and_follow_it(site, chromium, tmp_path):
    with phone_page(chromium) as page:
        page.goto(f"{site.url}/public/new")
        expect(page.locator("h1")).to_have_text("提交诉求")
        _fits(page)
        shot(page, "public-new-phone")

        # a form with mistakes comes back with the fields named and what was typed kept
        page.fill("textarea[name=description]", "小区停水三天了，请尽快恢复供水")
        page.click("button.pub-primary")
        expect(page.locator("[data-field=category]")).to_be_visible()
        expect(page.locator("[data-field=address]")).to_be_visible()
        expect(page.locator("textarea[name=description]")).to_have_value(
            "小区停水三天了，请尽快恢复供水"
        )
        _fits(page)
        shot(page, "public-new-errors-phone")

        number, code = _send(
            page,
            site,
            tmp_path,
            description="幸福小区停水三天了，请尽快恢复供水",
            lat="38.28531",
            lon="109.73467",
        )
        _fits(page)
        shot(page, "public-submitted-phone")

        page.click("form[action='/public/track'] button")
        expect(page.locator("#public-status")).to_be_visible()
        expect(page.locator(".pub-timeline li")).to_have_count(2)
        expect(page.locator(".pub-timeline li").nth(1)).to_contain_text("已派至承办单位")
        _fits(page)
        shot(page, "public-track-phone")

        # by hand, as someone coming back later: a wrong code shows nothing, the right one does
        page.goto(f"{site.url}/public/track")
        page.fill("input[name=number]", number)
        page.fill("input[name=code]", "AAAAAA" if code != "AAAAAA" else "BBBBBB")
        page.click("button.pub-primary")
        expect(page.locator(".pub-alert")).to_be_visible()
        expect(page.locator("#public-status")).to_have_count(0)
        page.fill("input[name=code]", code.lower())
        page.click("button.pub-primary")
        expect(page.locator("#public-status")).to_be_visible()

        # the unit replies: the sender reads the reply and, dissatisfied, reopens it
        _unit_replies(site, number, "经查，幸福小区供水管道破裂，已于今日抢修完毕，恢复供水。")
        page.goto(f"{site.url}/public/track")
        page.fill("input[name=number]", number)
        page.fill("input[name=code]", code)
        page.click("button.pub-primary")
        expect(page.locator(".pub-reply")).to_contain_text("恢复供水")
        expect(page.locator("#public-status")).to_have_text("已回复")
        _fits(page)
        shot(page, "public-reply-phone")
        page.check("input[value=dissatisfied]")
        page.fill("textarea[name=comment]", "水压还是很低")
        page.click("form.pub-rate button")
        expect(page.locator(".pub-notice")).to_contain_text("重新")
        expect(page.locator("#public-status")).to_have_text("办理中")
        expect(page.locator(".pub-timeline li").last).to_contain_text("已派至承办单位")

        page.goto(f"{site.url}/public/requests")
        expect(page.locator(".pub-list li")).to_have_count(1)
        expect(page.locator("#public-map canvas")).to_have_count(1)
        _fits(page)
        shot(page, "public-requests-phone")

        page.click("button[lang=en]")
        expect(page.locator("h1").first).to_have_text("Recent requests")
        expect(page.locator("#public-map canvas")).to_have_count(1)
        shot(page, "public-requests-phone")
        page.goto(f"{site.url}/public/new")
        shot(page, "public-new-phone")


def test_on_a_desktop_the_same_in_both_languages(site, page, tmp_path):
    page.goto(f"{site.url}/public/new")
    expect(page.locator("h1")).to_have_text("提交诉求")
    shot(page, "public-new")
    number, code = _send(
        page,
        site,
        tmp_path,
        description="幸福小区停水三天了，请尽快恢复供水",
        lat="38.28531",
        lon="109.73467",
    )
    shot(page, "public-submitted")
    _send(
        page,
        site,
        tmp_path,
        description="人民路路灯坏了一个多月，晚上看不见路",
        lat="38.2712",
        lon="109.7801",
    )
    page.goto(f"{site.url}/public/track")
    page.fill("input[name=number]", number)
    page.fill("input[name=last4]", "1234")
    page.click("button.pub-primary")
    expect(page.locator("#public-status")).to_be_visible()
    shot(page, "public-track")
    page.goto(f"{site.url}/public/requests")
    expect(page.locator(".pub-list li")).to_have_count(2)
    expect(page.locator("#public-map canvas")).to_have_count(1)
    shot(page, "public-requests")

    page.click("button[lang=en]")
    expect(page.locator("h1").first).to_have_text("Recent requests")
    expect(page.locator("#public-map canvas")).to_have_count(1)
    shot(page, "public-requests")
    page.goto(f"{site.url}/public/new")
    expect(page.locator("h1")).to_have_text("Make a request")
    shot(page, "public-new")
    page.goto(f"{site.url}/public/track")
    page.fill("input[name=number]", number)
    page.fill("input[name=code]", code)
    page.click("button.pub-primary")
    expect(page.locator("#public-status")).to_have_text("Being handled")
    shot(page, "public-track")
