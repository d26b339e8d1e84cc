"""Admin: SLA policies — the time limits to sign, reply and close, and the escalation chain.

GET  /admin/policies          the policies and their limits (?new=1: a form for a new one)
POST /admin/policies          a new policy
GET  /admin/policies/{id}     a policy's form
POST /admin/policies/{id}     save it (new deadlines apply to dispatches from now on)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from core.errors import NotFound
from dispatch import policies
from dispatch.models import ClockUnit, EscalationKind, SlaPolicy
from dispatch.policies import SlaPolicyCreate
from web.deps import MAX_ID, ClockDep, SessionDep
from web.pages.admin_common import ADMIN, POSTED, Text, attempt, done, notice, words
from web.pages.admin_rules import REQUEST_TYPE_NAMES, URGENCY_NAMES
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

UNIT_NAMES = {
    ClockUnit.hours: N_("hours (round the clock)"),
    ClockUnit.workdays: N_("working days"),
}
KIND_NAMES = {
    EscalationKind.warning: N_("warning"),
    EscalationKind.chase: N_("chase (催办)"),
    EscalationKind.supervision: N_("supervision (督办)"),
    EscalationKind.leadership: N_("leadership (领导督办)"),
}
POLICY_HINTS = {
    "name": N_("Required, at most 64 characters."),
    "category_prefix": N_("2–12 digits of the category code, or empty for any."),
    "sign_limit": N_("A number above 0, at most 1000."),
    "reply_limit": N_("A number above 0, at most 1000."),
    "close_limit": N_("A number above 0, at most 1000."),
    "warn_ratio": N_("A fraction between 0 and 1, e.g. 0.75."),
    "chain": N_(
        "One step per line: warning, or chase / supervision / leadership and the hours "
        "after the deadline, e.g. \u201csupervision 24\u201d. Empty: the default chain."
    ),
}
# ---------------------------------------------------------------- SLA policies


def _chain_text(chain: list[dict[str, Any]]) -> str:
    lines = []
    for step in chain:
        hours = step.get("after_breach_hours")
        lines.append(f"{step['kind']} {hours:g}" if hours is not None else str(step["kind"]))
    return "\n".join(lines)


def _chain(text: str) -> list[dict[str, Any]] | str:
    steps: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        step: dict[str, Any] = {"kind": parts[0]}
        if len(parts) > 1:
            try:
                step["after_breach_hours"] = float(parts[1])
            except ValueError:
                return line
        steps.append(step)
    return steps


def _policy_form(policy: SlaPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {"sign_unit": "hours", "reply_unit": "workdays", "close_unit": "workdays"}
    return {
        **policy.model_dump(exclude={"chain"}),
        "chain": _chain_text(policy.chain),
    }


def _policies_page(
    request: Request,
    session: Any,
    *,
    policy: SlaPolicy | None = None,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        "policies": policies.list_policies(session),
        "policy": policy,
        "form": form if form is not None else _policy_form(policy),
        "errors": errors or {},
        "error": error,
        "notice": notice(request),
        "clock_units": UNIT_NAMES,
        "kinds": KIND_NAMES,
        "request_types": REQUEST_TYPE_NAMES,
        "urgencies": URGENCY_NAMES,
    }
    name = "admin/policy.html" if policy is not None or form is not None else "admin/policies.html"
    return render(request, name, context, status_code=status)


@router.get("/admin/policies")
def policies_page(
    request: Request,
    session: SessionDep,
    person: Person = ADMIN,
    new: Annotated[bool, Query()] = False,
) -> Response:
    if new:
        return _policies_page(request, session, form=_policy_form(None))
    return _policies_page(request, session)


def _policy(session: Any, policy_id: int) -> SlaPolicy:
    if not 1 <= policy_id <= MAX_ID:
        raise NotFound(f"no SLA policy with id {policy_id}", policy_id=policy_id)
    return policies.get_policy(session, policy_id=policy_id)


@router.get("/admin/policies/{policy_id}")
def policy_page(
    policy_id: int, request: Request, session: SessionDep, person: Person = ADMIN
) -> Response:
    return _policies_page(request, session, policy=_policy(session, policy_id))


def _save_policy(
    request: Request,
    session: Any,
    clock: Any,
    person: Person,
    policy: SlaPolicy | None,
    form: dict[str, Any],
) -> Response:
    chain = _chain(form["chain"])
    errors: dict[str, str] = {}
    if isinstance(chain, str):
        errors["chain"] = _(POLICY_HINTS["chain"])
        chain = []
    data = {
        key: (form[key].strip() or None) if isinstance(form[key], str) else form[key]
        for key in form
        if key != "chain"
    }
    data["chain"] = chain
    data["active"] = bool(form["active"])
    try:
        valid = SlaPolicyCreate.model_validate(data)
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else "name"
            hint = POLICY_HINTS.get(field)
            errors.setdefault(field, _(hint) if hint else problem["msg"])
    if errors:
        return _policies_page(request, session, policy=policy, form=form, errors=errors, status=422)
    payload = valid.model_dump(mode="json")
    if policy is None:
        created, refused = attempt(
            session,
            request,
            clock,
            person,
            lambda: policies.create_policy(session, data=payload),
            action="admin.policy.create",
            target=f"policy:{valid.name}",
        )
    else:
        policy_id = policy.id
        created, refused = attempt(
            session,
            request,
            clock,
            person,
            lambda: policies.update_policy(session, policy_id=policy_id or 0, changes=payload),
            action="admin.policy.update",
            target=f"policy:{policy_id}",
        )
    if refused is not None or created is None:
        if policy is not None:
            session.refresh(policy)
        return _policies_page(
            request,
            session,
            policy=policy,
            form=form,
            error=words(refused) if refused else None,
            status=422,
        )
    return done(
        f"/admin/policies/{created.id}", "policy_created" if policy is None else "policy_saved"
    )


def _policy_form_fields(
    name: Text = "",
    description: Text = "",
    request_type: Text = "",
    urgency: Text = "",
    category_prefix: Text = "",
    sign_limit: Text = "",
    sign_unit: Text = "",
    reply_limit: Text = "",
    reply_unit: Text = "",
    close_limit: Text = "",
    close_unit: Text = "",
    warn_ratio: Text = "",
    chain: Annotated[str, Form(max_length=5000)] = "",
    active: Text = "",
) -> dict[str, Any]:
    """The policy form's fields, as a dependency both the create and the edit route use."""
    return {
        "name": name,
        "description": description,
        "request_type": request_type,
        "urgency": urgency,
        "category_prefix": category_prefix,
        "sign_limit": sign_limit,
        "sign_unit": sign_unit,
        "reply_limit": reply_limit,
        "reply_unit": reply_unit,
        "close_limit": close_limit,
        "close_unit": close_unit,
        "warn_ratio": warn_ratio,
        "chain": chain,
        "active": active,
    }


PolicyForm = Annotated[dict[str, Any], Depends(_policy_form_fields)]


@router.post("/admin/policies", dependencies=POSTED)
def create_policy(
    request: Request, session: SessionDep, clock: ClockDep, form: PolicyForm, person: Person = ADMIN
) -> Response:
    return _save_policy(request, session, clock, person, None, form)


@router.post("/admin/policies/{policy_id}", dependencies=POSTED)
def update_policy(
    policy_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    form: PolicyForm,
    person: Person = ADMIN,
) -> Response:
    return _save_policy(request, session, clock, person, _policy(session, policy_id), form)
