"""Admin: units (承办单位) and their hierarchy.

GET  /admin/units            the unit tree, and a form for a new unit
POST /admin/units            create a unit
GET  /admin/units/{code}     a unit's form, the units under it and its people
POST /admin/units/{code}     save it
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from core.db import saved_id
from dispatch import units as unit_service
from dispatch.models import Unit, UnitLevel
from dispatch.units import UnitCreate, UnitUpdate
from web.api.schemas import UnitNode, unit_tree
from web.deps import ClockDep, SessionDep
from web.pages.admin_common import (
    ADMIN,
    POSTED,
    Text,
    attempt,
    done,
    field_errors,
    notice,
    words,
)
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

LEVEL_NAMES = {
    UnitLevel.centre: N_("12345 centre"),
    UnitLevel.city: N_("City department"),
    UnitLevel.district: N_("District"),
    UnitLevel.street: N_("Street / township"),
    UnitLevel.enterprise: N_("Utility / enterprise"),
}
# What a field of the unit and account forms accepts, shown when it is refused.
FIELD_HINTS = {
    "code": N_("1–32 letters, digits, '_', '-' or '.'."),
    "name": N_("Required, at most 100 characters."),
    "level": N_("Choose a level."),
    "district": N_("At most 64 characters."),
    "email": N_("An e-mail address such as name@example.gov.cn."),
    "head_email": N_("An e-mail address such as name@example.gov.cn."),
    "head_name": N_("At most 100 characters."),
    "username": N_("1–64 letters, digits, '.', '_', '-' or '@'."),
    "display_name": N_("Required, at most 100 characters."),
    "role": N_("Choose a role."),
}


def hinted(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "form"
        found.setdefault(field, _(FIELD_HINTS[field]) if field in FIELD_HINTS else error["msg"])
    return found


def blank(value: str) -> str | None:
    return value.strip() or None


# ---------------------------------------------------------------- units


LEVEL_ORDER = {level: index for index, level in enumerate(LEVEL_NAMES)}


def _flat_tree(nodes: list[UnitNode], depth: int = 0) -> list[tuple[int, UnitNode]]:
    """The tree as rows, each level's units grouped by kind (centre, departments, districts
    …), then by code."""
    rows: list[tuple[int, UnitNode]] = []
    for node in sorted(nodes, key=lambda n: (LEVEL_ORDER.get(n.level, 99), n.code)):
        rows.append((depth, node))
        rows.extend(_flat_tree(node.children, depth + 1))
    return rows


def _units_page(
    request: Request,
    session: Any,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    units = unit_service.list_units(session)
    context = {
        "rows": _flat_tree(unit_tree(units)),
        "units": units,
        "levels": LEVEL_NAMES,
        "form": form or {},
        "errors": errors or {},
        "error": error,
        "notice": notice(request),
    }
    return render(request, "admin/units.html", context, status_code=status)


@router.get("/admin/units")
def units_page(request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _units_page(request, session)


def _unit_form(
    code: str = "",
    name: str = "",
    level: str = "",
    parent_code: str = "",
    district: str = "",
    email: str = "",
    head_name: str = "",
    head_email: str = "",
    active: str = "",
) -> dict[str, Any]:
    return {
        "code": code.strip(),
        "name": name,
        "level": level,
        "parent_code": blank(parent_code),
        "district": blank(district),
        "email": blank(email),
        "head_name": blank(head_name),
        "head_email": blank(head_email),
        "active": bool(active),
    }


@router.post("/admin/units", dependencies=POSTED)
def create_unit(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    code: Text = "",
    name: Text = "",
    level: Text = "",
    parent_code: Text = "",
    district: Text = "",
    email: Text = "",
    head_name: Text = "",
    head_email: Text = "",
    active: Text = "",
) -> Response:
    form = _unit_form(
        code, name, level, parent_code, district, email, head_name, head_email, active
    )
    try:
        data = UnitCreate.model_validate(form)
    except ValidationError as exc:
        return _units_page(request, session, form=form, errors=hinted(exc), status=422)
    unit, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: unit_service.create_unit(session, data=data),
        action="admin.unit.create",
        target=f"unit:{data.code}",
    )
    if refused is not None:
        return _units_page(
            request,
            session,
            form=form,
            errors=field_errors(refused),
            error=words(refused),
            status=422,
        )
    return done("/admin/units", "unit_created")


def _unit_page(
    request: Request,
    session: Any,
    unit: Unit,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    units = unit_service.list_units(session)
    by_id = {saved_id(u): u for u in units}
    parent = by_id.get(unit.parent_id) if unit.parent_id else None
    current = {
        **unit.model_dump(exclude={"parent_id"}),
        "level": unit.level.value if isinstance(unit.level, UnitLevel) else unit.level,
        "parent_code": parent.code if parent else None,
    }
    people = unit_service.list_users(session, unit_code=unit.code)
    context = {
        "unit": unit,
        "form": form or current,
        "units": [u for u in units if u.id != unit.id],
        "children": [u for u in units if u.parent_id == unit.id],
        "people": people,
        "levels": LEVEL_NAMES,
        "errors": errors or {},
        "error": error,
        "notice": notice(request),
    }
    return render(request, "admin/unit.html", context, status_code=status)


@router.get("/admin/units/{code}")
def unit_page(code: str, request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _unit_page(request, session, unit_service.get_unit(session, code=code[:32]))


@router.post("/admin/units/{code}", dependencies=POSTED)
def update_unit(
    code: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    name: Text = "",
    level: Text = "",
    parent_code: Text = "",
    district: Text = "",
    email: Text = "",
    head_name: Text = "",
    head_email: Text = "",
    active: Text = "",
) -> Response:
    unit = unit_service.get_unit(session, code=code[:32])
    form = _unit_form(
        unit.code, name, level, parent_code, district, email, head_name, head_email, active
    )
    try:
        changes = UnitUpdate.model_validate({k: v for k, v in form.items() if k != "code"})
    except ValidationError as exc:
        return _unit_page(request, session, unit, form=form, errors=hinted(exc), status=422)
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: unit_service.update_unit(session, code=unit.code, changes=changes),
        action="admin.unit.update",
        target=f"unit:{unit.code}",
    )
    if refused is not None:
        session.refresh(unit)
        return _unit_page(
            request,
            session,
            unit,
            form=form,
            errors=field_errors(refused),
            error=words(refused),
            status=422,
        )
    return done(f"/admin/units/{unit.code}", "unit_saved")
