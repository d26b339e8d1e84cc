"""The ticket's way through the units and back: dispatch (派单), the unit's sign-for, work,
reply, return and extension requests, and the centre's reviews, callback and closing.

A handler acts only on their own unit's assignments; another unit's assignment answers 404
(the dispatch service enforces it, whoever calls)."""

from __future__ import annotations

from fastapi import APIRouter, Body

from core.db import saved_id
from dispatch import access, assignments, closing, handling, review, routing
from dispatch.models import ExtensionStatus
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
from web.errors import ERROR_RESPONSES

router = APIRouter(tags=["workflow"], responses=ERROR_RESPONSES)


# ---------------------------------------------------------------- the centre


@router.post("/tickets/{ticket_id}/dispatch", response_model=DispatchRead)
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


@router.get("/tickets/{ticket_id}/assignments", response_model=list[AssignmentRead])
def ticket_assignments(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[AssignmentRead]:
    """Every unit's share of the ticket, withdrawn ones included, oldest first."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    return assignment_reads(
        session, assignments.assignments_of(session, ticket_id=saved_id(ticket))
    )


@router.post("/tickets/{ticket_id}/review-reply", response_model=TicketWithAssignments)
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


@router.post("/tickets/{ticket_id}/callback", response_model=TicketWithAssignments)
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


@router.post("/tickets/{ticket_id}/close", response_model=TicketWithAssignments)
def close(
    ticket_id: PathId, body: ReasonBody, session: SessionDep, user: Dispatcher, clock: ClockDep
) -> TicketWithAssignments:
    """办结 without a callback: the caller could not be reached or was anonymous."""
    ticket = closing.close(
        session, ticket_id=ticket_id, reason=body.reason, actor=user, now=clock.now()
    )
    return ticket_with_assignments(session, ticket, user)


@router.post("/tickets/{ticket_id}/review-return", response_model=TicketWithAssignments)
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


@router.get("/extensions", response_model=list[ExtensionRead])
def extension_queue(
    session: SessionDep, user: Dispatcher, status: ExtensionStatus | None = ExtensionStatus.pending
) -> list[ExtensionRead]:
    """The centre's queue of extension requests (pending ones by default)."""
    return [
        ExtensionRead.model_validate(r, from_attributes=True)
        for r in review.extensions(session, status=status)
    ]


@router.get("/tickets/{ticket_id}/extensions", response_model=list[ExtensionRead])
def ticket_extensions(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[ExtensionRead]:
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    return [
        ExtensionRead.model_validate(r, from_attributes=True)
        for r in review.extensions(session, ticket_id=ticket.id)
    ]


@router.post("/extensions/{extension_id}/decision", response_model=ExtensionRead)
def decide_extension(
    extension_id: PathId,
    body: ExtensionDecisionBody,
    session: SessionDep,
    user: Dispatcher,
    clock: ClockDep,
) -> ExtensionRead:
    request = review.decide_extension(
        session,
        extension_id=extension_id,
        approve=body.approve,
        reason=body.reason,
        actor=user,
        now=clock.now(),
    )
    return ExtensionRead.model_validate(request, from_attributes=True)


@router.post("/tickets/{ticket_id}/reopen", response_model=TicketWithAssignments)
def reopen(
    ticket_id: PathId, body: ReasonBody, session: SessionDep, user: Supervisor, clock: ClockDep
) -> TicketWithAssignments:
    """重办 of a closed ticket: back to the units that handled it, with fresh clocks."""
    result = closing.reopen(
        session, ticket_id=ticket_id, reason=body.reason, actor=user, now=clock.now()
    )
    return ticket_with_assignments(session, result.ticket, user)


@router.post("/tickets/{ticket_id}/archive", response_model=TicketWithAssignments)
def archive(
    ticket_id: PathId, session: SessionDep, user: Supervisor, clock: ClockDep
) -> TicketWithAssignments:
    ticket = closing.archive(session, ticket_id=ticket_id, actor=user, now=clock.now())
    return ticket_with_assignments(session, ticket, user)


# ---------------------------------------------------------------- the unit


@router.post("/assignments/{assignment_id}/sign", response_model=AssignmentRead)
def sign(
    assignment_id: PathId, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    """签收: the sign-for clock stops, the reply clock is watched."""
    assignment = handling.sign(session, assignment_id=assignment_id, actor=user, now=clock.now())
    return assignment_read(session, assignment)


@router.post("/assignments/{assignment_id}/start", response_model=AssignmentRead)
def start(
    assignment_id: PathId, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    assignment = handling.start(session, assignment_id=assignment_id, actor=user, now=clock.now())
    return assignment_read(session, assignment)


@router.post("/assignments/{assignment_id}/reply", response_model=AssignmentRead)
def reply(
    assignment_id: PathId, body: ReplyBody, session: SessionDep, user: UnitWorker, clock: ClockDep
) -> AssignmentRead:
    assignment = handling.reply(
        session, assignment_id=assignment_id, text=body.text, actor=user, now=clock.now()
    )
    return assignment_read(session, assignment)


@router.post("/assignments/{assignment_id}/return", response_model=AssignmentRead)
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
    "/assignments/{assignment_id}/extensions", status_code=201, response_model=ExtensionRead
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
