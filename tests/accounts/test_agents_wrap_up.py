"""The after-call work of a call is written onto its record when the wrap-up ends (by the
timer, the operator pressing ready, or going not ready): the figures' handle time is talk +
hold + wrap-up. Only the operator who answered the call writes it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, Role
from accounts.service import create_user
from core.db import saved_id
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

CALL = "wrap-1@edge"


def _setup(session, clock):
    li, _ = create_user(
        session, username="li.w", display_name="li", role=Role.operator, now=clock.now()
    )
    wang, _ = create_user(
        session, username="wang.w", display_name="wang", role=Role.operator, now=clock.now()
    )
    session.flush()
    now = clock.now()
    session.add(
        CallRecord(
            call_id=CALL,
            direction=CallDirection.INBOUND,
            arrived_at=now,
            answered_at=now,
            queue_outcome=QueueOutcome.agent,
            agent_user_id=saved_id(li),
            created_at=now,
            updated_at=now,
        )
    )
    for user, ext in ((li, "7101"), (wang, "7102")):
        agents.sign_in(session, user, ext, "", now)
        agents.set_ready(session, saved_id(user), now)
        agents.ring_for(session, saved_id(user), CALL, now)
        agents.answered(session, saved_id(user), CALL, now)
    return saved_id(li), saved_id(wang)


def _wrap_up_s(session) -> float | None:
    return session.scalars(
        select(col(CallRecord.wrap_up_s)).where(col(CallRecord.call_id) == CALL)
    ).one()


def test_the_timer_ending_the_wrap_up_writes_it_onto_the_call(session, clock):
    li, _ = _setup(session, clock)
    clock.advance(timedelta(seconds=90))
    agents.call_ended(session, li, CALL, clock.now(), wrap_up_s=15)
    assert _wrap_up_s(session) is None  # still wrapping up
    clock.advance(timedelta(seconds=16))
    ended = agents.end_wrap_ups(session, clock.now())
    assert [a.state for a in ended] == [AgentState.ready]
    assert _wrap_up_s(session) == 16.0


def test_ready_early_writes_the_shorter_time_and_a_colleague_writes_nothing(session, clock):
    li, wang = _setup(session, clock)
    agents.call_ended(session, wang, CALL, clock.now(), wrap_up_s=15)
    clock.advance(timedelta(seconds=3))
    agents.set_ready(session, wang, clock.now())
    assert _wrap_up_s(session) is None  # the colleague's wrap-up is not the call's
    agents.call_ended(session, li, CALL, clock.now(), wrap_up_s=15)
    clock.advance(timedelta(seconds=7))
    agents.set_ready(session, li, clock.now())
    assert _wrap_up_s(session) == 7.0
