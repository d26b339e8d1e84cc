"""The JSON API, mounted under /api/v1.

The routers are included into the app one by one rather than through one parent router:
FastAPI (0.16x) walks the tree of included routers on every request to see whether it
changed, so each level of nesting costs every request a little (bench/pipeline.py).

Each operation's description in the OpenAPI document ends with who may call it, read from
the role guard among its dependencies (web.deps.require_roles), so the document cannot say
other than what the route enforces (tests/web/test_openapi_docs.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from accounts.models import Role
from web import auth
from web.api import (
    acd,
    agents,
    calendar,
    calls,
    escalations,
    policies,
    rules,
    tickets,
    units,
    users,
    workflow,
)
from web.deps import get_current_user

PREFIX = "/api/v1"
ROUTERS: tuple[APIRouter, ...] = (
    tickets.router,
    workflow.router,
    escalations.router,
    units.router,
    users.router,
    rules.router,
    policies.router,
    calendar.router,
    calls.router,
    calls.tickets_router,
)

ALL_ROLES = frozenset(Role)
# Routes that read their bearer token and check the role themselves (see web.deps).
ROLES_BY_HAND: dict[str, frozenset[Role]] = {
    "create_ticket": auth.INTAKE,
    "transcript_stream": auth.INTAKE,
}
WHO_MARK = "**Who may call:**"
GUARD = "require_roles.<locals>.guard"  # web.deps.require_roles


def roles_of(route: APIRoute) -> frozenset[Role] | None:
    """The roles the route lets in, or None when it asks for no bearer token at all."""
    if route.name in ROLES_BY_HAND:
        return ROLES_BY_HAND[route.name]
    return _roles(route.dependant)


def _roles(dependant: Dependant) -> frozenset[Role] | None:
    found: frozenset[Role] | None = None
    for dependency in dependant.dependencies:
        call = dependency.call
        allowed: frozenset[Role] | None
        if call is not None and getattr(call, "__qualname__", "") == GUARD:
            allowed = frozenset(inspect.getclosurevars(call).nonlocals["allowed"])
        elif call is get_current_user:
            allowed = ALL_ROLES
        elif _any_user(dependency):
            allowed = _roles(dependency) or ALL_ROLES
        else:
            allowed = None
        if allowed is not None:
            found = allowed if found is None else found & allowed
    return found


def _any_user(dependant: Dependant) -> bool:
    return any(d.call is get_current_user or _any_user(d) for d in dependant.dependencies)


def who(roles: Iterable[Role]) -> str:
    names = [r.value for r in Role if r in set(roles)]
    return f"{WHO_MARK} {', '.join(names)}."


def impossible(route: APIRoute) -> set[int]:
    """Statuses of the shared web.errors.ERROR_RESPONSES that the operation cannot give, so
    the document leaves them out: 400 comes only from reading a request body. (403 and 409
    stay on every operation: tests/web/test_validation.py asks for them.)"""
    if route.body_field is None and "requestBody" not in (route.openapi_extra or {}):
        return {400}
    return set()


def _document(routers: Iterable[APIRouter]) -> None:
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or WHO_MARK in (route.description or ""):
                continue
            roles = roles_of(route)
            line = who(roles) if roles is not None else f"{WHO_MARK} anyone."
            route.description = f"{route.description}\n\n{line}".strip()
            route.responses = {
                status: response
                for status, response in route.responses.items()
                if status not in impossible(route)
            }


# Every router of the document (web.app includes agents and acd on their own).
DOCUMENTED: tuple[APIRouter, ...] = (*ROUTERS, agents.router, acd.router)
_document(DOCUMENTED)
