"""What the ticket page shows (web.pages.ticket): the names of states, clocks, steps and
events as message ids, the time left in words, the links to the queues' pages the ticket's
state allows, and the page's view of one ticket for one reader — masked as the API masks
it (web.api.schemas), with the running clocks the escalation chain watches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlmodel import Session

from accounts import privacy
from accounts import service as accounts
from accounts.models import Role, User
from core.db import saved_id
from dispatch import access, escalation_visibility, handling, reference, review, unit_work
from dispatch import calendar as work_calendar
from dispatch.assignments import LIVE, assignments_of
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    ClockUnit,
    EscalationKind,
    ExtensionRequest,
    ExtensionStatus,
)
from dispatch.unit_work import ClockState
from hotline import attachments, citizen_photos
from hotline.calls import intake as call_intake
from tickets import service as tickets
from tickets.lifecycle import Action, allowed_actions
from tickets.models import Status
from web import auth
from web.api.schemas import assignment_reads, event_reads, ticket_read
from web.pages.i18n import N_, _
from web.pages.labels import STATUS_NAMES
from web.pages.people import Person

ASSIGNMENT_STATUS_NAMES = {
    AssignmentStatus.dispatched: N_("Awaiting sign-for"),
    AssignmentStatus.signed: N_("Signed for"),
    AssignmentStatus.replied: N_("Replied"),
    AssignmentStatus.returned: N_("Returned"),
    AssignmentStatus.withdrawn: N_("Withdrawn"),
    AssignmentStatus.completed: N_("Completed"),
}
ASSIGNMENT_ROLE_NAMES = {AssignmentRole.lead: N_("Lead unit"), AssignmentRole.co: N_("Co-handling")}
CLOCK_NAMES = {Clock.sign: N_("Sign-for"), Clock.reply: N_("Reply"), Clock.close: N_("Close")}
COLOUR_NAMES = {"green": N_("On time"), "yellow": N_("Due soon"), "red": N_("Overdue")}
ESCALATION_NAMES = {
    EscalationKind.warning: N_("Warning"),
    EscalationKind.chase: N_("Chase"),
    EscalationKind.supervision: N_("Supervision"),
    EscalationKind.leadership: N_("Leadership notice"),
}
EXTENSION_NAMES = {
    ExtensionStatus.pending: N_("Awaiting decision"),
    ExtensionStatus.approved: N_("Approved"),
    ExtensionStatus.refused: N_("Refused"),
}
RETURN_REASON_NAMES = {
    "wrong_locality": N_("Not in our locality"),
    "wrong_mandate": N_("Not our mandate"),
    "other": N_("Other"),
}
CONTACT_METHOD_NAMES = {
    "phone": N_("Phone call"),
    "visit": N_("Visit"),
    "sms": N_("Text message"),
    "other": N_("Other"),
}
UNIT_NAMES = {ClockUnit.workdays: N_("working days"), ClockUnit.hours: N_("hours")}
EVENT_NAMES = {
    "create": N_("Ticket received"),
    "update": N_("Corrected"),
    "close_at_intake": N_("Answered at intake"),
    "queue": N_("Queued for manual dispatch"),
    "dispatch": N_("Dispatched"),
    "redispatch": N_("Re-dispatched"),
    "sign": N_("Signed for"),
    "start": N_("Work started"),
    "reply": N_("Replied"),
    "approve_reply": N_("Reply approved"),
    "send_back": N_("Reply sent back"),
    "callback": N_("Callback"),
    "close": N_("Closed"),
    "return": N_("Returned"),
    "uphold_return": N_("Return refused"),
    "merge": N_("Merged"),
    "close_merged": N_("Closed with its parent"),
    "reopen": N_("Reopened"),
    "archive": N_("Archived"),
    "note": N_("Note"),
    # in-place notes, by their kind
    "co_signed": N_("Co-handling unit signed for"),
    "co_reply": N_("Co-handling unit replied"),
    "co_released": N_("Co-handling unit released"),
    "extension_requested": N_("Extension asked"),
    "extension_approved": N_("Extension approved"),
    "extension_refused": N_("Extension refused"),
    "escalation": N_("Escalation"),
    "escalation_ack": N_("Escalation acknowledged"),
    "assigned": N_("Handler put in charge"),
    "contact": N_("Contact with the caller"),
    "unit_note": N_("Unit's note"),
    "merge_dismissed": N_("Not the same request as another ticket"),
    "merged_in": N_("A duplicate merged in"),
    "duplicate_suggested": N_("Possible duplicates found at intake"),
    "open311_submission": N_("Filed through Open311"),
}

# What each action's success says (``?done=``).
DONE = {
    "sign": N_("Signed for. The reply clock is running."),
    "start": N_("Work started."),
    "assign": N_("The person in charge is set."),
    "contact": N_("Contact logged."),
    "note": N_("Note added."),
    "reply": N_("Reply sent to the centre for review."),
    "return": N_("Returned to the centre with your reason."),
    "extension": N_("Extension asked. The centre decides; the decision shows here."),
    "ack": N_("Escalation acknowledged."),
}


def duration(span: timedelta) -> str:
    """A span in days and hours (or hours and minutes when under a day), in words."""
    minutes = int(abs(span).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return _("%(days)sd %(hours)sh", days=days, hours=hours)
    if hours:
        return _("%(hours)sh %(minutes)smin", hours=hours, minutes=mins)
    return _("%(minutes)smin", minutes=mins)


def time_left(span: timedelta) -> str:
    if span.total_seconds() < 0:
        return _("%(time)s overdue", time=duration(span))
    return _("%(time)s left", time=duration(span))


LABELS: dict[str, Any] = {
    "status_names": STATUS_NAMES,
    "assignment_status_names": ASSIGNMENT_STATUS_NAMES,
    "assignment_role_names": ASSIGNMENT_ROLE_NAMES,
    "clock_names": CLOCK_NAMES,
    "colour_names": COLOUR_NAMES,
    "escalation_names": ESCALATION_NAMES,
    "extension_names": EXTENSION_NAMES,
    "return_reason_names": RETURN_REASON_NAMES,
    "contact_method_names": CONTACT_METHOD_NAMES,
    "unit_names": UNIT_NAMES,
    "event_names": EVENT_NAMES,
    "time_left": time_left,
}


# ---------------------------------------------------------------- the page


def _centre_links(
    person: Person, ticket_id: int, status: Status, pending: list[ExtensionRequest]
) -> list[tuple[str, str]]:
    """The queues' pages for the steps the ticket's state allows, to the roles the API lets
    take them: an operator dispatches, reviews replies, calls back and merges too; returns
    and extensions are for the dispatchers."""
    intake, dispatching = person.role in auth.INTAKE, person.role in auth.DISPATCH
    allowed = set(allowed_actions(status)) if intake else set()
    links = []
    if Action.dispatch in allowed:
        links.append((f"/dispatch/{ticket_id}", N_("Dispatch")))
    elif Action.redispatch in allowed:
        links.append((f"/dispatch/{ticket_id}", N_("Re-dispatch")))
    if Action.uphold_return in allowed and dispatching:
        links.append((f"/queues/returns/{ticket_id}", N_("Review the return")))
    if Action.approve_reply in allowed:
        links.append((f"/queues/replies/{ticket_id}", N_("Review the reply")))
    if Action.callback in allowed:
        links.append((f"/queues/callbacks/{ticket_id}", N_("Record the callback")))
    if dispatching:
        links += [(f"/queues/extensions/{e.id}", N_("Decide the extension")) for e in pending]
    if Action.merge in allowed:
        links.append((f"/queues/merge/{ticket_id}", N_("Merge candidates")))
    return links


def mine(person: Person, assignment: Assignment) -> bool:
    """The assignments the reader acts on here: their unit's, as a handler."""
    return person.role == Role.handler and assignment.unit_id == person.user.unit_id


def unconfirmed_clocks(
    request: Request, session: Session
) -> Callable[[Assignment, list[ClockState]], frozenset[Clock]]:
    """The clocks of an assignment counted on a working calendar no administrator has
    confirmed: working-day clocks whose deadline falls in such a year (a 24/7 clock does
    not depend on the calendar). They are counted all the same, from the best data there
    is; their badges say so."""
    confirmed = work_calendar.confirmed_years(session)
    policies = {saved_id(p): p for p in reference.snapshot(session).policies}
    tz = request.app.state.settings.tz

    def flagged(assignment: Assignment, clocks: list[ClockState]) -> frozenset[Clock]:
        policy = policies.get(assignment.policy_id)
        return frozenset(
            c.clock
            for c in clocks
            if policy is not None
            and getattr(policy, f"{c.clock.value}_unit") == ClockUnit.workdays
            and work_calendar.unconfirmed(c.due_at, confirmed, tz)
        )

    return flagged


def ticket_context(
    request: Request, session: Session, person: Person, *, ticket_id: int, now: Any
) -> dict[str, Any]:
    user = person.user
    ticket = access.visible_ticket(session, user=user, ticket_id=ticket_id)
    rows = assignments_of(session, ticket_id=saved_id(ticket))
    clocks = unit_work.clock_states(session, rows, now=now)
    reads = assignment_reads(session, rows)
    masked = ticket.confidential and not privacy.sees_caller_identity(user)
    assignees = {
        u.id: u
        for u in (session.get(User, a.assignee_id) for a in rows if a.assignee_id is not None)
        if u is not None
    }
    ours = [a for a in rows if mine(person, a)]
    colleagues = (
        accounts.list_users(session, role=Role.handler, unit_id=user.unit_id, active=True)
        if ours
        else []
    )
    extensions = review.extensions(session, ticket_id=saved_id(ticket))
    steps = escalation_visibility.escalations_for_ticket(
        session, ticket_id=saved_id(ticket), user=user
    )
    files = attachments.attachments_of(session, ticket_id=saved_id(ticket))
    photos = citizen_photos.photos_of(session, ticket_id=saved_id(ticket))
    view = ticket_read(ticket, user)
    unconfirmed = unconfirmed_clocks(request, session)
    # The caller's own words stay on the page even where an operator wrote the description;
    # a call an operator took shows both speakers' turns (masked as the fields are).
    words = call_intake.shown_words(
        session, ticket_id=saved_id(ticket), mask_names=[ticket.caller_name] if masked else None
    )
    return {
        **LABELS,
        "ticket": view,
        "caller_masked": masked,
        "transcripts": words,
        "assignments": [
            {
                "read": r,
                "row": a,
                "clocks": clocks[saved_id(a)],
                "unconfirmed": unconfirmed(a, clocks[saved_id(a)]),
                "reply": privacy.mask_text(r.reply, names=[ticket.caller_name])
                if masked and r.reply
                else r.reply,
                "assignee": assignees.get(a.assignee_id) if a.assignee_id else None,
                "mine": mine(person, a),
                "files": [f for f in files if f.assignment_id == a.id],
            }
            for a, r in zip(rows, reads, strict=True)
        ],
        "live_mine": [a for a in ours if a.status in LIVE],
        "colleagues": colleagues,
        "events": list(
            reversed(event_reads(tickets.events_of(session, saved_id(ticket)), ticket, user))
        ),
        "escalations": steps,
        "extensions": extensions,
        "attachments": files,
        "citizen_photos": photos,
        "links": _centre_links(
            person,
            saved_id(ticket),
            ticket.status,
            [e for e in extensions if e.status == ExtensionStatus.pending],
        ),
        "may_ack": {s.id for s in steps if s.acknowledged_at is None and _may_ack(user, s)},
        "reasons": list(RETURN_REASON_NAMES),
        "methods": list(handling.CONTACT_METHODS),
        "limits": attachments.Limits.of(request.app.state.settings),
        "notice": None,
        "error": None,
        "form": {},
    }


def _may_ack(user: User, step: Any) -> bool:
    # The service's own rule, so that the button shows exactly where the acknowledgement
    # would be accepted (a public name for it is proposed to dispatch's owner).
    return bool(escalation_visibility._may_acknowledge(user, step))
