"""Open311 GeoReport v2 under /open311/v2/ (http://wiki.open311.org/GeoReport_v2).

GET  discovery.{fmt}                 the discovery document
GET  services.{fmt}                  the services (the centre's categories)
GET  services/{code}.{fmt}           a service definition: its attributes
POST requests.{fmt}                  file a request (api_key of a registered client)
GET  tokens/{token}.{fmt}            the request id a POST's token stands for
GET  requests.{fmt}                  requests: service_request_id | service_code, start_date,
                                     end_date (at most 90 days), status; page, page_size
GET  requests/{id}.{fmt}             one request

The format is the extension: xml (the spec's mandatory one) or json; UTF-8 throughout.
Errors are the spec's list of {code, description} in the asked format, with the HTTP status
as the code: 400 bad input (each problem, attributes by name), 403 a missing, unknown or
revoked api_key, 404 an unknown service, request, token or jurisdiction, 429 over a rate
limit (hotline.open311.limits). These routes answer in their own format, so they are not
part of the JSON API's OpenAPI document.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request
from sqlmodel import Session
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, get_route_path
from starlette.types import Receive, Scope, Send

from core.db import session_scope
from core.errors import DomainError, Forbidden, NotFound
from core.settings import Settings
from hotline.open311 import clients, requests, services
from hotline.open311.limits import PostLimits
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import admin_open311

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-12-05T00:00:00+08:00"  # when the endpoint's behaviour last changed
FORMATS = {"xml": "text/xml; charset=utf-8", "json": "application/json; charset=utf-8"}
MAX_BODY = 64 * 1024
MAX_FIELDS = 100

# Characters XML 1.0 cannot carry at all: one in a stored description would make the whole
# answer unreadable to every client.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

PREFIX = "/open311/v2"
# The GeoReport routes (the app puts them first: `install`), and the admin page of the
# client keys.
api = APIRouter(prefix=PREFIX, include_in_schema=False)
router = APIRouter(include_in_schema=False)

# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Many:
    """A list: repeated <tag> elements in XML, an array in JSON."""

    tag: str
    items: Sequence[Any]


def _xml(out: list[str], name: str, value: Any) -> None:
    """`value` as the element `name`, appended to `out` as text: a page of 1000 requests is
    ~20,000 elements, which ElementTree took 8 times as long as JSON to build."""
    if value is None:
        out.append(f"<{name} />")
        return
    out.append(f"<{name}>")
    if isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, Many):
        for item in value.items:
            _xml(out, value.tag, item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _xml(out, key, item)
    else:
        out.append(escape(_NOT_XML.sub("", str(value))))
    out.append(f"</{name}>")


def _plain(value: Any) -> Any:
    if isinstance(value, Many):
        return [_plain(v) for v in value.items]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def render(fmt: str, root: str, body: Any, *, status: int = 200, headers: Any = None) -> Response:
    if fmt == "json":
        content = json.dumps(_plain(body), ensure_ascii=False).encode()
    else:
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
        _xml(out, root, body)
        content = "".join(out).encode("utf-8")
    return Response(content, status_code=status, media_type=FORMATS[fmt], headers=headers)


def errors(fmt: str, status: int, problems: Sequence[str], headers: Any = None) -> Response:
    body = Many("error", [{"code": status, "description": p} for p in problems])
    return render(fmt if fmt in FORMATS else "xml", "errors", body, status=status, headers=headers)


class Limited(DomainError):
    def __init__(self, which: str, wait: float) -> None:
        super().__init__(f"too many requests from this {which}; retry in {wait:.0f} s")
        self.wait = wait


def refused(fmt: str, exc: DomainError) -> Response:
    if isinstance(exc, requests.Rejected):
        return errors(fmt, 400, exc.problems)
    if isinstance(exc, Forbidden):
        return errors(fmt, 403, [exc.message])
    if isinstance(exc, NotFound):
        return errors(fmt, 404, [exc.message])
    if isinstance(exc, Limited):
        return errors(
            fmt, 429, [exc.message], headers={"Retry-After": str(max(1, round(exc.wait)))}
        )
    return errors(fmt, 400, [exc.message])


def _checked(fmt: str, params: Mapping[str, str]) -> None:
    if fmt not in FORMATS:
        raise NotFound(f"format {fmt!r} is not served: use .xml or .json")
    jurisdiction = params.get("jurisdiction_id", "").strip()
    if jurisdiction and jurisdiction != services.JURISDICTION_ID:
        raise NotFound(
            f"jurisdiction_id {jurisdiction!r} is not served here "
            f"(this endpoint serves {services.JURISDICTION_ID!r})"
        )


def answer(fmt: str, params: Mapping[str, str], make: Callable[[], Response]) -> Response:
    """`make`'s response, or the refusal in the asked format."""
    try:
        _checked(fmt, params)
        return make()
    except DomainError as exc:
        return refused(fmt, exc)


# ---------------------------------------------------------------- discovery and services


@api.get("/discovery.{fmt}")
def discovery(fmt: str, request: Request) -> Response:
    def make() -> Response:
        body = {
            "changeset": CHANGESET,
            "contact": "12345 政务服务便民热线",
            "key_service": "向平台管理员申请 API key（管理 → Open311 客户端）",
            "endpoints": Many(
                "endpoint",
                [
                    {
                        "specification": SPECIFICATION,
                        "url": str(request.url_for("services", fmt="xml")).removesuffix(
                            "/services.xml"
                        ),
                        "changeset": CHANGESET,
                        "type": "production",
                        "formats": Many("format", ["text/xml", "application/json"]),
                    }
                ],
            ),
        }
        return render(fmt, "discovery", body)

    return answer(fmt, request.query_params, make)


def _service_row(service: services.Service) -> dict[str, Any]:
    return {
        "service_code": service.code,
        "service_name": service.name,
        "description": service.description,
        "metadata": True,
        "type": "realtime",
        "keywords": ", ".join(service.keywords),
        "group": service.group,
    }


@api.get("/services.{fmt}", name="services")
def list_services(fmt: str, request: Request, session: SessionDep) -> Response:
    def make() -> Response:
        found = services.catalogue(session).services
        return render(fmt, "services", Many("service", [_service_row(s) for s in found]))

    return answer(fmt, request.query_params, make)


def _attribute(attribute: services.Attribute) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variable": True,
        "code": attribute.code,
        "datatype": attribute.datatype,
        "required": attribute.required,
        "datatype_description": attribute.datatype_description,
        "order": attribute.order,
        "description": attribute.description,
    }
    if attribute.values:
        row["values"] = Many("value", [{"key": v.key, "name": v.name} for v in attribute.values])
    return row


@api.get("/services/{code}.{fmt}")
def service_definition(code: str, fmt: str, request: Request, session: SessionDep) -> Response:
    def make() -> Response:
        service = services.get_service(session, code=code)
        body = {
            "service_code": service.code,
            "attributes": Many("attribute", [_attribute(a) for a in service.attributes]),
        }
        return render(fmt, "service_definition", body)

    return answer(fmt, request.query_params, make)


# ---------------------------------------------------------------- requests


_LIMITS_LOCK = threading.Lock()


def _limits(request: Request) -> PostLimits:
    """The app's buckets, made on first use: shared through Redis when the platform has one
    (several web processes), else this process's (a test or the bench puts others in their
    place)."""
    state = request.app.state
    limits: PostLimits | None = getattr(state, "open311_limits", None)
    if limits is None:
        with _LIMITS_LOCK:
            if getattr(state, "open311_limits", None) is None:
                state.open311_limits = PostLimits.for_settings(state.settings)
            limits = state.open311_limits
    return limits


def _posted(params: Mapping[str, list[str]]) -> requests.PostedRequest:
    posted = requests.PostedRequest()
    attributes: dict[str, list[str]] = {}
    for name, values in params.items():
        if name.startswith("attribute[") and "]" in name:
            code = name[len("attribute[") : name.index("]")]
            attributes.setdefault(code, []).extend(values)
        elif name in requests.PostedRequest.__dataclass_fields__ and name != "attributes":
            setattr(posted, name, values[-1])
    posted.attributes = attributes
    return posted


_LIMITED = ("client address", "api_key")  # PostLimits.check's positions


def _file(
    factory: Callable[[], Session],
    settings: Settings,
    limits: PostLimits,
    client_address: str,
    api_key: str,
    posted: requests.PostedRequest,
    now: datetime,
    defer_duplicates: Callable[[int], object] | None = None,
) -> requests.Filed:
    # The limits here, not on the event loop: the buckets may be in Redis.
    client = clients.remembered(api_key, now)
    if client is not None:  # both buckets in one call
        refused = limits.check(address=client_address, client_id=client.id, now=now)
        if refused is not None:
            raise Limited(_LIMITED[refused[0]], refused[1])
    else:  # the address first: a flood of bad keys costs no database read
        wait = limits.check_address(client_address, now)
        if wait is not None:
            raise Limited("client address", wait)
    with session_scope(factory) as session:
        if client is None:
            client = clients.authenticate(session, key=api_key, now=now)
            if client is None:
                raise Forbidden(
                    "api_key is missing, unknown or revoked: "
                    "ask the platform's administrator for one"
                )
            wait = limits.check_key(client.id, now)
            if wait is not None:
                raise Limited("api_key", wait)
        return requests.file_request(
            session,
            client=client,
            posted=posted,
            now=now,
            tz=settings.tz,
            secret=settings.secret_key,
            fallback_unit_code=settings.dispatch.fallback_unit_code,
            defer_duplicates=defer_duplicates,
        )


_ESCAPES = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")


def _unquote(raw: bytes) -> str:
    """A form-encoded name or value as text: `+` a space, `%XX` a byte, the bytes UTF-8
    (an invalid sequence becomes U+FFFD, as with starlette's parser). Each run of escapes
    is one `bytes.fromhex`: urllib's unquote walks them one at a time in Python, and a
    Chinese description is hundreds of them (half a millisecond a POST)."""
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = _ESCAPES.sub(lambda m: bytes.fromhex(m.group().replace(b"%", b"").decode()), raw)
    return raw.decode("utf-8", "replace")


class FormError(Exception):
    """A body that cannot be read as the POST's form (400)."""


def parse_form(body: bytes, *, max_fields: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """An `application/x-www-form-urlencoded` body's fields, in order."""
    fields = [part for part in body.split(b"&") if part]
    if len(fields) > max_fields:
        raise FormError(f"Too many fields. Maximum number of fields is {max_fields}.")
    return [(_unquote(n), _unquote(v)) for n, _, v in (f.partition(b"=") for f in fields)]


async def _form(request: Request) -> list[tuple[str, str]]:
    """The POST's form fields: a form-encoded body (the spec's) read here, at most MAX_BODY
    of it; a multipart one through starlette; any other body has none."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        except HTTPException as exc:
            raise FormError(str(exc.detail)) from None
        return [(n, v) for n, v in form.multi_items() if isinstance(v, str)]
    if kind != "application/x-www-form-urlencoded":
        return []
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise FormError(f"it is larger than {MAX_BODY // 1024} KB")
        chunks.append(chunk)
    return parse_form(b"".join(chunks))


@api.post("/requests.{fmt}")
async def post_request(fmt: str, request: Request) -> Response:
    state = request.app.state
    now = state.clock.now()
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        return errors(fmt, 400, [f"the request body is larger than {MAX_BODY // 1024} KB"])
    try:
        form = await _form(request)
    except FormError as exc:
        return errors(fmt, 400, [f"the request body could not be read: {exc}"])
    params: dict[str, list[str]] = {}
    for source in (request.query_params.multi_items(), form):
        for name, value in source:
            params.setdefault(name, []).append(value)
    flat = {name: values[-1] for name, values in params.items()}
    limits = _limits(request)
    client_address = request.client.host if request.client else "unknown"
    try:
        _checked(fmt, flat)
        filed = await to_thread.run_sync(
            _file,
            state.session_factory,
            state.settings,
            limits,
            client_address,
            flat.get("api_key", ""),
            _posted(params),
            now,
            state.defer_duplicates,
            limiter=state.intake_limiter.current(),
        )
    except DomainError as exc:
        return refused(fmt, exc)
    body = {
        "service_request_id": filed.service_request_id,
        "token": filed.token,
        "service_notice": filed.service_notice,
        "account_id": filed.account_id,
    }
    return render(fmt, "service_requests", Many("request", [body]), status=201)


@api.get("/tokens/{token}.{fmt}")
def token(
    token: str, fmt: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    def make() -> Response:
        found = requests.resolve_token(session, token=token, secret=settings.secret_key)
        body = Many("request", [{"service_request_id": found, "token": token}])
        return render(fmt, "service_requests", body)

    return answer(fmt, request.query_params, make)


@api.get("/requests.{fmt}")
def list_requests(
    fmt: str, request: Request, session: SessionDep, clock: ClockDep, settings: SettingsDep
) -> Response:
    def make() -> Response:
        query = requests.parse_query(request.query_params)
        found = requests.list_requests(session, query=query, now=clock.now(), tz=settings.tz)
        return render(fmt, "service_requests", Many("request", found))

    return answer(fmt, request.query_params, make)


@api.get("/requests/{request_id}.{fmt}")
def get_request(
    request_id: str, fmt: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    def make() -> Response:
        found = requests.get_request(session, request_id=request_id, tz=settings.tz)
        return render(fmt, "service_requests", Many("request", [found]))

    return answer(fmt, request.query_params, make)


@api.api_route("/{rest:path}", methods=["GET", "POST"])
def not_served(rest: str) -> Response:
    fmt = rest.rsplit(".", 1)[-1] if "." in rest else "xml"
    return errors(fmt, 404, [f"{PREFIX}/{rest} is not a GeoReport v2 resource"])


router.include_router(admin_open311.router)


class _Under(BaseRoute):
    """`router`'s routes, for the paths under `prefix` only — and every such path is theirs
    (the catch-all answers what no resource does). Like a Mount, without moving the path
    into root_path: the routes keep their whole templates (the metrics' labels)."""

    def __init__(self, prefix: str, router: APIRouter) -> None:
        self.prefix = prefix
        self.router = router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path = get_route_path(scope)
            if path == self.prefix or path.startswith(self.prefix + "/"):
                return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        return self.router.url_path_for(name, **path_params)


def install(app: FastAPI) -> None:
    """The GeoReport routes, for the app to add before its other routes: every other
    request then pays one prefix test for them, and an Open311 request is matched without
    walking the API's routers first (FastAPI walks an included router's routes to match
    it, and again to handle it: ~0.25 ms of an Open311 POST's server CPU behind the API's
    13 routers, bench/open311.py)."""
    app.router.routes.append(_Under(PREFIX, api))
