"""Dispatch rules as data: the rule schema (conditions and actions), its validation with
every offending field named, and rule packs — a named list of rules as YAML or JSON.

A rule says "when these conditions hold, classify the ticket so and route it there". How
rules are matched against a ticket is dispatch.rule_matching's business. Pure: no database
and no I/O beyond the text it is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from core import yaml_fast
from core.errors import InvalidInput
from tickets.models import Channel, RequestType, Urgency

PackFormat = Literal["yaml", "json"]
PACK_VERSION = 1

# ---------------------------------------------------------------- field types


def _regex(value: str) -> str:
    try:
        re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _hh_mm(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the sexagesimal number 1320.
        raise ValueError(
            'write times as quoted strings, e.g. "22:00" (YAML reads an unquoted 22:00 as a number)'
        )
    if not isinstance(value, str) or not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
        raise ValueError(f"expected a time as HH:MM between 00:00 and 23:59, got {value!r}")
    hours, minutes = value.strip().split(":")
    return f"{int(hours):02d}:{minutes}"


def _unit_code(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,32}", value):
        raise ValueError(
            f"unit codes are 1-32 ASCII letters, digits, '_', '-' or '.'; got {value!r}"
        )
    return value


def _category_code(value: str) -> str:
    if not re.fullmatch(r"[0-9]{2,12}", value):
        raise ValueError(f"category codes are 2-12 digits (GB/T 39666), got {value!r}")
    return value


Keyword = Annotated[str, Field(min_length=1, max_length=64)]
Pattern = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_regex)]
HhMm = Annotated[str, BeforeValidator(_hh_mm)]
UnitCode = Annotated[str, AfterValidator(_unit_code)]
CategoryCode = Annotated[str, AfterValidator(_category_code)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TimeWindow(_Strict):
    """Local time of day, start included, end excluded; wraps midnight when start > end."""

    start: HhMm
    end: HhMm

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError("start and end must differ (an empty window never matches)")
        return self

    def contains(self, moment: time) -> bool:
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start < end:
            return start <= moment < end
        return moment >= start or moment < end


class Conditions(_Strict):
    text_any: list[Keyword] = []
    text_all: list[Keyword] = []
    text_none: list[Keyword] = []
    regex: list[Pattern] = []
    request_types: list[RequestType] = []
    urgencies: list[Urgency] = []
    districts: list[Keyword] = []
    channels: list[Channel] = []
    time_of_day: TimeWindow | None = None
    catch_all: bool = False

    @model_validator(mode="after")
    def _something_to_test(self) -> Conditions:
        if not self.catch_all and self.is_empty():
            raise ValueError(
                "a rule without conditions would match every ticket; "
                "set catch_all: true if that is what you mean"
            )
        return self

    def is_empty(self) -> bool:
        return not (
            self.text_any
            or self.text_all
            or self.text_none
            or self.regex
            or self.request_types
            or self.urgencies
            or self.districts
            or self.channels
            or self.time_of_day
        )


_UNSET = object()


class Actions(_Strict):
    category_code: CategoryCode | None = None
    category_name: str | None = Field(default=None, min_length=1, max_length=100)
    urgency: Urgency | None = None
    request_type: RequestType | None = None
    lead_unit: UnitCode | None = None
    co_units: list[UnitCode] = []
    sla_policy: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("co_units")
    @classmethod
    def _co_units(cls, value: list[str], info: ValidationInfo) -> list[str]:
        lead = info.data.get("lead_unit", _UNSET)
        if value and lead is None:
            raise ValueError("co-handling units need a lead_unit")
        duplicates = sorted({c for c in value if value.count(c) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        if lead in value:
            raise ValueError(f"the lead unit {lead} cannot also co-handle")
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Actions:
        if all(getattr(self, f) in (None, []) for f in type(self).model_fields):
            raise ValueError("a rule needs at least one action")
        return self


class RuleSpec(_Strict):
    name: str = Field(min_length=1, max_length=120)
    priority: int = Field(default=100, ge=-1_000_000, le=1_000_000)
    enabled: bool = True
    description: str | None = Field(default=None, max_length=1000)
    conditions: Conditions
    actions: Actions

    def to_data(self) -> dict[str, Any]:
        """The smallest mapping that validates back to this spec (what packs and rows hold)."""
        data: dict[str, Any] = {"name": self.name, "priority": self.priority}
        if not self.enabled:
            data["enabled"] = False
        if self.description is not None:
            data["description"] = self.description
        data["conditions"] = self.conditions.model_dump(mode="json", exclude_defaults=True)
        data["actions"] = self.actions.model_dump(mode="json", exclude_defaults=True)
        return data


# ---------------------------------------------------------------- validation


def _field_path(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "rule"


def _message(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return error["msg"].removeprefix("Value error, ")


def _label(data: Any, where: str) -> str:
    name = data.get("name") if isinstance(data, dict) else None
    label = f'rule "{name.strip()}"' if isinstance(name, str) and name.strip() else "rule"
    return f"{label} ({where})" if where else label


def _problems(data: Any, where: str) -> tuple[RuleSpec | None, list[dict[str, str]]]:
    label = _label(data, where)
    if not isinstance(data, dict):
        return None, [{"rule": label, "field": "rule", "message": "expected a mapping"}]
    try:
        return RuleSpec.model_validate(data), []
    except ValidationError as exc:
        return None, [
            {"rule": label, "field": _field_path(e["loc"]), "message": _message(e)}
            for e in exc.errors()
        ]


def _raise(problems: list[dict[str, str]], heading: str = "") -> NoReturn:
    lines = [f"{p['rule']}: {p['field']}: {p['message']}" for p in problems]
    message = "\n".join([heading, *lines]) if heading else "; ".join(lines)
    raise InvalidInput(message, errors=problems)


def validate_rule(data: dict[str, Any], *, where: str = "") -> RuleSpec:
    """A RuleSpec, or InvalidInput naming the rule and every offending field path."""
    spec, problems = _problems(data, where)
    if spec is None:
        _raise(problems)
    return spec


# ---------------------------------------------------------------- packs


@dataclass(frozen=True)
class Pack:
    name: str
    rules: list[RuleSpec]


def _parse(text: str, fmt: PackFormat) -> Any:
    try:
        if fmt == "yaml":
            return yaml_fast.safe_load(text)
        if fmt == "json":
            return json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"pack: not valid {fmt.upper()}: {exc}") from None
    raise InvalidInput(f"pack: unknown format {fmt!r} (yaml or json)")


def parse_pack(text: str, fmt: PackFormat) -> Pack:
    """The pack's name and rules; every problem in the pack is reported in one InvalidInput."""
    doc = _parse(text, fmt)
    if not isinstance(doc, dict):
        raise InvalidInput("pack: expected a mapping with pack, version and rules")
    unknown = sorted(set(doc) - {"pack", "version", "rules"})
    name, version, rules = doc.get("pack"), doc.get("version"), doc.get("rules")
    if unknown:
        raise InvalidInput(f"pack: unknown field(s) {', '.join(map(str, unknown))}")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise InvalidInput("pack: pack must be a name of 1-64 characters")
    if version != PACK_VERSION:
        raise InvalidInput(f"pack {name!r}: version must be {PACK_VERSION}, got {version!r}")
    if not isinstance(rules, list):
        raise InvalidInput(f"pack {name!r}: rules must be a list")

    specs: list[RuleSpec] = []
    problems: list[dict[str, str]] = []
    first_seen: dict[str, int] = {}
    for index, data in enumerate(rules):
        where = f"rules[{index}]"
        spec, found = _problems(data, where)
        problems += found
        if spec is None:
            continue
        if spec.name in first_seen:
            first = first_seen[spec.name]
            problems.append(
                {
                    "rule": _label(data, where),
                    "field": "name",
                    "message": f"duplicate name (first at rules[{first}])",
                }
            )
            continue
        first_seen[spec.name] = index
        specs.append(spec)
    if problems:
        _raise(problems, heading=f"pack {name.strip()!r}: {len(problems)} problem(s)")
    return Pack(name=name.strip(), rules=specs)


def load_pack(text: str, fmt: PackFormat) -> list[RuleSpec]:
    return parse_pack(text, fmt).rules


def dump_pack(name: str, specs: Iterable[RuleSpec], fmt: PackFormat) -> str:
    doc = {"pack": name, "version": PACK_VERSION, "rules": [s.to_data() for s in specs]}
    if fmt == "yaml":
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    raise InvalidInput(f"pack: unknown format {fmt!r} (yaml or json)")
