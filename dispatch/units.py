"""Units (承办单位) — the departments, districts, streets and enterprises tickets are
dispatched to — and the people who work in them, by unit code.

Functions take an explicit session and never commit: the caller owns the unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlmodel import Session, col

from accounts import service as accounts
from accounts.models import Role, User
from core.db import saved_id
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference
from dispatch.models import Unit, UnitLevel

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
    unit = session.scalars(select(Unit).where(col(Unit.code) == code)).first()
    if unit is None:
        raise NotFound(f"unit {code!r} does not exist", unit=code)
    return unit


def list_units(session: Session, *, active_only: bool = False) -> list[Unit]:
    stmt = select(Unit).order_by(col(Unit.code))
    if active_only:
        stmt = stmt.where(col(Unit.active).is_(True))
    return list(session.scalars(stmt))


def _known_unit(session: Session, code: str, field: str) -> Unit:
    unit = session.scalars(select(Unit).where(col(Unit.code) == code)).first()
    if unit is None:
        raise InvalidInput(f"{field}: unit {code!r} does not exist", **{field: code})
    return unit


def create_unit(session: Session, *, data: UnitCreate) -> Unit:
    if session.scalars(select(col(Unit.id)).where(col(Unit.code) == data.code)).first() is not None:
        raise Conflict(f"a unit with code {data.code!r} already exists", code=data.code)
    parent_id = (
        _known_unit(session, data.parent_code, "parent_code").id if data.parent_code else None
    )
    unit = Unit.model_validate(
        data.model_dump(exclude={"parent_code"}), update={"parent_id": parent_id}
    )
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
            raise InvalidInput(
                f"unit {parent_code!r} lies under {unit.code!r}; the unit tree cannot have a cycle",
                parent_code=parent_code,
            )
        ancestor = session.get(Unit, ancestor.parent_id) if ancestor.parent_id else None
    return parent


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
        found.update((saved_id(u), u) for u in rows)
    return found


# ---------------------------------------------------------------- the people of units


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
    """A new account in the unit `unit_code` (none for centre staff) and its bearer token,
    returned this once."""
    unit = _known_unit(session, unit_code, "unit_code") if unit_code else None
    return accounts.create_user(
        session,
        username=username,
        display_name=display_name,
        role=role,
        now=now,
        unit_id=unit.id if unit else None,
        email=email,
        is_head=is_head,
    )


def list_users(
    session: Session,
    *,
    role: Role | None = None,
    unit_code: str | None = None,
    active: bool | None = None,
) -> list[User]:
    unit_id = get_unit(session, code=unit_code).id if unit_code is not None else None
    return accounts.list_users(session, role=role, unit_id=unit_id, active=active)


def change_user_role(
    session: Session,
    *,
    user_id: int,
    role: Role,
    unit_code: str | None = None,
    is_head: bool = False,
) -> User:
    """Move an account to another role and unit (`unit_code`, none for centre staff)."""
    unit = _known_unit(session, unit_code, "unit_code") if unit_code else None
    return accounts.change_role(
        session, user_id=user_id, role=role, unit_id=unit.id if unit else None, is_head=is_head
    )
