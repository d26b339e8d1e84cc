"""Who may call what. Every request carries `Authorization: Bearer <token>`; the token
names one active user, whose role decides which operations they may use. Which *tickets*
a handler may touch is decided in dispatch.accounts (visible_ticket_clause)."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.security import HTTPBearer

from accounts.models import CENTRE_ROLES, Role

bearer = HTTPBearer(
    auto_error=False,
    description="the token issued when the account was created or its token last rotated",
)

INTAKE = CENTRE_ROLES  # create, edit, close at intake, merge
DISPATCH = frozenset({Role.dispatcher, Role.supervisor, Role.admin})  # + reviews, callbacks
SUPERVISION = frozenset({Role.supervisor, Role.admin})  # reopen, archive
UNIT_WORK = frozenset({Role.handler, Role.admin})  # sign, start, reply, return, extension
ADMIN = frozenset({Role.admin})


def unauthenticated(message: str) -> HTTPException:
    return HTTPException(
        status_code=401, detail=message, headers={"WWW-Authenticate": 'Bearer realm="12345"'}
    )
