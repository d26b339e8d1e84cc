"""A Call-ID used again after a restart of the SIP edge (or on another edge of the same
database) is a new call with a new record — never folded into the earlier call's record and
ticket (issue 15 §2). sipp calls two edges in turn, as an edge and its successor would be."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from hotline.calls.keys import KnownKeys, known_call_key
from hotline.calls.records import end_values, upsert_call
from telephony.models import CallRecord
from telephony.sip_call_keys import CallKeys
from tests.conftest import wait_until
from tests.telephony.fakes import FakeCall
from tests.telephony.sip_peers import RtpPeer, output, run_sipp, start_edge

CALL_ID = "reused-after-restart@127.0.0.1"


def _call_once(db, rtp: RtpPeer):
    """One edge's life: started with the database check, one sipp call, stopped."""
    harness = start_edge(call_key_known=known_call_key(db.factory))
    try:
        result = run_sipp(
            "uac_call.xml",
            target=harness.target,
            keys={"rtp_port": rtp.port, "fmts": "0"},
            extra=["-cid_str", CALL_ID],
        )
        assert result.returncode == 0, output(result)
        wait_until(lambda: harness.ended, 5, message="on_ended")
        (call,) = harness.calls
        with db.session() as s:  # what the platform writes at the answer and the end
            upsert_call(s, call=call, now=call.arrived_at)
            upsert_call(s, call=call, now=call.arrived_at, **end_values(call))
            s.commit()
        return call
    finally:
        harness.edge.stop()


def test_given_a_call_id_an_earlier_edge_took_when_called_again_then_a_new_record(db):
    rtp = RtpPeer()
    try:
        first = _call_once(db, rtp)
        second = _call_once(db, rtp)  # a fresh edge: its own memory has never met the Call-ID
    finally:
        rtp.close()
    assert first.sip_call_id == second.sip_call_id == CALL_ID
    assert (first.call_id, second.call_id) == (CALL_ID, f"{CALL_ID}~2")
    with db.session() as s:
        keys = s.scalars(select(CallRecord.call_id).order_by(CallRecord.id)).all()
    assert keys == [CALL_ID, f"{CALL_ID}~2"]


def test_given_keys_taken_before_then_the_first_free_suffix_and_memory_follows():
    taken = {"a@h", "a@h~2", "a@h~3"}
    keys = CallKeys(known=taken.__contains__)
    assert keys.new_call("a@h") == "a@h~4"
    assert keys.new_call("a@h") == "a@h~5"  # this process now remembers four uses
    assert keys.new_call("b@h") == "b@h"


def test_given_the_check_fails_then_the_call_keeps_its_key_and_a_warning(caplog):
    def broken(key: str) -> bool:
        raise ConnectionError("database away")

    keys = CallKeys(known=broken)
    with caplog.at_level(logging.WARNING, logger="telephony.sip_call_keys"):
        assert keys.new_call("c@h") == "c@h"
    assert any("database away" in r.getMessage() for r in caplog.records)


def test_given_a_burst_of_new_calls_then_one_query_answers_those_waiting_together(db):
    """Keys asked while a lookup runs wait for the next one and share it: a burst of calls
    costs one round trip, not one session per call in each call's thread."""
    with db.session() as s:
        upsert_call(s, call=FakeCall(call_id="taken-7@h"), now=datetime.now(UTC))
        s.commit()
    gate, first_started = threading.Event(), threading.Event()

    def slow_first_session():
        if not first_started.is_set():
            first_started.set()
            gate.wait(5)
        return db.factory()

    known = KnownKeys(slow_first_session)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            first = pool.submit(known, "first@h")
            assert first_started.wait(5)
            keys = [f"taken-{n}@h" if n == 7 else f"new-{n}@h" for n in range(19)]
            rest = {key: pool.submit(known, key) for key in keys}
            wait_until(lambda: len(known._pending) == 19, 5, message="19 keys waiting")
            gate.set()
            assert first.result(5) is False
            answers = {key: f.result(5) for key, f in rest.items()}
    finally:
        known.close()
    assert answers.pop("taken-7@h") is True
    assert set(answers.values()) == {False}
    assert known.queries == 2


def test_given_the_database_away_then_every_waiting_call_hears_it_and_keeps_its_key(caplog):
    def away():
        raise ConnectionError("database away")

    keys = CallKeys(known=KnownKeys(away))
    with caplog.at_level(logging.WARNING, logger="telephony.sip_call_keys"):
        assert keys.new_call("d@h") == "d@h"
    assert any("database away" in r.getMessage() for r in caplog.records)


def test_given_lookups_one_after_another_then_postgresql_keeps_one_connection_for_them(db):
    """Each lookup used to take a session: a pool checkout with its ping, BEGIN and COMMIT
    around a one-row read; on PostgreSQL the lookups' thread keeps one connection in
    autocommit. A connection that breaks is dropped and the next lookup takes a new one."""
    with db.session() as s:
        upsert_call(s, call=FakeCall(call_id="old@h"), now=datetime.now(UTC))
        s.commit()
    engine = db.session().get_bind()
    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    known = KnownKeys(db.factory)
    try:
        answers = [known(key) for key in ("a@h", "old@h", "b@h")]
        postgres = engine.dialect.name == "postgresql"
        assert len(checkouts) == (1 if postgres else 3)
        if postgres:
            known._conn.invalidate()  # the server went away under it
            with pytest.raises(Exception):
                known("c@h")  # that lookup fails (its callers keep their keys) ...
            assert known("old@h") is True  # ... and the next one has a new connection
            assert len(checkouts) == 2
    finally:
        known.close()
    assert answers == [False, True, False]
    assert known.queries == (4 if postgres else 3)
