"""Knowledge suggestions on the console's ticket form, through the app on both backends: found
from the call's live words or the operator's, each with its matched words; the direct answer
citing the article's version in service (a stale one refused in words, the typed answer
kept); "did not answer it" reaching the owner once; other roles and bad posts refused."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts.models import User
from hotline import intake
from hotline.knowledge import service
from hotline.knowledge.models import KnowledgeArticleCreate, KnowledgeArticleUpdate, KnowledgeUse
from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tests.web.test_pages_signin import _csrf, people, sign_in  # noqa: F401 (fixture)
from tickets.models import Channel, Status, Ticket, TicketCreate, TicketEvent


@pytest.fixture
def articles(session, people, clock):
    supervisor = people.staff["supervisor"]
    made = {}
    for key, title, body, unit in (
        (
            "card",
            "社会保障卡丢失补办",
            "社保卡丢失的，先拨打12333挂失，再携带身份证到任一社保经办网点补办，当场制卡。",
            "HRSS",
        ),
        (
            "water",
            "计划停水及临时供水安排",
            "供水企业计划停水应提前24小时公告；停水超过12小时的，设置临时供水点或安排送水车。",
            "WATER",
        ),
    ):
        data = KnowledgeArticleCreate(
            title=title,
            body=body,
            category_code="0601" if key == "card" else "0201",
            owner_unit_id=people.units[unit].id,
            policy_source="测试政策",
        )
        article = service.create_article(session, user=supervisor, data=data, now=clock.now())
        service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
        service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
        made[key] = article
    session.commit()
    return made


def _open_ticket(session, clock, description):
    operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
    ticket = intake.submit(
        session,
        data=TicketCreate(channel=Channel.phone, description=description),
        actor=operator,
        now=clock.now(),
        auto_dispatch=False,
    ).ticket
    session.commit()
    return ticket


def test_given_a_call_in_progress_then_suggestions_come_from_the_callers_words(
    client, session, clock, articles
):
    ticket = _open_ticket(session, clock, "（通话中）")
    now = clock.now()
    session.add(
        CallRecord(
            call_id="kb-1@pbx",
            direction=CallDirection.INBOUND,
            caller_number="13800001111",
            arrived_at=now - timedelta(seconds=30),
            answered_at=now - timedelta(seconds=28),
            ticket_id=ticket.id,
            live_text="喂你好，我那个社保卡丢了，要怎么补办啊",
            live_seq=2,
            created_at=now,
            updated_at=now,
        )
    )
    session.commit()
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket.id}").text
    assert 'id="kb-live"' in form and f"sse:ticket-{ticket.id}" in form
    assert re.search(r"sse:call-[0-9a-f]+ throttle:1s", form)  # refreshed as the words arrive
    fragment = client.get(
        f"/console/tickets/{ticket.id}/knowledge", headers={"HX-Request": "true"}
    ).text
    assert fragment.lstrip().startswith('<div id="kb-results"') and "<html" not in fragment
    assert "社会保障卡丢失补办" in fragment and "根据来电人所述推荐" in fragment
    assert "<mark>补办</mark>" in fragment and articles["card"].number in fragment
    assert "计划停水" not in fragment
    typed = client.get(f"/console/tickets/{ticket.id}/knowledge", params={"q": "停水送水车"}).text
    assert "计划停水及临时供水安排" in typed and "根据您输入的内容查到" in typed
    nothing = client.get(f"/console/tickets/{ticket.id}/knowledge", params={"q": "火星移民签证"})
    assert nothing.status_code == 200 and "暂无匹配的有效知识条目" in nothing.text


def test_given_an_article_chosen_then_the_answer_closes_the_ticket_citing_its_version(
    client, session, clock, articles
):
    ticket = _open_ticket(session, clock, "社保卡丢了怎么补办")
    card = articles["card"]
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket.id}").text
    done = client.post(
        f"/console/tickets/{ticket.id}/answer",
        data={
            "csrf_token": _csrf(form),
            "answer": "先拨打12333挂失，再带身份证到社保网点补办。",
            "article_id": str(card.id),
            "version": "1",
        },
    )
    assert done.status_code == 200 and "已直接答复" in done.text
    assert "依据知识库答复" in done.text and card.number in done.text
    session.expire_all()
    assert session.get(Ticket, ticket.id).status == Status.closed
    event = session.scalars(
        select(TicketEvent)
        .where(col(TicketEvent.ticket_id) == ticket.id)
        .order_by(col(TicketEvent.seq).desc())
    ).first()
    assert event.data["article"] == card.number and event.data["version"] == 1
    use = session.scalars(select(KnowledgeUse)).one()
    assert use.ticket_id == ticket.id and use.kind.value == "answered"


def test_given_the_article_changed_meanwhile_then_refused_in_words_and_the_answer_kept(
    client, session, clock, articles, people
):
    ticket = _open_ticket(session, clock, "社保卡丢了怎么补办")
    card = articles["card"]
    supervisor = people.staff["supervisor"]
    service.edit_article(
        session,
        user=supervisor,
        article_id=card.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(body="社保卡可在电子社保卡小程序在线挂失补办，邮寄到家。"),
        now=clock.now(),
    )
    service.submit_for_review(session, user=supervisor, article_id=card.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=card.id, now=clock.now())
    session.commit()
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket.id}").text
    token = _csrf(form)
    stale = client.post(
        f"/console/tickets/{ticket.id}/answer",
        data={
            "csrf_token": token,
            "answer": "旧答复：到网点补办",
            "article_id": str(card.id),
            "version": "1",
        },
    )
    assert stale.status_code == 409 and "现行为第2版" in stale.text
    assert "旧答复：到网点补办" in stale.text  # nothing typed is lost
    bad = client.post(
        f"/console/tickets/{ticket.id}/answer",
        data={"csrf_token": token, "answer": "x", "article_id": "abc", "version": "1"},
    )
    assert bad.status_code == 422 and "引用的条目不在推荐之列" in bad.text
    session.expire_all()
    assert session.get(Ticket, ticket.id).status == Status.intake
    assert session.scalars(select(KnowledgeUse)).all() == []


def test_given_did_not_answer_then_the_owner_gets_it_once(client, session, clock, articles):
    ticket = _open_ticket(session, clock, "社保卡能邮寄到外地吗")
    card = articles["card"]
    sign_in(client, "operator")
    token = _csrf(client.get(f"/console/tickets/{ticket.id}").text)
    url = f"/console/tickets/{ticket.id}/knowledge/{card.id}/not-answered"
    headers = {"HX-Request": "true"}
    first = client.post(
        url, data={"csrf_token": token, "version": "1", "note": "问能否邮寄"}, headers=headers
    )
    assert first.status_code == 200 and "人力资源和社会保障局" in first.text
    again = client.post(url, data={"csrf_token": token, "version": "1"}, headers=headers)
    assert again.status_code == 200
    rows = session.scalars(select(KnowledgeUse)).all()
    assert len(rows) == 1 and rows[0].note == "问能否邮寄" and rows[0].kind.value == "not_answered"
    no_version = client.post(url, data={"csrf_token": token, "version": ""}, headers=headers)
    assert no_version.status_code == 422 and "版本" in no_version.text
    too_long = client.post(url, data={"csrf_token": token, "version": "1", "note": "长" * 1001})
    assert too_long.status_code == 422
    unknown = client.post(
        f"/console/tickets/{ticket.id}/knowledge/99999/not-answered",
        data={"csrf_token": token, "version": "1"},
        headers=headers,
    )
    assert unknown.status_code == 422
    no_csrf = client.post(url, data={"version": "1"})
    assert no_csrf.status_code in (400, 403)
    plain = client.post(url, data={"csrf_token": token, "version": "1"}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].endswith("?feedback=1")


def test_a_handler_cannot_use_the_consoles_suggestions(client, session, clock, articles):
    ticket = _open_ticket(session, clock, "社保卡丢了")
    sign_in(client, "hrss.handler")
    response = client.get(f"/console/tickets/{ticket.id}/knowledge", follow_redirects=False)
    assert response.status_code in (403, 303)
