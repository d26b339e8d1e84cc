"""Relevance on a base where many articles say the caller's words (issue 18): every concept
the caller said may pick the candidates — settings like 物业 too — by how many articles of
this base hold it; a common concept ranks the candidates the rarer ones pick; what callers
say around the matter (是不是, 我想问一下) is no concept at all."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from hotline.knowledge import candidates
from hotline.knowledge.search import make_index
from hotline.knowledge.terms import default_synonyms, parse_query
from tests.factories import build_world
from tests.hotline.knowledge_publishing import publisher


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def publish(session, world, clock):
    return publisher(session, world, clock)


def analyzed(session):
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE knowledge_search"))


def test_a_setting_word_the_base_rarely_holds_picks_the_candidates(
    session, clock, publish, monkeypatch
):
    for i in range(6):
        publish(f"第{i}号公交投诉处理", f"乘客投诉第{i}路公交，投诉电话见站牌。")
    wanted = publish(
        "物业服务企业未履行合同义务的投诉渠道",
        "物业服务企业不履行合同义务的，业主可向街道办事处或住房和城乡建设部门投诉。",
    )
    analyzed(session)
    index = make_index(session)
    monkeypatch.setattr(candidates, "CANDIDATES", 2)

    hits = index.search("物业公司收了钱不干活，能去哪里投诉", now=clock.now())

    assert hits[0].article_id == wanted.id
    assert {"物业", "投诉"} <= set(hits[0].matched_words)


def test_a_common_word_ranks_the_candidates_the_rare_ones_pick(
    session, clock, publish, monkeypatch
):
    for i in range(6):  # 检修 is common: every notice of the base says it
        publish(f"第{i}号设备检修通知", f"第{i}号泵站检修，检修期间请留意。")
    for i in range(3):  # 停电, rare, without 检修
        publish(f"第{i}批停电名单", f"第{i}批停电用户名单公示。")
    wanted = publish(
        "供电中断报修及计划检修停电公告",
        "供电企业因供电设施计划检修需要停止供电时，应当提前七日通知用户或者进行公告；"
        "非计划停电或家中突然断电的，可拨打95598供电服务热线报修。",
    )
    analyzed(session)
    index = make_index(session)
    index.budget = 5  # 停电 (4 articles) picks; 检修 (7) is common
    monkeypatch.setattr(candidates, "CANDIDATES", 2)

    hits = index.search("检修要停电几天", now=clock.now())

    assert hits[0].article_id == wanted.id
    assert {"检修", "停电"} <= {m.query_word for m in hits[0].matches}


def test_what_callers_say_around_the_matter_is_no_concept():
    query = parse_query("我想问一下，是不是停水了，有没有通知", default_synonyms())

    assert [c.word for c in query.concepts] == ["停水", "通知"]


def test_guessed_names_pick_candidates_only_in_a_short_query():
    long = parse_query("楼下新开的烧烤店油烟直接往我家窗户里灌", default_synonyms())
    short = parse_query("章建国什么时候接待", default_synonyms())

    def picking(query):
        return {query.concepts[i].word for i in query.picking}

    assert {"窗户里", "往我家"} <= {c.word for c in long.concepts if c.joined}
    assert not picking(long) & {"窗户里", "往我家"}
    assert "章建国" in picking(short)
