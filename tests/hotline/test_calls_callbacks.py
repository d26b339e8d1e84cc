"""Satisfaction callbacks (回访) on a FakeCall: scheduling and claiming attempts, the dialer's
retries within calling hours, and what the caller's key does to the ticket. The shared
fixtures (the database, the call services, `callback_settings`) are in conftest.py."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from dispatch import closing
from hotline.calls import callbacks as call_callbacks
from hotline.calls import dialer as call_dialer
from telephony.endpoint import CallDirection, CallFailed, Disposition
from telephony.flows import FlowSettings
from telephony.models import CallbackAttempt, CallbackOutcome, CallRecord
from tests.conftest import START
from tests.hotline.conftest import reviewed_ticket
from tests.telephony.fakes import FakeCall, FakePrompts, silence
from tickets.models import Satisfaction, Status, Ticket, TicketEvent


class FakeEndpoint:
    """Dials by script: each entry is a FakeCall to answer with, or a Disposition to fail."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.dialled: list[str] = []

    def dial(self, uri: str, *, ring_timeout: float):
        self.dialled.append(uri)
        step = self.script.pop(0)
        if isinstance(step, Disposition):
            raise CallFailed(step, step.value)
        return step


def dialer(services, endpoint, tmp_path) -> call_dialer.CallbackDialer:
    return call_dialer.CallbackDialer(
        services=services,
        endpoint=endpoint,
        prompts=FakePrompts(),
        flow=FlowSettings(recording_dir=tmp_path),
    )


def answering(key: str, call_id: str) -> FakeCall:
    return FakeCall(
        frames=silence(30_000),
        keys=[(500, key)],
        call_id=call_id,
        direction=CallDirection.OUTBOUND,
        remote_number="13700000000",
    )


def test_given_a_reviewed_ticket_when_claimed_by_two_threads_then_exactly_one_gets_it(
    db, clock, callback_settings
):
    ticket_id = reviewed_ticket(db, clock)
    with db.session() as s:
        assert call_callbacks.schedule_callbacks(s, now=clock.now()) == 1
        assert call_callbacks.schedule_callbacks(s, now=clock.now()) == 0
        s.commit()
    barrier = threading.Barrier(2)
    claimed: list[CallbackAttempt | None] = []

    def claim() -> None:
        barrier.wait()
        with db.session() as s:
            claimed.append(
                call_callbacks.claim_callback(s, now=clock.now(), settings=callback_settings)
            )
            s.commit()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    winners = [c for c in claimed if c is not None]
    assert len(claimed) == 2 and len(winners) == 1
    assert (winners[0].ticket_id, winners[0].attempt_no) == (ticket_id, 1)
    assert winners[0].started_at == clock.now()


def test_given_no_answer_then_the_next_attempt_is_scheduled_and_an_answer_closes_the_ticket(
    db, clock, make_services, callback_settings, tmp_path
):
    ticket_id = reviewed_ticket(db, clock)
    endpoint = FakeEndpoint(
        Disposition.NO_ANSWER, Disposition.BUSY, answering("2", "cb-3@pbx.test")
    )
    loop = dialer(make_services(None), endpoint, tmp_path)

    first = loop.run_once()
    assert first.outcome is CallbackOutcome.no_answer
    assert endpoint.dialled == ["sip:13700000000@gateway.test"]
    assert loop.run_once() is None  # the next one is due in 30 minutes
    clock.advance(minutes=30)
    assert loop.run_once().outcome is CallbackOutcome.busy
    clock.advance(minutes=119)
    assert loop.run_once() is None
    clock.advance(minutes=1)
    third = loop.run_once()

    assert (third.attempt_no, third.outcome, third.call_id) == (
        3,
        CallbackOutcome.basically_satisfied,
        "cb-3@pbx.test",
    )
    with db.session() as s:
        ticket = s.get(Ticket, ticket_id)
        attempts = s.scalars(select(CallbackAttempt).order_by(CallbackAttempt.attempt_no)).all()
        record = s.scalars(select(CallRecord)).one()
    assert (
        ticket.status == Status.closed and ticket.satisfaction == Satisfaction.basically_satisfied
    )
    assert [a.due_at - START for a in attempts] == [
        timedelta(0),
        timedelta(minutes=30),
        timedelta(minutes=150),
    ]
    assert all(a.ended_at is not None for a in attempts)
    assert (record.direction, record.ticket_id) == (CallDirection.OUTBOUND, ticket_id)
    assert loop.run_once() is None


def test_given_a_dissatisfied_caller_then_the_ticket_is_reopened_and_back_with_water(
    db, clock, make_services, callback_settings, tmp_path
):
    ticket_id = reviewed_ticket(db, clock)
    loop = dialer(make_services(None), FakeEndpoint(answering("3", "cb-x@pbx.test")), tmp_path)

    assert loop.run_once().outcome is CallbackOutcome.dissatisfied

    with db.session() as s:
        ticket = s.get(Ticket, ticket_id)
    assert ticket.status == Status.dispatched and ticket.reopen_count == 1
    assert ticket.satisfaction == Satisfaction.dissatisfied
    # a new round only when the ticket is reviewed again
    with db.session() as s:
        assert call_callbacks.schedule_callbacks(s, now=clock.now()) == 0


def test_given_attempts_used_up_then_a_note_asks_for_a_person(
    db, clock, make_services, callback_settings, tmp_path
):
    callback_settings.telephony.callback_retry_minutes = [10.0]
    ticket_id = reviewed_ticket(db, clock)
    loop = dialer(
        make_services(None), FakeEndpoint(Disposition.FAILED, Disposition.NO_ANSWER), tmp_path
    )
    assert loop.run_once().outcome is CallbackOutcome.failed
    clock.advance(minutes=10)
    assert loop.run_once().outcome is CallbackOutcome.no_answer
    clock.advance(days=1)
    assert loop.run_once() is None
    with db.session() as s:
        assert s.get(Ticket, ticket_id).status == Status.reviewed
        note = s.scalars(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket_id)
            .order_by(TicketEvent.seq.desc())
        ).first()
    assert note.data["kind"] == "callback_failed"


def test_given_a_ticket_closed_by_hand_then_its_pending_attempt_is_cancelled(
    db, clock, make_services, callback_settings, tmp_path
):
    ticket_id = reviewed_ticket(db, clock)
    with db.session() as s:
        call_callbacks.schedule_callbacks(s, now=clock.now())
        closing.close(
            s,
            ticket_id=ticket_id,
            actor=None,
            now=clock.now(),
            reason="caller reached by the operator",
        )
        s.commit()
    endpoint = FakeEndpoint()
    assert dialer(make_services(None), endpoint, tmp_path).run_once() is None
    assert endpoint.dialled == []
    assert db.one(CallbackAttempt).outcome is CallbackOutcome.cancelled
