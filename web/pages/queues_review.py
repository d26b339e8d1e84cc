"""The pages of the queues' items: review a return (uphold, or re-dispatch with a reason),
review a reply (approve, or send back), record a callback (satisfied closes, dissatisfied
reopens), decide an extension request (the deadline moves), merge a duplicate or say the
pair is not one request. Each calls the service the API calls, and goes back to its queue
with a notice."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlmodel import Session
from starlette.responses import Response

from core.db import saved_id
from core.errors import DomainError, NotFound
from dispatch import access, closing, review
from dispatch.handling import RETURN_REASONS
from dispatch.models import ExtensionRequest, ExtensionStatus
from hotline import duplicates
from tickets.models import Satisfaction, Status, Ticket
from web.api.schemas import ExtensionRead, ticket_read
from web.deps import ClockDep, PathId, SessionDep, SettingsDep
from web.pages import queues_data
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, record
from web.pages.queues_common import (
    Dispatching,
    Intake,
    after,
    hx_block,
    notice,
    refuse,
    refused_input,
    show,
    ticket_context,
)
from web.pages.queues_dispatch import check_units, form_context

router = APIRouter(include_in_schema=False)

RETURN_REASON_NAMES = {
    "wrong_locality": N_("Wrong locality"),
    "wrong_mandate": N_("Not within the unit's mandate"),
    "other": N_("Other"),
}
SATISFACTION_NAMES = {
    Satisfaction.satisfied: N_("Satisfied"),
    Satisfaction.basically_satisfied: N_("Basically satisfied"),
    Satisfaction.dissatisfied: N_("Dissatisfied"),
}
assert set(RETURN_REASON_NAMES) == set(RETURN_REASONS)

Reason = Annotated[str, Form(max_length=2000)]


def _target(ticket_id: int) -> str:
    return f"ticket:{ticket_id}"


def _waiting(context: dict[str, Any], status: Status) -> bool:
    row: Ticket = context["row"]
    return row.status == status


# ---------------------------------------------------------------- 退单 returns


def _return_context(
    session: Session, person: Person, ticket_id: int, settings: Any
) -> dict[str, Any]:
    context = form_context(session, person, ticket_id, settings)
    returned = next((a for a in context["assignments"] if a.status == "returned"), None)
    return {
        **context,
        "returned": returned,
        "reason_names": RETURN_REASON_NAMES,
        "waiting": _waiting(context, Status.returned),
        # the unit that returned it is no choice for the re-dispatch
        "lead": context["advice"]["lead"]
        if returned is None or context["advice"]["lead"] != returned.unit_code
        else "",
        "co": [],
        "uphold_reason": "",
    }


@router.get("/queues/returns/{ticket_id}")
def return_page(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    person: Person = Dispatching,
) -> Response:
    context = _return_context(session, person, ticket_id, settings)
    return show(request, "queues/return.html", context)


@router.post("/queues/returns/{ticket_id}", dependencies=[Depends(csrf_form)])
def review_return(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    decision: Annotated[str, Form(pattern="^(uphold|redispatch)$")],
    reason: Reason = "",
    lead_unit_code: Annotated[str, Form(max_length=32)] = "",
    co_unit_codes: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies it)
    person: Person = Dispatching,
) -> Response:
    context = _return_context(session, person, ticket_id, settings)
    ticket: Ticket = context["row"]
    uphold = decision == "uphold"
    action = "ticket.uphold_return" if uphold else "ticket.redispatch_return"
    reason = reason.strip()
    co = [c for c in dict.fromkeys(co_unit_codes) if c]
    errors: dict[str, str] = {} if uphold else check_units(lead_unit_code, co)
    if not reason:
        errors["uphold_reason" if uphold else "reason"] = (
            _("Upholding the dispatch needs a reason for the unit.")
            if uphold
            else _("A re-dispatch needs a reason: the units see it.")
        )
    chosen = (
        {"uphold_reason": reason}
        if uphold
        else {"lead": lead_unit_code, "co": co, "reason": reason}
    )
    if errors:
        refused_input(
            session, request, clock, person=person, action=action,
            target=_target(ticket_id), problem=",".join(sorted(errors)),
        )  # fmt: skip
        return show(
            request, "queues/return.html", {**context, **chosen, "errors": errors}, status_code=400
        )
    try:
        review.review_return(
            session,
            ticket_id=ticket_id,
            uphold=uphold,
            reason=reason,
            lead_unit_code=None if uphold else lead_unit_code,
            co_unit_codes=() if uphold else co,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action=action,
            target=_target(ticket_id), exc=exc,
        )  # fmt: skip
        context = _return_context(session, person, ticket_id, settings)
        return show(
            request,
            "queues/return.html",
            {**context, **chosen, "problem": problem},
            status_code=409,
        )
    detail = {} if uphold else {"lead_unit": lead_unit_code, "co_units": co}
    record(
        session, request, clock, action=action, person=person,
        target=_target(ticket_id), detail=detail,
    )  # fmt: skip
    return after("/queues/returns", "upheld" if uphold else "redispatched", ticket)


# ---------------------------------------------------------------- 审核 replies


@router.get("/queues/replies/{ticket_id}")
def reply_page(
    request: Request, ticket_id: PathId, session: SessionDep, person: Person = Intake
) -> Response:
    context = ticket_context(session, person.user, ticket_id)
    context |= {"waiting": _waiting(context, Status.replied), "errors": {}, "problem": None}
    return show(request, "queues/reply.html", {**context, "reason": ""})


@router.post("/queues/replies/{ticket_id}", dependencies=[Depends(csrf_form)])
def review_reply(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    decision: Annotated[str, Form(pattern="^(approve|send_back)$")],
    reason: Reason = "",
    person: Person = Intake,
) -> Response:
    context = ticket_context(session, person.user, ticket_id)
    context |= {"waiting": _waiting(context, Status.replied), "errors": {}, "problem": None}
    approve = decision == "approve"
    action = "ticket.approve_reply" if approve else "ticket.send_back"
    reason = reason.strip()
    if not approve and not reason:
        refused_input(
            session, request, clock, person=person, action=action,
            target=_target(ticket_id), problem="reason",
        )  # fmt: skip
        errors = {"reason": _("Sending a reply back needs a reason for the unit.")}
        context |= {"errors": errors, "reason": reason}
        return show(request, "queues/reply.html", context, status_code=400)
    try:
        ticket = review.review_reply(
            session,
            ticket_id=ticket_id,
            approve=approve,
            reason=reason or None,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action=action,
            target=_target(ticket_id), exc=exc,
        )  # fmt: skip
        context = ticket_context(session, person.user, ticket_id)
        context |= {"waiting": False, "errors": {}, "problem": problem, "reason": reason}
        return show(request, "queues/reply.html", context, status_code=409)
    record(session, request, clock, action=action, person=person, target=_target(ticket_id))
    return after("/queues/replies", "approved" if approve else "sent_back", ticket)


# ---------------------------------------------------------------- 回访 callbacks


def _callback_context(session: Session, person: Person, ticket_id: int) -> dict[str, Any]:
    context = ticket_context(session, person.user, ticket_id)
    return context | {
        "waiting": _waiting(context, Status.reviewed),
        "satisfaction_names": SATISFACTION_NAMES,
        "chosen": "",
        "comment": "",
        "errors": {},
        "problem": None,
    }


@router.get("/queues/callbacks/{ticket_id}")
def callback_page(
    request: Request, ticket_id: PathId, session: SessionDep, person: Person = Intake
) -> Response:
    return show(request, "queues/callback.html", _callback_context(session, person, ticket_id))


@router.post("/queues/callbacks/{ticket_id}", dependencies=[Depends(csrf_form)])
def callback(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    satisfaction: Annotated[str, Form(max_length=32)] = "",
    comment: Reason = "",
    person: Person = Intake,
) -> Response:
    context = _callback_context(session, person, ticket_id)
    comment = comment.strip()
    if satisfaction not in Satisfaction.__members__:
        refused_input(
            session, request, clock, person=person, action="ticket.callback",
            target=_target(ticket_id), problem="satisfaction",
        )  # fmt: skip
        errors = {"satisfaction": _("Choose what the caller said.")}
        context |= {"errors": errors, "comment": comment}
        return show(request, "queues/callback.html", context, status_code=400)
    try:
        result = closing.callback(
            session,
            ticket_id=ticket_id,
            satisfaction=Satisfaction(satisfaction),
            comment=comment or None,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action="ticket.callback",
            target=_target(ticket_id), exc=exc,
        )  # fmt: skip
        context = _callback_context(session, person, ticket_id)
        context |= {"problem": problem, "chosen": satisfaction, "comment": comment}
        return show(request, "queues/callback.html", context, status_code=409)
    record(
        session, request, clock, action="ticket.callback", person=person,
        target=_target(ticket_id), detail={"satisfaction": satisfaction},
    )  # fmt: skip
    reopened = result.ticket.status != Status.closed
    return after("/queues/callbacks", "reopened" if reopened else "closed", result.ticket)


# ---------------------------------------------------------------- 延期 extension requests


def _extension_context(session: Session, person: Person, extension_id: int) -> dict[str, Any]:
    request = session.get(ExtensionRequest, extension_id)
    if request is None:
        raise NotFound(f"extension request {extension_id} does not exist")
    context = ticket_context(session, person.user, request.ticket_id)
    unit = next(
        (a for a in context["assignments"] if a.id == request.assignment_id), None
    )  # None once the assignment has ended
    return context | {
        "extension": ExtensionRead.model_validate(request, from_attributes=True),
        "unit": unit,
        "waiting": request.status == ExtensionStatus.pending,
        "reason": "",
        "errors": {},
        "problem": None,
    }


@router.get("/queues/extensions/{extension_id}")
def extension_page(
    request: Request, extension_id: PathId, session: SessionDep, person: Person = Dispatching
) -> Response:
    context = _extension_context(session, person, extension_id)
    return show(request, "queues/extension.html", context)


@router.post("/queues/extensions/{extension_id}", dependencies=[Depends(csrf_form)])
def decide_extension(
    request: Request,
    extension_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    decision: Annotated[str, Form(pattern="^(approve|refuse)$")],
    reason: Reason = "",
    person: Person = Dispatching,
) -> Response:
    context = _extension_context(session, person, extension_id)
    ticket: Ticket = context["row"]
    approve = decision == "approve"
    action = "extension.approve" if approve else "extension.refuse"
    target = f"extension:{extension_id}"
    reason = reason.strip()
    if not approve and not reason:
        refused_input(
            session, request, clock, person=person, action=action, target=target,
            problem="reason",
        )  # fmt: skip
        context |= {"errors": {"reason": _("Refusing needs a reason for the unit.")}}
        return show(request, "queues/extension.html", context, status_code=400)
    try:
        decided = review.decide_extension(
            session,
            extension_id=extension_id,
            approve=approve,
            reason=reason or None,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action=action, target=target, exc=exc
        )
        context = _extension_context(session, person, extension_id)
        context |= {"problem": problem, "reason": reason}
        return show(request, "queues/extension.html", context, status_code=409)
    record(session, request, clock, action=action, person=person, target=target)
    if not approve:
        return after("/queues/extensions", "extension_refused", ticket)
    from web.pages.templating import local_time

    due = local_time(decided.new_due_at, request)
    return after("/queues/extensions", "extension_approved", ticket, due=due)


# ---------------------------------------------------------------- 并单 merge


def _merge_context(session: Session, person: Person, ticket_id: int, now: Any) -> dict[str, Any]:
    context = ticket_context(session, person.user, ticket_id)
    row: Ticket = context["row"]
    # the same caller or address, a similar text, or suggested at a web or Open311 intake
    found = duplicates.review_candidates(
        session, ticket=row, now=now, window=queues_data.MERGE_WINDOW
    )
    return context | {
        "candidates": [ticket_read(c.ticket, person.user) for c in found],
        "why": {
            saved_id(c.ticket): {
                "same_caller": c.same_caller,
                "same_address": c.same_address,
                "similarity": round(c.similarity * 100),
                "similar": c.similarity >= duplicates.SIMILAR,
                "score": f"{c.score:.2f}",
            }
            for c in found
        },
        "waiting": row.status in queues_data.MERGEABLE,
        "reason": "",
        "problem": None,
        "notice": None,
    }


@router.get("/queues/merge/{ticket_id}")
def merge_page(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    person: Person = Intake,
    done: Annotated[str | None, Query(max_length=32)] = None,
    n: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    context = _merge_context(session, person, ticket_id, clock.now())
    return show(request, "queues/merge.html", {**context, "notice": notice(done, n)})


@router.post("/queues/merge/{ticket_id}", dependencies=[Depends(csrf_form)])
def merge(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    parent_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    reason: Reason = "",
    person: Person = Intake,
) -> Response:
    context = _merge_context(session, person, ticket_id, clock.now())
    ticket: Ticket = context["row"]
    reason = reason.strip()
    try:
        closing.merge(
            session,
            ticket_id=ticket_id,
            parent_id=parent_id,
            reason=reason or None,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action="ticket.merge",
            target=_target(ticket_id), exc=exc,
        )  # fmt: skip
        context = _merge_context(session, person, ticket_id, clock.now())
        return show(request, "queues/merge.html", {**context, "problem": problem}, status_code=409)
    record(
        session, request, clock, action="ticket.merge", person=person,
        target=_target(ticket_id), detail={"parent_id": parent_id},
    )  # fmt: skip
    return after("/queues/merge", "merged", ticket)


@router.post("/queues/merge/{ticket_id}/dismiss", dependencies=[Depends(csrf_form)])
def dismiss(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    other_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    reason: Reason = "",
    person: Person = Intake,
) -> Response:
    """不是重复件: the two tickets are different requests; the pair is never a candidate
    again (hotline.duplicates.dismiss). Without JavaScript the page goes back to this
    ticket's candidates while it has others, else to the queue; htmx gets the candidates'
    part of the page in place (with the refusal too: htmx swaps no error answer)."""
    context = _merge_context(session, person, ticket_id, clock.now())
    ticket: Ticket = context["row"]
    htmx = hx_block(request, "candidates")
    if other_id == ticket_id:
        refused_input(
            session, request, clock, person=person, action="ticket.merge_dismiss",
            target=_target(ticket_id), problem="other_id",
        )  # fmt: skip
        problem = _("A ticket is always the same request as itself: choose another ticket.")
        return show(
            request,
            "queues/merge.html",
            {**context, "problem": problem},
            status_code=200 if htmx else 400,
            block=htmx,
        )
    try:
        # the other ticket must be one the reader may see: else it answers as a missing one
        access.visible_ticket(session, user=person.user, ticket_id=other_id)
        duplicates.dismiss(
            session,
            ticket_id=ticket_id,
            other_id=other_id,
            actor=person.user,
            now=clock.now(),
            reason=reason,
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action="ticket.merge_dismiss",
            target=_target(ticket_id), exc=exc,
        )  # fmt: skip
        context = _merge_context(session, person, ticket_id, clock.now())
        return show(
            request,
            "queues/merge.html",
            {**context, "problem": problem},
            status_code=200 if htmx else 409,
            block=htmx,
        )
    record(
        session, request, clock, action="ticket.merge_dismiss", person=person,
        target=_target(ticket_id), detail={"other_id": other_id},
    )  # fmt: skip
    context = _merge_context(session, person, ticket_id, clock.now())
    if htmx:
        done = notice("dismissed", ticket.number)
        return show(request, "queues/merge.html", {**context, "notice": done}, block=htmx)
    more = bool(context["candidates"])
    return after(f"/queues/merge/{ticket_id}" if more else "/queues/merge", "dismissed", ticket)
