"""The department inbox (承办单位): the unit's live tickets, nearest deadline first, one
badge per running clock (sign-for, reply, close) in green, yellow or red with the time left;
filters by state, clock colour and text, and "in my charge"; and the escalations addressed
to the handler or their unit, to acknowledge. Only the person's own unit's work is listed
(the service filters by unit); each ticket opens the ticket page, where the work is done."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from accounts import privacy
from accounts.models import Role
from core.errors import NotFound
from dispatch import escalation_visibility, unit_work
from dispatch.models import AssignmentStatus
from tickets import service as tickets
from web.api.schemas import ticket_read
from web.deps import ClockDep, PathId, SessionDep
from web.pages import nav
from web.pages.i18n import N_
from web.pages.nav import NavItem
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render
from web.pages.ticket_view import LABELS, unconfirmed_clocks

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
STATES = (
    AssignmentStatus.dispatched,
    AssignmentStatus.signed,
    AssignmentStatus.replied,
    AssignmentStatus.returned,
)
COLOURS = ("red", "yellow", "green")
SORTS = {"due": N_("Nearest deadline"), "received": N_("Newest first"), "number": N_("Number")}
Handler = Annotated[Person, require(Role.handler)]


def _waiting(session: Session, person: Person, now: datetime) -> int:
    if person.user.unit_id is None:
        return 0
    return unit_work.waiting_count(session, unit_id=person.user.unit_id)


nav.register(
    NavItem("/inbox", N_("My unit's work"), frozenset({Role.handler}), order=20, count=_waiting)
)


@router.get("/inbox")
def inbox(
    request: Request,
    person: Handler,
    session: SessionDep,
    clock: ClockDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    colour: Annotated[str | None, Query(max_length=16)] = None,
    mine: Annotated[str | None, Query(max_length=8)] = None,
    sort: Annotated[str | None, Query(max_length=16)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    all_steps: Annotated[str | None, Query(max_length=8)] = None,
    done: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    user = person.user
    chosen_state = AssignmentStatus(state) if state in {s.value for s in STATES} else None
    chosen_colour = colour if colour in COLOURS else None
    chosen_sort = sort if sort in SORTS else "due"
    text = (q or "").strip()
    items: list[unit_work.WorkItem] = []
    total = 0
    if user.unit_id is not None:
        items, total = unit_work.unit_work(
            session,
            unit_id=user.unit_id,
            now=clock.now(),
            statuses=[chosen_state] if chosen_state else STATES,
            assignee_id=person.id if mine else None,
            q=text or None,
            search_confidential=privacy.sees_caller_identity(user),
            colour=unit_work.ClockColour(chosen_colour) if chosen_colour else None,
            order=unit_work.Order(chosen_sort),
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
    pages = max(1, -(-total // PAGE_SIZE))
    unconfirmed = unconfirmed_clocks(request, session)
    steps = escalation_visibility.escalations_for_user(
        session, user=user, unacknowledged_only=not all_steps, limit=50
    )
    numbers = {s.ticket_id: tickets.get_ticket(session, s.ticket_id).number for s in steps}
    filters = {
        "q": text,
        "state": chosen_state.value if chosen_state else "",
        "colour": chosen_colour or "",
        "mine": "1" if mine else "",
        "all_steps": "1" if all_steps else "",
    }

    def query(page_no: int | None = None, sort_by: str | None = None) -> str:
        """This list's address with another page or order, the filters kept."""
        params = {"page": page_no or page, "sort": sort_by or chosen_sort, **filters}
        return "/inbox?" + urlencode({k: v for k, v in params.items() if v})

    context = {
        **LABELS,
        "query": query,
        "rows": [
            {
                "item": i,
                "ticket": ticket_read(i.ticket, user),
                "assignment": i.assignment,
                "unconfirmed": unconfirmed(i.assignment, i.clocks),
            }
            for i in items
        ],
        "total": total,
        "page": page,
        "pages": pages,
        "q": text,
        "state": chosen_state.value if chosen_state else "",
        "colour": chosen_colour or "",
        "mine": bool(mine),
        "sort": chosen_sort,
        "sorts": SORTS,
        "states": STATES,
        "colours": COLOURS,
        "steps": steps,
        "numbers": numbers,
        "all_steps": bool(all_steps),
        "notice": N_("Escalation acknowledged.") if done == "ack" else None,
    }
    # htmx asks for one part (the filters and the live stream swap the results; the live
    # stream the escalations); a boosted link gets the whole page.
    block = None
    if request.headers.get("hx-request") and not request.headers.get("hx-boosted"):
        block = "steps" if request.headers.get("hx-target") == "escalations" else "results"
    return render(request, "inbox/page.html", context, block=block)


@router.post("/inbox/escalations/{escalation_id}/ack", dependencies=[Depends(csrf_form)])
def acknowledge(
    request: Request, escalation_id: PathId, person: Handler, session: SessionDep, clock: ClockDep
) -> Response:
    """The unit has seen the step; a step not addressed to it is reported as missing."""
    target = f"escalation:{escalation_id}"
    try:
        with session.begin_nested():
            escalation_visibility.acknowledge(
                session, escalation_id=escalation_id, user=person.user, now=clock.now()
            )
    except NotFound:
        record(
            session,
            request,
            clock,
            action="escalation.ack",
            person=person,
            target=target,
            outcome="refused",
        )
        request.state.person, request.state.csrf_token = None, ""
        return render(
            request, "errors/problem.html", {"status": 404, "not_found": True}, status_code=404
        )
    record(session, request, clock, action="escalation.ack", person=person, target=target)
    return RedirectResponse("/inbox?done=ack#escalations", status_code=303)
