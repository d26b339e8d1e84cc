"""Admin: the working-day calendar — holidays and make-up working days (调休) as deadlines
count them, year by year.

GET  /admin/calendar?year=              a year: its months, whether its holidays are known
POST /admin/calendar/days               a holiday or a make-up working day
POST /admin/calendar/days/{day}/delete  remove an override
POST /admin/calendar/import             many days at once (all or nothing)
POST /admin/calendar/years/{year}/confirm    the year is known: an administrator checked it
POST /admin/calendar/years/{year}/withdraw   it is not (any more)

A year is known only when an administrator says so: the page shows this year and the next
with their holidays and make-up working days, whoever confirmed them and when, and warns
from 1 December while next year waits. Confirming changes no deadline (see
dispatch/calendar.py); it takes the "calendar not confirmed" flag off the year's deadlines.
"""

from __future__ import annotations

import calendar as month_calendar
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from sqlmodel import Session
from starlette.responses import Response

from accounts import service as accounts
from accounts.models import Role
from core.errors import Conflict, DomainError, InvalidInput
from dispatch import calendar as work_calendar
from dispatch import policies
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import nav
from web.pages.admin_common import ADMIN, POSTED, Text, attempt, done, notice, words
from web.pages.i18n import N_, _
from web.pages.nav import NavItem
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)


def _years_waiting(session: Session, person: Person, now: datetime) -> int:
    """The years an administrator should confirm today: a count in every admin page's
    navigation, the admin home's included, until they are confirmed."""
    confirmed = work_calendar.confirmed_years(session)
    return len(work_calendar.years_to_confirm(now.date(), confirmed))


nav.register(
    NavItem(
        "/admin/calendar",
        N_("Working calendar"),
        frozenset({Role.admin}),
        order=91,
        count=_years_waiting,
    )
)

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
YEARS = range(work_calendar.MIN_YEAR, work_calendar.MAX_YEAR + 1)
YEAR_NOTICES = {
    "year_confirmed": N_(
        "Year confirmed: its deadlines are no longer flagged as counted on an unconfirmed calendar."
    ),
    "year_withdrawn": N_(
        "Confirmation withdrawn: the year's deadlines are flagged as counted on an "
        "unconfirmed calendar."
    ),
}

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
    today = request.app.state.clock.now().astimezone(settings.tz).date()
    shown = sorted({today.year, today.year + 1, year})
    marks = work_calendar.year_marks(session, years=shown)
    markers = {u.id: u for u in accounts.list_users(session)}
    confirmed = frozenset(y for y, mark in marks.items() if mark.known)
    context = {
        "year": year,
        "summary": summary,
        "years": [
            {
                "summary": calendar.year(y),
                "mark": marks.get(y),
                "marker": markers.get(marks[y].marked_by) if y in marks else None,
            }
            for y in shown
        ],
        "to_confirm": work_calendar.years_to_confirm(today, confirmed),
        "confirmed": year in confirmed,
        "overrides": overrides,
        "months": _months(year, calendar.is_workday, {d.day for d in overrides}),
        "form": form or {"kind": "holiday"},
        "errors": errors or {},
        "error": error,
        "import_text": import_text,
        "month_names": MONTH_NAMES,
        "weekday_names": WEEKDAY_NAMES,
        "notice": notice(request) or _year_notice(request),
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


# ---------------------------------------------------------------- confirming a year


def _year_notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(YEAR_NOTICES[key]) if key in YEAR_NOTICES else None


def _mark_refusal(exc: DomainError, known: bool) -> str:
    if isinstance(exc, Conflict):
        if known:
            return _("This year is already confirmed.")
        return _("This year is not confirmed: there is nothing to withdraw.")
    if isinstance(exc, InvalidInput) and "note" in exc.details:
        return _("The note is too long: at most 500 characters.")
    return _("Only the years 2000 to 2100 can be confirmed.")


def _mark(
    request: Request,
    session: Any,
    clock: Any,
    settings: Any,
    person: Person,
    *,
    year: int,
    known: bool,
    note: str,
) -> Response:
    _row, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: work_calendar.mark_year(
            session, year=year, known=known, marked_by=person.id, now=clock.now(), note=note
        ),
        action="admin.calendar.confirm" if known else "admin.calendar.withdraw",
        target=f"year:{year}",
        detail={"note": note.strip()[:500] or None},
    )
    shown = year if year in YEARS else clock.now().astimezone(settings.tz).year
    if refused is not None:
        return _calendar_page(
            request, session, settings, shown, error=_mark_refusal(refused, known), status=409
        )
    return done("/admin/calendar", "year_confirmed" if known else "year_withdrawn", year=str(year))


@router.post("/admin/calendar/years/{year}/confirm", dependencies=POSTED)
def confirm_year(
    year: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    note: Text = "",
) -> Response:
    return _mark(request, session, clock, settings, person, year=year, known=True, note=note)


@router.post("/admin/calendar/years/{year}/withdraw", dependencies=POSTED)
def withdraw_year(
    year: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    note: Text = "",
) -> Response:
    return _mark(request, session, clock, settings, person, year=year, known=False, note=note)
