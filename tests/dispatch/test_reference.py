"""The per-process reference snapshot: reused while nothing changes, rebuilt as soon as any
process commits a change to rules, units, SLA policies or calendar days."""

from collections.abc import Iterator
from datetime import date

import pytest

from core.db import make_engine, make_session_factory, session_scope
from dispatch import policies, reference, rulebook
from dispatch import units as unit_service
from dispatch.units import UnitUpdate
from hotline.tables import metadata


@pytest.fixture
def factory(fresh_db_url, clock) -> Iterator:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
        policies.ensure_default_policies(session)
        rulebook.import_pack(
            session,
            text=rulebook.DEFAULT_RULES_PATH.read_text("utf-8"),
            fmt="yaml",
            now=clock.now(),
            replace=True,
        )
    yield sessions
    engine.dispose()


def snap(sessions):
    with session_scope(sessions) as session:
        return reference.snapshot(session)


def test_given_no_change_when_asked_again_then_the_same_snapshot_is_reused(factory):
    first = snap(factory)
    assert snap(factory) is first
    assert first.units["WATER"].active and first.rules.specs


def test_given_unit_deactivated_elsewhere_then_next_snapshot_sees_it(factory):
    before = snap(factory)
    with session_scope(factory) as other:
        unit_service.update_unit(other, code="WATER", changes=UnitUpdate(active=False))
    after = snap(factory)
    assert after.revision > before.revision
    assert not after.units["WATER"].active


def test_given_policy_and_calendar_changed_elsewhere_then_next_snapshot_sees_both(factory):
    snap(factory)
    with session_scope(factory) as other:
        general = next(p for p in policies.list_policies(other) if p.name == "general")
        policies.update_policy(other, policy_id=general.id, changes={"reply_limit": 5})
        policies.set_calendar_day(other, day=date(2027, 1, 1), is_workday=False, name="元旦")
    after = snap(factory)
    assert next(p for p in after.policies if p.name == "general").reply_limit == 5
    assert not after.calendar.is_workday(date(2027, 1, 1))


def test_given_change_rolled_back_then_cached_snapshot_stays_valid(factory):
    before = snap(factory)
    with pytest.raises(RuntimeError):
        with session_scope(factory) as other:
            unit_service.update_unit(other, code="WATER", changes=UnitUpdate(active=False))
            assert not reference.snapshot(other).units["WATER"].active, (
                "the writing transaction sees its own change"
            )
            raise RuntimeError("abandon the change")
    assert snap(factory) is before
