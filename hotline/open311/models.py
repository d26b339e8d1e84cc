"""A client application registered to file Open311 requests, and the hash of its API key."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from core.db import UTCDateTime


class Open311Client(SQLModel, table=True):
    """An application (a partner system, a city app) that may POST requests. Its API key is
    a random 32-byte token shown once when issued; only its SHA-256 is kept (a random key
    needs no slow hash: there is nothing to guess from). A revoked client's key is refused
    with 403 from then on; the row stays, so its requests keep their provenance."""

    __tablename__ = "open311_client"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=64)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=64)
