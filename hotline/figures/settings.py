"""The unit-rate settings an administrator sets: the weights of 响应率 / 解决率 / 满意率 in a
unit's score and the grade bands (分档), stored as one ``figure_setting`` row (key
``unit_rates``, JSON value). Absent, the defaults of hotline.figures.units apply (30/35/35;
优秀 ≥ 90, 良好 ≥ 80, 合格 ≥ 60, 待改进). Every change is an audit entry with the old and new
values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from accounts import audit
from core.errors import InvalidInput
from hotline.figures.models import FigureSetting
from hotline.figures.units import DEFAULT_BANDS, RATES, Band, Weights, check_bands

KEY = "unit_rates"
MAX_BANDS = 8
MAX_NAME = 16


@dataclass(frozen=True)
class RateSettings:
    weights: Weights
    bands: tuple[Band, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "weights": {name: getattr(self.weights, name) for name in RATES},
            "bands": [{"name": b.name, "at_least": b.at_least} for b in self.bands],
        }


DEFAULTS = RateSettings(Weights(), DEFAULT_BANDS)


def load(session: Session) -> RateSettings:
    """The stored settings, or the defaults when none were saved (or the stored value no
    longer passes the checks, which a hand edit of the table could cause)."""
    row = session.get(FigureSetting, KEY)
    if row is None:
        return DEFAULTS
    try:
        return parse(row.value)
    except InvalidInput:
        return DEFAULTS


def parse(value: Mapping[str, Any]) -> RateSettings:
    """Weights and bands from their JSON form, checked; an InvalidInput names the field
    (``weights.response``, ``bands.1.name``, ``bands.2.at_least``, ``bands``)."""
    raw = value.get("weights")
    if not isinstance(raw, Mapping):
        raise InvalidInput("the weights are missing", field="weights")
    weights: dict[str, int] = {}
    for name in RATES:
        weights[name] = _weight(raw.get(name), f"weights.{name}")
    if sum(weights.values()) != 100:
        raise InvalidInput(
            "the three weights must add up to 100",
            field="weights",
            total=sum(weights.values()),
        )
    listed = value.get("bands")
    if not isinstance(listed, Sequence) or isinstance(listed, str) or not listed:
        raise InvalidInput("at least one band is needed", field="bands")
    if len(listed) > MAX_BANDS:
        raise InvalidInput("at most 8 bands", field="bands")
    bands: list[Band] = []
    seen: set[str] = set()
    for index, item in enumerate(listed):
        if not isinstance(item, Mapping):
            raise InvalidInput("a band is a name and a threshold", field=f"bands.{index}")
        name = str(item.get("name") or "").strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidInput("a band's name is 1 to 16 characters", field=f"bands.{index}.name")
        if name in seen:
            raise InvalidInput("two bands have the same name", field=f"bands.{index}.name")
        seen.add(name)
        bands.append(Band(name, _threshold(item.get("at_least"), f"bands.{index}.at_least")))
    for index, (better, worse) in enumerate(zip(bands, bands[1:], strict=False), start=1):
        if worse.at_least >= better.at_least:
            raise InvalidInput(
                "bands go from best to worst, each threshold below the one before",
                field=f"bands.{index}.at_least",
            )
    if bands[-1].at_least != 0:
        raise InvalidInput(
            "the last band must start at 0 so that every score has a band",
            field=f"bands.{len(bands) - 1}.at_least",
        )
    return RateSettings(Weights(**weights), check_bands(bands))


def _weight(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput("a weight is a whole number from 0 to 100", field=field)
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise InvalidInput("a weight is a whole number from 0 to 100", field=field) from None
    if not 0 <= number <= 100:
        raise InvalidInput("a weight is a whole number from 0 to 100", field=field)
    return number


def _threshold(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput("a threshold is a score from 0 to 100", field=field)
    try:
        number = float(str(value).strip())
    except ValueError:
        raise InvalidInput("a threshold is a score from 0 to 100", field=field) from None
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise InvalidInput("a threshold is a score from 0 to 100", field=field)
    return number


def save(
    session: Session,
    *,
    value: Mapping[str, Any],
    now: datetime,
    user_id: int | None,
    username: str | None = None,
    address: str | None = None,
) -> RateSettings:
    """Check and store the settings; an audit entry records the old and the new value.
    Nothing is written when they are refused."""
    chosen = parse(value)
    row = session.get(FigureSetting, KEY)
    before = load(session).as_json()
    if row is None:
        row = FigureSetting(key=KEY, value=chosen.as_json(), updated_at=now, updated_by=user_id)
        session.add(row)
    else:
        row.value = chosen.as_json()
        row.updated_at = now
        row.updated_by = user_id
    session.flush()
    audit.record(
        session,
        at=now,
        action="figures.settings",
        user_id=user_id,
        username=username,
        target=f"figure_setting:{KEY}",
        address=address,
        detail={"before": before, "after": chosen.as_json()},
    )
    return chosen
