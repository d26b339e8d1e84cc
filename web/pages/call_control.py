"""The call's controls on the operator's console ticket view (本次通话): hold and resume,
blind transfer, consult (attended transfer) then hand over, make a three-way call with the
one consulted (三方通话) or go back to the caller; and, for supervisors, listen in on their
own seat's phone.

    GET  /console/tickets/{id}/call    the controls of the ticket's bridged call (htmx)
    POST /console/tickets/{id}/call    action = hold | unhold | transfer | consult | complete
                                       | three_way | cancel | monitor; target (a seat's
                                       extension or a telephone number) where needed

A click becomes a command to the edge that holds the call (``hotline.calls.call_control``);
the panel shows it pending, then what the call stands at once the edge has carried it out —
refreshed over the page's live stream (topic ``calls``) on every console showing the call.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlmodel import Session, col
from starlette.responses import Response

from accounts.models import CENTRE_ROLES, AgentState, AgentStatus, User
from core.clock import Clock
from hotline.calls import call_control as cc
from telephony.models import CallCommandKind, CallCommandState, CallRecord, QueueOutcome
from web.api.agents import the_bell
from web.deps import ClockDep, SessionDep
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
CENTRE = require(*CENTRE_ROLES)
TEMPLATE = "console/_call_control.html"

ACTIONS = {
    CallCommandKind.hold: N_("Hold"),
    CallCommandKind.unhold: N_("Resume"),
    CallCommandKind.transfer: N_("Transfer"),
    CallCommandKind.consult: N_("Consult first"),
    CallCommandKind.complete: N_("Hand over"),
    CallCommandKind.three_way: N_("Three-way call"),
    CallCommandKind.cancel: N_("Back to the caller"),
    CallCommandKind.monitor: N_("Listen in"),
}
STATES = {
    "pending": N_("sent to the phone system …"),
    "running": N_("being carried out …"),
    "done": N_("done"),
    "failed": N_("not done"),
}
# What the edge reports (``hotline.calls.control_runner``), in the reader's words.
DETAILS = {
    "held": N_("The caller is on hold."),
    "resumed": N_("You are back with the caller."),
    "ringing": N_("Ringing."),
    "handed_over": N_("Handed over."),
    "three_way": N_("Three-way call."),
    "cancelled": N_("Called off."),
    "listening": N_("Your phone listens in."),
    "ended": N_("The call has ended."),
    "in_transfer": N_("A transfer is under way: go back to the caller first."),
    "no_consultation": N_("Nobody is being consulted."),
    "no_transfer": N_("No transfer is under way."),
    "unreachable": N_("No phone is registered at that seat, or there is no outside line."),
    "refused": N_("Another transfer is under way, or the call is ending."),
    "no_answer": N_("Your phone did not answer."),
    "not_taken": N_("The phone system did not take the request: the call is no longer there."),
    "error": N_("The phone system failed to do it (see its log)."),
}
# The refusals of hotline.calls.call_control, as message ids (translated where shown).
REFUSALS = (
    N_("Enter a seat's extension or a telephone number (digits only)."),
    N_("This call is not on an operator's line any more."),
    N_("Only a supervisor may listen in."),
    N_("Only the operator on this call, or a supervisor, may control it."),
    N_("Listening in rings your own seat: enter its extension."),
    N_("Choose one of the call's buttons."),
)
TRANSFER_STATES = {
    "ringing": N_("Ringing %(target)s — the caller hears the hold music."),
    "consulting": N_("You are talking to %(target)s; the caller is on hold."),
}
TRANSFER_OUTCOMES = {
    "completed": N_("The caller was handed over to %(target)s."),
    "failed": N_("%(target)s did not take the call: the caller is back with you."),
    "cancelled": N_("The transfer to %(target)s was called off."),
    "merged": N_("%(target)s joined the call."),
}


def _bridged_call(session: Session, ticket_id: int) -> CallRecord | None:
    return session.scalar(
        select(CallRecord)
        .where(
            col(CallRecord.ticket_id) == ticket_id,
            col(CallRecord.queue_outcome) == QueueOutcome.agent,
            col(CallRecord.ended_at).is_(None),
        )
        .order_by(col(CallRecord.id).desc())
        .limit(1)
    )


def _context(session: Session, person: Person, ticket_id: int) -> dict[str, Any]:
    call = _bridged_call(session, ticket_id)
    mine = session.scalar(select(AgentStatus).where(col(AgentStatus.user_id) == person.id))
    seats = session.execute(
        select(col(AgentStatus.extension), col(User.display_name), col(AgentStatus.state))
        .join(User, col(User.id) == col(AgentStatus.user_id))
        .where(col(AgentStatus.extension).is_not(None), col(AgentStatus.user_id) != person.id)
        .order_by(col(AgentStatus.extension))
    ).all()
    kinds = [
        k
        for k in CallCommandKind
        if call is not None and cc.may_control(call, user_id=person.id, role=person.role, kind=k)
    ]
    commands = cc.recent_commands(session, call.call_id, limit=3) if call else []
    return {
        "ticket_id": ticket_id,
        "call": call,
        "controls": cc.Controls.parse(call.control if call else ""),
        "commands": commands,
        "waiting": any(
            c.state in (CallCommandState.pending, CallCommandState.running) for c in commands
        ),
        "allowed": {k.value for k in kinds},
        "actions": {k.value: v for k, v in ACTIONS.items()},
        "states": STATES,
        "details": DETAILS,
        "transfer_states": TRANSFER_STATES,
        "transfer_outcomes": TRANSFER_OUTCOMES,
        "seats": [(ext, name, state) for ext, name, state in seats],
        "ready": AgentState.ready,
        "my_extension": mine.extension if mine else None,
        "error": None,
        "target": "",
    }


@router.get("/console/tickets/{ticket_id}/call")
def controls(
    request: Request, ticket_id: int, session: SessionDep, person: Person = CENTRE
) -> Response:
    return render(request, TEMPLATE, _context(session, person, ticket_id))


@router.post("/console/tickets/{ticket_id}/call", dependencies=[Depends(csrf_form)])
async def command(
    request: Request, ticket_id: int, session: SessionDep, clock: ClockDep, person: Person = CENTRE
) -> Response:
    form = await request.form()
    action = str(form.get("action") or "")[:32]
    target = str(form.get("target") or "").strip()[:64]
    return await run_in_threadpool(
        _command, request, session, clock, person, ticket_id, action, target
    )


def _command(
    request: Request,
    session: Session,
    clock: Clock,
    person: Person,
    ticket_id: int,
    action: str,
    target: str,
) -> Response:
    htmx = bool(request.headers.get("hx-request"))
    call = _bridged_call(session, ticket_id)
    try:
        if call is None:
            raise cc.ControlRefused("This call is not on an operator's line any more.")
        try:
            kind = CallCommandKind(action)
        except ValueError:
            raise cc.ControlRefused("Choose one of the call's buttons.") from None
        made = cc.request(
            session,
            call_id=call.call_id,
            kind=kind,
            target=target,
            user_id=person.id,
            role=person.role,
            now=clock.now(),
            bell=the_bell(request.app.state.settings),
        )
    except cc.ControlRefused as exc:
        record(
            session,
            request,
            clock,
            action="call_control",
            person=person,
            target=f"ticket:{ticket_id}",
            outcome="refused",
            detail={"action": action, "target": target},
        )
        context = _context(session, person, ticket_id)
        context.update(error=_(exc.message), target=target)
        return render(request, TEMPLATE, context, status_code=200 if htmx else 409)
    record(
        session,
        request,
        clock,
        action="call_control",
        person=person,
        target=f"ticket:{ticket_id}",
        detail={"action": made.kind.value, "target": made.target, "command": made.id},
    )
    if not htmx:
        return RedirectResponse(f"/console/tickets/{ticket_id}", status_code=303)
    return render(request, TEMPLATE, _context(session, person, ticket_id))
