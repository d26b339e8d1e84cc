"""The operator console with a real call: sipp calls the platform's SIP edge (in this process,
on the web's database) and a raw RTP peer speaks Korean; in Chromium the operator sees the
call arrive and its transcript grow live, follows it, and when the caller hangs up the
ticket form opens pre-filled from the transcript and the caller ID; the operator corrects
it with the keyboard and saves. Screenshots of the console and the form in both languages."""

from __future__ import annotations

import threading

from playwright.sync_api import expect

from core.clock import SystemClock
from hotline.calls.services import CallServices
from telephony import codecs
from telephony.endpoint import CallState
from tests.asr.conftest import recognizer, vosk_config, vosk_model_dir  # noqa: F401 - fixtures
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, frames_of
from tests.hotline.test_calls_sip import start_platform_edge
from tests.telephony.fakes import FakePrompts, silence
from tests.telephony.sip_peers import HOST, RtpPeer, start_sipp
from tests.web.browser import shot, sign_in


def test_an_operator_sees_a_call_live_and_completes_its_ticket(site, page, recognizer):
    services = CallServices(
        session_factory=site.session_factory,
        clock=SystemClock(),
        settings=site.settings,
        recognizer=recognizer,
        enqueue_transcription=lambda call_id: None,
    )
    edge, answered = start_platform_edge(services, FakePrompts(), site.settings)
    rtp = RtpPeer()
    sipp = None
    stop = threading.Event()
    try:
        sign_in(page, site, "operator")
        page.goto(f"{site.url}/console")
        expect(page.locator("h1")).to_have_text("话务台")
        expect(page.locator("#calls")).to_contain_text("当前没有通话")

        sipp = start_sipp(
            "uac_call.xml",
            target=f"{HOST}:{edge.address[1]}",
            keys={"rtp_port": rtp.port, "fmts": "0"},
            hold=60000,
        )
        call = answered.get(timeout=15)
        card = page.locator("article.call")
        expect(card).to_have_count(1, timeout=10_000)  # the list refreshed by the live stream
        expect(card).to_contain_text("13800000000")
        card.locator("input.follow-call").check()
        wait_until(lambda: call.state == CallState.LISTENING, 10, message="listening")
        # A caller who goes on for a while (pauses shorter than the end-of-speech hangover),
        # speaking in real time as a phone does: a second at a time.
        speech = frames_of(LEAK)
        talk = [*(speech + silence(700)) * 8, *silence(2500)]  # ~20 s: time to see it live

        rtp.speak((HOST, call.rtp_port), talk, payload_type=codecs.PCMU, stop=stop)
        transcript = card.locator("p.transcript")
        expect(transcript).not_to_contain_text("等待来电人说话", timeout=18_000)
        heard = transcript.inner_text()
        assert heard.strip()
        shot(page, "console")

        # The caller hangs up: the followed call's ticket form opens by itself.
        page.wait_for_url(f"{site.url}/console/tickets/*", timeout=40_000)
        expect(page.locator("input[name=caller_phone]")).to_have_value("13800000000")
        description = page.locator("textarea[name=description]")
        expect(description).not_to_have_value("")
        shot(page, "console-ticket")
        page.fill("input[name=address]", "榆阳区人民路12号")
        page.fill("textarea[name=request]", "尽快修好漏水的管道")
        page.select_option("select[name=urgency]", "urgent")
        description.focus()
        page.keyboard.press("Control+Enter")
        expect(page.locator(".alert.ok")).to_have_text("已保存。")
        expect(page.locator("input[name=address]")).to_have_value("榆阳区人民路12号")

        page.click("button[lang=en]")
        expect(page.locator(".console-form h2").first).to_have_text("Routing")
        shot(page, "console-ticket")
        page.goto(f"{site.url}/console")
        expect(page.locator("h1")).to_have_text("Operator console")
        expect(page.locator("#calls table")).to_contain_text("13800000000")
        shot(page, "console")
    finally:
        stop.set()
        edge.stop()
        services.close()
        rtp.close()
        if sipp is not None:
            sipp.kill()
            sipp.communicate(timeout=10)
