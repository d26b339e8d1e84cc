"""What the figures' pages share (issue 18): who may see them, the filters of every page
and export parsed and checked (``from``/``to``, ``unit``, ``category``, ``district``,
``channel``; a handler's unit is always their own), the filter form refused with the field
named (422), the context every figures page starts from, and the figures' labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role
from core.clock import Clock
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from hotline.figures import Filters, board
from hotline.figures.board import Ask
from tickets.models import Channel
from web.pages.i18n import N_, _
from web.pages.people import Person, require
from web.pages.templating import render

CENTRE = frozenset({Role.supervisor, Role.admin, Role.dispatcher})
WATCHING = require(*CENTRE)
HANDLER = require(Role.handler)
ANYONE = require(*CENTRE, Role.handler)
MAX_DAYS = 92
# The dashboards re-read their figures this long after the first change the page's live
# stream reports (tickets; calls for the centre), not at every change: the changes of that
# time come with the one read, and a busy centre does not re-run the queries every second.
LIVE_REFRESH_S = 30

CARD_LABELS = {
    "direct_answer_rate": N_("Direct answer rate"),
    "on_time_sign_rate": N_("On-time sign-for rate"),
    "on_time_reply_rate": N_("On-time reply rate"),
    "on_time_close_rate": N_("On-time completion rate"),
    "completion_rate": N_("Completion rate"),
    "callback_rate": N_("Callback rate"),
    "satisfaction_rate": N_("Satisfaction rate"),
    "return_rate": N_("Return rate"),
    "merge_rate": N_("Merge rate"),
    "extension_rate": N_("Extension rate"),
    "dispatch_accuracy": N_("Dispatch accuracy"),
    "overdue_rate": N_("Overdue rate"),
    "repeat_request_rate": N_("Repeat request rate"),
}
CHANNELS = {
    Channel.phone: N_("Phone"),
    Channel.web: N_("Web"),
    Channel.api: N_("API"),
    Channel.open311: N_("Open311"),
    Channel.walk_in: N_("Walk-in"),
}
FIELD_NAMES = {
    "from": N_("From"),
    "to": N_("To"),
    "unit": N_("Unit"),
    "category": N_("Category"),
    "district": N_("District"),
    "channel": N_("Channel"),
    "figure": N_("Figure"),
    "part": N_("Part"),
    "by": N_("By"),
    "every": N_("Every"),
    "minimum": N_("Minimum this week"),
    "table": N_("Table"),
}
FILTER_REFUSALS = (
    N_("a date is written YYYY-MM-DD"),
    N_("the last day must not be before the first"),
    N_("at most 92 days at once"),
    N_("no such unit"),
    N_("a category prefix is 1 to 12 digits of the national code"),
    N_("no such channel"),
    N_("no such figure"),
    N_("part is numerator or denominator"),
    N_("the minimum volume is a whole number from 1"),
    N_("not one of the choices offered"),
)


class BadFilter(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Chosen:
    """The filters as asked (to fill the form and the links) and as applied."""

    first: date
    last: date
    unit_code: str
    category: str
    district: str
    channel: str
    ask: Ask

    def query(self, **extra: str) -> str:
        params = {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "unit": self.unit_code,
            "category": self.category,
            "district": self.district,
            "channel": self.channel,
            **extra,
        }
        return urlencode({k: v for k, v in params.items() if v})


def _day(raw: str | None, field: str, default: date) -> date:
    if not raw:
        return default
    try:
        return date.fromisoformat(raw.strip()[:10])
    except ValueError:
        raise BadFilter(field, N_("a date is written YYYY-MM-DD")) from None


def _unit_of(session: Session, code: str) -> int:
    found = board.unit_id_of(session, code)
    if found is None:
        raise BadFilter("unit", N_("no such unit"))
    return found


def choose(
    request: Request, session: Session, settings: Settings, clock: Clock, person: Person
) -> Chosen:
    """The request's filters, checked; a handler's unit is their own whatever was asked."""
    q = request.query_params
    tz = settings.tz
    today = clock.now().astimezone(tz).date()
    last = _day(q.get("to"), "to", today)
    first = _day(q.get("from"), "from", last - timedelta(days=6))
    if last < first:
        raise BadFilter("to", N_("the last day must not be before the first"))
    if (last - first).days + 1 > MAX_DAYS:
        raise BadFilter("to", N_("at most 92 days at once"))
    unit_code = (q.get("unit") or "").strip()[:32]
    unit_id: int | None = None
    if person.role is Role.handler:
        unit_id = person.user.unit_id
        if unit_id is None:
            raise NotFound("this account belongs to no unit")
        unit_code = ""
    elif unit_code:
        unit_id = _unit_of(session, unit_code)
    category = (q.get("category") or "").strip()[:12]
    district = (q.get("district") or "").strip()[:64]
    channel = (q.get("channel") or "").strip()[:16]
    if channel and channel not in Channel.__members__:
        raise BadFilter("channel", N_("no such channel"))
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    try:
        filters = Filters(
            start=start,
            end=end,
            unit_id=unit_id,
            category_prefix=category or None,
            district=district or None,
            channel=Channel(channel) if channel else None,
        )
    except InvalidInput as exc:
        field = {"category_prefix": "category"}.get(str(exc.details.get("field")), "to")
        raise BadFilter(field, exc.message) from None
    ask = Ask(
        filters=filters,
        now=clock.now(),
        tz=tz,
        only_unit=unit_id if person.role is Role.handler else None,
        answer_target_s=settings.acd.answer_target_s,
        short_abandon_s=settings.acd.short_abandon_s,
    )
    return Chosen(first, last, unit_code, category, district, channel, ask)


def refused(
    request: Request, session: Session, exc: BadFilter, template: str, person: Person
) -> Response:
    """The page with the filter form and what was wrong with which field, 422."""
    q = request.query_params
    context = {
        "error": {
            "field": exc.field,
            "label": _(FIELD_NAMES.get(exc.field, exc.field)),
            "message": _(exc.message),
        },
        "form": {
            k: q.get(k, "") for k in ("from", "to", "unit", "category", "district", "channel")
        },
        "units": _units(session, person),
        "channels": CHANNELS,
        "is_handler": person.role is Role.handler,
        "view": template,
    }
    return render(request, "figures/refused.html", context, status_code=422)


def guarded(
    request: Request,
    session: Session,
    settings: Settings,
    clock: Clock,
    person: Person,
    template: str,
) -> Chosen | Response:
    try:
        return choose(request, session, settings, clock, person)
    except BadFilter as exc:
        return refused(request, session, exc, template, person)


def _form(chosen: Chosen) -> dict[str, str]:
    return {
        "from": chosen.first.isoformat(),
        "to": chosen.last.isoformat(),
        "unit": chosen.unit_code,
        "category": chosen.category,
        "district": chosen.district,
        "channel": chosen.channel,
    }


def _units(session: Session, person: Person) -> list[tuple[str, str]]:
    if person.role is Role.handler:
        return []
    return board.unit_choices(session)


def page_context(
    request: Request, session: Session, person: Person, chosen: Chosen, view: str
) -> dict[str, Any]:
    return {
        "form": _form(chosen),
        "units": _units(session, person),
        "channels": CHANNELS,
        "is_handler": person.role is Role.handler,
        "view": view,
        "query": chosen.query(),
        "error": None,
        "export": lambda table, **extra: export_links(chosen, table, **extra),
        "pct": pct,
        "live_refresh_s": LIVE_REFRESH_S,
        "read_at": chosen.ask.now.astimezone(chosen.ask.tz).strftime("%H:%M:%S"),
    }


def page_number(request: Request) -> int:
    """The `page` asked for (1 when absent or not a number; at most 10,000)."""
    raw = request.query_params.get("page", "")
    return max(1, min(10_000, int(raw) if raw.isdigit() else 1))


def export_links(chosen: Chosen, table: str, **extra: str) -> dict[str, str]:
    query = chosen.query(**extra)
    return {
        fmt: f"/figures/export/{table}.{fmt}" + (f"?{query}" if query else "")
        for fmt in ("csv", "xlsx")
    }


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"
