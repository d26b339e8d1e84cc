"""Units (承办单位) and the people who work in them: user accounts, bearer tokens, and which
tickets a user may see.

Functions take an explicit session and never commit: the caller owns the unit of work.
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, bindparam, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from dispatch import reference
from dispatch.models import Assignment, Role, Unit, UnitLevel, User
from hotline.db import loaded
from hotline.errors import Conflict, Forbidden, InvalidInput, NotFound
from tickets.models import Ticket

# Roles of the 12345 centre itself; only a handler belongs to a department.
CENTRE_ROLES = frozenset({Role.operator, Role.dispatcher, Role.supervisor, Role.admin})
EMAIL = r"^[^@\s]+@[^@\s]+$"


# ---------------------------------------------------------------- schemas


class UnitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str = Field(min_length=1, max_length=100)
    level: UnitLevel
    parent_code: str | None = None
    district: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=200, pattern=EMAIL)
    head_name: str | None = Field(default=None, max_length=100)
    head_email: str | None = Field(default=None, max_length=200, pattern=EMAIL)
    active: bool = True


class UnitUpdate(BaseModel):
    """The fields to change; the code is the unit's identity and stays."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    level: UnitLevel | None = None
    parent_code: str | None = None
    district: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=200, pattern=EMAIL)
    head_name: str | None = Field(default=None, max_length=100)
    head_email: str | None = Field(default=None, max_length=200, pattern=EMAIL)
    active: bool | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-@]+$")
    display_name: str = Field(min_length=1, max_length=100)
    role: Role
    unit_code: str | None = None
    email: str | None = Field(default=None, max_length=200, pattern=EMAIL)
    is_head: bool = False


# ---------------------------------------------------------------- units


def get_unit(session: Session, *, code: str) -> Unit:
    unit = session.scalars(select(Unit).where(Unit.code == code)).first()
    if unit is None:
        raise NotFound(f"unit {code!r} does not exist", unit=code)
    return unit


def list_units(session: Session, *, active_only: bool = False) -> list[Unit]:
    stmt = select(Unit).order_by(col(Unit.code))
    if active_only:
        stmt = stmt.where(col(Unit.active).is_(True))
    return list(session.scalars(stmt))


def _known_unit(session: Session, code: str, field: str) -> Unit:
    unit = session.scalars(select(Unit).where(Unit.code == code)).first()
    if unit is None:
        raise InvalidInput(f"{field}: unit {code!r} does not exist", **{field: code})
    return unit


def create_unit(session: Session, *, data: UnitCreate) -> Unit:
    if session.scalars(select(Unit.id).where(Unit.code == data.code)).first() is not None:
        raise Conflict(f"a unit with code {data.code!r} already exists", code=data.code)
    parent_id = _known_unit(session, data.parent_code, "parent_code").id \
        if data.parent_code else None
    unit = Unit.model_validate(data.model_dump(exclude={"parent_code"}),
                               update={"parent_id": parent_id})
    session.add(unit)
    session.flush()
    reference.bump(session)
    return unit


def update_unit(session: Session, *, code: str, changes: UnitUpdate) -> Unit:
    unit = get_unit(session, code=code)
    delta = changes.model_dump(exclude_unset=True)
    emptied = sorted(f for f in ("name", "level", "active") if f in delta and delta[f] is None)
    if emptied:
        raise InvalidInput(f"{', '.join(emptied)} cannot be emptied", fields=emptied)
    if "parent_code" in delta:
        parent_code = delta.pop("parent_code")
        unit.parent_id = _new_parent(session, unit, parent_code).id if parent_code else None
    for field, value in delta.items():
        setattr(unit, field, value)
    session.add(unit)
    session.flush()
    reference.bump(session)
    return unit


def _new_parent(session: Session, unit: Unit, parent_code: str) -> Unit:
    parent = _known_unit(session, parent_code, "parent_code")
    ancestor: Unit | None = parent
    while ancestor is not None:
        if ancestor.id == unit.id:
            raise InvalidInput(f"unit {parent_code!r} lies under {unit.code!r}; the unit tree "
                               f"cannot have a cycle", parent_code=parent_code)
        ancestor = session.get(Unit, ancestor.parent_id) if ancestor.parent_id else None
    return parent


# ---------------------------------------------------------------- users and tokens


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def create_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    role: Role,
    now: datetime,
    unit_code: str | None = None,
    email: str | None = None,
    is_head: bool = False,
) -> tuple[User, str]:
    """A new account and its bearer token. The token is returned this once; only its hash
    is stored."""
    role = Role(role)
    if role == Role.handler and not unit_code:
        raise InvalidInput("a handler must belong to a unit: give unit_code", field="unit_code")
    unit = _known_unit(session, unit_code, "unit_code") if unit_code else None
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise Conflict(f"username {username!r} is taken", username=username)
    token, token_hash = _new_token()
    user = User(username=username, display_name=display_name, role=role,
                unit_id=unit.id if unit else None, is_head=is_head, email=email,
                token_hash=token_hash, created_at=now)
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        # Lost a race with a concurrent request for the same username.
        raise Conflict(f"username {username!r} is taken", username=username) from exc
    return user, token


_BY_TOKEN = select(User.__table__, reference.REVISION).where(
    User.__table__.c.token_hash == bindparam("token_hash"))


def authenticate(session: Session, *, token: str) -> User | None:
    """The active user holding `token`. Only the SHA-256 is looked up, so timing reveals
    nothing about the token itself."""
    if not token:
        return None
    # A plain SELECT rather than an ORM query: this runs on every request, and it brings
    # the reference revision along, which nearly every request needs next.
    row = session.connection().execute(
        _BY_TOKEN, {"token_hash": hash_token(token)}).mappings().first()
    if row is None or not row["active"]:
        return None
    values = dict(row)
    reference.read_along(session, values.pop("reference_revision"))
    return loaded(session, User, values)


def get_user(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", user_id=user_id)
    return user


def rotate_token(session: Session, *, user_id: int) -> tuple[User, str]:
    """A fresh token; the old one stops working when the transaction commits."""
    user = get_user(session, user_id=user_id)
    token, user.token_hash = _new_token()
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
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == Role.admin, col(User.active).is_(True))) or 0


def list_users(
    session: Session,
    *,
    role: Role | None = None,
    unit_code: str | None = None,
    active: bool | None = None,
) -> list[User]:
    stmt = select(User).order_by(col(User.username))
    if role is not None:
        stmt = stmt.where(User.role == role)
    if unit_code is not None:
        stmt = stmt.where(User.unit_id == get_unit(session, code=unit_code).id)
    if active is not None:
        stmt = stmt.where(col(User.active).is_(active))
    return list(session.scalars(stmt))


def units_by_id(session: Session, ids: Sequence[int | None]) -> dict[int, Unit]:
    """Units to read (names and codes for responses), from the reference snapshot: its
    revision check is one query per transaction however many lookups follow."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    known = reference.snapshot(session).units_by_id
    found = {i: known[i] for i in wanted if i in known}
    missing = wanted - found.keys()
    if missing:
        rows = session.scalars(select(Unit).where(col(Unit.id).in_(missing)))
        found.update((u.id, u) for u in rows)
    return found


# ---------------------------------------------------------------- what a user may see


def visible_ticket_clause(user: User) -> ColumnElement[bool] | None:
    """None when `user` sees every ticket; for a handler, the tickets their unit was ever
    assigned — any assignment status, so a unit keeps seeing the history of its work."""
    if user.role in CENTRE_ROLES:
        return None
    return exists().where(Assignment.ticket_id == Ticket.id, Assignment.unit_id == user.unit_id)


def check_ticket_search(user: User, *, caller_phone: str | None) -> None:
    """Handlers see confidential callers masked; searching by phone number would let them
    confirm a guessed number, so that search is for centre staff only."""
    if caller_phone and user.role not in CENTRE_ROLES:
        raise Forbidden("searching by caller phone is for centre staff only")


def visible_ticket(session: Session, *, user: User, ticket_id: int | None = None,
                   number: str | None = None) -> Ticket:
    """The ticket, if `user` may see it. A ticket they may not see is reported as missing,
    so its existence does not leak."""
    if (ticket_id is None) == (number is None):
        raise ValueError("give exactly one of ticket_id and number")
    stmt = select(Ticket).where((Ticket.id == ticket_id) if number is None
                                else (Ticket.number == number))
    clause = visible_ticket_clause(user)
    if clause is not None:
        stmt = stmt.where(clause)
    ticket = session.scalars(stmt).first()
    if ticket is None:
        ident = number if number is not None else ticket_id
        raise NotFound(f"ticket {ident} does not exist",
                       **({"number": number} if number is not None else {"ticket_id": ticket_id}))
    return ticket


def sees_caller_identity(user: User) -> bool:
    """A confidential caller's name and phone are for the centre's eyes only."""
    return user.role in CENTRE_ROLES


def mask_phone(phone: str) -> str:
    """13812345678 → 138****5678 (a country code is dropped); a shorter number keeps a
    quarter of its digits at each end."""
    digits = "".join(c for c in phone if c.isdigit())[-11:]
    head, tail = (3, 4) if len(digits) >= 11 else (len(digits) // 4, len(digits) // 4)
    return digits[:head] + "*" * (len(digits) - head - tail) + digits[len(digits) - tail:]


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***: only the first character stays."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else "*"
