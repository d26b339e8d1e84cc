"""The working-day calendar's overrides: holidays and make-up working days (调休)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from dispatch import policies
from dispatch.models import CalendarDay
from web.deps import Admin, CurrentUser, SessionDep
from web.errors import ERROR_RESPONSES

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


@router.get("/years/{year}", response_model=YearRead)
def year(
    year: Annotated[int, Path(ge=2000, le=2100)], session: SessionDep, _: CurrentUser
) -> YearRead:
    """The working-day calendar of one year, as deadlines will count it."""
    return YearRead.model_validate(policies.load_calendar(session).year(year), from_attributes=True)


@router.get("/days", response_model=list[CalendarDay])
def list_days(
    session: SessionDep,
    _: CurrentUser,
    year: Annotated[int | None, Query(ge=date.min.year, le=date.max.year)] = None,
) -> list[CalendarDay]:
    return policies.list_calendar_days(session, year=year)


@router.put("/days/{day}", response_model=CalendarDay)
def set_day(day: date, body: CalendarDayBody, session: SessionDep, _: Admin) -> CalendarDay:
    return policies.set_calendar_day(session, day=day, is_workday=body.is_workday, name=body.name)


@router.delete("/days/{day}", status_code=204)
def delete_day(day: date, session: SessionDep, _: Admin) -> Response:
    policies.delete_calendar_day(session, day=day)
    return Response(status_code=204)


@router.post("/days/import", response_model=list[CalendarDay])
def import_days(body: CalendarImport, session: SessionDep, _: Admin) -> list[CalendarDay]:
    """All or nothing: one bad line rejects the whole import."""
    return policies.import_calendar_days(session, text=body.text)
