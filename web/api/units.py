"""Units (承办单位): the centre, city departments, districts, streets and utilities."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from core.db import saved_id
from dispatch import units as unit_service
from dispatch.models import Unit
from dispatch.units import UnitCreate, UnitUpdate
from web.api import examples as ex
from web.api.schemas import UnitNode, UnitRead, unit_read, unit_tree
from web.deps import Admin, CurrentUser, SessionDep, patch_body
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/units", tags=["units"], responses=ERROR_RESPONSES)


@router.get(
    "",
    response_model=list[UnitNode] | list[UnitRead],
    summary="List the units (承办单位)",
    responses=error_responses({422: "an unknown view"}),
)
def list_units(
    session: SessionDep,
    _: CurrentUser,
    view: Literal["flat", "tree"] = "flat",
    active_only: bool = False,
) -> list[UnitNode] | list[UnitRead]:
    """`view=tree` nests each unit under its parent; `flat` lists them by code."""
    units = unit_service.list_units(session, active_only=active_only)
    if view == "tree":
        return unit_tree(units)
    by_id = {saved_id(u): u for u in units}
    return [unit_read(u, by_id) for u in units]


@router.get(
    "/{code}",
    response_model=UnitRead,
    summary="Read a unit",
    responses=error_responses({404: "no unit with this code"}),
)
def get_unit(code: str, session: SessionDep, _: CurrentUser) -> UnitRead:
    """One unit by its code, with its parent's code and name."""
    unit = unit_service.get_unit(session, code=code)
    return unit_read(unit, unit_service.units_by_id(session, [unit.parent_id]))


@router.post(
    "",
    status_code=201,
    response_model=UnitRead,
    summary="Create a unit",
    responses=error_responses(
        {
            403: "only administrators manage units",
            409: "a unit with this code exists",
            422: "a field is invalid, or the parent unit does not exist",
        }
    ),
    openapi_extra=ex.body(street=ex.UNIT_CREATE),
)
def create_unit(data: UnitCreate, session: SessionDep, _: Admin) -> UnitRead:
    """A new unit that tickets can be dispatched to; `parent_code` places it in the tree."""
    unit = unit_service.create_unit(session, data=data)
    return unit_read(unit, unit_service.units_by_id(session, [unit.parent_id]))


@router.patch(
    "/{code}",
    response_model=UnitRead,
    summary="Change a unit",
    responses=error_responses(
        {
            403: "only administrators manage units",
            404: "no unit with this code",
            422: "a field is invalid or set to null, or the parent would make a cycle",
        }
    ),
    openapi_extra=ex.body(head=ex.UNIT_UPDATE),
)
def update_unit(code: str, data: UnitUpdate, session: SessionDep, _: Admin) -> UnitRead:
    """Only the fields sent change; `active: false` stops new dispatches to the unit."""
    unit = unit_service.update_unit(session, code=code, changes=patch_body(data, Unit))
    return unit_read(unit, unit_service.units_by_id(session, [unit.parent_id]))
