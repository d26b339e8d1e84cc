"""The contact-centre figures (issue 17): what the queue of operators did with the calls,
per interval of the centre's clock (15 minutes, hour, day) and per operator (their time is
hotline.calls.agent_time's; the wallboard's figures now are hotline.calls.acd_board's).

A 12345 centre is judged by the share of calls a person answers within 15 seconds, so every
figure below says exactly which calls it counts and how abandoned calls enter it (the
national practice: service level = answered within 15 s / (offered to agents − short
abandons)). The call columns are ``telephony.models.CallRecord``'s queue columns:

    wait         queue_left_at − queued_at (the time in the operators' queue: the greeting
                 before it is by design and is not counted; ``wait_s`` keeps its meaning,
                 the SIP arrival to the edge's answer)
    talk         ended_at − agent_answered_at − hold_s (the agent's time with the caller)
    handle time  talk + hold + wrap-up

A call belongs to the interval its ``arrived_at`` falls in, whole (a call arriving at 09:14:50
and answered at 09:15:05 is the 09:00–09:15 quarter's); occupancy, made of time rather than
calls, is cut at the interval's boundaries exactly from the operators' stored state changes
(``accounts.models.AgentStateChange``). Counting and summing is done by the database on the
calls' ``arrived_at`` index, grouped by the centre's interval itself (local time is UTC plus
one offset over the range) or, across a daylight-saving change, by UTC quarter-hours folded
here (every time zone's offset is a whole number of quarter-hours).

Measured on 100,000 generated calls over 30 days, 40 operators, 2 cores shared with other
work (medians of 5, two runs): one day in quarter-hours 70-110 ms on PostgreSQL, 170-190 ms
on SQLite; 30 days in days 0.5-1.1 s / 1.4-2.3 s; the wallboard 34-38 ms / 94-155 ms.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, and_, case, cast, func, literal_column, select
from sqlmodel import Session

from accounts.models import AgentState, NotReadyReason
from core.db import table_of
from core.errors import InvalidInput
from hotline.calls.agent_time import AgentTime, agent_spans
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

SLOT_S = 900  # across a daylight-saving change, the database groups by UTC quarter-hours
MAX_RANGE = timedelta(days=92)  # a quarter of a year in one answer
MAX_BUCKETS = 3000  # 31 days of quarter-hours
# Figures are asked of calls that exist: far from the ends of datetime's range (a day past
# year 9999 does not exist) and after 1970 (the database's seconds-since-1970 arithmetic).
EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
ANSWER_30_S = 30.0


class Interval(StrEnum):
    quarter = "15min"
    hour = "hour"
    day = "day"


WIDTH_S = {Interval.quarter: 900, Interval.hour: 3600, Interval.day: 86400}


# One line per figure, shown in the API and the README: how each call, abandons included,
# enters it.
DEFINITIONS: dict[str, str] = {
    "offered": "inbound calls that arrived in the interval, whatever became of them",
    "queued": "offered calls that joined the operators' queue (queued_at set); calls the "
    "robot takes by design or refused calls never join it",
    "answered": "queued calls an operator answered (queue_outcome agent), however they ended "
    "afterwards: a call whose phone went silent (disposition media_timeout) included",
    "answered_within_target": "answered calls whose wait (queue_left_at − queued_at) was at "
    "most answer_target_s (15 s)",
    "answered_within_30s": "answered calls whose wait was at most 30 s",
    "service_level": "answered_within_target / (queued − short_abandoned): short abandons "
    "are left out, longer abandons, overflows and callbacks count as not answered in time",
    "service_level_30s": "answered_within_30s / (queued − short_abandoned), as service_level",
    "answer_rate": "answered / (queued − short_abandoned)",
    "asa_s": "average speed of answer: mean wait of answered calls (abandons not included)",
    "p90_wait_s": "the smallest whole second within which 90 % of answered calls were "
    "answered (abandons not included); the centre's only, null per operator",
    "abandoned": "queued calls whose caller hung up while waiting, short ones included",
    "short_abandoned": "abandoned calls that waited at most short_abandon_s: kept, counted "
    "apart, and left out of service_level, answer_rate and abandon_rate",
    "abandon_rate": "(abandoned − short_abandoned) / (queued − short_abandoned)",
    "abandon_wait_avg_s": "mean wait of abandoned calls, short ones included",
    "overflowed": "queued calls the overflow rules gave to the voice-intake robot, by reason",
    "callback_requested": "queued calls whose caller pressed the key for a callback",
    "lost": "queued calls the platform lost while they waited (their SIP edge died; closed "
    "by crash recovery): not the caller's abandon, so not in abandoned or abandon_rate; "
    "they count as not answered in service_level and answer_rate",
    "robot": "calls the voice-intake robot took by design (seats off, a robot line)",
    "transferred": "answered calls the operator transferred at least once",
    "handled": "answered calls that have ended (their talk, hold, wrap-up are known)",
    "talk_avg_s": "mean talk (ended_at − agent_answered_at − hold) of handled calls",
    "hold_avg_s": "mean hold of handled calls",
    "wrap_up_avg_s": "mean wrap-up (after-call work) of handled calls",
    "handle_avg_s": "mean handle time (talk + hold + wrap-up) of handled calls",
    "occupancy": "per operator: (on a call + wrap-up + not ready for after-call work) / "
    "(signed in − other not-ready time), from the stored state changes cut at the "
    "interval's boundaries; calls and abandons do not enter it",
}


# The stored counts and sums of Figures, added up when intervals are folded together.
SUMMED = (
    "offered",
    "queued",
    "answered",
    "answered_within_target",
    "answered_within_30s",
    "abandoned",
    "short_abandoned",
    "overflowed",
    "callback_requested",
    "robot",
    "refused",
    "lost",
    "transferred",
    "handled",
    "answer_wait_s",
    "abandon_wait_s",
    "talk_s",
    "hold_s",
    "wrap_up_s",
)
# What the API shows (web.api.acd.CallFigures), derived figures included.
SHOWN = (
    *(name for name in SUMMED if name not in ("answer_wait_s", "abandon_wait_s")),
    "service_level",
    "service_level_30s",
    "answer_rate",
    "asa_s",
    "p90_wait_s",
    "abandon_rate",
    "abandon_wait_avg_s",
    "handle_s",
    "talk_avg_s",
    "hold_avg_s",
    "wrap_up_avg_s",
    "handle_avg_s",
)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


@dataclass
class Figures:
    """The calls of one interval (or of one operator in it), summed."""

    offered: int = 0
    queued: int = 0
    answered: int = 0
    answered_within_target: int = 0
    answered_within_30s: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    overflowed: int = 0
    overflowed_by_reason: dict[str, int] = field(default_factory=dict)
    callback_requested: int = 0
    robot: int = 0
    refused: int = 0
    lost: int = 0
    transferred: int = 0
    handled: int = 0
    answer_wait_s: float = 0.0  # summed over answered calls
    abandon_wait_s: float = 0.0  # summed over abandoned calls
    talk_s: float = 0.0  # summed over handled calls, as hold_s and wrap_up_s
    hold_s: float = 0.0
    wrap_up_s: float = 0.0
    # Answered calls by their wait in whole seconds, rounded up: the p90, mergeable.
    wait_seconds: Counter[int] = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        for name in SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.overflowed_by_reason.items():
            self.overflowed_by_reason[reason] = self.overflowed_by_reason.get(reason, 0) + n
        self.wait_seconds.update(other.wait_seconds)

    @property
    def counted(self) -> int:
        """The denominator of the shares: queued calls less the short abandons."""
        return self.queued - self.short_abandoned

    @property
    def service_level(self) -> float | None:
        return _ratio(self.answered_within_target, self.counted)

    @property
    def service_level_30s(self) -> float | None:
        return _ratio(self.answered_within_30s, self.counted)

    @property
    def answer_rate(self) -> float | None:
        return _ratio(self.answered, self.counted)

    @property
    def abandon_rate(self) -> float | None:
        return _ratio(self.abandoned - self.short_abandoned, self.counted)

    @property
    def asa_s(self) -> float | None:
        return _mean(self.answer_wait_s, self.answered)

    @property
    def p90_wait_s(self) -> int | None:
        total = sum(self.wait_seconds.values())
        if not total:
            return None
        needed, seen = math.ceil(0.9 * total), 0
        for second in sorted(self.wait_seconds):
            seen += self.wait_seconds[second]
            if seen >= needed:
                return second
        return max(self.wait_seconds)  # not reached: seen ends at total

    @property
    def abandon_wait_avg_s(self) -> float | None:
        return _mean(self.abandon_wait_s, self.abandoned)

    @property
    def talk_avg_s(self) -> float | None:
        return _mean(self.talk_s, self.handled)

    @property
    def hold_avg_s(self) -> float | None:
        return _mean(self.hold_s, self.handled)

    @property
    def wrap_up_avg_s(self) -> float | None:
        return _mean(self.wrap_up_s, self.handled)

    @property
    def handle_s(self) -> float:
        return self.talk_s + self.hold_s + self.wrap_up_s

    @property
    def handle_avg_s(self) -> float | None:
        return _mean(self.handle_s, self.handled)

    def as_dict(self) -> dict[str, Any]:
        """Every figure, stored and derived, as the API answers it."""
        shown = {name: getattr(self, name) for name in SHOWN}
        return shown | {"overflowed_by_reason": dict(sorted(self.overflowed_by_reason.items()))}


@dataclass
class AgentFigures:
    """One operator's calls (those they answered) and time."""

    calls: Figures = field(default_factory=Figures)
    time: AgentTime = field(default_factory=AgentTime)

    def add(self, other: AgentFigures) -> None:
        self.calls.add(other.calls)
        self.time.add(other.time)


@dataclass
class Bucket:
    start: datetime  # UTC, clipped to the range asked for
    end: datetime
    figures: Figures = field(default_factory=Figures)
    agents: dict[int, AgentFigures] = field(default_factory=dict)

    def agent(self, user_id: int) -> AgentFigures:
        return self.agents.setdefault(user_id, AgentFigures())


@dataclass
class Report:
    start: datetime
    end: datetime
    interval: Interval
    buckets: list[Bucket]
    total: Figures
    agents: dict[int, AgentFigures]  # over the whole range


# ---------------------------------------------------------------- intervals


def _floor_local(at: datetime, interval: Interval, tz: ZoneInfo) -> datetime:
    local = at.astimezone(tz)
    if interval is Interval.day:
        floored = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif interval is Interval.hour:
        floored = local.replace(minute=0, second=0, microsecond=0)
    else:
        floored = local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)
    return floored


def _next_local(start: datetime, interval: Interval, tz: ZoneInfo) -> datetime:
    """The next boundary on the centre's wall clock (a day is 23 or 25 hours across a
    daylight-saving change, where the zone has one)."""
    if interval is Interval.day:
        day = (start.astimezone(tz) + timedelta(hours=36)).date()
        return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    step = timedelta(hours=1) if interval is Interval.hour else timedelta(minutes=15)
    return _floor_local(start.astimezone(UTC) + step, interval, tz).astimezone(UTC)


def buckets(start: datetime, end: datetime, interval: Interval, tz: ZoneInfo) -> list[Bucket]:
    """The centre's intervals that meet [start, end), the first and last clipped to it."""
    check_range(start, end)
    found: list[Bucket] = []
    at = _floor_local(start, interval, tz).astimezone(UTC)
    while at < end:
        following = _next_local(at, interval, tz)
        found.append(Bucket(start=max(at, start), end=min(following, end)))
        if len(found) > MAX_BUCKETS:
            raise InvalidInput(
                f"at most {MAX_BUCKETS} intervals in one answer: ask for a longer interval "
                "or a shorter range",
                field="interval",
            )
        at = following
    return found


def midnight(now: datetime, tz: ZoneInfo) -> datetime:
    """The start of the centre's day that holds ``now``, in UTC ("today" on the wallboard)."""
    return _floor_local(now, Interval.day, tz).astimezone(UTC)


def check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("from and to need a time zone", field="from")
    if start < EARLIEST or end > LATEST:
        raise InvalidInput(
            f"from and to must be between {EARLIEST.year} and {LATEST.year}", field="from"
        )
    if end <= start:
        raise InvalidInput("to must be after from", field="to")
    if end - start > MAX_RANGE:
        raise InvalidInput(f"at most {MAX_RANGE.days} days in one answer", field="to")


def _check_zone(tz: ZoneInfo, start: datetime, end: datetime) -> None:
    for at in (start, end):
        offset = at.astimezone(tz).utcoffset() or timedelta()
        if offset.total_seconds() % SLOT_S:
            raise InvalidInput(
                f"the centre's time zone {tz.key} is not a whole number of quarter-hours "
                "from UTC: figures cannot be cut into its intervals",
                field="timezone",
            )


# ---------------------------------------------------------------- SQL pieces


def seconds_between(dialect: str, later: Any, earlier: Any) -> Any:
    """later − earlier in seconds, in the database (to the millisecond on SQLite, whose
    julianday keeps about 40 µs at today's dates)."""
    if dialect == "postgresql":  # date_part is double precision, extract() numeric (slower)
        return func.date_part("epoch", later - earlier)
    return func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0, 3)


def _interval_key(dialect: str, column: Any, width: int, shift: int) -> Any:
    """floor((seconds since 1970 + shift) / width): the interval a moment falls in, on a
    clock ``shift`` seconds ahead of UTC, as an integer."""
    if dialect == "postgresql":
        return cast(func.floor((func.extract("epoch", column) + shift) / width), Integer)
    # strftime('%s') is whole seconds, floored, and every width a whole number of seconds:
    # integer division is exact (and the moments are after 1970: no negative rounding).
    seconds = cast(func.strftime("%s", column), Integer) + shift
    return seconds.self_group().op("/")(literal_column(str(width)))


def _ceil(dialect: str, value: Any) -> Any:
    if dialect == "postgresql":
        return cast(func.ceil(value), Integer)
    whole = cast(value, Integer)  # SQLite truncates, and a wait is never negative
    return whole + case((value > whole, 1), else_=0)


def _count(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _sum(condition: Any, value: Any) -> Any:
    return func.sum(case((condition, value), else_=0.0))


# ---------------------------------------------------------------- the report


def report(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    interval: Interval,
    tz: ZoneInfo,
    now: datetime,
    answer_target_s: float,
    short_abandon_s: float,
    agent_id: int | None = None,
) -> Report:
    """Every figure for [start, end), per interval and per operator (only ``agent_id`` when
    given; the centre's figures are then still the whole centre's)."""
    found = buckets(start, end, interval, tz)
    _check_zone(tz, start, end)
    starts = [b.start for b in found]

    def bucket_of(moment: datetime) -> Bucket:
        return found[max(0, bisect_right(starts, max(moment, start)) - 1)]

    # Grouped in the database by the interval itself on the centre's clock when its offset
    # from UTC is one over the whole range (local time = UTC + offset); across a
    # daylight-saving change, by UTC quarter-hours folded here.
    offsets = {(b.start.astimezone(tz).utcoffset() or timedelta()) for b in found}
    offsets.add((end - timedelta(microseconds=1)).astimezone(tz).utcoffset() or timedelta())
    if len(offsets) == 1:
        width, shift = WIDTH_S[interval], int(offsets.pop().total_seconds())
    else:
        width, shift = SLOT_S, 0

    def moment_of(key: Any) -> datetime:
        return datetime.fromtimestamp(int(key) * width - shift, UTC)

    dialect = session.get_bind().dialect.name
    c = table_of(CallRecord).c
    # Each call's interval and durations, computed once per row (on the arrived_at index),
    # then counted and summed by the three queries below.
    one = (
        select(
            _interval_key(dialect, c.arrived_at, width, shift).label("key"),
            c.queue_outcome.label("outcome"),
            c.overflow_reason.label("reason"),
            c.agent_user_id.label("agent"),
            c.queued_at.is_not(None).label("queued"),
            seconds_between(dialect, c.queue_left_at, c.queued_at).label("wait"),
            and_(c.ended_at.is_not(None), c.agent_answered_at.is_not(None)).label("ended"),
            seconds_between(dialect, c.ended_at, c.agent_answered_at).label("on_line"),
            func.coalesce(c.hold_s, 0.0).label("hold"),
            func.coalesce(c.wrap_up_s, 0.0).label("wrap_up"),
            c.transfers.label("transfers"),
        )
        .where(
            c.direction == CallDirection.INBOUND.value,
            c.arrived_at >= start,
            c.arrived_at < end,
        )
        .subquery("one")
    )
    o = one.c
    is_agent = o.outcome == QueueOutcome.agent.value
    is_abandoned = o.outcome == QueueOutcome.abandoned.value
    handled = and_(is_agent, o.ended)
    sums = (
        func.count().label("offered"),
        _count(o.queued).label("queued"),
        _count(and_(is_agent, o.wait <= answer_target_s)).label("within_target"),
        _count(and_(is_agent, o.wait <= ANSWER_30_S)).label("within_30s"),
        _count(and_(is_abandoned, o.wait <= short_abandon_s)).label("short_abandoned"),
        _sum(is_agent, o.wait).label("answer_wait"),
        _sum(is_abandoned, o.wait).label("abandon_wait"),
        _count(and_(is_agent, o.transfers > 0)).label("transferred"),
        _count(handled).label("handled"),
        _sum(handled, o.on_line - o.hold).label("talk"),
        _sum(handled, o.hold).label("hold"),
        _sum(handled, o.wrap_up).label("wrap_up"),
    )
    for row in session.execute(
        select(o.key, o.outcome, o.reason, *sums).group_by(o.key, o.outcome, o.reason)
    ):
        figures = _figures(row)
        _count_outcome(figures, row.outcome, row.reason, row.offered)
        bucket_of(moment_of(row.key)).figures.add(figures)

    # Each operator's calls: those they answered.
    mine = select(o.key, o.agent, *sums).where(
        is_agent, o.agent.is_not(None) if agent_id is None else o.agent == agent_id
    )
    for row in session.execute(mine.group_by(o.key, o.agent)):
        figures = _figures(row)
        figures.answered = row.offered
        bucket_of(moment_of(row.key)).agent(row.agent).calls.add(figures)

    # The answered calls' waits in whole seconds, for the p90 (the centre's only: the wait
    # is the queue's, not the operator's who happened to answer).
    whole = _ceil(dialect, o.wait).label("whole")
    for row in session.execute(
        select(o.key, whole, func.count().label("n"))
        .where(is_agent, o.wait.is_not(None))
        .group_by(o.key, whole)
    ):
        bucket_of(moment_of(row.key)).figures.wait_seconds[int(row.whole)] += row.n

    for user_id, spans in agent_spans(session, start=start, end=min(end, now), agent_id=agent_id):
        for span_start, span_end, state, reason in spans:
            _spread(found, starts, span_start, span_end, state, reason, user_id)

    total = Figures()
    agents: dict[int, AgentFigures] = {}
    for bucket in found:
        total.add(bucket.figures)
        for user_id, each in bucket.agents.items():
            agents.setdefault(user_id, AgentFigures()).add(each)
    return Report(start, end, interval, found, total, dict(sorted(agents.items())))


def _figures(row: Any) -> Figures:
    return Figures(
        offered=row.offered,
        queued=int(row.queued or 0),
        answered_within_target=int(row.within_target or 0),
        answered_within_30s=int(row.within_30s or 0),
        short_abandoned=int(row.short_abandoned or 0),
        answer_wait_s=float(row.answer_wait or 0),
        abandon_wait_s=float(row.abandon_wait or 0),
        transferred=int(row.transferred or 0),
        handled=int(row.handled or 0),
        talk_s=float(row.talk or 0),
        hold_s=float(row.hold or 0),
        wrap_up_s=float(row.wrap_up or 0),
    )


def _count_outcome(figures: Figures, outcome: str | None, reason: str | None, n: int) -> None:
    if outcome is None:
        return
    kind = QueueOutcome(outcome)
    if kind is QueueOutcome.agent:
        figures.answered += n
    elif kind is QueueOutcome.abandoned:
        figures.abandoned += n
    elif kind is QueueOutcome.overflowed:
        figures.overflowed += n
        key = reason or "unknown"
        figures.overflowed_by_reason[key] = figures.overflowed_by_reason.get(key, 0) + n
    elif kind is QueueOutcome.callback_requested:
        figures.callback_requested += n
    elif kind is QueueOutcome.robot:
        figures.robot += n
    elif kind is QueueOutcome.lost:
        figures.lost += n
    else:
        figures.refused += n


# ---------------------------------------------------------------- operators' time


def _spread(
    found: list[Bucket],
    starts: list[datetime],
    span_start: datetime,
    span_end: datetime,
    state: AgentState,
    reason: NotReadyReason | None,
    user_id: int,
) -> None:
    """Add one span of one state to every interval it meets, cut at their boundaries."""
    index = max(0, bisect_right(starts, span_start) - 1)
    while index < len(found) and found[index].start < span_end:
        bucket = found[index]
        seconds = (min(span_end, bucket.end) - max(span_start, bucket.start)).total_seconds()
        if seconds > 0:
            time = bucket.agent(user_id).time
            time.signed_in_s += seconds
            after_call = state == AgentState.not_ready and reason == NotReadyReason.after_call_work
            if state in (AgentState.on_call, AgentState.wrap_up) or after_call:
                time.busy_s += seconds
            elif state == AgentState.not_ready:
                time.not_ready_s += seconds
        index += 1
