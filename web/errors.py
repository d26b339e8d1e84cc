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


# One example body per status, as the handlers below really write them.
ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {
        "error": {
            "code": "bad_request",
            "message": "There was an error parsing the body",
            "details": {},
        }
    },
    401: {
        "error": {
            "code": "unauthorized",
            "message": "a bearer token is required",
            "details": {},
        }
    },
    403: {
        "error": {
            "code": "forbidden",
            "message": "role handler may not do this",
            "details": {"role": "handler", "allowed": ["admin", "dispatcher", "supervisor"]},
        }
    },
    404: {
        "error": {
            "code": "not_found",
            "message": "ticket 4711 does not exist",
            "details": {"ticket_id": 4711},
        }
    },
    409: {
        "error": {
            "code": "illegal_transition",
            "message": "cannot close a ticket in status dispatched",
            "details": {"status": "dispatched"},
        }
    },
    422: {
        "error": {
            "code": "validation_error",
            "message": "invalid request: caller_phone: String should match pattern "
            "'^\\+?[0-9\\- ]{3,32}$'",
            "details": [
                {
                    "field": "caller_phone",
                    "in": "body",
                    "loc": ["body", "caller_phone"],
                    "message": "String should match pattern '^\\+?[0-9\\- ]{3,32}$'",
                    "type": "string_pattern_mismatch",
                }
            ],
        },
        "detail": [
            {
                "type": "string_pattern_mismatch",
                "loc": ["body", "caller_phone"],
                "msg": "String should match pattern '^\\+?[0-9\\- ]{3,32}$'",
                "input": "一三八",
                "ctx": {"pattern": "^\\+?[0-9\\- ]{3,32}$"},
            }
        ],
    },
}


def _documented(
    status: int, description: str, model: type[BaseModel] = ErrorResponse
) -> dict[str, Any]:
    return {
        "model": model,
        "description": description,
        "content": {"application/json": {"example": ERROR_EXAMPLES[status]}},
    }


# Every operation may answer these; the routers pass them as `responses=`.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented(400, "the body could not be read (not UTF-8, not the declared form)"),
    401: _documented(401, "no bearer token, or not a valid one"),
    403: _documented(403, "your role may not do this"),
    404: _documented(404, "no such object, or not one you may see"),
    409: _documented(409, "the request clashes with the object's current state"),
    422: _documented(422, "the request is not valid", ValidationErrorResponse),
}


def error_responses(why: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """An operation's own `responses=`: when and why it answers each of these statuses
    (in the words of that operation), in place of the router's general description. The
    shape and the example stay those of ERROR_RESPONSES."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, reason in why.items():
        out[status] = {**ERROR_RESPONSES[status], "description": reason}
    return out


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
