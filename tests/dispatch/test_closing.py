"""How a parent ticket's end reaches the tickets merged into it, and which tickets may be
merged, on SQLite and PostgreSQL."""

import pytest

from core.errors import Conflict
from dispatch import closing, handling, review, routing
from tests.factories import build_world, new_ticket
from tickets.models import Status
from tickets.service import events_of, rebuild_state, snapshot


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


def _merged_pair(session, clock, world, *, parent_text: str, child_text: str):
    parent = new_ticket(session, clock.now(), parent_text)
    child = new_ticket(session, clock.now(), child_text)
    routing.dispatch_ticket(session, ticket_id=child.id, now=clock.now())
    closing.merge(
        session,
        ticket_id=child.id,
        parent_id=parent.id,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert child.status == Status.merged
    return parent, child


def test_given_merged_child_when_parent_closes_at_intake_then_child_closes_with_the_answer(
    session, clock, world
):
    parent, child = _merged_pair(
        session, clock, world, parent_text="咨询社保缴费", child_text="我也问社保怎么缴费"
    )
    clock.advance(minutes=3)
    closing.close_at_intake(
        session,
        ticket_id=parent.id,
        answer="可在12333网站缴纳",
        actor=world.staff["operator"],
        now=clock.now(),
    )
    assert parent.status == Status.closed
    assert child.status == Status.closed and child.answer == "可在12333网站缴纳"
    session.flush()
    assert events_of(session, child.id)[-1].data["parent"] == parent.number
    assert rebuild_state(events_of(session, child.id)) == snapshot(child)


@pytest.mark.parametrize("stage", ["replied", "reviewed"])
def test_given_a_replied_or_reviewed_ticket_when_merged_then_conflict_and_it_keeps_its_reply(
    session, clock, world, stage
):
    ticket = new_ticket(session, clock.now(), "公司拖欠工资")
    lead = routing.dispatch_ticket(session, ticket_id=ticket.id, now=clock.now()).assignments[0]
    handler = world.handlers["HRSS"]
    handling.sign(session, assignment_id=lead.id, actor=handler, now=clock.now())
    handling.reply(
        session, assignment_id=lead.id, text="已责令支付", actor=handler, now=clock.now()
    )
    if stage == "reviewed":
        review.review_reply(
            session,
            ticket_id=ticket.id,
            approve=True,
            actor=world.staff["dispatcher"],
            now=clock.now(),
        )
    parent = new_ticket(session, clock.now(), "这家公司欠薪")
    with pytest.raises(Conflict):
        closing.merge(
            session,
            ticket_id=ticket.id,
            parent_id=parent.id,
            actor=world.staff["dispatcher"],
            now=clock.now(),
        )
    assert ticket.status == Status(stage) and ticket.reply == "已责令支付"
