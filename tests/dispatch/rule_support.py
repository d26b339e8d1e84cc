"""Helpers shared by the rules engine's tests: building specs, matching, validation errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import InvalidInput
from dispatch.rule_matching import CompiledRules, TicketFacts
from dispatch.rule_specs import RuleSpec, validate_rule


def spec(
    name: str, *, priority: int = 100, enabled: bool = True, lead: str = "UNIT", **conditions: Any
) -> RuleSpec:
    return validate_rule(
        {
            "name": name,
            "priority": priority,
            "enabled": enabled,
            "conditions": conditions,
            "actions": {"lead_unit": lead},
        }
    )


def fired(specs: list[RuleSpec], text: str, **facts: Any) -> str | None:
    found = CompiledRules.build(specs).match(TicketFacts(text=text, **facts))
    return None if found is None else found.rule.name


def invalid(data: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_rule(data, **kwargs)
    return caught.value.message


GOOD = {"name": "燃气泄漏", "conditions": {"text_any": ["煤气味"]}, "actions": {"lead_unit": "GAS"}}


def with_(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        section, _, field = path.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return data
