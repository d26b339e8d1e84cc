"""Every error leaves the API in one shape:

    {"error": {"code": "not_found", "message": "...", "details": {...}}}

Domain errors (core.errors) carry no HTTP status; the mapping lives here. A request that
fails validation answers 422 with one entry per problem in `error.details`, each naming the
field (`field`, dotted, e.g. "caller_phone"; `in`, one of body/query/path/header; `loc`,
FastAPI's list), and also keeps FastAPI's own `detail` list so clients written against stock
FastAPI keep working.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound

# Looked up along the exception's MRO, so IllegalTransition (a Conflict) answers 409.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    Forbidden: 403,
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
    detail = jsonable_encoder(exc.errors())
    problems = [_problem(e) for e in detail]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    body = error_body("validation_error", f"invalid request: {summary}", problems)
    return JSONResponse({**body, "detail": detail}, status_code=422)


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
