"""The working-day calendar's overrides: holidays and make-up working days (调休); and an
administrator's confirmation of a year (dispatch.calendar: until a year is confirmed its
working-day deadlines are flagged "calendar not confirmed" on the pages)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlmodel import Session

from accounts import audit
from accounts.models import User
from core.clock import Clock
from dispatch import calendar as work_calendar
from dispatch import policies
from dispatch.models import CalendarDay, CalendarYear
from web.api import examples as ex
from web.deps import Admin, ClockDep, CurrentUser, SessionDep
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/calendar", tags=["calendar"], responses=ERROR_RESPONSES)


class CalendarDayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    is_workday: StrictBool
    name: str | None = Field(default=None, max_length=64)


class CalendarImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000, description=policies.IMPORT_FORMATS)


class CalendarEntryRead(BaseModel):
    day: date
    name: str | None


class YearRead(BaseModel):
    year: int
    known: bool = Field(
        description="false: this year's holidays are not loaded, so working "
        "days are counted as Monday to Friday until an administrator enters them"
    )
    holidays: list[CalendarEntryRead]
    makeup_workdays: list[CalendarEntryRead]
    confirmed: bool = Field(
        default=False,
        description="an administrator checked this year against the State Council's notice; "
        "until then its working-day deadlines are flagged as not confirmed",
    )


class YearConfirmation(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str | None = Field(
        default=None,
        max_length=work_calendar.NOTE_LIMIT,
        description="what was checked, e.g. the notice's number (国办发明电〔2026〕…号)",
    )


YearPath = Annotated[int, Path(ge=work_calendar.MIN_YEAR, le=work_calendar.MAX_YEAR)]


@router.get(
    "/years/{year}",
    response_model=YearRead,
    summary="A year's working-day calendar",
    responses=error_responses({422: "the year is out of range"}),
)
def year(year: YearPath, session: SessionDep, _: CurrentUser) -> YearRead:
    """The working-day calendar of one year, as deadlines will count it."""
    read = YearRead.model_validate(policies.load_calendar(session).year(year), from_attributes=True)
    read.confirmed = year in work_calendar.confirmed_years(session)
    return read


@router.put(
    "/years/{year}/known",
    response_model=CalendarYear,
    summary="Confirm a year's calendar",
    responses=error_responses(
        {
            403: "only administrators confirm",
            409: "the year is confirmed already",
            422: "the year is out of range, or the note too long",
        }
    ),
    openapi_extra=ex.body(checked=ex.YEAR_CONFIRM),
)
def confirm_year(
    year: YearPath,
    body: YearConfirmation,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Admin,
) -> CalendarYear:
    """Confirm a year: its holidays and make-up working days were checked. 409 when it is
    confirmed already (two administrators at once: the second is told)."""
    return _mark(request, session, clock, user, year=year, known=True, note=body.note)


@router.delete(
    "/years/{year}/known",
    response_model=CalendarYear,
    summary="Withdraw a year's confirmation",
    responses=error_responses(
        {403: "only administrators withdraw", 409: "the year is not confirmed"}
    ),
)
def withdraw_year(
    year: YearPath, request: Request, session: SessionDep, clock: ClockDep, user: Admin
) -> CalendarYear:
    """Withdraw a confirmation (the year's deadlines are flagged again). The row stays, with
    who withdrew it and when; 409 when the year is not confirmed."""
    return _mark(request, session, clock, user, year=year, known=False, note=None)


def _mark(
    request: Request,
    session: Session,
    clock: Clock,
    user: User,
    *,
    year: int,
    known: bool,
    note: str | None,
) -> CalendarYear:
    row = work_calendar.mark_year(
        session, year=year, known=known, marked_by=user.id, now=clock.now(), note=note
    )
    # The same entry as the admin page's, so the audit trail names it alike.
    audit.record(
        session,
        at=clock.now(),
        action="admin.calendar.confirm" if known else "admin.calendar.withdraw",
        user_id=user.id,
        username=user.username,
        target=f"year:{year}",
        address=request.client.host if request.client else None,
        detail={"note": row.note, "via": "api"},
    )
    return row


@router.get(
    "/days",
    response_model=list[CalendarDay],
    summary="List the calendar's overrides",
    responses=error_responses({422: "the year is out of range"}),
)
def list_days(
    session: SessionDep,
    _: CurrentUser,
    year: Annotated[int | None, Query(ge=date.min.year, le=date.max.year)] = None,
) -> list[CalendarDay]:
    """The holidays and make-up working days (调休) entered, by day; all years, or `year`'s."""
    return policies.list_calendar_days(session, year=year)


@router.put(
    "/days/{day}",
    response_model=CalendarDay,
    summary="Set a day as holiday or working day",
    responses=error_responses(
        {403: "only administrators edit the calendar", 422: "the day or the name is invalid"}
    ),
    openapi_extra=ex.body(holiday=ex.DAY_HOLIDAY, makeup=ex.DAY_MAKEUP),
)
def set_day(day: date, body: CalendarDayBody, session: SessionDep, _: Admin) -> CalendarDay:
    """Mark one day a holiday (`is_workday: false`) or a make-up working day (调休, `true`);
    deadlines counted from now on follow it."""
    return policies.set_calendar_day(session, day=day, is_workday=body.is_workday, name=body.name)


@router.delete(
    "/days/{day}",
    status_code=204,
    summary="Remove a day's override",
    responses=error_responses(
        {403: "only administrators edit the calendar", 404: "the day has no override"}
    ),
)
def delete_day(day: date, session: SessionDep, _: Admin) -> Response:
    """The day counts as an ordinary weekday or weekend again."""
    policies.delete_calendar_day(session, day=day)
    return Response(status_code=204)


@router.post(
    "/days/import",
    response_model=list[CalendarDay],
    summary="Import holidays and make-up days",
    responses=error_responses(
        {
            403: "only administrators edit the calendar",
            422: "a line is invalid (its number is named); nothing is written",
        }
    ),
    openapi_extra=ex.body(year=ex.CALENDAR_IMPORT),
)
def import_days(body: CalendarImport, session: SessionDep, _: Admin) -> list[CalendarDay]:
    """All or nothing: one bad line rejects the whole import."""
    return policies.import_calendar_days(session, text=body.text)
