"""The knowledge base's review flow (共建共享): units write for their own domain, the centre
approves; every saved content is an immutable version recording who changed what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts import audit
from accounts.models import AuditEntry
from core.errors import Conflict, Forbidden, IllegalTransition, InvalidInput, NotFound
from hotline.knowledge import service
from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeArticleVersion,
)
from tests.factories import build_world


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


def draft(session, world, clock, *, by, unit="WATER", **fields):
    data = {
        "title": "供水中断时的临时供水安排",
        "body": "因管网抢修造成供水中断的，应提前24小时公告，并安排送水车临时供水。",
        "category_code": "020301",
        "owner_unit_id": world.units[unit].id,
        "policy_source": "城市供水条例",
        "document_number": "榆政办发〔2026〕12号",
    }
    return service.create_article(
        session, user=by, data=KnowledgeArticleCreate(**(data | fields)), now=clock.now()
    )


def test_given_unit_handler_when_writing_for_own_unit_then_draft_records_who_and_what(
    session, world, clock
):
    handler = world.handlers["WATER"]

    article = draft(session, world, clock, by=handler)

    assert article.status == ArticleStatus.draft
    assert (article.version, article.published_version) == (1, None)
    assert article.number == f"KB{article.id:06d}"
    assert article.created_by == article.updated_by == handler.id
    [v1] = service.article_history(session, user=handler, article_id=article.id)
    assert (v1.version, v1.saved_by, v1.saved_at) == (1, handler.id, clock.now())
    assert set(v1.changed) >= {"title", "body", "category_code", "owner_unit_id"}
    [entry] = audit.entries(session, action="knowledge.create")
    assert (entry.user_id, entry.target) == (handler.id, article.number)


def test_a_handler_cannot_write_an_article_for_another_unit(session, world, clock):
    with pytest.raises(Forbidden):
        draft(session, world, clock, by=world.handlers["WATER"], unit="HOUSING")


def test_an_operator_reads_but_does_not_write(session, world, clock):
    with pytest.raises(Forbidden):
        draft(session, world, clock, by=world.staff["operator"])


def test_a_handler_cannot_edit_another_units_article(session, world, clock):
    supervisor = world.staff["supervisor"]
    article = draft(session, world, clock, by=world.handlers["HOUSING"], unit="HOUSING")
    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())

    with pytest.raises(Forbidden):
        service.edit_article(
            session,
            user=world.handlers["WATER"],
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(body="改写"),
            now=clock.now(),
        )
    assert article.version == 1


def test_another_units_draft_is_reported_missing_to_a_handler(session, world, clock):
    article = draft(session, world, clock, by=world.handlers["HOUSING"], unit="HOUSING")

    with pytest.raises(NotFound):
        service.get_article(session, user=world.handlers["WATER"], article_id=article.id)
    assert service.get_article(session, user=world.staff["dispatcher"], article_id=article.id)


def test_a_unit_cannot_give_its_article_to_another_unit(session, world, clock):
    handler = world.handlers["WATER"]
    article = draft(session, world, clock, by=handler)

    with pytest.raises(Forbidden):
        service.edit_article(
            session,
            user=handler,
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(owner_unit_id=world.units["HOUSING"].id),
            now=clock.now(),
        )


@pytest.mark.parametrize("role", ["handler", "dispatcher", "operator"])
def test_only_centre_reviewers_publish(session, world, clock, role):
    author = world.handlers["WATER"]
    article = draft(session, world, clock, by=author)
    service.submit_for_review(session, user=author, article_id=article.id, now=clock.now())
    user = author if role == "handler" else world.staff[role]

    with pytest.raises((Forbidden, NotFound)):
        service.approve_article(session, user=user, article_id=article.id, now=clock.now())
    assert article.status == ArticleStatus.in_review
    assert article.published_version is None


def test_given_sent_back_with_a_reason_when_fixed_and_approved_then_history_tells_who_changed_what(
    session, world, clock
):
    handler, supervisor = world.handlers["WATER"], world.staff["supervisor"]
    article = draft(session, world, clock, by=handler)
    service.submit_for_review(session, user=handler, article_id=article.id, now=clock.now())

    clock.advance(timedelta(hours=1))
    service.send_back(
        session,
        user=supervisor,
        article_id=article.id,
        reason="请补充恢复供水的查询电话",
        now=clock.now(),
    )
    assert (article.status, article.review_note) == (
        ArticleStatus.draft,
        "请补充恢复供水的查询电话",
    )

    clock.advance(timedelta(hours=1))
    service.edit_article(
        session,
        user=handler,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(body=article.body + "恢复时间可拨打96111查询。"),
        now=clock.now(),
        note="补充查询电话",
    )
    service.submit_for_review(session, user=handler, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())

    assert article.status == ArticleStatus.published
    assert (article.version, article.published_version) == (2, 2)
    assert (article.published_by, article.updated_by) == (supervisor.id, supervisor.id)
    v1, v2 = service.article_history(session, user=world.staff["operator"], article_id=article.id)
    assert (v2.saved_by, v2.changed, v2.note) == (handler.id, ["body"], "补充查询电话")
    assert "96111" in v2.body and "96111" not in v1.body
    actions = session.scalars(
        select(AuditEntry.action)
        .where(col(AuditEntry.target) == article.number)
        .order_by(col(AuditEntry.id))
    ).all()
    assert actions == [
        "knowledge.create",
        "knowledge.submit",
        "knowledge.send_back",
        "knowledge.edit",
        "knowledge.submit",
        "knowledge.approve",
    ]


def test_invalid_moves_are_refused_with_clear_errors(session, world, clock):
    supervisor = world.staff["supervisor"]
    article = draft(session, world, clock, by=supervisor)

    with pytest.raises(IllegalTransition, match="cannot approve an article that is draft"):
        service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    with pytest.raises(IllegalTransition, match="cannot submit an article that is in_review"):
        service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    with pytest.raises(IllegalTransition, match="cannot edit"):
        service.edit_article(
            session,
            user=supervisor,
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(title="新标题"),
            now=clock.now(),
        )
    with pytest.raises(InvalidInput, match="reason"):
        service.send_back(
            session, user=supervisor, article_id=article.id, reason=" ", now=clock.now()
        )
    service.retire_article(
        session, user=supervisor, article_id=article.id, reason="政策废止", now=clock.now()
    )
    with pytest.raises(IllegalTransition, match="retired"):
        service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())


def test_an_edit_from_a_stale_version_is_refused(session, world, clock):
    handler = world.handlers["WATER"]
    article = draft(session, world, clock, by=handler)
    service.edit_article(
        session,
        user=handler,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(title="停水期间临时供水安排"),
        now=clock.now(),
    )

    with pytest.raises(Conflict, match="version 2, not 1"):
        service.edit_article(
            session,
            user=world.staff["dispatcher"],
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(title="另一个标题"),
            now=clock.now(),
        )


def test_content_is_checked(session, world, clock):
    handler = world.handlers["WATER"]
    with pytest.raises(ValueError, match="category_code"):
        KnowledgeArticleCreate(
            title="t", body="b", category_code="2-3", owner_unit_id=world.units["WATER"].id
        )
    article = draft(session, world, clock, by=handler)
    with pytest.raises(InvalidInput, match="valid_until must come after valid_from"):
        service.edit_article(
            session,
            user=handler,
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(
                valid_from=clock.now(), valid_until=clock.now() - timedelta(days=1)
            ),
            now=clock.now(),
        )
    with pytest.raises(InvalidInput, match="nothing changed"):
        service.edit_article(
            session,
            user=handler,
            article_id=article.id,
            expected_version=1,
            changes=KnowledgeArticleUpdate(title=article.title),
            now=clock.now(),
        )


def test_a_saved_version_is_never_changed(session, world, clock):
    article = draft(session, world, clock, by=world.handlers["WATER"])
    saved = session.scalars(
        select(KnowledgeArticleVersion).where(col(KnowledgeArticleVersion.article_id) == article.id)
    ).one()

    saved.body = "篡改"
    with pytest.raises(RuntimeError, match="never changed"):
        session.flush()
