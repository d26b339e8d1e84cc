"""The rules engine's schema: validating rules and reading and writing rule packs."""

from __future__ import annotations

import json
import re

import pytest

from core.errors import InvalidInput
from dispatch.rule_specs import RuleSpec, dump_pack, load_pack, validate_rule
from tests.dispatch.rule_support import invalid, with_

# ---------------------------------------------------------------- validation


def test_given_invalid_regex_when_validated_then_error_names_rule_field_and_pattern():
    message = invalid(with_(conditions__regex=["煤气", "[abc"]))
    assert message.startswith('rule "燃气泄漏": conditions.regex[1]: ')
    assert "'[abc'" in message and "unterminated character set" in message


def test_given_rule_without_conditions_when_validated_then_refused_unless_catch_all():
    assert "would match every ticket" in invalid(with_(conditions={}))
    assert validate_rule(with_(conditions={"catch_all": True})).conditions.catch_all


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (with_(conditions__colour="red"), "conditions.colour", "unknown field"),
        (with_(actions__colour="red"), "actions.colour", "unknown field"),
        (with_(colour="red"), "colour", "unknown field"),
        (with_(actions={}), "actions", "at least one action"),
        (with_(actions={"co_units": ["HOUSING"]}), "actions.co_units", "need a lead_unit"),
        (
            with_(actions={"lead_unit": "GAS", "co_units": ["GAS"]}),
            "actions.co_units",
            "lead unit GAS cannot also co-handle",
        ),
        (
            with_(actions={"lead_unit": "GAS", "co_units": ["A", "B", "A"]}),
            "actions.co_units",
            "more than once: A",
        ),
        (with_(actions={"lead_unit": "燃气公司"}), "actions.lead_unit", "unit codes are"),
        (with_(actions__category_code="09A301"), "actions.category_code", "2-12 digits"),
        (with_(actions__urgency="panic"), "actions.urgency", "Input should be"),
        (
            with_(conditions__request_types=["anger"]),
            "conditions.request_types[0]",
            "Input should be",
        ),
        (with_(conditions__text_any=["煤气味", "  "]), "conditions.text_any[1]", "at least 1"),
        (with_(conditions__text_all=["\u3000"]), "conditions.text_all[0]", "at least 1"),
        (
            with_(conditions__time_of_day={"start": "25:00", "end": "06:00"}),
            "conditions.time_of_day.start",
            "HH:MM",
        ),
        (
            with_(conditions__time_of_day={"start": 1320, "end": "06:00"}),
            "conditions.time_of_day.start",
            "quoted strings",
        ),
        (
            with_(conditions__time_of_day={"start": "06:00", "end": "6:00"}),
            "conditions.time_of_day",
            "must differ",
        ),
        (with_(name=""), "name", "at least 1"),
        (with_(name="长" * 121), "name", "at most 120"),
        (with_(priority="first"), "priority", "valid integer"),
    ],
)
def test_given_invalid_field_when_validated_then_error_names_its_path(data, field, fragment):
    message = invalid(data)
    assert re.search(rf"(^|: ){re.escape(field)}: ", message), message
    assert fragment in message


def test_given_position_when_validated_then_error_names_it():
    assert invalid(with_(actions={}), where="rules[3]").startswith(
        'rule "燃气泄漏" (rules[3]): actions: '
    )


def test_given_non_mapping_when_validated_then_refused_as_rule():
    assert invalid(["not", "a", "rule"]) == "rule: rule: expected a mapping"


def test_given_several_problems_when_validated_then_all_are_reported_in_details():
    with pytest.raises(InvalidInput) as caught:
        validate_rule(with_(conditions__regex=["("], actions={"co_units": ["X"]}))
    fields = [e["field"] for e in caught.value.details["errors"]]
    assert fields == ["conditions.regex[0]", "actions.co_units"]


def test_given_clock_time_without_leading_zero_when_validated_then_normalised():
    window = validate_rule(with_(conditions__time_of_day={"start": "22:00", "end": "6:00"}))
    assert window.conditions.time_of_day.end == "06:00"


# ---------------------------------------------------------------- packs


def _varied_specs() -> list[RuleSpec]:
    return [
        validate_rule(
            {
                "name": "夜间施工",
                "priority": 5,
                "description": "夜里按紧急办",
                "conditions": {
                    "text_any": ["施工", "ＫＴＶ"],
                    "text_none": ["白天"],
                    "regex": ["噪[音声]"],
                    "time_of_day": {"start": "22:00", "end": "06:00"},
                    "districts": ["榆阳区"],
                    "channels": ["phone"],
                },
                "actions": {
                    "lead_unit": "URBAN_MGMT",
                    "co_units": ["ECOLOGY"],
                    "urgency": "urgent",
                    "category_code": "020601",
                    "category_name": "施工噪声",
                    "sla_policy": "general",
                },
            }
        ),
        validate_rule(
            {
                "name": "表扬",
                "priority": 1,
                "enabled": False,
                "conditions": {"request_types": ["praise"], "urgencies": ["normal"]},
                "actions": {"category_code": "990101"},
            }
        ),
        validate_rule(
            {
                "name": "兜底",
                "conditions": {"catch_all": True},
                "actions": {"request_type": "consultation"},
            }
        ),
    ]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_given_specs_when_dumped_and_loaded_then_round_trip_exactly(fmt):
    specs = _varied_specs()
    text = dump_pack("demo", specs, fmt)
    assert load_pack(text, fmt) == specs
    assert dump_pack("demo", load_pack(text, fmt), fmt) == text


def test_given_yaml_dump_then_chinese_is_written_as_is():
    text = dump_pack("demo", _varied_specs(), "yaml")
    assert "夜间施工" in text and "\\u" not in text
    assert "start: '22:00'" in text


def test_given_pack_with_several_bad_rules_when_loaded_then_one_error_lists_them_all():
    good = {"name": "a", "conditions": {"text_any": ["x"]}, "actions": {"lead_unit": "U"}}
    text = json.dumps(
        {
            "pack": "p",
            "version": 1,
            "rules": [
                {**good, "name": "bad regex", "conditions": {"regex": ["(("]}},
                good,
                {**good, "actions": {}, "name": "no action"},
                {**good},
            ],
        }
    )
    with pytest.raises(InvalidInput) as caught:
        load_pack(text, "json")
    message = caught.value.message
    assert message.startswith("pack 'p': 3 problem(s)")
    assert 'rule "bad regex" (rules[0]): conditions.regex[0]: ' in message
    assert 'rule "no action" (rules[2]): actions: ' in message
    assert 'rule "a" (rules[3]): name: duplicate name (first at rules[1])' in message
    assert len(caught.value.details["errors"]) == 3


@pytest.mark.parametrize(
    ("text", "fmt", "fragment"),
    [
        ("pack: p\nversion: 1\nrules: [", "yaml", "not valid YAML"),
        ("{", "json", "not valid JSON"),
        ("pack: p\nversion: 2\nrules: []", "yaml", "version must be 1"),
        ("pack: p\nversion: 1\nrules: {}", "yaml", "rules must be a list"),
        ("pack: p\nversion: 1\nrules: []\nowner: me", "yaml", "unknown field(s) owner"),
        ("- just a list", "yaml", "expected a mapping"),
        ("pack: ''\nversion: 1\nrules: []", "yaml", "1-64 characters"),
        ("{}", "toml", "unknown format"),
    ],
)
def test_given_malformed_pack_when_loaded_then_refused_clearly(text, fmt, fragment):
    with pytest.raises(InvalidInput, match=re.escape(fragment)):
        load_pack(text, fmt)
