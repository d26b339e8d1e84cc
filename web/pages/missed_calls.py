"""The calls lost in the queue, to be called back (漏话回拨): every caller who hung up while
waiting for an operator in the last 72 hours and has not got through since — newest first,
with how often they gave up, their longest wait and the attempts so far — and a form to
record each attempt (reached: off the list; no answer: stays, counted).

    GET  /calls/missed         the list (its count is in the top bar)
    POST /calls/missed         number, outcome = reached | no_answer
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import CENTRE_ROLES
from core.clock import Clock
from core.errors import DomainError
from hotline.calls import missed
from web.deps import ClockDep, SessionDep
from web.pages import nav
from web.pages.i18n import N_, _
from web.pages.nav import NavItem
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
CENTRE = require(*CENTRE_ROLES)
OUTCOMES = {"reached": N_("Reached"), "no_answer": N_("No answer")}
REFUSALS = (
    N_("The outcome is one of: reached, no answer."),
    N_("Nobody with this number is waiting for a call-back."),
)


def _count(session: Session, person: Person, now: Any) -> int:
    return missed.missed_count(session, now=now)


nav.register(
    NavItem("/calls/missed", N_("Missed calls"), frozenset(CENTRE_ROLES), order=20, count=_count)
)


def _context(request: Request, session: Session, clock: Clock) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "callers": missed.missed_callers(
            session, now=clock.now(), short_abandon_s=settings.acd.short_abandon_s
        ),
        "outcomes": OUTCOMES,
        "window_h": int(missed.WINDOW.total_seconds() // 3600),
        "error": None,
        "done": request.query_params.get("done"),
    }


@router.get("/calls/missed")
def missed_calls(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = CENTRE
) -> Response:
    return render(request, "console/missed.html", _context(request, session, clock))


@router.post("/calls/missed", dependencies=[Depends(csrf_form)])
async def attempt(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = CENTRE
) -> Response:
    form = await request.form()
    number = str(form.get("number") or "").strip()[:64]
    outcome = str(form.get("outcome") or "")[:16]
    return await run_in_threadpool(_attempt, request, session, clock, person, number, outcome)


def _attempt(
    request: Request, session: Session, clock: Clock, person: Person, number: str, outcome: str
) -> Response:
    try:
        count = missed.record_attempt(
            session, number=number, outcome=outcome, user_id=person.id, now=clock.now()
        )
    except DomainError as exc:
        record(
            session,
            request,
            clock,
            action="missed_call_back",
            person=person,
            target=f"phone:{number}",
            outcome="refused",
            detail={"outcome": outcome},
        )
        context = _context(request, session, clock)
        context["error"] = _(exc.message)
        return render(request, "console/missed.html", context, status_code=409)
    record(
        session,
        request,
        clock,
        action="missed_call_back",
        person=person,
        target=f"phone:{number}",
        detail={"outcome": outcome, "calls": count},
    )
    return RedirectResponse(f"/calls/missed?done={outcome}", status_code=303)
