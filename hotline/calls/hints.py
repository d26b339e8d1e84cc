"""The five elements (五要素) a transcript hints at — the caller's phone, the place among the
city's units' districts and streets — and the description a ticket gets from them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dispatch.models import Unit, UnitLevel
from hotline.calls.records import TEXT_LIMIT

log = logging.getLogger(__name__)


NO_SPEECH = "（来电未听到可识别的语音，请回拨核实诉求）"


_CN_DIGITS = str.maketrans("零〇幺一二三四五六七八九", "001123456789")
_PHONE_LIKE = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8}|\d{7,8})(?!\d)")


@dataclass(frozen=True)
class Place:
    kind: str  # district | street
    name: str  # as a ticket's district/street field holds it
    district: str | None
    aliases: tuple[str, ...]


@dataclass
class Hints:
    districts: list[str] = field(default_factory=list)
    streets: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.districts or self.streets or self.phones)

    def as_dict(self) -> dict[str, list[str]]:
        return {"districts": self.districts, "streets": self.streets, "phones": self.phones}


def places_of(units: Iterable[Unit]) -> list[Place]:
    """Districts and streets a transcript may name, from the district and street units."""
    out: list[Place] = []
    for unit in units:
        if not unit.active:
            continue
        if unit.level == UnitLevel.district and unit.district:
            core = unit.district[:-1] if len(unit.district) > 2 else unit.district
            out.append(
                Place(
                    "district",
                    unit.district,
                    unit.district,
                    tuple(dict.fromkeys((unit.district, core))),
                )
            )
        elif unit.level == UnitLevel.street:
            name = unit.name.removesuffix("办事处")
            if unit.district:
                name = name.removeprefix(unit.district)
            core = name.removesuffix("街道").removesuffix("镇").removesuffix("乡")
            aliases = tuple(dict.fromkeys(a for a in (name, core) if len(a) >= 2))
            if aliases:
                out.append(Place("street", name, unit.district, aliases))
    return out


def five_element_hints(text: str, *, places: Sequence[Place]) -> Hints:
    """Where (districts, streets named in the text) and who (digit strings that look like
    phone numbers, spoken Chinese digits included) — hints for the operator, not facts."""
    hints = Hints()
    for place in places:
        if any(alias in text for alias in place.aliases):
            target = hints.districts if place.kind == "district" else hints.streets
            if place.name not in target:
                target.append(place.name)
            if place.kind == "street" and place.district and place.district not in hints.districts:
                hints.districts.append(place.district)
    digits = text.translate(_CN_DIGITS)
    digits = re.sub(r"(?<=\d)[\s,，-]+(?=\d)", "", digits)
    for found in _PHONE_LIKE.findall(digits):
        number = found.replace("-", "")
        if number not in hints.phones:
            hints.phones.append(number)
    return hints


def describe(text: str, hints: Hints) -> str:
    lines = [f"【电话录音转写】{text}" if text else NO_SPEECH]
    parts = []
    if hints.districts:
        parts.append("区县：" + "、".join(hints.districts))
    if hints.streets:
        parts.append("街道：" + "、".join(hints.streets))
    if hints.phones:
        parts.append("电话：" + "、".join(hints.phones))
    if parts:
        lines.append("【要素提示】" + "；".join(parts))
    return "\n".join(lines)[:TEXT_LIMIT]
