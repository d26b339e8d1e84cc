"""Request-scoped dependencies, as Annotated aliases for the routes."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter
from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
)
from sqlmodel import Session, SQLModel

from accounts.models import Role, User
from core.clock import Clock
from core.db import session_scope
from core.errors import Forbidden
from core.settings import Settings
from dispatch import access
from web import auth

# Row ids are 32-bit in PostgreSQL (SERIAL): a larger one could name no row, and sent to
# the database it is an error there rather than a miss. Every id the API takes is one of:
MAX_ID = 2**31 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]


# Dates and times are ISO 8601 text. Pydantic would also take a number (seconds since
# 1970, or since midnight), in JSON or as query text; the API does not.
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")


def _iso_text(value: Any) -> Any:
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("expected an ISO 8601 text, not a number")
    return value


def _storable(value: datetime) -> datetime:
    # A time near year 1 or 9999 with an offset has no UTC equivalent to store.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of the range of dates") from None


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_storable)]
IsoTime = Annotated[time, BeforeValidator(_iso_text)]


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: commit when the route returns, roll back when it
    raises."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


# scope="function" commits before the response is sent, so a failed commit is an error
# response rather than a success the database never saw.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# Dependencies that do no I/O are `async` so that FastAPI runs them on the event loop
# instead of sending each one to the thread pool.
async def get_clock(request: Request) -> Clock:
    return request.app.state.clock


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)]


def authenticated(session: Session, credentials: HTTPAuthorizationCredentials | None) -> User:
    if credentials is None:
        raise auth.unauthenticated("a bearer token is required")
    user = access.authenticate(session, token=credentials.credentials)
    if user is None:
        raise auth.unauthenticated("the token is not valid or the account is inactive")
    return user


def check_role(user: User, allowed: frozenset[Role]) -> User:
    if user.role not in allowed:
        raise Forbidden(
            f"role {user.role.value} may not do this",
            role=user.role.value,
            allowed=sorted(r.value for r in allowed),
        )
    return user


def get_current_user(session: SessionDep, credentials: Credentials) -> User:
    return authenticated(session, credentials)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[[User], Awaitable[User]]:
    allowed = frozenset(roles)

    async def guard(user: CurrentUser) -> User:
        return check_role(user, allowed)

    return guard


IntakeStaff = Annotated[User, Depends(require_roles(*auth.INTAKE))]
Dispatcher = Annotated[User, Depends(require_roles(*auth.DISPATCH))]
Supervisor = Annotated[User, Depends(require_roles(*auth.SUPERVISION))]
UnitWorker = Annotated[User, Depends(require_roles(*auth.UNIT_WORK))]
Admin = Annotated[User, Depends(require_roles(*auth.ADMIN))]


# The hot path (ticket intake, web/api/tickets.py). Each sync dependency and a sync route
# are separate trips to the thread pool (four for an intake, plus FastAPI validating the
# returned model again), and there they cost more CPU than the intake itself. A route
# built with the helpers below is `async`, reads its token, headers and raw body itself,
# and runs its whole unit of work — session, authentication, role check, payload
# validation, the operation, commit, JSON — in one trip, so authorization still comes
# before payload validation (403 before 422).
_Model = TypeVar("_Model", bound=BaseModel)


def parse_json_body(model: type[_Model], raw: bytes) -> _Model:
    """The request body as `model`, or the 422 FastAPI itself would answer."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def patch_body(data: _Model, table: type[SQLModel]) -> _Model:
    """A PATCH body as its route may apply it, or a 422: a field sent as null must be one
    that `table` lets be empty (leaving a field out is how to keep it), and a datetime must
    carry its offset."""
    columns = table.__table__.c  # type: ignore[attr-defined]
    problems: list[dict[str, Any]] = []
    for name in sorted(data.model_fields_set):
        value = getattr(data, name)
        column = columns.get(name)
        if value is None and column is not None and not column.nullable:
            problems.append(
                {
                    "type": "null_not_allowed",
                    "loc": ("body", name),
                    "msg": "may be left out but not set to null",
                    "input": None,
                }
            )
        elif isinstance(value, datetime) and value.tzinfo is None:
            problems.append(
                {
                    "type": "timezone_aware",
                    "loc": ("body", name),
                    "msg": "Input should have timezone info",
                    "input": value.isoformat(),
                }
            )
    if problems:
        raise RequestValidationError(problems)
    return data


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body that the route parses itself; web.app adds the
    model to the components."""
    OPENAPI_MODELS.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


OPENAPI_MODELS: list[type[BaseModel]] = []

BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


@dataclass(frozen=True)
class HeaderSpec:
    name: str
    max_length: int
    description: str


def read_header(request: Request, spec: HeaderSpec) -> str | None:
    """An optional header, checked as FastAPI's Header(min_length=1, max_length=…) would."""
    value = request.headers.get(spec.name)
    if value is None:
        return None
    if not 1 <= len(value) <= spec.max_length:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long" if value else "string_too_short",
                    "loc": ("header", spec.name.lower()),
                    "msg": f"String should have between 1 and {spec.max_length} characters",
                    "input": value[:50],
                }
            ]
        )
    return value


def header_parameter(spec: HeaderSpec) -> dict[str, Any]:
    return {
        "parameters": [
            {
                "name": spec.name,
                "in": "header",
                "required": False,
                "description": spec.description,
                "schema": {"type": "string", "minLength": 1, "maxLength": spec.max_length},
            }
        ]
    }


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


class LoopLimiter:
    """An anyio CapacityLimiter for each event loop that asks: a limiter belongs to the
    loop it is first used on, and an app may serve several (each test client runs one).
    Requests over the limit wait on the loop, not in a thread fighting for the GIL."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
            weakref.WeakKeyDictionary()
        )

    def current(self) -> CapacityLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._by_loop.get(loop)
        if limiter is None:
            limiter = self._by_loop[loop] = CapacityLimiter(self.tokens)
        return limiter
