"""The figures' settings the admin changes: the weights of 响应率 / 解决率 / 满意率 in a unit's
score and the grade bands (分档). One row per setting key, its value JSON, with who changed it
and when (every change is also an audit entry)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime


class FigureSetting(SQLModel, table=True):
    __tablename__ = "figure_setting"

    key: str = Field(primary_key=True, max_length=64)  # "unit_rates"
    value: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)
    updated_by: int | None = Field(default=None, foreign_key="user.id")
