from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from accounts import privacy
from accounts import service as accounts
from accounts.models import Role, User
from core.db import saved_id
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import access
from dispatch import units as unit_service
from dispatch.models import Assignment, AssignmentRole, SlaPolicy, Unit, UnitLevel
from dispatch.units import UnitCreate, UnitUpdate
from tickets.intake import create_ticket
from tickets.models import Ticket, TicketCreate
from tickets.search import TicketFilters, list_tickets


@pytest.fixture
def units(session):
    centre = unit_service.create_unit(
        session, data=UnitCreate(code="CENTRE", name="中心", level=UnitLevel.centre)
    )
    water = unit_service.create_unit(
        session, data=UnitCreate(code="WATER", name="自来水公司", level=UnitLevel.enterprise)
    )
    yy = unit_service.create_unit(
        session, data=UnitCreate(code="YY", name="榆阳区", level=UnitLevel.district)
    )
    return {"CENTRE": centre, "WATER": water, "YY": yy}


def test_given_new_user_when_created_then_only_the_token_hash_is_stored(session, clock, units):
    user, token = unit_service.create_user(
        session,
        username="wang",
        display_name="王芳",
        role=Role.operator,
        unit_code="CENTRE",
        now=clock.now(),
    )
    assert len(token) >= 40
    assert user.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in user.model_dump().values()
    assert user.unit_id == units["CENTRE"].id
    assert access.authenticate(session, token=token).id == user.id


def test_given_two_users_when_created_then_their_tokens_differ(session, clock, units):
    _, first = unit_service.create_user(
        session, username="a", display_name="A", role=Role.admin, now=clock.now()
    )
    _, second = unit_service.create_user(
        session, username="b", display_name="B", role=Role.admin, now=clock.now()
    )
    assert first != second


def test_given_handler_without_unit_when_created_then_invalid(session, clock, units):
    with pytest.raises(InvalidInput, match="unit"):
        unit_service.create_user(
            session, username="h", display_name="H", role=Role.handler, now=clock.now()
        )


def test_given_unknown_unit_code_when_user_created_then_invalid(session, clock, units):
    with pytest.raises(InvalidInput, match="NOPE"):
        unit_service.create_user(
            session,
            username="h",
            display_name="H",
            role=Role.handler,
            unit_code="NOPE",
            now=clock.now(),
        )


def test_given_taken_username_when_user_created_then_conflict(session, clock, units):
    unit_service.create_user(
        session, username="li", display_name="李", role=Role.dispatcher, now=clock.now()
    )
    with pytest.raises(Conflict):
        unit_service.create_user(
            session, username="li", display_name="李二", role=Role.operator, now=clock.now()
        )


@pytest.mark.parametrize("token", ["", "not-a-token", "x" * 43])
def test_given_unknown_token_when_authenticating_then_nobody(session, clock, units, token):
    unit_service.create_user(
        session, username="a", display_name="A", role=Role.admin, now=clock.now()
    )
    assert access.authenticate(session, token=token) is None


def test_given_inactive_user_when_authenticating_then_refused(session, clock, units):
    unit_service.create_user(
        session, username="a", display_name="A", role=Role.admin, now=clock.now()
    )
    user, token = unit_service.create_user(
        session, username="op", display_name="O", role=Role.operator, now=clock.now()
    )
    accounts.deactivate_user(session, user_id=user.id)
    assert access.authenticate(session, token=token) is None


def test_given_rotated_token_when_authenticating_then_only_the_new_token_works(
    session, clock, units
):
    user, old = unit_service.create_user(
        session, username="op", display_name="O", role=Role.operator, now=clock.now()
    )
    _, new = accounts.rotate_token(session, user_id=user.id)
    assert access.authenticate(session, token=old) is None
    assert access.authenticate(session, token=new).id == user.id


def test_given_last_admin_when_deactivated_then_conflict(session, clock, units):
    admin, _ = unit_service.create_user(
        session, username="root", display_name="R", role=Role.admin, now=clock.now()
    )
    with pytest.raises(Conflict, match="last active administrator"):
        accounts.deactivate_user(session, user_id=admin.id)


def test_given_users_when_listed_then_filtered_by_role_unit_and_state(session, clock, units):
    now = clock.now()
    unit_service.create_user(
        session, username="w1", display_name="W1", role=Role.handler, unit_code="WATER", now=now
    )
    w2, _ = unit_service.create_user(
        session, username="w2", display_name="W2", role=Role.handler, unit_code="WATER", now=now
    )
    unit_service.create_user(
        session, username="y1", display_name="Y1", role=Role.handler, unit_code="YY", now=now
    )
    unit_service.create_user(session, username="op", display_name="O", role=Role.operator, now=now)
    accounts.deactivate_user(session, user_id=w2.id)
    assert [u.username for u in unit_service.list_users(session, role=Role.handler)] == [
        "w1",
        "w2",
        "y1",
    ]
    assert [
        u.username for u in unit_service.list_users(session, unit_code="WATER", active=True)
    ] == ["w1"]
    with pytest.raises(NotFound):
        unit_service.list_users(session, unit_code="NOPE")


def test_given_unit_tree_when_parent_made_a_descendant_then_invalid(session, units):
    unit_service.create_unit(
        session,
        data=UnitCreate(code="YY-S1", name="街道", parent_code="YY", level=UnitLevel.street),
    )
    with pytest.raises(InvalidInput, match="cycle"):
        unit_service.update_unit(session, code="YY", changes=UnitUpdate(parent_code="YY-S1"))
    with pytest.raises(InvalidInput, match="cycle"):
        unit_service.update_unit(session, code="YY", changes=UnitUpdate(parent_code="YY"))


def test_given_duplicate_unit_code_when_created_then_conflict(session, units):
    with pytest.raises(Conflict):
        unit_service.create_unit(
            session, data=UnitCreate(code="WATER", name="x", level=UnitLevel.city)
        )


def test_given_unknown_parent_when_unit_created_then_invalid(session, units):
    with pytest.raises(InvalidInput, match="parent_code"):
        unit_service.create_unit(
            session, data=UnitCreate(code="S", name="x", parent_code="NOPE", level=UnitLevel.street)
        )


def _assign(session, ticket: Ticket, unit: Unit, now) -> None:
    policy = session.scalars(select(SlaPolicy)).first()
    if policy is None:
        policy = SlaPolicy(name="general")
        session.add(policy)
        session.flush()
    session.add(
        Assignment(
            ticket_id=saved_id(ticket),
            unit_id=saved_id(unit),
            role=AssignmentRole.lead,
            policy_id=policy.id,
            dispatched_by="test",
            started_at=now,
            sign_due_at=now,
            reply_due_at=now,
            close_due_at=now,
        )
    )
    session.flush()


def test_given_handler_when_listing_then_only_tickets_assigned_to_their_unit(session, clock, units):
    now = clock.now()
    handler, _ = unit_service.create_user(
        session, username="w", display_name="W", role=Role.handler, unit_code="WATER", now=now
    )
    operator, _ = unit_service.create_user(
        session, username="o", display_name="O", role=Role.operator, now=now
    )
    ours, theirs, unassigned = (
        create_ticket(session, data=TicketCreate(description=d), actor="t", now=now).ticket
        for d in ("停水", "路灯", "咨询")
    )
    _assign(session, ours, units["WATER"], now)
    _assign(session, theirs, units["YY"], now)

    def visible(user: User) -> set[int]:
        rows, _ = list_tickets(
            session, filters=TicketFilters(), restrict=access.visible_ticket_clause(user)
        )
        return {saved_id(t) for t in rows}

    assert visible(handler) == {ours.id}
    assert visible(operator) == {ours.id, theirs.id, unassigned.id}
    assert access.visible_ticket(session, user=handler, number=ours.number).id == ours.id
    with pytest.raises(NotFound):
        access.visible_ticket(session, user=handler, ticket_id=theirs.id)


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138-1234-5678", "138****5678"),
        ("010-12345678", "010****5678"),
        ("12345", "1***5"),
    ],
)
def test_given_phone_when_masked_then_middle_digits_hidden(phone, masked):
    assert privacy.mask_phone(phone) == masked


@pytest.mark.parametrize(("name", "masked"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("张", "*")])
def test_given_name_when_masked_then_only_first_character_kept(name, masked):
    assert privacy.mask_name(name) == masked
