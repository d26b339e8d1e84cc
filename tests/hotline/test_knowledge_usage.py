"""The knowledge base at the operator's side, on both backends: suggestions from the caller's
recent words; the direct answer that closes at intake citing the article and the version in
service (never a superseded, expired or retired one); "did not answer it" feedback, once per
ticket, article and operator."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.errors import Conflict, InvalidInput, NotFound
from hotline import intake
from hotline.knowledge import service, usage
from hotline.knowledge.demo import load_demo_articles
from hotline.knowledge.models import (
    KnowledgeArticle,
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeUse,
    UseKind,
)
from hotline.knowledge.search import make_index
from tests.factories import build_world
from tickets.lifecycle import Action
from tickets.models import Channel, Status, TicketCreate, TicketEvent


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def article(session, world, clock):
    supervisor = world.staff["supervisor"]
    data = KnowledgeArticleCreate(
        title="社会保障卡丢失补办",
        body="社保卡丢失的，先拨打12333挂失，再携带身份证到任一社保经办网点补办，当场制卡。",
        category_code="0601",
        owner_unit_id=world.units["HRSS"].id,
        policy_source="社会保障卡管理办法",
    )
    made = service.create_article(session, user=supervisor, data=data, now=clock.now())
    service.submit_for_review(session, user=supervisor, article_id=made.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=made.id, now=clock.now())
    session.commit()
    return made


def _ticket(session, world, clock, text="我的社保卡丢了，怎么补办啊"):
    submission = intake.submit(
        session,
        data=TicketCreate(channel=Channel.phone, description=text),
        actor=world.staff["operator"],
        now=clock.now(),
        auto_dispatch=False,
    )
    session.commit()
    return submission.ticket


def test_the_query_is_the_typed_words_else_the_summary_and_the_callers_latest_words():
    said = ["喂你好", "我想问一下", "我的社保卡丢了" * 30]
    query = usage.query_of(title="社保卡补办", request=None, caller_words=said)
    assert query.startswith("社保卡补办 ")
    assert len(query) <= len("社保卡补办 ") + usage.RECENT_WORDS
    assert query.endswith("我的社保卡丢了")
    assert usage.query_of(title="x", request="y", caller_words=said, typed=" 公积金 ") == "公积金"
    assert usage.query_of(title=None, request=None, caller_words=[]) == ""


def test_the_callers_words_are_their_turns_of_an_operators_call_else_the_transcript():
    taken = SimpleNamespace(
        dialogue=[
            {"speaker": "operator", "text": "您好12345"},
            {"speaker": "caller", "text": "社保卡丢了"},
        ],
        transcript=None,
        live_text="",
    )
    robot = SimpleNamespace(dialogue=None, transcript=None, live_text="路灯不亮")
    assert usage.caller_words([taken, robot]) == ["社保卡丢了", "路灯不亮"]


def test_given_the_callers_words_then_the_article_is_suggested_with_its_version_and_owner(
    session, world, clock, article
):
    found = usage.suggest(
        session, index=make_index(session), query="社保卡丢了怎么补办", now=clock.now()
    )
    assert [s.article_id for s in found] == [article.id]
    hit = found[0]
    assert hit.version == 1 and hit.owner == world.units["HRSS"].name
    assert "12333" in hit.answer and "补办" in hit.hit.matched_words
    assert usage.suggest(session, index=make_index(session), query="  ", now=clock.now()) == []


def test_given_a_direct_answer_citing_the_article_then_the_ticket_closes_citing_it(
    session, world, clock, article
):
    ticket = _ticket(session, world, clock)
    usage.answer_with_article(
        session,
        ticket_id=ticket.id,
        article_id=article.id,
        version=1,
        answer="先打12333挂失，再带身份证到社保网点补办。",
        user=world.staff["operator"],
        now=clock.now(),
    )
    session.commit()
    session.refresh(ticket)
    assert ticket.status == Status.closed
    event = session.scalars(
        select(TicketEvent).where(
            col(TicketEvent.ticket_id) == ticket.id,
            col(TicketEvent.action) == Action.close_at_intake,
        )
    ).one()
    assert event.data["article"] == article.number and event.data["version"] == 1
    use = session.scalars(select(KnowledgeUse)).one()
    assert (use.kind, use.ticket_id, use.version) == (UseKind.answered, ticket.id, 1)
    cited = usage.cited_article(session, ticket_id=ticket.id)
    assert cited == usage.Citation(article.id, article.number, 1)


def test_given_a_superseded_version_then_the_answer_is_refused_and_nothing_changes(
    session, world, clock, article
):
    supervisor = world.staff["supervisor"]
    service.edit_article(
        session,
        user=supervisor,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(
            body="社保卡丢失的，可在“电子社保卡”小程序在线挂失并申请补卡，邮寄到家。"
        ),
        now=clock.now(),
    )
    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
    session.commit()
    ticket = _ticket(session, world, clock)
    with pytest.raises(Conflict, match="version 2"):
        usage.answer_with_article(
            session,
            ticket_id=ticket.id,
            article_id=article.id,
            version=1,
            answer="旧的答复",
            user=world.staff["operator"],
            now=clock.now(),
        )
    session.rollback()
    session.refresh(ticket)
    assert ticket.status == Status.intake
    assert session.scalars(select(KnowledgeUse)).all() == []


def test_given_an_expired_or_retired_article_then_it_cannot_be_cited(
    session, world, clock, article
):
    supervisor = world.staff["supervisor"]
    ticket = _ticket(session, world, clock)
    service.edit_article(
        session,
        user=supervisor,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(valid_until=clock.now() + timedelta(days=1)),
        now=clock.now(),
    )
    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
    session.commit()
    later = clock.now() + timedelta(days=2)
    with pytest.raises(Conflict, match="not valid"):
        usage.cited_version(session, article_id=article.id, version=2, now=later)
    service.retire_article(
        session, user=supervisor, article_id=article.id, reason="政策废止", now=clock.now()
    )
    session.commit()
    with pytest.raises(Conflict, match="not in service"):
        usage.answer_with_article(
            session,
            ticket_id=ticket.id,
            article_id=article.id,
            version=2,
            answer="x",
            user=world.staff["operator"],
            now=clock.now(),
        )
    with pytest.raises(NotFound):
        usage.cited_version(session, article_id=99_999, version=1, now=clock.now())


def test_given_not_answered_feedback_then_one_row_per_ticket_and_operator(
    session, world, clock, article
):
    ticket = _ticket(session, world, clock, text="社保卡能不能邮寄到外地")
    operator = world.staff["operator"]
    first = usage.report_not_answered(
        session,
        article_id=article.id,
        version=1,
        user=operator,
        now=clock.now(),
        ticket_id=ticket.id,
    )
    again = usage.report_not_answered(
        session,
        article_id=article.id,
        version=1,
        user=operator,
        now=clock.now(),
        ticket_id=ticket.id,
        note="来电人问能否邮寄到外地",
    )
    session.commit()
    rows = session.scalars(select(KnowledgeUse)).all()
    assert len(rows) == 1 and first.id == again.id
    assert rows[0].kind == UseKind.not_answered and rows[0].note == "来电人问能否邮寄到外地"
    assert rows[0].handled_at is None
    with pytest.raises(InvalidInput):
        usage.report_not_answered(
            session,
            article_id=article.id,
            version=1,
            user=operator,
            now=clock.now(),
            note="长" * 1001,
        )
    with pytest.raises(NotFound):
        usage.report_not_answered(
            session, article_id=123_456, version=1, user=operator, now=clock.now()
        )


def test_the_demo_city_has_a_knowledge_base_in_service(session, world, clock):
    # The demo articles name the demo city's unit codes; the test world has a few of them.
    from dispatch.models import Unit

    for code in ("HOUSING_FUND", "ECOLOGY", "URBAN_MGMT", "HR_SOCIAL", "MEDICAL_INS"):
        session.add(Unit(code=code, name=code, level=world.units["HRSS"].level))
    for code in ("CIVIL_AFFAIRS", "POLICE", "EDUCATION", "TRANSPORT", "TRAFFIC_POLICE"):
        session.add(Unit(code=code, name=code, level=world.units["HRSS"].level))
    for code in ("MARKET", "HEALTH"):
        session.add(Unit(code=code, name=code, level=world.units["HRSS"].level))
    session.flush()
    count = load_demo_articles(session, approver=world.staff["supervisor"], now=clock.now())
    session.commit()
    published = session.scalars(
        select(KnowledgeArticle).where(col(KnowledgeArticle.published_version) == 1)
    ).all()
    assert count == len(published) >= 40
    hits = make_index(session).search("我家停水了什么时候来水", now=clock.now(), limit=3)
    assert hits and "停水" in hits[0].title
