"""Escalation: arming the next step, the sweep firing every due step exactly once, and the
notifications a step sends."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.engine import Engine
from sqlmodel import col

from accounts.models import Role, User
from core.db import make_session_factory, saved_id
from dispatch import escalation
from dispatch.escalation import arm, disarm, sweep
from dispatch.models import (
    Assignment,
    Clock,
    ClockUnit,
    Escalation,
    EscalationKind,
    Notification,
    NotificationStatus,
    SlaPolicy,
    Unit,
)
from tests.conftest import START
from tests.dispatch.escalation_scene import (
    CALENDAR,
    CHASE,
    LEAD,
    SUPERVISE,
    WARN,
    H,
    escalation_notes,
    fired,
    make_assignment,
    make_policy,
    make_ticket,
    make_unit,
    make_user,
    settings_for,
    swept,
)
from tickets.models import Status, Ticket, TicketCounter, TicketEvent

# ---------------------------------------------------------------- arm / disarm


def test_given_new_assignment_when_armed_on_sign_clock_then_warning_is_next(session, scene):
    a = scene.assignment
    assert (a.escalation_clock, a.escalation_level, a.next_escalation_at) == (Clock.sign, 0, WARN)


def test_given_fired_levels_when_rearmed_then_next_is_the_first_unfired_step(session, scene):
    a = scene.assignment
    arm(a, clock=Clock.sign, policy=scene.policy, calendar=CALENDAR, level=2)
    assert (a.escalation_level, a.next_escalation_at) == (2, SUPERVISE)
    arm(a, clock=Clock.sign, policy=scene.policy, calendar=CALENDAR, level=4)
    assert (a.escalation_level, a.next_escalation_at) == (4, None)


def test_given_armed_assignment_when_disarmed_or_armed_without_clock_then_nothing_is_due(
    session, scene
):
    a = scene.assignment
    disarm(a)
    assert (a.escalation_clock, a.next_escalation_at) == (None, None)
    arm(a, clock=Clock.sign, policy=scene.policy, calendar=CALENDAR)
    arm(a, clock=None, policy=scene.policy, calendar=CALENDAR)
    assert (a.escalation_clock, a.next_escalation_at) == (None, None)


def test_given_workday_reply_clock_when_armed_then_warning_skips_the_weekend(session, scene):
    # Friday 10:00 Beijing + 2 working days = Tuesday 10:00; 75 % of that working time
    # (1.5 days: 14 h left on Friday, then Monday) ends on Monday at 22:00 Beijing.
    policy = make_policy(session, reply_limit=2, reply_unit=ClockUnit.workdays)
    a = make_assignment(session, ticket=scene.ticket, unit=scene.unit, policy=policy)
    a.reply_due_at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    arm(a, clock=Clock.reply, policy=policy, calendar=CALENDAR)
    assert a.escalation_clock == Clock.reply
    assert a.next_escalation_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


# ---------------------------------------------------------------- the sweep


def test_given_armed_assignment_when_swept_before_warning_then_nothing_fires(
    session, scene, factory, clock, tmp_path
):
    clock.set(WARN - timedelta(seconds=1))
    result = swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert (result.fired, result.assignments) == (0, 0)
    assert fired(session, scene.assignment) == []


def test_given_dispatched_ticket_when_warning_time_passes_then_level_1_warns_active_handlers(
    session, scene, factory, clock, tmp_path
):
    clock.set(WARN)
    result = swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert (result.fired, result.assignments, result.failed) == (1, 1, 0)
    [warning] = fired(session, scene.assignment)
    assert (warning.level, warning.kind, warning.clock) == (1, EscalationKind.warning, Clock.sign)
    assert warning.addressee == "handlers"
    assert warning.recipients == [scene.handler.id, scene.head.id]
    assert (warning.deadline, warning.scheduled_at, warning.fired_at) == (CHASE, WARN, WARN)
    assert warning.message.startswith(f"【预警】工单 {scene.ticket.number}（URBAN局）")
    assert "2026-11-28 10:00" in warning.message  # the deadline in Beijing time
    assert "Warning: ticket" in warning.message
    session.refresh(scene.assignment)
    assert (scene.assignment.escalation_level, scene.assignment.next_escalation_at) == (1, CHASE)
    [note] = escalation_notes(session, scene.ticket)
    assert note.actor == "system" and note.reason == warning.message
    assert note.data["escalation_id"] == warning.id and note.data["level"] == 1
    inapp = session.scalars(
        select(Notification).where(Notification.escalation_id == warning.id)
    ).all()
    assert sorted(n.user_id for n in inapp) == [scene.handler.id, scene.head.id]
    assert {(n.channel, n.status) for n in inapp} == {("inapp", NotificationStatus.sent)}


def test_given_missed_sweeps_when_swept_late_then_every_due_level_fires_once_in_order(
    session, scene, factory, clock, tmp_path
):
    clock.set(SUPERVISE + 2 * H)
    result = swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert (result.fired, result.assignments) == (3, 1)
    steps = fired(session, scene.assignment)
    assert [(e.level, e.kind) for e in steps] == [
        (1, EscalationKind.warning),
        (2, EscalationKind.chase),
        (3, EscalationKind.supervision),
    ]
    assert [e.scheduled_at for e in steps] == [WARN, CHASE, SUPERVISE]
    assert {e.fired_at for e in steps} == {clock.now()}
    assert steps[1].message.startswith(
        f"【催办】工单 {scene.ticket.number}（URBAN局）已超过签收时限"
    )
    assert steps[2].addressee == "head" and steps[2].recipients == [scene.head.id]
    assert "24 小时" in steps[2].message
    assert len(escalation_notes(session, scene.ticket)) == 3

    again = swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert (again.fired, again.assignments) == (0, 0)
    assert len(fired(session, scene.assignment)) == 3


def test_given_chain_end_reached_when_leadership_fires_then_supervisors_are_told_and_clock_stops(
    session, scene, factory, clock, tmp_path
):
    clock.set(LEAD)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    last = fired(session, scene.assignment)[-1]
    assert (last.level, last.kind, last.addressee) == (4, EscalationKind.leadership, "leadership")
    assert last.recipients == [u.id for u in scene.supervisors]
    session.refresh(scene.assignment)
    assert (scene.assignment.escalation_level, scene.assignment.next_escalation_at) == (4, None)
    clock.advance(days=30)
    assert swept(session, factory, now=clock.now(), settings=settings_for(tmp_path)).fired == 0


def test_given_signed_assignment_when_sign_deadline_passes_then_only_the_reply_clock_counts(
    session, scene, factory, clock, tmp_path
):
    a = scene.assignment
    arm(a, clock=Clock.reply, policy=scene.policy, calendar=CALENDAR)
    session.add(a)
    session.flush()
    clock.set(SUPERVISE)  # past the sign-for chase; the reply warning is at 54 h
    assert swept(session, factory, now=clock.now(), settings=settings_for(tmp_path)).fired == 0
    clock.set(START + 72 * H)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    steps = fired(session, a)
    assert [(e.clock, e.kind) for e in steps] == [
        (Clock.reply, EscalationKind.warning),
        (Clock.reply, EscalationKind.chase),
    ]
    assert "已超过回复时限" in steps[1].message


def test_given_custom_chain_when_swept_then_levels_follow_the_policy(
    session, scene, factory, clock, tmp_path
):
    policy = make_policy(
        session,
        chain=[
            {"kind": "chase", "after_breach_hours": 0},
            {"kind": "leadership", "after_breach_hours": 2},
        ],
    )
    a = make_assignment(session, ticket=scene.ticket, unit=scene.unit, policy=policy)
    clock.set(CHASE + 2 * H)
    swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert [(e.level, e.kind) for e in fired(session, a)] == [
        (1, EscalationKind.chase),
        (2, EscalationKind.leadership),
    ]


def test_given_step_already_recorded_when_swept_then_the_unique_step_is_not_duplicated(
    session, scene, factory, clock, tmp_path
):
    a = scene.assignment
    session.add(
        Escalation(
            ticket_id=scene.ticket.id,
            assignment_id=a.id,
            unit_id=scene.unit.id,
            clock=Clock.sign,
            level=1,
            kind=EscalationKind.warning,
            deadline=CHASE,
            scheduled_at=WARN,
            fired_at=WARN,
            addressee="handlers",
            message="recorded before",
        )
    )
    session.flush()
    clock.set(CHASE)
    result = swept(session, factory, now=clock.now(), settings=settings_for(tmp_path))
    assert result.fired == 1
    assert [(e.level, e.message) for e in fired(session, a)][0] == (1, "recorded before")
    assert [e.level for e in fired(session, a)] == [1, 2]
    session.refresh(a)
    assert (a.escalation_level, a.next_escalation_at) == (2, SUPERVISE)


def test_given_more_due_than_a_batch_when_swept_then_every_batch_is_processed(
    session, scene, factory, clock, tmp_path
):
    extra = [
        make_assignment(session, ticket=make_ticket(session), unit=scene.unit, policy=scene.policy)
        for _ in range(4)
    ]
    clock.set(WARN)
    result = swept(session, factory, now=clock.now(), batch=2, settings=settings_for(tmp_path))
    assert (result.fired, result.assignments) == (5, 5)
    assert all(len(fired(session, a)) == 1 for a in [scene.assignment, *extra])


def test_given_one_assignment_failing_when_swept_then_it_is_rolled_back_and_others_still_fire(
    session, scene, factory, clock, tmp_path
):
    broken_ticket = make_ticket(session)
    broken = make_assignment(session, ticket=broken_ticket, unit=scene.unit, policy=scene.policy)
    # An archived ticket takes no notes, so firing on it fails half-way through.
    broken_ticket.status = Status.archived
    session.add(broken_ticket)
    session.flush()
    sent: list[int] = []
    clock.set(WARN)
    result = swept(
        session,
        factory,
        now=clock.now(),
        enqueue=sent.append,
        settings=settings_for(tmp_path, smtp_port=2525),
    )
    assert (result.fired, result.assignments, result.failed) == (1, 1, 1)
    assert fired(session, broken) == []
    session.refresh(broken)
    assert (broken.escalation_level, broken.next_escalation_at) == (0, WARN)
    good = fired(session, scene.assignment)[0]
    assert sent == list(
        session.scalars(
            select(Notification.id)
            .where(Notification.escalation_id == good.id, Notification.channel == "email")
            .order_by(Notification.id)
        )
    )


# ---------------------------------------------------------------- notifications


def test_given_smtp_and_webhook_when_supervision_fires_then_head_gets_mail_after_commit(
    session, scene, factory, clock, tmp_path
):
    a = scene.assignment
    arm(a, clock=Clock.sign, policy=scene.policy, calendar=CALENDAR, level=2)
    session.add(a)
    session.flush()
    sent: list[int] = []

    def enqueue(notification_id: int) -> None:
        # called after commit: the row is visible to a fresh unit of work
        with factory() as other:
            assert other.get(Notification, notification_id) is not None
        sent.append(notification_id)

    clock.set(SUPERVISE)
    swept(
        session,
        factory,
        now=clock.now(),
        enqueue=enqueue,
        settings=settings_for(tmp_path, smtp_port=2525, webhook_url="http://127.0.0.1:9/hook"),
    )
    [supervision] = fired(session, a)
    rows = session.scalars(
        select(Notification)
        .where(Notification.escalation_id == supervision.id)
        .order_by(Notification.id)
    ).all()
    by_channel = {c: [n for n in rows if n.channel == c] for c in ("inapp", "email", "webhook")}
    assert [n.user_id for n in by_channel["inapp"]] == [scene.head.id]
    assert [(n.user_id, n.address) for n in by_channel["email"]] == [
        (scene.head.id, "head@units.example.org"),
        (None, "urban-head@units.example.org"),
    ]
    assert all(n.status == NotificationStatus.pending for n in by_channel["email"])
    assert by_channel["email"][0].subject.startswith("【督办】工单")
    [hook] = by_channel["webhook"]
    assert hook.address == "http://127.0.0.1:9/hook"
    assert sent == [n.id for n in by_channel["email"] + by_channel["webhook"]]


def test_given_no_smtp_nor_webhook_when_step_fires_then_only_inapp_notices_exist(
    session, scene, factory, clock, tmp_path
):
    sent: list[int] = []
    clock.set(WARN)
    swept(session, factory, now=clock.now(), enqueue=sent.append, settings=settings_for(tmp_path))
    channels = session.scalars(select(Notification.channel)).all()
    assert set(channels) == {"inapp"} and sent == []


# ---------------------------------------------------------------- exactly once, concurrently

RACE_DAY = datetime(2031, 3, 3, 2, 0, tzinfo=UTC)  # its own ticket-number counter


@pytest.fixture
def committed_scene(engine: Engine) -> Iterator[tuple[list[int], int]]:
    """Ten armed assignments committed to the real database (both sweeps must see them),
    removed afterwards."""
    factory = make_session_factory(engine)
    with factory() as s:
        unit = make_unit(s, f"RACE{uuid.uuid4().hex[:6]}")
        handler = make_user(s, f"race.{unit.code}", Role.handler, unit)
        policy = make_policy(s)
        ticket_ids, assignment_ids = [], []
        for _ in range(10):
            ticket = make_ticket(s, now=RACE_DAY)
            assignment = make_assignment(s, ticket=ticket, unit=unit, policy=policy, start=RACE_DAY)
            ticket_ids.append(saved_id(ticket))
            assignment_ids.append(saved_id(assignment))
        s.commit()
        ids = (unit.id, handler.id, policy.id)
    yield assignment_ids, len(ticket_ids)
    with factory() as s:
        escalation_ids = select(col(Escalation.id)).where(col(Escalation.unit_id) == ids[0])
        s.execute(delete(Notification).where(col(Notification.escalation_id).in_(escalation_ids)))
        s.execute(delete(Escalation).where(col(Escalation.unit_id) == ids[0]))
        s.execute(delete(Assignment).where(col(Assignment.unit_id) == ids[0]))
        s.execute(delete(TicketEvent).where(col(TicketEvent.ticket_id).in_(ticket_ids)))
        s.execute(delete(Ticket).where(col(Ticket.id).in_(ticket_ids)))
        s.execute(delete(TicketCounter).where(col(TicketCounter.day) == "20310303"))
        s.execute(delete(User).where(col(User.id) == ids[1]))
        s.execute(delete(SlaPolicy).where(col(SlaPolicy.id) == ids[2]))
        s.execute(delete(Unit).where(col(Unit.id) == ids[0]))
        s.commit()


def test_given_two_sweeps_at_the_same_instant_when_run_concurrently_then_each_step_fires_once(
    engine, committed_scene, tmp_path
):
    assignment_ids, _ = committed_scene
    factory = make_session_factory(engine)
    now = RACE_DAY + 50 * H  # warning, chase and supervision are all due
    settings = settings_for(tmp_path)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(sweep(factory, now=now, batch=3, settings=settings))
        except Exception as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == 2
    assert sum(r.fired for r in results) == 3 * len(assignment_ids)
    assert sum(r.failed for r in results) == 0
    with factory() as s:
        rows = s.execute(
            select(Escalation.assignment_id, Escalation.level).where(
                Escalation.assignment_id.in_(assignment_ids)
            )
        ).all()
        assert sorted(rows) == sorted((a, lvl) for a in assignment_ids for lvl in (1, 2, 3))
        notes = s.scalar(
            text(
                "SELECT count(*) FROM ticket_event e "
                "JOIN assignment a ON a.ticket_id = e.ticket_id "
                "WHERE e.action = 'note' AND a.id IN ({})".format(
                    ",".join(map(str, assignment_ids))
                )
            )
        )
        assert notes == 3 * len(assignment_ids)
        levels = s.scalars(
            select(Assignment.escalation_level).where(Assignment.id.in_(assignment_ids))
        ).all()
        assert set(levels) == {3}


def test_sweep_reads_due_assignments_through_the_index(session, backend):
    """The sweep's selection is a range scan on ix_assignment_next_escalation, so its cost
    follows the due assignments, not all the open ones."""
    stmt = escalation.due_assignments(now=START, batch=500, after=None)
    compiled = stmt.compile(dialect=session.bind.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    if backend == "postgres":
        session.execute(text("SET LOCAL enable_seqscan = off"))
    plan = " ".join(str(row) for row in session.execute(text(explain + str(compiled))))
    assert "ix_assignment_next_escalation" in plan
