"""The names of the platform's states and roles, as message ids (translated where shown)."""

from __future__ import annotations

from tickets.models import Status
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
