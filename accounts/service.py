"""User accounts and their bearer tokens.

Functions take an explicit session and never commit: the caller owns the unit of work. Units
are given by id here; `dispatch.units` resolves unit codes and calls these.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from accounts.models import Role, User
from core.errors import Conflict, InvalidInput, NotFound


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh bearer token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def create_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    role: Role,
    now: datetime,
    unit_id: int | None = None,
    email: str | None = None,
    is_head: bool = False,
) -> tuple[User, str]:
    """A new account and its bearer token. The token is returned this once; only its hash
    is stored."""
    role = Role(role)
    if role == Role.handler and unit_id is None:
        raise InvalidInput("a handler must belong to a unit: give unit_code", field="unit_code")
    if (
        session.scalars(select(col(User.id)).where(col(User.username) == username)).first()
        is not None
    ):
        raise Conflict(f"username {username!r} is taken", username=username)
    token, token_hash = new_token()
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        unit_id=unit_id,
        is_head=is_head,
        email=email,
        token_hash=token_hash,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        # Lost a race with a concurrent request for the same username.
        raise Conflict(f"username {username!r} is taken", username=username) from exc
    return user, token


def get_user(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", user_id=user_id)
    return user


def rotate_token(session: Session, *, user_id: int) -> tuple[User, str]:
    """A fresh token; the old one stops working when the transaction commits."""
    user = get_user(session, user_id=user_id)
    token, user.token_hash = new_token()
    session.add(user)
    session.flush()
    return user, token


def deactivate_user(session: Session, *, user_id: int) -> User:
    user = get_user(session, user_id=user_id)
    if user.role == Role.admin and user.active and _active_admins(session) <= 1:
        raise Conflict("this is the last active administrator; appoint another one first")
    user.active = False
    session.add(user)
    session.flush()
    return user


def _active_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(col(User.role) == Role.admin, col(User.active).is_(True))
        )
        or 0
    )


def list_users(
    session: Session,
    *,
    role: Role | None = None,
    unit_id: int | None = None,
    active: bool | None = None,
) -> list[User]:
    stmt = select(User).order_by(col(User.username))
    if role is not None:
        stmt = stmt.where(col(User.role) == role)
    if unit_id is not None:
        stmt = stmt.where(col(User.unit_id) == unit_id)
    if active is not None:
        stmt = stmt.where(col(User.active).is_(active))
    return list(session.scalars(stmt))


def reactivate_user(session: Session, *, user_id: int) -> User:
    """Let a deactivated account sign in and use its token again."""
    user = get_user(session, user_id=user_id)
    user.active = True
    session.add(user)
    session.flush()
    return user


def change_role(
    session: Session, *, user_id: int, role: Role, unit_id: int | None, is_head: bool = False
) -> User:
    """Give an account another role, unit or headship, under the rules of ``create_user``;
    the last active administrator keeps the role."""
    role = Role(role)
    if role == Role.handler and unit_id is None:
        raise InvalidInput("a handler must belong to a unit: give unit_code", field="unit_code")
    user = get_user(session, user_id=user_id)
    if (
        user.role == Role.admin
        and role != Role.admin
        and user.active
        and _active_admins(session) <= 1
    ):
        raise Conflict("this is the last active administrator; appoint another one first")
    user.role, user.unit_id, user.is_head = role, unit_id, is_head
    session.add(user)
    session.flush()
    return user
