"""The call records of many calls share a transaction (``CallRecordWriter``): a burst of
answers is one commit, not one each, and still durable before each call's greeting; a write
that fails fails alone; nothing waiting is lost at close."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, text

from hotline.calls.record_writer import CallRecordWriter
from hotline.calls.records import upsert_call
from telephony.models import CallRecord
from tests.conftest import START, wait_until
from tests.telephony.fakes import FakeCall
from tickets.models import Ticket


def _hold(writer: CallRecordWriter) -> threading.Event:
    """The writer busy on a write that waits for the returned event."""
    release = threading.Event()
    writer.submit(lambda session: release.wait(10))
    wait_until(lambda: not writer._pending, 5, message="the writer took the holding write")
    return release


def test_given_a_burst_of_answered_calls_then_their_records_are_written_in_one_transaction(
    db, make_services
):
    services = make_services(None)
    with db.session() as s:
        engine = s.get_bind()
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    calls = [FakeCall(call_id=f"burst-{i}@pbx.test") for i in range(20)]
    release = _hold(services._records)
    threads = [threading.Thread(target=services.on_answered, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(services._records._pending) == 20, 10, message="20 answers waiting")
    assert db.count(CallRecord) == 0  # no call went on before its record was written

    release.set()
    for thread in threads:
        thread.join(10)

    assert db.count(CallRecord) == 20 and db.count(Ticket) == 20
    assert len(commits) == 1  # the 20 answers together (the holding write ran no SQL)
    assert all(services._tickets[call.call_id] for call in calls)


def test_given_a_failing_write_in_a_batch_then_it_fails_alone(db):
    writer = CallRecordWriter(db.factory)
    release = _hold(writer)
    good = [FakeCall(call_id=f"good-{i}@pbx.test") for i in range(3)]
    futures = [
        writer.submit(lambda session, call=call: upsert_call(session, call=call, now=START))
        for call in good[:2]
    ]
    bad = writer.submit(lambda session: session.execute(text("SELECT * FROM no_such_table")))
    futures.append(writer.submit(lambda session: upsert_call(session, call=good[2], now=START)))
    release.set()

    for future in futures:
        future.result(10)
    with pytest.raises(Exception, match="no_such_table"):
        bad.result(10)
    assert db.count(CallRecord) == 3
    writer.close()


def test_given_writes_waiting_when_the_writer_closes_then_they_are_written(db):
    writer = CallRecordWriter(db.factory)
    release = _hold(writer)
    futures = [
        writer.submit(
            lambda session, i=i: upsert_call(
                session, call=FakeCall(call_id=f"late-{i}@pbx.test"), now=START
            )
        )
        for i in range(5)
    ]
    release.set()
    writer.close()

    assert all(future.done() and future.exception() is None for future in futures)
    assert db.count(CallRecord) == 5
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(lambda session: None)


def test_given_an_ended_call_then_its_end_is_written_with_the_others_and_drain_waits_for_it(
    db, make_services
):
    services = make_services(None)
    calls = [FakeCall(call_id=f"end-{i}@pbx.test") for i in range(5)]
    for call in calls:
        services.on_answered(call)
    release = _hold(services._records)
    for call in calls:
        call.hangup()
        services.on_ended(call)
    assert db.count(CallRecord, CallRecord.ended_at.is_not(None)) == 0  # not yet written

    release.set()
    services.drain()

    assert db.count(CallRecord, CallRecord.ended_at.is_not(None)) == 5
