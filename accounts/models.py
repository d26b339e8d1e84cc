"""The people who use the platform: accounts, their roles, the hash of their bearer token (for
machines) and of their password (for people), their signed-in browser sessions, and the audit
trail of sign-ins and of every action taken from a page.

A user may belong to a unit (承办单位, `dispatch.models.Unit`); the foreign key names the table
so that this layer needs nothing of dispatch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index
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


# ---------------------------------------------------------------- operators at their seats


class AgentState(StrEnum):
    """Where an operator is in taking calls (accounts.agents has the moves between them)."""

    signed_out = "signed_out"
    ready = "ready"
    not_ready = "not_ready"
    ringing = "ringing"
    on_call = "on_call"
    wrap_up = "wrap_up"


class NotReadyReason(StrEnum):
    break_ = "break"
    training = "training"
    meeting = "meeting"
    after_call_work = "after_call_work"
    missed = "missed"  # a call rang and was not answered: the queue stops offering calls


class AgentStatus(SQLModel, table=True):
    """An operator's state now: one row per operator who ever signed in at a seat. Every
    change goes through a compare-and-set on ``version`` (accounts.agents), so that the
    queue in one process and the console in another never both move the same operator."""

    __tablename__ = "agent_status"

    user_id: int = Field(
        foreign_key="user.id", primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    state: AgentState = Field(sa_type=enum_type(AgentState), index=True)
    reason: NotReadyReason | None = Field(default=None, sa_type=enum_type(NotReadyReason))
    # The seat (SIP extension) bound from the console; NULL when signed out, so that a
    # seat is bound to one signed-in operator at a time.
    extension: str | None = Field(default=None, max_length=16, unique=True)
    skills: str = Field(default="", max_length=500)  # comma list, e.g. "en,urgent"
    since: datetime = Field(sa_type=UTCDateTime)  # in this state since
    idle_since: datetime | None = Field(default=None, sa_type=UTCDateTime)  # longest idle first
    wrap_up_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    call_key: str | None = Field(default=None, max_length=200)
    version: int = 0


class AgentStateChange(SQLModel, table=True):
    """Every move of every operator, append-only: the basis of occupancy and handle-time
    figures."""

    __tablename__ = "agent_state_change"
    # One operator's history in time order (their state at a moment: one index seek).
    __table_args__ = (Index("ix_agent_state_change_user_id_at", "user_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id")
    from_state: AgentState = Field(sa_type=enum_type(AgentState))
    to_state: AgentState = Field(sa_type=enum_type(AgentState))
    reason: NotReadyReason | None = Field(default=None, sa_type=enum_type(NotReadyReason))
    call_key: str | None = Field(default=None, max_length=200)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    by_user_id: int | None = Field(default=None, foreign_key="user.id")
    source: str = Field(max_length=16)  # console, acd, reconciler, admin
