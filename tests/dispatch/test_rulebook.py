"""The rule book against SQLite and PostgreSQL: rules CRUD with reference checks, packs,
the unit catalogue loader, and the per-process compiled cache."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from core.db import make_engine
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import rulebook
from dispatch.models import Rule, RuleRevision, SlaPolicy, Unit, UnitLevel
from dispatch.policies import ensure_default_policies
from dispatch.rule_matching import CompiledRules, TicketFacts
from dispatch.rule_specs import dump_pack, load_pack, validate_rule
from hotline.tables import metadata

POLICIES = ["emergency-2h", "utilities-24h", "general", "complex-15wd", "consultation-3wd"]


@pytest.fixture
def catalogue(session: Session) -> Session:
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text(encoding="utf-8"))
    for name in POLICIES:
        session.add(SlaPolicy(name=name))
    session.flush()
    return session


# Loading the unit catalogue changes reference data too, and bumps the revision once.
CATALOGUE_REVISION = 1


def revision(session: Session) -> int:
    return session.exec(select(RuleRevision.revision)).first() or 0


def rule_data(name: str = "欠薪", **actions: Any) -> dict[str, Any]:
    return {
        "name": name,
        "priority": 50,
        "conditions": {"text_any": ["拖欠工资", "讨薪"]},
        "actions": {"lead_unit": "HR_SOCIAL", "sla_policy": "general", **actions},
    }


def pack_text(name: str, *rules: dict[str, Any]) -> str:
    return dump_pack(name, [validate_rule(r) for r in rules], "yaml")


# ---------------------------------------------------------------- unit catalogue


def test_given_default_catalogue_when_loaded_then_units_of_every_level_with_parents(session):
    units = rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    by_level: dict[UnitLevel, list[Unit]] = {}
    for unit in units:
        by_level.setdefault(unit.level, []).append(unit)
    assert [u.code for u in by_level[UnitLevel.centre]] == ["CENTRE"]
    assert len(by_level[UnitLevel.city]) >= 15
    assert {"WATER", "POWER", "GAS", "HEATING"} <= {u.code for u in by_level[UnitLevel.enterprise]}
    assert len(by_level[UnitLevel.district]) >= 3
    assert len(by_level[UnitLevel.street]) >= 6
    ids = {u.id: u for u in units}
    for street in by_level[UnitLevel.street]:
        parent = ids[street.parent_id]
        assert parent.level == UnitLevel.district and parent.district == street.district
    assert all(u.email and u.email.endswith("@units.example.org") for u in units)


def test_given_loaded_catalogue_when_loaded_again_with_changes_then_units_are_updated(session):
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    before = len(session.exec(select(Unit)).all())
    rulebook.load_units(
        session,
        text="""
units:
  - {code: WATER, name: 榆川水务集团, level: enterprise, active: false}
  - {code: YY_NEW_STREET, name: 榆阳区新建街道办事处, level: street, parent: YY_DISTRICT,
     district: 榆阳区}
""",
    )
    water = session.exec(select(Unit).where(Unit.code == "WATER")).one()
    new = session.exec(select(Unit).where(Unit.code == "YY_NEW_STREET")).one()
    district = session.exec(select(Unit).where(Unit.code == "YY_DISTRICT")).one()
    assert (water.name, water.active, water.email) == ("榆川水务集团", False, None)
    assert new.parent_id == district.id
    assert len(session.exec(select(Unit)).all()) == before + 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "units:\n  - {code: S1, name: 街道, level: street, parent: NOWHERE}",
            'unit "S1": parent "NOWHERE" not found',
        ),
        (
            "units:\n  - {code: A, name: a, level: city, parent: B}\n"
            "  - {code: B, name: b, level: city, parent: A}",
            'unit "A": parent "B" makes a cycle',
        ),
        ("units:\n  - {code: A, name: a, level: planet}", 'unit "A" (units[0]): level'),
        (
            "units:\n  - {code: A, name: a, level: city}\n  - {code: A, name: b, level: city}",
            "code: listed more than once",
        ),
        ("units:\n  - {code: A, name: a, level: city, colour: red}", "colour"),
        ("units: 3", "units: expected a list"),
        ("units: [", "not valid YAML"),
    ],
)
def test_given_bad_catalogue_when_loaded_then_refused_and_nothing_written(session, text, fragment):
    with pytest.raises(InvalidInput) as caught:
        rulebook.load_units(session, text=text)
    assert fragment in caught.value.message
    assert session.exec(select(Unit)).all() == []


# ---------------------------------------------------------------- rules


def test_given_valid_rule_when_created_then_stored_and_revision_bumped(catalogue, clock):
    rule = rulebook.create_rule(
        catalogue, data=rule_data(co_units=["CIVIL_AFFAIRS"]), now=clock.now()
    )
    assert rule.id is not None and rule.pack == "custom"
    assert (rule.created_at, rule.updated_at) == (clock.now(), clock.now())
    assert rule.conditions == {"text_any": ["拖欠工资", "讨薪"]}
    assert rule.actions == {
        "lead_unit": "HR_SOCIAL",
        "co_units": ["CIVIL_AFFAIRS"],
        "sla_policy": "general",
    }
    assert revision(catalogue) == CATALOGUE_REVISION + 1
    rulebook.create_rule(catalogue, data=rule_data("讨薪"), now=clock.now())
    assert revision(catalogue) == CATALOGUE_REVISION + 2


@pytest.mark.parametrize(
    ("actions", "fragment"),
    [
        ({"lead_unit": "NOPE"}, 'rule "欠薪": actions.lead_unit: unknown unit "NOPE"'),
        ({"co_units": ["HOUSING", "GHOST"]}, 'actions.co_units[1]: unknown unit "GHOST"'),
        ({"sla_policy": "whenever"}, 'actions.sla_policy: unknown SLA policy "whenever"'),
    ],
)
def test_given_missing_reference_when_rule_created_then_refused_naming_the_code(
    catalogue, clock, actions, fragment
):
    with pytest.raises(InvalidInput) as caught:
        rulebook.create_rule(catalogue, data=rule_data(**actions), now=clock.now())
    assert fragment in caught.value.message
    assert rulebook.list_rules(catalogue) == []


def test_given_inactive_unit_or_policy_when_rule_created_then_refused(catalogue, clock):
    catalogue.exec(update(Unit).where(Unit.code == "HR_SOCIAL").values(active=False))
    catalogue.exec(update(SlaPolicy).where(SlaPolicy.name == "general").values(active=False))
    with pytest.raises(InvalidInput) as caught:
        rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    assert 'unit "HR_SOCIAL" is inactive' in caught.value.message
    assert 'inactive SLA policy "general"' in caught.value.message


def test_given_invalid_rule_when_created_then_invalid_input_not_validation_error(catalogue, clock):
    data = rule_data()
    data["conditions"]["regex"] = ["[未闭合"]
    with pytest.raises(InvalidInput, match=r'rule "欠薪": conditions\.regex\[0\]: '):
        rulebook.create_rule(catalogue, data=data, now=clock.now())


def test_given_taken_name_when_rule_created_then_conflict(catalogue, clock):
    rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    with pytest.raises(Conflict, match="already exists"):
        rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())


def test_given_rule_when_partly_updated_then_other_fields_kept_and_revision_bumped(
    catalogue, clock
):
    rule = rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    later = clock.advance(hours=1)
    updated = rulebook.update_rule(
        catalogue, rule_id=rule.id, now=later, data={"priority": 5, "enabled": False}
    )
    assert (updated.priority, updated.enabled) == (5, False)
    assert updated.conditions == {"text_any": ["拖欠工资", "讨薪"]}
    assert (updated.created_at, updated.updated_at) == (later - timedelta(hours=1), later)
    assert revision(catalogue) == CATALOGUE_REVISION + 2


def test_given_update_to_bad_or_taken_values_then_refused_and_rule_unchanged(catalogue, clock):
    rule = rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    rulebook.create_rule(catalogue, data=rule_data("讨薪"), now=clock.now())
    with pytest.raises(Conflict):
        rulebook.update_rule(catalogue, rule_id=rule.id, data={"name": "讨薪"}, now=clock.now())
    with pytest.raises(InvalidInput, match='unknown unit "MOON"'):
        rulebook.update_rule(
            catalogue, rule_id=rule.id, now=clock.now(), data={"actions": {"lead_unit": "MOON"}}
        )
    with pytest.raises(InvalidInput, match="would match every ticket"):
        rulebook.update_rule(catalogue, rule_id=rule.id, data={"conditions": {}}, now=clock.now())
    stored = rulebook.get_rule(catalogue, rule_id=rule.id)
    assert stored.name == "欠薪" and stored.actions["lead_unit"] == "HR_SOCIAL"


def test_given_rule_when_deleted_then_gone_and_revision_bumped(catalogue, clock):
    rule = rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    rulebook.delete_rule(catalogue, rule_id=rule.id)
    assert revision(catalogue) == CATALOGUE_REVISION + 2
    with pytest.raises(NotFound):
        rulebook.get_rule(catalogue, rule_id=rule.id)
    with pytest.raises(NotFound):
        rulebook.delete_rule(catalogue, rule_id=rule.id)
    with pytest.raises(NotFound):
        rulebook.update_rule(catalogue, rule_id=rule.id, data={}, now=clock.now())


def test_given_rules_when_listed_then_in_evaluation_order_and_filtered_by_pack(catalogue, clock):
    for name, priority, pack in [("c", 10, "custom"), ("b", 20, "p"), ("a", 20, "p")]:
        rulebook.create_rule(
            catalogue, data={**rule_data(name), "priority": priority}, now=clock.now(), pack=pack
        )
    assert [r.name for r in rulebook.list_rules(catalogue)] == ["c", "a", "b"]
    assert [r.name for r in rulebook.list_rules(catalogue, pack="p")] == ["a", "b"]


# ---------------------------------------------------------------- packs


def test_given_default_pack_and_catalogue_when_imported_then_every_reference_resolves(
    session, clock
):
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    ensure_default_policies(session)
    text = rulebook.DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    counts = rulebook.import_pack(session, text=text, fmt="yaml", now=clock.now(), replace=True)
    assert counts["created"] >= 40 and counts["deleted"] == counts["updated"] == 0
    assert (
        rulebook.import_pack(session, text=text, fmt="yaml", now=clock.now(), replace=True)[
            "unchanged"
        ]
        == counts["created"]
    )
    assert revision(session) == 3  # units, policies, one pack import
    exported = rulebook.export_pack(session, pack="default-zh", fmt="json")
    assert sorted(load_pack(exported, "json"), key=lambda s: s.name) == sorted(
        load_pack(text, "yaml"), key=lambda s: s.name
    )

    explanation = rulebook.dry_run(session, facts=TicketFacts(text="我们公司老板拖欠了三个月工资"))
    assert explanation["fired"]["rule"].startswith("欠薪")
    assert explanation["actions"]["lead_unit"] == "HR_SOCIAL"


def test_given_pack_with_unknown_unit_when_imported_then_nothing_is_written(catalogue, clock):
    text = pack_text("p", rule_data("ok"), rule_data("bad", lead_unit="NOPE"))
    with pytest.raises(InvalidInput, match='rule "bad": actions.lead_unit: unknown unit "NOPE"'):
        rulebook.import_pack(catalogue, text=text, fmt="yaml", now=clock.now(), replace=False)
    assert rulebook.list_rules(catalogue) == []
    assert revision(catalogue) == CATALOGUE_REVISION


def test_given_pack_when_reimported_then_replace_decides_what_happens_to_missing_rules(
    catalogue, clock
):
    first = pack_text("p", rule_data("a"), rule_data("b"), rule_data("c"))
    rulebook.import_pack(catalogue, text=first, fmt="yaml", now=clock.now(), replace=False)
    rulebook.create_rule(catalogue, data=rule_data("mine"), now=clock.now())
    changed_b = {**rule_data("b"), "priority": 1}
    second = pack_text("p", rule_data("a"), changed_b, rule_data("d"))

    merged = rulebook.import_pack(
        catalogue, text=second, fmt="yaml", now=clock.now(), replace=False
    )
    assert merged == {"created": 1, "updated": 1, "unchanged": 1, "deleted": 0}
    assert [r.name for r in rulebook.list_rules(catalogue, pack="p")] == ["b", "a", "c", "d"]

    replaced = rulebook.import_pack(
        catalogue, text=second, fmt="yaml", now=clock.now(), replace=True
    )
    assert replaced == {"created": 0, "updated": 0, "unchanged": 3, "deleted": 1}
    assert [r.name for r in rulebook.list_rules(catalogue)] == ["b", "a", "d", "mine"]


def test_given_name_owned_by_another_pack_when_imported_then_conflict(catalogue, clock):
    rulebook.create_rule(catalogue, data=rule_data("a"), now=clock.now())
    with pytest.raises(Conflict, match="other packs: a"):
        rulebook.import_pack(
            catalogue,
            text=pack_text("p", rule_data("a")),
            fmt="yaml",
            now=clock.now(),
            replace=True,
        )


def test_given_all_rules_when_exported_without_pack_then_named_all(catalogue, clock):
    rulebook.create_rule(catalogue, data=rule_data("a"), now=clock.now(), pack="x")
    rulebook.create_rule(catalogue, data=rule_data("b"), now=clock.now(), pack="y")
    text = rulebook.export_pack(catalogue, pack=None, fmt="yaml")
    assert text.startswith("pack: all\n")
    assert [s.name for s in load_pack(text, "yaml")] == ["a", "b"]


# ---------------------------------------------------------------- compiled cache


def _as_other_process(session: Session) -> Session:
    """A second session on the test's connection: it sees the data but, like another
    process, has made no rule change of its own."""
    return Session(bind=session.get_bind(), join_transaction_mode="create_savepoint")


def test_given_revision_bump_when_compiled_again_then_change_is_picked_up(catalogue, clock):
    rule = rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    other = _as_other_process(catalogue)
    facts = TicketFacts(text="老板拖欠工资")

    first = rulebook.compiled_rules(other)
    assert rulebook.compiled_rules(other) is first
    assert first.match(facts).rule.actions.lead_unit == "HR_SOCIAL"

    catalogue.exec(update(Rule).values(enabled=False))  # written around the rule book
    other.commit()  # ends its unit of work; the next one looks again
    assert rulebook.compiled_rules(other) is first

    rulebook.update_rule(
        catalogue,
        rule_id=rule.id,
        now=clock.now(),
        data={"enabled": True, "actions": {"lead_unit": "CIVIL_AFFAIRS"}},
    )
    other.commit()
    second = rulebook.compiled_rules(other)
    assert second is not first
    assert second.match(facts).rule.actions.lead_unit == "CIVIL_AFFAIRS"
    other.close()


def test_given_two_processes_on_one_database_when_one_commits_a_change_then_other_recompiles(
    tmp_path, clock
):
    engine = make_engine(f"sqlite:///{tmp_path / 'own.db'}")
    metadata.create_all(engine)
    facts = TicketFacts(text="老板拖欠工资")
    change = {"actions": {"lead_unit": "CIVIL_AFFAIRS"}}

    def compiled() -> CompiledRules:
        # One unit of work of the reading process; SQLite writers wait for it to end.
        with Session(engine) as reader:
            return rulebook.compiled_rules(reader)

    with Session(engine) as writer:
        rulebook.load_units(writer, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
        writer.add(SlaPolicy(name="general"))
        rule_id = rulebook.create_rule(writer, data=rule_data(), now=clock.now()).id
        writer.commit()
    first = compiled()
    assert compiled() is first

    with Session(engine) as writer:
        rulebook.update_rule(writer, rule_id=rule_id, data=change, now=clock.now())
        assert (
            rulebook.compiled_rules(writer).match(facts).rule.actions.lead_unit == "CIVIL_AFFAIRS"
        )
        writer.rollback()
    assert compiled() is first

    with Session(engine) as writer:
        rulebook.update_rule(writer, rule_id=rule_id, data=change, now=clock.now())
        writer.commit()
    second = compiled()
    assert second is not first
    assert second.match(facts).rule.actions.lead_unit == "CIVIL_AFFAIRS"
    engine.dispose()


def test_given_session_that_changed_rules_when_compiled_then_sees_its_own_changes(catalogue, clock):
    facts = TicketFacts(text="老板拖欠工资")
    assert rulebook.compiled_rules(catalogue).match(facts) is None
    rule = rulebook.create_rule(catalogue, data=rule_data(), now=clock.now())
    assert rulebook.compiled_rules(catalogue).match(facts).rule.name == "欠薪"
    rulebook.delete_rule(catalogue, rule_id=rule.id)
    assert rulebook.compiled_rules(catalogue).match(facts) is None


def test_given_invalid_row_written_around_the_rule_book_when_compiled_then_skipped(
    catalogue, clock
):
    rulebook.create_rule(catalogue, data=rule_data("good"), now=clock.now())
    catalogue.add(
        Rule(
            name="broken",
            conditions={"regex": ["("]},
            actions={"lead_unit": "X"},
            created_at=clock.now(),
            updated_at=clock.now(),
        )
    )
    catalogue.flush()
    other = _as_other_process(catalogue)
    assert [s.name for s in rulebook.compiled_rules(other).specs] == ["good"]
    other.close()


def test_given_night_call_when_dry_run_then_explanation_shows_time_window(session, clock):
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    ensure_default_policies(session)
    rulebook.import_pack(
        session,
        text=rulebook.DEFAULT_RULES_PATH.read_text("utf-8"),
        fmt="yaml",
        now=clock.now(),
        replace=True,
    )
    explanation = rulebook.dry_run(
        session, facts=TicketFacts(text="工地半夜施工噪音扰民", local_time=time(23, 30))
    )
    conditions = {c["condition"]: c for c in explanation["fired"]["conditions"]}
    assert explanation["fired"]["rule"] == "夜间施工噪音"
    assert conditions["time_of_day"]["detail"]["actual"] == "23:30:00"
