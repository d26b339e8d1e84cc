"""Admin: the working-day calendar — holidays and make-up working days (调休) as deadlines
count them, year by year.

GET  /admin/calendar?year=              a year: its months, whether its holidays are known
POST /admin/calendar/days               a holiday or a make-up working day
POST /admin/calendar/days/{day}/delete  remove an override
POST /admin/calendar/import             many days at once (all or nothing)
"""

from __future__ import annotations

import calendar as month_calendar
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from dispatch import policies
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.admin_common import ADMIN, POSTED, Text, attempt, done, notice, words
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

MONTH_NAMES = (
    N_("January"),
    N_("February"),
    N_("March"),
    N_("April"),
    N_("May"),
    N_("June"),
    N_("July"),
    N_("August"),
    N_("September"),
    N_("October"),
    N_("November"),
    N_("December"),
)
WEEKDAY_NAMES = (N_("Mo"), N_("Tu"), N_("We"), N_("Th"), N_("Fr"), N_("Sa"), N_("Su"))
YEARS = range(2000, 2101)

# ---------------------------------------------------------------- the working calendar


def _months(year: int, workday: Any, overrides: set[date]) -> list[dict[str, Any]]:
    """Each month as weeks of (day, kind) cells, Monday first; kind is workday, weekend,
    holiday (a weekday off) or makeup (a weekend day worked), "set" marks an override."""
    months = []
    for month in range(1, 13):
        weeks = []
        for week in month_calendar.Calendar().monthdatescalendar(year, month):
            cells: list[dict[str, Any] | None] = []
            for day in week:
                if day.month != month:
                    cells.append(None)
                    continue
                works, weekend = workday(day), day.weekday() >= 5
                kind = (
                    ("makeup" if works else "weekend")
                    if weekend
                    else ("workday" if works else "holiday")
                )
                cells.append({"day": day, "kind": kind, "set": day in overrides})
            weeks.append(cells)
        months.append({"month": month, "weeks": weeks})
    return months


def _calendar_page(
    request: Request,
    session: Any,
    settings: Any,
    year: int,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    import_text: str = "",
    status: int = 200,
) -> Response:
    calendar = policies.load_calendar(session, tz=settings.tz)
    summary = calendar.year(year)
    overrides = policies.list_calendar_days(session, year=year)
    context = {
        "year": year,
        "summary": summary,
        "overrides": overrides,
        "months": _months(year, calendar.is_workday, {d.day for d in overrides}),
        "form": form or {"kind": "holiday"},
        "errors": errors or {},
        "error": error,
        "import_text": import_text,
        "month_names": MONTH_NAMES,
        "weekday_names": WEEKDAY_NAMES,
        "notice": notice(request),
    }
    return render(request, "admin/calendar.html", context, status_code=status)


@router.get("/admin/calendar")
def calendar_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    year: Annotated[int | None, Query(ge=YEARS.start, le=YEARS.stop - 1)] = None,
) -> Response:
    chosen = year or clock.now().astimezone(settings.tz).year
    return _calendar_page(request, session, settings, chosen)


@router.post("/admin/calendar/days", dependencies=POSTED)
def set_day(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    day: Text = "",
    kind: Text = "holiday",
    name: Text = "",
) -> Response:
    form = {"day": day, "kind": kind, "name": name}
    try:
        chosen = date.fromisoformat(day.strip())
    except ValueError:
        chosen = None
    this_year = clock.now().astimezone(settings.tz).year
    if chosen is None or chosen.year not in YEARS:
        return _calendar_page(
            request,
            session,
            settings,
            this_year,
            form=form,
            errors={"day": _("A date such as 2027-10-01.")},
            status=422,
        )
    _row, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: policies.set_calendar_day(
            session, day=chosen, is_workday=kind == "workday", name=name.strip() or None
        ),
        action="admin.calendar.set",
        target=f"day:{chosen.isoformat()}",
        detail={"workday": kind == "workday", "name": name.strip() or None},
    )
    if refused is not None:
        return _calendar_page(
            request,
            session,
            settings,
            chosen.year,
            form=form,
            errors={"name": words(refused)},
            status=422,
        )
    return done("/admin/calendar", "day_saved", year=str(chosen.year))


@router.post("/admin/calendar/days/{day}/delete", dependencies=POSTED)
def delete_day(
    day: date, request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    attempt(
        session,
        request,
        clock,
        person,
        lambda: policies.delete_calendar_day(session, day=day),
        action="admin.calendar.delete",
        target=f"day:{day.isoformat()}",
    )
    return done("/admin/calendar", "day_deleted", year=str(day.year))


@router.post("/admin/calendar/import", dependencies=POSTED)
def import_days(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    text: Annotated[str, Form(max_length=100_000)] = "",
    year: Annotated[int, Form(ge=YEARS.start, le=YEARS.stop - 1)] = 2026,
) -> Response:
    rows, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: policies.import_calendar_days(session, text=text),
        action="admin.calendar.import",
    )
    if refused is not None or not rows:
        return _calendar_page(
            request,
            session,
            settings,
            year,
            error=words(refused) if refused else None,
            import_text=text,
            status=422,
        )
    return done("/admin/calendar", "days_imported", year=str(rows[0].day.year))
