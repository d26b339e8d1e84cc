"""SLA policies and the working-day calendar overrides, as stored data.

Functions take an explicit session and never commit: the caller owns the unit of work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session, col, select

from core import yaml_fast
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference, sla
from dispatch.calendar import DEFAULT_TZ, WorkCalendar
from dispatch.models import CalendarDay, ClockUnit, SlaPolicy
from tickets.models import RequestType, Urgency

DEFAULT_POLICIES_FILE = Path(__file__).parent / "data" / "policies.yaml"

# Generous enough for any real limit; bounds the day-by-day walk of a workday deadline.
MAX_LIMIT = 1000

_Schema = TypeVar("_Schema", bound=BaseModel)


# ---------------------------------------------------------------------------- calendar


def load_calendar(session: Session, *, tz: ZoneInfo = DEFAULT_TZ) -> WorkCalendar:
    days = session.exec(select(CalendarDay)).all()
    return WorkCalendar(
        {d.day: d.is_workday for d in days}, tz, names={d.day: d.name for d in days if d.name}
    )


def set_calendar_day(
    session: Session, *, day: date, is_workday: bool, name: str | None = None
) -> CalendarDay:
    name = _day_name(name)
    row = session.get(CalendarDay, day)
    if row is None:
        row = CalendarDay(day=day, is_workday=is_workday, name=name)
    else:
        row.is_workday, row.name = is_workday, name
    session.add(row)
    session.flush()
    reference.bump(session)
    return row


def delete_calendar_day(session: Session, *, day: date) -> None:
    row = session.get(CalendarDay, day)
    if row is None:
        raise NotFound(f"no calendar override for {day.isoformat()}", day=day.isoformat())
    session.delete(row)
    session.flush()
    reference.bump(session)


def list_calendar_days(session: Session, *, year: int | None = None) -> list[CalendarDay]:
    query = select(CalendarDay).order_by(col(CalendarDay.day))
    if year is not None:
        query = query.where(
            col(CalendarDay.day) >= date(year, 1, 1), col(CalendarDay.day) <= date(year, 12, 31)
        )
    return list(session.exec(query).all())


_KINDS = {"holiday": False, "休": False, "workday": True, "班": True}
_LINE = re.compile(r"^(?P<days>\S+)\s+(?P<kind>\S+)(?:\s+(?P<name>.*\S))?\s*$")
_MAX_RANGE_DAYS = 366
IMPORT_FORMATS = (
    'one day or range per line: "2027-01-01 holiday 元旦", "2027-02-07 workday 春节调休", '
    '"2027-02-10..2027-02-16 holiday 春节" (holiday/休, workday/班; # starts a comment); '
    "or a YAML/JSON list of {day, kind | is_workday, name}"
)


def import_calendar_days(session: Session, *, text: str) -> list[CalendarDay]:
    """Upsert the overrides in `text`, all or nothing; see IMPORT_FORMATS."""
    entries = _parse_lines(text) if _looks_like_lines(text) else _parse_yaml(text)
    if not entries:
        raise InvalidInput(f"no calendar days found; expected {IMPORT_FORMATS}")
    seen: dict[date, int] = {}
    for line, day, _, _ in entries:
        if day in seen:
            raise InvalidInput(
                f"line {line}: {day.isoformat()} is already given on line {seen[day]}", line=line
            )
        seen[day] = line
    return [
        set_calendar_day(session, day=day, is_workday=is_workday, name=name)
        for _, day, is_workday, name in sorted(entries, key=lambda e: e[1])
    ]


_Entry = tuple[int, date, bool, str | None]  # source line, day, is_workday, name


def _looks_like_lines(text: str) -> bool:
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return stripped[0].isdigit()
    return True


def _parse_lines(text: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.split("#", 1)[0].strip()
        if not stripped:
            continue
        match = _LINE.match(stripped)
        if match is None:
            raise InvalidInput(
                f"line {number}: expected a day and a kind, got {stripped!r}; "
                f"format: {IMPORT_FORMATS}",
                line=number,
            )
        is_workday = _kind(match["kind"], number)
        name = _entry_name(match["name"], number)
        entries += [(number, day, is_workday, name) for day in _days(match["days"], number)]
    return entries


def _parse_yaml(text: str) -> list[_Entry]:
    try:
        document = yaml_fast.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InvalidInput(
            f"{where}not valid YAML/JSON ({getattr(exc, 'problem', exc)}); "
            f"expected {IMPORT_FORMATS}",
            line=mark.line + 1 if mark is not None else None,
        ) from exc
    if document is None:
        return []
    if not isinstance(document, list):
        raise InvalidInput(
            f"line 1: expected a list of calendar days; format: {IMPORT_FORMATS}", line=1
        )
    # The same text as a list composes to a sequence node; its items carry the line numbers.
    assert isinstance(node, yaml.SequenceNode)
    entries: list[_Entry] = []
    for item, item_node in zip(document, node.value, strict=True):
        entries += _yaml_entry(item, item_node.start_mark.line + 1)
    return entries


def _yaml_entry(item: Any, line: int) -> list[_Entry]:
    def fail(reason: str) -> NoReturn:
        raise InvalidInput(f"line {line}: {reason}", line=line)

    if not isinstance(item, dict):
        fail(f"expected a mapping with day and kind, got {item!r}")
    unknown = set(item) - {"day", "kind", "is_workday", "name"}
    if unknown:
        fail(f"unknown keys {sorted(map(str, unknown))}; use day, kind or is_workday, name")
    if ("kind" in item) == ("is_workday" in item):
        fail("give exactly one of kind (holiday/workday) or is_workday (true/false)")
    if "day" not in item:
        fail("day is missing")
    if "kind" in item:
        is_workday = _kind(str(item["kind"]), line)
    elif isinstance(item["is_workday"], bool):
        is_workday = item["is_workday"]
    else:
        fail(f"is_workday must be true or false, got {item['is_workday']!r}")
    raw_name = item.get("name")
    name = _entry_name(None if raw_name is None else str(raw_name), line)
    return [(line, day, is_workday, name) for day in _days(item["day"], line)]


def _kind(raw: str, line: int) -> bool:
    try:
        return _KINDS[raw.lower()]
    except KeyError:
        raise InvalidInput(
            f"line {line}: unknown kind {raw!r}; use holiday or workday", line=line
        ) from None


def _days(raw: Any, line: int) -> list[date]:
    # YAML reads "2027-01-01 10:00" as a datetime, which is a date too; it is no day.
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return [raw]
    first_raw, sep, last_raw = str(raw).partition("..")
    first = _date(first_raw, line)
    last = _date(last_raw, line) if sep else first
    if last < first:
        raise InvalidInput(f"line {line}: range {raw} ends before it starts", line=line)
    if (last - first).days >= _MAX_RANGE_DAYS:
        raise InvalidInput(f"line {line}: range {raw} is longer than a year", line=line)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _date(raw: str, line: int) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            f"line {line}: {raw.strip()!r} is not a date (YYYY-MM-DD)", line=line
        ) from None


def _entry_name(raw: str | None, line: int) -> str | None:
    try:
        return _day_name(raw)
    except InvalidInput as exc:
        raise InvalidInput(f"line {line}: {exc.message}", line=line) from None


def _day_name(name: str | None) -> str | None:
    name = (name or "").strip() or None
    if name is not None and len(name) > 64:
        raise InvalidInput(f"calendar day name is longer than 64 characters: {name!r}")
    return name


# ---------------------------------------------------------------------------- policies


class SlaPolicyCreate(BaseModel):
    """A policy as written by an administrator or the defaults file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    category_prefix: str | None = Field(default=None, pattern=r"^[0-9]{2,12}$")
    sign_limit: float = Field(default=24, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    sign_unit: ClockUnit = ClockUnit.hours
    reply_limit: float = Field(default=7, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    reply_unit: ClockUnit = ClockUnit.workdays
    close_limit: float = Field(default=15, gt=0, le=MAX_LIMIT, allow_inf_nan=False)
    close_unit: ClockUnit = ClockUnit.workdays
    warn_ratio: float = Field(default=0.75, gt=0, lt=1)
    chain: list[dict[str, Any]] = Field(default_factory=list)
    active: bool = True

    @field_validator("chain")
    @classmethod
    def _valid_chain(cls, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not raw:
            return []  # empty stores "the default chain", so it follows DEFAULT_CHAIN
        # A ValueError makes it an ordinary validation error on the "chain" field, so the
        # API reports it like every other field instead of failing mid-parse.
        try:
            steps = sla.parse_chain(raw)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc
        return [step.model_dump(mode="json") for step in steps]


class SlaPolicyUpdate(BaseModel):
    """The fields to change; the merged policy is validated as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    category_prefix: str | None = None
    sign_limit: float | None = None
    sign_unit: ClockUnit | None = None
    reply_limit: float | None = None
    reply_unit: ClockUnit | None = None
    close_limit: float | None = None
    close_unit: ClockUnit | None = None
    warn_ratio: float | None = None
    chain: list[dict[str, Any]] | None = None
    active: bool | None = None


def create_policy(session: Session, *, data: SlaPolicyCreate | Mapping[str, Any]) -> SlaPolicy:
    valid = _validated(SlaPolicyCreate, data)
    _ensure_name_free(session, valid.name)
    policy = SlaPolicy.model_validate(valid.model_dump())
    session.add(policy)
    session.flush()
    reference.bump(session)
    return policy


def update_policy(
    session: Session, *, policy_id: int, changes: SlaPolicyUpdate | Mapping[str, Any]
) -> SlaPolicy:
    policy = get_policy(session, policy_id=policy_id)
    delta = _validated(SlaPolicyUpdate, changes).model_dump(exclude_unset=True)
    # Rows read back from the database hold plain strings where the model says enums, so
    # copying attributes avoids pydantic's serializer complaining about them.
    current = {name: getattr(policy, name) for name in SlaPolicyCreate.model_fields}
    valid = _validated(SlaPolicyCreate, {**current, **delta})
    if policy.name == sla.GENERAL_POLICY:
        if valid.name != sla.GENERAL_POLICY:
            raise Conflict(f"{sla.GENERAL_POLICY!r} is the fallback policy and keeps its name")
        if not valid.active:
            raise Conflict(f"{sla.GENERAL_POLICY!r} is the fallback policy and stays active")
    if valid.name != policy.name:
        _ensure_name_free(session, valid.name)
    _apply(policy, valid)
    session.add(policy)
    session.flush()
    reference.bump(session)
    return policy


def get_policy(session: Session, *, policy_id: int) -> SlaPolicy:
    policy = session.get(SlaPolicy, policy_id)
    if policy is None:
        raise NotFound(f"no SLA policy with id {policy_id}", policy_id=policy_id)
    return policy


def list_policies(session: Session, *, active_only: bool = False) -> list[SlaPolicy]:
    query = select(SlaPolicy).order_by(col(SlaPolicy.id))
    if active_only:
        query = query.where(col(SlaPolicy.active).is_(True))
    return list(session.exec(query).all())


def deactivate_policy(session: Session, *, policy_id: int) -> SlaPolicy:
    return update_policy(session, policy_id=policy_id, changes={"active": False})


def ensure_default_policies(
    session: Session, *, path: Path = DEFAULT_POLICIES_FILE
) -> list[SlaPolicy]:
    """Upsert the policies of the defaults file by name: missing ones are created and
    existing ones are reset to the file's values. Running it twice changes nothing."""
    raw = yaml_fast.safe_load(path.read_text(encoding="utf-8"))
    result = []
    for number, entry in enumerate(raw, start=1):
        try:
            valid = _validated(SlaPolicyCreate, entry)
        except InvalidInput as exc:
            raise InvalidInput(f"{path.name} entry {number}: {exc.message}") from exc
        policy = session.exec(select(SlaPolicy).where(SlaPolicy.name == valid.name)).first()
        if policy is None:
            policy = SlaPolicy.model_validate(valid.model_dump())
        else:
            _apply(policy, valid)
        session.add(policy)
        result.append(policy)
    session.flush()
    reference.bump(session)
    return result


def policy_for(
    session: Session,
    *,
    request_type: str | None,
    urgency: str | None,
    category_code: str | None,
    name: str | None = None,
) -> SlaPolicy:
    """The policy for a ticket (see sla.select_policy), from the per-process reference
    snapshot: a detached copy, to read and never to change."""
    active = [p for p in reference.snapshot(session).policies if p.active]
    return sla.select_policy(
        active, request_type=request_type, urgency=urgency, category_code=category_code, name=name
    )


def _validated(model: type[_Schema], data: _Schema | Mapping[str, Any]) -> _Schema:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid SLA policy: {problems}") from exc


def _ensure_name_free(session: Session, name: str) -> None:
    if session.exec(select(SlaPolicy.id).where(SlaPolicy.name == name)).first() is not None:
        raise Conflict(f"an SLA policy named {name!r} already exists", name=name)


def _apply(policy: SlaPolicy, valid: SlaPolicyCreate) -> None:
    for key, value in valid.model_dump().items():
        setattr(policy, key, value)
