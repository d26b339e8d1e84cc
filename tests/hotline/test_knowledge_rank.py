"""One ranking for both databases (issue 18): each database only finds the articles holding
the caller's words; which become candidates and their order is decided in Python from the
same counts (knowledge_term), so SQLite and PostgreSQL return the same articles in the same
order — BM25 with a title field, the idf of the article's own words, and a tie-break that
means something (how much of the query the title names, how often operators answered with
the article, the more recently published)."""

from __future__ import annotations

from collections import Counter

import pytest

from hotline.knowledge import candidates, service
from hotline.knowledge.models import (
    KnowledgeArticleUpdate,
    KnowledgeArticleVersion,
    KnowledgeUse,
    UseKind,
)
from hotline.knowledge.ranking import Document, Ranker, TermStats
from hotline.knowledge.search import make_index
from hotline.knowledge.search_base import term_counts
from hotline.knowledge.terms import default_synonyms, document_terms, normalise, parse_query
from tests.factories import build_world
from tests.hotline.knowledge_publishing import publisher

# Notices written from one template, and the articles that answer: many hold the same
# words in the same places, so the order among equals matters.
ARTICLES = [
    ("高层住户自来水水压不足的处理", "二次供水设施由物业负责维护，水压偏低先查加压泵房。"),
    ("二次供水泵房维修的公告", "泵房检修期间高层住户水压偏低，请谅解。"),
    ("二次供水泵房维修的公告", "泵房检修期间高层住户水压偏低，请谅解。"),
    ("供水管网改造的公告", "管网改造期间部分楼栋暂停供水，恢复供水后水压偏低属正常。"),
    ("计划停水及供水中断期间临时供水安排", "供水中断超过12小时的，设置临时供水点或安排送水车。"),
    ("燃气泄漏应急处置须知", "闻到燃气异味时关闭阀门，打开门窗通风，严禁开关电器。"),
    ("城市道路路灯不亮、损坏报修", "路灯不亮、灯杆倾斜的，市民可报修并说明路名。"),
    ("背街小巷照明改造的通知", "新装和更换背街小巷的照明设施。"),
]
QUERIES = [
    "我家水压特别低",
    "停水了有没有送水车",
    "厨房里有煤气味",
    "路灯坏了",
    "二次供水泵房坏了",
    "高层住户水压",
    "供水",
]


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def publish(session, world, clock):
    return publisher(session, world, clock)


def expected_order(session, articles, query_text):
    """The ranking as terms.Ranker gives it over every article, with the counts made from
    the articles themselves and the tie-break the index applies (no uses here)."""
    versions = {
        a.id: session.get(KnowledgeArticleVersion, version_id(session, a)) for a in articles
    }
    counts: Counter[tuple[str, str]] = Counter()
    for version in versions.values():
        counts.update(term_counts(document_terms(version)))
    stats = TermStats(
        counts[("#", "articles")],
        counts[("#", "words")],
        {key: n for key, n in counts.items() if key[0] != "#"},
    )
    ranker = Ranker(parse_query(query_text, default_synonyms()), stats)
    ranked = []
    for article in articles:
        terms = document_terms(versions[article.id])
        doc = Document(
            frozenset(terms.words),
            frozenset(terms.pinyin),
            frozenset(terms.grams),
            title=normalise(versions[article.id].title),
        )
        result = ranker.rank(doc)
        if result.matches:
            key = (-result.points, -result.title_share, -article.published_at.timestamp())
            ranked.append((*key, -article.id, article.id))
    return [article_id for *_, article_id in sorted(ranked)]


def version_id(session, article):
    from sqlmodel import select

    return session.exec(
        select(KnowledgeArticleVersion.id).where(
            KnowledgeArticleVersion.article_id == article.id,
            KnowledgeArticleVersion.version == article.published_version,
        )
    ).one()


def test_either_database_returns_the_shared_rankings_order(session, clock, publish):
    articles = []
    for title, body in ARTICLES:
        articles.append(publish(title, body))
        clock.advance(minutes=1)
    index = make_index(session)

    for query in QUERIES:
        found = [h.article_id for h in index.search(query, now=clock.now(), limit=20)]

        assert found == expected_order(session, articles, query), query


def test_among_equal_points_the_article_operators_answered_with_more_comes_first(
    session, world, clock, publish
):
    title, body = ARTICLES[1]
    used = publish(title, body)
    clock.advance(days=1)
    newer = publish(title, body)
    clock.advance(days=1)
    unused = publish(title, body)
    for _ in range(2):
        session.add(
            KnowledgeUse(
                article_id=used.id,
                version=1,
                kind=UseKind.answered,
                user_id=world.staff["supervisor"].id,
                at=clock.now(),
            )
        )
    session.flush()

    hits = make_index(session).search("泵房维修", now=clock.now())

    assert len({h.score for h in hits}) == 1
    # answered with twice first; then, as nobody answered with either, the more recent
    assert [h.article_id for h in hits] == [used.id, unused.id, newer.id]


def test_an_article_naming_the_word_in_its_title_is_a_candidate_among_many_that_only_mention_it(
    session, clock, publish, monkeypatch
):
    for i in range(6):  # short notices that mention it
        publish(f"第{i}号泵房维修", f"第{i}号泵房维修期间水压偏低。")
    wanted = publish(
        "高层住户水压不足的处理",
        "多层及高层住宅由二次供水设施加压供水，二次供水设施由产权单位或其委托的物业服务企业"
        "负责运行维护。用户反映高峰时段出水细小的，先由物业检查加压泵房；属市政管网压力"
        "不足的，由供水企业核查处理。",
    )
    monkeypatch.setattr(candidates, "CANDIDATES", 2)

    hits = make_index(session).search("水压", now=clock.now())

    assert hits[0].article_id == wanted.id


def test_an_official_term_few_articles_use_says_more_than_the_word_many_do():
    query = parse_query("医保怎么交", default_synonyms())
    notice = Document("城乡 居民 医保 集中 缴费", title="城乡居民医保集中缴费的公告")
    answer = Document("城乡 居民 医疗 保险 医疗保险 参保 缴费", title="城乡居民医疗保险参保缴费")
    stats = TermStats(
        100_000,
        1_000_000,
        {("w", "医保"): 3_000, ("w", "医疗保险"): 3, ("w", "医疗"): 40, ("w", "保险"): 60},
    )

    ranker = Ranker(query, stats)

    assert ranker.rank(answer).points > ranker.rank(notice).points
    [reason] = [m for m in ranker.rank(answer).matches if m.query_word == "医保"]
    assert (reason.kind, reason.article_words) == ("synonym", ("医疗保险",))


def test_a_word_the_article_says_is_found_however_jieba_cut_it(session, clock, publish):
    # jieba cuts 路灯不亮 into 路 / 灯不亮: the article has no word 路灯, its characters
    lamp = publish(*ARTICLES[6])
    publish(*ARTICLES[7])

    hits = make_index(session).search("路灯坏了", now=clock.now())

    assert hits[0].article_id == lamp.id
    [reason] = [m for m in hits[0].matches if m.query_word == "路灯"]
    assert (reason.kind, reason.article_words) == ("word", ("路灯",))


def test_the_counts_follow_a_new_version_published(session, world, clock, publish):
    supervisor = world.staff["supervisor"]
    article = publish(*ARTICLES[0])
    index = make_index(session)
    query = parse_query("水压 管网", default_synonyms())

    def held():
        with index._connection() as conn:
            stats = index._stats(conn, query)
        return stats.held.get(("w", "水压"), 0), stats.held.get(("w", "管网"), 0), stats.articles

    assert held() == (1, 0, 1)
    service.edit_article(
        session,
        user=supervisor,
        article_id=article.id,
        expected_version=1,
        changes=KnowledgeArticleUpdate(title="供水管网改造", body="管网改造期间暂停供水。"),
        now=clock.now(),
    )
    assert held() == (1, 0, 1)  # the published version is still the one in service

    service.submit_for_review(session, user=supervisor, article_id=article.id, now=clock.now())
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())

    assert held() == (0, 1, 1)


def test_a_word_said_as_spoken_is_also_looked_for_as_written():
    query = parse_query("我们单元的水管子坏了", default_synonyms())

    [spoken] = [c for c in query.concepts if c.word == "水管子"]
    assert ("水管",) in spoken.words
    ranker = Ranker(query, TermStats(10, 100, {("w", "水管"): 1}))
    [reason] = ranker.rank(Document("供水 水管 抢修", title="水管抢修")).matches
    assert (reason.query_word, reason.article_words, reason.kind) == ("水管子", ("水管",), "word")


def test_overlapping_words_of_the_caller_count_once():
    query = parse_query("自来水停了，什么时候来水", default_synonyms())
    doc = Document("自来水 来水 供水", title="自来水供水公告")
    ranker = Ranker(query, TermStats(100, 1000, {("w", "自来水"): 5, ("w", "来水"): 5}))

    words = [m.query_word for m in ranker.rank(doc).matches]

    assert "自来水" in words and "来水" not in words
    assert (
        query.overlapping[[c.word for c in query.concepts].index("来水")]
        == (query.overlapping[[c.word for c in query.concepts].index("自来水")])
    )
