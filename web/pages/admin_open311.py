"""Admin: the client applications that may file Open311 requests, and their API keys.

GET  /admin/open311                    every client: when and by whom issued, revoked or not
POST /admin/open311                    register one: its API key is shown on the answer, once
POST /admin/open311/{id}/revoke        its key is refused (403) from now on

Only a key's SHA-256 is stored (hotline.open311.clients), so the page that shows it is the
answer to the post itself, not a redirect: a reload does not show it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from starlette.responses import Response

from hotline.open311 import clients
from web.deps import MAX_ID, ClockDep, SessionDep
from web.pages.admin_common import ADMIN, POSTED, attempt, done, notice, words
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

ClientId = Annotated[int, Path(ge=1, le=MAX_ID)]
NOTICES = {
    "client_revoked": N_("Key revoked: requests posted with it are refused from now on."),
}


def _notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(NOTICES[key]) if key in NOTICES else notice(request)


def _page(
    request: Request,
    session: Any,
    *,
    error: str | None = None,
    shown: tuple[str, str] | None = None,
    name: str = "",
    status: int = 200,
) -> Response:
    context = {
        "clients": clients.list_clients(session),
        "error": error,
        "shown": shown,  # (client name, key) just issued: shown this once
        "name": name,
        "notice": _notice(request),
    }
    response = render(request, "admin/open311.html", context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/admin/open311")
def clients_page(request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _page(request, session)


@router.post("/admin/open311", dependencies=POSTED)
def issue_key(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    name: Annotated[str, Form(max_length=1000)] = "",
    person: Person = ADMIN,
) -> Response:
    made, refusal = attempt(
        session,
        request,
        clock,
        person,
        lambda: clients.issue(
            session, name=name, actor=f"{person.role.value}:{person.user.username}", now=clock.now()
        ),
        action="admin.open311.issue",
        target=f"open311:{name.strip()[:60]}",
    )
    if refusal is not None or made is None:
        error = words(refusal) if refusal else None
        return _page(request, session, error=error, name=name, status=422)
    client, key = made
    return _page(request, session, shown=(client.name, key))


@router.post("/admin/open311/{client_id}/revoke", dependencies=POSTED)
def revoke_key(
    client_id: ClientId,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
) -> Response:
    _revoked, refusal = attempt(
        session,
        request,
        clock,
        person,
        lambda: clients.revoke(
            session,
            client_id=client_id,
            actor=f"{person.role.value}:{person.user.username}",
            now=clock.now(),
        ),
        action="admin.open311.revoke",
        target=f"open311_client:{client_id}",
    )
    if refusal is not None:
        return _page(request, session, error=words(refusal), status=409)
    return done("/admin/open311", "client_revoked")
