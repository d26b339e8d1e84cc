"""Routing that a centre can trust: specific subjects over setting words, segmentation-aware
keywords, the rating of a match, and the confidence gate that combines the rules with the
learned suggestion (dispatch/advice.py) in the dispatcher's view and in dispatch itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session

from core.db import saved_id
from dispatch import advice, classifier, routing, rulebook
from dispatch.classifier import Suggestion
from dispatch.policies import ensure_default_policies
from dispatch.rule_matching import (
    WEAK_ALONE_CONFIDENCE,
    WEAK_CONFIDENCE,
    CompiledRules,
    Explanation,
    Match,
    TicketFacts,
)
from dispatch.segment import Synonyms, default_synonyms, parse_synonyms
from tests.conftest import START
from tests.dispatch.escalation_scene import make_ticket
from tests.dispatch.rule_support import spec
from tests.dispatch.test_routing_classifier import synthetic_history

SETTINGS = Synonyms({}, settings=["小区", "物业"])


def _property_and_elevator(wording: Synonyms | None = SETTINGS) -> CompiledRules:
    return CompiledRules.build(
        [
            spec("物业", priority=10, lead="HOUSING", text_any=["小区", "物业"]),
            spec("电梯", priority=50, lead="MARKET", text_any=["电梯"]),
        ],
        wording,
    )


def _decide(rules: CompiledRules, text: str) -> tuple[Match | None, Explanation]:
    return rules.decide(TicketFacts(text=text))


# ---------------------------------------------------------------- specificity


def test_given_setting_word_rule_first_when_a_subject_rule_holds_then_the_subject_wins():
    match, explanation = _decide(_property_and_elevator(), "我们小区的电梯又坏了")
    assert match is not None and match.rule.name == "电梯"
    assert explanation["evidence"] == "subject"
    # The setting rule stays in view as the rival, and the rating says so.
    assert [a["rule"] for a in explanation["alternatives"]] == ["物业"]
    assert explanation["confidence"] is not None and explanation["confidence"] < 1.0


def test_given_no_setting_words_listed_when_matched_then_priority_alone_decides():
    match = _property_and_elevator(None).match(TicketFacts(text="我们小区的电梯又坏了"))
    assert match is not None and match.rule.name == "物业"


def test_given_only_setting_words_fired_when_decided_then_the_match_is_rated_weak():
    match, explanation = _decide(_property_and_elevator(), "物业乱收费，小区里没人管")
    assert match is not None and match.rule.name == "物业"
    assert explanation["evidence"] == "setting"
    assert explanation["confidence"] == WEAK_ALONE_CONFIDENCE
    rivals = CompiledRules.build(
        [
            spec("物业", priority=10, lead="HOUSING", text_any=["小区"]),
            spec("社区", priority=20, lead="STREET", text_any=["物业"]),
        ],
        SETTINGS,
    )
    _, explanation = _decide(rivals, "小区物业不管事")
    assert explanation["evidence"] == "setting" and explanation["confidence"] == WEAK_CONFIDENCE


def test_given_a_pattern_rule_with_a_setting_word_then_it_is_not_weak():
    rules = CompiledRules.build(
        [spec("施工噪音", lead="URBAN_MGMT", text_any=["小区"], regex=["吵"])], SETTINGS
    )
    _, explanation = _decide(rules, "小区旁边半夜吵得很")
    assert explanation["evidence"] == "subject" and explanation["confidence"] == 1.0


def test_given_default_wording_then_it_lists_settings_and_segments():
    wording = default_synonyms()
    assert {"小区", "物业", "学校", "医院", "马路", "村"} <= wording.settings
    assert wording.segmentation


# ---------------------------------------------------------------- segmentation


def test_given_segmentation_when_a_short_keyword_sits_inside_a_longer_word_then_no_hit():
    fumes = [spec("油烟", lead="ECOLOGY", text_any=["油烟"])]
    segmented = CompiledRules.build(fumes, parse_synonyms("segmentation: true\n"))
    text = "我家抽油烟机坏了，想问问哪里修"
    assert CompiledRules.build(fumes).match(TicketFacts(text=text)) is not None
    assert segmented.match(TicketFacts(text=text)) is None
    assert segmented.match(TicketFacts(text="楼下饭店的油烟太大了")) is not None


def test_given_segmentation_when_the_keyword_is_the_head_or_start_of_a_word_then_it_hits():
    rules = CompiledRules.build(
        [spec("园林", lead="URBAN_MGMT", text_any=["公园", "垃圾"])],
        parse_synonyms("segmentation: true\n"),
    )
    assert rules.match(TicketFacts(text="河滨公园的秋千坏了")) is not None
    assert rules.match(TicketFacts(text="垃圾站臭得很")) is not None


# ---------------------------------------------------------------- wording and negation


def test_given_emphasis_or_denial_when_decided_then_the_explanation_names_it():
    rules = CompiledRules.build(
        [
            spec("停水", priority=10, lead="WATER", text_any=["停水"]),
            spec("停电", priority=20, lead="POWER", text_any=["停电"]),
        ]
    )
    _, stressed = _decide(rules, "停水也就算了，主要是停电两天了")
    assert stressed["fired"] is not None and stressed["fired"]["rule"] == "停电"
    assert stressed["wording"] == ["emphasis"]
    _, denied = _decide(rules, "不是停水，是停电了")
    assert denied["fired"] is not None and denied["fired"]["rule"] == "停电"
    assert denied["wording"] == ["negation"]
    _, plain = _decide(rules, "停电了")
    assert plain["wording"] == []


def test_given_a_negative_term_when_it_appears_then_the_rule_does_not_fire():
    rules = CompiledRules.build(
        [spec("燃气", lead="GAS", text_any=["燃气"], text_none=["燃气灶"])], default_synonyms()
    )
    assert rules.match(TicketFacts(text="燃气灶打不着火，厂家不管")) is None
    assert rules.match(TicketFacts(text="燃气表不走字")) is not None


# ---------------------------------------------------------------- the confidence gate


def _suggest(unit: str, p: float, *rest: tuple[str, float]) -> Suggestion:
    return Suggestion(unit=unit, confidence=p, alternatives=rest)


def _gate(text: str, suggestion: Suggestion | None, **kwargs) -> advice.Advice:
    match, explanation = _decide(_property_and_elevator(), text)
    return advice.advise(match, explanation, suggestion, **kwargs)


def test_given_rule_and_suggestion_agree_then_it_routes_with_their_combined_confidence():
    given = _gate("电梯坏了", _suggest("MARKET", 0.6, ("HOUSING", 0.3)))
    assert (given.unit, given.source) == ("MARKET", "rule+model")
    assert given.confidence == 1.0
    assert given.alternatives == (("HOUSING", 0.3),)


def test_given_a_confident_suggestion_contradicting_the_rule_then_the_suggestion_wins():
    given = _gate("电梯坏了", _suggest("POWER", 0.7, ("WATER", 0.2)))
    assert (given.unit, given.source, given.rule) == ("POWER", "model", "电梯")
    assert "MARKET" in dict(given.alternatives)


def test_given_an_unsure_rule_the_suggestion_contradicts_then_manual_dispatch():
    # Setting words alone with a rival in play: the rule is unsure; the suggestion leads
    # elsewhere without the confidence to route.
    rules = CompiledRules.build(
        [
            spec("物业", priority=10, lead="HOUSING", text_any=["小区"]),
            spec("社区", priority=20, lead="STREET", text_any=["物业"]),
        ],
        SETTINGS,
    )
    match, explanation = _decide(rules, "小区物业不管事")
    given = advice.advise(match, explanation, _suggest("POWER", 0.2, ("WATER", 0.15)))
    assert given.unit is None and given.source == "manual"
    units = [u for u, _ in given.alternatives]
    assert units[:2] == ["HOUSING", "STREET"] and "POWER" in units


def test_given_no_model_when_the_rule_is_weak_with_a_rival_then_manual_else_the_rule():
    rules = CompiledRules.build(
        [
            spec("物业", priority=10, lead="HOUSING", text_any=["小区"]),
            spec("社区", priority=20, lead="STREET", text_any=["物业"]),
        ],
        SETTINGS,
    )
    assert advice.advise(*_decide(rules, "小区物业不管事"), None).unit is None
    alone = advice.advise(*_decide(_property_and_elevator(), "物业乱收费"), None)
    assert (alone.unit, alone.source) == ("HOUSING", "rule")


def test_given_no_rule_then_only_a_confident_suggestion_is_proposed():
    assert _gate("有个事想问一下", _suggest("POWER", advice.MODEL_ROUTES)).unit == "POWER"
    assert _gate("有个事想问一下", _suggest("POWER", advice.MODEL_ROUTES - 0.01)).unit is None
    assert _gate("有个事想问一下", None).source == "manual"


def test_given_a_unit_the_model_barely_knows_then_it_cannot_overrule_the_rule():
    thin = _gate("电梯坏了", _suggest("POWER", 0.9), support=lambda unit: 1)
    assert (thin.unit, thin.source) == ("MARKET", "rule")
    known = _gate("电梯坏了", _suggest("POWER", 0.9), support=lambda unit: advice.MIN_SUPPORT)
    assert known.unit == "POWER"


def test_given_the_caller_stresses_a_demand_then_the_model_cannot_overrule_the_rule():
    rules = CompiledRules.build(
        [
            spec("停水", priority=10, lead="WATER", text_any=["停水"]),
            spec("停电", priority=20, lead="POWER", text_any=["停电"]),
        ]
    )
    match, explanation = _decide(rules, "停水也就算了，主要是停电两天了")
    given = advice.advise(match, explanation, _suggest("WATER", 0.9))
    assert (given.unit, given.source) == ("POWER", "rule")


def test_given_an_emergency_then_the_gate_proposes_nothing():
    rules = CompiledRules.build(
        [spec("小区", lead="HOUSING", text_any=["小区"])], parse_synonyms("emergency: [着火了]\n")
    )
    given = advice.advise(*_decide(rules, "小区里着火了"), _suggest("HOUSING", 0.9))
    assert given.unit is None and given.reason == "emergency: 着火了"


# ---------------------------------------------------------------- in dispatch


@pytest.fixture
def default_pack_and_model(session: Session, clock) -> Iterator[classifier.UnitClassifier]:
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    ensure_default_policies(session)
    text = rulebook.DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    rulebook.import_pack(session, text=text, fmt="yaml", now=clock.now(), replace=True)
    model = classifier.train(*synthetic_history())  # knows WATER, POWER and MARKET
    classifier.install(model)
    yield model
    classifier.install(None)


def _dispatch(session: Session, text: str) -> routing.DispatchResult:
    ticket = make_ticket(session, description=text)
    return routing.dispatch_ticket(session, ticket_id=saved_id(ticket), now=START)


def test_given_rule_and_model_agree_when_dispatched_then_routed_with_the_advice_shown(
    session: Session, default_pack_and_model
):
    result = _dispatch(session, "水表漏水了")
    assert not result.queued and result.rule is not None
    assert result.explanation["advice"]["unit"] == "WATER"
    assert result.explanation["advice"]["source"] == "rule+model"


def test_given_model_confidently_contradicts_an_unsure_rule_when_dispatched_then_queued(
    session: Session, default_pack_and_model
):
    # 电费 fires the power rule, with the market rules as rivals; the model is sure it is a
    # market matter. Its proposal is shown, and the dispatcher confirms it.
    result = _dispatch(session, "缺斤短两还卖假货，电费也涨了")
    assert result.queued and not result.assignments
    assert result.explanation["advice"]["unit"] == "MARKET"
    assert result.explanation["advice"]["source"] == "model"
    assert result.explanation["advice"]["rule"] is not None


def test_given_rule_for_a_unit_the_model_never_learned_when_dispatched_then_the_rule_routes(
    session: Session, default_pack_and_model
):
    result = _dispatch(session, "公交车司机态度差")
    assert not result.queued
    assert result.explanation["advice"]["unit"] == "TRANSPORT"
    assert result.explanation["advice"]["reason"] == "the model cannot judge this rule"
