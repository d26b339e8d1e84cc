"""The pure rules engine: matching and explanations, the default pack (no database)."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput
from dispatch.rule_matching import EXPLAIN_CANDIDATES_CAP, CompiledRules, TicketFacts, normalise
from dispatch.rule_specs import RuleSpec, load_pack, validate_rule
from dispatch.rulebook import DEFAULT_RULES_PATH
from tests.dispatch.rule_support import fired, spec
from tickets.models import Channel, RequestType, Urgency

# ---------------------------------------------------------------- matching


def test_given_two_matching_rules_when_matched_then_lower_priority_number_wins():
    rules = [
        spec("late", priority=50, text_any=["停水"]),
        spec("early", priority=10, text_any=["停水"]),
    ]
    assert fired(rules, "小区停水了") == "early"


def test_given_equal_priorities_when_matched_then_name_breaks_the_tie():
    rules = [spec("b", priority=10, text_any=["停水"]), spec("a", priority=10, text_any=["水"])]
    assert fired(rules, "小区停水了") == "a"


def test_given_disabled_rule_when_matched_then_it_is_skipped():
    rules = [
        spec("off", priority=1, enabled=False, text_any=["停水"]),
        spec("on", priority=2, text_any=["停水"]),
    ]
    assert fired(rules, "停水") == "on"


def test_given_nothing_matches_then_no_match():
    assert fired([spec("水", text_any=["停水"])], "停电了") is None
    assert fired([], "停电了") is None


def test_given_text_all_when_one_term_missing_then_rule_does_not_fire():
    rules = [spec("小区停水", text_all=["小区", "停水"])]
    assert fired(rules, "小区今天停水") == "小区停水"
    assert fired(rules, "今天停水") is None


def test_given_text_none_when_excluded_term_present_then_rule_does_not_fire():
    rules = [spec("缴费", text_any=["暖气费"], text_none=["不热"])]
    assert fired(rules, "暖气费怎么交") == "缴费"
    assert fired(rules, "交了暖气费还是不热") is None


def test_given_only_text_none_when_matched_then_rule_is_a_candidate_without_keyword_hits():
    assert fired([spec("not spam", text_none=["广告"])], "路灯不亮") == "not spam"


def test_given_regex_condition_when_matched_then_pattern_decides():
    rules = [spec("欠薪", text_any=["工资"], regex=["拖欠.{0,8}工资"])]
    assert fired(rules, "老板拖欠了三个月工资") == "欠薪"
    assert fired(rules, "工资怎么算") is None


def test_given_regex_only_rule_when_matched_then_it_is_a_candidate():
    assert fired([spec("电话", regex=[r"1[3-9]\d{9}"])], "请回电１３８１２３４５６７８") == "电话"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (time(22, 0), True),
        (time(23, 30), True),
        (time(0, 0), True),
        (time(5, 59, 59), True),
        (time(6, 0), False),
        (time(12, 0), False),
        (time(21, 59), False),
        (None, False),
    ],
)
def test_given_window_wrapping_midnight_when_matched_then_start_included_end_excluded(
    moment, expected
):
    rules = [spec("夜间", text_any=["施工"], time_of_day={"start": "22:00", "end": "06:00"})]
    assert (fired(rules, "工地施工", local_time=moment) == "夜间") is expected


def test_given_daytime_window_when_matched_then_only_inside_it():
    rules = [spec("白天", text_any=["施工"], time_of_day={"start": "08:00", "end": "18:00"})]
    assert fired(rules, "施工", local_time=time(9)) == "白天"
    assert fired(rules, "施工", local_time=time(19)) is None


def test_given_district_filter_when_matched_then_other_districts_fall_through():
    rules = [
        spec("榆阳", priority=1, lead="YY", text_any=["社区"], districts=["榆阳区"]),
        spec("横山", priority=1, lead="HS", text_any=["社区"], districts=["横山区"]),
    ]
    assert fired(rules, "社区不作为", district="横山区") == "横山"
    assert fired(rules, "社区不作为", district="神木市") is None
    assert fired(rules, "社区不作为") is None


def test_given_request_type_urgency_and_channel_filters_when_matched_then_all_must_hold():
    rules = [spec("表扬", request_types=["praise"], urgencies=["normal"], channels=["phone"])]
    ok = {"request_type": RequestType.praise, "urgency": Urgency.normal, "channel": Channel.phone}
    assert fired(rules, "谢谢", **ok) == "表扬"
    assert fired(rules, "谢谢", **{**ok, "request_type": RequestType.complaint}) is None
    assert fired(rules, "谢谢", **{**ok, "urgency": Urgency.urgent}) is None
    assert fired(rules, "谢谢", **{**ok, "channel": Channel.web}) is None


def test_given_full_width_or_capitals_when_matched_then_normalised_on_both_sides():
    rules = [
        spec("ktv", text_any=["ＫＴＶ"]),
        spec("wifi", text_any=["wifi"]),
        spec("hotline", text_any=["12345"]),
    ]
    assert fired(rules, "楼下ktv太吵") == "ktv"
    assert fired(rules, "小区ＷｉＦｉ信号差") == "wifi"
    assert fired(rules, "打了１２３４５") == "hotline"


def test_given_match_then_matched_terms_use_the_rules_own_spelling():
    rules = [
        spec("水", text_any=["停水", "ＷＡＴＥＲ", "电"], text_all=["小区"]),
        spec("先", priority=1, text_any=["water", "停水"], districts=["横山区"]),
    ]
    found = CompiledRules.build(rules).match(TicketFacts(text="小区water停水"))
    assert found.matched_terms == ("停水", "ＷＡＴＥＲ", "小区")


def test_given_duplicate_names_when_built_then_refused():
    with pytest.raises(InvalidInput, match="duplicate rule names: a"):
        CompiledRules.build([spec("a", text_any=["x"]), spec("a", text_any=["y"])])


# ---------------------------------------------------------------- explanations


def test_given_fired_rule_when_explained_then_terms_conditions_and_failed_candidates_shown():
    rules = [
        spec("横山社区", priority=1, text_any=["社区"], districts=["横山区"]),
        spec("夜间", priority=2, text_any=["施工"], time_of_day={"start": "22:00", "end": "06:00"}),
        spec("施工噪音", priority=3, text_any=["施工", "工地"], regex=["噪[音声]"]),
        spec("无关", priority=0, text_any=["停电"]),
    ]
    explanation = CompiledRules.build(rules).explain(
        TicketFacts(text="社区旁工地施工噪音大", district="榆阳区", local_time=time(10, 30))
    )
    json.dumps(explanation)  # stored as-is on the ticket's audit event
    assert explanation["fired"] == {
        "rule": "施工噪音",
        "priority": 3,
        "matched_terms": ["施工", "工地"],
        "conditions": [
            {"condition": "text_any", "passed": True, "detail": {"hit": ["施工", "工地"]}},
            {
                "condition": "regex",
                "passed": True,
                "detail": {"pattern": "噪[音声]", "matched": "噪音"},
            },
        ],
    }
    assert explanation["actions"] == {"lead_unit": "UNIT"}
    assert explanation["checked"] == [
        {
            "rule": "横山社区",
            "priority": 1,
            "failed": {
                "condition": "districts",
                "passed": False,
                "detail": {"expected": ["横山区"], "actual": "榆阳区"},
            },
        },
        {
            "rule": "夜间",
            "priority": 2,
            "failed": {
                "condition": "time_of_day",
                "passed": False,
                "detail": {"expected": {"start": "22:00", "end": "06:00"}, "actual": "10:30:00"},
            },
        },
    ]
    assert explanation["checked_total"] == 2
    assert explanation["rules_total"] == 4


def test_given_text_all_failure_when_explained_then_missing_terms_listed():
    explanation = CompiledRules.build([spec("x", text_all=["小区", "停水"])]).explain(
        TicketFacts(text="小区停电")
    )
    assert explanation["fired"] is None
    assert explanation["checked"][0]["failed"] == {
        "condition": "text_all",
        "passed": False,
        "detail": {"hit": ["小区"], "missing": ["停水"]},
    }


def test_given_many_failing_candidates_when_explained_then_list_is_capped():
    rules = [
        spec(f"r{i:02d}", priority=i, text_any=["施工"], districts=["横山区"])
        for i in range(EXPLAIN_CANDIDATES_CAP + 5)
    ]
    explanation = CompiledRules.build(rules).explain(TicketFacts(text="施工", district="榆阳区"))
    assert explanation["fired"] is None and explanation["actions"] is None
    assert len(explanation["checked"]) == EXPLAIN_CANDIDATES_CAP
    assert explanation["checked"][0]["rule"] == "r00"
    assert explanation["checked_total"] == EXPLAIN_CANDIDATES_CAP + 5


def test_given_match_then_its_explanation_is_the_fired_trace_of_explain():
    rules = [spec("水", text_any=["停水"])]
    compiled = CompiledRules.build(rules)
    facts = TicketFacts(text="停水")
    assert compiled.match(facts).explanation == compiled.explain(facts)["fired"]


# ---------------------------------------------------------------- default pack


@pytest.fixture(scope="module")
def default_rules() -> CompiledRules:
    return CompiledRules.build(load_pack(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml"))


def test_given_default_pack_then_it_is_large_and_every_keyword_rule_has_5_to_25_terms():
    specs = load_pack(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml")
    assert len(specs) >= 40
    assert not [s.name for s in specs if s.conditions.catch_all]
    for s in specs:
        assert s.actions.lead_unit and s.actions.category_code and s.actions.sla_policy
        terms = len(s.conditions.text_any) + len(s.conditions.text_all)
        assert terms == 0 or 5 <= terms <= 25, s.name


SAMPLES = [
    ("我们公司老板拖欠了三个月工资，一直不发", {}, "HR_SOCIAL"),
    ("工地包工头欠农民工工资不给，年底了讨薪无门", {}, "HR_SOCIAL"),
    ("公司要辞退我却不给经济补偿", {}, "HR_SOCIAL"),
    ("楼下工地晚上十一点还在施工，噪音太大睡不着", {"local_time": time(23, 10)}, "URBAN_MGMT"),
    ("楼下工地晚上十一点还在施工，噪音太大睡不着", {"local_time": time(9, 0)}, "URBAN_MGMT"),
    ("我家从早上开始停水了，什么时候恢复供水", {}, "WATER"),
    ("小区已经停水两天了，物业也不管", {}, "WATER"),
    ("自来水发黄还有异味，不敢喝", {}, "WATER"),
    ("家里突然停电了，整栋楼都没电", {}, "POWER"),
    ("厨房里有很重的煤气味，怀疑燃气泄漏", {}, "GAS"),
    ("暖气不热，家里只有十五度", {}, "HEATING"),
    ("想问一下今年的供暖费什么时候交", {}, "HEATING"),
    ("学校门口有人占道经营乱摆摊", {}, "URBAN_MGMT"),
    ("邻居在楼顶违章搭建了一间房", {}, "URBAN_MGMT"),
    ("小区垃圾好几天没人清运，臭气熏天", {}, "URBAN_MGMT"),
    ("小区门口的路灯坏了好几天不亮", {}, "URBAN_MGMT"),
    ("路上井盖丢失，晚上很危险", {}, "URBAN_MGMT"),
    ("大风把路边的树木刮倒了，挡住了路", {}, "URBAN_MGMT"),
    ("物业公司乱收费，服务很差", {}, "HOUSING"),
    ("新房交付后墙体开裂，房屋质量有问题", {}, "HOUSING"),
    ("想咨询一下住房维修基金怎么申请使用", {}, "HOUSING"),
    ("12路公交车经常不按站点停车，司机态度差", {}, "TRANSPORT"),
    ("出租车司机拒载还绕路", {}, "TRANSPORT"),
    ("小区门口长期有人违章停车，堵住消防通道", {}, "TRAFFIC_POLICE"),
    ("十字路口的交通信号灯坏了", {}, "TRAFFIC_POLICE"),
    ("在超市买到过期食品，要求商家赔偿", {}, "MARKET"),
    ("商家虚假宣传价格欺诈，消费者权益受损", {}, "MARKET"),
    ("小区电梯坏了一个星期没人修", {}, "MARKET"),
    ("医院医生态度恶劣，看病排队太久", {}, "HEALTH"),
    ("异地就医医保报销比例是多少", {}, "MEDICAL_INS"),
    ("孩子上小学的学区划分问题想咨询", {}, "EDUCATION"),
    ("校外培训机构跑路了，学费退不了", {}, "EDUCATION"),
    ("想问一下低保怎么申请", {}, "CIVIL_AFFAIRS"),
    ("养老院护理人员虐待老人", {}, "CIVIL_AFFAIRS"),
    ("婚姻登记需要带什么材料", {}, "CIVIL_AFFAIRS"),
    ("附近工厂偷排污水，河水发黑", {}, "ECOLOGY"),
    ("楼下饭店油烟太大，熏得窗户都不敢开", {}, "ECOLOGY"),
    ("想咨询一下公积金贷款的额度", {}, "HOUSING_FUND"),
    ("房产证办了三年还没办下来", {}, "NATURAL_RES"),
    ("景区强制购物，导游态度恶劣", {}, "CULTURE_TOURISM"),
    ("附近的网吧让未成年人上网", {}, "CULTURE_TOURISM"),
    ("社区工作人员开证明推来推去", {"district": "横山区"}, "HS_DISTRICT"),
    ("表扬一下城管的工作人员，路灯修得很快", {"request_type": RequestType.praise}, "CENTRE"),
]


@pytest.mark.parametrize(("text", "facts", "unit"), SAMPLES, ids=[s[0][:12] for s in SAMPLES])
def test_given_typical_request_when_matched_by_default_pack_then_routed_to_right_unit(
    default_rules, text, facts, unit
):
    found = default_rules.match(TicketFacts(text=text, **facts))
    assert found is not None, default_rules.explain(TicketFacts(text=text, **facts))
    assert found.rule.actions.lead_unit == unit, found.rule.name


def test_given_gas_leak_when_matched_by_default_pack_then_very_urgent_two_hour_policy(
    default_rules,
):
    actions = default_rules.match(TicketFacts(text="楼道里一股煤气味")).rule.actions
    assert (actions.urgency, actions.sla_policy) == (Urgency.very_urgent, "emergency-2h")


def test_given_estate_water_cut_when_matched_by_default_pack_then_housing_co_handles(default_rules):
    actions = default_rules.match(TicketFacts(text="小区停水两天了")).rule.actions
    assert (actions.lead_unit, actions.co_units, actions.sla_policy) == (
        "WATER",
        ["HOUSING"],
        "utilities-24h",
    )


def test_given_night_construction_noise_when_matched_then_urgent_only_at_night(default_rules):
    text = "工地施工噪音扰民"
    assert (
        default_rules.match(TicketFacts(text=text, local_time=time(23))).rule.actions.urgency
        == Urgency.urgent
    )
    assert (
        default_rules.match(TicketFacts(text=text, local_time=time(15))).rule.actions.urgency
        is None
    )


def test_given_unrelated_text_when_matched_by_default_pack_then_left_for_manual_dispatch(
    default_rules,
):
    assert default_rules.match(TicketFacts(text="请问今天是星期几")) is None


# ---------------------------------------------------------------- property: same as naive


ALPHABET = ["a", "b", "A", "Ｂ", "甲", "乙", "丙"]
PATTERNS = ["a+b", "甲.乙", "^b", "丙$", "[ab]{2}", "ＡＢ"]
DISTRICTS = ["榆阳区", "横山区"]
WINDOWS = [{"start": "22:00", "end": "06:00"}, {"start": "08:00", "end": "18:00"}]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[RuleSpec]:
    keywords = st.lists(st.text(ALPHABET, min_size=1, max_size=3), max_size=3)
    specs = []
    for index in range(draw(st.integers(0, 8))):
        conditions: dict[str, Any] = {
            "text_any": draw(keywords),
            "text_all": draw(keywords),
            "text_none": draw(st.lists(st.text(ALPHABET, min_size=1, max_size=2), max_size=1)),
            "regex": draw(st.lists(st.sampled_from(PATTERNS), max_size=1)),
            "request_types": draw(st.lists(st.sampled_from(list(RequestType)), max_size=2)),
            "districts": draw(st.lists(st.sampled_from(DISTRICTS), max_size=1)),
            "urgencies": draw(st.lists(st.sampled_from(list(Urgency)), max_size=1)),
            "time_of_day": draw(st.none() | st.sampled_from(WINDOWS)),
        }
        if not any(conditions.values()):
            conditions["catch_all"] = True
        specs.append(
            validate_rule(
                {
                    "name": f"r{index}",
                    "priority": draw(st.integers(0, 3)),
                    "enabled": draw(st.booleans()),
                    "conditions": conditions,
                    "actions": {"lead_unit": "U"},
                }
            )
        )
    return specs


def naive(specs: list[RuleSpec], facts: TicketFacts) -> str | None:
    text = normalise(facts.text)
    nfkc = unicodedata.normalize("NFKC", facts.text)
    for s in sorted((s for s in specs if s.enabled), key=lambda s: (s.priority, s.name)):
        c = s.conditions
        checks = [
            not c.text_any or any(normalise(k) in text for k in c.text_any),
            all(normalise(k) in text for k in c.text_all),
            not any(normalise(k) in text for k in c.text_none),
            not c.regex or any(re.search(p, nfkc, re.IGNORECASE) for p in c.regex),
            not c.request_types or facts.request_type in c.request_types,
            not c.districts or facts.district in c.districts,
            not c.urgencies or facts.urgency in c.urgencies,
            c.time_of_day is None
            or (facts.local_time is not None and c.time_of_day.contains(facts.local_time)),
        ]
        if all(checks):
            return s.name
    return None


@settings(max_examples=300, deadline=None)
@given(
    specs=rule_sets(),
    text=st.text([*ALPHABET, "ａ", "ｂ", "丁", " "], max_size=20),
    request_type=st.none() | st.sampled_from(list(RequestType)),
    urgency=st.none() | st.sampled_from(list(Urgency)),
    district=st.none() | st.sampled_from(DISTRICTS),
    local_time=st.none() | st.times(),
)
def test_given_random_rules_and_text_when_matched_then_agrees_with_naive_evaluation(
    specs, text, request_type, urgency, district, local_time
):
    facts = TicketFacts(
        text=text,
        request_type=request_type,
        urgency=urgency,
        district=district,
        local_time=local_time,
    )
    compiled = CompiledRules.build(specs)
    found = compiled.match(facts)
    assert (found.rule.name if found else None) == naive(specs, facts)
    explanation = compiled.explain(facts)
    assert (explanation["fired"] or {}).get("rule") == (found.rule.name if found else None)
