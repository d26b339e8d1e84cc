"""The Open311 services: the centre's own taxonomy, as the dispatch rule pack states it.
Each category code an enabled rule classifies into (GB/T 39666-shaped, dispatch/data/
rules-zh.yaml) is one service; its name and description come from the first rule, in
evaluation order, that names it, its keywords from those rules' words. Every service takes
the same attributes, defined here and validated on POST."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from core.errors import NotFound
from dispatch import reference, rulebook
from dispatch.reference import Snapshot
from tickets.models import RequestType, Urgency

JURISDICTION_ID = "12345"
"""The one jurisdiction this endpoint serves; a request naming another is answered 404."""


@dataclass(frozen=True)
class Value:
    key: str
    name: str


@dataclass(frozen=True)
class Attribute:
    code: str
    datatype: str  # string | number | datetime | text | singlevaluelist | multivaluelist
    required: bool
    description: str
    order: int
    datatype_description: str = ""
    values: tuple[Value, ...] = ()
    max_length: int = 200

    def check(self, raw: Sequence[str]) -> tuple[str | None, str | None]:
        """(the value as it is to be stored, None) or (None, the problem in words)."""
        label = f"attribute[{self.code}] ({self.description})"
        if self.datatype != "multivaluelist" and len(raw) > 1:
            return None, f"{label} takes one value, got {len(raw)}"
        value = raw[0].strip() if raw else ""
        if not value:
            if self.required:
                return None, f"{label} is required"
            return None, None
        if self.datatype == "singlevaluelist":
            keys = [v.key for v in self.values]
            if value not in keys:
                return None, f"{label}: {value!r} is not one of {', '.join(keys)}"
        elif self.datatype == "datetime":
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None, f"{label}: {value!r} is not an ISO 8601 date and time"
            if moment.tzinfo is None:
                return None, f"{label}: {value!r} needs its time zone (Z or +08:00)"
        elif len(value) > self.max_length:
            return None, f"{label} is longer than {self.max_length} characters"
        return value, None


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "ADDRESS_DETAIL",
        "string",
        False,
        "详细地址",
        1,
        "门牌号、楼栋、单元等，补充 address_string（200 字以内）",
    ),
    Attribute(
        "URGENCY",
        "singlevaluelist",
        False,
        "紧急程度",
        2,
        "不填为一般",
        (
            Value(Urgency.normal.value, "一般"),
            Value(Urgency.urgent.value, "紧急"),
            Value(Urgency.very_urgent.value, "特急"),
        ),
    ),
    Attribute(
        "REQUEST_TYPE",
        "singlevaluelist",
        False,
        "诉求类型",
        3,
        "不填为求助",
        (
            Value(RequestType.consultation.value, "咨询"),
            Value(RequestType.help.value, "求助"),
            Value(RequestType.complaint.value, "投诉"),
            Value(RequestType.report.value, "举报"),
            Value(RequestType.suggestion.value, "建议"),
            Value(RequestType.praise.value, "表扬"),
        ),
    ),
    Attribute(
        "OCCURRED_AT",
        "datetime",
        False,
        "发生时间",
        4,
        "ISO 8601，带时区，例如 2026-11-27T09:30:00+08:00",
    ),
)
ATTRIBUTES_BY_CODE: Mapping[str, Attribute] = {a.code: a for a in ATTRIBUTES}


@dataclass(frozen=True)
class Service:
    code: str
    name: str
    description: str
    group: str  # the first level of the code (2 digits)
    keywords: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = field(default=ATTRIBUTES)


@dataclass(frozen=True)
class Catalogue:
    services: tuple[Service, ...]
    by_code: Mapping[str, Service]


_lock = threading.Lock()
_last: tuple[Snapshot, Catalogue] | None = None


def _build(session: Session) -> Catalogue:
    found: dict[str, Service] = {}
    words: dict[str, list[str]] = {}
    for rule in rulebook.list_rules(session):  # evaluation order
        code = (rule.actions or {}).get("category_code")
        if not rule.enabled or not code:
            continue
        if code not in found:
            name = rule.actions.get("category_name") or code
            found[code] = Service(code, name, rule.description or name, code[:2])
        for word in (rule.conditions or {}).get("text_any") or []:
            kept = words.setdefault(code, [])
            if word not in kept and len(kept) < 8:
                kept.append(word)
    services = tuple(
        Service(s.code, s.name, s.description, s.group, tuple(words.get(s.code, ())))
        for s in sorted(found.values(), key=lambda s: s.code)
    )
    return Catalogue(services, {s.code: s for s in services})


def catalogue(session: Session) -> Catalogue:
    """Rebuilt when the reference data changes (any rule written bumps its revision), so
    a POST costs no read of the rules."""
    global _last
    snap = reference.snapshot(session)
    with _lock:
        last = _last
    if last is not None and last[0] is snap:
        return last[1]
    built = _build(session)
    with _lock:
        _last = (snap, built)
    return built


def get_service(session: Session, *, code: str) -> Service:
    service = catalogue(session).by_code.get(code)
    if service is None:
        raise NotFound(f"service_code {code!r} is not a service of this jurisdiction", code=code)
    return service
