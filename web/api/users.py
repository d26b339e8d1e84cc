"""User accounts and their bearer tokens."""

from __future__ import annotations

from fastapi import APIRouter

from accounts import service as accounts
from accounts.models import Role
from core.db import saved_id
from dispatch import units
from dispatch.units import UserCreate
from web.api.schemas import (
    UserRead,
    UserWithToken,
    user_read,
    user_reads,
    user_with_token,
)
from web.deps import Admin, ClockDep, CurrentUser, PathId, SessionDep
from web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)


@router.get("/me", response_model=UserRead)
def me(session: SessionDep, user: CurrentUser) -> UserRead:
    return user_read(session, user)


@router.post("/me/token", response_model=UserWithToken)
def rotate_my_token(session: SessionDep, user: CurrentUser) -> UserWithToken:
    """A fresh token for yourself; the one used for this request stops working."""
    user, token = accounts.rotate_token(session, user_id=saved_id(user))
    return user_with_token(session, user, token)


@router.get("", response_model=list[UserRead])
def list_users(
    session: SessionDep,
    _: Admin,
    role: Role | None = None,
    unit_code: str | None = None,
    active: bool | None = None,
) -> list[UserRead]:
    users = units.list_users(session, role=role, unit_code=unit_code, active=active)
    return user_reads(session, users)


@router.post("", status_code=201, response_model=UserWithToken)
def create_user(data: UserCreate, session: SessionDep, _: Admin, clock: ClockDep) -> UserWithToken:
    """The response carries the new user's token; it is not shown again."""
    user, token = units.create_user(session, **data.model_dump(), now=clock.now())
    return user_with_token(session, user, token)


@router.get("/{user_id}", response_model=UserRead)
def get_user(user_id: PathId, session: SessionDep, _: Admin) -> UserRead:
    return user_read(session, accounts.get_user(session, user_id=user_id))


@router.post("/{user_id}/token", response_model=UserWithToken)
def rotate_token(user_id: PathId, session: SessionDep, _: Admin) -> UserWithToken:
    user, token = accounts.rotate_token(session, user_id=user_id)
    return user_with_token(session, user, token)


@router.post("/{user_id}/deactivate", response_model=UserRead)
def deactivate_user(user_id: PathId, session: SessionDep, _: Admin) -> UserRead:
    return user_read(session, accounts.deactivate_user(session, user_id=user_id))
