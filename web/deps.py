"""Request-scoped dependencies, as Annotated aliases for the routes."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlmodel import Session

from dispatch import accounts
from dispatch.models import Role, User
from hotline.clock import Clock
from hotline.config import Settings
from hotline.db import session_scope
from hotline.errors import Forbidden
from web import auth


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


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)],
) -> User:
    if credentials is None:
        raise auth.unauthenticated("a bearer token is required")
    user = accounts.authenticate(session, token=credentials.credentials)
    if user is None:
        raise auth.unauthenticated("the token is not valid or the account is inactive")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    allowed = frozenset(roles)

    async def guard(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise Forbidden(f"role {user.role.value} may not do this",
                            role=user.role.value, allowed=sorted(r.value for r in allowed))
        return user

    return guard


IntakeStaff = Annotated[User, Depends(require_roles(*auth.INTAKE))]
Dispatcher = Annotated[User, Depends(require_roles(*auth.DISPATCH))]
Supervisor = Annotated[User, Depends(require_roles(*auth.SUPERVISION))]
UnitWorker = Annotated[User, Depends(require_roles(*auth.UNIT_WORK))]
Admin = Annotated[User, Depends(require_roles(*auth.ADMIN))]
