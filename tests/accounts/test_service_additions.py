"""Account operations the admin pages need beyond the API's: reactivating an account and
moving it to another role or unit (accounts.service, dispatch.units), on both backends."""

from __future__ import annotations

import pytest

from accounts.models import Role
from accounts.service import (
    change_role,
    create_user,
    deactivate_user,
    get_user,
    reactivate_user,
)
from core.errors import Conflict, InvalidInput
from dispatch import units
from dispatch.models import Unit, UnitLevel


@pytest.fixture
def water(session):
    unit = Unit(code="WATER", name="自来水公司", level=UnitLevel.enterprise)
    session.add(unit)
    session.flush()
    return unit


def _user(session, clock, username, role, unit_id=None):
    made, _ = create_user(
        session,
        username=username,
        display_name=username,
        role=role,
        unit_id=unit_id,
        now=clock.now(),
    )
    return made


def test_given_deactivated_user_when_reactivated_then_active_again(session, clock):
    user = _user(session, clock, "li.na", Role.operator)
    deactivate_user(session, user_id=user.id)
    assert get_user(session, user_id=user.id).active is False
    assert reactivate_user(session, user_id=user.id).active is True


def test_given_operator_when_made_handler_of_a_unit_then_role_unit_and_headship_change(
    session, clock, water
):
    user = _user(session, clock, "li.na", Role.operator)
    moved = units.change_user_role(
        session, user_id=user.id, role=Role.handler, unit_code="WATER", is_head=True
    )
    assert (moved.role, moved.unit_id, moved.is_head) == (Role.handler, water.id, True)


def test_given_handler_without_unit_then_refused_and_unchanged(session, clock, water):
    user = _user(session, clock, "li.na", Role.handler, unit_id=water.id)
    with pytest.raises(InvalidInput, match="must belong to a unit"):
        change_role(session, user_id=user.id, role=Role.handler, unit_id=None)
    assert get_user(session, user_id=user.id).unit_id == water.id


def test_given_unknown_unit_code_then_refused(session, clock):
    user = _user(session, clock, "li.na", Role.operator)
    with pytest.raises(InvalidInput, match="NOPE"):
        units.change_user_role(session, user_id=user.id, role=Role.handler, unit_code="NOPE")


def test_given_last_active_admin_when_demoted_then_refused_until_another_exists(session, clock):
    first = _user(session, clock, "root", Role.admin)
    with pytest.raises(Conflict, match="last active administrator"):
        change_role(session, user_id=first.id, role=Role.operator, unit_id=None)
    assert get_user(session, user_id=first.id).role == Role.admin
    _user(session, clock, "root2", Role.admin)
    assert change_role(session, user_id=first.id, role=Role.operator, unit_id=None).role == (
        Role.operator
    )
