"""The names of the platform's states and roles, as message ids (translated where shown)."""

from __future__ import annotations

from tickets.models import Satisfaction, Status
from web.pages.i18n import N_

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
