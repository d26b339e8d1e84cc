"""Linked escalations: who sees each step (lead and co-handling units, merged tickets, the
addressees) and who may acknowledge it."""

from __future__ import annotations

import pytest

from accounts.models import Role, User
from core.errors import NotFound
from dispatch.escalation_visibility import (
    acknowledge,
    escalations_for_ticket,
    escalations_for_user,
)
from dispatch.models import (
    AssignmentRole,
    Escalation,
    EscalationKind,
)
from tests.dispatch.escalation_scene import (
    CHASE,
    LEAD,
    WARN,
    fired,
    make_assignment,
    make_ticket,
    make_user,
    settings_for,
    swept,
)
from tickets import service as tickets

# ---------------------------------------------------------------- linked visibility


def test_given_lead_and_co_units_when_either_escalates_then_both_see_every_step(
    session, scene, factory, clock, tmp_path
):
    co = make_assignment(
        session, ticket=scene.ticket, unit=scene.other, policy=scene.policy, role=AssignmentRole.co
    )
    clock.set(CHASE)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    steps = escalations_for_ticket(session, ticket_id=scene.ticket.id)
    assert sorted((e.assignment_id, e.level) for e in steps) == sorted(
        [(scene.assignment.id, 1), (scene.assignment.id, 2), (co.id, 1), (co.id, 2)]
    )


def test_given_merged_tickets_when_either_escalates_then_parent_and_children_see_it(
    session, scene, factory, clock, tmp_path
):
    child = make_ticket(session, description="同一路灯又坏了")
    child_assignment = make_assignment(session, ticket=child, unit=scene.other, policy=scene.policy)
    clock.set(WARN)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    tickets.merge(
        session, child=child, parent=scene.ticket, actor="dispatcher:test", now=clock.now()
    )
    session.flush()
    expected = {scene.assignment.id, child_assignment.id}
    assert {
        e.assignment_id for e in escalations_for_ticket(session, ticket_id=scene.ticket.id)
    } == expected
    assert {
        e.assignment_id for e in escalations_for_ticket(session, ticket_id=child.id)
    } == expected
    unrelated = make_ticket(session, description="别的事")
    assert escalations_for_ticket(session, ticket_id=unrelated.id) == []
    with pytest.raises(NotFound):
        escalations_for_ticket(session, ticket_id=10**9)


def test_given_another_units_duplicate_merged_in_when_a_handler_lists_then_its_steps_stay_hidden(
    session, scene, factory, clock, tmp_path
):
    child = make_ticket(session, description="同一路灯又坏了")
    child_assignment = make_assignment(session, ticket=child, unit=scene.other, policy=scene.policy)
    clock.set(WARN)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    tickets.merge(
        session, child=child, parent=scene.ticket, actor="dispatcher:test", now=clock.now()
    )
    session.flush()

    def seen(user: User, ticket_id: int) -> set[int | None]:
        steps = escalations_for_ticket(session, ticket_id=ticket_id, user=user)
        return {e.assignment_id for e in steps}

    assert seen(scene.handler, scene.ticket.id) == {scene.assignment.id}
    assert seen(scene.stranger, child.id) == {child_assignment.id}
    both = {scene.assignment.id, child_assignment.id}
    assert seen(scene.supervisors[0], scene.ticket.id) == both
    assert seen(scene.supervisors[0], child.id) == both


def test_given_fired_steps_when_listed_per_user_then_each_sees_their_unit_or_their_address(
    session, scene, factory, clock, tmp_path
):
    clock.set(LEAD)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))

    def kinds(user: User, **kwargs) -> list[EscalationKind]:
        return [e.kind for e in escalations_for_user(session, user=user, **kwargs)]

    newest_first = [
        EscalationKind.leadership,
        EscalationKind.supervision,
        EscalationKind.chase,
        EscalationKind.warning,
    ]
    assert kinds(scene.handler) == newest_first
    assert kinds(scene.supervisors[0]) == [EscalationKind.leadership]
    assert kinds(scene.stranger) == []
    assert kinds(scene.operator) == []
    assert kinds(scene.handler, limit=2) == newest_first[:2]
    top = escalations_for_user(session, user=scene.handler)[0]
    acknowledge(session, escalation_id=top.id, user=scene.handler, now=clock.now())
    assert kinds(scene.handler, unacknowledged_only=True) == newest_first[1:]


# ---------------------------------------------------------------- acknowledgement


@pytest.fixture
def chase(session, scene, factory, clock, tmp_path) -> Escalation:
    clock.set(CHASE)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    return fired(session, scene.assignment)[-1]


def test_given_chase_when_unit_handler_acknowledges_then_it_is_recorded_once(
    session, scene, chase, clock
):
    clock.advance(minutes=5)
    first = clock.now()
    acked = acknowledge(session, escalation_id=chase.id, user=scene.handler, now=first)
    assert (acked.acknowledged_at, acked.acknowledged_by_id) == (first, scene.handler.id)
    clock.advance(hours=1)
    again = acknowledge(session, escalation_id=chase.id, user=scene.supervisors[0], now=clock.now())
    assert (again.acknowledged_at, again.acknowledged_by_id) == (first, scene.handler.id)
    acks = [
        e
        for e in tickets.events_of(session, scene.ticket.id)
        if e.data.get("kind") == "escalation_ack"
    ]
    assert len(acks) == 1
    assert acks[0].actor == "handler:urban.handler"
    assert acks[0].data["escalation_id"] == chase.id


@pytest.mark.parametrize("who", ["head", "supervisor", "admin"])
def test_given_chase_when_head_or_centre_staff_acknowledge_then_it_is_allowed(
    session, scene, chase, clock, who
):
    user = {
        "head": scene.head,
        "supervisor": scene.supervisors[1],
        "admin": make_user(session, "root", Role.admin),
    }[who]
    acked = acknowledge(session, escalation_id=chase.id, user=user, now=clock.now())
    assert acked.acknowledged_by_id == user.id


def test_given_chase_when_outsiders_acknowledge_then_it_is_missing_to_them_and_nothing_changes(
    session, scene, chase, clock
):
    inactive = make_user(session, "urban.left", Role.handler, scene.unit, active=False)
    with pytest.raises(NotFound) as missing:
        acknowledge(session, escalation_id=10**9, user=scene.handler, now=clock.now())
    for user in (scene.stranger, scene.operator, inactive):
        with pytest.raises(NotFound) as refused:
            acknowledge(session, escalation_id=chase.id, user=user, now=clock.now())
        # answered alike: an outsider cannot tell an existing id from a missing one
        assert type(refused.value) is type(missing.value)
        assert str(refused.value).replace(str(chase.id), "N") == str(missing.value).replace(
            str(10**9), "N"
        )
    session.refresh(chase)
    assert chase.acknowledged_at is None


def test_given_a_recipient_outside_the_unit_when_acknowledging_then_it_is_allowed(
    session, scene, factory, clock, tmp_path
):
    clock.set(LEAD)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    leadership = fired(session, scene.assignment)[-1]
    outsider = make_user(session, "former.supervisor", Role.operator)
    leadership.recipients = [*leadership.recipients, outsider.id]
    session.add(leadership)
    session.flush()
    acked = acknowledge(session, escalation_id=leadership.id, user=outsider, now=clock.now())
    assert acked.acknowledged_by_id == outsider.id
