"""The general fixes of the routing review (issue #15 §5): what every misroute of
tests/dispatch/routing_eval.yaml taught, each checked on wording of its own (none of these
sentences is in the evaluation files) — a feared emergency is no emergency, the learned
suggestion is not fed contradictory labels, a praise is not re-read as its subject, and the
default pack's new vocabulary and sentence patterns route as a real centre would."""

from __future__ import annotations

import pytest

from dispatch import advice, classifier
from dispatch.classifier import Suggestion
from dispatch.rule_matching import CompiledRules, TicketFacts
from dispatch.rule_specs import load_pack
from dispatch.rulebook import DEFAULT_RULES_PATH
from dispatch.segment import default_synonyms, parse_synonyms
from tests.dispatch.rule_support import spec
from tickets.models import RequestType

# ---------------------------------------------------------------- emergencies


@pytest.fixture(scope="module")
def wording():
    return parse_synonyms("emergency: [着火了, 起火了, 要跳楼]\n")


@pytest.mark.parametrize(
    "text",
    [
        "楼道里堆满了纸箱，真要着火了谁也跑不了",
        "电动车在屋里充电，万一起火了怎么办",
        "灶上打不着火了，是不是没气了",
        "就怕哪天着火了都没人知道",
    ],
)
def test_given_a_fire_the_caller_only_fears_or_denies_then_it_is_no_emergency(wording, text):
    assert wording.emergency(text) is None


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("对面楼里着火了，赶紧来人", "着火了"),
        ("怕是着火了？不是，真的着火了，冒黑烟", "着火了"),
        ("他说万一不给钱他就要跳楼", "要跳楼"),
    ],
)
def test_given_a_fire_happening_or_a_threat_to_life_then_it_stays_an_emergency(
    wording, text, phrase
):
    assert wording.emergency(text) == phrase


def test_given_the_default_wording_then_a_dead_gas_hob_is_routed_not_held(pack):
    assert pack.match(TicketFacts(text="家里的灶打不着火了，天然气表里还有字")) is not None


# ---------------------------------------------------------------- the learned suggestion


def test_given_district_copies_of_a_rule_then_their_shared_keywords_are_no_prior_label():
    specs = [
        spec("社区-甲区", lead="A_DISTRICT", text_any=["村干部", "调解"], districts=["甲区"]),
        spec("社区-乙区", lead="B_DISTRICT", text_any=["村干部", "调解"], districts=["乙区"]),
        spec("公积金", lead="HOUSING_FUND", text_any=["公积金"]),
    ]
    docs = classifier.prior_documents(specs)
    alone = [(text, unit) for text, unit in docs if " " not in text]
    assert alone == [("公积金", "HOUSING_FUND")]
    # each rule's whole wording, its name naming the district, is still a document
    assert ("村干部 调解 社区-甲区", "A_DISTRICT") in docs


def test_given_setting_words_then_they_are_no_prior_label_on_their_own():
    specs = [spec("物业", lead="HOUSING", text_any=["小区", "物业费"])]
    docs = classifier.prior_documents(specs, settings=["小区"])
    assert ("小区", "HOUSING") not in docs and ("物业费", "HOUSING") in docs
    assert ("小区", "HOUSING") in classifier.prior_documents(specs)


def test_given_the_default_pack_then_no_prior_keyword_carries_two_units():
    specs = load_pack(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml")
    docs = classifier.prior_documents(specs, default_synonyms().settings)
    units: dict[str, set[str]] = {}
    for text, unit in docs:
        units.setdefault(text, set()).add(unit)
    assert all(len(u) == 1 for u in units.values())
    assert not default_synonyms().settings & {text for text, _ in docs}


# ---------------------------------------------------------------- the gate


def test_given_a_praise_rule_then_the_suggestion_cannot_turn_it_into_its_subject():
    rules = CompiledRules.build(
        [
            spec("表扬", priority=1, lead="CENTRE", text_any=["谢谢"]),
            spec("暖气", priority=20, lead="HEATING", text_any=["暖气"]),
        ]
    )
    praise = rules.specs[0].model_copy(
        update={
            "actions": rules.specs[0].actions.model_copy(
                update={"request_type": RequestType.praise}
            )
        }
    )
    rules = CompiledRules.build([praise, rules.specs[1]])
    match, explanation = rules.decide(TicketFacts(text="师傅把暖气修好了，想说声谢谢"))
    heating = Suggestion(unit="HEATING", confidence=0.9, alternatives=(("CENTRE", 0.01),))
    given = advice.advise(match, explanation, heating)
    assert (given.unit, given.source) == ("CENTRE", "rule")
    # the same rule without the praise type is a subject rule the model may overrule
    plain = CompiledRules.build(
        [
            spec("表扬", priority=1, lead="CENTRE", text_any=["谢谢"]),
            spec("暖气", priority=20, lead="HEATING", text_any=["暖气"]),
        ]
    )
    overruled = advice.advise(*plain.decide(TicketFacts(text="暖气修好了，谢谢")), heating)
    assert overruled.unit == "HEATING"


# ---------------------------------------------------------------- the default pack


@pytest.fixture(scope="module")
def pack() -> CompiledRules:
    specs = load_pack(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml")
    return CompiledRules.build(specs, default_synonyms())


def _unit(pack: CompiledRules, text: str, district: str | None = None) -> str | None:
    found = pack.match(TicketFacts(text=text, district=district))
    return None if found is None else found.rule.actions.lead_unit


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        # an outage said in pieces
        ("这礼拜我们那片停了三回电，电器都烧坏了一个", "POWER"),
        ("整栋楼停了两天水，也没贴通知", "WATER"),
        ("家里电压老是很低，洗衣机都转不动", "POWER"),
        ("龙头里流出来的水有股腥味，烧开也有", "WATER"),
        # irrigation water is water resources', not the city water company's
        ("灌区的渠里一直没水，庄稼浇不上", "WATER_RES"),
        # a precise subject over a generic one
        ("卫生室把用过的注射器扔在垃圾桶里", "HEALTH"),
        ("后山上有人私挖乱采，拉煤的车天天过", "NATURAL_RES"),
        ("门面房里堆了几十桶稀料，还有人在里头抽烟", "EMERGENCY"),
        ("有人把电动车推进单元里充电", "EMERGENCY"),
        ("想用公积金贷款买房，可不动产证还没下来", "HOUSING_FUND"),
        ("燃气灶点不着是灶的质量问题，厂家售后不管", "MARKET"),
        ("电线杆上贴满了办证的小广告", "URBAN_MGMT"),
        ("医院门口两边停满了车，救护车都进不来", "TRAFFIC_POLICE"),
        ("业主想成立业委会，到底去哪里备案", "HOUSING"),
        ("电梯里的广告费归谁，物业从不公开公共收益", "HOUSING"),
        ("健身房老板跑路了，我的年卡还没用完", "MARKET"),
        ("美容店里办了三千的卡，现在不给做了", "MARKET"),
        ("小区门口一辆车停了半年了没人动", "TRAFFIC_POLICE"),
        ("村东头的养殖场粪污往沟里冲，臭得很", "ECOLOGY"),
        ("狗把我家孩子咬了，狗主人一分钱不出", "POLICE"),
        ("开电暖器以后电费一下高了好多", "POWER"),
        ("家里用的电暖气，这个月电表走得飞快", "POWER"),
        ("人行道上的砖翘起来了，老人绊倒了", "URBAN_MGMT"),
        ("卖水果的把摊子摆到马路上了", "URBAN_MGMT"),
        # what a caller says about the hotline itself, and only then
        ("你们这个热线太难打了，转人工要等半天", "CENTRE"),
    ],
)
def test_given_review_wording_when_matched_with_the_default_pack_then_it_routes(pack, text, unit):
    assert _unit(pack, text) == unit


def test_given_another_body_s_line_is_busy_then_it_is_no_hotline_complaint(pack):
    assert _unit(pack, "燃气公司的电话一直打不通，燃气表不走字") == "GAS"


def test_given_village_facilities_the_village_keeps_then_the_district_leads(pack):
    text = "村里自己装的路灯坏了半年，村干部说没钱修"
    assert _unit(pack, text, district="横山区") == "HS_DISTRICT"
    assert _unit(pack, text, district="神木市") == "SM_DISTRICT"
    # a city street lamp is still urban management's
    assert _unit(pack, "小区门口马路上的路灯坏了半年", district="横山区") == "URBAN_MGMT"


def test_given_a_dog_bite_vaccine_shortage_then_health_leads_not_the_police(pack):
    assert _unit(pack, "被狗咬了去打狂犬疫苗，卫生院说没货") == "HEALTH"


def test_given_a_fan_without_noise_then_no_industrial_noise_rule_fires(pack):
    assert _unit(pack, "养鸡场的风机一停，鸡就闷死了，这个月停了四回电") == "POWER"
    assert _unit(pack, "厂房的风机嗡嗡响，整晚睡不着") == "ECOLOGY"
