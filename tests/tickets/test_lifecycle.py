"""The lifecycle table, and properties over random sequences of actions."""

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import IllegalTransition
from tickets.intake import create_ticket
from tickets.lifecycle import ACTIVE, IN_PLACE, TRANSITIONS, Action, allowed_actions, next_status
from tickets.models import Status, TicketCreate
from tickets.service import events_of, rebuild_state, record, snapshot

S = Status
A = Action

LEGAL = [
    (S.intake, A.close_at_intake, None, S.closed),
    (S.intake, A.dispatch, None, S.dispatched),
    (S.intake, A.queue, None, S.pending_dispatch),
    (S.pending_dispatch, A.dispatch, None, S.dispatched),
    (S.dispatched, A.sign, None, S.signed),
    (S.signed, A.start, None, S.in_progress),
    (S.signed, A.reply, None, S.replied),
    (S.in_progress, A.reply, None, S.replied),
    (S.replied, A.approve_reply, None, S.reviewed),
    (S.replied, A.send_back, None, S.in_progress),
    (S.reviewed, A.callback, S.closed, S.closed),
    (S.reviewed, A.callback, S.reopened, S.reopened),
    (S.reopened, A.dispatch, None, S.dispatched),
    (S.dispatched, A.return_, None, S.returned),
    (S.in_progress, A.return_, None, S.returned),
    (S.returned, A.redispatch, None, S.dispatched),
    (S.returned, A.uphold_return, S.signed, S.signed),
    (S.returned, A.uphold_return, S.in_progress, S.in_progress),
    (S.in_progress, A.merge, None, S.merged),
    (S.merged, A.close_merged, None, S.closed),
    (S.closed, A.archive, None, S.archived),
    (S.closed, A.reopen, None, S.reopened),
    (S.signed, A.update, None, S.signed),
]

ILLEGAL = [
    (S.intake, A.sign, None),
    (S.dispatched, A.reply, None),  # sign for it first
    (S.replied, A.return_, None),
    (S.closed, A.dispatch, None),
    (S.archived, A.note, None),
    (S.archived, A.reopen, None),
    (S.merged, A.dispatch, None),
    (S.reviewed, A.callback, None),  # must say closed or reopened
    (S.returned, A.uphold_return, S.closed),
    (S.closed, A.update, None),
]


@pytest.mark.parametrize(
    "current,action,target,expected", LEGAL, ids=[f"{c.value}-{a.value}" for c, a, _, _ in LEGAL]
)
def test_given_status_when_legal_action_then_reaches_expected_status(
    current, action, target, expected
):
    assert next_status(current, action, target) == expected


@pytest.mark.parametrize(
    "current,action,target", ILLEGAL, ids=[f"{c.value}-{a.value}" for c, a, _ in ILLEGAL]
)
def test_given_status_when_illegal_action_then_raises_domain_error(current, action, target):
    with pytest.raises(IllegalTransition) as err:
        next_status(current, action, target)
    assert current.value in err.value.message


def test_every_status_but_archived_has_a_way_forward():
    for status in S:
        if status == S.archived:
            continue
        moves = [a for a in allowed_actions(status) if a in TRANSITIONS]
        assert moves, f"{status} is a dead end"


def test_uphold_targets_are_exactly_the_active_statuses():
    assert TRANSITIONS[A.uphold_return][S.returned] == ACTIVE


ALL_STEPS: list[tuple[Action, Status | None]] = [
    (a, t) for a, table in TRANSITIONS.items() for ts in table.values() for t in ts
]
ALL_STEPS += [(a, None) for a in IN_PLACE]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.sampled_from(sorted(set(ALL_STEPS), key=str)), max_size=25))
def test_no_sequence_of_actions_reaches_an_illegal_state_and_the_log_rebuilds_the_ticket(
    session, clock, steps
):
    """Random actions, legal or not: illegal ones are refused and change nothing; the status
    is always one the table allows from the previous one; replaying the audit log gives
    exactly the ticket."""
    ticket = create_ticket(
        session, data=TicketCreate(description="小区路灯坏了"), actor="test", now=clock.now()
    ).ticket
    for action, target in steps:
        clock.advance(timedelta(minutes=7))
        before = ticket.status
        try:
            expected = next_status(before, action, target)
        except IllegalTransition:
            with pytest.raises(IllegalTransition):
                record(
                    session,
                    ticket=ticket,
                    action=action,
                    actor="test",
                    now=clock.now(),
                    target=target,
                )
            assert ticket.status == before
            continue
        changes = {"title": f"step {ticket.event_seq}"} if action == A.update else None
        record(
            session,
            ticket=ticket,
            action=action,
            actor="test",
            now=clock.now(),
            target=target,
            changes=changes,
        )
        assert ticket.status == expected
        assert (ticket.closed_at is not None) == (ticket.status in (S.closed, S.archived))
    session.flush()
    events = events_of(session, ticket.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert rebuild_state(events) == snapshot(ticket)
