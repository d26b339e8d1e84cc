"""The ticket's way through the units and back: dispatch (派单), the unit's sign-for, work,
reply, return and extension requests, and the centre's reviews, callback and closing.

A handler acts only on their own unit's assignments; another unit's assignment answers 404
(the dispatch service enforces it, whoever calls)."""

from __future__ import annotations

from fastapi import APIRouter, Body

from core.db import saved_id
from dispatch import access, assignments, closing, handling, review, routing
from dispatch.models import ExtensionStatus
from web.api import examples as ex
from web.api.schemas import (
    AssignmentRead,
    CallbackBody,
    DispatchBody,
    DispatchRead,
    ExtensionDecisionBody,
    ExtensionRead,
    ExtensionRequestBody,
    ReasonBody,
    ReplyBody,
    ReturnBody,
    ReviewReplyBody,
    ReviewReturnBody,
    TicketWithAssignments,
    assignment_read,
    assignment_reads,
    dispatch_read,
    ticket_with_assignments,
)
from web.deps import (
    ClockDep,
    CurrentUser,
    Dispatcher,
    IntakeStaff,
    PathId,
    SessionDep,
    SettingsDep,
    Supervisor,
    UnitWorker,
)
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(tags=["workflow"], responses=ERROR_RESPONSES)


# ---------------------------------------------------------------- the centre


@router.post(
    "/tickets/{ticket_id}/dispatch",
    response_model=DispatchRead,
    summary="Dispatch a ticket (派单 / 改派)",
    responses=error_responses(
        {
            403: "a unit's handler may not dispatch",
            404: "no such ticket",
            409: "the ticket's status does not allow this step (e.g. it is closed already)",
            422: "an unknown or inactive unit, an unknown policy, a unit named twice",
        }
    ),
    openapi_extra=ex.body(rules=ex.DISPATCH_RULES, manual=ex.DISPATCH_MANUAL),
)
def dispatch_ticket(
    ticket_id: PathId,
    session: SessionDep,
    user: IntakeStaff,
    clock: ClockDep,
    settings: SettingsDep,
    body: DispatchBody | None = Body(default=None),
) -> DispatchRead:
    """Without a body (or without `lead_unit_code`) the rules decide; with one, the named
    units get the ticket — a ticket already with a unit is re-dispatched (改派)."""
    if body is None or body.lead_unit_code is None:
        result = routing.dispatch_ticket(
            session,
            ticket_id=ticket_id,
            now=clock.now(),
            actor=user,
            fallback_unit_code=settings.dispatch.fallback_unit_code,
            tz=settings.tz,
        )
    else:
        result = routing.manual_dispatch(
            session,
            ticket_id=ticket_id,
            lead_unit_code=body.lead_unit_code,
            co_unit_codes=body.co_unit_codes,
            policy_name=body.policy_name,
            reason=body.reason,
            actor=user,
            now=clock.now(),
        )
    return dispatch_read(session, result, user)


@router.get(
    "/tickets/{ticket_id}/assignments",
    response_model=list[AssignmentRead],
    summary="A ticket's assignments",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def ticket_assignments(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[AssignmentRead]:
    """Every unit's share of the ticket, withdrawn ones included, oldest first."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    return assignment_reads(
        session, assignments.assignments_of(session, ticket_id=saved_id(ticket))
    )


@router.post(
    "/tickets/{ticket_id}/review-reply",
    response_model=TicketWithAssignments,
    summary="Review the unit's reply (审核)",
    responses=error_responses(
        {
            403: "a unit's handler may not review",
            404: "no such ticket",
            409: "the ticket has no reply waiting for review",
            422: "a reason is required when sending the reply back",
        }
    ),
    openapi_extra=ex.body(approve=ex.REVIEW_APPROVE, send_back=ex.REVIEW_SEND_BACK),
)
def review_reply(
    ticket_id: PathId,
    body: ReviewReplyBody,
    session: SessionDep,
    user: IntakeStaff,
    clock: ClockDep,
) -> TicketWithAssignments:
    """审核: approve the lead unit's reply, or send it back with a reason."""
    ticket = review.review_reply(
        session,
        ticket_id=ticket_id,
        approve=body.approve,
        reason=body.reason,
        actor=user,
        now=clock.now(),
    )
    return ticket_with_assignments(session, ticket, user)


@router.post(
    "/tickets/{ticket_id}/callback",
    response_model=TicketWithAssignments,
    summary="Record the callback (回访)",
    responses=error_responses(
        {
            403: "a unit's handler may not record callbacks",
            404: "no such ticket",
            409: "the ticket is not waiting for a callback",
        }
    ),
    openapi_extra=ex.body(satisfied=ex.CALLBACK_SATISFIED, dissatisfied=ex.CALLBACK_DISSATISFIED),
)
def callback(
    ticket_id: PathId, body: CallbackBody, session: SessionDep, user: IntakeStaff, clock: ClockDep
) -> TicketWithAssignments:
    """回访: a satisfied caller closes the ticket; a dissatisfied one reopens it (重办)."""
    result = closing.callback(
        session,
        ticket_id=ticket_id,
        satisfaction=body.satisfaction,
        comment=body.comment,
        actor=user,
        now=clock.now(),
    )
    return ticket_with_assignments(session, result.ticket, user)


@router.post(
    "/tickets/{ticket_id}/close",
    response_model=TicketWithAssignments,
    summary="Close without a callback (办结)",
    responses=error_responses(
        {
            403: "only dispatchers, supervisors and administrators close",
            404: "no such ticket",
            409: "the ticket's status does not allow this step (e.g. it is closed already)",
        }
    ),
    openapi_extra=ex.body(unreachable=ex.CLOSE),
)
def close(
    ticket_id: PathId, body: ReasonBody, session: SessionDep, user: Dispatcher, clock: ClockDep
) -> TicketWithAssignments:
    """办结 without a callback: the caller could not be reached or was anonymous."""
    ticket = closing.close(
        session, ticket_id=ticket_id, reason=body.reason, actor=user, now=clock.now()
    )
    return ticket_with_assignments(session, ticket, user)


@router.post(
    "/tickets/{ticket_id}/review-return",
    response_model=TicketWithAssignments,
    summary="Decide on a returned ticket (退单审核)",
    responses=error_responses(
        {
            403: "only dispatchers, supervisors and administrators decide",
            404: "no such ticket",
            409: "the ticket has no returned assignment",
            422: "re-dispatching needs a new lead unit other than the one that returned it",
        }
    ),
    openapi_extra=ex.body(uphold=ex.REVIEW_RETURN_UPHOLD, redispatch=ex.REVIEW_RETURN_REDISPATCH),
)
def review_return(
    ticket_id: PathId,
    body: ReviewReturnBody,
    session: SessionDep,
    user: Dispatcher,
    clock: ClockDep,
) -> TicketWithAssignments:
    """The centre's verdict on a 退单: uphold the dispatch, or re-dispatch (改派) to
    `lead_unit_code`."""
    result = review.review_return(
        session,
        ticket_id=ticket_id,
        uphold=body.uphold,
        reason=body.reason,
        lead_unit_code=body.lead_unit_code,
        co_unit_codes=body.co_unit_codes,
        policy_name=body.policy_name,
        actor=user,
        now=clock.now(),
    )
    return ticket_with_assignments(session, result.ticket, user)


@router.get(
    "/extensions",
    response_model=list[ExtensionRead],
    summary="The queue of extension requests",
    responses=error_responses(
        {
            403: "only dispatchers, supervisors and administrators see the queue",
            422: "an unknown status",
        }
    ),
)
def extension_queue(
    session: SessionDep, user: Dispatcher, status: ExtensionStatus | None = ExtensionStatus.pending
) -> list[ExtensionRead]:
    """The centre's queue of extension requests (pending ones by default)."""
    return [
        ExtensionRead.model_validate(r, from_attributes=True)
        for r in review.extensions(session, status=status)
    ]


@router.get(
    "/tickets/{ticket_id}/extensions",
    response_model=list[ExtensionRead],
    summary="A ticket's extension requests",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def ticket_extensions(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[ExtensionRead]:
    """Every extension request (延期申请) on the ticket, with its decision."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    return [
        ExtensionRead.model_validate(r, from_attributes=True)
        for r in review.extensions(session, ticket_id=ticket.id)
    ]


@router.post(
    "/extensions/{extension_id}/decision",
    response_model=ExtensionRead,
    summary="Decide an extension request",
    responses=error_responses(
        {
            403: "only dispatchers, supervisors and administrators decide",
            404: "no such extension request",
            409: "the request was decided already, or its assignment is no longer open",
        }
    ),
    openapi_extra=ex.body(approve=ex.EXTENSION_APPROVE, refuse=ex.EXTENSION_REFUSE),
)
def decide_extension(
    extension_id: PathId,
    body: ExtensionDecisionBody,
    session: SessionDep,
    user: Dispatcher,
    clock: ClockDep,
) -> ExtensionRead:
    """Approve (the assignment's deadlines move) or refuse a unit's extension request (延期申请)."""
    request = review.decide_extension(
        session,
        extension_id=extension_id,
        approve=body.approve,
        reason=body.reason,
        actor=user,
        now=clock.now(),
    )
    return ExtensionRead.model_validate(request, from_attributes=True)


@router.post(
    "/tickets/{ticket_id}/reopen",
    response_model=TicketWithAssignments,
    summary="Reopen a closed ticket (重办)",
    responses=error_responses(
        {
            403: "only supervisors and administrators reopen",
            404: "no such ticket",
            409: "the ticket is not closed",
        }
    ),
    openapi_extra=ex.body(reopen=ex.REOPEN),
)
def reopen(
    ticket_id: PathId, body: ReasonBody, session: SessionDep, user: Supervisor, clock: ClockDep
) -> TicketWithAssignments:
    """重办 of a closed ticket: back to the units that handled it, with fresh clocks."""
    result = closing.reopen(
        session, ticket_id=ticket_id, reason=body.reason, actor=user, now=clock.now()
    )
    return ticket_with_assignments(session, result.ticket, user)


@router.post(
    "/tickets/{ticket_id}/archive",
    response_model=TicketWithAssignments,
    summary="Archive a closed ticket (归档)",
    responses=error_responses(
        {
            403: "only supervisors and administrators archive",
            404: "no such ticket",
            409: "the ticket is not closed",
        }
    ),
)
def archive(
    ticket_id: PathId, session: SessionDep, user: Supervisor, clock: ClockDep
) -> TicketWithAssignments:
    """A closed ticket is archived (归档): it can no longer be reopened."""
    ticket = closing.archive(session, ticket_id=ticket_id, actor=user, now=clock.now())
    return ticket_with_assignments(session, ticket, user)


# ---------------------------------------------------------------- the unit


@router.post(
    "/assignments/{assignment_id}/sign",
    response_model=AssignmentRead,
    summary="Sign for an assignment (签收)",
    responses=error_responses(
        {
            403: "only a unit's handler (or an administrator) signs",
            404: "no such assignment, or not one of your unit's",
            409: "the assignment is not waiting to be signed for",
        }
    ),
)
def sign(
    assignment_id: PathId, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    """签收: the sign-for clock stops, the reply clock is watched."""
    assignment = handling.sign(session, assignment_id=assignment_id, actor=user, now=clock.now())
    return assignment_read(session, assignment)


@router.post(
    "/assignments/{assignment_id}/start",
    response_model=AssignmentRead,
    summary="Start work on an assignment",
    responses=error_responses(
        {
            403: "only a unit's handler (or an administrator)",
            404: "no such assignment, or not one of your unit's",
            409: "the assignment is not signed for (or is past that step)",
            422: "a co-handling unit does not start: it replies once signed for",
        }
    ),
)
def start(
    assignment_id: PathId, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    """The unit begins handling (办理中) the assignment it signed for."""
    assignment = handling.start(session, assignment_id=assignment_id, actor=user, now=clock.now())
    return assignment_read(session, assignment)


@router.post(
    "/assignments/{assignment_id}/reply",
    response_model=AssignmentRead,
    summary="Reply on an assignment (答复)",
    responses=error_responses(
        {
            403: "only a unit's handler (or an administrator)",
            404: "no such assignment, or not one of your unit's",
            409: "the assignment is not signed for, or replied already",
            422: "the reply is empty",
        }
    ),
    openapi_extra=ex.body(reply=ex.REPLY),
)
def reply(
    assignment_id: PathId, body: ReplyBody, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    """The unit's answer (答复); a lead unit's reply goes to the centre for review (审核)."""
    assignment = handling.reply(
        session, assignment_id=assignment_id, text=body.text, actor=user, now=clock.now()
    )
    return assignment_read(session, assignment)


@router.post(
    "/assignments/{assignment_id}/return",
    response_model=AssignmentRead,
    summary="Return a ticket (退单)",
    responses=error_responses(
        {
            403: "only a unit's handler (or an administrator)",
            404: "no such assignment, or not one of your unit's",
            409: "the assignment can no longer be returned",
            422: "an unknown reason_code",
        }
    ),
    openapi_extra=ex.body(wrong_locality=ex.RETURN),
)
def return_ticket(
    assignment_id: PathId, body: ReturnBody, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    """退单: not this unit's matter (wrong locality or mandate); the centre reviews it."""
    assignment = handling.return_ticket(
        session,
        assignment_id=assignment_id,
        reason_code=body.reason_code,
        reason=body.reason,
        actor=user,
        now=clock.now(),
    )
    return assignment_read(session, assignment)


@router.post(
    "/assignments/{assignment_id}/extensions",
    status_code=201,
    response_model=ExtensionRead,
    summary="Ask for an extension (延期申请)",
    responses=error_responses(
        {
            403: "only a unit's handler (or an administrator)",
            404: "no such assignment, or not one of your unit's",
            409: "past the reply deadline, or a request is pending already",
            422: "extend_by or extend_unit is invalid",
        }
    ),
    openapi_extra=ex.body(five_workdays=ex.EXTENSION_REQUEST),
)
def request_extension(
    assignment_id: PathId,
    body: ExtensionRequestBody,
    session: SessionDep,
    user: UnitWorker,
    clock: ClockDep,
) -> ExtensionRead:
    """延期: asked before the reply deadline; the centre decides."""
    request = handling.request_extension(
        session,
        assignment_id=assignment_id,
        extend_by=body.extend_by,
        extend_unit=body.extend_unit,
        reason=body.reason,
        actor=user,
        now=clock.now(),
    )
    return ExtensionRead.model_validate(request, from_attributes=True)
