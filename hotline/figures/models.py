"""The figures' settings the admin changes: the weights of 响应率 / 解决率 / 满意率 in a unit's
score and the grade bands (分档). One row per setting key, its value JSON, with who changed it
and when (every change is also an audit entry). And the figures' summary tables
(hotline.figures.summary)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type
from tickets.models import Channel


class FigureSetting(SQLModel, table=True):
    __tablename__ = "figure_setting"

    key: str = Field(primary_key=True, max_length=64)  # "unit_rates"
    value: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)
    updated_by: int | None = Field(default=None, foreign_key="user.id")


# ---------------------------------------------------------------- summaries (issue 18)
# hotline/figures/summary.py says how they are kept; the counts are the numerators
# ("_n") and denominators ("_d") of hotline.figures.definitions, per day of intake
# (``day``: days since 1970-01-01 in the centre's UTC offset, figure_summary_state.offset_s).


class FigureSummaryState(SQLModel, table=True):
    """The one row saying how far the summaries go: clocks judged at ``judged_at``, every
    audit event up to ``watermark`` (``ticket_event.id``) counted; ``prior_watermark`` the
    refresh before's, re-read by the next refresh for transactions that committed late."""

    __tablename__ = "figure_summary_state"

    id: int = Field(default=1, primary_key=True)
    offset_s: int
    judged_at: datetime = Field(sa_type=UTCDateTime)
    watermark: int = 0
    prior_watermark: int = 0
    refreshed_at: datetime = Field(sa_type=UTCDateTime)


class FigureSummaryTicket(SQLModel, table=True):
    """The ticket figures per (day, category, district, channel)."""

    __tablename__ = "figure_summary_ticket"
    __table_args__ = (Index("ix_figure_summary_ticket_day", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    day: int
    category_code: str | None = Field(default=None, max_length=12)
    district: str | None = Field(default=None, max_length=64)
    channel: Channel = Field(sa_type=enum_type(Channel))
    direct_answer_rate_n: int = 0
    direct_answer_rate_d: int = 0
    completion_rate_n: int = 0
    completion_rate_d: int = 0
    callback_rate_n: int = 0
    callback_rate_d: int = 0
    satisfaction_rate_n: int = 0
    satisfaction_rate_d: int = 0
    merge_rate_n: int = 0
    merge_rate_d: int = 0
    dispatch_accuracy_n: int = 0
    dispatch_accuracy_d: int = 0
    repeat_request_rate_n: int = 0
    repeat_request_rate_d: int = 0


class FigureSummaryUnit(SQLModel, table=True):
    """The unit (lead assignment) figures per (day, unit, category, district, channel), the
    unit's 满意率 (distinct tickets) and the days late of the 超期 assignments whose
    lateness no longer grows (replied, or ended)."""

    __tablename__ = "figure_summary_unit"
    __table_args__ = (Index("ix_figure_summary_unit_day", "day", "unit_id"),)

    id: int | None = Field(default=None, primary_key=True)
    day: int
    unit_id: int
    category_code: str | None = Field(default=None, max_length=12)
    district: str | None = Field(default=None, max_length=64)
    channel: Channel = Field(sa_type=enum_type(Channel))
    on_time_sign_rate_n: int = 0
    on_time_sign_rate_d: int = 0
    on_time_reply_rate_n: int = 0
    on_time_reply_rate_d: int = 0
    on_time_close_rate_n: int = 0
    on_time_close_rate_d: int = 0
    return_rate_n: int = 0
    return_rate_d: int = 0
    extension_rate_n: int = 0
    extension_rate_d: int = 0
    overdue_rate_n: int = 0
    overdue_rate_d: int = 0
    unit_satisfaction_n: int = 0
    unit_satisfaction_d: int = 0
    late_days: float = 0.0
    late_days_max: float | None = None


class FigureSummaryClock(SQLModel, table=True):
    """Each clock still running at ``judged_at`` (a live lead assignment not yet signed,
    replied or completed): whose judgement turns when ``now`` passes ``due_at``."""

    __tablename__ = "figure_summary_clock"
    __table_args__ = (
        Index("ix_figure_summary_clock_due", "due_at"),
        Index("ix_figure_summary_clock_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int
    clock: str = Field(max_length=8)  # "sign", "reply", "close"
    due_at: datetime = Field(sa_type=UTCDateTime)
    reply_unit: str = Field(max_length=16)  # the policy's ClockUnit, for days late
    day: int
    unit_id: int
    category_code: str | None = Field(default=None, max_length=12)
    district: str | None = Field(default=None, max_length=64)
    channel: Channel = Field(sa_type=enum_type(Channel))
