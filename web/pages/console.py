"""The operator console (话务台): the calls in progress with the caller's live transcript, the
caller's earlier tickets, and the ticket form a call that just ended opens — pre-filled from
the transcript and the caller ID, with the rules' and the learned suggestion and their reasons,
duplicate candidates to merge with one click, and the direct answer that closes at intake; and
the form for requests that arrive without a call (walk-in, letter, web).

    GET  /console                    calls in progress and just ended (live), new-ticket link
    GET  /console/calls              the calls block (htmx; refreshed on the `calls` event)
    GET  /console/calls/dialogue?call=<Call-ID>   a call's turns (htmx; on its live event)
    GET  /console/tickets/{id}       the ticket form
    GET  /console/tickets/{id}/words the call's words block (htmx; on the ticket's events)
    POST /console/tickets/{id}       save the corrections
    POST /console/tickets/{id}/answer   直接办结 with the answer text
    POST /console/tickets/{id}/merge    并单 into another ticket
    GET  /console/new, POST /console/new   a ticket without a call
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session, col
from starlette.responses import Response

from accounts.models import CENTRE_ROLES
from core.db import saved_id
from core.errors import Conflict, DomainError, IllegalTransition, InvalidInput
from dispatch import access, assignments, closing
from dispatch.models import Assignment, Unit
from hotline import duplicates, intake, live
from hotline.calls import intake as call_intake
from hotline.calls import records as call_records
from hotline.knowledge import usage as knowledge_usage
from hotline.live import CALLS_ENDED_WITHIN, call_key
from tickets import service as tickets
from tickets.models import Channel, RequestType, Ticket, TicketCreate, TicketUpdate, Urgency
from web.api.schemas import ticket_read
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import nav
from web.pages.console_knowledge import article_refusal
from web.pages.i18n import N_, _
from web.pages.labels import refusal
from web.pages.nav import NavItem
from web.pages.people import Person, csrf_form, record, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
INTAKE = require(*CENTRE_ROLES)
nav.register(NavItem("/console", N_("Operator console"), frozenset(CENTRE_ROLES), order=15))

REQUEST_TYPES = {
    RequestType.consultation: N_("Consultation"),
    RequestType.help: N_("Request for help"),
    RequestType.complaint: N_("Complaint"),
    RequestType.report: N_("Report"),
    RequestType.suggestion: N_("Suggestion"),
    RequestType.praise: N_("Praise"),
}
URGENCIES = {
    Urgency.normal: N_("Normal"),
    Urgency.urgent: N_("Urgent"),
    Urgency.very_urgent: N_("Very urgent"),
}
CHANNELS = {
    Channel.walk_in: N_("Walk-in"),
    Channel.web: N_("Web or letter"),
    Channel.phone: N_("Phone (no recorded call)"),
}
TEXT_FIELDS = (
    "caller_name",
    "caller_phone",
    "address",
    "district",
    "street",
    "title",
    "description",
    "request",
    "category_code",
    "category_name",
)
FIELD_NAMES = {
    "caller_name": N_("Caller's name"),
    "caller_phone": N_("Caller's phone"),
    "occurred_at": N_("When it happened"),
    "address": N_("Where (address)"),
    "district": N_("District"),
    "street": N_("Street or town"),
    "title": N_("Summary"),
    "description": N_("What happened (transcript)"),
    "request": N_("The caller's demand"),
    "category_code": N_("Category code"),
    "category_name": N_("Category"),
    "request_type": N_("Request type"),
    "urgency": N_("Urgency"),
    "channel": N_("Channel"),
    "answer": N_("Answer"),
}


# ---------------------------------------------------------------- the calls


def _calls(request: Request, session: Session) -> dict[str, Any]:
    now = request.app.state.clock.now()
    calls = live.live_calls(session, now=now, ended_within=CALLS_ENDED_WITHIN)
    numbers = {c.caller_number for c in calls if c.caller_number}
    history = {n: duplicates.caller_history(session, phone=n, limit=5) for n in numbers}
    tickets_by_id = {
        t.id: t
        for t in session.scalars(
            select(Ticket).where(col(Ticket.id).in_([c.ticket_id for c in calls if c.ticket_id]))
        )
    }
    in_progress = [c for c in calls if c.ended_at is None]
    ended = [c for c in reversed(calls) if c.ended_at is not None]  # newest arrival first
    return {
        "in_progress": in_progress,
        "ended": ended,
        "history": history,
        "call_tickets": tickets_by_id,
        "key": call_key,
        "now": now,
    }


@router.get("/console")
def console(request: Request, session: SessionDep, person: Person = INTAKE) -> Response:
    return render(request, "console/index.html", _calls(request, session))


@router.get("/console/calls")
def console_calls(request: Request, session: SessionDep, person: Person = INTAKE) -> Response:
    return render(request, "console/index.html", _calls(request, session), block="calls")


@router.get("/console/calls/dialogue")
def call_dialogue(
    request: Request, session: SessionDep, call: str, person: Person = INTAKE
) -> Response:
    """A call's turns so far, refreshed in the calls list on the call's live event."""
    turns = call_records.call_dialogue(session, call_id=call)
    return render(request, "_dialogue.html", {"turns": turns or []})


# ---------------------------------------------------------------- the ticket form


def _units(session: Session) -> dict[str, str]:
    return {u.code: u.name for u in session.scalars(select(Unit))}


def _explanation(session: Session, ticket_id: int) -> dict[str, Any] | None:
    """The routing explanation stored on the ticket's newest event that has one."""
    for event in reversed(tickets.events_of(session, ticket_id)):
        explanation = (event.data or {}).get("explanation")
        if isinstance(explanation, dict):
            return explanation
    return None


def _form_context(
    request: Request, session: Session, ticket: Ticket, person: Person
) -> dict[str, Any]:
    ticket_id = saved_id(ticket)
    assigned = list(
        session.scalars(select(Assignment).where(col(Assignment.ticket_id) == ticket_id))
    )
    unit_names = _units(session)
    units_by_id = {u.id: u for u in session.scalars(select(Unit))}
    return {
        "ticket": ticket_read(ticket, person.user),
        "explanation": _explanation(session, ticket_id),
        "assignments": [(a, units_by_id.get(a.unit_id)) for a in assigned],
        "unit_names": unit_names,
        "candidates": duplicates.candidates(
            session, ticket=ticket, now=request.app.state.clock.now()
        ),
        "history": [
            t
            for t in duplicates.caller_history(session, phone=ticket.caller_phone or "")
            if t.id != ticket.id
        ],
        "request_types": REQUEST_TYPES,
        "urgencies": URGENCIES,
        "field_names": FIELD_NAMES,
        "errors": {},
        "values": {},
        "occurred_local": _local_input(ticket.occurred_at, request),
        "cited_use": knowledge_usage.cited_article(session, ticket_id=ticket_id),
        **_words_context(session, ticket),
    }


def _words_context(session: Session, ticket: Ticket) -> dict[str, Any]:
    """The ticket's calls and whether the caller's words are still being transcribed: the
    form says so, and fills the description in when they arrive (the placeholder is the
    only text it replaces). A call an operator took shows both speakers' turns, live while
    it runs (the block refreshes on the call's live event too)."""
    calls = call_intake.ticket_calls(session, ticket_id=saved_id(ticket))
    return {
        "calls": calls,
        "transcribing": any(c.transcript is None for c in calls),
        "placeholder": call_intake.PLACEHOLDER,
        "key": call_key,
    }


def _local_input(value: datetime | None, request: Request) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(request.app.state.settings.timezone)).strftime(
        "%Y-%m-%dT%H:%M"
    )


def _fields(form: Any, request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    """The form's values as the models take them (blank → None), and the errors of any that
    cannot be read."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in TEXT_FIELDS:
        raw = form.get(name)
        if isinstance(raw, str):
            values[name] = raw.strip() or None
    for name, enum in (("request_type", RequestType), ("urgency", Urgency)):
        raw = form.get(name)
        if isinstance(raw, str) and raw:
            if raw in enum.__members__:
                values[name] = enum(raw)
            else:
                errors[name] = _("Choose one of the listed values.")
    values["confidential"] = form.get("confidential") == "on"
    raw = form.get("occurred_at")
    if isinstance(raw, str) and raw.strip():
        try:
            naive = datetime.fromisoformat(raw.strip())
            zone = ZoneInfo(request.app.state.settings.timezone)
            values["occurred_at"] = naive.replace(tzinfo=zone) if naive.tzinfo is None else naive
        except ValueError:
            errors["occurred_at"] = _(
                "Give the date and time as on the calendar, e.g. 2026-12-04 09:30."
            )
    return values, errors


def _validation_errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else "form"
        kind = error.get("type", "")
        if kind == "string_too_long":
            found[name] = _(
                "Too long: at most %(n)d characters.", n=error.get("ctx", {}).get("max_length", 0)
            )
        elif kind in ("string_too_short", "missing"):
            found[name] = _("This field is needed.")
        elif kind == "string_pattern_mismatch":
            found[name] = _("Not in the expected form (a phone number: digits only).")
        else:
            found[name] = _("Not a value this field takes.")
    return found


@router.get("/console/tickets/{ticket_id}")
def ticket_form(
    ticket_id: int, request: Request, session: SessionDep, person: Person = INTAKE
) -> Response:
    ticket = access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    return render(request, "console/ticket.html", _form_context(request, session, ticket, person))


@router.get("/console/tickets/{ticket_id}/words")
def ticket_words(
    ticket_id: int, request: Request, session: SessionDep, person: Person = INTAKE
) -> Response:
    """Refreshed on each of the ticket's live events: once the final transcript is on the
    ticket, the block says so and carries the description made from it."""
    ticket = access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    context = {"ticket": ticket_read(ticket, person.user), "live": True}
    context.update(_words_context(session, ticket))
    return render(request, "console/ticket.html", context, block="words")


@router.post("/console/tickets/{ticket_id}", dependencies=[Depends(csrf_form)])
async def save_ticket(
    ticket_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = INTAKE
) -> Response:
    form = await request.form()
    values, errors = _fields(form, request)
    return await _in_thread(_save, request, session, clock, person, ticket_id, values, errors)


async def _in_thread(func: Any, *args: Any) -> Response:
    from fastapi.concurrency import run_in_threadpool

    return await run_in_threadpool(func, *args)


def _save(request, session, clock, person, ticket_id, values, errors) -> Response:
    ticket = tickets.get_ticket(session, ticket_id, for_update=True)
    access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    if values.get("description") == call_intake.PLACEHOLDER:
        # Posted back unchanged from the form: nobody wrote it, and the transcript (already
        # on the ticket, or on its way) must not be overwritten by it.
        del values["description"]
    try:
        data = TicketUpdate(**{k: v for k, v in values.items() if k not in errors})
    except ValidationError as exc:
        errors = {**errors, **_validation_errors(exc)}
    if errors:
        context = _form_context(request, session, ticket, person)
        context.update(
            errors=errors, values=values, error=_("Nothing was saved: correct the marked fields.")
        )
        record(
            session,
            request,
            clock,
            action="ticket_edit",
            person=person,
            target=f"ticket:{ticket_id}",
            outcome="refused",
        )
        return render(request, "console/ticket.html", context, status_code=422)
    try:
        tickets.update_ticket(
            session, ticket=ticket, data=data, actor=assignments.who(person.user), now=clock.now()
        )
    except DomainError as exc:
        context = _form_context(request, session, ticket, person)
        context.update(values=values, error=_("Nothing was saved: %(why)s", why=refusal(exc)))
        return render(request, "console/ticket.html", context, status_code=409)
    record(
        session, request, clock, action="ticket_edit", person=person, target=f"ticket:{ticket_id}"
    )
    return RedirectResponse(f"/console/tickets/{ticket_id}?saved=1", status_code=303)


@router.post("/console/tickets/{ticket_id}/answer", dependencies=[Depends(csrf_form)])
async def answer(
    ticket_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = INTAKE
) -> Response:
    form = await request.form()
    text = str(form.get("answer") or "").strip()
    cited = (str(form.get("article_id") or ""), str(form.get("version") or ""))
    return await _in_thread(_answer, request, session, clock, person, ticket_id, text, cited)


def _answer(request, session, clock, person, ticket_id, text, cited) -> Response:
    """直接办结, citing the knowledge article read to the caller when one was chosen."""
    ticket = access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    raw_article, raw_version = cited
    article_id = int(raw_article) if raw_article.isdigit() else None
    version = int(raw_version) if raw_version.isdigit() else None
    errors = {}
    if not text:
        errors["answer"] = _("Write the answer the caller was given.")
    if (raw_article or raw_version) and (article_id is None or version is None):
        errors["answer"] = _("The article cited is not one of the suggestions: choose it again.")
    if errors:
        context = _form_context(request, session, ticket, person)
        context.update(errors=errors, answer_text=text, cited=(article_id, version))
        return render(request, "console/ticket.html", context, status_code=422)
    try:
        if article_id is not None and version is not None:
            knowledge_usage.answer_with_article(
                session,
                ticket_id=ticket_id,
                article_id=article_id,
                version=version,
                answer=text[:5000],
                user=person.user,
                now=clock.now(),
            )
        else:
            closing.close_at_intake(
                session,
                ticket_id=ticket_id,
                answer=text[:5000],
                actor=person.user,
                now=clock.now(),
            )
    except DomainError as exc:
        context = _form_context(request, session, ticket, person)
        context.update(
            error=_("Not closed: %(why)s", why=article_refusal(exc) or refusal(exc)),
            answer_text=text,
            cited=(article_id, version),
        )
        record(
            session,
            request,
            clock,
            action="close_at_intake",
            person=person,
            target=f"ticket:{ticket_id}",
            outcome="refused",
        )
        return render(request, "console/ticket.html", context, status_code=409)
    record(
        session,
        request,
        clock,
        action="close_at_intake",
        person=person,
        target=f"ticket:{ticket_id}",
        detail={"article": article_id, "version": version} if article_id else None,
    )
    return RedirectResponse(f"/console/tickets/{ticket_id}?answered=1", status_code=303)


@router.post("/console/tickets/{ticket_id}/merge", dependencies=[Depends(csrf_form)])
async def merge(
    ticket_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = INTAKE
) -> Response:
    form = await request.form()
    raw = str(form.get("parent_id") or "")
    return await _in_thread(_merge, request, session, clock, person, ticket_id, raw)


def _merge(request, session, clock, person, ticket_id, raw) -> Response:
    ticket = access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
    try:
        parent_id = int(raw)
        closing.merge(
            session,
            ticket_id=ticket_id,
            parent_id=parent_id,
            actor=person.user,
            now=clock.now(),
            reason=_("Same matter (duplicate found at intake)"),
        )
    except (ValueError, DomainError) as exc:
        context = _form_context(request, session, ticket, person)
        context.update(error=_("Not merged: %(why)s", why=_merge_refusal(exc)))
        record(
            session,
            request,
            clock,
            action="merge",
            person=person,
            target=f"ticket:{ticket_id}",
            outcome="refused",
        )
        return render(request, "console/ticket.html", context, status_code=409)
    record(
        session,
        request,
        clock,
        action="merge",
        person=person,
        target=f"ticket:{ticket_id}",
        detail={"parent": parent_id},
    )
    return RedirectResponse(f"/console/tickets/{ticket_id}?merged=1", status_code=303)


def _merge_refusal(exc: ValueError | DomainError) -> str:
    """The service's merge refusals name tickets and states in English; the form says which
    of the operator's choices was wrong."""
    if isinstance(exc, ValueError):
        return _("Choose one of the listed tickets.")
    if isinstance(exc, InvalidInput):
        return _("A ticket cannot be merged into itself.")
    if isinstance(exc, Conflict) and not isinstance(exc, IllegalTransition):
        return _(
            "That ticket cannot take this one: it is closed or merged, or this ticket has "
            "merged tickets of its own."
        )
    return refusal(exc)


# ---------------------------------------------------------------- without a call


@router.get("/console/new")
def new_form(request: Request, person: Person = INTAKE) -> Response:
    return render(request, "console/new.html", _new_context({}, {}))


def _new_context(
    values: dict[str, Any], errors: dict[str, str], submission: str | None = None
) -> dict[str, Any]:
    return {
        # The form's idempotency key: posting it twice (a double click, a resend after a
        # network error) makes one ticket.
        "submission": submission or secrets.token_urlsafe(16),
        "values": values,
        "errors": errors,
        "channels": CHANNELS,
        "request_types": REQUEST_TYPES,
        "urgencies": URGENCIES,
        "field_names": FIELD_NAMES,
    }


@router.post("/console/new", dependencies=[Depends(csrf_form)])
async def create(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = INTAKE,
) -> Response:
    form = await request.form()
    values, errors = _fields(form, request)
    channel = str(form.get("channel") or "")
    if channel not in {c.value for c in CHANNELS}:
        errors["channel"] = _("Choose one of the listed values.")
    key = str(form.get("submission") or "")[:100] or None  # one ticket however often it is posted
    return await _in_thread(
        _create, request, session, clock, settings, person, values, errors, channel, key
    )


def _create(request, session, clock, settings, person, values, errors, channel, key) -> Response:
    data = None
    if not errors:
        try:
            data = TicketCreate(
                channel=Channel(channel), **{k: v for k, v in values.items() if v is not None}
            )
        except ValidationError as exc:
            errors = _validation_errors(exc)
    if data is None:
        return render(
            request, "console/new.html", _new_context(values, errors, key), status_code=422
        )
    submission = intake.submit(
        session,
        data=data,
        actor=person.user,
        now=clock.now(),
        idempotency_key=key,
        idempotency_scope=f"user:{person.id}",
        fallback_unit_code=settings.dispatch.fallback_unit_code,
        tz=settings.tz,
    )
    ticket_id = saved_id(submission.ticket)
    record(
        session, request, clock, action="ticket_create", person=person, target=f"ticket:{ticket_id}"
    )
    return RedirectResponse(f"/console/tickets/{ticket_id}?created=1", status_code=303)
