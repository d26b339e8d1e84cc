from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlmodel import Session, select

from core.db import saved_id
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import policies, sla
from dispatch.models import CalendarDay, Clock, ClockUnit, SlaPolicy
from dispatch.policies import DEFAULT_POLICIES_FILE, SlaPolicyCreate, SlaPolicyUpdate

BJ = ZoneInfo("Asia/Shanghai")


def bj(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=BJ).astimezone(UTC)


def overrides(session: Session) -> dict[date, tuple[bool, str | None]]:
    return {d.day: (d.is_workday, d.name) for d in policies.list_calendar_days(session)}


# ---------------------------------------------------------------------------- calendar


def test_given_override_when_loading_calendar_then_it_shapes_deadlines(session: Session) -> None:
    policies.set_calendar_day(session, day=date(2027, 1, 1), is_workday=False, name="元旦")
    calendar = policies.load_calendar(session)
    assert not calendar.is_workday(date(2027, 1, 1))
    assert calendar.holiday_name(date(2027, 1, 1)) == "元旦"
    assert calendar.is_known(date(2027, 3, 1))
    assert sla.add_time(bj(2026, 12, 31, 10), 1, ClockUnit.workdays, calendar) == bj(2027, 1, 4, 10)


def test_set_calendar_day_upserts_and_delete_removes(session: Session) -> None:
    policies.set_calendar_day(session, day=date(2027, 2, 7), is_workday=False)
    policies.set_calendar_day(session, day=date(2027, 2, 7), is_workday=True, name=" 春节调休 ")
    assert overrides(session) == {date(2027, 2, 7): (True, "春节调休")}
    policies.delete_calendar_day(session, day=date(2027, 2, 7))
    assert overrides(session) == {}
    with pytest.raises(NotFound, match="2027-02-07"):
        policies.delete_calendar_day(session, day=date(2027, 2, 7))


def test_list_calendar_days_filters_by_year(session: Session) -> None:
    for day in (date(2026, 12, 31), date(2027, 1, 1), date(2027, 12, 31), date(2028, 1, 1)):
        policies.set_calendar_day(session, day=day, is_workday=False)
    assert [d.day for d in policies.list_calendar_days(session, year=2027)] == [
        date(2027, 1, 1),
        date(2027, 12, 31),
    ]


LINES = """\
# 2027 holidays, as announced
2027-01-01 holiday 元旦

2027-02-06..2027-02-08 休 春节   # a range
2027-02-20 workday 春节调休
2027-05-08 班
"""
YAML_LIST = """\
- {day: 2027-01-01, kind: holiday, name: 元旦}
- day: 2027-02-06..2027-02-08
  is_workday: false
  name: 春节
- {day: "2027-02-20", kind: workday, name: 春节调休}
- {day: 2027-05-08, kind: workday}
"""
JSON_LIST = """[
  {"day": "2027-01-01", "is_workday": false, "name": "元旦"},
  {"day": "2027-02-06..2027-02-08", "kind": "holiday", "name": "春节"},
  {"day": "2027-02-20", "kind": "workday", "name": "春节调休"},
  {"day": "2027-05-08", "is_workday": true}
]"""
IMPORTED = {
    date(2027, 1, 1): (False, "元旦"),
    date(2027, 2, 6): (False, "春节"),
    date(2027, 2, 7): (False, "春节"),
    date(2027, 2, 8): (False, "春节"),
    date(2027, 2, 20): (True, "春节调休"),
    date(2027, 5, 8): (True, None),
}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(LINES, id="lines"),
        pytest.param(YAML_LIST, id="yaml"),
        pytest.param(JSON_LIST, id="json"),
    ],
)
def test_import_calendar_days_formats(session: Session, text: str) -> None:
    written = policies.import_calendar_days(session, text=text)
    assert [d.day for d in written] == sorted(IMPORTED)
    assert overrides(session) == IMPORTED


def test_import_calendar_days_is_idempotent_and_overwrites(session: Session) -> None:
    policies.set_calendar_day(session, day=date(2027, 1, 1), is_workday=True, name="wrong")
    policies.import_calendar_days(session, text=LINES)
    policies.import_calendar_days(session, text=LINES)
    assert overrides(session) == IMPORTED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "2027-01-01 holiday\n2027-13-01 holiday",
            "line 2: '2027-13-01' is not a date",
            id="bad-date",
        ),
        pytest.param(
            "# header\n\n2027-01-01 vacation 元旦",
            "line 3: unknown kind 'vacation'",
            id="unknown-kind",
        ),
        pytest.param("2027-01-01", "line 1: expected a day and a kind", id="missing-kind"),
        pytest.param(
            "2027-01-01 holiday\n2027-01-01 workday",
            "line 2: 2027-01-01 is already given on line 1",
            id="duplicate-day",
        ),
        pytest.param(
            "2027-01-01 holiday\n2027-02-10..2027-02-01 holiday",
            "line 2: range .* ends before it starts",
            id="reversed-range",
        ),
        pytest.param(
            "2027-01-01..2028-06-01 holiday", "line 1: range .* longer than a year", id="huge-range"
        ),
        pytest.param("2027-01-01 holiday " + "长" * 65, "line 1: .*longer than 64", id="long-name"),
        pytest.param(
            "- {day: 2027-01-01, kind: holiday}\n- {day: 2027-01-02}",
            "line 2: give exactly one of kind",
            id="yaml-missing-kind",
        ),
        pytest.param(
            "- {day: 2027-01-01, kind: holiday}\n- {day: 2027-01-02, kind: holiday, when: x}",
            r"line 2: unknown keys \['when'\]",
            id="yaml-unknown-key",
        ),
        pytest.param("- {kind: holiday}", "line 1: day is missing", id="yaml-missing-day"),
        pytest.param(
            "- {day: 2027-01-01, is_workday: maybe}",
            "line 1: is_workday must be true",
            id="yaml-non-bool",
        ),
        pytest.param(
            "- {day: 2027-01-01, kind: holiday}\n- just text",
            "line 2: expected a mapping",
            id="yaml-item-not-mapping",
        ),
        pytest.param(
            '[{"day": "2027-01-01", "kind": "holiday"},\n {"day": "01/02/2027", '
            '"kind": "holiday"}]',
            "line 2: '01/02/2027' is not a date",
            id="json-bad-date",
        ),
        pytest.param(
            "- {day: 2027-01-01, kind: holiday\n- {day: 2027-01-02}",
            "line 2: not valid",
            id="yaml-syntax",
        ),
        pytest.param(
            "- day: 2027-01-01 10:00:00\n  kind: holiday",
            "line 1: '2027-01-01 10:00:00' is not a date",
            id="yaml-datetime",
        ),
        pytest.param("day: 2027-01-01", "line 1: expected a list", id="yaml-mapping"),
        pytest.param("# nothing here\n", "no calendar days found", id="empty"),
    ],
)
def test_import_calendar_days_rejects_with_line_number(
    session: Session, text: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        policies.import_calendar_days(session, text=text)
    assert overrides(session) == {}


# ---------------------------------------------------------------------------- policies

VALID: dict[str, Any] = {
    "name": "roads-5wd",
    "description": "道路 5 个工作日",
    "category_prefix": "0102",
    "urgency": "normal",
    "sign_limit": 4,
    "sign_unit": "hours",
    "reply_limit": 5,
    "reply_unit": "workdays",
    "close_limit": 8,
    "close_unit": "workdays",
    "warn_ratio": 0.6,
    "chain": [{"kind": "warning"}, {"kind": "chase", "after_breach_hours": 0}],
}


def test_create_policy_stores_validated_values(session: Session) -> None:
    created = policies.create_policy(session, data=VALID)
    stored = policies.get_policy(session, policy_id=saved_id(created))
    assert stored.name == "roads-5wd"
    assert stored.reply_unit == ClockUnit.workdays
    assert stored.chain == [
        {"kind": "warning", "after_breach_hours": None},
        {"kind": "chase", "after_breach_hours": 0},
    ]
    assert sla.parse_chain(stored.chain) == sla.parse_chain(VALID["chain"])


def test_create_policy_accepts_the_schema_and_defaults_an_empty_chain(session: Session) -> None:
    created = policies.create_policy(session, data=SlaPolicyCreate(name="plain"))
    assert created.chain == []
    assert sla.parse_chain(created.chain) == list(sla.DEFAULT_CHAIN)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"name": "  "}, "name", id="blank-name"),
        pytest.param({"name": "x" * 65}, "name", id="long-name"),
        pytest.param({"sign_limit": 0}, "sign_limit", id="zero-limit"),
        pytest.param({"reply_limit": -1}, "reply_limit", id="negative-limit"),
        pytest.param({"close_limit": float("inf")}, "close_limit", id="infinite-limit"),
        pytest.param({"close_limit": 5000}, "close_limit", id="absurd-limit"),
        pytest.param({"warn_ratio": 1}, "warn_ratio", id="warn-ratio-one"),
        pytest.param({"warn_ratio": 0}, "warn_ratio", id="warn-ratio-zero"),
        pytest.param({"reply_unit": "days"}, "reply_unit", id="unknown-unit"),
        pytest.param({"urgency": "asap"}, "urgency", id="unknown-urgency"),
        pytest.param({"request_type": "rant"}, "request_type", id="unknown-request-type"),
        pytest.param({"category_prefix": "01a"}, "category_prefix", id="non-digit-prefix"),
        pytest.param({"chain": [{"kind": "chase"}]}, "escalation step 1", id="bad-chain"),
        pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    ],
)
def test_create_policy_rejects(session: Session, change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        policies.create_policy(session, data={**VALID, **change})
    assert policies.list_policies(session) == []


def test_create_policy_refuses_a_taken_name(session: Session) -> None:
    policies.create_policy(session, data=VALID)
    with pytest.raises(Conflict, match="roads-5wd"):
        policies.create_policy(session, data={**VALID, "category_prefix": "03"})


def test_update_policy_merges_and_revalidates(session: Session) -> None:
    created = policies.create_policy(session, data=VALID)
    updated = policies.update_policy(
        session, policy_id=saved_id(created), changes=SlaPolicyUpdate(reply_limit=3, urgency=None)
    )
    assert (updated.reply_limit, updated.urgency, updated.close_limit) == (3, None, 8)
    with pytest.raises(InvalidInput, match="warn_ratio"):
        policies.update_policy(session, policy_id=saved_id(created), changes={"warn_ratio": 2})
    assert policies.get_policy(session, policy_id=saved_id(created)).warn_ratio == 0.6


def test_update_policy_refuses_renaming_onto_a_taken_name(session: Session) -> None:
    policies.create_policy(session, data=VALID)
    other = policies.create_policy(session, data={**VALID, "name": "other"})
    with pytest.raises(Conflict, match="roads-5wd"):
        policies.update_policy(session, policy_id=saved_id(other), changes={"name": "roads-5wd"})


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"name": "fallback"}, id="rename"),
        pytest.param({"active": False}, id="deactivate"),
    ],
)
def test_general_policy_stays_the_fallback(session: Session, change: dict[str, Any]) -> None:
    general = policies.create_policy(session, data={"name": "general"})
    with pytest.raises(Conflict, match="fallback"):
        policies.update_policy(session, policy_id=saved_id(general), changes=change)


def test_deactivate_and_list(session: Session) -> None:
    kept = policies.create_policy(session, data=VALID)
    gone = policies.create_policy(session, data={**VALID, "name": "gone"})
    assert policies.deactivate_policy(session, policy_id=saved_id(gone)).active is False
    assert [p.name for p in policies.list_policies(session, active_only=True)] == [kept.name]
    assert [p.name for p in policies.list_policies(session)] == ["roads-5wd", "gone"]


def test_get_unknown_policy(session: Session) -> None:
    with pytest.raises(NotFound):
        policies.get_policy(session, policy_id=999_999)


REQUIRED_NAMES = {
    "general",
    "emergency-2h",
    "utilities-24h",
    "complex-15wd",
    "consultation-3wd",
    "urgent-24h",
}


def test_ensure_default_policies_is_idempotent(session: Session) -> None:
    first = policies.ensure_default_policies(session)
    assert REQUIRED_NAMES <= {p.name for p in first}
    second = policies.ensure_default_policies(session)
    assert [(p.id, p.name) for p in second] == [(p.id, p.name) for p in first]
    assert len(session.exec(select(SlaPolicy)).all()) == len(first)


def test_ensure_default_policies_resets_edited_defaults(session: Session) -> None:
    general = next(p for p in policies.ensure_default_policies(session) if p.name == "general")
    policies.update_policy(session, policy_id=saved_id(general), changes={"reply_limit": 99})
    policies.ensure_default_policies(session)
    assert policies.get_policy(session, policy_id=saved_id(general)).reply_limit == 7


def test_defaults_file_names_every_policy_once() -> None:
    names = [entry["name"] for entry in yaml.safe_load(DEFAULT_POLICIES_FILE.read_text())]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("request_type", "urgency", "category_code", "name", "expected", "reply"),
    [
        pytest.param(
            "help", "very_urgent", "0102", None, "emergency-2h", (2, "hours"), id="very-urgent"
        ),
        pytest.param("complaint", "urgent", None, None, "urgent-24h", (24, "hours"), id="urgent"),
        pytest.param(
            "consultation",
            "normal",
            None,
            None,
            "consultation-3wd",
            (3, "workdays"),
            id="consultation",
        ),
        pytest.param(
            "complaint", "normal", "0102", None, "general", (7, "workdays"), id="fallback-general"
        ),
        pytest.param(
            "help",
            "normal",
            None,
            "utilities-24h",
            "utilities-24h",
            (24, "hours"),
            id="named-utilities",
        ),
        pytest.param(
            "complaint",
            "normal",
            None,
            "complex-15wd",
            "complex-15wd",
            (15, "workdays"),
            id="named-complex",
        ),
    ],
)
def test_policy_for_with_defaults(
    session: Session,
    request_type: str,
    urgency: str,
    category_code: str | None,
    name: str | None,
    expected: str,
    reply: tuple[float, str],
) -> None:
    policies.ensure_default_policies(session)
    chosen = policies.policy_for(
        session, request_type=request_type, urgency=urgency, category_code=category_code, name=name
    )
    assert chosen.name == expected
    assert sla.clock_limit(chosen, Clock.reply) == reply


def test_policy_for_refuses_an_inactive_name(session: Session) -> None:
    policy = next(p for p in policies.ensure_default_policies(session) if p.name == "complex-15wd")
    policies.deactivate_policy(session, policy_id=saved_id(policy))
    with pytest.raises(InvalidInput, match="complex-15wd"):
        policies.policy_for(
            session, request_type="help", urgency="normal", category_code=None, name="complex-15wd"
        )


def test_emergency_default_escalates_within_hours(session: Session) -> None:
    policies.ensure_default_policies(session)
    emergency = policies.policy_for(
        session, request_type="help", urgency="very_urgent", category_code=None
    )
    calendar = policies.load_calendar(session)
    start = bj(2026, 10, 1, 8)
    schedule = sla.escalation_times(
        start=start,
        due=sla.due_at(start, emergency, Clock.reply, calendar),
        unit=emergency.reply_unit,
        warn_ratio=emergency.warn_ratio,
        chain=sla.parse_chain(emergency.chain),
        calendar=calendar,
    )
    assert [(s.kind.value, s.at) for s in schedule] == [
        ("warning", bj(2026, 10, 1, 9)),
        ("chase", bj(2026, 10, 1, 10)),
        ("supervision", bj(2026, 10, 1, 12)),
        ("leadership", bj(2026, 10, 1, 16)),
    ]


def test_calendar_day_rows_round_trip(session: Session) -> None:
    policies.import_calendar_days(session, text="2027-10-01..2027-10-07 holiday 国庆节")
    rows = session.exec(select(CalendarDay)).all()
    assert len(rows) == 7 and all(not r.is_workday for r in rows)
