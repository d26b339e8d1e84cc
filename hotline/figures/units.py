"""三率 per unit: 响应率, 解决率, 满意率, the weighted score an administrator sets (default
30/35/35, as one county does), the graded band (分档) the 2025 national guidance asks for
rather than a bare rank order, and the rank order within the period."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select
from sqlmodel import Session

from core.errors import InvalidInput
from hotline.figures import summary_read
from hotline.figures.compute import Figure, context, count_where, drilled, tune
from hotline.figures.definitions import (
    Context,
    Definition,
    Level,
    on_time_close_rate,
    on_time_sign_rate,
    satisfaction_rate,
)
from hotline.figures.filters import A, Filters, Scope, T, resolve
from hotline.figures.summary import UNIT_SATISFACTION, unit_satisfaction

RATES = ("response", "resolution", "satisfaction")


@dataclass(frozen=True)
class Weights:
    """The weights of 响应率, 解决率 and 满意率 in the score, whole percentages summing to
    100."""

    response: int = 30
    resolution: int = 35
    satisfaction: int = 35

    def __post_init__(self) -> None:
        values = (self.response, self.resolution, self.satisfaction)
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
            raise InvalidInput("each weight is a whole percentage, 0 or more", weights=values)
        if sum(values) != 100:
            raise InvalidInput(
                f"the weights of 响应率, 解决率 and 满意率 must add up to 100, not {sum(values)}",
                weights=values,
            )


@dataclass(frozen=True)
class Band:
    name: str
    at_least: float  # the lowest score (0–100) in the band, inclusive


DEFAULT_BANDS = (
    Band("优秀", 90.0),
    Band("良好", 80.0),
    Band("合格", 60.0),
    Band("待改进", 0.0),
)


def check_bands(bands: Sequence[Band]) -> tuple[Band, ...]:
    """Bands from best to worst with strictly falling thresholds, the last at 0 so every
    score has one."""
    if not bands:
        raise InvalidInput("at least one band is needed")
    for better, worse in zip(bands, bands[1:], strict=False):
        if worse.at_least >= better.at_least:
            raise InvalidInput(
                "bands go from best to worst, each threshold below the one before",
                bands=[b.name for b in bands],
            )
    if bands[-1].at_least != 0:
        raise InvalidInput("the last band must start at 0 so that every score has a band")
    return tuple(bands)


def band_of(score: float, bands: Sequence[Band] = DEFAULT_BANDS) -> str:
    """The first band (best first) whose threshold the score reaches: a score exactly on a
    threshold is in the better band (90.0 is 优秀 by default)."""
    for band in bands:
        if score >= band.at_least:
            return band.name
    return bands[-1].name


@dataclass
class UnitRates:
    """One unit's three rates over its own lead assignments (its children are units of
    their own here). Each rate is a Figure: counts, rate, and the tickets behind them."""

    unit_id: int
    response: Figure  # 响应率 = 按时签收率
    resolution: Figure  # 解决率 = 按时办结率
    satisfaction: Figure  # 满意率 of the tickets the unit completed
    score: float | None = None
    band: str | None = None
    rank: int | None = None
    weights_used: dict[str, float] = field(default_factory=dict)


def score(
    rates: Mapping[str, float | None], weights: Weights
) -> tuple[float | None, dict[str, float]]:
    """The weighted score 0–100: Σ weight × rate. A rate with nothing to count (None: no
    sign-for judged yet, nobody surveyed) drops out and the weights of the others are scaled
    up to 100 in proportion, so a unit is not marked down for what did not happen; with no
    rate at all there is no score."""
    present = {name: getattr(weights, name) for name in RATES if rates.get(name) is not None}
    total = sum(present.values())
    if not total:
        return None, {}
    used = {name: 100 * w / total for name, w in present.items()}
    value = sum(used[name] * float(rates[name] or 0) for name in used)
    return value, used


def unit_rates(
    session: Session,
    *,
    filters: Filters,
    now: datetime,
    weights: Weights | None = None,
    bands: Sequence[Band] = DEFAULT_BANDS,
    summary: bool = True,
) -> list[UnitRates]:
    """Every unit with lead assignments under ``filters``: its three rates, score, band and
    rank, best first. Ranks follow the score, ties sharing a rank (1, 1, 3); units without a
    score come last, unranked and unbanded. The counts come from the summary tables where
    they answer (hotline.figures.summary; ``summary=False`` never)."""
    weights = weights or Weights()
    bands = check_bands(bands)
    scope = resolve(session, filters)
    ctx = context(session, now=now, filters=filters)
    response, resolution = on_time_sign_rate(ctx), on_time_close_rate(ctx)
    found_counts = _summary_counts(session, scope, now) if summary else None
    counts, satisfied = found_counts or _counts_by_unit(session, scope, ctx, response, resolution)
    happy = (satisfaction_rate(ctx), *unit_satisfaction(ctx))
    found: list[UnitRates] = []
    for unit_id in sorted(counts.keys() | satisfied.keys()):
        own = Scope(filters, (unit_id,))
        mine = counts.get(unit_id, {})
        entry = UnitRates(
            unit_id=unit_id,
            response=_figure(own, response, mine.get(response.name, (0, 0))),
            resolution=_figure(own, resolution, mine.get(resolution.name, (0, 0))),
            satisfaction=_satisfaction_figure(own, happy, satisfied.get(unit_id, (0, 0))),
        )
        entry.score, entry.weights_used = score(
            {
                "response": entry.response.rate,
                "resolution": entry.resolution.rate,
                "satisfaction": entry.satisfaction.rate,
            },
            weights,
        )
        if entry.score is not None:
            entry.band = band_of(entry.score, bands)
        found.append(entry)
    _rank(found)
    return sorted(found, key=lambda u: (u.rank is None, u.rank or 0, u.unit_id))


def _rank(units: list[UnitRates]) -> None:
    scored = sorted((u for u in units if u.score is not None), key=lambda u: -(u.score or 0))
    previous: float | None = None
    for position, unit in enumerate(scored, start=1):
        # scores equal to the 10th decimal are ties (floating sums of the same rates)
        same = previous is not None and round(unit.score or 0, 10) == round(previous, 10)
        unit.rank = scored[position - 2].rank if same else position
        previous = unit.score


def _figure(scope: Scope, d: Definition, counts: tuple[int, int]) -> Figure:
    return Figure(
        name=d.name,
        zh=d.zh,
        numerator=counts[0],
        denominator=counts[1],
        numerator_select=drilled(scope, d.level, d.numerator),
        denominator_select=drilled(scope, d.level, d.denominator),
    )


def _summary_counts(
    session: Session, scope: Scope, now: datetime
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, tuple[int, int]]] | None:
    """As ``_counts_by_unit``, from the summary tables; None when they cannot answer."""
    per_unit = summary_read.unit_counts(session, scope, now)
    if per_unit is None:
        return None
    names = (on_time_sign_rate.__name__, on_time_close_rate.__name__)
    counts = {u: {n: mine[n] for n in names} for u, mine in per_unit.items()}
    satisfied = {
        u: mine[UNIT_SATISFACTION] for u, mine in per_unit.items() if mine[UNIT_SATISFACTION][1]
    }
    return counts, satisfied


def _counts_by_unit(
    session: Session, scope: Scope, ctx: Context, response: Definition, resolution: Definition
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, tuple[int, int]]]:
    """响应率 and 解决率 per unit (as compute.per_unit counts them) and 满意率 per unit —
    the surveyed tickets on which the unit completed a lead assignment, each ticket once per
    unit though 重办 gave the unit two rounds of it — in one pass over the period's lead
    assignments."""
    tune(session)
    numerator, denominator = unit_satisfaction(ctx)
    query = (
        select(
            A.c.unit_id,
            *(count_where(c) for d in (response, resolution) for c in (d.numerator, d.denominator)),
            func.count(func.distinct(case((numerator, T.c.id)))),
            func.count(func.distinct(case((denominator, T.c.id)))),
        )
        .select_from(A.join(T, A.c.ticket_id == T.c.id))
        .where(*scope.assignment_where())
        .group_by(A.c.unit_id)
    )
    counts: dict[int, dict[str, tuple[int, int]]] = {}
    satisfied: dict[int, tuple[int, int]] = {}
    for row in session.execute(query):
        counts[row[0]] = {
            response.name: (int(row[1]), int(row[2])),
            resolution.name: (int(row[3]), int(row[4])),
        }
        if row[6]:
            satisfied[row[0]] = (int(row[5]), int(row[6]))
    return counts, satisfied


def _satisfaction_figure(
    scope: Scope,
    happy: tuple[Definition, ColumnElement[bool], ColumnElement[bool]],
    counts: tuple[int, int],
) -> Figure:
    d, numerator, denominator = happy
    return Figure(
        name=d.name,
        zh=d.zh,
        numerator=counts[0],
        denominator=counts[1],
        numerator_select=drilled(scope, Level.assignment, numerator),
        denominator_select=drilled(scope, Level.assignment, denominator),
    )
