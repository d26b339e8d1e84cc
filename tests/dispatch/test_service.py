"""The whole 12345 loop through dispatch (routing, handling, review, closing), on SQLite and
PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from dispatch import assignments, closing, handling, review, routing
from dispatch.models import AssignmentRole, AssignmentStatus, ClockUnit, ExtensionStatus
from hotline.intake import submit
from tests.factories import build_world, new_ticket
from tickets.models import Satisfaction, Status, TicketCreate
from tickets.service import events_of, get_ticket, rebuild_state, snapshot


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


def _dispatched(session, clock, text, **fields):
    ticket = new_ticket(session, clock.now(), text, **fields)
    result = routing.dispatch_ticket(session, ticket_id=ticket.id, now=clock.now())
    return ticket, result


def test_given_unpaid_wages_text_when_dispatched_then_hrss_leads_with_general_clocks(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "我们公司老板拖欠工资三个月了，希望帮忙讨薪")
    assert ticket.status == Status.dispatched
    assert result.rule == "欠薪"
    assert ticket.category_code == "040101"
    [lead] = result.assignments
    assert lead.unit_id == world.units["HRSS"].id and lead.role == AssignmentRole.lead
    # general: sign within 24 h; reply within 7 working days from Friday 27 Nov 2026 10:00
    assert lead.sign_due_at == clock.now() + timedelta(hours=24)
    assert lead.reply_due_at == datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
    assert lead.next_escalation_at is not None
    event = events_of(session, ticket.id)[-1]
    assert event.action == "dispatch" and event.rule == "欠薪"
    assert event.data["lead_unit"] == "HRSS"
    assert event.data["explanation"], "the dry-run explanation is stored on the event"


def test_given_rule_with_co_units_when_dispatched_then_each_unit_gets_its_own_clocks(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "我们小区从昨天开始停水，一直没人管")
    assert ticket.urgency == "urgent"
    roles = {
        (world.units["WATER"].id, AssignmentRole.lead),
        (world.units["HOUSING"].id, AssignmentRole.co),
    }
    assert {(a.unit_id, a.role) for a in result.assignments} == roles
    for a in result.assignments:
        assert a.reply_due_at == clock.now() + timedelta(hours=24)


def test_given_no_rule_fires_when_dispatched_then_ticket_waits_in_manual_queue(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "想咨询一下博物馆周一是否开放")
    assert result.queued and ticket.status == Status.pending_dispatch
    assert events_of(session, ticket.id)[-1].action == "queue"


def test_given_classification_only_rule_and_fallback_unit_when_dispatched_then_fallback_leads(
    session, clock, world
):
    ticket = new_ticket(session, clock.now(), "物业费收得太高了")
    result = routing.dispatch_ticket(
        session, ticket_id=ticket.id, now=clock.now(), fallback_unit_code="YY"
    )
    assert ticket.category_code == "020101", "the classification still applies"
    assert [a.unit_id for a in result.assignments] == [world.units["YY"].id]
    assert events_of(session, ticket.id)[-1].data["fallback"] is True


def test_given_queued_ticket_when_dispatcher_assigns_by_hand_then_dispatched(session, clock, world):
    ticket, _ = _dispatched(session, clock, "博物馆开放时间")
    result = routing.manual_dispatch(
        session,
        ticket_id=ticket.id,
        lead_unit_code="URBAN",
        actor=world.staff["dispatcher"],
        now=clock.now(),
        policy_name="consultation-3wd",
    )
    assert ticket.status == Status.dispatched
    assert result.assignments[0].dispatched_by == "dispatcher:dispatcher"


def test_full_loop_dispatch_sign_handle_reply_review_callback_close(session, clock, world):
    ticket, result = _dispatched(session, clock, "公司拖欠工资")
    lead = result.assignments[0]
    handler = world.handlers["HRSS"]
    clock.advance(hours=2)
    handling.sign(session, assignment_id=lead.id, actor=handler, now=clock.now())
    assert ticket.status == Status.signed and lead.escalation_clock == "reply"
    handling.start(session, assignment_id=lead.id, actor=handler, now=clock.now())
    clock.advance(days=2)
    handling.reply(
        session, assignment_id=lead.id, text="已责令企业三日内支付", actor=handler, now=clock.now()
    )
    assert ticket.status == Status.replied and ticket.reply == "已责令企业三日内支付"
    assert lead.next_escalation_at is None
    review.review_reply(
        session, ticket_id=ticket.id, approve=True, actor=world.staff["dispatcher"], now=clock.now()
    )
    closing.callback(
        session,
        ticket_id=ticket.id,
        satisfaction=Satisfaction.satisfied,
        actor=world.staff["operator"],
        now=clock.now(),
    )
    assert ticket.status == Status.closed and ticket.satisfaction == "satisfied"
    assert lead.status == AssignmentStatus.completed
    session.flush()
    assert rebuild_state(events_of(session, ticket.id)) == snapshot(ticket)


def test_given_reply_sent_back_then_unit_works_again_on_the_same_deadline(session, clock, world):
    ticket, result = _dispatched(session, clock, "公司拖欠工资")
    lead = result.assignments[0]
    h = world.handlers["HRSS"]
    handling.sign(session, assignment_id=lead.id, actor=h, now=clock.now())
    handling.reply(session, assignment_id=lead.id, text="已处理", actor=h, now=clock.now())
    due = lead.reply_due_at
    with pytest.raises(InvalidInput):
        review.review_reply(
            session,
            ticket_id=ticket.id,
            approve=False,
            actor=world.staff["dispatcher"],
            now=clock.now(),
        )
    review.review_reply(
        session,
        ticket_id=ticket.id,
        approve=False,
        reason="答复过于简单",
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert ticket.status == Status.in_progress
    assert lead.status == AssignmentStatus.signed and lead.reply_due_at == due
    assert lead.next_escalation_at is not None


def test_given_other_units_handler_when_signing_then_not_found(session, clock, world):
    _, result = _dispatched(session, clock, "公司拖欠工资")
    with pytest.raises(NotFound):
        handling.sign(
            session,
            assignment_id=result.assignments[0].id,
            actor=world.handlers["WATER"],
            now=clock.now(),
        )


def test_given_co_unit_when_it_signs_and_replies_then_lead_status_is_unchanged(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "小区停水三天了")
    co = next(a for a in result.assignments if a.role == AssignmentRole.co)
    handling.sign(session, assignment_id=co.id, actor=world.handlers["HOUSING"], now=clock.now())
    handling.reply(
        session,
        assignment_id=co.id,
        text="已督促物业配合",
        actor=world.handlers["HOUSING"],
        now=clock.now(),
    )
    assert ticket.status == Status.dispatched
    assert co.status == AssignmentStatus.replied
    kinds = [e.data.get("kind") for e in events_of(session, ticket.id)]
    assert "co_signed" in kinds and "co_reply" in kinds


def test_given_wrong_locality_return_when_centre_redispatches_then_history_is_kept(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "路边乱摆摊占道经营")
    old = result.assignments[0]
    handling.return_ticket(
        session,
        assignment_id=old.id,
        reason_code="wrong_mandate",
        reason="属于区级管辖",
        actor=world.handlers["URBAN"],
        now=clock.now(),
    )
    assert ticket.status == Status.returned and ticket.return_count == 1
    clock.advance(hours=3)
    redo = review.review_return(
        session,
        ticket_id=ticket.id,
        uphold=False,
        lead_unit_code="YY",
        reason="改派属地",
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert ticket.status == Status.dispatched
    new = redo.assignments[0]
    assert new.unit_id == world.units["YY"].id and new.started_at == clock.now()
    history = assignments.assignments_of(session, ticket_id=ticket.id)
    assert [a.status for a in history] == [AssignmentStatus.withdrawn, AssignmentStatus.dispatched]
    assert history[0].return_reason == "属于区级管辖"


def test_given_return_when_centre_upholds_then_unit_keeps_it_with_its_old_clocks(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "路边乱摆摊")
    a = result.assignments[0]
    h = world.handlers["URBAN"]
    handling.sign(session, assignment_id=a.id, actor=h, now=clock.now())
    handling.start(session, assignment_id=a.id, actor=h, now=clock.now())
    due = a.reply_due_at
    handling.return_ticket(
        session,
        assignment_id=a.id,
        reason_code="wrong_mandate",
        reason="不归我们管",
        actor=h,
        now=clock.now(),
    )
    assert a.next_escalation_at is None
    review.review_return(
        session,
        ticket_id=ticket.id,
        uphold=True,
        reason="派单目录明确属城管",
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert ticket.status == Status.in_progress
    assert a.status == AssignmentStatus.signed and a.reply_due_at == due
    assert a.next_escalation_at is not None


def test_given_extension_asked_before_deadline_when_approved_then_deadline_moves_with_audit(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "公司拖欠工资")
    a = result.assignments[0]
    h = world.handlers["HRSS"]
    handling.sign(session, assignment_id=a.id, actor=h, now=clock.now())
    old_due = a.reply_due_at
    req = handling.request_extension(
        session,
        assignment_id=a.id,
        extend_by=5,
        extend_unit=ClockUnit.workdays,
        reason="需要走访企业核实",
        actor=h,
        now=clock.now(),
    )
    with pytest.raises(Conflict):
        handling.request_extension(
            session,
            assignment_id=a.id,
            extend_by=1,
            extend_unit=ClockUnit.workdays,
            reason="again",
            actor=h,
            now=clock.now(),
        )
    review.decide_extension(
        session,
        extension_id=req.id,
        approve=True,
        reason="同意",
        actor=world.staff["supervisor"],
        now=clock.now(),
    )
    assert req.status == ExtensionStatus.approved
    # 8 Dec 2026 (Tue) + 5 working days = 15 Dec 2026, same time of day
    assert old_due == datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
    assert a.reply_due_at == datetime(2026, 12, 15, 2, 0, tzinfo=UTC)
    note = events_of(session, ticket.id)[-1]
    assert note.data["kind"] == "extension_approved"
    assert note.data["old_due_at"] == old_due.isoformat()


def test_given_deadline_passed_when_extension_asked_then_refused(session, clock, world):
    _, result = _dispatched(session, clock, "公司拖欠工资")
    a = result.assignments[0]
    clock.advance(days=30)
    with pytest.raises(Conflict, match="before the deadline"):
        handling.request_extension(
            session,
            assignment_id=a.id,
            extend_by=2,
            extend_unit=ClockUnit.workdays,
            reason="太忙",
            actor=world.handlers["HRSS"],
            now=clock.now(),
        )


def test_given_dissatisfied_callback_then_ticket_reopens_and_goes_back_to_the_same_units(
    session, clock, world
):
    ticket, result = _dispatched(session, clock, "小区停水")
    lead = next(a for a in result.assignments if a.role == AssignmentRole.lead)
    h = world.handlers["WATER"]
    handling.sign(session, assignment_id=lead.id, actor=h, now=clock.now())
    handling.reply(session, assignment_id=lead.id, text="已恢复供水", actor=h, now=clock.now())
    review.review_reply(
        session, ticket_id=ticket.id, approve=True, actor=world.staff["dispatcher"], now=clock.now()
    )
    clock.advance(days=1)
    again = closing.callback(
        session,
        ticket_id=ticket.id,
        satisfaction="dissatisfied",
        comment="还是没水",
        actor=world.staff["operator"],
        now=clock.now(),
    )
    assert ticket.status == Status.dispatched and ticket.reopen_count == 1
    assert {a.unit_id for a in again.assignments} == {
        world.units["WATER"].id,
        world.units["HOUSING"].id,
    }
    assert all(a.started_at == clock.now() for a in again.assignments)


def test_given_duplicate_requests_when_merged_then_one_reply_closes_both(session, clock, world):
    parent, pr = _dispatched(session, clock, "公司拖欠工资")
    child, _ = _dispatched(session, clock, "我也被这家公司拖欠工资")
    closing.merge(
        session,
        ticket_id=child.id,
        parent_id=parent.id,
        reason="同一企业欠薪",
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert child.status == Status.merged
    assert all(
        a.status == AssignmentStatus.withdrawn
        for a in assignments.assignments_of(session, ticket_id=child.id)
    )
    a = pr.assignments[0]
    h = world.handlers["HRSS"]
    handling.sign(session, assignment_id=a.id, actor=h, now=clock.now())
    handling.reply(session, assignment_id=a.id, text="企业已支付全部工资", actor=h, now=clock.now())
    review.review_reply(
        session, ticket_id=parent.id, approve=True, actor=world.staff["dispatcher"], now=clock.now()
    )
    closing.callback(
        session,
        ticket_id=parent.id,
        satisfaction="basically_satisfied",
        actor=world.staff["operator"],
        now=clock.now(),
    )
    assert child.status == Status.closed and child.reply == "企业已支付全部工资"


def test_given_closed_ticket_when_signed_again_then_illegal(session, clock, world):
    ticket = new_ticket(session, clock.now(), "咨询社保缴费")
    from tickets.service import close_at_intake

    close_at_intake(
        session, ticket=ticket, answer="可在线缴纳", actor="operator:x", now=clock.now()
    )
    with pytest.raises(IllegalTransition):
        routing.manual_dispatch(
            session,
            ticket_id=ticket.id,
            lead_unit_code="HRSS",
            actor=world.staff["dispatcher"],
            now=clock.now(),
        )


def test_given_rule_naming_a_deactivated_unit_when_submitted_then_intake_survives_in_queue(
    session, clock, world
):
    world.units["HRSS"].active = False
    session.add(world.units["HRSS"])
    session.flush()
    sub = submit(
        session, data=TicketCreate(description="老板拖欠工资"), actor=None, now=clock.now()
    )
    assert sub.created and sub.dispatch_error
    ticket = get_ticket(session, sub.ticket.id)
    assert ticket.status == Status.pending_dispatch
    assert "HRSS" in events_of(session, ticket.id)[-1].reason


def test_given_idempotency_key_when_submitted_twice_then_one_ticket(session, clock, world):
    data = TicketCreate(description="老板拖欠工资")
    first = submit(session, data=data, actor=None, now=clock.now(), idempotency_key="k1")
    second = submit(session, data=data, actor=None, now=clock.now(), idempotency_key="k1")
    assert first.created and not second.created
    assert first.ticket.id == second.ticket.id
    with pytest.raises(Conflict):
        submit(
            session,
            data=TicketCreate(description="别的事"),
            actor=None,
            now=clock.now(),
            idempotency_key="k1",
        )


def test_given_submitted_ticket_when_read_back_then_it_equals_its_rebuilt_audit_and_rows(
    session, clock, world
):
    sub = submit(
        session,
        data=TicketCreate(description="我们公司老板拖欠工资三个月了"),
        actor=None,
        now=clock.now(),
    )
    [lead] = sub.dispatch.assignments
    session.expire_all()  # what the database holds, not what the submission built
    ticket = get_ticket(session, sub.ticket.id)
    assert ticket.status == Status.dispatched and ticket.number == sub.ticket.number
    assert [e.seq for e in events_of(session, ticket.id)] == [1, 2]
    assert rebuild_state(events_of(session, ticket.id)) == snapshot(ticket)
    [stored] = assignments.assignments_of(session, ticket_id=ticket.id)
    assert stored.id == lead.id and stored.unit_id == world.units["HRSS"].id
    assert stored.next_escalation_at is not None and stored.sign_due_at == lead.sign_due_at


def test_given_submitted_ticket_when_changed_in_the_same_session_then_changes_are_written(
    session, clock, world
):
    sub = submit(
        session,
        data=TicketCreate(description="我们公司老板拖欠工资三个月了"),
        actor=None,
        now=clock.now(),
    )
    [lead] = sub.dispatch.assignments
    handling.sign(
        session,
        assignment_id=lead.id,
        actor=world.handlers["HRSS"],
        now=clock.now() + timedelta(hours=1),
    )
    session.flush()
    session.expire_all()
    assert get_ticket(session, sub.ticket.id).status == Status.signed
    assert assignments.assignments_of(session, ticket_id=sub.ticket.id)[0].signed_at is not None
