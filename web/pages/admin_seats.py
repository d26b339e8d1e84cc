"""Admin: operators' seats — the SIP extensions their phones register with.

GET  /admin/seats                     every seat, registered or not, from where, until when
POST /admin/seats                     create one: its password is shown on the answer, once
POST /admin/seats/{ext}/password      a new password (shown once); its phones must be set again
POST /admin/seats/{ext}/disable       no phone registers with it any more

A password is never stored (only its digest hashes, hotline.calls.seats), so the page that
shows it is the answer to the post itself, not a redirect: reloading it does not show it again
but asks to post again, which the browser warns about.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from starlette.responses import Response

from hotline.calls import seats as seat_service
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.admin_common import ADMIN, POSTED, attempt, done, notice, words
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

Extension = Annotated[str, Path(pattern=r"^\d{2,16}$")]
# This page's notices after a post (?done=<key>), beside admin_common's.
SEAT_NOTICES = {"seat_disabled": N_("Seat disabled: its phones can no longer register.")}


def _notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(SEAT_NOTICES[key]) if key in SEAT_NOTICES else notice(request)


def _page(
    request: Request,
    session: Any,
    clock: Any,
    settings: Any,
    *,
    error: str | None = None,
    shown: tuple[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    context = {
        "seats": seat_service.list_seats(session=session, now=clock.now()),
        "realm": settings.acd.realm,
        "error": error,
        "shown": shown,  # (extension, password) just made: shown this once
        "form": form or {"extension": "", "name": ""},
        "notice": _notice(request),
    }
    return render(request, "admin/seats.html", context, status_code=status)


@router.get("/admin/seats")
def seats_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
) -> Response:
    return _page(request, session, clock, settings)


@router.post("/admin/seats", dependencies=POSTED)
def create_seat(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    extension: Annotated[str, Form(max_length=40)],
    name: Annotated[str, Form(max_length=1000)] = "",
    person: Person = ADMIN,
) -> Response:
    extension, name = extension.strip(), name.strip()
    made, refusal = attempt(
        session,
        request,
        clock,
        person,
        lambda: seat_service.create_seat(
            session=session,
            extension=extension,
            display_name=name,
            realm=settings.acd.realm,
            now=clock.now(),
        ),
        action="admin.seat.create",
        target=f"seat:{extension}",
    )
    if refusal is not None or made is None:
        error = words(refusal) if refusal else None
        form = {"extension": extension, "name": name}
        return _page(request, session, clock, settings, error=error, form=form, status=422)
    return _page(request, session, clock, settings, shown=(extension, made[1]))


@router.post("/admin/seats/{extension}/password", dependencies=POSTED)
def reset_password(
    extension: Extension,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
) -> Response:
    password, refusal = attempt(
        session,
        request,
        clock,
        person,
        lambda: seat_service.reset_password(
            session=session, extension=extension, realm=settings.acd.realm
        ),
        action="admin.seat.reset_password",
        target=f"seat:{extension}",
    )
    if refusal is not None or password is None:
        error = words(refusal) if refusal else None
        return _page(request, session, clock, settings, error=error, status=404)
    return _page(request, session, clock, settings, shown=(extension, password))


@router.post("/admin/seats/{extension}/disable", dependencies=POSTED)
def disable_seat(
    extension: Extension,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
) -> Response:
    _, refusal = attempt(
        session,
        request,
        clock,
        person,
        lambda: seat_service.disable_seat(session=session, extension=extension),
        action="admin.seat.disable",
        target=f"seat:{extension}",
    )
    if refusal is not None:
        return _page(request, session, clock, settings, error=words(refusal), status=404)
    return done("/admin/seats", "seat_disabled")
