"""How knowledge search stays fast on a large base without losing the article that answers:
the rarest of the caller's words fetch the candidates, common ones only count among those,
how many articles hold each word is counted exactly as articles are published and retired,
and a word every article says counts less (issue 18). Budgets are made small here so that a
handful of articles plays a large base."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from hotline.knowledge import candidates, service
from hotline.knowledge import search_base as search_module
from hotline.knowledge.ranking import Document, Ranker, TermStats
from hotline.knowledge.search import make_index
from hotline.knowledge.terms import default_synonyms, parse_query
from tests.factories import build_world
from tests.hotline.knowledge_publishing import publisher

COMMON = "街道办理"  # every notice says where and how


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def publish(session, world, clock):
    return publisher(session, world, clock)


@pytest.fixture
def base(publish):
    notices = [
        publish(
            f"第{i}号{COMMON}通知", f"请到街道便民服务窗口办理第{i}项业务，办理时限五个工作日。"
        )
        for i in range(8)
    ]
    dibao = publish("城乡居民最低生活保障申请", "申请低保，到户籍所在地街道办理，提交收入证明。")
    return notices, dibao


def analyzed(session):
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE knowledge_search"))


def test_the_rare_word_picks_the_candidates_when_common_ones_would_fill_them(
    session, clock, base, monkeypatch
):
    notices, dibao = base
    analyzed(session)
    index = make_index(session)
    index.budget = 4  # 街道 and 办理 (9 articles) are common
    monkeypatch.setattr(candidates, "CANDIDATES", 3)

    hits = index.search("街道办理低保要什么", now=clock.now())

    assert hits[0].article_id == dibao.id
    assert "低保" in {m.query_word for m in hits[0].matches}


def test_when_every_word_is_common_the_newest_articles_holding_them_are_ranked(
    session, clock, base, monkeypatch
):
    notices, dibao = base
    analyzed(session)
    index = make_index(session)
    index.budget = 2
    monkeypatch.setattr(candidates, "CANDIDATES", 3)

    hits = index.search("街道", now=clock.now())

    assert {h.article_id for h in hits} == {dibao.id, notices[-1].id, notices[-2].id}


def test_how_many_articles_hold_each_word_is_counted_exactly_on_publish_and_retire(
    session, world, clock, base
):
    notices, dibao = base
    index = make_index(session)
    query = parse_query("街道 低保", default_synonyms())

    def held(word):
        with index._connection() as conn:
            stats = index._stats(conn, query)
        return stats.held.get(("w", word), 0), stats.articles

    assert held("街道") == (len(notices) + 1, len(notices) + 1)
    assert held("低保") == (1, len(notices) + 1)

    service.retire_article(
        session, user=world.staff["supervisor"], article_id=dibao.id, reason="废止", now=clock.now()
    )

    assert held("街道") == (len(notices), len(notices))
    assert held("低保") == (0, len(notices))


def test_a_word_every_article_of_the_base_says_counts_less():
    query = parse_query("街道低保", default_synonyms())
    notice = Document("街道 办理", title="街道办理通知")
    dibao = Document("低保 申请", title="低保申请")
    rare = TermStats(10_000, 20_000, {("w", "街道"): 3, ("w", "低保"): 3})
    common = TermStats(10_000, 20_000, {("w", "街道"): 9_000, ("w", "低保"): 3})

    def ratio(stats):
        ranker = Ranker(query, stats)
        return ranker.rank(notice).points / ranker.rank(dibao).points

    assert ratio(common) < ratio(rare)
    assert common.idf("w", "街道") < common.idf("w", "低保") == rare.idf("w", "低保")


def test_a_document_splits_its_terms_only_when_asked():
    doc = Document("供水 中断", "gongshui", "供水 水中")

    assert doc.words == frozenset({"供水", "中断"})
    assert doc.grams == frozenset({"供水", "水中"})
    assert doc.pinyin == frozenset({"gongshui"})


def test_a_rebuild_in_pages_indexes_every_article_in_service_once(
    session, clock, base, monkeypatch
):
    notices, dibao = base
    monkeypatch.setattr(search_module, "REBUILD_PAGE", 2)
    index = make_index(session)

    assert index.rebuild() == len(notices) + 1

    hits = index.search("街道", now=clock.now(), limit=50)
    assert sorted(h.article_id for h in hits) == sorted(a.id for a in [*notices, dibao])
    assert [h.article_id for h in index.search("低保", now=clock.now())] == [dibao.id]
