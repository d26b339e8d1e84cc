"""The operator console with a real call: sipp calls the platform's SIP edge (in this process,
on the web's database) and a raw RTP peer speaks Korean; in Chromium the operator sees the
call arrive and its transcript grow live, follows it, and when the caller hangs up the
ticket form opens pre-filled from the transcript and the caller ID; the operator corrects
it with the keyboard and saves. Screenshots of the console and the form in both languages."""

from __future__ import annotations

import re
import threading

from playwright.sync_api import expect

from core.clock import SystemClock
from hotline.calls import intake as call_intake
from hotline.calls.records import upsert_call
from hotline.calls.services import CallServices
from telephony import codecs
from telephony.endpoint import CallState
from telephony.models import TranscribedBy
from telephony.recording import EndpointerSettings
from tests.asr.conftest import recognizer, vosk_config, vosk_model_dir  # noqa: F401 - fixtures
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, frames_of
from tests.hotline.test_calls_sip import start_platform_edge
from tests.telephony.fakes import FakeCall, FakePrompts, silence
from tests.telephony.sip_peers import HOST, RtpPeer, start_sipp
from tests.web.browser import live_words_seen, shot, sign_in, wait_for_stream, watch_stream


def test_an_operator_sees_a_call_live_and_completes_its_ticket(site, page, recognizer):
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
    rtp = RtpPeer()
    sipp = None
    stop = threading.Event()
    try:
        watch_stream(page)
        sign_in(page, site, "operator")
        page.goto(f"{site.url}/console")
        expect(page.locator("h1")).to_have_text("话务台")
        expect(page.locator("#calls")).to_contain_text("当前没有通话")
        wait_for_stream(page)  # the call's arrival must reach the page

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
        # A caller who goes on (pauses shorter than the end-of-speech hangover), speaking in
        # real time as a phone does, until the operator has seen the words live; then a
        # silence ends the report.
        seen = threading.Event()
        rtp.speak_until(
            (HOST, call.rtp_port),
            [*frames_of(LEAK), *silence(700)],
            payload_type=codecs.PCMU,
            stop=stop,
            heard=seen,
            then=silence(6000),
        )
        transcript = card.locator("p.transcript")
        live_words_seen(page, card, site, services, call)
        seen.set()
        heard = transcript.inner_text()
        assert heard.strip()
        shot(page, "console")

        # The caller hangs up: the followed call's ticket form opens by itself.
        page.wait_for_url(f"{site.url}/console/tickets/*", timeout=60_000)
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
        expect(page.locator(".console-form h2").filter(has_text="Routing")).to_have_count(1)
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


def test_the_form_says_live_when_the_final_transcript_arrives_and_fills_the_description(site, page):
    """The form opened before the recording was decoded: when the words reach the ticket,
    the form says so without a reload, the untouched placeholder becomes the description
    made from them, and saving keeps it (the placeholder is never written back)."""
    call_id = "late-words@pbx"
    with site.session_factory() as session:
        ticket = call_intake.open_ticket(
            session,
            call=FakeCall(call_id=call_id, remote_number="13800005555"),
            now=site.clock.now(),
            settings=site.settings,
        )
        session.flush()
        upsert_call(
            session,
            call=FakeCall(call_id=call_id, remote_number="13800005555"),
            now=site.clock.now(),
            ticket_id=ticket.id,
        )
        session.commit()
        ticket_id = ticket.id
    watch_stream(page)
    sign_in(page, site, "operator")
    page.goto(f"{site.url}/console/tickets/{ticket_id}")
    description = page.locator("textarea[name=description]")
    expect(description).to_have_value(call_intake.PLACEHOLDER)
    expect(page.locator("#call-words [role=status]")).to_be_visible()
    wait_for_stream(page)

    with site.session_factory() as session:
        call_intake.attach_transcript(
            session,
            call_id=call_id,
            text="人民路12号自来水管爆了",
            transcribed_by=TranscribedBy.offline,
            now=site.clock.now(),
            settings=site.settings,
        )
        session.commit()

    expect(page.locator("#call-words .alert.ok")).to_be_visible(timeout=15_000)
    expect(description).to_have_value(re.compile("人民路12号自来水管爆了"))
    description.focus()
    page.keyboard.press("Control+Enter")
    expect(page.locator(".alert.ok").first).to_have_text("已保存。")
    expect(description).to_have_value(re.compile("人民路12号自来水管爆了"))
