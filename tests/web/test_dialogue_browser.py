"""The operator watches a bridged call's dialogue grow live (issue 17): a caller and an
operator speak Korean (espeak-ng) through a real bridge, each side decoded live by the real
Vosk model on the served app's database; in Chromium the console's calls list and then the
ticket view show the caller's (市民) and the operator's (话务员) turns as they come, over the
page's one live stream, and the ticket page keeps them once the call has ended. Screenshots
of each in both languages."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import col

from core.clock import SystemClock
from hotline.calls.operators import OperatorCalls
from hotline.calls.services import CallServices
from telephony.models import CallRecord
from tests.asr.conftest import recognizer, vosk_config, vosk_model_dir  # noqa: F401 - fixtures
from tests.hotline.test_dialogue import BridgedTalk, _sides, _warmed
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream
from web.pages import i18n

CALL_ID = "dialogue-browser@pbx.test"
# 市民 once the catalogue has the label's Chinese (its msgid, "Citizen", until then).
CITIZEN = i18n.catalogue("zh_CN").gettext("Citizen")


def _ticket_id(site) -> int:
    with site.session_factory() as session:
        record = session.scalars(select(CallRecord).where(col(CallRecord.call_id) == CALL_ID)).one()
        assert record.ticket_id is not None
        return record.ticket_id


def test_the_operator_sees_both_speakers_turns_arrive_live(site, page, recognizer):
    site.settings.telephony.live_finish_timeout_s = 120.0  # a loaded machine decodes late
    services = CallServices(
        session_factory=site.session_factory,
        clock=SystemClock(),
        settings=site.settings,
        recognizer=_warmed(recognizer, 2),
        enqueue_transcription=lambda call_id: None,
    )
    operators = OperatorCalls(services, settings=site.settings)
    left, right = _sides()
    # Real time: the page sees the turns come one after the other as they are said.
    talk = BridgedTalk(operators, CALL_ID, left, right, pace_s=0.02)
    try:
        watch_stream(page)
        sign_in(page, site, "operator")
        page.goto(f"{site.url}/console")
        expect(page.locator("h1")).to_have_text("话务台")
        wait_for_stream(page)  # the call's arrival must reach the page

        talk.start()
        card = page.locator("article.call")
        expect(card).to_have_count(1, timeout=10_000)
        turns = card.locator(".dialogue .turn")
        expect(turns.first).to_be_visible(timeout=90_000)
        expect(card.locator(".turn-caller .who").first).to_have_text(CITIZEN)
        expect(card.locator(".turn-operator")).to_have_count(1, timeout=90_000)
        expect(card.locator(".turn-operator .who")).to_have_text("话务员")
        shot(page, "console-dialogue")

        # The ticket view while the call runs: the same turns, refreshed on the call's event.
        ticket_id = _ticket_id(site)
        page.goto(f"{site.url}/console/tickets/{ticket_id}")
        wait_for_stream(page)
        words = page.locator("#call-words")
        expect(words.locator(".turn-operator")).to_have_count(1, timeout=30_000)
        expect(words.locator(".turn-caller").nth(1)).to_be_visible(timeout=90_000)
        speakers = words.locator(".turn .who").all_inner_texts()
        assert speakers[:3] == [CITIZEN, "话务员", CITIZEN]
        shot(page, "console-ticket-dialogue")

        page.click("button[lang=en]")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#call-words .turn-operator .who")).to_have_text("Operator")
        shot(page, "console-ticket-dialogue")
        page.goto(f"{site.url}/console")
        expect(page.locator("article.call .turn-operator .who")).to_have_text("Operator")
        shot(page, "console-dialogue")

        talk.finish()
        page.goto(f"{site.url}/tickets/{ticket_id}")
        expect(page.locator(".call-dialogue .turn")).to_have_count(3)
        shot(page, "ticket-dialogue")
        page.click("button[lang=zh-CN]")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator(".call-dialogue .turn-operator .who")).to_have_text("话务员")
        shot(page, "ticket-dialogue")
    finally:
        operators.close()
        services.close()
