"""A centre's whole loop in the browser, one person per browser: a citizen calls (sipp and a
raw RTP peer speaking, the platform's SIP edge, live Vosk); the operator sees the transcript
live, the ticket form opens when the call ends, the operator corrects it and saves; the
dispatcher dispatches it to the water company; its handler signs for it and replies with a
photo; the dispatcher approves the reply; the callback is recorded as satisfied; the ticket
is closed. No API call changes anything on the way — only pages."""

from __future__ import annotations

import threading

import httpx
from playwright.sync_api import expect

from core.clock import SystemClock
from hotline.calls.services import CallServices
from telephony import codecs
from telephony.endpoint import CallState
from telephony.recording import EndpointerSettings
from tests.asr.conftest import recognizer, vosk_config, vosk_model_dir  # noqa: F401 - fixtures
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, frames_of
from tests.hotline.test_calls_sip import start_platform_edge
from tests.telephony.fakes import FakePrompts, silence
from tests.telephony.sip_peers import HOST, RtpPeer, start_sipp
from tests.web.browser import (
    live_words_seen,
    new_page,
    shot,
    sign_in,
    wait_for_stream,
    watch_stream,
)
from tests.web.test_pages_inbox_browser import PNG


def _status(site, ticket_id: int) -> str:
    answer = httpx.get(
        f"{site.url}/api/v1/tickets/{ticket_id}",
        headers={"Authorization": f"Bearer {site.token('supervisor')}"},
        timeout=20,
    )
    return str(answer.json()["status"])


def test_a_call_becomes_a_ticket_that_is_dispatched_handled_reviewed_called_back_and_closed(
    site, page, chromium, recognizer
):
    services = CallServices(
        session_factory=site.session_factory,
        clock=SystemClock(),
        settings=site.settings,
        recognizer=recognizer,
        enqueue_transcription=lambda call_id: None,
    )
    # The caller's audio comes from a thread of this busy process: a robot patient with
    # pauses, so that a stalled sender does not end the report before it was seen live.
    edge, answered = start_platform_edge(
        services, FakePrompts(), site.settings, EndpointerSettings(end_silence_s=5.0)
    )
    rtp, sipp, stop = RtpPeer(), None, threading.Event()
    try:
        # -- the operator takes the call
        watch_stream(page)
        sign_in(page, site, "operator")
        page.goto(f"{site.url}/console")
        wait_for_stream(page)  # the call's arrival must reach the page
        sipp = start_sipp(
            "uac_call.xml",
            target=f"{HOST}:{edge.address[1]}",
            keys={"rtp_port": rtp.port, "fmts": "0"},
            hold=60000,
        )
        call = answered.get(timeout=15)
        card = page.locator("article.call")
        expect(card).to_have_count(1, timeout=10_000)
        card.locator("input.follow-call").check()
        wait_until(lambda: call.state == CallState.LISTENING, 10, message="listening")
        seen = threading.Event()  # the caller talks until the operator saw the words live
        rtp.speak_until(
            (HOST, call.rtp_port),
            [*frames_of(LEAK), *silence(700)],
            payload_type=codecs.PCMU,
            stop=stop,
            heard=seen,
            then=silence(6000),
        )
        live_words_seen(page, card, site, services, call)
        seen.set()
        page.wait_for_url(f"{site.url}/console/tickets/*", timeout=60_000)
        ticket_id = int(page.url.rsplit("/", 1)[1].split("?")[0])
        number = page.locator("h1").inner_text().split()[1]
        # The call's final transcript is attached and routed just after the hang-up: the
        # Korean words route nowhere, so the ticket waits for the dispatcher.
        wait_until(lambda: _status(site, ticket_id) != "intake", 30, message="routed")
        assert _status(site, ticket_id) == "pending_dispatch"
        page.reload()
        page.fill(
            "textarea[name=description]", "榆阳区人民路小区从昨天早上开始停水，到现在还没来水"
        )
        page.fill("input[name=address]", "榆阳区人民路12号")
        page.fill("textarea[name=request]", "尽快恢复供水")
        page.locator("textarea[name=request]").focus()
        page.keyboard.press("Control+Enter")
        expect(page.locator(".alert.ok")).to_have_text("已保存。")

        with new_page(chromium) as (desk, _), new_page(chromium) as (unit, _):
            # -- the dispatcher dispatches it
            sign_in(desk, site, "dispatcher")
            desk.goto(f"{site.url}/dispatch/{ticket_id}")
            expect(desk.locator("h1")).to_contain_text(number)
            desk.select_option("#lead", "WATER")
            shot(desk, "whole-day-dispatch")
            desk.locator("#reason").focus()
            desk.keyboard.press("Enter")
            expect(desk.locator(".alert.ok")).to_contain_text("已派单")
            assert _status(site, ticket_id) == "dispatched"

            # -- the water company's handler signs for it and replies with a photo
            sign_in(unit, site, "water.handler")
            unit.goto(f"{site.url}/inbox")
            expect(unit.locator("#results")).to_contain_text(number)
            unit.click(f"text={number}")
            unit.click("#sign button")
            expect(unit.locator(".alert.ok")).to_contain_text("已签收")
            unit.fill("#reply textarea[name=text]", "管道已抢修完毕，今晚已恢复供水。")
            unit.set_input_files(
                "#reply input[type=file]",
                files=[{"name": "抢修现场.png", "mimeType": "image/png", "buffer": PNG}],
            )
            unit.click("#reply button[type=submit]")
            expect(unit.locator(".alert.ok")).to_contain_text("回复已提交中心审核")
            assert _status(site, ticket_id) == "replied"

            # -- the dispatcher approves the reply; the callback is recorded
            desk.goto(f"{site.url}/queues/replies/{ticket_id}")
            expect(desk.locator(".q-reply")).to_contain_text("管道已抢修完毕")
            desk.locator("button[value=approve]").click()
            expect(desk.locator(".alert.ok")).to_contain_text("待回访")
            desk.goto(f"{site.url}/queues/callbacks/{ticket_id}")
            desk.locator("input[name=satisfaction][value=satisfied]").check()
            desk.fill("#comment", "市民表示已经来水，很满意")
            shot(desk, "whole-day-callback")
            desk.locator("button.primary").click()
            expect(desk.locator(".alert.ok")).to_be_visible()
            assert _status(site, ticket_id) == "closed"

            # -- the ticket page tells the whole story
            desk.goto(f"{site.url}/tickets/{ticket_id}")
            timeline = desk.locator("#timeline")
            for step in ("派单", "签收", "回复", "回访"):
                expect(timeline).to_contain_text(step)
            shot(desk, "whole-day-ticket")
    finally:
        stop.set()
        edge.stop()
        services.close()
        rtp.close()
        if sipp is not None:
            sipp.kill()
            sipp.communicate(timeout=10)
