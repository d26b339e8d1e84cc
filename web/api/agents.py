"""Operators at their seats (accounts.agents): who is signed in and in which state, and the
console's moves. An operator moves only themselves; a supervisor or an administrator may
sign another operator out (someone who left their desk signed in, or a state stuck after a
crash). Units' handlers take no calls and see none of this.

    GET  /agents               signed-in operators (``?all=true``: everyone who ever was)
    GET  /agents/me            your own state
    POST /agents/me/state      sign in at a seat, ready, not ready (reason), sign out
    POST /agents/{id}/state    the same for yourself; for another, sign-out by a supervisor
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import Session, col

from accounts import agents
from accounts.models import AgentState, NotReadyReason, User
from core import bell
from core.bell import Bell
from core.db import saved_id
from core.errors import Forbidden, InvalidInput, NotFound
from core.settings import Settings
from web.api import examples as ex
from web.auth import SUPERVISION
from web.deps import ClockDep, IntakeStaff, PathId, SessionDep
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/agents", tags=["agents"], responses=ERROR_RESPONSES)


class AgentRead(BaseModel):
    user_id: int
    username: str
    display_name: str
    state: AgentState
    reason: NotReadyReason | None
    extension: str | None
    skills: list[str]
    since: datetime
    idle_since: datetime | None
    wrap_up_until: datetime | None = Field(description="when wrap-up ends in ready by itself")
    call_key: str | None


class AgentMove(BaseModel):
    """``signed_in`` binds the seat ``extension`` (with ``skills``) and leaves you not ready;
    ``not_ready`` needs a ``reason``."""

    state: Literal["signed_in", "ready", "not_ready", "signed_out"]
    extension: str | None = Field(default=None, max_length=16)
    skills: list[str] | None = Field(default=None, max_length=20)
    reason: NotReadyReason | None = None


def agent_read(agent: agents.Agent, user: User) -> AgentRead:
    return AgentRead(
        user_id=agent.user_id,
        username=user.username,
        display_name=user.display_name,
        state=agent.state,
        reason=agent.reason,
        extension=agent.extension,
        skills=sorted(agent.skills),
        since=agent.since,
        idle_since=agent.idle_since,
        wrap_up_until=agent.wrap_up_until,
        call_key=agent.call_key,
    )


def the_bell(settings: Settings) -> Bell:
    return bell.for_settings(settings)


def apply_move(
    session: Session,
    *,
    actor: User,
    target: User,
    move: AgentMove,
    now: datetime,
    settings: Settings,
) -> agents.Agent:
    """One console move, by ``actor`` on ``target`` (the same person, or a supervisor's
    forced sign-out); refused with Forbidden otherwise."""
    ring = the_bell(settings)
    actor_id, target_id = saved_id(actor), saved_id(target)
    if actor_id != target_id:
        if actor.role not in SUPERVISION:
            raise Forbidden("an operator changes only their own state")
        if move.state != "signed_out":
            raise Forbidden("for another operator, a supervisor may only sign them out")
        return agents.sign_out(
            session, target_id, now, by_user_id=actor_id, force=True, source="admin", bell=ring
        )
    # A wrap-up that is over is ready already: the next move starts from there.
    agents.end_wrap_ups(session, now, user_id=target_id, bell=ring)
    if move.state == "signed_in":
        if not move.extension:
            raise InvalidInput("signing in needs the seat's extension", field="extension")
        return agents.sign_in(session, target, move.extension, move.skills, now, bell=ring)
    if move.state == "ready":
        return agents.set_ready(session, target_id, now, bell=ring)
    if move.state == "not_ready":
        if move.reason is None:
            raise InvalidInput(
                "say why: break, training, meeting or after_call_work", field="reason"
            )
        return agents.set_not_ready(session, target_id, move.reason, now, bell=ring)
    return agents.sign_out(session, target_id, now, bell=ring)


@router.get(
    "",
    response_model=list[AgentRead],
    summary="List operators at their seats",
    responses=error_responses({403: "units' handlers take no calls"}),
)
def list_agents(session: SessionDep, _: IntakeStaff, all: bool = False) -> list[AgentRead]:
    """By state, then seat."""
    found = agents.list_agents(session, signed_in_only=not all)
    users = {
        u.id: u
        for u in session.scalars(select(User).where(col(User.id).in_([a.user_id for a in found])))
    }
    return [agent_read(a, users[a.user_id]) for a in found]


@router.get(
    "/me",
    response_model=AgentRead,
    summary="Your own seat state",
    responses=error_responses({403: "units' handlers take no calls"}),
)
def my_state(session: SessionDep, user: IntakeStaff, clock: ClockDep) -> AgentRead:
    """Your state at the console (signed out, not ready, ready, ringing, in a call, wrap-up); a
    wrap-up that is over is shown as ready."""
    agents.end_wrap_ups(session, clock.now(), user_id=saved_id(user))
    return agent_read(agents.status(session, saved_id(user), clock.now()), user)


@router.post(
    "/me/state",
    response_model=AgentRead,
    summary="Change your own seat state",
    responses=error_responses(
        {
            403: "units' handlers take no calls",
            409: "the move is not allowed in your state (ready while ringing, sign-out in a call)",
            422: "signing in needs an extension; not ready needs a reason",
        }
    ),
    openapi_extra=ex.body(
        sign_in=ex.AGENT_SIGN_IN,
        ready=ex.AGENT_READY,
        pause=ex.AGENT_BREAK,
        sign_out=ex.AGENT_SIGN_OUT,
    ),
)
def move_me(
    move: AgentMove, request: Request, session: SessionDep, user: IntakeStaff, clock: ClockDep
) -> AgentRead:
    """Illegal moves (ready while ringing, sign-out in a call) answer 409."""
    moved = apply_move(
        session,
        actor=user,
        target=user,
        move=move,
        now=clock.now(),
        settings=request.app.state.settings,
    )
    return agent_read(moved, user)


@router.post(
    "/{user_id}/state",
    response_model=AgentRead,
    summary="Change an operator's seat state",
    responses=error_responses(
        {
            403: "another operator's state: only a supervisor's or an administrator's sign-out",
            404: "no such user",
            409: "the move is not allowed in the operator's state",
            422: "signing in needs an extension; not ready needs a reason",
        }
    ),
    openapi_extra=ex.body(
        sign_in=ex.AGENT_SIGN_IN,
        ready=ex.AGENT_READY,
        pause=ex.AGENT_BREAK,
        sign_out=ex.AGENT_SIGN_OUT,
    ),
)
def move_agent(
    user_id: PathId,
    move: AgentMove,
    request: Request,
    session: SessionDep,
    user: IntakeStaff,
    clock: ClockDep,
) -> AgentRead:
    """Yourself: as ``/agents/me/state``. Another operator: a supervisor's or an
    administrator's sign-out only (403 otherwise), even in a call."""
    if user_id != saved_id(user) and user.role not in SUPERVISION:
        raise Forbidden("an operator changes only their own state")
    target = session.get(User, user_id)
    if target is None:
        raise NotFound(f"user {user_id} does not exist", user_id=user_id)
    moved = apply_move(
        session,
        actor=user,
        target=target,
        move=move,
        now=clock.now(),
        settings=request.app.state.settings,
    )
    return agent_read(moved, target)
