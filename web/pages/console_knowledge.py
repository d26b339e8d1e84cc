"""Knowledge suggestions on the operator console's ticket form (知识库推荐): the articles in
service that best match what the caller is saying — refreshed as the call's words arrive —
or what the operator types; each with the words that matched, its owner, policy and number.
One key opens a suggestion (Alt+1 … Alt+5), one answers with it (Alt+Enter): the ticket is
closed at intake citing the article and the version read out (POST /console/tickets/{id}/answer
with article_id and version, in web/pages/console.py). "Did not answer it" reaches the
article's owning unit.

    GET  /console/tickets/{id}/knowledge?q=…            the suggestions (htmx fragment)
    POST /console/tickets/{id}/knowledge/{article}/not-answered   feedback to the owner
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from accounts.models import CENTRE_ROLES
from core.errors import Conflict, DomainError
from dispatch import access
from dispatch.models import Unit
from hotline.calls import intake as call_intake
from hotline.knowledge import usage
from hotline.knowledge.models import KnowledgeArticle
from hotline.knowledge.search import make_index
from web.deps import ClockDep, SessionDep
from web.pages.i18n import _
from web.pages.labels import refusal
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
INTAKE = require(*CENTRE_ROLES)
TEMPLATE = "console/_knowledge.html"


def suggestions_context(
    request: Request, session: Any, ticket: Any, typed: str = ""
) -> dict[str, Any]:
    """What the suggestions block shows for the ticket now."""
    calls = call_intake.ticket_calls(session, ticket_id=ticket.id)
    words = usage.caller_words(calls)
    if ticket.description and ticket.description != call_intake.PLACEHOLDER and not any(words):
        words = [ticket.description]
    query = usage.query_of(
        title=ticket.title, request=ticket.request, caller_words=words, typed=typed
    )
    found = usage.suggest(
        session,
        index=make_index(session),
        query=query,
        now=request.app.state.clock.now(),
        region=ticket.district,
    )
    return {
        "ticket_id": ticket.id,
        "suggestions": found,
        "typed": typed,
        "searched": bool(query.strip()),
        "from_call": not typed.strip() and any(words),
        "closable": ticket.status.value in ("intake", "pending_dispatch"),
    }


def article_refusal(exc: DomainError) -> str | None:
    """A refusal about the cited article, in the reader's words (None: not about one)."""
    details = exc.details if isinstance(exc, Conflict) else {}
    if "article" not in details:
        return None
    if isinstance(details.get("version"), int):
        return _(
            "The article was updated meanwhile: version %(v)d is in service now. "
            "Open it again before answering.",
            v=details["version"],
        )
    return _("The article is no longer in service and cannot be cited.")


@router.get("/console/tickets/{ticket_id}/knowledge")
def suggestions(
    ticket_id: int, request: Request, session: SessionDep, q: str = "", person: Person = INTAKE
) -> Response:
    ticket = access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    context = suggestions_context(request, session, ticket, typed=q[:200])
    return render(request, TEMPLATE, context)


@router.post(
    "/console/tickets/{ticket_id}/knowledge/{article_id}/not-answered",
    dependencies=[Depends(csrf_form)],
)
async def not_answered(
    ticket_id: int,
    article_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = INTAKE,
) -> Response:
    form = await request.form()
    note = str(form.get("note") or "").strip()
    raw_version = str(form.get("version") or "")
    return await run_in_threadpool(
        _not_answered, request, session, clock, person, ticket_id, article_id, raw_version, note
    )


def _not_answered(request, session, clock, person, ticket_id, article_id, raw_version, note):
    access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    htmx = request.headers.get("HX-Request") == "true"
    article = session.get(KnowledgeArticle, article_id)
    owner = session.get(Unit, article.owner_unit_id) if article is not None else None
    error = None
    if not raw_version.isdigit():
        error = _("Say which version of the article was read.")
    elif len(note) > usage.NOTE_LIMIT:
        error = _("Too long: at most %(n)d characters.", n=usage.NOTE_LIMIT)
    if error is None:
        try:
            usage.report_not_answered(
                session,
                article_id=article_id,
                version=int(raw_version),
                user=person.user,
                now=clock.now(),
                ticket_id=ticket_id,
                note=note or None,
            )
        except DomainError as exc:
            error = refusal(exc)
    record(
        session,
        request,
        clock,
        action="knowledge_not_answered",
        person=person,
        target=f"knowledge:{article_id}",
        outcome="refused" if error else "ok",
        detail={"ticket": ticket_id},
    )
    if not htmx:
        if error:
            return render(
                request,
                "console/_feedback.html",
                {"error": error, "article_owner": owner.name if owner else None},
                status_code=422,
            )
        return RedirectResponse(f"/console/tickets/{ticket_id}?feedback=1", status_code=303)
    return render(
        request,
        "console/_feedback.html",
        {"error": error, "article_owner": owner.name if owner else None},
        status_code=422 if error else 200,
    )
