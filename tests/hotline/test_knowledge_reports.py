"""What the knowledge pages read: the list each person may see, an article's versions and
their diff, the units' "did not answer" feedback (marked handled once), and the dashboard —
articles used in a period, going stale, and the direct answers given without an article.
Both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accounts import audit
from core.errors import Conflict, Forbidden, NotFound
from hotline.knowledge import reports, service
from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeUse,
    UseKind,
)
from tests.factories import build_world, new_ticket
from tickets import service as tickets


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


def _draft(session, world, clock, *, unit="WATER", title="供水中断时的临时供水安排", **fields):
    data = {
        "title": title,
        "body": "因管网抢修造成供水中断的，应提前24小时公告。\n并安排送水车临时供水。",
        "category_code": "020301",
        "owner_unit_id": world.units[unit].id,
    }
    return service.create_article(
        session,
        user=world.handlers[unit],
        data=KnowledgeArticleCreate(**(data | fields)),
        now=clock.now(),
    )


def _publish(session, world, clock, article):
    supervisor = world.staff["supervisor"]
    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
    return article


def _use(session, world, clock, article, kind, *, ticket=None, note=None, at=None):
    row = KnowledgeUse(
        article_id=article.id,
        version=article.published_version or article.version,
        kind=kind,
        ticket_id=ticket.id if ticket else None,
        user_id=world.staff["operator"].id,
        at=at or clock.now(),
        note=note,
    )
    session.add(row)
    session.flush()
    return row


def test_readers_see_articles_in_service_units_see_their_drafts(session, world, clock):
    published = _publish(session, world, clock, _draft(session, world, clock))
    water_draft = _draft(session, world, clock, title="水表更换流程")
    housing_draft = _draft(session, world, clock, unit="HOUSING", title="物业维修基金")

    def ids(user, **filters):
        return {r.id for r in reports.list_articles(session, user=user, **filters)}

    assert ids(world.staff["operator"]) == {published.id}
    assert ids(world.handlers["WATER"]) == {published.id, water_draft.id}
    assert ids(world.handlers["HOUSING"]) == {published.id, housing_draft.id}
    assert ids(world.staff["dispatcher"]) == {published.id, water_draft.id, housing_draft.id}
    assert ids(world.staff["dispatcher"], status=ArticleStatus.draft) == {
        water_draft.id,
        housing_draft.id,
    }
    assert ids(world.staff["dispatcher"], owner_unit_id=world.units["HOUSING"].id) == {
        housing_draft.id
    }
    assert ids(world.staff["dispatcher"], category="0203") == ids(world.staff["dispatcher"])
    assert ids(world.staff["dispatcher"], category="03") == set()


def test_a_reader_sees_the_version_in_service_not_the_edit_in_progress(session, world, clock):
    article = _publish(session, world, clock, _draft(session, world, clock))
    service.edit_article(
        session,
        user=world.handlers["WATER"],
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(title="供水中断（修订中）"),
        now=clock.now(),
    )

    [seen] = reports.list_articles(session, user=world.staff["operator"])
    [edited] = reports.list_articles(session, user=world.handlers["WATER"])

    assert (seen.title, seen.version) == ("供水中断时的临时供水安排", 1)
    assert (edited.title, edited.version, edited.status) == (
        "供水中断（修订中）",
        2,
        ArticleStatus.draft,
    )
    view = reports.article_view(session, user=world.staff["operator"], article_id=article.id)
    assert view.shown.version == 1 and [h.version for h in view.history] == [1]


def test_a_version_is_shown_with_what_changed_since_the_one_before(session, world, clock):
    article = _draft(session, world, clock)
    clock.advance(timedelta(hours=1))
    service.edit_article(
        session,
        user=world.staff["dispatcher"],
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(
            body="因管网抢修造成供水中断的，应提前48小时公告。\n并安排送水车临时供水。",
            document_number="榆政办发〔2026〕12号",
        ),
        now=clock.now(),
        note="公告时限改为48小时",
    )

    view = reports.article_view(session, user=world.handlers["WATER"], article_id=article.id)
    first = reports.article_view(
        session, user=world.handlers["WATER"], article_id=article.id, version=1
    )

    assert view.shown.version == 2
    assert [(h.version, h.saved_by, h.note) for h in view.history] == [
        (2, "dispatcher", "公告时限改为48小时"),
        (1, "WATER handler", None),
    ]
    assert view.history[0].changed == ["body", "document_number"]
    assert view.diff is not None and (view.diff.version, view.diff.previous) == (2, 1)
    assert [(f.name, f.before, f.after) for f in view.diff.fields] == [
        ("document_number", None, "榆政办发〔2026〕12号")
    ]
    assert "-因管网抢修造成供水中断的，应提前24小时公告。" in view.diff.body
    assert "+因管网抢修造成供水中断的，应提前48小时公告。" in view.diff.body
    assert " 并安排送水车临时供水。" in view.diff.body
    assert first.diff is None
    with pytest.raises(NotFound):
        reports.article_view(
            session, user=world.handlers["WATER"], article_id=article.id, version=3
        )
    with pytest.raises(NotFound):  # another unit's draft does not exist for them
        reports.article_view(session, user=world.handlers["HOUSING"], article_id=article.id)


def test_feedback_reaches_the_owning_unit_only_and_is_handled_once(session, world, clock):
    water = _publish(session, world, clock, _draft(session, world, clock))
    housing = _publish(session, world, clock, _draft(session, world, clock, unit="HOUSING"))
    ticket = new_ticket(session, clock.now(), "小区停水三天了，送水车什么时候来")
    mine = _use(session, world, clock, water, UseKind.not_answered, ticket=ticket, note="送水车")
    _use(session, world, clock, housing, UseKind.not_answered)
    _use(session, world, clock, water, UseKind.answered, ticket=ticket)

    rows = reports.feedback(session, user=world.handlers["WATER"])
    assert [(r.id, r.ticket_number, r.operator, r.note) for r in rows] == [
        (mine.id, ticket.number, "operator", "送水车")
    ]
    assert len(reports.feedback(session, user=world.staff["supervisor"])) == 2
    assert reports.open_feedback_count(session, user=world.handlers["WATER"]) == 1
    with pytest.raises(NotFound):
        reports.mark_feedback_handled(
            session, user=world.handlers["HOUSING"], use_id=mine.id, now=clock.now()
        )
    with pytest.raises(Forbidden):
        reports.feedback(session, user=world.staff["operator"])

    handled = reports.mark_feedback_handled(
        session, user=world.handlers["WATER"], use_id=mine.id, now=clock.now()
    )

    assert (handled.handled_at, handled.handled_by) == (clock.now(), world.handlers["WATER"].id)
    assert reports.feedback(session, user=world.handlers["WATER"]) == []
    [done] = reports.feedback(session, user=world.handlers["WATER"], handled=True)
    assert done.handled_by == "WATER handler"
    with pytest.raises(Conflict):
        reports.mark_feedback_handled(
            session, user=world.staff["supervisor"], use_id=mine.id, now=clock.now()
        )
    [entry] = audit.entries(session, action="knowledge.feedback_handled")
    assert entry.user_id == world.handlers["WATER"].id


def test_dashboard_counts_use_staleness_and_answers_without_an_article(session, world, clock):
    now = clock.now()
    often = _publish(session, world, clock, _draft(session, world, clock, title="停水送水"))
    seldom = _publish(
        session,
        world,
        clock,
        _draft(
            session,
            world,
            clock,
            title="水费缴纳",
            review_due=now + timedelta(days=10),
        ),
    )
    housing = _publish(
        session,
        world,
        clock,
        _draft(
            session,
            world,
            clock,
            unit="HOUSING",
            title="维修基金",
            review_due=now - timedelta(days=1),
            valid_until=now + timedelta(days=3),
        ),
    )
    _publish(  # due in 20 days: not stale yet
        session,
        world,
        clock,
        _draft(session, world, clock, title="水质", review_due=now + timedelta(days=20)),
    )
    cited = new_ticket(session, now, "停水", category_code="0203", category_name="供水")
    tickets.close_at_intake(session, ticket=cited, answer="送水车", actor="operator:1", now=now)
    for _ in range(3):
        _use(session, world, clock, often, UseKind.answered, ticket=cited)
    _use(session, world, clock, seldom, UseKind.answered)
    _use(session, world, clock, housing, UseKind.answered)
    _use(session, world, clock, often, UseKind.answered, at=now - timedelta(days=40))  # before
    _use(session, world, clock, housing, UseKind.not_answered)
    uncited = []
    for text, code, name in (
        ("噪音扰民", "0501", "噪声污染"),
        ("广场舞噪音", "0501", "噪声污染"),
        ("公交线路咨询", "0601", "公共交通"),
    ):
        ticket = new_ticket(session, now, text, category_code=code, category_name=name)
        tickets.close_at_intake(
            session, ticket=ticket, answer="已解答", actor="operator:1", now=now
        )
        uncited.append(ticket)
    new_ticket(session, now, "没有直接办结的工单", category_code="0501")

    board = reports.dashboard(
        session,
        user=world.staff["supervisor"],
        since=now - timedelta(days=30),
        until=now + timedelta(seconds=1),
        now=now,
        top=2,
    )

    assert [(u.title, u.answers) for u in board.used] == [("停水送水", 3), ("水费缴纳", 1)]
    assert board.answered == 5  # beyond the top 2
    assert {(s.title, s.review_overdue, s.expired) for s in board.stale} == {
        ("水费缴纳", False, False),
        ("维修基金", True, False),
    }
    assert board.feedback_open == 1
    assert board.missing is not None
    assert [(m.category_code, m.tickets) for m in board.missing] == [("0501", 2), ("0601", 1)]
    assert {number for m in board.missing for _, number in m.examples} == {
        t.number for t in uncited
    }

    unit = reports.dashboard(
        session,
        user=world.handlers["WATER"],
        since=now - timedelta(days=30),
        until=now + timedelta(seconds=1),
        now=now,
    )
    assert [u.title for u in unit.used] == ["停水送水", "水费缴纳"]
    assert unit.answered == 4
    assert [s.title for s in unit.stale] == ["水费缴纳"]
    assert unit.feedback_open == 0 and unit.missing is None
