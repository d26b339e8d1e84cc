"""The figures' tables as CSV and XLSX (issue 18), with the same filters as the pages
(``figures_common``); a handler's only ever their own unit, and only the tables a unit may
read. The XLSX carries the filters and the figures' definitions; both stream.

    GET  /figures/export/{table}.csv|xlsx  a bad table 404, a bad format or filter 422"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from accounts.models import Role
from core.errors import InvalidInput
from hotline.figures import board, export
from hotline.figures import settings as rate_settings
from tickets.models import Channel
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.figures_common import ANYONE, CHANNELS, FIELD_NAMES, BadFilter, Chosen, choose
from web.pages.i18n import N_, _
from web.pages.people import Person

router = APIRouter(include_in_schema=False)

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
    "call_list": N_("Calls behind a figure"),
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
    "arrived_at": N_("Arrived"),
    "caller": N_("Caller"),
    "queue_wait_s": N_("Queue wait (s)"),
    "queue_outcome": N_("Left the queue"),
    "agent": N_("Operator"),
}


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
