"""The operator answers a caller from the knowledge base, in Chromium on the demo city (its
published articles): a call is in progress on a ticket at intake; as the caller's live words
grow, the ticket form's suggestions follow them; Alt+1 opens the first suggestion and it stays
open while the words keep arriving; Alt+Enter answers with it — the ticket is closed at intake
citing the article and the version read out. On another ticket the operator looks an article
up by typing and tells its owner it did not answer the caller. Screenshots in both
languages."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect
from sqlalchemy import select, update
from sqlmodel import col

from accounts.models import User
from hotline import intake
from hotline.calls import intake as call_intake
from hotline.knowledge.models import KnowledgeArticle, KnowledgeUse, UseKind
from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream
from tickets.models import Channel, Status, Ticket, TicketCreate

WATER = "计划停水及供水中断期间临时供水安排"


def _call_on_a_ticket(site, call_id: str, words: str) -> int:
    """A call answered a moment ago, its ticket open at intake (as the edge makes them)."""
    with site.session_factory() as session:
        operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
        now = site.clock.now()
        ticket = intake.submit(
            session,
            data=TicketCreate(
                channel=Channel.phone,
                description=call_intake.PLACEHOLDER,
                caller_phone="13800005555",
            ),
            actor=operator,
            now=now,
            auto_dispatch=False,
        ).ticket
        session.flush()
        session.add(
            CallRecord(
                call_id=call_id,
                direction=CallDirection.INBOUND,
                caller_number="13800005555",
                arrived_at=now - timedelta(seconds=20),
                answered_at=now - timedelta(seconds=18),
                ticket_id=ticket.id,
                live_text=words,
                live_seq=1,
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
        assert ticket.id is not None
        return ticket.id


def _caller_says(site, call_id: str, words: str) -> None:
    with site.session_factory() as session:
        session.execute(
            update(CallRecord)
            .where(col(CallRecord.call_id) == call_id)
            .values(live_text=words, live_seq=CallRecord.live_seq + 1)
        )
        session.commit()


def test_the_operator_answers_from_a_suggestion_that_follows_the_callers_words(site, page):
    call_id = "kb-browser@pbx.test"
    ticket_id = _call_on_a_ticket(site, call_id, "喂，你好")
    watch_stream(page)
    sign_in(page, site, "operator")
    page.goto(f"{site.url}/console/tickets/{ticket_id}")
    wait_for_stream(page)
    results = page.locator("#kb-results")
    expect(results).to_contain_text("暂无匹配的有效知识条目")  # nothing said worth a search

    _caller_says(
        site, call_id, "喂，你好，我们家里停水了，从早上到现在一直没有水，什么时候能来水啊"
    )
    first = results.locator(".kb-hit").first
    expect(first.locator(".kb-title")).to_have_text(WATER, timeout=15_000)
    expect(first.locator("mark").first).to_be_visible()
    expect(results.locator("[role=status]")).to_contain_text("根据来电人所述推荐")
    shot(page, "console-knowledge")

    page.keyboard.press("Alt+1")
    expect(first.locator(".kb-answer")).to_be_visible()
    # More words arrive while it is open: the list holds still for the operator reading it.
    _caller_says(
        site,
        call_id,
        "喂，你好，我们家里停水了，从早上到现在一直没有水，什么时候能来水啊，有没有送水车",
    )
    expect(results.locator(".kb-hit details[open] .kb-title")).to_have_text(WATER, timeout=15_000)

    page.keyboard.press("Alt+Enter")
    expect(page.locator(".alert.ok").first).to_have_text("已直接答复，工单已办结。")
    with site.session_factory() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.status == Status.closed
        article = session.scalars(
            select(KnowledgeArticle).where(col(KnowledgeArticle.title) == WATER)
        ).one()
        use = session.scalars(
            select(KnowledgeUse).where(col(KnowledgeUse.ticket_id) == ticket_id)
        ).one()
        assert (use.article_id, use.version, use.kind) == (article.id, 1, UseKind.answered)
        assert ticket.answer and "临时供水点" in ticket.answer
    expect(page.locator(".kb-cited")).to_contain_text(article.number)
    expect(page.locator(".kb-cited")).to_contain_text("第1版")
    shot(page, "console-knowledge-answered")
    page.click("button[lang=en]")
    expect(page.locator(".kb-cited")).to_contain_text("Answered from the knowledge base")
    shot(page, "console-knowledge-answered")


def _ticket_without_a_call(site, description: str) -> int:
    """A walk-in request at intake: no call, so nothing live refreshes the card meanwhile."""
    with site.session_factory() as session:
        operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
        ticket = intake.submit(
            session,
            data=TicketCreate(channel=Channel.walk_in, description=description),
            actor=operator,
            now=site.clock.now(),
            auto_dispatch=False,
        ).ticket
        session.commit()
        assert ticket.id is not None
        return ticket.id


def test_the_operator_looks_an_article_up_and_says_it_did_not_answer(site, page):
    ticket_id = _ticket_without_a_call(site, "你好")
    sign_in(page, site, "operator")
    page.goto(f"{site.url}/console/tickets/{ticket_id}")
    expect(page.locator("#kb-results")).to_contain_text("暂无匹配的有效知识条目")
    page.fill("#kb-q", "公积金怎么提取出来")
    hit = page.locator("#kb-results .kb-hit").first
    expect(hit.locator(".kb-title")).to_contain_text("公积金", timeout=10_000)
    expect(page.locator("#kb-results [role=status]")).to_contain_text("根据您输入的内容查到")
    page.keyboard.press("Alt+1")
    hit.locator("input[name=note]").fill("来电人问异地购房能否提取")
    hit.locator(".kb-feedback button").click()
    expect(hit.locator(".alert.ok")).to_contain_text("住房公积金管理中心")
    shot(page, "console-knowledge-feedback")
    with site.session_factory() as session:
        use = session.scalars(
            select(KnowledgeUse).where(col(KnowledgeUse.ticket_id) == ticket_id)
        ).one()
        assert use.kind == UseKind.not_answered and use.note == "来电人问异地购房能否提取"
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.status == Status.intake
    page.click("button[lang=en]")
    page.fill("#kb-q", "公积金怎么提取出来")
    expect(page.locator("#kb-results .kb-hit").first).to_contain_text("version 1", timeout=10_000)
    shot(page, "console-knowledge-feedback")
