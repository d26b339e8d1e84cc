"""Knowledge search from how citizens speak, on SQLite (FTS5) and PostgreSQL (tsvector):
colloquial wording, synonyms, slips, names by their sound; only articles in service at the
moment asked, each hit with the words that matched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, inspect

from core.db import make_engine, make_session_factory
from hotline import migrate
from hotline.knowledge import service
from hotline.knowledge.models import (
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeSearchDoc,
)
from hotline.knowledge.search import PostgresKnowledgeIndex, SqliteKnowledgeIndex, make_index
from hotline.knowledge.terms import parse_synonyms
from tests.factories import build_world

ARTICLES = {
    "water": (
        "供水中断时的临时供水安排",
        "因管网抢修造成供水中断的，应提前24小时公告，安排送水车临时供水。",
    ),
    "noise": ("建筑施工噪声污染投诉处理", "夜间22时至次日6时禁止产生环境噪声污染的建筑施工作业。"),
    "envoy": ("督办专员张建国接待安排", "每周三上午，督办专员张建国在市民服务中心接待群众来访。"),
    "fund": ("住房公积金提取条件", "职工购买自住住房、退休的，可以提取住房公积金账户余额。"),
    "fees": (
        "物业服务收费标准",
        "住宅小区物业服务收费实行政府指导价，[收费标准](https://example.org/fees.pdf)见附件。",
    ),
}


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def publish(session, world, clock):
    supervisor = world.staff["supervisor"]

    def publish(key=None, *, title=None, body=None, **fields):
        if key is not None:
            title, body = ARTICLES[key]
        data = KnowledgeArticleCreate(
            title=title,
            body=body,
            category_code="020301",
            owner_unit_id=world.units["WATER"].id,
            **fields,
        )
        article = service.create_article(session, user=supervisor, data=data, now=clock.now())
        service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
        service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())
        return article

    return publish


@pytest.fixture
def library(publish):
    return {key: publish(key) for key in ARTICLES}


def found(session, query, now, **kwargs):
    return make_index(session).search(query, now=now, **kwargs)


def test_make_index_picks_the_implementation_by_dialect(session, backend):
    index = make_index(session)
    expected = SqliteKnowledgeIndex if backend == "sqlite" else PostgresKnowledgeIndex
    assert type(index) is expected


def test_colloquial_wording_finds_the_official_article_with_the_reason(session, clock, library):
    hits = found(session, "我家小区怎么又停水了", clock.now())

    top = hits[0]
    assert (top.article_id, top.version, top.number) == (
        library["water"].id,
        1,
        library["water"].number,
    )
    [reason] = [m for m in top.matches if m.query_word == "停水"]
    assert (reason.kind, reason.article_words) == ("synonym", ("供水", "中断"))
    assert set(top.matched_words) == {"供水", "中断"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_synonym_from_the_table_finds_the_article(session, clock, library):
    [hit] = found(session, "晚上工地噪音太大睡不着", clock.now())

    assert hit.article_id == library["noise"].id
    assert [(m.query_word, m.article_words, m.kind) for m in hit.matches] == [
        ("噪音", ("噪声",), "synonym")
    ]


def test_the_synonym_table_is_extendable(session, clock, library):
    synonyms = parse_synonyms("synonyms:\n  吵得慌: [噪声污染]\n")
    index = make_index(session, synonyms)

    [hit] = index.search("楼下吵得慌", now=clock.now())

    assert hit.article_id == library["noise"].id
    assert hit.matched_words == ("噪声污染",)


def test_a_slip_of_the_same_sound_finds_the_article(session, clock, library):
    hits = found(session, "物业收废标准", clock.now())

    assert hits[0].article_id == library["fees"].id
    [slip] = [m for m in hits[0].matches if m.query_word == "收废"]
    assert (slip.kind, slip.article_words) == ("pinyin", ("收费",))


def test_a_wrong_character_still_finds_the_article(session, clock, library):
    hits = found(session, "公积全提取", clock.now())

    assert [h.article_id for h in hits] == [library["fund"].id]
    assert {"公积", "提取"} <= set(hits[0].matched_words)


def test_a_name_written_with_other_characters_of_the_same_sound_finds_the_person(
    session, clock, library
):
    hits = found(session, "章建国什么时候接待", clock.now())

    assert hits[0].article_id == library["envoy"].id
    [name] = [m for m in hits[0].matches if m.kind == "pinyin"]
    assert (name.query_word, name.article_words) == ("章建国", ("张建国",))


def test_a_known_word_is_not_matched_by_its_sound_alone(session, clock, library):
    # 施工 (construction) sounds like 时供 inside 临时供水: a dictionary word is taken as said.
    hits = found(session, "施工", clock.now())

    assert [h.article_id for h in hits] == [library["noise"].id]


def test_link_addresses_are_not_searched(session, clock, library):
    assert found(session, "example", clock.now()) == []


def test_an_article_valid_until_yesterday_never_shows(session, clock, publish):
    now = clock.now()
    publish("water", valid_until=now - timedelta(days=1))
    current = publish(
        title="临时供水点设置",
        body="供水中断超过12小时的，设置临时供水点。",
        valid_until=now + timedelta(days=1),
    )

    assert [h.article_id for h in found(session, "停水", now)] == [current.id]
    assert found(session, "停水", now + timedelta(days=2)) == []


def test_an_article_not_yet_valid_shows_from_its_first_day(session, clock, publish):
    now = clock.now()
    article = publish("fund", valid_from=now + timedelta(days=3))

    assert found(session, "公积金提取", now) == []
    assert [h.article_id for h in found(session, "公积金提取", now + timedelta(days=3))] == [
        article.id
    ]


def test_drafts_articles_in_review_and_retired_ones_never_show(session, world, clock, publish):
    supervisor, now = world.staff["supervisor"], clock.now()
    title, body = ARTICLES["fund"]
    data = KnowledgeArticleCreate(
        title=title, body=body, category_code="020301", owner_unit_id=world.units["WATER"].id
    )
    draft = service.create_article(session, user=supervisor, data=data, now=now)
    in_review = service.create_article(session, user=supervisor, data=data, now=now)
    service.submit_for_review(session, user=supervisor, article_id=in_review.id, now=now)
    retired = publish("fund")
    assert [h.article_id for h in found(session, "公积金", now)] == [retired.id]

    service.retire_article(session, user=supervisor, article_id=retired.id, reason="废止", now=now)

    assert found(session, "公积金", now) == []
    assert draft.id and in_review.id


def test_an_edit_in_progress_leaves_the_published_version_in_service(
    session, world, clock, publish
):
    supervisor, now = world.staff["supervisor"], clock.now()
    article = publish("water")
    service.edit_article(
        session,
        user=supervisor,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(title="停电时的应急照明", body="供电中断时启用应急照明。"),
        now=now,
    )

    assert [(h.article_id, h.version) for h in found(session, "停水", now)] == [(article.id, 1)]
    assert found(session, "应急照明", now) == []

    service.submit_for_review(session, user=supervisor, article_id=article.id, now=now)
    service.approve_article(session, user=supervisor, article_id=article.id, now=now)

    assert found(session, "停水", now) == []
    assert [(h.article_id, h.version) for h in found(session, "应急照明", now)] == [(article.id, 2)]


def test_a_region_sees_its_own_articles_and_the_citys(session, clock, publish):
    now = clock.now()
    city = publish("water")
    yuyang = publish(
        title="榆阳区临时供水点", body="榆阳区供水中断时在街道办设临时供水点。", region="榆阳区"
    )

    def ids(region):
        return {h.article_id for h in found(session, "停水", now, region=region)}

    assert ids("榆阳区") == {city.id, yuyang.id}
    assert ids("横山区") == {city.id}
    assert ids(None) == {city.id, yuyang.id}


def test_the_best_match_comes_first_and_limit_cuts(session, clock, library):
    hits = found(session, "建筑施工噪音污染投诉", clock.now())

    assert hits[0].article_id == library["noise"].id
    assert {"建筑施工", "污染", "投诉", "噪声"} <= set(hits[0].matched_words)
    assert len(found(session, "供水 物业 公积金", clock.now(), limit=2)) == 2


def test_nothing_to_search_finds_nothing(session, clock, library):
    assert found(session, "我想问一下", clock.now()) == []
    assert found(session, "  ，。", clock.now()) == []


def test_the_index_rebuilds_from_the_published_versions(session, clock, library):
    session.execute(delete(KnowledgeSearchDoc))
    assert found(session, "公积金", clock.now()) == []

    assert make_index(session).rebuild() == len(ARTICLES)

    assert [h.article_id for h in found(session, "公积金", clock.now())] == [library["fund"].id]


def test_given_a_migrated_database_then_search_works_and_downgrade_removes_it(fresh_db_url, clock):
    migrate.upgrade(fresh_db_url)
    engine = make_engine(fresh_db_url)
    try:
        with make_session_factory(engine)() as session:
            world = build_world(session, clock.now())
            supervisor = world.staff["supervisor"]
            title, body = ARTICLES["water"]
            data = KnowledgeArticleCreate(
                title=title, body=body, category_code="02", owner_unit_id=world.units["WATER"].id
            )
            article = service.create_article(session, user=supervisor, data=data, now=clock.now())
            service.submit_for_review(
                session, user=supervisor, article_id=article.id, now=clock.now()
            )
            service.approve_article(
                session, user=supervisor, article_id=article.id, now=clock.now()
            )
            session.commit()
        hits = make_index(engine).search("停水", now=clock.now())
        assert [h.article_id for h in hits] == [article.id]

        migrate.downgrade(fresh_db_url, "0015")

        names = set(inspect(engine).get_table_names())
        assert not {n for n in names if n.startswith("knowledge")}
    finally:
        engine.dispose()
