"""The agent panel on the operator console (坐席状态): bind a seat, go ready, not ready with a
reason, sign out; the state and the time in it, the wrap-up's countdown, and how many
colleagues are ready — refreshed over the page's live stream (topic ``agents``) whenever any
operator's state changes, here or in the queue's process.

    GET  /console/agent-panel    the panel's content (htmx; the console includes its shell)
    POST /console/agent-panel    a move: state = signed_in (extension, skills) | ready |
                                 not_ready (reason) | signed_out

The moves are the API's (web.api.agents.apply_move): the same rules, bell and stored changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlmodel import Session
from starlette.responses import Response

from accounts import agents
from accounts.models import CENTRE_ROLES, AgentState, NotReadyReason
from core.clock import Clock
from core.errors import DomainError
from web.api.agents import AgentMove, apply_move
from web.deps import ClockDep, SessionDep
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
SEATED = require(*CENTRE_ROLES)
TEMPLATE = "console/_agent_panel_body.html"

STATES = {
    AgentState.signed_out: N_("Not signed in at a seat"),
    AgentState.ready: N_("Ready"),
    AgentState.not_ready: N_("Not ready"),
    AgentState.ringing: N_("Ringing"),
    AgentState.on_call: N_("On a call"),
    AgentState.wrap_up: N_("Wrap-up"),
}
REASONS = {
    NotReadyReason.break_: N_("Break"),
    NotReadyReason.training: N_("Training"),
    NotReadyReason.meeting: N_("Meeting"),
    NotReadyReason.after_call_work: N_("After-call work"),
    NotReadyReason.missed: N_("Missed a call"),
}
CHOOSABLE = [r for r in NotReadyReason if r != NotReadyReason.missed]


def clock_text(seconds: int) -> str:
    """``m:ss`` or ``h:mm:ss``, as the panel's script counts on (agent_panel.js)."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _context(session: Session, person: Person, clock: Clock) -> dict[str, Any]:
    now = clock.now()
    agents.end_wrap_ups(session, now, user_id=person.id)  # over: ready, as the queue would
    agent = agents.status(session, person.id, now)
    remaining = None
    if agent.state == AgentState.wrap_up and agent.wrap_up_until is not None:
        remaining = max(0, int((agent.wrap_up_until - now).total_seconds()))
    return {
        "agent": agent,
        "elapsed": max(0, int((now - agent.since).total_seconds())),
        "remaining": remaining,
        "ready_count": agents.ready_count(session),
        "signed_in_count": agents.signed_in_count(session),
        "clock_text": clock_text,
        "states": STATES,
        "reasons": REASONS,
        "choosable": CHOOSABLE,
        "values": {},
        "error": None,
    }


@router.get("/console/agent-panel")
def panel(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = SEATED
) -> Response:
    return render(request, TEMPLATE, _context(session, person, clock))


@router.post("/console/agent-panel", dependencies=[Depends(csrf_form)])
async def move(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = SEATED
) -> Response:
    form = await request.form()
    values = {
        name: str(form.get(name) or "").strip()[:200]
        for name in ("state", "extension", "skills", "reason")
    }
    return await run_in_threadpool(_move, request, session, clock, person, values)


def _move(
    request: Request, session: Session, clock: Clock, person: Person, values: dict[str, str]
) -> Response:
    htmx = bool(request.headers.get("hx-request"))
    try:
        chosen = AgentMove(
            state=values["state"],  # validated here
            extension=values["extension"] or None,
            skills=[s for s in values["skills"].split(",") if s.strip()] or None,
            reason=values["reason"] or None,
        )
        moved = apply_move(
            session,
            actor=person.user,
            target=person.user,
            move=chosen,
            now=clock.now(),
            settings=request.app.state.settings,
        )
    except (ValidationError, DomainError) as exc:
        why = exc.message if isinstance(exc, DomainError) else _("Choose one of the listed values.")
        record(
            session,
            request,
            clock,
            action="agent_state",
            person=person,
            target=f"agent:{person.id}",
            outcome="refused",
            detail={"to": values["state"][:32]},
        )
        context = _context(session, person, clock)
        context.update(values=values, error=_("Not changed: %(why)s", why=why))
        # htmx swaps only a 2xx answer: the panel shows the error in place.
        return render(request, TEMPLATE, context, status_code=200 if htmx else 409)
    record(
        session,
        request,
        clock,
        action="agent_state",
        person=person,
        target=f"agent:{person.id}",
        detail={"to": moved.state.value, "extension": moved.extension},
    )
    if not htmx:
        return RedirectResponse("/console", status_code=303)
    return render(request, TEMPLATE, _context(session, person, clock))
