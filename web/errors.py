"""Every error leaves the API in one shape:

    {"error": {"code": "not_found", "message": "...", "details": {...}}}

Domain errors (core.errors) carry no HTTP status; the mapping lives here. A request that
fails validation answers 422 with one entry per problem in `error.details`, each naming the
field (`field`, dotted, e.g. "caller_phone"; `in`, one of body/query/path/header; `loc`,
FastAPI's list), and also keeps FastAPI's own `detail` list so clients written against stock
FastAPI keep working.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound

# Looked up along the exception's MRO, so IllegalTransition (a Conflict) answers 409.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    Forbidden: 403,
}


class ErrorInfo(BaseModel):
    code: str = Field(description="stable, machine-readable: not_found, conflict, forbidden…")
    message: str
    details: dict[str, Any] | list[dict[str, Any]] = Field(
        description="what the code needs to say more; for validation_error one entry per "
        "problem (field, in, loc, message, type)"
    )


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ValidationErrorResponse(ErrorResponse):
    detail: list[dict[str, Any]] = Field(
        default_factory=list,
        description="FastAPI's own list of the problems; absent when the service refused "
        "the input (code `invalid`)",
    )


def _documented(description: str, model: type[BaseModel] = ErrorResponse) -> dict[str, Any]:
    return {"model": model, "description": description}


# Every operation may answer these; the routers pass them as `responses=`.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("the body could not be read (not UTF-8, not the declared form)"),
    401: _documented("no bearer token, or not a valid one"),
    403: _documented("your role may not do this"),
    404: _documented("no such object, or not one you may see"),
    409: _documented("the request clashes with the object's current state"),
    422: _documented("the request is not valid", ValidationErrorResponse),
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": jsonable_encoder(details if details is not None else {}),
        }
    }


def status_of(exc: DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 400


async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status_of(exc))


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    detail = jsonable_encoder(_json_safe(list(exc.errors())))
    problems = [_problem(e) for e in detail]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    body = error_body("validation_error", f"invalid request: {summary}", problems)
    return JSONResponse({**body, "detail": detail}, status_code=422)


def _json_safe(value: Any) -> Any:
    """The errors echo the input: bytes that are not UTF-8 and floats JSON has no word for
    (NaN, Infinity) are rendered as text rather than crash the response."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    source, *path = error["loc"]
    return {
        "field": ".".join(str(p) for p in path) or source,
        "in": source,
        "loc": error["loc"],
        "message": error["msg"],
        "type": error["type"],
    }


async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    message = exc.detail if isinstance(exc.detail, str) else phrase
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    # Starlette types every handler as taking any Exception; each of these is registered
    # for, and only ever called with, the exception class it names.
    app.add_exception_handler(DomainError, domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
