"""The landing page of every signed-in person: the tickets they may see, newest first, with
a text search and a status filter (a handler sees only their unit's; a confidential caller is
masked for whoever may not see them — the same rules as the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from accounts import privacy
from accounts.models import Role
from dispatch import access
from tickets import search as ticket_search
from tickets.models import Status
from web.api.schemas import ticket_read
from web.deps import SessionDep
from web.pages import nav
from web.pages.i18n import N_
from web.pages.labels import STATUS_NAMES
from web.pages.nav import NavItem
from web.pages.people import CurrentPerson
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
nav.register(NavItem("/", N_("Tickets"), frozenset(Role), order=10))

PAGE_SIZE = 25


@router.get("/")
def home(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    user = person.user
    chosen = (
        Status(status) if status and status in Status.__members__ else None
    )  # "" or unknown: any
    filters = ticket_search.TicketFilters(
        status=[chosen] if chosen else None,
        q=(q or "").strip() or None,
        q_in_confidential=privacy.sees_caller_identity(user),
    )
    rows, next_cursor = ticket_search.list_tickets(
        session,
        filters=filters,
        limit=PAGE_SIZE,
        cursor=cursor,
        restrict=access.visible_ticket_clause(user),
    )
    context = {
        "tickets": [ticket_read(t, user) for t in rows],
        "next_cursor": next_cursor,
        "q": q or "",
        "status": chosen.value if chosen else "",
        "status_names": STATUS_NAMES,
    }
    block = "results" if request.headers.get("hx-request") else None
    return render(request, "home.html", context, block=block)
