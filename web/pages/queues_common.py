"""What the queues' pages share: who may use them, the queues' names, the notices after a
step, refusals in words (with their audit entry), and the ticket a page works on."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import User
from core.clock import Clock
from core.errors import Conflict, DomainError, InvalidInput, NotFound
from dispatch import access
from dispatch.assignments import assignments_of
from tickets.models import Ticket
from web.api.schemas import AssignmentRead, assignment_reads, ticket_read
from web.auth import DISPATCH, INTAKE
from web.pages import labels
from web.pages.i18n import N_, _
from web.pages.labels import STATUS_NAMES
from web.pages.people import Person, record, require
from web.pages.queues_data import Queue
from web.pages.templating import render

Dispatching = require(*DISPATCH)  # the queues, returns, extensions, the escalation board
Intake = require(*INTAKE)  # the steps the API lets an operator take too

QUEUE_NAMES = {
    Queue.manual: N_("Manual dispatch"),
    Queue.returns: N_("Returns to review"),
    Queue.extensions: N_("Extension requests"),
    Queue.replies: N_("Replies to review"),
    Queue.callbacks: N_("Callbacks due"),
    Queue.merge: N_("Merge candidates"),
}
QUEUE_HINTS = {
    Queue.manual: N_("Tickets no rule routed: choose the lead and co-handling units."),
    Queue.returns: N_("Units say the ticket is not theirs: uphold the dispatch or re-dispatch."),
    Queue.extensions: N_("Units ask for more time: approve (the deadline moves) or refuse."),
    Queue.replies: N_("Lead units' replies: approve for the callback, or send back."),
    Queue.callbacks: N_("Call the caller back: satisfied closes, dissatisfied reopens."),
    Queue.merge: N_(
        "Open tickets from the same phone or address, or with a similar text, within two weeks."
    ),
}
NOTICES = {
    "dispatched": N_("Ticket %(number)s dispatched."),
    "redispatched": N_("Ticket %(number)s re-dispatched."),
    "upheld": N_("Return of ticket %(number)s refused: the unit keeps it."),
    "approved": N_("Reply of ticket %(number)s approved: it waits for the callback."),
    "sent_back": N_("Reply of ticket %(number)s sent back to the unit."),
    "closed": N_("Callback recorded: ticket %(number)s is closed."),
    "reopened": N_("Callback recorded as dissatisfied: ticket %(number)s is reopened."),
    "extension_approved": N_("Extension for ticket %(number)s approved: new deadline %(due)s."),
    "extension_refused": N_("Extension for ticket %(number)s refused."),
    "merged": N_("Ticket %(number)s merged."),
    "dismissed": N_(
        "Not the same request: that pair with ticket %(number)s is no longer suggested."
    ),
    "acknowledged": N_("Escalation on ticket %(number)s acknowledged."),
}


ASSIGNMENT_ROLE_NAMES = {"lead": N_("Lead"), "co": N_("Co-handling")}
ASSIGNMENT_STATUS_NAMES = {
    "dispatched": N_("Awaiting sign-for"),
    "signed": N_("Signed for"),
    "replied": N_("Replied"),
    "returned": N_("Returned"),
    "withdrawn": N_("Withdrawn"),
    "completed": N_("Completed"),
}
URGENCY_NAMES = {"normal": N_("Normal"), "urgent": N_("Urgent"), "very_urgent": N_("Very urgent")}
LABELS = {
    "status": {s.value: name for s, name in STATUS_NAMES.items()},
    "role": ASSIGNMENT_ROLE_NAMES,
    "assignment": ASSIGNMENT_STATUS_NAMES,
    "urgency": URGENCY_NAMES,
    "queue": {q.value: name for q, name in QUEUE_NAMES.items()},
}


def show(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    block: str | None = None,
) -> Response:
    """``render`` with the queues' labels (``L``) in the context."""
    return render(request, name, {"L": LABELS, **context}, status_code=status_code, block=block)


def notice(done: str | None, number: str | None, due: str | None = None) -> str | None:
    """The words of the notice a redirect after a step asked for (unknown keys: none)."""
    if not done or done not in NOTICES:
        return None
    return _(NOTICES[done], number=number or "", due=due or "")


def after(path: str, done: str, ticket: Ticket, **more: str) -> RedirectResponse:
    """303 back to `path` with the notice of the step just taken."""
    query = urlencode({"done": done, "n": ticket.number, **more})
    return RedirectResponse(f"{path}{'&' if '?' in path else '?'}{query}", status_code=303)


def not_found(request: Request) -> Response:
    """The 404 page, in the same words as a missing ticket's (web.pages.people)."""
    context = {"status": 404, "not_found": True}
    return render(request, "errors/problem.html", context, status_code=404)


# The details the routing and SLA services name an unknown or inactive unit or policy by
# (dispatch.routing, dispatch.sla).
UNIT_OR_POLICY = frozenset({"unit", "name"})


def refusal(exc: DomainError) -> str:
    """A refusal of the domain in the reader's words (its own text is for developers): the
    queues' own sentences for a missing ticket, a ticket that moved on and an unknown unit
    or policy; any other by its kind and details (web.pages.labels), never a sentence
    about units for a refusal that is not about one."""
    if isinstance(exc, NotFound):
        return _("The ticket named does not exist, or is not yours to see. Nothing was changed.")
    if isinstance(exc, Conflict):
        status = exc.details.get("status")
        if status in {s.value for s in STATUS_NAMES}:
            return _(
                "The ticket has moved on since this page was opened (it is now: "
                "%(status)s). Nothing was changed.",
                status=_(STATUS_NAMES[next(s for s in STATUS_NAMES if s.value == status)]),
            )
        return _("This step no longer applies to the ticket. Nothing was changed.")
    if isinstance(exc, InvalidInput) and UNIT_OR_POLICY & exc.details.keys():
        return _("The step was refused: a unit or policy named is unknown or inactive.")
    return labels.refusal(exc)


def refuse(
    session: Session,
    request: Request,
    clock: Clock,
    *,
    person: Person,
    action: str,
    target: str,
    exc: DomainError,
) -> str:
    """Undo what the refused step began, write the refusal to the audit, and give its words."""
    session.rollback()
    record(
        session,
        request,
        clock,
        action=action,
        person=person,
        target=target,
        outcome="refused",
        detail={"error": exc.code, "message": exc.message},
    )
    return refusal(exc)


def refused_input(
    session: Session,
    request: Request,
    clock: Clock,
    *,
    person: Person,
    action: str,
    target: str,
    problem: str,
) -> None:
    """The audit entry of a step the page itself refused (a field missing)."""
    record(
        session,
        request,
        clock,
        action=action,
        person=person,
        target=target,
        outcome="refused",
        detail={"problem": problem},
    )


def ticket_context(session: Session, user: User, ticket_id: int) -> dict[str, Any]:
    """The ticket a page works on, as the reader may see it (a ticket they may not see is
    missing), with its live assignments."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    live: list[AssignmentRead] = assignment_reads(
        session, assignments_of(session, ticket_id=ticket_id, live_only=True)
    )
    return {"row": ticket, "ticket": ticket_read(ticket, user), "assignments": live}


def hx_block(request: Request, name: str) -> str | None:
    return name if request.headers.get("hx-request") else None
