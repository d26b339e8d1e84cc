"""SLA arithmetic: deadlines, the escalation schedule and policy selection. Pure functions —
no database, no clock. Every instant in and out is timezone-aware; results are UTC.

Working time: a clock in `ClockUnit.hours` runs 24/7. A clock in `ClockUnit.workdays` runs
only through whole local working days of the calendar and stands still on holidays and
weekends that are not make-up days; one workday is one working local day, so 0.5 workday
is twelve hours of working-day time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, NamedTuple, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from core.db import saved_id
from core.errors import InvalidInput, NotFound
from dispatch.calendar import WorkCalendar
from dispatch.models import Clock, ClockUnit, EscalationKind, SlaPolicy

GENERAL_POLICY = "general"

_DAY_US = 86_400_000_000
_ONE_DAY = timedelta(days=1)
# No real calendar goes a year without a working day; three years of none means the
# overrides are broken, and walking on would never end.
_MAX_IDLE_DAYS = 3 * 366


class NoWorkingDays(InvalidInput):
    """The calendar has no working day for years on end, so a workday clock never runs."""


def add_time(start: datetime, amount: float, unit: ClockUnit, calendar: WorkCalendar) -> datetime:
    """The earliest instant at which `amount` of `unit` time has run since `start` (the
    latest before it for a negative amount)."""
    start = _utc(start, "start")
    if not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount}")
    if ClockUnit(unit) is ClockUnit.hours:
        return start + timedelta(hours=amount)
    budget = round(amount * _DAY_US)
    if budget == 0:
        return start
    return _walk_workdays(start, budget, calendar)


def elapsed(start: datetime, end: datetime, unit: ClockUnit, calendar: WorkCalendar) -> float:
    """How much `unit` time runs from `start` to `end`; negative when `end` is earlier."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end < start:
        return -elapsed(end, start, unit, calendar)
    if ClockUnit(unit) is ClockUnit.hours:
        return (end - start) / timedelta(hours=1)
    return _working_us(start, end, calendar) / _DAY_US


def clock_limit(policy: SlaPolicy, clock: Clock) -> tuple[float, ClockUnit]:
    name = Clock(clock).value
    return getattr(policy, f"{name}_limit"), ClockUnit(getattr(policy, f"{name}_unit"))


def due_at(start: datetime, policy: SlaPolicy, clock: Clock, calendar: WorkCalendar) -> datetime:
    amount, unit = clock_limit(policy, clock)
    return add_time(start, amount, unit, calendar)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _midnight(d: date, calendar: WorkCalendar) -> datetime:
    return _local_midnight_in_utc(d, calendar.tz)


@functools.lru_cache(maxsize=8192)
def _local_midnight_in_utc(d: date, tz: tzinfo) -> datetime:
    # Every deadline walks day by day from its start; the same few weeks of days recur.
    return datetime.combine(d, time(), tzinfo=tz).astimezone(UTC)


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# A local day is 24 h in China, but a calendar in a zone with daylight saving has 23 h and
# 25 h days; each still counts as one workday, so wall time is scaled to working time.
def _to_work(wall_us: int, day_us: int) -> int:
    return wall_us if day_us == _DAY_US else wall_us * _DAY_US // day_us


def _to_wall(work_us: int, day_us: int) -> int:
    return work_us if day_us == _DAY_US else work_us * day_us // _DAY_US


def _walk_workdays(start: datetime, budget: int, calendar: WorkCalendar) -> datetime:
    forward = budget > 0
    step = _ONE_DAY if forward else -_ONE_DAY
    remaining = abs(budget)
    day = start.astimezone(calendar.tz).date()
    pos = start
    idle = 0
    while True:
        lo, hi = _midnight(day, calendar), _midnight(day + _ONE_DAY, calendar)
        edge = hi if forward else lo
        if calendar.is_workday(day):
            idle = 0
            day_us = _us(hi - lo)
            available = _to_work(abs(_us(edge - pos)), day_us)
            if remaining <= available:
                wall = timedelta(microseconds=_to_wall(remaining, day_us))
                return pos + wall if forward else pos - wall
            remaining -= available
        else:
            idle += 1
            if idle > _MAX_IDLE_DAYS:
                local = start.astimezone(calendar.tz).date()
                raise NoWorkingDays(
                    f"the working-day calendar has no working day for {_MAX_IDLE_DAYS} days "
                    f"{'after' if forward else 'before'} {local}; check the calendar overrides",
                    start=start.isoformat(),
                )
        pos = edge
        day += step


def _working_us(start: datetime, end: datetime, calendar: WorkCalendar) -> int:
    total = 0
    day = start.astimezone(calendar.tz).date()
    pos = start
    while True:
        lo, hi = _midnight(day, calendar), _midnight(day + _ONE_DAY, calendar)
        stop = min(hi, end)
        if calendar.is_workday(day):
            total += _to_work(_us(stop - pos), _us(hi - lo))
        if stop == end:
            return total
        pos = hi
        day += _ONE_DAY


class EscalationStep(BaseModel):
    """One step of an escalation chain. The warning fires before the deadline, at the
    policy's warn_ratio of the span; the others fire a number of wall-clock hours after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EscalationKind
    after_breach_hours: float | None = None

    @field_validator("after_breach_hours")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("after_breach_hours must be a finite number")
        return value


DEFAULT_CHAIN: tuple[EscalationStep, ...] = (
    EscalationStep(kind=EscalationKind.warning),
    EscalationStep(kind=EscalationKind.chase, after_breach_hours=0),
    EscalationStep(kind=EscalationKind.supervision, after_breach_hours=24),
    EscalationStep(kind=EscalationKind.leadership, after_breach_hours=72),
)


def parse_chain(raw: Sequence[dict[str, Any]] | None) -> list[EscalationStep]:
    """Validate a stored chain (a list of {"kind", "after_breach_hours"}); empty means the
    default chain."""
    if not raw:
        return list(DEFAULT_CHAIN)
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidInput("an escalation chain must be a list of steps", chain=raw)
    steps: list[EscalationStep] = []
    for position, item in enumerate(raw, start=1):
        try:
            step = EscalationStep.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'step'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"escalation step {position}: {problems}", chain=raw) from exc
        _check_step(step, position, steps)
        steps.append(step)
    return steps


def _check_step(step: EscalationStep, position: int, earlier: list[EscalationStep]) -> None:
    def fail(reason: str) -> NoReturn:
        raise InvalidInput(f"escalation step {position} ({step.kind.value}): {reason}")

    if step.kind is EscalationKind.warning:
        if step.after_breach_hours is not None:
            fail(
                "a warning fires before the deadline, at the policy's warn_ratio; "
                "leave after_breach_hours empty"
            )
        if earlier:
            fail("the warning must be the first step")
        return
    if step.after_breach_hours is None:
        fail("after_breach_hours is required")
    if step.after_breach_hours < 0:
        fail("after_breach_hours must be 0 or more")
    previous = earlier[-1].after_breach_hours if earlier else None
    if previous is not None and step.after_breach_hours < previous:
        fail(
            f"after_breach_hours {step.after_breach_hours:g} is less than the previous "
            f"step's {previous:g}; steps must not go back in time"
        )


class ScheduledStep(NamedTuple):
    level: int  # 1-based position in the chain
    kind: EscalationKind
    at: datetime


def escalation_times(
    *,
    start: datetime,
    due: datetime,
    unit: ClockUnit,
    warn_ratio: float,
    chain: Sequence[EscalationStep],
    calendar: WorkCalendar,
) -> list[ScheduledStep]:
    """When each step of `chain` falls due for a clock that started at `start` and is due at
    `due`. The warning sits at `warn_ratio` of the working time between the two, so an
    extension that moves `due` moves the warning too."""
    if not 0 < warn_ratio < 1:
        raise ValueError(f"warn_ratio must lie strictly between 0 and 1, got {warn_ratio}")
    start, due = _utc(start, "start"), _utc(due, "due")
    if due < start:
        raise ValueError(f"due {due.isoformat()} is before start {start.isoformat()}")
    schedule = []
    for level, step in enumerate(chain, start=1):
        if step.after_breach_hours is None:
            span = elapsed(start, due, unit, calendar)
            at = add_time(start, warn_ratio * span, unit, calendar)
        else:
            at = due + timedelta(hours=step.after_breach_hours)
        schedule.append(ScheduledStep(level, step.kind, at))
    return schedule


def policy_matches(
    policy: SlaPolicy, *, request_type: str | None, urgency: str | None, category_code: str | None
) -> bool:
    """Whether the policy's selectors (None = any) all fit; `active` is not considered.

    A policy without any selector never matches: it is used only when named (by a dispatch
    rule or a dispatcher), and "general" alone is the catch-all — otherwise every such
    policy would tie with "general" and the oldest would silently win.
    """
    if _specificity(policy) == (0, False, False):
        return False
    if policy.request_type is not None and policy.request_type != request_type:
        return False
    if policy.urgency is not None and policy.urgency != urgency:
        return False
    if policy.category_prefix is not None:
        return category_code is not None and category_code.startswith(policy.category_prefix)
    return True


def _specificity(policy: SlaPolicy) -> tuple[int, bool, bool]:
    return (
        len(policy.category_prefix or ""),
        policy.urgency is not None,
        policy.request_type is not None,
    )


def select_policy(
    policies: Iterable[SlaPolicy],
    *,
    request_type: str | None,
    urgency: str | None,
    category_code: str | None,
    name: str | None = None,
) -> SlaPolicy:
    """The named policy, else the most specific active match (a longer category prefix beats
    an urgency, which beats a request type; ties go to the lowest id), else "general"."""
    active = [p for p in policies if p.active]
    if name is not None:
        for policy in active:
            if policy.name == name:
                return policy
        raise InvalidInput(f"no active SLA policy is named {name!r}", name=name)
    matches = [
        p
        for p in active
        if policy_matches(
            p, request_type=request_type, urgency=urgency, category_code=category_code
        )
    ]
    if matches:
        return max(matches, key=lambda p: (_specificity(p), -saved_id(p)))
    for policy in active:
        if policy.name == GENERAL_POLICY:
            return policy
    raise NotFound(f"no SLA policy matches and there is no active {GENERAL_POLICY!r} policy")
