"""The people who use the platform: accounts, their roles and the hash of their bearer token.

A user may belong to a unit (承办单位, `dispatch.models.Unit`); the foreign key names the table
so that this layer needs nothing of dispatch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, enum_type


class Role(StrEnum):
    operator = "operator"
    dispatcher = "dispatcher"
    supervisor = "supervisor"
    handler = "handler"
    admin = "admin"


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    display_name: str = Field(max_length=100)
    role: Role = Field(sa_type=enum_type(Role))
    unit_id: int | None = Field(default=None, foreign_key="unit.id", index=True)
    is_head: bool = False  # receives supervision orders for the unit
    email: str | None = Field(default=None, max_length=200)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    active: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime)


# Roles of the 12345 centre itself; only a handler belongs to a department.
CENTRE_ROLES = frozenset({Role.operator, Role.dispatcher, Role.supervisor, Role.admin})
