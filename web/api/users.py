"""User accounts and their bearer tokens."""

from __future__ import annotations

from fastapi import APIRouter

from accounts import service as accounts
from accounts.models import Role
from core.db import saved_id
from dispatch import units
from dispatch.units import UserCreate
from web.api import examples as ex
from web.api.schemas import (
    UserRead,
    UserWithToken,
    user_read,
    user_reads,
    user_with_token,
)
from web.deps import Admin, ClockDep, CurrentUser, PathId, SessionDep
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)


@router.get(
    "/me",
    response_model=UserRead,
    responses={200: ex.answer("your account", ex.USER_READ)},
    summary="Your own account",
)
def me(session: SessionDep, user: CurrentUser) -> UserRead:
    """The account the bearer token belongs to: role, unit, contact."""
    return user_read(session, user)


@router.post(
    "/me/token",
    response_model=UserWithToken,
    summary="Rotate your own token",
)
def rotate_my_token(session: SessionDep, user: CurrentUser) -> UserWithToken:
    """A fresh token for yourself; the one used for this request stops working."""
    user, token = accounts.rotate_token(session, user_id=saved_id(user))
    return user_with_token(session, user, token)


@router.get(
    "",
    response_model=list[UserRead],
    summary="List user accounts",
    responses=error_responses({403: "only administrators list users", 422: "an unknown role"}),
)
def list_users(
    session: SessionDep,
    _: Admin,
    role: Role | None = None,
    unit_code: str | None = None,
    active: bool | None = None,
) -> list[UserRead]:
    """Every account, filtered by role, unit code or active state."""
    users = units.list_users(session, role=role, unit_code=unit_code, active=active)
    return user_reads(session, users)


@router.post(
    "",
    status_code=201,
    response_model=UserWithToken,
    summary="Create a user account",
    responses=error_responses(
        {
            403: "only administrators create accounts",
            409: "the username is taken",
            422: "a field is invalid, an unknown unit, or a handler without a unit",
        }
    ),
    openapi_extra=ex.body(operator=ex.USER_CREATE_OPERATOR, handler=ex.USER_CREATE_HANDLER),
)
def create_user(data: UserCreate, session: SessionDep, _: Admin, clock: ClockDep) -> UserWithToken:
    """The response carries the new user's token; it is not shown again."""
    user, token = units.create_user(session, **data.model_dump(), now=clock.now())
    return user_with_token(session, user, token)


@router.get(
    "/{user_id}",
    response_model=UserRead,
    summary="Read a user account",
    responses=error_responses(
        {403: "only administrators read other accounts", 404: "no such user"}
    ),
)
def get_user(user_id: PathId, session: SessionDep, _: Admin) -> UserRead:
    """One user account by id: role, unit, contact, active state."""
    return user_read(session, accounts.get_user(session, user_id=user_id))


@router.post(
    "/{user_id}/token",
    response_model=UserWithToken,
    summary="Rotate a user's token",
    responses=error_responses(
        {403: "only administrators rotate other users' tokens", 404: "no such user"}
    ),
)
def rotate_token(user_id: PathId, session: SessionDep, _: Admin) -> UserWithToken:
    """A fresh token for the user (for one who lost theirs); the old one stops working at once. The
    new token is shown only in this response."""
    user, token = accounts.rotate_token(session, user_id=user_id)
    return user_with_token(session, user, token)


@router.post(
    "/{user_id}/deactivate",
    response_model=UserRead,
    summary="Deactivate a user account",
    responses=error_responses(
        {
            403: "only administrators deactivate accounts",
            404: "no such user",
            409: "this is the last active administrator",
        }
    ),
)
def deactivate_user(user_id: PathId, session: SessionDep, _: Admin) -> UserRead:
    """The account can no longer sign in or use its token; its history stays."""
    return user_read(session, accounts.deactivate_user(session, user_id=user_id))
