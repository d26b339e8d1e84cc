"""Matching that survives citizens' wording: denied subjects, synonyms, emergencies, and the
confidence and alternatives the dispatcher sees."""

from __future__ import annotations

import json

from sqlmodel import Session

from dispatch import rulebook
from dispatch.policies import ensure_default_policies
from dispatch.rule_matching import ALTERNATIVES_CAP, CompiledRules, TicketFacts
from dispatch.segment import Synonyms, default_synonyms, parse_synonyms, tokens
from tests.dispatch.rule_support import spec


def _water_and_smell() -> CompiledRules:
    return CompiledRules.build(
        [
            spec("停水", priority=10, lead="WATER", text_any=["停水"]),
            spec("异味", priority=20, lead="ECOLOGY", text_any=["怪味"]),
        ]
    )


def test_given_caller_denies_a_subject_when_matched_then_the_denied_keyword_does_not_route():
    found = _water_and_smell().match(TicketFacts(text="不是停水，是水有一股怪味"))
    assert found is not None and found.rule.name == "异味"


def test_given_a_question_with_shi_bu_shi_when_matched_then_the_keyword_still_counts():
    found = _water_and_smell().match(TicketFacts(text="是不是停水了，是水压的问题吗"))
    assert found is not None and found.rule.name == "停水"


def test_given_not_without_a_contrast_when_matched_then_the_keyword_still_counts():
    found = _water_and_smell().match(TicketFacts(text="不是第一次停水了"))
    assert found is not None and found.rule.name == "停水"


def test_given_homophone_slip_when_matched_with_synonyms_then_canonical_rule_fires():
    rules = [spec("停电", lead="POWER", text_any=["停电"])]
    wording = Synonyms({"停点": "停电"})
    assert CompiledRules.build(rules).match(TicketFacts(text="整栋楼停点了")) is None
    found = CompiledRules.build(rules, wording).match(TicketFacts(text="整栋楼停点了"))
    assert found is not None and found.matched_terms == ("停电",)


def test_given_default_wording_then_listed_typos_and_dialect_read_as_canonical_words():
    wording = default_synonyms()
    assert wording.apply("井该丢了，红路灯坏了") == "井盖丢了，红绿灯坏了"
    assert wording.apply("屋里前晌就没啦水") == "屋里上午就没有水"


def test_given_emergency_phrase_when_decided_then_nothing_routes_and_the_phrase_is_shown():
    wording = parse_synonyms("emergency: [拿着刀]\n")
    rules = CompiledRules.build([spec("小区", lead="HOUSING", text_any=["小区"])], wording)
    match, explanation = rules.decide(TicketFacts(text="有人在我们小区门口打人，拿着刀"))
    assert match is None
    assert explanation["emergency"] == "拿着刀" and explanation["fired"] is None
    assert rules.match(TicketFacts(text="有人在我们小区门口打人，拿着刀")) is None


def test_given_only_one_unit_in_play_when_decided_then_confidence_is_full_and_no_alternatives():
    _, explanation = _water_and_smell().decide(TicketFacts(text="小区停水了"))
    assert explanation["confidence"] == 1.0
    assert explanation["alternatives"] == []


def test_given_rival_units_when_decided_then_alternatives_listed_and_confidence_lowered():
    rules = CompiledRules.build(
        [
            spec("a", priority=10, lead="A", text_any=["停水"]),
            spec("a2", priority=11, lead="A", text_any=["停水"]),
            *[spec(f"r{i}", priority=20 + i, lead=f"U{i}", text_any=["停水"]) for i in range(5)],
        ]
    )
    _, explanation = rules.decide(TicketFacts(text="停水"))
    json.dumps(explanation)
    assert [a["lead_unit"] for a in explanation["alternatives"]] == ["U0", "U1", "U2"]
    assert len(explanation["alternatives"]) == ALTERNATIVES_CAP
    assert explanation["alternatives"][0] == {
        "rule": "r0",
        "priority": 20,
        "lead_unit": "U0",
        "matched_terms": ["停水"],
    }
    assert 0.5 <= explanation["confidence"] < 1.0


def test_given_nothing_fires_when_decided_then_confidence_is_none():
    _, explanation = _water_and_smell().decide(TicketFacts(text="表扬一下"))
    assert explanation["confidence"] is None and explanation["alternatives"] == []


def test_given_chinese_text_when_tokenised_then_words_not_characters_and_no_punctuation():
    words = tokens("我们小区停水了，物业不管！")
    assert "停水" in words and "物业" in words
    assert "，" not in words and "！" not in words


def test_given_caller_stresses_one_demand_when_matched_then_the_stressed_subject_routes():
    rules = CompiledRules.build(
        [
            spec("路灯", priority=10, lead="URBAN_MGMT", text_any=["路灯"]),
            spec("停电", priority=30, lead="POWER", text_any=["停电"]),
        ]
    )
    text = "小区门口的路灯坏了，这都不算啥，主要是小区停电两天了"
    found, explanation = rules.decide(TicketFacts(text=text))
    assert found is not None and found.rule.name == "停电"
    assert [a["rule"] for a in explanation["alternatives"]] == ["路灯"]
    assert explanation["confidence"] == 0.5
    plain = rules.match(TicketFacts(text="小区门口的路灯坏了，小区停电两天了"))
    assert plain is not None and plain.rule.name == "路灯"


def test_given_default_pack_in_the_rule_book_when_dry_run_then_wording_table_applies(
    session: Session, clock
):
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    ensure_default_policies(session)
    text = rulebook.DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    rulebook.import_pack(session, text=text, fmt="yaml", now=clock.now(), replace=True)

    slip = rulebook.dry_run(session, facts=TicketFacts(text="停点了，我们整栋楼都停点了"))
    assert slip["actions"] is not None and slip["actions"]["lead_unit"] == "POWER"
    assert slip["confidence"] is not None

    emergency = rulebook.dry_run(session, facts=TicketFacts(text="小区门口有人拿着刀打人"))
    assert emergency["fired"] is None and emergency["emergency"] == "拿着刀"
