"""What every admin page shares: the admin-only guard, a domain operation tried inside a
savepoint (a refusal leaves nothing half-written and is still audited), the notice shown
after a post (post/redirect/get with a notice key), and the domain's refusals in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session

from accounts.models import Role
from core.clock import Clock
from core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, record, require

ADMIN = require(Role.admin)
POSTED = [Depends(csrf_form)]

T = TypeVar("T")
Text = Annotated[str, Form(max_length=1000)]  # a form's one-line field

# Shown after a successful post (?done=<key>): each a message id.
NOTICES = {
    "unit_created": N_("Unit created."),
    "unit_saved": N_("Unit saved."),
    "user_deactivated": N_("Account deactivated: it can no longer sign in."),
    "user_reactivated": N_("Account reactivated: it can sign in again."),
    "user_saved": N_("Role and unit saved."),
    "user_unlocked": N_("Account unlocked: it can sign in at once."),
    "rule_saved": N_("Rule saved: new tickets are dispatched by it from now on."),
    "rule_enabled": N_("Rule enabled."),
    "rule_disabled": N_("Rule disabled: it no longer dispatches tickets."),
    "policy_saved": N_("SLA policy saved: it applies to dispatches from now on."),
    "policy_created": N_("SLA policy created."),
    "day_saved": N_("Calendar day saved."),
    "day_deleted": N_("Calendar day removed."),
    "days_imported": N_("Calendar days imported."),
    "prompt_replaced": N_(
        "Prompt replaced. The phone system plays it from its next start (hotline sip)."
    ),
}

# The domain's refusals that the admin pages meet most, as message ids (the others are
# said by their kind, below).
DOMAIN_MESSAGES = (
    N_("this is the last active administrator; appoint another one first"),
    N_("a handler must belong to a unit: give unit_code"),
)
# Any other refusal, by its kind, in the reader's words; the domain's own sentence follows as
# the detail. The ticket pages' refusals (web.pages.labels.refusal) speak of a ticket that
# moved on, which is not what a taken username or extension means; an administrator needs
# to know which value was refused, and that sentence is the only one that names it.
KIND_REFUSALS: tuple[tuple[type[DomainError], str], ...] = (
    (InvalidInput, N_("Not accepted: %(detail)s")),
    (Conflict, N_("This conflicts with what is stored now: %(detail)s")),
    (NotFound, N_("Not found: %(detail)s")),
    (Forbidden, N_("Your role may not do this.")),
)


def notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(NOTICES[key]) if key in NOTICES else None


def done(path: str, key: str, **params: str) -> RedirectResponse:
    """Back to ``path`` with the notice ``key`` (post/redirect/get: a reload posts nothing)."""
    query = urlencode({**params, "done": key})
    return RedirectResponse(f"{path}?{query}", status_code=303)


def words(exc: DomainError) -> str:
    """A domain refusal for the person: one of ``DOMAIN_MESSAGES`` translated, any other
    said by its kind with the domain's sentence as the detail. Nothing was changed either
    way: ``attempt`` rolled the step back."""
    if exc.message in DOMAIN_MESSAGES:
        return _(exc.message)
    for kind, message in KIND_REFUSALS:
        if isinstance(exc, kind):
            return _(message, detail=exc.message)
    return _("Refused: %(detail)s", detail=exc.message)


def field_errors(exc: DomainError) -> dict[str, str]:
    """The refusal's problems by field (``errors: [{field, message}]`` or ``field=``)."""
    found: dict[str, str] = {}
    for problem in exc.details.get("errors") or []:
        if isinstance(problem, dict) and "field" in problem:
            field = str(problem["field"])
            found.setdefault(field, _(str(problem.get("message", ""))))
    if isinstance(exc.details.get("field"), str):
        found.setdefault(exc.details["field"], words(exc))
    return found


def attempt(
    session: Session,
    request: Request,
    clock: Clock,
    person: Person,
    operation: Callable[[], T],
    *,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[T | None, DomainError | None]:
    """Run ``operation`` in a savepoint and audit it, success or refusal."""
    try:
        with session.begin_nested():
            result = operation()
    except DomainError as exc:
        record(
            session,
            request,
            clock,
            action=action,
            person=person,
            target=target,
            outcome="refused",
            detail={**(detail or {}), "reason": exc.message[:500]},
        )
        return None, exc
    record(session, request, clock, action=action, person=person, target=target, detail=detail)
    return result, None


def is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))
