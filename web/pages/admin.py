"""The admin workspace: an overview linking each section, and the audit trail. The sections
are modules of their own: admin_units, admin_users (accounts), admin_rules (dispatch rules and
the dry run), admin_policies (SLA), admin_calendar, admin_prompts and admin_seats (operators'
SIP extensions).

GET /admin          the overview
GET /admin/audit    sign-ins, failed sign-ins and page actions, by person and action
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from accounts import audit
from accounts import service as accounts
from accounts.models import Role
from dispatch import calendar as work_calendar
from dispatch import policies, rulebook
from dispatch import units as unit_service
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages import (
    admin_calendar,
    admin_policies,
    admin_prompts,
    admin_rules,
    admin_seats,
    admin_units,
    admin_users,
    nav,
)
from web.pages.admin_common import ADMIN, is_htmx
from web.pages.i18n import N_
from web.pages.nav import NavItem
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
nav.register(NavItem("/admin", N_("Administration"), frozenset({Role.admin}), order=90))
for section in (
    admin_units.router,
    admin_users.router,
    admin_rules.router,
    admin_policies.router,
    admin_calendar.router,
    admin_prompts.router,
    admin_seats.router,
):
    router.include_router(section)

AUDIT_PAGE = 50
# The actions of the trail, as message ids (any other is shown as recorded).
ACTION_NAMES = {
    "sign_in": N_("Sign-in"),
    "sign_out": N_("Sign-out"),
    "sign_out_everywhere": N_("Sign-out everywhere"),
    "change_password": N_("Password change"),
    "admin.user.create": N_("Account created"),
    "admin.calendar.confirm": N_("Calendar year confirmed"),
    "admin.calendar.withdraw": N_("Calendar year confirmation withdrawn"),
    "admin.user.deactivate": N_("Account deactivated"),
    "admin.user.reactivate": N_("Account reactivated"),
    "admin.user.role": N_("Role or unit changed"),
    "admin.user.reset_password": N_("Password reset"),
    "admin.user.unlock": N_("Account unlocked"),
    "admin.unit.create": N_("Unit created"),
    "admin.unit.update": N_("Unit changed"),
    "admin.rule.update": N_("Rule changed"),
    "admin.rule.enable": N_("Rule switched on or off"),
    "admin.policy.create": N_("SLA policy created"),
    "admin.policy.update": N_("SLA policy changed"),
    "admin.calendar.set": N_("Calendar day set"),
    "admin.calendar.delete": N_("Calendar day removed"),
    "admin.calendar.import": N_("Calendar days imported"),
    "admin.prompt.replace": N_("Prompt replaced"),
    "admin.seat.create": N_("Seat created"),
    "admin.seat.reset_password": N_("Seat password reset"),
    "admin.seat.disable": N_("Seat disabled"),
}
OUTCOME_NAMES = {"ok": N_("done"), "refused": N_("refused"), "failed": N_("failed")}


@router.get("/admin")
def overview(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
) -> Response:
    units = unit_service.list_units(session)
    users = accounts.list_users(session)
    now = clock.now()
    rules = rulebook.list_rules(session)
    calendar = policies.load_calendar(session, tz=settings.tz)
    today = now.astimezone(settings.tz).date()
    years = [calendar.year(y) for y in (today.year, today.year + 1)]
    confirmed = work_calendar.confirmed_years(session)
    context = {
        "units_total": len(units),
        "units_active": sum(u.active for u in units),
        "users_total": len(users),
        "users_active": sum(u.active for u in users),
        "users_locked": sum(bool(u.locked_until and u.locked_until > now) for u in users),
        "rules_total": len(rules),
        "rules_enabled": sum(r.enabled for r in rules),
        "policies_active": len(policies.list_policies(session, active_only=True)),
        "years": years,
        "unknown_years": [y.year for y in years if not y.known],
        "today": today,
        "confirmed_years": confirmed,
        "to_confirm": work_calendar.years_to_confirm(today, confirmed),
    }
    return render(request, "admin/index.html", context)


@router.get("/admin/audit")
def audit_trail(
    request: Request,
    session: SessionDep,
    person: Person = ADMIN,
    who: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    who, action = who.strip(), action.strip()
    users = accounts.list_users(session)
    by_name = {u.username: u for u in users}
    unknown_person = bool(who) and who not in by_name
    entries = (
        []
        if unknown_person
        else audit.entries(
            session,
            user_id=by_name[who].id if who else None,
            action=action or None,
            limit=AUDIT_PAGE + 1,
            before_id=before,
        )
    )
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    context = {
        "entries": entries,
        "names": {u.id: u.display_name for u in users},
        "usernames": sorted(by_name),
        "who": who,
        "action": action,
        "actions": ACTION_NAMES,
        "outcomes": OUTCOME_NAMES,
        "unknown_person": unknown_person,
        "next_before": entries[-1].id if more and entries else None,
        "first_page": before is None,
    }
    block = "results" if is_htmx(request) else None
    return render(request, "admin/audit.html", context, block=block)
