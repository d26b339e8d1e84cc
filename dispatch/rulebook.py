"""The rule book: dispatch rules stored in the database, their packs, the unit catalogue
loader, and the compiled matcher each process keeps.

Every function takes an explicit session and never commits: the caller owns the unit of
work. Every rule change bumps the reference-data revision (dispatch.reference) so every
process recompiles on its next call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from core import yaml_fast
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference
from dispatch.models import Rule, SlaPolicy, Unit, UnitLevel
from dispatch.reference import rule_spec
from dispatch.rule_matching import CompiledRules, Explanation, TicketFacts
from dispatch.rule_specs import PackFormat, RuleSpec, dump_pack, parse_pack, validate_rule

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_UNITS_PATH = DATA_DIR / "units.yaml"
DEFAULT_RULES_PATH = DATA_DIR / "rules-zh.yaml"

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- rules


def _columns(spec: RuleSpec) -> dict[str, Any]:
    data = spec.to_data()
    return {
        "name": spec.name,
        "priority": spec.priority,
        "enabled": spec.enabled,
        "description": spec.description,
        "conditions": data["conditions"],
        "actions": data["actions"],
    }


def _check_references(session: Session, specs: Iterable[RuleSpec]) -> None:
    """Every unit a rule routes to must exist and be active; so must its SLA policy."""
    specs = list(specs)
    codes = {c for s in specs for c in (s.actions.lead_unit, *s.actions.co_units) if c}
    policies = {s.actions.sla_policy for s in specs if s.actions.sla_policy}
    units = dict(
        session.exec(select(Unit.code, Unit.active).where(col(Unit.code).in_(codes))).all()
    )
    known_policies = dict(
        session.exec(
            select(SlaPolicy.name, SlaPolicy.active).where(col(SlaPolicy.name).in_(policies))
        ).all()
    )

    def unit_problem(code: str) -> str | None:
        if code not in units:
            return f'unknown unit "{code}"'
        return None if units[code] else f'unit "{code}" is inactive'

    problems: list[dict[str, str]] = []
    for spec in specs:
        label = f'rule "{spec.name}"'
        fields = [("actions.lead_unit", spec.actions.lead_unit)] + [
            (f"actions.co_units[{i}]", c) for i, c in enumerate(spec.actions.co_units)
        ]
        for field, code in fields:
            message = unit_problem(code) if code else None
            if message:
                problems.append({"rule": label, "field": field, "message": message})
        policy = spec.actions.sla_policy
        if policy and not known_policies.get(policy, False):
            state = "inactive" if policy in known_policies else "unknown"
            problems.append(
                {
                    "rule": label,
                    "field": "actions.sla_policy",
                    "message": f'{state} SLA policy "{policy}"',
                }
            )
    if problems:
        lines = [f"{p['rule']}: {p['field']}: {p['message']}" for p in problems]
        raise InvalidInput("; ".join(lines), errors=problems)


def _name_taken(session: Session, name: str, *, other_than: int | None = None) -> bool:
    query = select(Rule.id).where(Rule.name == name)
    if other_than is not None:
        query = query.where(Rule.id != other_than)
    return session.exec(query).first() is not None


def create_rule(
    session: Session, *, data: Mapping[str, Any], now: datetime, pack: str = "custom"
) -> Rule:
    spec = validate_rule(dict(data))
    _check_references(session, [spec])
    if _name_taken(session, spec.name):
        raise Conflict(f'a rule named "{spec.name}" already exists', name=spec.name)
    rule = Rule.model_validate(
        _columns(spec), update={"pack": pack, "created_at": now, "updated_at": now}
    )
    session.add(rule)
    session.flush()
    reference.bump(session)
    return rule


def get_rule(session: Session, *, rule_id: int) -> Rule:
    rule = session.get(Rule, rule_id)
    if rule is None:
        raise NotFound(f"no rule with id {rule_id}", rule_id=rule_id)
    return rule


def list_rules(session: Session, *, pack: str | None = None) -> list[Rule]:
    """Rules in evaluation order (priority, then name), disabled ones included."""
    query = select(Rule).order_by(col(Rule.priority), col(Rule.name))
    if pack is not None:
        query = query.where(Rule.pack == pack)
    return list(session.exec(query).all())


def update_rule(session: Session, *, rule_id: int, data: Mapping[str, Any], now: datetime) -> Rule:
    """Replace the given top-level fields (name, priority, enabled, description, conditions,
    actions) and keep the others; the result is validated as a whole."""
    rule = get_rule(session, rule_id=rule_id)
    spec = validate_rule({**rule_spec(rule).to_data(), **data})
    _check_references(session, [spec])
    if _name_taken(session, spec.name, other_than=rule_id):
        raise Conflict(f'a rule named "{spec.name}" already exists', name=spec.name)
    for field, value in _columns(spec).items():
        setattr(rule, field, value)
    rule.updated_at = now
    session.add(rule)
    session.flush()
    reference.bump(session)
    return rule


def delete_rule(session: Session, *, rule_id: int) -> None:
    session.delete(get_rule(session, rule_id=rule_id))
    session.flush()
    reference.bump(session)


# ---------------------------------------------------------------- packs


def import_pack(
    session: Session, *, text: str, fmt: PackFormat, now: datetime, replace: bool = False
) -> dict[str, int]:
    """Create the pack's new rules and update those it already holds (matched by name).
    With replace, rules of the same pack absent from the text are deleted. Everything is
    checked before anything is written, so a refused import changes nothing."""
    pack = parse_pack(text, fmt)
    _check_references(session, pack.rules)
    names = [s.name for s in pack.rules]
    existing = {
        r.name: r for r in session.exec(select(Rule).where(col(Rule.name).in_(names))).all()
    }
    foreign = sorted(n for n, r in existing.items() if r.pack != pack.name)
    if foreign:
        raise Conflict(
            f"rule names already used by other packs: {', '.join(foreign)}", names=foreign
        )

    counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    if replace:
        for stale in session.exec(
            select(Rule).where(Rule.pack == pack.name, col(Rule.name).not_in(names))
        ).all():
            session.delete(stale)
            counts["deleted"] += 1
        session.flush()
    for spec in pack.rules:
        columns = _columns(spec)
        rule = existing.get(spec.name)
        if rule is None:
            session.add(
                Rule.model_validate(
                    columns, update={"pack": pack.name, "created_at": now, "updated_at": now}
                )
            )
            counts["created"] += 1
        elif rule_spec(rule) == spec:
            counts["unchanged"] += 1
        else:
            for field, value in columns.items():
                setattr(rule, field, value)
            rule.updated_at = now
            session.add(rule)
            counts["updated"] += 1
    session.flush()
    if counts["created"] or counts["updated"] or counts["deleted"]:
        reference.bump(session)
    return counts


def export_pack(session: Session, *, pack: str | None, fmt: PackFormat) -> str:
    """One pack, or every rule under the pack name "all" when `pack` is None."""
    return dump_pack(pack or "all", [rule_spec(r) for r in list_rules(session, pack=pack)], fmt)


# ---------------------------------------------------------------- compiled rules


def compiled_rules(session: Session) -> CompiledRules:
    """The enabled rules, compiled; cached per process with the rest of the reference data
    (dispatch.reference), so a change made by any process is seen on the next call."""
    return reference.snapshot(session).rules


def dry_run(session: Session, *, facts: TicketFacts) -> Explanation:
    return compiled_rules(session).explain(facts)


# ---------------------------------------------------------------- unit catalogue


class UnitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,32}$")
    name: str = Field(min_length=1, max_length=100)
    level: UnitLevel
    parent: str | None = None
    district: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    head_name: str | None = Field(default=None, max_length=100)
    head_email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    active: bool = True


def _unit_problems(items: Any) -> tuple[list[UnitSpec], list[str]]:
    if not isinstance(items, list):
        return [], ["units: expected a list"]
    specs: list[UnitSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        code = item.get("code") if isinstance(item, dict) else None
        label = f'unit "{code}" (units[{index}])' if code else f"units[{index}]"
        try:
            spec = UnitSpec.model_validate(item)
        except ValidationError as exc:
            problems += [
                f"{label}: {'.'.join(map(str, e['loc'])) or 'unit'}: {e['msg']}"
                for e in exc.errors()
            ]
            continue
        if spec.code in seen:
            problems.append(f"{label}: code: listed more than once")
            continue
        seen.add(spec.code)
        specs.append(spec)
    return specs, problems


def load_units(session: Session, *, text: str) -> list[Unit]:
    """Create or update units from a YAML catalogue ({units: [...]}), matched by code.
    A parent may be in the same file or already in the database."""
    try:
        doc = yaml_fast.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"units: not valid YAML: {exc}") from None
    specs, problems = _unit_problems(doc.get("units") if isinstance(doc, dict) else None)

    stored = {u.code: u for u in session.exec(select(Unit)).all()}
    stored_parent = {u.id: u.code for u in stored.values()}
    parents = {code: stored_parent.get(u.parent_id) for code, u in stored.items()}
    parents.update({s.code: s.parent for s in specs})
    for spec in specs:
        if spec.parent is None:
            continue
        if spec.parent not in parents:
            problems.append(f'unit "{spec.code}": parent "{spec.parent}" not found')
            continue
        chain = {spec.code}
        above: str | None = spec.parent
        while above is not None and above not in chain:
            chain.add(above)
            above = parents.get(above)
        if above is not None:
            problems.append(f'unit "{spec.code}": parent "{spec.parent}" makes a cycle')
    if problems:
        raise InvalidInput("\n".join(problems), errors=problems)

    units: list[Unit] = []
    for spec in specs:
        fields = spec.model_dump(exclude={"parent"})
        unit = stored.get(spec.code)
        if unit is None:
            unit = Unit.model_validate(fields)
            stored[spec.code] = unit
        else:
            for field, value in fields.items():
                setattr(unit, field, value)
        session.add(unit)
        units.append(unit)
    session.flush()
    for spec, unit in zip(specs, units, strict=False):
        unit.parent_id = stored[spec.parent].id if spec.parent else None
        session.add(unit)
    session.flush()
    reference.bump(session)
    return units
