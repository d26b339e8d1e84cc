"""Tickets: intake, reading, corrections, direct answers and merging."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from dispatch import accounts
from dispatch import service as dispatching
from hotline import pipeline
from tickets import service as tickets
from tickets.models import TicketCreate, TicketEventRead, TicketRead, TicketUpdate
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
from web.deps import ClockDep, CurrentUser, IntakeStaff, SessionDep, SettingsDep

router = APIRouter(prefix="/tickets", tags=["tickets"])

IdempotencyKeyHeader = Annotated[str | None, Header(
    min_length=1, max_length=200,
    description="repeat a submission with the same key to get the first ticket back",
)]


@router.post("", status_code=201, response_model=TicketWithAssignments,
             responses={200: {"description": "an idempotent replay: the ticket created first"}})
def create_ticket(data: TicketCreate, session: SessionDep, user: IntakeStaff, clock: ClockDep,
                  settings: SettingsDep, response: Response,
                  idempotency_key: IdempotencyKeyHeader = None) -> TicketWithAssignments:
    submission = pipeline.submit(
        session, data=data, actor=user, now=clock.now(), idempotency_key=idempotency_key,
        idempotency_scope=f"user:{user.id}",
        fallback_unit_code=settings.dispatch.fallback_unit_code, tz=settings.tz,
    )
    if not submission.created:
        response.status_code = 200
        return ticket_with_assignments(session, submission.ticket, user)
    made = submission.dispatch.assignments if submission.dispatch else []
    return ticket_with_assignments(session, submission.ticket, user, assignments=made)


@router.get("", response_model=TicketPage)
def list_tickets(session: SessionDep, user: CurrentUser,
                 query: Annotated[TicketQuery, Query()]) -> TicketPage:
    """Newest first. A handler sees only the tickets their unit was ever assigned."""
    accounts.check_ticket_search(user, caller_phone=query.caller_phone)
    filters = tickets.TicketFilters(**query.model_dump(exclude={"limit", "cursor", "category"}),
                                    category_prefix=query.category)
    rows, next_cursor = tickets.list_tickets(session, filters=filters, limit=query.limit,
                                             cursor=query.cursor,
                                             restrict=accounts.visible_ticket_clause(user))
    return TicketPage(items=[ticket_read(t, user) for t in rows], next_cursor=next_cursor)


@router.get("/by-number/{number}", response_model=TicketRead)
def get_ticket_by_number(number: str, session: SessionDep, user: CurrentUser) -> TicketRead:
    return ticket_read(accounts.visible_ticket(session, user=user, number=number), user)


@router.get("/{ticket_id}", response_model=TicketRead)
def get_ticket(ticket_id: int, session: SessionDep, user: CurrentUser) -> TicketRead:
    return ticket_read(accounts.visible_ticket(session, user=user, ticket_id=ticket_id), user)


@router.patch("/{ticket_id}", response_model=TicketRead)
def update_ticket(ticket_id: int, data: TicketUpdate, session: SessionDep, user: IntakeStaff,
                  clock: ClockDep) -> TicketRead:
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    tickets.update_ticket(session, ticket=ticket, data=data, actor=dispatching.who(user),
                          now=clock.now())
    return ticket_read(ticket, user)


@router.get("/{ticket_id}/events", response_model=list[TicketEventRead])
def ticket_events(ticket_id: int, session: SessionDep, user: CurrentUser) -> list[TicketEventRead]:
    ticket = accounts.visible_ticket(session, user=user, ticket_id=ticket_id)
    return event_reads(tickets.events_of(session, ticket.id), ticket, user)


@router.post("/{ticket_id}/close-at-intake", response_model=TicketRead)
def close_at_intake(ticket_id: int, body: CloseAtIntakeBody, session: SessionDep,
                    user: IntakeStaff, clock: ClockDep) -> TicketRead:
    """直接办结: the operator answered the caller from the knowledge base."""
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    tickets.close_at_intake(session, ticket=ticket, answer=body.answer,
                            actor=dispatching.who(user), now=clock.now())
    return ticket_read(ticket, user)


@router.post("/{ticket_id}/merge", response_model=TicketRead)
def merge_ticket(ticket_id: int, body: MergeBody, session: SessionDep, user: IntakeStaff,
                 clock: ClockDep) -> TicketRead:
    """并单 into `parent_id`: the parent's reply will reach this ticket's caller too."""
    child = dispatching.merge(session, ticket_id=ticket_id, parent_id=body.parent_id,
                              actor=user, now=clock.now(), reason=body.reason)
    return ticket_read(child, user)
