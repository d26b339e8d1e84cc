"""The centre's figures on pages (issue 18): the dashboard, the units' ranking, a handler's
own unit, hot spots and the tickets behind a figure; the tables' CSV and XLSX exports are
``figures_export``, the admin's weights and bands ``figures_admin``, the filters and role
checks they share ``figures_common``.

    GET  /figures                         dashboard: cards and charts (centre roles)
    GET  /figures/units                   the ranking: three rates, score, band, rank
    GET  /figures/unit                    a handler's own unit: its figures and its band
    GET  /figures/hotspots                category × district over time, rising, the map
    GET  /figures/tickets                 ?figure=…&part=numerator|denominator: the tickets

Filters (query): ``from`` and ``to`` (local dates, both days included; at most 92 days),
``unit`` (a unit code: it and its units below), ``category`` (the national code's leading
digits), ``district``, ``channel``. A bad one answers 422 naming it. A handler's unit is
always their own: whatever ``unit`` says, nothing of another unit is read.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role
from core.errors import InvalidInput
from hotline.figures import board, export, hotspots
from hotline.figures import settings as rate_settings
from tickets.models import Status
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import nav
from web.pages.figures_common import (
    ANYONE,
    CARD_LABELS,
    CENTRE,
    HANDLER,
    WATCHING,
    BadFilter,
    Chosen,
    export_links,
    guarded,
    page_context,
    page_number,
    pct,
    refused,
)
from web.pages.i18n import N_, _
from web.pages.nav import NavItem
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
LOCATED_ON_MAP = 2_000
CHART_UNITS = 20  # units on a per-unit chart
MATRIX_SIDE = 12  # categories and districts on the heat map

nav.register(
    NavItem("/figures", N_("Figures"), CENTRE, order=38),
    NavItem("/figures/unit", N_("Our figures"), frozenset({Role.handler}), order=38),
)


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


@router.get("/figures")
def dashboard(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    chosen = guarded(request, session, settings, clock, person, "dashboard")
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
        **page_context(request, session, person, chosen, "dashboard"),
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
    chosen = guarded(request, session, settings, clock, person, "units")
    if isinstance(chosen, Response):
        return chosen
    current = rate_settings.load(session)
    context = {
        **page_context(request, session, person, chosen, "units"),
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
    chosen = guarded(request, session, settings, clock, person, "unit")
    if isinstance(chosen, Response):
        return chosen
    current = rate_settings.load(session)
    ranked = board.ranking(session, chosen.ask, current)
    unit_id = chosen.ask.only_unit
    assert unit_id is not None
    name = board.unit_names(session, [unit_id]).get(unit_id, ("", ""))[1]
    charts = _volume_charts(session, chosen, by_unit=False)
    context = {
        **page_context(request, session, person, chosen, "unit"),
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
    chosen = guarded(request, session, settings, clock, person, "hotspots")
    if isinstance(chosen, Response):
        return chosen
    q = request.query_params
    try:
        by = export.choice(q, "by", hotspots.By, hotspots.By.category)
        every = export.choice(q, "every", hotspots.Every, hotspots.Every.day)
        minimum = export.minimum_of(q)
    except InvalidInput as exc:
        return refused(
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
        **page_context(request, session, person, chosen, "hotspots"),
        "by": by.value,
        "every": every.value,
        "minimum": minimum,
        "cells": [c for c in cells if c.key in keys][:200],
        "rising": rising,
        "located_total": located_total,
        "located_shown": len(points),
        "charts": _json(charts),
        "hot_export": export_links(chosen, "hotspots", **extra),
        "rising_export": export_links(chosen, "rising", minimum=str(minimum)),
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
    chosen = guarded(request, session, settings, clock, person, "tickets")
    if isinstance(chosen, Response):
        return chosen
    q = request.query_params
    name, part = q.get("figure", ""), q.get("part", "numerator")
    if name not in board.CARDS:
        return refused(
            request, session, BadFilter("figure", N_("no such figure")), "tickets", person
        )
    if part not in export.PARTS:
        return refused(
            request,
            session,
            BadFilter("part", N_("part is numerator or denominator")),
            "tickets",
            person,
        )
    page = page_number(request)
    size = 50
    f = board.figure(session, chosen.ask, name)
    ids = f.numerator_ids if part == "numerator" else f.denominator_ids
    rows, total = board.tickets(session, ids, offset=(page - 1) * size, limit=size)
    context = {
        **page_context(request, session, person, chosen, "tickets"),
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
        "ticket_exports": export_links(chosen, "tickets", figure=name, part=part),
    }
    return render(request, "figures/tickets.html", context)
