"""The supervisors' wallboard (大屏): operators by state, the calls waiting and the longest
wait, and today's figures — answered within 15 s, abandoned, overflowed — with one row per
operator (state, time in it, calls, handle time, occupancy). Dense enough for a 1366×768 wall
screen; the figures are hotline.calls.acd_board's (defined in acd_figures and the API).

    GET /wallboard          the page
    GET /wallboard/board    its content (htmx)

Live: the board is read again whenever the page's one stream says a call or an operator's
state changed (topics ``calls`` and ``agents``), and every REFRESH_S besides, because waits
grow and an overflow to the robot changes no call's answered/ended state; between reads the
browser counts the clocks up itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import AgentState, Role
from core.clock import Clock
from core.settings import Settings
from hotline.calls import acd_board
from hotline.calls.call_control import SUPERVISING
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import nav
from web.pages.agent_panel import REASONS, STATES, clock_text
from web.pages.i18n import N_
from web.pages.nav import NavItem
from web.pages.people import Person, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
SUPERVISORS = frozenset({Role.supervisor, Role.admin})
WATCHING = require(*SUPERVISORS)
REFRESH_S = 15
nav.register(NavItem("/wallboard", N_("Wallboard"), SUPERVISORS, order=35))

# The tiles of operators by state, in the order a supervisor reads them.
STATE_TILES = (
    AgentState.ready,
    AgentState.ringing,
    AgentState.on_call,
    AgentState.wrap_up,
    AgentState.not_ready,
)


def _listens(person: Person) -> bool:
    """Supervisors (and admins) listen in on a call from its console view."""
    return person.role in SUPERVISING


def share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def seconds_text(value: float | None) -> str:
    return "—" if value is None else clock_text(round(value))


def _context(session: Session, clock: Clock, settings: Settings) -> dict[str, Any]:
    board = acd_board.board(
        session,
        now=clock.now(),
        tz=settings.tz,
        answer_target_s=settings.acd.answer_target_s,
        short_abandon_s=settings.acd.short_abandon_s,
    )
    return {
        "board": board,
        "signed_in": sum(
            n for state, n in board.by_state.items() if state != AgentState.signed_out
        ),
        "state_tiles": STATE_TILES,
        "states": STATES,
        "reasons": REASONS,
        "target_s": round(settings.acd.answer_target_s),
        "short_s": round(settings.acd.short_abandon_s),
        "share": share,
        "seconds_text": seconds_text,
        "clock_text": clock_text,
        "refresh_s": REFRESH_S,
    }


@router.get("/wallboard")
def wallboard(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    context = _context(session, clock, settings)
    return render(request, "wallboard/index.html", {**context, "may_listen": _listens(person)})


@router.get("/wallboard/board")
def board(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    context = _context(session, clock, settings)
    return render(request, "wallboard/_board.html", {**context, "may_listen": _listens(person)})
