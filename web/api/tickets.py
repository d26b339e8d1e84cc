"""Tickets: intake, reading, corrections, direct answers and merging."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlmodel import Session

from accounts import privacy
from core.db import saved_id, session_scope
from core.settings import Settings
from dispatch import access, assignments, closing
from hotline import intake
from tickets import search as ticket_search
from tickets import service as tickets
from tickets.models import Ticket, TicketCreate, TicketEventRead, TicketRead, TicketUpdate
from web.api import examples as ex
from web.api.schemas import (
    CloseAtIntakeBody,
    MergeBody,
    TicketPage,
    TicketQuery,
    TicketWithAssignments,
    event_reads,
    ticket_read,
    ticket_with_assignments,
)
from web.auth import INTAKE, bearer, unauthenticated
from web.deps import (
    BEARER_SECURITY,
    ClockDep,
    CurrentUser,
    HeaderSpec,
    IntakeStaff,
    PathId,
    SessionDep,
    authenticated,
    check_role,
    header_parameter,
    json_body_schema,
    merged,
    parse_json_body,
    patch_body,
    read_header,
)
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/tickets", tags=["tickets"], responses=ERROR_RESPONSES)

IDEMPOTENCY_KEY = HeaderSpec(
    "Idempotency-Key",
    max_length=200,
    description="repeat a submission with the same key to get the first ticket back",
)


@router.post(
    "",
    status_code=201,
    response_model=TicketWithAssignments,
    responses={
        **error_responses(
            {
                403: "a unit's handler may not take tickets",
                422: "a field is invalid (named in `error.details`)",
            }
        ),
        200: {"description": "an idempotent replay: the ticket created first"},
    },
    openapi_extra=ex.with_body(
        merged(json_body_schema(TicketCreate), BEARER_SECURITY, header_parameter(IDEMPOTENCY_KEY)),
        phone=ex.TICKET_CREATE,
        anonymous=ex.TICKET_CREATE_ANONYMOUS,
    ),
    summary="Take a new ticket (受理)",
)
async def create_ticket(request: Request) -> Response:
    """受理: the ticket is created, classified by the rules and dispatched in one unit of
    work. 201 with the ticket and its assignments; 200 with the first ticket for a repeated
    Idempotency-Key."""
    # The request is read by hand, not through FastAPI's dependencies (see web.deps).
    credentials = await bearer(request)
    if credentials is None:
        raise unauthenticated("a bearer token is required")
    idempotency_key = read_header(request, IDEMPOTENCY_KEY)
    state = request.app.state
    return await to_thread.run_sync(
        _create_ticket,
        await request.body(),
        state.session_factory,
        credentials,
        state.clock.now(),
        state.settings,
        idempotency_key,
        limiter=state.intake_limiter.current(),
    )


def _create_ticket(
    raw: bytes,
    factory: Callable[[], Session],
    credentials: HTTPAuthorizationCredentials,
    now: datetime,
    settings: Settings,
    idempotency_key: str | None,
) -> Response:
    # The whole unit of work in one trip to the thread pool (see web.deps), at most
    # settings.web.intake_concurrency at once; the payload is validated once the caller is
    # known to be allowed to send one.
    with session_scope(factory) as session:
        user = check_role(authenticated(session, credentials), INTAKE)
        data = parse_json_body(TicketCreate, raw)
        submission = intake.submit(
            session,
            data=data,
            actor=user,
            now=now,
            idempotency_key=idempotency_key,
            idempotency_scope=f"user:{user.id}",
            fallback_unit_code=settings.dispatch.fallback_unit_code,
            tz=settings.tz,
        )
        if submission.created:
            made = submission.dispatch.assignments if submission.dispatch else []
            body = ticket_with_assignments(session, submission.ticket, user, assignments=made)
        else:
            body = ticket_with_assignments(session, submission.ticket, user)
        content = body.model_dump_json()
    return Response(
        content, status_code=201 if submission.created else 200, media_type="application/json"
    )


@router.get(
    "",
    response_model=TicketPage,
    summary="Search and list tickets",
    responses=error_responses(
        {
            403: "searching by caller phone is for centre staff only",
            422: "a filter is invalid, e.g. a malformed cursor or date",
        }
    ),
)
def list_tickets(
    session: SessionDep, user: CurrentUser, query: Annotated[TicketQuery, Query()]
) -> TicketPage:
    """Newest first. A handler sees only the tickets their unit was ever assigned."""
    access.check_ticket_search(user, caller_phone=query.caller_phone)
    filters = ticket_search.TicketFilters(
        **query.model_dump(exclude={"limit", "cursor", "category"}),
        category_prefix=query.category,
        q_in_confidential=privacy.sees_caller_identity(user),
    )
    rows, next_cursor = ticket_search.list_tickets(
        session,
        filters=filters,
        limit=query.limit,
        cursor=query.cursor,
        restrict=access.visible_ticket_clause(user),
    )
    return TicketPage(items=[ticket_read(t, user) for t in rows], next_cursor=next_cursor)


@router.get(
    "/by-number/{number}",
    response_model=TicketRead,
    summary="Read a ticket by its number",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def get_ticket_by_number(number: str, session: SessionDep, user: CurrentUser) -> TicketRead:
    """One ticket by its number (e.g. 20261205-000123). A handler sees only tickets their unit was
    given; the caller's identity is masked for whoever may not see it."""
    return ticket_read(access.visible_ticket(session, user=user, number=number), user)


@router.get(
    "/{ticket_id}",
    response_model=TicketRead,
    summary="Read a ticket",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def get_ticket(ticket_id: PathId, session: SessionDep, user: CurrentUser) -> TicketRead:
    """One ticket by id. A handler sees only tickets their unit was given; the caller's identity is
    masked for whoever may not see it."""
    return ticket_read(access.visible_ticket(session, user=user, ticket_id=ticket_id), user)


@router.patch(
    "/{ticket_id}",
    response_model=TicketRead,
    summary="Correct a ticket's intake fields",
    responses=error_responses(
        {
            403: "a unit's handler may not edit tickets",
            404: "no such ticket",
            409: "the ticket can no longer be edited (replied, merged, closed or archived)",
            422: "a field is invalid, or a required field was sent as null",
        }
    ),
    openapi_extra=ex.body(address=ex.TICKET_UPDATE),
)
def update_ticket(
    ticket_id: PathId, data: TicketUpdate, session: SessionDep, user: IntakeStaff, clock: ClockDep
) -> TicketRead:
    """Correct what intake recorded (address, category, caller…); only the fields sent change, and
    each change is kept in the ticket's events."""
    data = patch_body(data, Ticket)
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    tickets.update_ticket(
        session, ticket=ticket, data=data, actor=assignments.who(user), now=clock.now()
    )
    return ticket_read(ticket, user)


@router.get(
    "/{ticket_id}/events",
    response_model=list[TicketEventRead],
    summary="A ticket's history",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def ticket_events(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[TicketEventRead]:
    """The append-only audit trail of the ticket, oldest first: intake, dispatch, sign-for,
    replies, reviews, callbacks."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    return event_reads(tickets.events_of(session, saved_id(ticket)), ticket, user)


@router.post(
    "/{ticket_id}/close-at-intake",
    response_model=TicketRead,
    summary="Answer directly and close (直接办结)",
    responses=error_responses(
        {
            403: "a unit's handler may not do this",
            404: "no such ticket",
            409: "the ticket has been dispatched or closed already",
            422: "the answer is empty",
        }
    ),
    openapi_extra=ex.body(answer=ex.CLOSE_AT_INTAKE),
)
def close_at_intake(
    ticket_id: PathId,
    body: CloseAtIntakeBody,
    session: SessionDep,
    user: IntakeStaff,
    clock: ClockDep,
) -> TicketRead:
    """直接办结: the operator answered the caller from the knowledge base."""
    ticket = closing.close_at_intake(
        session, ticket_id=ticket_id, answer=body.answer, actor=user, now=clock.now()
    )
    return ticket_read(ticket, user)


@router.post(
    "/{ticket_id}/merge",
    response_model=TicketRead,
    summary="Merge into another ticket (并单)",
    responses=error_responses(
        {
            403: "a unit's handler may not merge",
            404: "no such ticket or parent",
            409: "the parent is closed, or this ticket has merged tickets of its own",
            422: "a ticket cannot be merged into itself",
        }
    ),
    openapi_extra=ex.body(merge=ex.MERGE),
)
def merge_ticket(
    ticket_id: PathId, body: MergeBody, session: SessionDep, user: IntakeStaff, clock: ClockDep
) -> TicketRead:
    """并单 into `parent_id`: the parent's reply will reach this ticket's caller too."""
    child = closing.merge(
        session,
        ticket_id=ticket_id,
        parent_id=body.parent_id,
        actor=user,
        now=clock.now(),
        reason=body.reason,
    )
    return ticket_read(child, user)
