"""Crash recovery: the calls of a SIP edge that died mid-call (kill -9, a lost host) are
closed from their recordings, exactly once, and their tickets leave intake."""

from __future__ import annotations

import struct
import threading
import wave
from datetime import timedelta
from pathlib import Path

from sqlmodel import col

from core.db import make_engine, make_session_factory
from hotline.calls import intake as call_intake
from hotline.calls import recovery
from telephony.endpoint import Disposition
from telephony.models import CallRecord, SipEdgeRecord, TranscribedBy
from telephony.recording import SAMPLE_RATE
from tests.hotline.conftest import frames_of, ticket_of
from tests.telephony.fakes import FakeCall
from tickets.models import Status

STALE = timedelta(seconds=60)
HOST = "sip-a.test"


def _edge(db, *, edge_id: str, heartbeat_at, host: str = HOST, pid: int = 999_999) -> None:
    with db.session() as s:
        s.add(
            SipEdgeRecord(
                id=edge_id, host=host, pid=pid, started_at=heartbeat_at, heartbeat_at=heartbeat_at
            )
        )
        s.commit()


def _crashed_call(db, clock, settings, make_services, *, edge_id: str, call_id: str, frames):
    """A call answered by `edge_id` whose edge died while the caller spoke: the record is
    open, the ticket in intake, the WAV's header says 20 ms though all `frames` are on disk."""
    services = make_services(None)
    services.edge_id = edge_id
    call = FakeCall(call_id=call_id)
    services.on_answered(call)
    path = Path(db.one(CallRecord, CallRecord.call_id == call_id).recording_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(b"".join(frames))
    with open(path, "r+b") as f:  # the header as the last patch before the kill left it
        f.seek(4)
        f.write(struct.pack("<I", 36 + 320))
        f.seek(40)
        f.write(struct.pack("<I", 320))
    return path, len(b"".join(frames)) / 2 / SAMPLE_RATE


def _recover(db, clock, task_queue, **kwargs):
    return recovery.recover_calls(
        db.factory,
        now=clock.now(),
        stale_after=STALE,
        enqueue_transcription=task_queue,
        **kwargs,
    )


def test_given_an_answered_call_when_its_report_starts_then_its_record_names_its_edge_and_recording(
    db, settings, make_services
):
    services = make_services(None)
    services.edge_id = "edge-1"
    services.on_answered(FakeCall(call_id="c-owner"))
    record = db.one(CallRecord, CallRecord.call_id == "c-owner")
    assert record.edge_id == "edge-1"
    assert record.recording_path == str(settings.recording_dir / "c-owner.wav")
    assert record.ended_at is None


def test_given_a_stale_edge_with_an_open_call_when_recovered_then_it_is_closed_from_its_recording(
    db, clock, settings, make_services, task_queue
):
    _edge(db, edge_id="dead", heartbeat_at=clock.now() - timedelta(minutes=5))
    path, seconds = _crashed_call(
        db, clock, settings, make_services, edge_id="dead", call_id="c-1", frames=[b"\1\0"] * 8000
    )
    clock.advance(timedelta(minutes=5))

    assert _recover(db, clock, task_queue) == ["c-1"]
    assert _recover(db, clock, task_queue) == []

    record = db.one(CallRecord, CallRecord.call_id == "c-1")
    assert record.answered_at is not None
    assert record.ended_at == record.answered_at + timedelta(seconds=seconds)
    assert record.talk_s == seconds == 1.0
    assert (record.disposition, record.end_reason) == (Disposition.FAILED, recovery.EDGE_LOST)
    with wave.open(str(path)) as w:
        assert w.getnframes() == 8000
    assert task_queue.sent == ["c-1"]
    assert db.one(SipEdgeRecord, col(SipEdgeRecord.id) == "dead").dead_at == clock.now()


def test_given_a_live_edge_when_recovered_then_its_call_is_left_alone(
    db, clock, settings, make_services, task_queue
):
    _edge(db, edge_id="alive", heartbeat_at=clock.now() - timedelta(seconds=5))
    _crashed_call(
        db, clock, settings, make_services, edge_id="alive", call_id="c-2", frames=[b"\0\0"] * 800
    )
    assert _recover(db, clock, task_queue) == []
    assert db.one(CallRecord, CallRecord.call_id == "c-2").ended_at is None
    assert task_queue.sent == []
    assert db.one(SipEdgeRecord, col(SipEdgeRecord.id) == "alive").dead_at is None


def test_given_a_predecessor_on_this_host_whose_process_is_gone_when_an_edge_starts_then_its_call_is_closed(  # noqa: E501
    db, clock, settings, make_services, task_queue
):
    # killed a moment ago: its heartbeat is still fresh, but its process is gone
    _edge(db, edge_id="before", heartbeat_at=clock.now(), pid=111)
    _edge(db, edge_id="other-host", heartbeat_at=clock.now(), host="sip-b.test", pid=111)
    _crashed_call(
        db, clock, settings, make_services, edge_id="before", call_id="c-3", frames=[b"\0\0"] * 800
    )
    _crashed_call(
        db, clock, settings, make_services, edge_id="other-host", call_id="c-4", frames=[]
    )
    me = recovery.EdgeIdentity(id="me", host=HOST, pid=222)
    _edge(db, edge_id="me", heartbeat_at=clock.now(), pid=222)

    closed = _recover(db, clock, task_queue, this_edge=me, alive=lambda pid: pid != 111)

    assert closed == ["c-3"]  # another host's edge is the sweep's, once its heartbeat stops
    assert db.one(CallRecord, CallRecord.call_id == "c-4").ended_at is None
    assert db.one(SipEdgeRecord, col(SipEdgeRecord.id) == "me").dead_at is None


def test_given_a_predecessor_whose_process_still_runs_when_an_edge_starts_then_its_call_is_left_alone(  # noqa: E501
    db, clock, settings, make_services, task_queue
):
    _edge(db, edge_id="sibling", heartbeat_at=clock.now(), pid=111)
    _crashed_call(db, clock, settings, make_services, edge_id="sibling", call_id="c-5", frames=[])
    me = recovery.EdgeIdentity(id="me", host=HOST, pid=222)
    assert _recover(db, clock, task_queue, this_edge=me, alive=lambda pid: True) == []


def test_given_two_recoverers_racing_when_they_recover_then_each_call_is_closed_and_queued_once(
    db, clock, settings, make_services, task_queue
):
    _edge(db, edge_id="dead", heartbeat_at=clock.now() - timedelta(minutes=5))
    for n in range(6):
        _crashed_call(
            db, clock, settings, make_services, edge_id="dead", call_id=f"r-{n}",
            frames=[b"\0\0"] * 800,
        )  # fmt: skip
    start = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def recoverer() -> None:
        engine = make_engine(db.url)  # a process of its own: its own connections
        try:
            start.wait()
            results.append(
                recovery.recover_calls(
                    make_session_factory(engine),
                    now=clock.now(),
                    stale_after=STALE,
                    enqueue_transcription=task_queue,
                )
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=recoverer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    closed = sorted(c for result in results for c in result)
    assert closed == [f"r-{n}" for n in range(6)]
    assert sorted(task_queue.sent) == closed
    assert db.count(CallRecord, col(CallRecord.ended_at).is_(None)) == 0


def test_given_a_recovered_call_when_its_transcription_runs_then_its_ticket_leaves_intake(
    db, clock, settings, make_services, task_queue, full_recognizer
):
    _edge(db, edge_id="dead", heartbeat_at=clock.now() - timedelta(minutes=5))
    _crashed_call(
        db, clock, settings, make_services, edge_id="dead", call_id="c-6",
        frames=frames_of("도로에 물이 새고 있습니다"),
    )  # fmt: skip
    assert _recover(db, clock, task_queue) == ["c-6"]
    [call_id] = task_queue.sent
    call_intake.transcribe_recording(
        session_factory=db.factory,
        recognizer=full_recognizer,
        call_id=call_id,
        clock=clock,
        settings=settings,
    )
    ticket, record = ticket_of(db, "c-6")
    assert record.transcribed_by == TranscribedBy.offline
    assert ticket.status != Status.intake
    assert ticket.description != call_intake.PLACEHOLDER


def test_given_the_beat_schedule_then_lost_calls_are_recovered_every_minute_by_a_registered_task(
    settings,
):
    from celery.schedules import crontab

    from hotline.worker import make_app

    app = make_app(settings)
    app.loader.import_default_modules()
    entry = app.conf.beat_schedule["recover-lost-calls"]
    assert entry["task"] == "calls.recover_lost_calls" and entry["task"] in app.tasks
    assert entry["schedule"] == crontab(minute="*") and entry["options"]["expires"] < 60


def test_given_a_predecessor_with_this_processs_pid_when_an_edge_starts_then_its_call_is_closed(
    db, clock, settings, make_services, task_queue
):
    # a container restarted: the edge is pid 1 again, and pid 1 (us) is alive
    _edge(db, edge_id="before", heartbeat_at=clock.now(), pid=1)
    _crashed_call(db, clock, settings, make_services, edge_id="before", call_id="c-7", frames=[])
    me = recovery.EdgeIdentity(id="me", host=HOST, pid=1)
    assert _recover(db, clock, task_queue, this_edge=me, alive=lambda pid: True) == ["c-7"]
    assert task_queue.sent == ["c-7"]  # no audio: transcribed as empty, to the manual queue
