"""The dispatch form (派单 / 改派): the ticket's summary, what the rules and the learned
suggestion say about it and why, and the units picker — a lead unit and co-handling units.
A ticket already with a unit is re-dispatched, which needs a reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from sqlmodel import Session
from starlette.responses import Response

from core.clock import Clock
from core.errors import DomainError
from core.settings import Settings
from dispatch import advice, classifier, reference, routing
from dispatch.models import UnitLevel
from tickets.models import Status, Ticket
from web.deps import ClockDep, PathId, SessionDep, SettingsDep
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, record
from web.pages.queues_common import (
    Intake,
    after,
    notice,
    refuse,
    refused_input,
    show,
    ticket_context,
)

router = APIRouter(include_in_schema=False)

DISPATCHABLE = (Status.intake, Status.pending_dispatch, Status.reopened)
REDISPATCHABLE = (Status.dispatched, Status.signed, Status.in_progress)

# The confidence gate's reasons (dispatch/advice.py), in the reader's words.
ADVICE_REASONS = {
    "no rule fired": N_("no rule fired"),
    "no rule fired; the learned suggestion is confident": N_(
        "no rule fired; the learned suggestion is confident"
    ),
    "rule and suggestion agree": N_("the rule and the learned suggestion agree"),
    "the model cannot judge this rule": N_("the learned suggestion cannot judge this rule"),
    "the rule fired confidently": N_("the rule fired confidently"),
    "the rule fired; no model": N_("the rule fired; no learned suggestion installed"),
    "the rule fired on weak evidence": N_("the rule fired on weak evidence"),
    "the suggestion does not contradict": N_("the learned suggestion does not contradict it"),
}


def units_for_picker(session: Session) -> list[Any]:
    """Active handling units (not the centre itself), by code."""
    units = reference.snapshot(session).units.values()
    return sorted(
        (u for u in units if u.active and u.level != UnitLevel.centre), key=lambda u: u.code
    )


def policies_for_picker(session: Session) -> list[str]:
    return sorted(p.name for p in reference.snapshot(session).policies if p.active)


def suggestion(session: Session, ticket: Ticket, settings: Settings) -> dict[str, Any]:
    """What the rules and the learned suggestion say about the ticket now, and why: the rule
    that fired (its words), the rivals, the confidence gate's advice."""
    facts = routing.facts_of(ticket, settings.tz)
    match, explanation = reference.snapshot(session).rules.decide(facts)
    model = classifier.installed()
    learned = model.suggest(facts.text) if model is not None else None
    gate = advice.advise(match, explanation, learned, model.support if model else None)
    reason = ADVICE_REASONS.get(gate.reason)
    actions = explanation["actions"] or {}
    return {
        "fired": explanation["fired"],
        "actions": actions,
        "confidence": explanation["confidence"],
        "evidence": explanation["evidence"],
        "wording": explanation["wording"],
        "alternatives": explanation["alternatives"],
        "emergency": explanation["emergency"],
        "rules_total": explanation["rules_total"],
        "advice": gate,
        "advice_reason": _(reason) if reason else gate.reason,
        "learned": learned,
        "lead": gate.unit or actions.get("lead_unit"),
        "co": list(actions.get("co_units") or []),
    }


def form_context(
    session: Session, person: Person, ticket_id: int, settings: Settings
) -> dict[str, Any]:
    context = ticket_context(session, person.user, ticket_id)
    advice_now = suggestion(session, context["row"], settings)
    current_lead = next((a.unit_code for a in context["assignments"] if a.role == "lead"), None)
    return {
        **context,
        "advice": advice_now,
        "units": units_for_picker(session),
        "policies": policies_for_picker(session),
        "lead": current_lead or advice_now["lead"] or "",
        "co": [a.unit_code for a in context["assignments"] if a.role == "co"] or advice_now["co"],
        "policy": "",
        "reason": "",
        "errors": {},
        "problem": None,
    }


def check_units(lead: str, co: Sequence[str]) -> dict[str, str]:
    """The picker's mistakes, by field, before the domain is asked."""
    errors: dict[str, str] = {}
    if not lead:
        errors["lead_unit_code"] = _("Choose the lead unit.")
    elif lead in co:
        errors["co_unit_codes"] = _("The lead unit cannot also be a co-handling unit.")
    return errors


def _render_form(
    request: Request, context: dict[str, Any], done: str | None = None, status: int = 200
) -> Response:
    row: Ticket = context["row"]
    context = {
        **context,
        "redispatch": row.status in REDISPATCHABLE,
        "open": row.status in DISPATCHABLE + REDISPATCHABLE,
        "notice": notice(done, row.number),
    }
    return show(request, "queues/dispatch.html", context, status_code=status)


@router.get("/dispatch/{ticket_id}")
def dispatch_form(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    person: Person = Intake,
    done: str | None = None,
) -> Response:
    return _render_form(request, form_context(session, person, ticket_id, settings), done)


@router.post("/dispatch/{ticket_id}", dependencies=[Depends(csrf_form)])
def dispatch(
    request: Request,
    ticket_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    lead_unit_code: Annotated[str, Form(max_length=32)] = "",
    co_unit_codes: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies it)
    policy_name: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    person: Person = Intake,
) -> Response:
    context = form_context(session, person, ticket_id, settings)
    ticket: Ticket = context["row"]
    redispatch = ticket.status in REDISPATCHABLE
    action = "ticket.redispatch" if redispatch else "ticket.dispatch"
    reason = reason.strip()
    co = [c for c in dict.fromkeys(co_unit_codes) if c]
    errors = check_units(lead_unit_code, co)
    if redispatch and not reason:
        errors["reason"] = _("A re-dispatch needs a reason: the units see it.")
    chosen = {"lead": lead_unit_code, "co": co, "policy": policy_name, "reason": reason}
    if errors:
        refused_input(
            session, request, clock, person=person, action=action,
            target=f"ticket:{ticket_id}", problem=",".join(sorted(errors)),
        )  # fmt: skip
        return _render_form(request, {**context, **chosen, "errors": errors}, status=400)
    try:
        routing.manual_dispatch(
            session,
            ticket_id=ticket_id,
            lead_unit_code=lead_unit_code,
            co_unit_codes=co,
            policy_name=policy_name or None,
            reason=reason or None,
            actor=person.user,
            now=clock.now(),
        )
    except DomainError as exc:
        problem = refuse(
            session, request, clock, person=person, action=action,
            target=f"ticket:{ticket_id}", exc=exc,
        )  # fmt: skip
        context = form_context(session, person, ticket_id, settings)
        return _render_form(request, {**context, **chosen, "problem": problem}, status=409)
    _record(session, request, clock, person, action, ticket_id, lead_unit_code, co)
    if redispatch:
        return after(f"/dispatch/{ticket_id}", "redispatched", ticket)
    return after("/queues/manual", "dispatched", ticket)


def _record(
    session: Session,
    request: Request,
    clock: Clock,
    person: Person,
    action: str,
    ticket_id: int,
    lead: str,
    co: list[str],
) -> None:
    record(
        session,
        request,
        clock,
        action=action,
        person=person,
        target=f"ticket:{ticket_id}",
        detail={"lead_unit": lead, "co_units": co},
    )
