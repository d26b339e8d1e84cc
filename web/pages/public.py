"""The public site: no sign-in, a phone screen first, Chinese by default.

GET  /public                     → /public/new
GET  /public/new                 the request form
POST /public/new                 submit it: the ticket number and lookup code at once
GET  /public/track               the follow-up form
POST /public/track               a request's public timeline (number + code or phone's last 4)
POST /public/track/rate          the sender's rating once the reply is approved
GET  /public/requests            recent non-confidential requests, a list and a map
GET  /public/requests.geojson    the same as GeoJSON

Lookup codes travel in form posts only, never in a URL (history, proxies' logs). A state
change is refused when the browser says it comes from another site (Origin); the form's own
random id is the intake's idempotency key, so the same form sent twice is one ticket."""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.responses import Response

from core.db import session_scope
from core.errors import Conflict, InvalidInput
from hotline import attachments, public_limits
from hotline import public as site
from tickets.models import Satisfaction
from web.pages.i18n import N_, _
from web.pages.people import client_address, page_locale
from web.pages.templating import render

router = APIRouter(prefix="/public", include_in_schema=False, dependencies=[Depends(page_locale)])

PHOTO_MAX_BYTES = 5 * 1024 * 1024
# The whole form: three photos and the text fields; a larger body is refused unread.
MAX_BODY = site.MAX_PHOTOS * PHOTO_MAX_BYTES + 256 * 1024
DESCRIPTION_MAX = 2000

CATEGORY_LABELS = {
    "010101": N_("Property management"),
    "020301": N_("Street cleanliness"),
    "020401": N_("Street lights"),
    "020402": N_("Manhole covers"),
    "020403": N_("Damaged roads"),
    "020201": N_("Illegal construction"),
    "020101": N_("Street vending on the road"),
    "020602": N_("Neighbourhood noise"),
    "030202": N_("Cooking fumes from restaurants"),
    "040301": N_("Traffic order"),
    "060202": N_("Consumer rights"),
    "090104": N_("Water supply"),
    "090203": N_("Power supply"),
    site.OTHER: N_("Something else"),
}
STATUS_LABELS = {
    "received": N_("Received"),
    "in_progress": N_("Being handled"),
    "replied": N_("Replied"),
    "closed": N_("Closed"),
}
STEP_LABELS = {
    "received": N_("Request received"),
    "dispatched": N_("Sent to the handling unit"),
    "replied": N_("The unit replied"),
    "rated": N_("You rated the reply"),
    "closed": N_("Closed"),
    "reopened": N_("Reopened for more work"),
    "merged": N_("Joined with a request about the same matter"),
}
SATISFACTION_LABELS = {
    "satisfied": N_("Satisfied"),
    "basically_satisfied": N_("Basically satisfied"),
    "dissatisfied": N_("Dissatisfied"),
}
PHOTO_PROBLEMS = {
    "too_big": N_("%(name)s is larger than %(mb)d MB."),
    "type": N_("%(name)s is not a JPEG or PNG photo."),
    "empty": N_("%(name)s is empty."),
}

_FORM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PHONE = re.compile(r"^\+?[0-9][0-9\- ]{5,19}$")


_LIMITS_LOCK = threading.Lock()


def _limits(request: Request) -> public_limits.Limits:
    """The app's limiters, made on first use: shared through Redis when the platform has
    one (several web processes), else this process's (a test puts tighter ones in their
    place)."""
    state = request.app.state
    with _LIMITS_LOCK:
        if getattr(state, "public_limits", None) is None:
            state.public_limits = public_limits.Limits.for_settings(state.settings)
        limits: public_limits.Limits = state.public_limits
    return limits


def _now(request: Request):
    return request.app.state.clock.now()


def _address(request: Request) -> str:
    return client_address(request) or "unknown"


def _from_elsewhere(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")


def _refused_origin(request: Request) -> Response:
    return render(request, "errors/csrf.html", status_code=403)


def _categories() -> list[tuple[str, str]]:
    return [(code, _(label)) for code, label in CATEGORY_LABELS.items()]


def _values(**given: Any) -> dict[str, Any]:
    blank = {
        "category": "",
        "description": "",
        "address": "",
        "latitude": "",
        "longitude": "",
        "phone": "",
        "anonymous": False,
        "confidential": False,
    }
    return {**blank, **given}


def _new_form(
    request: Request,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    form_id: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "public/new.html",
        {
            "values": values or _values(),
            "errors": errors or {},
            "form_id": form_id or secrets.token_urlsafe(24),
            "categories": _categories(),
            "notice": notice,
            "max_photos": site.MAX_PHOTOS,
            "photo_mb": PHOTO_MAX_BYTES // (1024 * 1024),
            "description_max": DESCRIPTION_MAX,
        },
        status_code=status,
    )


@router.get("")
def public_root() -> Response:
    return RedirectResponse("/public/new", status_code=303)


@router.get("/new")
def new_form(request: Request) -> Response:
    return _new_form(request)


def _coordinate(text: str, low: float, high: float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def _check(values: dict[str, Any]) -> tuple[site.PublicRequest | None, dict[str, str]]:
    """The form's fields checked one by one, every problem named by its field."""
    errors: dict[str, str] = {}
    category = values["category"]
    if category not in CATEGORY_LABELS:
        errors["category"] = _("Choose what your request is about.")
    description = values["description"]
    if len(description) < 5:
        errors["description"] = _("Describe the matter in at least 5 characters.")
    elif len(description) > DESCRIPTION_MAX:
        errors["description"] = _("At most %(n)d characters.", n=DESCRIPTION_MAX)
    address = values["address"]
    if not address:
        errors["address"] = _("Say where it is: a street, a building or a landmark.")
    elif len(address) > 300:
        errors["address"] = _("At most %(n)d characters.", n=300)
    lat_text, lon_text = values["latitude"], values["longitude"]
    latitude = longitude = None
    if lat_text or lon_text:
        latitude = _coordinate(lat_text, -90, 90)
        longitude = _coordinate(lon_text, -180, 180)
        if latitude is None or longitude is None:
            errors["location"] = _(
                "The map point needs a latitude (−90 to 90) and a longitude (−180 to 180)."
            )
    phone = values["phone"]
    if not values["anonymous"]:
        if not phone:
            errors["phone"] = _(
                "Leave a phone number so that the unit can reach you, or send it anonymously."
            )
        elif not _PHONE.match(phone):
            errors["phone"] = _("This is not a phone number.")
    elif phone and not _PHONE.match(phone):
        errors["phone"] = _("This is not a phone number.")
    if errors:
        return None, errors
    return (
        site.PublicRequest(
            category=category,
            description=description,
            address=address,
            latitude=latitude,
            longitude=longitude,
            phone=phone or None,
            anonymous=values["anonymous"],
            confidential=values["confidential"],
        ),
        {},
    )


async def _photos(form: Any) -> list[attachments.Upload]:
    photos = []
    for item in form.getlist("photos"):
        if isinstance(item, UploadFile) and item.filename:
            data = await item.read(PHOTO_MAX_BYTES + 1)
            photos.append(attachments.Upload(filename=item.filename, data=data))
    return photos


@router.post("/new")
async def submit(request: Request) -> Response:
    if _from_elsewhere(request):
        return _refused_origin(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return _new_form(
            request,
            errors={
                "photos": _(
                    "The photos are too large together: at most %(n)d MB each.",
                    n=PHOTO_MAX_BYTES // (1024 * 1024),
                )
            },
            status=413,
        )
    async with request.form(max_files=site.MAX_PHOTOS + 1, max_fields=40) as form:
        # A multipart body passes web.guards.RejectNul unread: PostgreSQL text cannot hold
        # a NUL, and no one means one, so it is dropped here.
        text = {
            name: str(form.get(name) or "").replace("\x00", "").strip()
            for name in (
                "category",
                "description",
                "address",
                "latitude",
                "longitude",
                "phone",
                "form_id",
            )
        }
        values = _values(
            **{k: v for k, v in text.items() if k != "form_id"},
            anonymous=form.get("anonymous") == "on",
            confidential=form.get("confidential") == "on",
        )
        form_id = text["form_id"] if _FORM_ID.match(text["form_id"]) else None
        photos = await _photos(form)
    checked, errors = _check(values)
    limits = site.photo_limits(attachments.Limits.of(request.app.state.settings), PHOTO_MAX_BYTES)
    if len(photos) > site.MAX_PHOTOS:
        errors["photos"] = _("At most %(n)d photos.", n=site.MAX_PHOTOS)
    for photo in photos:
        try:
            attachments.check(photo, limits)
        except attachments.AttachmentRefused as refused:
            errors["photos"] = _(
                PHOTO_PROBLEMS[refused.problem],
                name=refused.filename,
                mb=limits.max_bytes // (1024 * 1024),
            )
            break
    if errors or checked is None:
        if photos and "photos" not in errors:
            # A browser cannot be given files back: say so rather than lose them silently.
            errors["photos"] = _("Your photos were not kept: choose them again, please.")
        return _new_form(request, values=values, errors=errors, form_id=form_id, status=422)
    now = _now(request)
    # in a worker thread: a shared limiter asks Redis
    allowed = await run_in_threadpool(
        _limits(request).allow_submission, address=_address(request), phone=checked.phone, now=now
    )
    if not allowed:
        return _new_form(
            request,
            values=values,
            form_id=form_id,
            notice=_(
                "Too many requests from here in a short time. Please try again later, "
                "or call 12345."
            ),
            status=429,
        )
    settings = request.app.state.settings

    def work() -> tuple[str, str, bool]:
        with session_scope(request.app.state.session_factory) as session:
            done = site.submit_request(
                session,
                request=checked,
                photos=photos,
                store=attachments.store_for(settings),
                limits=limits,
                secret=settings.secret_key,
                now=now,
                idempotency_key=form_id or secrets.token_urlsafe(24),
                tz=settings.tz,
                defer_duplicates=request.app.state.defer_duplicates,
            )
            return done.ticket.number, done.code, done.created

    try:
        number, code, _created = await run_in_threadpool(work)
    except Conflict:
        # The same form sent again with other contents: the first one stands.
        return _new_form(
            request,
            values=values,
            notice=_(
                "This form was already sent. Its request stands as it was sent; "
                "start a new form for another request."
            ),
            status=409,
        )
    return render(request, "public/submitted.html", {"number": number, "code": code})


# ---------------------------------------------------------------- following a request


def _track_form(
    request: Request,
    *,
    number: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "public/track.html",
        {"number": number, "error": error, "view": None},
        status_code=status,
    )


@router.get("/track")
def track_form(request: Request) -> Response:
    return _track_form(request)


def _timeline(view: site.PublicView) -> list[dict[str, Any]]:
    return [
        {
            "label": _(STEP_LABELS[step.kind]),
            "kind": step.kind,
            "at": step.at,
            "unit": step.unit,
            "text": step.text,
            "satisfaction": _(SATISFACTION_LABELS[step.satisfaction])
            if step.satisfaction in SATISFACTION_LABELS
            else None,
        }
        for step in view.steps
    ]


async def _lookup(
    request: Request,
    *,
    number: str,
    code: str,
    last4: str,
    then: Callable[[Any, Any], str | None] | None = None,
) -> Response:
    """The request's page if number and code (or phone digits) fit; every miss counts
    against the client's address, and too many misses refuse it for a while."""
    limits, now, address = _limits(request), _now(request), _address(request)
    if await run_in_threadpool(limits.failed_lookups.blocked, address, now):
        return _track_form(
            request,
            number=number,
            error=_("Too many attempts. Please wait a quarter of an hour and try again."),
            status=429,
        )
    settings = request.app.state.settings

    def work() -> tuple[site.PublicView | None, str | None]:
        with session_scope(request.app.state.session_factory) as session:
            ticket = site.find_request(
                session,
                secret=settings.secret_key,
                number=number,
                code=code,
                phone_last4=last4,
            )
            if ticket is None:
                return None, None
            notice = then(session, ticket) if then else None
            return site.public_view(session, ticket=ticket), notice

    view, notice = await run_in_threadpool(work)
    if view is None:
        await run_in_threadpool(limits.failed_lookups.hit, address, now)
        return _track_form(
            request,
            number=number,
            error=_("No request matches this number and code. Check both and try again."),
            status=404,
        )
    return render(
        request,
        "public/track.html",
        {
            "number": number,
            "error": None,
            "view": view,
            "category_label": category_label,
            "status_label": _(STATUS_LABELS[view.status]),
            "steps": _timeline(view),
            "code": code,
            "last4": last4,
            "notice": notice,
            "satisfactions": [(k, _(v)) for k, v in SATISFACTION_LABELS.items()],
        },
    )


@router.post("/track")
async def track(
    request: Request,
    number: Annotated[str, Form(max_length=40)] = "",
    code: Annotated[str, Form(max_length=20)] = "",
    last4: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    if _from_elsewhere(request):
        return _refused_origin(request)
    return await _lookup(request, number=number.strip(), code=code.strip(), last4=last4.strip())


@router.post("/track/rate")
async def rate(
    request: Request,
    number: Annotated[str, Form(max_length=40)] = "",
    code: Annotated[str, Form(max_length=20)] = "",
    last4: Annotated[str, Form(max_length=8)] = "",
    satisfaction: Annotated[str, Form(max_length=32)] = "",
    comment: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if _from_elsewhere(request):
        return _refused_origin(request)
    if satisfaction not in SATISFACTION_LABELS:
        raise InvalidInput("satisfaction must be one of " + ", ".join(SATISFACTION_LABELS))
    now = _now(request)

    def rated(session: Any, ticket: Any) -> str | None:
        try:
            site.rate(
                session,
                ticket=ticket,
                satisfaction=Satisfaction(satisfaction),
                now=now,
                comment=comment.strip() or None,
            )
        except Conflict:
            return _("This request cannot be rated now.")
        if satisfaction == "dissatisfied":
            return _("Thank you. Your request has been reopened and sent back to the unit.")
        return _("Thank you for your rating.")

    return await _lookup(
        request, number=number.strip(), code=code.strip(), last4=last4.strip(), then=rated
    )


# ---------------------------------------------------------------- the public list and map


_CODE_OF_NAME = {name: code for code, name in site.CATEGORIES.items()}


def category_label(name: str | None) -> str:
    """A category in the reader's language when it is one of the form's, else as the
    centre's catalogue names it."""
    if not name:
        return _("Something else")
    code = _CODE_OF_NAME.get(name)
    return _(CATEGORY_LABELS[code]) if code else name


def _recent(request: Request) -> list[site.PublicItem]:
    settings = request.app.state.settings
    with session_scope(request.app.state.session_factory) as session:
        return site.recent_requests(session, now=_now(request), tz=settings.tz)


@router.get("/requests")
def requests_page(request: Request) -> Response:
    items = _recent(request)
    points = [
        {
            "value": [i.longitude, i.latitude],
            "name": category_label(i.category),
            "status": _(STATUS_LABELS[i.status]),
            "date": i.date,
        }
        for i in items
        if i.latitude is not None and i.longitude is not None
    ]
    return render(
        request,
        "public/requests.html",
        {
            "items": items,
            "category_label": category_label,
            "status_labels": {k: _(v) for k, v in STATUS_LABELS.items()},
            "points_json": json.dumps(points, ensure_ascii=False).replace("<", "\\u003c"),
            "days": site.RECENT_DAYS,
        },
    )


@router.get("/requests.geojson")
def requests_geojson(request: Request) -> Response:
    return JSONResponse(
        site.geojson(_recent(request)),
        media_type="application/geo+json",
        headers={"Cache-Control": "public, max-age=60"},
    )
