"""The ticket page everyone uses (``/tickets/{id}``): the ticket's fields masked as the API
masks them for the reader, its units' assignments with their running clocks, the timeline
of its events, its escalation chain, its extension requests and the files sent with replies
— and the reader's actions. A handler acts here for their unit (sign for, put a handler in
charge, log a contact, note, reply with files, return, ask for an extension, acknowledge an
escalation); the centre's staff get links to the queues' pages for the steps the ticket's
state allows. A ticket of another unit answers exactly as a missing one.

Every action posts a plain form (htmx boosts it), is recorded in the audit trail whatever
its outcome, and comes back to the page with a notice, or with the problem in words next to
the form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from core.clock import Clock
from core.db import saved_id
from core.errors import DomainError, NotFound
from dispatch import access, escalation_visibility, handling
from dispatch.assignments import get_assignment
from dispatch.models import Assignment, ClockUnit
from hotline import attachments, citizen_photos
from web.deps import ClockDep, PathId, SessionDep, SettingsDep
from web.pages.i18n import _
from web.pages.labels import refusal
from web.pages.people import CurrentPerson, Person, csrf_form, record
from web.pages.templating import render
from web.pages.ticket_view import DONE, RETURN_REASON_NAMES, mine, ticket_context

router = APIRouter(include_in_schema=False)


@router.get("/tickets/{ticket_id}")
def ticket_page(
    request: Request,
    ticket_id: PathId,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    context = ticket_context(request, session, person, ticket_id=ticket_id, now=clock.now())
    context["notice"] = DONE.get(done or "")
    return render(request, "ticket/page.html", context)


# ---------------------------------------------------------------- the unit's actions


class Refused(Exception):
    """A form the page refuses before asking the service: the problem in words."""

    def __init__(self, message: str) -> None:
        self.message = message


def _act(
    request: Request,
    session: Session,
    clock: Clock,
    person: Person,
    *,
    ticket_id: int,
    action: str,
    run: Callable[[], Any],
    form: dict[str, Any],
    detail: dict[str, Any] | None = None,
) -> Response:
    """Run one action on the ticket in a savepoint; record it (and a refusal) in the audit
    trail; back to the page with a notice, or the page again with the problem in words."""
    target = f"ticket:{ticket_id}"
    error: str | None = None
    try:
        access.visible_ticket(session, user=person.user, ticket_id=ticket_id)
        with session.begin_nested():
            run()
    except NotFound:
        record(
            session,
            request,
            clock,
            action=f"ticket.{action}",
            person=person,
            target=target,
            outcome="refused",
            detail={**(detail or {}), "problem": "not_found"},
        )
        request.state.person, request.state.csrf_token = None, ""
        return render(
            request, "errors/problem.html", {"status": 404, "not_found": True}, status_code=404
        )
    except Refused as exc:
        error = exc.message
    except attachments.AttachmentRefused as exc:
        error = _refused_file(exc, request)
    except DomainError as exc:
        error = refusal(exc)
    if error is None:
        record(
            session,
            request,
            clock,
            action=f"ticket.{action}",
            person=person,
            target=target,
            detail=detail,
        )
        return RedirectResponse(f"/tickets/{ticket_id}?done={action}#{action}", status_code=303)
    record(
        session,
        request,
        clock,
        action=f"ticket.{action}",
        person=person,
        target=target,
        outcome="refused",
        detail={**(detail or {}), "problem": error},
    )
    context = ticket_context(request, session, person, ticket_id=ticket_id, now=clock.now())
    context.update(error={"action": action, "message": error}, form=form)
    return render(request, "ticket/page.html", context, status_code=400)


def _refused_file(exc: attachments.AttachmentRefused, request: Request) -> str:
    limits = attachments.Limits.of(request.app.state.settings)
    if exc.problem == "too_big":
        return _(
            "%(name)s is larger than %(size)s MB.",
            name=exc.filename,
            size=f"{limits.max_bytes / 1024 / 1024:g}",
        )
    if exc.problem == "empty":
        return _("%(name)s is empty.", name=exc.filename)
    return _(
        "%(name)s is not a file type we keep (%(types)s).",
        name=exc.filename,
        types=", ".join(sorted(limits.types)),
    )


def _own(session: Session, person: Person, ticket_id: int, assignment_id: int) -> Assignment:
    """The reader's unit's assignment on this ticket (anything else: not found)."""
    assignment = get_assignment(session, assignment_id)
    if assignment.ticket_id != ticket_id or not mine(person, assignment):
        raise NotFound(f"assignment {assignment_id} does not exist")
    return assignment


def _text(value: str, message: str, limit: int = 2000) -> str:
    value = value.strip()
    if not value:
        raise Refused(message)
    if len(value) > limit:
        raise Refused(_("At most %(limit)s characters, please.", limit=limit))
    return value


AssignmentField = Annotated[int, Form(ge=1, le=2**31 - 1)]
TextField = Annotated[str, Form(max_length=20000)]
Posting = [Depends(csrf_form)]


def _form(
    request: Request,
    ticket_id: int,
    action: str,
    assignment_id: int,
    person: Person,
    session: Session,
    clock: Clock,
    step: Callable[[Assignment], Any],
    form: dict[str, Any] | None = None,
) -> Response:
    """One of the unit's actions on one of its assignments of this ticket."""

    def run() -> None:
        step(_own(session, person, ticket_id, assignment_id))

    return _act(
        request,
        session,
        clock,
        person,
        ticket_id=ticket_id,
        action=action,
        run=run,
        form=form or {},
        detail={"assignment_id": assignment_id},
    )


@router.post("/tickets/{ticket_id}/sign", dependencies=Posting)
def sign(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
) -> Response:
    def step(a: Assignment) -> None:
        handling.sign(session, assignment_id=saved_id(a), actor=person.user, now=clock.now())

    return _form(request, ticket_id, "sign", assignment_id, person, session, clock, step)


@router.post("/tickets/{ticket_id}/start", dependencies=Posting)
def start(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
) -> Response:
    def step(a: Assignment) -> None:
        handling.start(session, assignment_id=saved_id(a), actor=person.user, now=clock.now())

    return _form(request, ticket_id, "start", assignment_id, person, session, clock, step)


@router.post("/tickets/{ticket_id}/assign", dependencies=Posting)
def assign(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    assignee_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    def step(a: Assignment) -> None:
        chosen = int(assignee_id) if assignee_id.isdigit() else None
        handling.assign_handler(
            session,
            assignment_id=saved_id(a),
            assignee_id=chosen,
            actor=person.user,
            now=clock.now(),
        )

    form = {"assignee_id": assignee_id}
    return _form(request, ticket_id, "assign", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/contact", dependencies=Posting)
def contact(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    method: Annotated[str, Form(max_length=16)] = "phone",
    text: TextField = "",
) -> Response:
    def step(a: Assignment) -> None:
        said = _text(text, _("Write what was said with the caller."))
        if method not in handling.CONTACT_METHODS:
            raise Refused(_("Choose how the caller was contacted."))
        handling.log_contact(
            session,
            assignment_id=saved_id(a),
            method=method,
            text=said,
            actor=person.user,
            now=clock.now(),
        )

    form = {"method": method, "text": text}
    return _form(request, ticket_id, "contact", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/note", dependencies=Posting)
def note(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    text: TextField = "",
) -> Response:
    def step(a: Assignment) -> None:
        handling.add_unit_note(
            session,
            assignment_id=saved_id(a),
            text=_text(text, _("Write the note.")),
            actor=person.user,
            now=clock.now(),
        )

    form = {"text": text}
    return _form(request, ticket_id, "note", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/reply", dependencies=Posting)
def reply(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    text: TextField = "",
    files: Annotated[list[UploadFile], File()] = [],  # noqa: B006 (FastAPI copies it)
) -> Response:
    limits = attachments.Limits.of(settings)
    # A form without a chosen file still sends an empty part without a name.
    chosen = [f for f in files if f.filename]
    uploads = [
        attachments.Upload(filename=f.filename or "", data=f.file.read(limits.max_bytes + 1))
        for f in chosen
    ]

    def step(a: Assignment) -> None:
        attachments.reply_with_attachments(
            session,
            store=attachments.store_for(settings),
            limits=limits,
            assignment_id=saved_id(a),
            text=_text(text, _("Write the reply to the caller."), limit=5000),
            uploads=uploads,
            actor=person.user,
            now=clock.now(),
        )

    form = {"text": text}
    return _form(request, ticket_id, "reply", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/return", dependencies=Posting)
def return_ticket(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    reason_code: Annotated[str, Form(max_length=32)] = "",
    reason: TextField = "",
) -> Response:
    def step(a: Assignment) -> None:
        if reason_code not in RETURN_REASON_NAMES:
            raise Refused(_("Choose why the ticket is not yours."))
        handling.return_ticket(
            session,
            assignment_id=saved_id(a),
            reason_code=reason_code,
            reason=_text(reason, _("Say why, so the centre can review the return.")),
            actor=person.user,
            now=clock.now(),
        )

    form = {"reason_code": reason_code, "reason": reason}
    return _form(request, ticket_id, "return", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/extension", dependencies=Posting)
def extension(
    request: Request,
    ticket_id: PathId,
    assignment_id: AssignmentField,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    extend_by: Annotated[str, Form(max_length=12)] = "",
    extend_unit: Annotated[str, Form(max_length=16)] = "workdays",
    reason: TextField = "",
) -> Response:
    def step(a: Assignment) -> None:
        try:
            amount = float(extend_by)
        except ValueError:
            amount = 0
        if not 0 < amount <= 1000:
            raise Refused(_("Give a number of days or hours greater than 0 (at most 1000)."))
        if extend_unit not in ClockUnit.__members__:
            raise Refused(_("Choose working days or hours."))
        handling.request_extension(
            session,
            assignment_id=saved_id(a),
            extend_by=amount,
            extend_unit=ClockUnit(extend_unit),
            reason=_text(reason, _("Say why more time is needed.")),
            actor=person.user,
            now=clock.now(),
        )

    form = {"extend_by": extend_by, "extend_unit": extend_unit, "reason": reason}
    return _form(request, ticket_id, "extension", assignment_id, person, session, clock, step, form)


@router.post("/tickets/{ticket_id}/escalations/{escalation_id}/ack", dependencies=Posting)
def acknowledge(
    request: Request,
    ticket_id: PathId,
    escalation_id: PathId,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
) -> Response:
    def run() -> None:
        step = escalation_visibility.acknowledge(
            session, escalation_id=escalation_id, user=person.user, now=clock.now()
        )
        if step.ticket_id != ticket_id:
            raise NotFound(f"escalation {escalation_id} does not exist")

    return _act(
        request,
        session,
        clock,
        person,
        ticket_id=ticket_id,
        action="ack",
        run=run,
        form={},
        detail={"escalation_id": escalation_id},
    )


# ---------------------------------------------------------------- files


@router.get("/attachments/{attachment_id}")
def attachment(
    attachment_id: PathId, person: CurrentPerson, session: SessionDep, settings: SettingsDep
) -> Response:
    """The file, to whoever may see its ticket; to anyone else, the missing page."""
    row, data = attachments.fetch(
        session,
        store=attachments.store_for(settings),
        user=person.user,
        attachment_id=attachment_id,
    )
    return Response(
        data,
        media_type=row.content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/tickets/{ticket_id}/photos/{index}")
def citizen_photo(
    ticket_id: PathId,
    index: int,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """A photo the citizen sent with a web request before it was dispatched (JPEG or PNG,
    checked by its first bytes when it came): shown in the page, to whoever may see the
    ticket; to anyone else, the missing page."""
    photo, data = citizen_photos.fetch(
        session,
        store=attachments.store_for(settings),
        user=person.user,
        ticket_id=ticket_id,
        index=index,
    )
    return Response(
        data,
        media_type=photo.content_type or "application/octet-stream",
        headers={
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(photo.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )
