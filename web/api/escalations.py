"""Escalation steps (预警, 催办, 督办, 通报): who has been chased about what, and their
acknowledgement."""

from __future__ import annotations

from fastapi import APIRouter, Query

from core.db import saved_id
from dispatch import access, escalation_visibility
from web.api.schemas import EscalationRead
from web.deps import ClockDep, CurrentUser, PathId, SessionDep
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(tags=["escalations"], responses=ERROR_RESPONSES)


@router.get(
    "/escalations",
    response_model=list[EscalationRead],
    summary="Escalations addressed to you",
    responses=error_responses({422: "limit is out of range"}),
)
def my_escalations(
    session: SessionDep,
    user: CurrentUser,
    unacknowledged: bool = False,
    limit: int = Query(default=100, ge=1, le=500),
) -> list[EscalationRead]:
    """The steps addressed to you or to your unit, newest first."""
    steps = escalation_visibility.escalations_for_user(
        session, user=user, unacknowledged_only=unacknowledged, limit=limit
    )
    return [EscalationRead.model_validate(s) for s in steps]


@router.get(
    "/tickets/{ticket_id}/escalations",
    response_model=list[EscalationRead],
    summary="A ticket's escalations",
    responses=error_responses(
        {404: "no such ticket, or not one you may see (a handler: their unit's only)"}
    ),
)
def ticket_escalations(
    ticket_id: PathId, session: SessionDep, user: CurrentUser
) -> list[EscalationRead]:
    """Every step on the ticket, on the ticket it was merged into and on those merged into
    it — all units on a ticket see the same chain; a linked ticket counts only if you
    may see it."""
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    steps = escalation_visibility.escalations_for_ticket(
        session, ticket_id=saved_id(ticket), user=user
    )
    return [EscalationRead.model_validate(s) for s in steps]


@router.post(
    "/escalations/{escalation_id}/ack",
    response_model=EscalationRead,
    summary="Acknowledge an escalation",
    responses=error_responses(
        {
            404: "no such escalation step, or not one addressed to you or your unit",
        }
    ),
)
def acknowledge(
    escalation_id: PathId, session: SessionDep, user: CurrentUser, clock: ClockDep
) -> EscalationRead:
    """Acknowledge an escalation step (预警, 催办, 督办, 通报) addressed to you or your unit; it is
    recorded who did and when. Acknowledging it again changes nothing."""
    return EscalationRead.model_validate(
        escalation_visibility.acknowledge(
            session, escalation_id=escalation_id, user=user, now=clock.now()
        )
    )
