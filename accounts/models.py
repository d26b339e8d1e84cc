"""The people who use the platform: accounts, their roles, the hash of their bearer token (for
machines) and of their password (for people), their signed-in browser sessions, and the audit
trail of sign-ins and of every action taken from a page.

A user may belong to a unit (承办单位, `dispatch.models.Unit`); the foreign key names the table
so that this layer needs nothing of dispatch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type


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
    # Sign-in to the pages (accounts.passwords): an argon2id hash; None = no password yet.
    password_hash: str | None = Field(default=None, max_length=255)
    password_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    must_change_password: bool = False  # set by an admin reset: the next page is the change
    failed_logins: int = 0  # consecutive failed sign-ins; a success resets it
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    locale: str | None = Field(default=None, max_length=16)  # the pages' language; None: default


class UserSession(SQLModel, table=True):
    """A signed-in browser: the cookie carries a random token, the row its SHA-256. Ends at
    sign-out, after ``WEB__SESSION_IDLE_MINUTES`` without a request, after
    ``WEB__SESSION_MAX_HOURS`` in all, or when the user signs out everywhere."""

    __tablename__ = "user_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    csrf_token: str = Field(max_length=64)  # sent back with every state-changing request
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)  # the absolute end
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)


class AuditEntry(SQLModel, table=True):
    """Who did what, when and from where, beyond a ticket's own events: sign-ins, failed
    sign-ins, sign-outs, and every action taken from a page (its outcome included)."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    username: str | None = Field(default=None, max_length=64)  # as typed, for failed sign-ins
    action: str = Field(max_length=64, index=True)
    target: str | None = Field(default=None, max_length=200)
    outcome: str = Field(default="ok", max_length=32)
    address: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))


# Roles of the 12345 centre itself; only a handler belongs to a department.
CENTRE_ROLES = frozenset({Role.operator, Role.dispatcher, Role.supervisor, Role.admin})
