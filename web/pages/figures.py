"""The centre's figures on pages (issue 18): the dashboard, the units' ranking, a handler's
own unit, hot spots, the tickets behind a figure, every table as CSV and XLSX, and the
admin's weights and bands.

    GET  /figures                         dashboard: cards and charts (centre roles)
    GET  /figures/units                   the ranking: three rates, score, band, rank
    GET  /figures/unit                    a handler's own unit: its figures and its band
    GET  /figures/hotspots                category × district over time, rising, the map
    GET  /figures/tickets                 ?figure=…&part=numerator|denominator: the tickets
    GET  /figures/export/{table}.csv|xlsx  the same filters; a handler's only ever own unit
    GET  /admin/figures, POST             weights and bands (admin)

Filters (query): ``from`` and ``to`` (local dates, both days included; at most 92 days),
``unit`` (a unit code: it and its units below), ``category`` (the national code's leading
digits), ``district``, ``channel``. A bad one answers 422 naming it. A handler's unit is
always their own: whatever ``unit`` says, nothing of another unit is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from accounts.models import Role
from core.clock import Clock
from core.errors import DomainError, InvalidInput, NotFound
from core.settings import Settings
from hotline.figures import Filters, board, export, hotspots
from hotline.figures import settings as rate_settings
from hotline.figures.board import Ask
from tickets.models import Channel, Status
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import nav
from web.pages.admin_common import ADMIN
from web.pages.i18n import N_, _
from web.pages.nav import NavItem
from web.pages.people import Person, client_address, csrf_form, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
CENTRE = frozenset({Role.supervisor, Role.admin, Role.dispatcher})
WATCHING = require(*CENTRE)
HANDLER = require(Role.handler)
ANYONE = require(*CENTRE, Role.handler)
MAX_DAYS = 92
LOCATED_ON_MAP = 2_000
CHART_UNITS = 20  # units on a per-unit chart
MATRIX_SIDE = 12  # categories and districts on the heat map

nav.register(
    NavItem("/figures", N_("Figures"), CENTRE, order=38),
    NavItem("/figures/unit", N_("Our figures"), frozenset({Role.handler}), order=38),
)

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
TABLE_TITLES = {
    "figures": N_("Figures"),
    "units": N_("Unit ranking"),
    "sla": N_("Deadlines met by unit"),
    "volume_day": N_("Requests by day"),
    "volume_hour": N_("Requests by hour of day"),
    "categories": N_("Requests by category"),
    "districts": N_("Requests by district"),
    "calls": N_("Calls by day"),
    "hotspots": N_("Hot spots over time"),
    "matrix": N_("Requests by category and district"),
    "rising": N_("Rising topics"),
    "located": N_("Located requests"),
    "tickets": N_("Tickets behind a figure"),
}
COLUMNS = {
    "figure": N_("Figure"),
    "name": N_("Name"),
    "numerator": N_("Numerator"),
    "denominator": N_("Denominator"),
    "rate": N_("Rate"),
    "days_late": N_("Days late (total)"),
    "days_late_max": N_("Days late (most)"),
    "rank": N_("Rank"),
    "unit_code": N_("Unit code"),
    "unit": N_("Unit"),
    "response_n": N_("Signed on time"),
    "response_d": N_("Sign-fors judged"),
    "response_rate": N_("Response rate"),
    "resolution_n": N_("Completed on time"),
    "resolution_d": N_("Completions judged"),
    "resolution_rate": N_("Resolution rate"),
    "satisfaction_n": N_("Satisfied"),
    "satisfaction_d": N_("Surveyed"),
    "satisfaction_rate": N_("Satisfaction rate"),
    "score": N_("Score"),
    "band": N_("Band"),
    "sign_n": N_("Signed on time"),
    "sign_d": N_("Sign-fors judged"),
    "sign_rate": N_("On-time sign-for rate"),
    "reply_n": N_("Replied on time"),
    "reply_d": N_("Replies judged"),
    "reply_rate": N_("On-time reply rate"),
    "close_n": N_("Completed on time"),
    "close_d": N_("Completions judged"),
    "close_rate": N_("On-time completion rate"),
    "day": N_("Day"),
    "hour": N_("Hour"),
    "requests": N_("Requests"),
    "category_code": N_("Category code"),
    "category": N_("Category"),
    "district": N_("District"),
    "offered": N_("Calls offered"),
    "answered": N_("Answered"),
    "abandoned": N_("Abandoned"),
    "counted": N_("Calls counted"),
    "within_target": N_("Answered within 15 s"),
    "within_target_rate": N_("Share within 15 s"),
    "from": N_("From"),
    "key": N_("Code"),
    "label": N_("Name"),
    "this_week": N_("This week"),
    "last_week": N_("Last week"),
    "ratio": N_("Ratio"),
    "number": N_("Ticket number"),
    "created_at": N_("Taken in"),
    "latitude": N_("Latitude"),
    "longitude": N_("Longitude"),
    "status": N_("Status"),
    "channel": N_("Channel"),
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
SETTINGS_REFUSALS = (
    N_("the weights are missing"),
    N_("a weight is a whole number from 0 to 100"),
    N_("the three weights must add up to 100"),
    N_("at least one band is needed"),
    N_("at most 8 bands"),
    N_("a band is a name and a threshold"),
    N_("a band's name is 1 to 16 characters"),
    N_("two bands have the same name"),
    N_("a threshold is a score from 0 to 100"),
    N_("bands go from best to worst, each threshold below the one before"),
    N_("the last band must start at 0 so that every score has a band"),
)
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


def _refused(
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


def _base(
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
        "export": lambda table, **extra: _export_links(chosen, table, **extra),
        "pct": pct,
    }


def _export_links(chosen: Chosen, table: str, **extra: str) -> dict[str, str]:
    query = chosen.query(**extra)
    return {
        fmt: f"/figures/export/{table}.{fmt}" + (f"?{query}" if query else "")
        for fmt in ("csv", "xlsx")
    }


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _chart(
    kind: str, categories: list[Any], series: list[dict[str, Any]], **more: Any
) -> dict[str, Any]:
    return {"kind": kind, "categories": [str(c) for c in categories], "series": series, **more}


def _cards(session: Session, chosen: Chosen) -> list[dict[str, Any]]:
    cards = board.cards(session, chosen.ask)
    found = []
    for name, f in cards.figures.items():
        entry = {
            "name": name,
            "label": _(CARD_LABELS[name]),
            "zh": f.zh,
            "figure": f,
            "rate": pct(f.rate),
            "numerator_url": f"/figures/tickets?{chosen.query(figure=name, part='numerator')}",
            "denominator_url": f"/figures/tickets?{chosen.query(figure=name, part='denominator')}",
            "days": None,
        }
        if name == "overdue_rate":
            entry["days"] = (cards.overdue.days_total, cards.overdue.days_max)
        found.append(entry)
    return found


def _volume_charts(session: Session, chosen: Chosen, *, by_unit: bool) -> dict[str, Any]:
    f, tz = chosen.ask.filters, chosen.ask.tz
    days = hotspots.by_day(session, filters=f, tz=tz)
    hours = hotspots.by_hour(session, filters=f, tz=tz)
    categories = hotspots.totals(session, filters=f, by=hotspots.By.category, limit=15)
    districts = hotspots.totals(session, filters=f, by=hotspots.By.district, limit=20)
    requests = _("Requests")
    charts: dict[str, Any] = {
        "volume_day": _chart(
            "line",
            [d.strftime("%m-%d") for d, _n in days],
            [{"name": requests, "data": [n for _d, n in days]}],
        ),
        "volume_hour": _chart(
            "bar", [f"{h:02d}" for h in range(24)], [{"name": requests, "data": hours}]
        ),
        "categories": _chart(
            "hbar",
            [c.label or c.key or _("none") for c in categories],
            [{"name": requests, "data": [c.count for c in categories]}],
        ),
        "districts": _chart(
            "hbar",
            [c.key or _("none") for c in districts],
            [{"name": requests, "data": [c.count for c in districts]}],
        ),
    }
    # the busiest units on the chart (a city has hundreds); the table and its exports have all
    sla = sorted(
        board.sla_by_unit(session, chosen.ask),
        key=lambda u: -sum(d for _n, d in u.counts.values()),
    )[:CHART_UNITS]
    charts["sla"] = _chart(
        "hbar", [u.name for u in sla],
        [{"name": _(CARD_LABELS[make.__name__]),
          "data": [_ratio(u.rate(make.__name__)) for u in sla]} for make in board.SLA],
        percent=True,
    )  # fmt: skip
    return charts


def _json(value: Any) -> str:
    """JSON for a <script> element: no "<", ">" or "&" that could end it early."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def _rates_chart(ranked: list[board.RankedUnit]) -> dict[str, Any]:
    return _chart(
        "hbar",
        [u.name for u in ranked],
        [
            {"name": _("Response rate"), "data": [_ratio(u.rates.response.rate) for u in ranked]},
            {
                "name": _("Resolution rate"),
                "data": [_ratio(u.rates.resolution.rate) for u in ranked],
            },
            {
                "name": _("Satisfaction rate"),
                "data": [_ratio(u.rates.satisfaction.rate) for u in ranked],
            },
        ],
        percent=True,
    )


def _matrix_chart(cells: list[tuple[str | None, str | None, str | None, int]]) -> dict[str, Any]:
    """A heat map of the busiest categories (rows) by the busiest districts (columns)."""
    none = _("none")
    by_category: dict[str, int] = {}
    by_district: dict[str, int] = {}
    names: dict[str, str] = {}
    for code, name, district, n in cells:
        key, place = code or none, district or none
        if name or key not in names:
            names[key] = name or key
        by_category[key] = by_category.get(key, 0) + n
        by_district[place] = by_district.get(place, 0) + n
    rows = sorted(by_category, key=lambda k: -by_category[k])[:MATRIX_SIDE]
    columns = sorted(by_district, key=lambda k: -by_district[k])[:MATRIX_SIDE]
    data = [
        [columns.index(district or none), rows.index(code or none), n]
        for code, _name, district, n in cells
        if (code or none) in rows and (district or none) in columns
    ]
    return {
        "kind": "heatmap",
        "columns": columns,
        "rows": [names[k] for k in rows],
        "data": data,
        "max": max((n for *_rest, n in data), default=1),
    }


def _calls_chart(days: list[board.CallDay]) -> dict[str, Any]:
    return _chart(
        "calls",
        [c.day.strftime("%m-%d") for c in days],
        [
            {"name": _("Calls offered"), "data": [c.offered for c in days]},
            {"name": _("Answered"), "data": [c.answered for c in days]},
            {"name": _("Abandoned"), "data": [c.abandoned for c in days]},
            {
                "name": _("Share within 15 s"),
                "data": [_ratio(c.within_target_rate) for c in days],
                "axis": 1,
            },
        ],
    )


def _guarded(
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
        return _refused(request, session, exc, template, person)


@router.get("/figures")
def dashboard(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    chosen = _guarded(request, session, settings, clock, person, "dashboard")
    if isinstance(chosen, Response):
        return chosen
    ranked = board.ranking(session, chosen.ask, rate_settings.load(session))
    calls = board.calls_by_day(session, chosen.ask)
    charts = _volume_charts(session, chosen, by_unit=True)
    charts["rates"] = _rates_chart(ranked[:CHART_UNITS])
    charts["calls"] = _calls_chart(calls)
    totals = board.CallDay(
        chosen.first,
        sum(c.offered for c in calls),
        sum(c.answered for c in calls),
        sum(c.abandoned for c in calls),
        sum(c.counted for c in calls),
        sum(c.within_target for c in calls),
    )
    context = {
        **_base(request, session, person, chosen, "dashboard"),
        "cards": _cards(session, chosen),
        "charts": _json(charts),
        "calls": totals,
    }
    return render(request, "figures/index.html", context)


@router.get("/figures/units")
def units_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    chosen = _guarded(request, session, settings, clock, person, "units")
    if isinstance(chosen, Response):
        return chosen
    current = rate_settings.load(session)
    context = {
        **_base(request, session, person, chosen, "units"),
        "ranked": board.ranking(session, chosen.ask, current),
        "weights": current.weights,
        "bands": current.bands,
    }
    return render(request, "figures/units.html", context)


@router.get("/figures/unit")
def own_unit(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = HANDLER,
) -> Response:
    chosen = _guarded(request, session, settings, clock, person, "unit")
    if isinstance(chosen, Response):
        return chosen
    current = rate_settings.load(session)
    ranked = board.ranking(session, chosen.ask, current)
    unit_id = chosen.ask.only_unit
    assert unit_id is not None
    name = board.unit_names(session, [unit_id]).get(unit_id, ("", ""))[1]
    charts = _volume_charts(session, chosen, by_unit=False)
    context = {
        **_base(request, session, person, chosen, "unit"),
        "unit_name": name,
        "mine": ranked[0] if ranked else None,
        "bands": current.bands,
        "cards": _cards(session, chosen),
        "charts": _json(charts),
    }
    return render(request, "figures/unit.html", context)


@router.get("/figures/hotspots")
def hotspots_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    chosen = _guarded(request, session, settings, clock, person, "hotspots")
    if isinstance(chosen, Response):
        return chosen
    q = request.query_params
    try:
        by = export.choice(q, "by", hotspots.By, hotspots.By.category)
        every = export.choice(q, "every", hotspots.Every, hotspots.Every.day)
        minimum = export.minimum_of(q)
    except InvalidInput as exc:
        return _refused(
            request,
            session,
            BadFilter(str(exc.details.get("field")), exc.message),
            "hotspots",
            person,
        )
    f = chosen.ask.filters
    cells = hotspots.over_time(session, filters=f, by=by, every=every, tz=chosen.ask.tz)
    rising = hotspots.rising(session, filters=f, minimum=minimum)
    points, located_total = hotspots.located(session, filters=f, limit=LOCATED_ON_MAP)
    buckets = sorted({c.on for c in cells})
    top = hotspots.totals(session, filters=f, by=by, limit=8)
    keys = [c.key for c in top]
    series = []
    for c in top:
        counts = {cell.on: cell.count for cell in cells if cell.key == c.key}
        series.append(
            {
                "name": (c.label or c.key or _("none"))
                if by is hotspots.By.category
                else (c.key or _("none")),
                "data": [counts.get(b, 0) for b in buckets],
            }
        )
    charts = {
        "matrix": _matrix_chart(hotspots.matrix(session, filters=f)),
        "over_time": _chart("stacked", [b.isoformat() for b in buckets], series),
        "map": {
            "kind": "map",
            "points": [
                [p.longitude, p.latitude, p.number, p.category or "", p.district or ""]
                for p in points
            ],
        },
    }
    extra = {"by": by.value, "every": every.value}
    context = {
        **_base(request, session, person, chosen, "hotspots"),
        "by": by.value,
        "every": every.value,
        "minimum": minimum,
        "cells": [c for c in cells if c.key in keys][:200],
        "rising": rising,
        "located_total": located_total,
        "located_shown": len(points),
        "charts": _json(charts),
        "hot_export": _export_links(chosen, "hotspots", **extra),
        "rising_export": _export_links(chosen, "rising", minimum=str(minimum)),
    }
    return render(request, "figures/hotspots.html", context)


@router.get("/figures/tickets")
def drill(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ANYONE,
) -> Response:
    chosen = _guarded(request, session, settings, clock, person, "tickets")
    if isinstance(chosen, Response):
        return chosen
    q = request.query_params
    name, part = q.get("figure", ""), q.get("part", "numerator")
    if name not in board.CARDS:
        return _refused(
            request, session, BadFilter("figure", N_("no such figure")), "tickets", person
        )
    if part not in export.PARTS:
        return _refused(
            request,
            session,
            BadFilter("part", N_("part is numerator or denominator")),
            "tickets",
            person,
        )
    page = max(1, min(10_000, int(q["page"]) if q.get("page", "").isdigit() else 1))
    size = 50
    f = board.figure(session, chosen.ask, name)
    ids = f.numerator_ids if part == "numerator" else f.denominator_ids
    rows, total = board.tickets(session, ids, offset=(page - 1) * size, limit=size)
    context = {
        **_base(request, session, person, chosen, "tickets"),
        "figure": f,
        "figure_name": name,
        "figure_label": _(CARD_LABELS[name]),
        "part": part,
        "count": f.numerator if part == "numerator" else f.denominator,
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // size)),
        "page_query": chosen.query(figure=name, part=part),
        "statuses": Status,
        "ticket_exports": _export_links(chosen, "tickets", figure=name, part=part),
    }
    return render(request, "figures/tickets.html", context)


@router.get("/figures/export/{table}.{fmt}")
def export_table(
    table: str,
    fmt: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ANYONE,
) -> Response:
    if fmt not in ("csv", "xlsx"):
        return PlainTextResponse(_refusal("format", _("csv or xlsx")), status_code=422)
    allowed = export.HANDLER_TABLES if person.role is Role.handler else export.TABLES
    if table not in allowed:
        return PlainTextResponse(_refusal("table", _("no such table")), status_code=404)
    try:
        chosen = choose(request, session, settings, clock, person)
    except BadFilter as exc:
        return PlainTextResponse(_refusal(exc.field, _(exc.message)), status_code=422)
    params = dict(request.query_params)
    current = rate_settings.load(session)
    # Checked now, while an answer can still be 422: the stream cannot change its status.
    try:
        probe = export.build(session, table, chosen.ask, current, params)
    except InvalidInput as exc:
        return PlainTextResponse(
            _refusal(str(exc.details.get("field")), _(exc.message)),
            status_code=422,
        )
    headers = [_(COLUMNS.get(c, c)) for c in probe.columns]
    title = _(TABLE_TITLES[table])
    filename = f"{table}-{chosen.first.isoformat()}-{chosen.last.isoformat()}.{fmt}"
    disposition = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }
    factory = request.app.state.session_factory
    locale_filters = _filter_lines(session, chosen, person, params, table)
    rate_columns = [i for i, c in enumerate(probe.columns) if c in probe.rate_columns]
    definition_headers = [_("Figure"), _("Name"), _("Counts"), _("Definition")]
    read: list[Any] | None = probe.rows if isinstance(probe.rows, list) else None
    close_probe = getattr(probe.rows, "close", None)
    if close_probe is not None:
        close_probe()

    def rows() -> Iterator[Any]:
        if read is not None:  # a short table, read already
            yield from read
            return
        # A long one is read again while the answer streams, in a session of its own: the
        # request's is closed once the handler returns.
        with factory() as own:
            yield from export.build(own, table, chosen.ask, current, params).rows

    if fmt == "csv":
        return StreamingResponse(
            export.csv_lines(headers, rows()),
            media_type="text/csv; charset=utf-8",
            headers=disposition,
        )
    return StreamingResponse(
        export.xlsx_chunks(
            title=title,
            headers=headers,
            rows=rows(),
            filters=locale_filters,
            rate_columns=rate_columns,
            definition_headers=definition_headers,
            sheet_title=title,
        ),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers=disposition,
    )


def _refusal(field: str, problem: str) -> str:
    """An export's refusal: the parameter as named in the URL, then what is wrong with it."""
    return f"{field}: {problem}"


def _filter_lines(
    session: Session, chosen: Chosen, person: Person, params: Mapping[str, str], table: str
) -> list[tuple[str, str]]:
    every = _("All")
    unit = every
    if chosen.ask.filters.unit_id is not None:
        code, name = board.unit_names(session, [chosen.ask.filters.unit_id]).get(
            chosen.ask.filters.unit_id, ("", "")
        )
        unit = _("%(name)s (%(code)s) and its units below", name=name, code=code)
    lines = [
        (_("Period"), f"{chosen.first.isoformat()} – {chosen.last.isoformat()}"),
        (_("Unit"), unit),
        (_("Category"), chosen.category or every),
        (_("District"), chosen.district or every),
        (_("Channel"), _(CHANNELS[Channel(chosen.channel)]) if chosen.channel else every),
        (
            _("Clocks judged at"),
            chosen.ask.now.astimezone(chosen.ask.tz).strftime("%Y-%m-%d %H:%M"),
        ),
    ]
    for key in ("figure", "part", "by", "every", "minimum"):
        if params.get(key):
            lines.append((_(FIELD_NAMES[key]), params[key]))
    return lines


# ---------------------------------------------------------------- admin: weights and bands


def _settings_form(chosen: rate_settings.RateSettings) -> dict[str, Any]:
    bands = [{"name": b.name, "at_least": f"{b.at_least:g}"} for b in chosen.bands]
    bands += [{"name": "", "at_least": ""}] * (rate_settings.MAX_BANDS - len(bands))
    return {
        "weights": {
            n: str(getattr(chosen.weights, n)) for n in ("response", "resolution", "satisfaction")
        },
        "bands": bands,
    }


def _admin_page(
    request: Request,
    form: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        "form": form,
        "errors": errors or {},
        "error": error,
        "notice": _("Weights and bands saved: the ranking uses them from now on.")
        if request.query_params.get("done") == "figures_saved"
        else None,
    }
    return render(request, "figures/admin.html", context, status_code=status)


@router.get("/admin/figures")
def admin_figures(request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _admin_page(request, _settings_form(rate_settings.load(session)))


@router.post("/admin/figures", dependencies=[Depends(csrf_form)])
async def save_figures(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    data = await request.form()
    weights = {
        n: str(data.get(f"weights.{n}") or "")[:8]
        for n in ("response", "resolution", "satisfaction")
    }
    bands = []
    for i in range(rate_settings.MAX_BANDS):
        name = str(data.get(f"bands.{i}.name") or "").strip()[:64]
        at_least = str(data.get(f"bands.{i}.at_least") or "").strip()[:16]
        if name or at_least:
            bands.append({"name": name, "at_least": at_least})
    value = {"weights": weights, "bands": bands}
    try:
        with session.begin_nested():
            rate_settings.save(
                session,
                value=value,
                now=clock.now(),
                user_id=person.id,
                username=person.user.username,
                address=client_address(request),
            )
    except DomainError as exc:
        errors = {str(exc.details.get("field") or "weights"): _(exc.message)}
        form = {
            "weights": weights,
            "bands": bands
            + [{"name": "", "at_least": ""}] * (rate_settings.MAX_BANDS - len(bands)),
        }
        return _admin_page(request, form, errors=errors, error=_(exc.message), status=422)
    return RedirectResponse("/admin/figures?done=figures_saved", status_code=303)
