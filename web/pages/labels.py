"""The names of the platform's states and roles, as message ids (translated where shown), and
the domain's refusals in the reader's words."""

from __future__ import annotations

from core.errors import Conflict, DomainError, Forbidden, IllegalTransition, InvalidInput, NotFound
from dispatch.sla import NoWorkingDays
from tickets.lifecycle import Action
from tickets.models import Satisfaction, Status
from web.pages.i18n import N_, _

STATUS_NAMES = {
    Status.intake: N_("Intake"),
    Status.pending_dispatch: N_("Awaiting dispatch"),
    Status.dispatched: N_("Dispatched"),
    Status.signed: N_("Signed for"),
    Status.in_progress: N_("In progress"),
    Status.replied: N_("Replied"),
    Status.reviewed: N_("Reviewed"),
    Status.returned: N_("Returned"),
    Status.reopened: N_("Reopened"),
    Status.merged: N_("Merged"),
    Status.closed: N_("Closed"),
    Status.archived: N_("Archived"),
}
ROLE_NAMES = {
    "operator": N_("Operator"),
    "dispatcher": N_("Dispatcher"),
    "supervisor": N_("Supervisor"),
    "handler": N_("Department handler"),
    "admin": N_("Administrator"),
}

SATISFACTION_NAMES = {
    Satisfaction.satisfied: N_("Satisfied"),
    Satisfaction.basically_satisfied: N_("Basically satisfied"),
    Satisfaction.dissatisfied: N_("Dissatisfied"),
}
# Reasons the platform itself writes on a ticket's events (people's reasons are their own
# words and are shown as written).
SYSTEM_REASONS = {
    "no rule routed the ticket: manual dispatch queue": N_(
        "No rule was sure enough: waiting for a dispatcher"
    ),
    "no rule routed the ticket: fallback unit": N_("No rule fired: sent to the fallback unit"),
    "call transcript (live)": N_("Transcript of the call (live)"),
    "call transcript (offline)": N_("Transcript of the call (from the recording)"),
}


def reason_text(reason: str | None) -> str | None:
    """A system reason as a message id; anything else as written."""
    if reason is None:
        return None
    if reason.startswith("automatic dispatch failed: "):
        return N_("Automatic dispatch failed: waiting for a dispatcher")
    return SYSTEM_REASONS.get(reason, reason)


# What a person was trying to do when the lifecycle said no (tickets.lifecycle.Action).
ACTION_NAMES = {
    Action.create: N_("Creating the ticket"),
    Action.update: N_("Editing the ticket"),
    Action.close_at_intake: N_("The direct answer"),
    Action.queue: N_("Queueing for a dispatcher"),
    Action.dispatch: N_("Dispatch"),
    Action.redispatch: N_("Redispatch"),
    Action.sign: N_("Signing for the ticket"),
    Action.start: N_("Starting the work"),
    Action.reply: N_("The reply"),
    Action.approve_reply: N_("Approving the reply"),
    Action.send_back: N_("Sending the reply back"),
    Action.callback: N_("The callback"),
    Action.close: N_("Closing the ticket"),
    Action.return_: N_("The return"),
    Action.uphold_return: N_("Refusing the return"),
    Action.merge: N_("The merge"),
    Action.close_merged: N_("Closing with the merged ticket"),
    Action.reopen: N_("Reopening"),
    Action.archive: N_("Archiving"),
    Action.note: N_("The note"),
}
# Input refusals the services explain by the field they name (the details' key).
INPUT_REFUSALS = {
    "assignee_id": N_("The person in charge must be an active handler of the unit."),
    "reason_code": N_("Choose one of the listed reasons."),
    "method": N_("Choose how the caller was contacted."),
}


def refusal(exc: DomainError) -> str:
    """A domain refusal in the reader's words. The services explain themselves in English
    for developers and logs; a page shows only message ids, chosen by the error's kind and
    the details it carries, so a refusal is never raw developer text nor untranslated."""
    if isinstance(exc, IllegalTransition):
        action, status = exc.details.get("action"), exc.details.get("status")
        if action in {a.value for a in Action} and status in {s.value for s in Status}:
            return _(
                "%(action)s is not possible while the ticket is “%(status)s”.",
                action=_(ACTION_NAMES[Action(action)]),
                status=_(STATUS_NAMES[Status(status)]),
            )
        return _("This step is not possible in the ticket's present state.")
    if isinstance(exc, Conflict):
        return _(
            "This step is no longer possible: the ticket has moved on. "
            "The page shows where it stands now."
        )
    if isinstance(exc, NoWorkingDays):
        return _("The working calendar has no working day in reach for this deadline.")
    if isinstance(exc, InvalidInput):
        for key, message in INPUT_REFUSALS.items():
            if key in exc.details:
                return _(message)
        return _("The service could not take what was sent. Nothing was changed.")
    if isinstance(exc, NotFound):
        return _("It is not there any more, or it is not yours to see.")
    if isinstance(exc, Forbidden):
        return _("Your role may not do this.")
    return _("This step could not be taken.")
