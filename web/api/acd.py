"""The contact-centre figures (hotline.calls.acd_figures) for supervisors and administrators:
what the queue of operators did with the calls, per interval of the centre's clock and per
operator, each figure with its one-line definition in the answer.

    GET /acd/figures?from=&to=&interval=15min|hour|day&agent=

``from`` and ``to`` are ISO 8601 with an offset (``to`` exclusive; default: the centre's
midnight today to now); at most 92 days and 3000 intervals in one answer, within 1971-9000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import col

from accounts.models import User
from hotline.calls import acd_figures
from hotline.calls.acd_figures import AgentFigures, Figures, Interval
from web.deps import ClockDep, IsoDateTime, RowId, SessionDep, Supervisor
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/acd", tags=["acd"], responses=ERROR_RESPONSES)

D = acd_figures.DEFINITIONS


class CallFigures(BaseModel):
    """The calls of an interval (or of one operator: the calls they answered). Shares are
    null when nothing was counted."""

    offered: int = Field(description=D["offered"])
    queued: int = Field(description=D["queued"])
    answered: int = Field(description=D["answered"])
    answered_within_target: int = Field(description=D["answered_within_target"])
    answered_within_30s: int = Field(description=D["answered_within_30s"])
    service_level: float | None = Field(description=D["service_level"])
    service_level_30s: float | None = Field(description=D["service_level_30s"])
    answer_rate: float | None = Field(description=D["answer_rate"])
    asa_s: float | None = Field(description=D["asa_s"])
    p90_wait_s: int | None = Field(description=D["p90_wait_s"])
    abandoned: int = Field(description=D["abandoned"])
    short_abandoned: int = Field(description=D["short_abandoned"])
    abandon_rate: float | None = Field(description=D["abandon_rate"])
    abandon_wait_avg_s: float | None = Field(description=D["abandon_wait_avg_s"])
    overflowed: int = Field(description=D["overflowed"])
    overflowed_by_reason: dict[str, int]
    callback_requested: int = Field(description=D["callback_requested"])
    robot: int = Field(description=D["robot"])
    refused: int = Field(description="offered calls refused before the queue")
    lost: int = Field(description=D["lost"])
    transferred: int = Field(description=D["transferred"])
    handled: int = Field(description=D["handled"])
    talk_s: float
    hold_s: float
    wrap_up_s: float
    handle_s: float
    talk_avg_s: float | None = Field(description=D["talk_avg_s"])
    hold_avg_s: float | None = Field(description=D["hold_avg_s"])
    wrap_up_avg_s: float | None = Field(description=D["wrap_up_avg_s"])
    handle_avg_s: float | None = Field(description=D["handle_avg_s"])


class AgentFiguresRead(BaseModel):
    user_id: int
    username: str
    display_name: str
    calls: CallFigures
    signed_in_s: float = Field(description="time signed in at a seat within the range")
    not_ready_s: float = Field(description="not ready for a reason other than after-call work")
    busy_s: float = Field(description="on a call, in wrap-up, or not ready for after-call work")
    occupancy: float | None = Field(description=D["occupancy"])


class IntervalFigures(BaseModel):
    start: datetime
    end: datetime = Field(description="exclusive")
    figures: CallFigures
    agents: list[AgentFiguresRead]


class AcdFigures(BaseModel):
    start: datetime
    end: datetime = Field(description="exclusive")
    interval: Interval
    time_zone: str = Field(description="the centre's: intervals follow its clock")
    answer_target_s: float
    short_abandon_s: float
    definitions: dict[str, str] = Field(description="one line per figure")
    total: CallFigures
    intervals: list[IntervalFigures]
    agents: list[AgentFiguresRead] = Field(description="each operator over the whole range")


def _calls(figures: Figures) -> CallFigures:
    return CallFigures.model_validate(figures.as_dict())


def _agent(user_id: int, figures: AgentFigures, users: dict[int, User]) -> AgentFiguresRead:
    user = users.get(user_id)
    return AgentFiguresRead(
        user_id=user_id,
        username=user.username if user else "",
        display_name=user.display_name if user else "",
        calls=_calls(figures.calls),
        signed_in_s=figures.time.signed_in_s,
        not_ready_s=figures.time.not_ready_s,
        busy_s=figures.time.busy_s,
        occupancy=figures.time.occupancy,
    )


@router.get(
    "/figures",
    response_model=AcdFigures,
    summary="Contact-centre figures (ACD)",
    responses=error_responses(
        {
            403: "only supervisors and administrators read the figures",
            422: "the range is invalid: more than 92 days or 3000 intervals, or `to` before `from`",
        }
    ),
)
def figures(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    _: Supervisor,
    start: Annotated[IsoDateTime | None, Query(alias="from")] = None,
    end: Annotated[IsoDateTime | None, Query(alias="to", description="exclusive")] = None,
    interval: Interval = Interval.hour,
    agent: Annotated[RowId | None, Query(description="only this operator's row")] = None,
) -> AcdFigures:
    """Per interval (15 minutes, hour, day on the centre's clock) and per operator; a call
    is counted in the interval it arrived in, operators' time is cut at the boundaries."""
    settings = request.app.state.settings
    tz, now = settings.tz, clock.now()
    if start is None:
        start = acd_figures.midnight(now, tz)
    if end is None:
        end = now
    report = acd_figures.report(
        session,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        interval=interval,
        tz=tz,
        now=now,
        answer_target_s=settings.acd.answer_target_s,
        short_abandon_s=settings.acd.short_abandon_s,
        agent_id=agent,
    )
    ids = set(report.agents)
    users = {u.id: u for u in session.scalars(select(User).where(col(User.id).in_(ids)))}
    known = {i: u for i, u in users.items() if i is not None}
    return AcdFigures(
        start=report.start,
        end=report.end,
        interval=report.interval,
        time_zone=tz.key,
        answer_target_s=settings.acd.answer_target_s,
        short_abandon_s=settings.acd.short_abandon_s,
        definitions=dict(D),
        total=_calls(report.total),
        intervals=[
            IntervalFigures(
                start=b.start,
                end=b.end,
                figures=_calls(b.figures),
                agents=[_agent(i, f, known) for i, f in sorted(b.agents.items())],
            )
            for b in report.buckets
        ],
        agents=[_agent(i, f, known) for i, f in report.agents.items()],
    )
