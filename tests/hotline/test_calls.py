"""Phone calls into the platform on real components: the call flows on a FakeCall (simulated
time, no sockets), the real Vosk recognizer on espeak-ng Korean speech, the real pipeline,
rules and dispatch, on SQLite and PostgreSQL. Each test has a database of its own, because
the call services write from threads of their own (the partial writer, the finishers).
The shared fixtures and callers are in conftest.py; the callback dialer's tests are in
test_calls_callbacks.py, the recognizer's start (warm-up, decoder processes) in
test_calls_setup.py."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from asr.offline import transcribe_wav
from core import runtime
from dispatch import rulebook
from dispatch.models import Assignment, Unit
from hotline import tasks
from hotline.calls import hints as call_hints
from hotline.calls import intake as call_intake
from hotline.calls import partials as call_partials
from hotline.calls import setup as call_setup
from hotline.calls import status_line
from telephony.endpoint import CallDirection, CallState, Disposition
from telephony.flows import serve_inbound
from telephony.models import CallRecord, TranscribedBy
from telephony.recording import EndReason
from tests.conftest import START
from tests.factories import build_world
from tests.hotline.conftest import (
    LEAK,
    LEAK_KEYWORD,
    caller,
    frames_of,
    lead_unit,
    serve,
    ticket_of,
)
from tests.telephony.fakes import FakeCall, FakePrompts, silence
from tickets.models import Channel, Status, Ticket, TicketEvent

# ---------------------------------------------------------------- intake


def test_given_an_answered_call_then_its_ticket_exists_at_once_and_a_repeat_makes_no_second(
    db, make_services
):
    services = make_services(None)
    call = FakeCall(call_id="a1b2@pbx.test", remote_number="13912345678")

    services.on_answered(call)
    services.on_answered(call)

    ticket, record = ticket_of(db, "a1b2@pbx.test")
    assert (ticket.status, ticket.channel) == (Status.intake, Channel.phone)
    assert ticket.caller_phone == "13912345678"
    assert ticket.description == call_intake.PLACEHOLDER
    assert db.count(Ticket) == 1 and db.count(CallRecord) == 1
    assert (record.direction, record.caller_number) == (CallDirection.INBOUND, "13912345678")
    assert record.from_uri == "sip:13912345678@caller.test"
    assert record.transcribed_by is TranscribedBy.none and record.transcript is None


def test_given_anonymous_caller_then_the_ticket_has_no_phone(db, make_services):
    services = make_services(None)
    services.on_answered(FakeCall(call_id="anon@pbx.test", remote_number="anonymous"))
    ticket, record = ticket_of(db, "anon@pbx.test")
    assert ticket.caller_phone is None and record.caller_number == "anonymous"


def test_given_a_caller_reporting_a_leak_when_the_report_ends_then_ticket_holds_the_live_transcript_and_goes_to_water(  # noqa: E501
    db, make_services, recognizer, settings, task_queue
):
    services = make_services(recognizer)
    call = caller()

    serve(services, call, settings)

    ticket, record = ticket_of(db, call.call_id)
    recording = Path(record.recording_path)
    offline = transcribe_wav(recognizer=recognizer, path=recording).text
    assert LEAK_KEYWORD in offline
    assert record.transcript == offline and record.transcribed_by is TranscribedBy.live
    assert record.live_text == offline and record.live_seq >= 1
    assert recording.parent == settings.recording_dir and record.end_reason == "silence"
    assert ticket.status == Status.dispatched and lead_unit(db, ticket.id) == "WATER"
    assert ticket.description.startswith(f"【电话录音转写】{offline}")
    assert (ticket.category_code, ticket.caller_phone) == ("020301", "13800000000")
    assert task_queue.sent == []  # nothing for the offline path
    with db.session() as s:
        note = s.scalars(
            select(TicketEvent).where(
                TicketEvent.ticket_id == ticket.id, TicketEvent.action == "note"
            )
        ).one()
    assert note.data["recording"] == str(recording) and note.data["call_id"] == call.call_id
    assert record.ended_at is not None and record.disposition is Disposition.COMPLETED

    # A hook run again for the same call changes nothing: no second ticket or dispatch.
    services.on_answered(call)
    services.on_finished(call, recording, EndReason.SILENCE)
    services.drain()
    assert db.count(Ticket) == 1 and db.count(Assignment) == 1


def test_given_live_asr_full_when_the_report_ends_then_the_task_transcribes_it_offline_and_dispatches(  # noqa: E501
    db, make_services, full_recognizer, recognizer, settings, task_queue, clock
):
    services = make_services(full_recognizer)
    call = caller(call_id="offline-1@pbx.test")

    serve(services, call, settings)

    ticket, record = ticket_of(db, call.call_id)
    assert task_queue.sent == [call.call_id]
    assert ticket.status == Status.intake and record.transcript is None

    runtime.set_runtime(settings=settings, session_factory=db.factory, clock=clock)
    tasks.set_recognizer(full_recognizer)
    try:
        assert tasks.transcribe_recording.run(call.call_id) == "transcribed"
        assert tasks.transcribe_recording.run(call.call_id) == "already transcribed"
    finally:
        tasks.set_recognizer(None)
        runtime.reset_runtime()

    ticket, record = ticket_of(db, call.call_id)
    expected = transcribe_wav(recognizer=recognizer, path=Path(record.recording_path)).text
    assert record.transcript == expected and record.transcribed_by is TranscribedBy.offline
    assert ticket.status == Status.dispatched and lead_unit(db, ticket.id) == "WATER"
    assert db.count(Assignment) == 1


def test_given_a_caller_who_hangs_up_during_the_greeting_then_the_ticket_waits_in_the_manual_queue(
    db, make_services, recognizer, settings, task_queue
):
    services = make_services(recognizer)
    call = FakeCall(frames=silence(1000), hangup_at_ms=100, call_id="gone@pbx.test")

    serve(services, call, settings)

    ticket, record = ticket_of(db, call.call_id)
    assert ticket.status == Status.pending_dispatch and ticket.description == call_hints.NO_SPEECH
    assert record.transcript == "" and record.recording_path is None
    assert record.disposition is Disposition.CALLER_HUNG_UP and task_queue.sent == []


def test_untranscribed_calls_are_found_for_the_requeue_beat(
    db, make_services, full_recognizer, settings, clock
):
    services = make_services(full_recognizer)
    call = caller(call_id="lost@pbx.test")
    serve(services, call, settings)
    with db.session() as s:
        assert call_intake.untranscribed(s, now=clock.now()) == []
        assert call_intake.untranscribed(s, now=clock.now() + timedelta(minutes=11)) == [
            call.call_id
        ]


# ---------------------------------------------------------------- call records


def test_live_partials_are_written_together_at_most_once_per_interval(db, make_services, clock):
    services = make_services(None)
    for call_id in ("p1@pbx.test", "p2@pbx.test"):
        services.on_answered(FakeCall(call_id=call_id))
    failures = []

    def factory():  # the first transaction fails: the writer retries its rows one by one
        if not failures:
            failures.append(1)
            raise RuntimeError("database gone for a moment")
        return db.factory()

    writer = call_partials.PartialWriter(factory, clock, interval_s=3600)
    try:
        writer.offer("p1@pbx.test", "첫")  # nothing written for an hour: written at once
        for _ in range(500):  # bounded: the writer's thread writes within milliseconds
            if db.one(CallRecord, CallRecord.call_id == "p1@pbx.test").live_text == "첫":
                break
            threading.Event().wait(0.01)
        # Within the interval: kept, the latest text per call, written together at the end.
        writer.offer("p1@pbx.test", "첫 번")
        writer.offer("p2@pbx.test", "둘")
        writer.offer("p1@pbx.test", "첫 번째")
        threading.Event().wait(0.2)  # time enough to write, were a write due
        assert db.one(CallRecord, CallRecord.call_id == "p1@pbx.test").live_seq == 1
        assert db.one(CallRecord, CallRecord.call_id == "p2@pbx.test").live_seq == 0
    finally:
        writer.stop()
    one = db.one(CallRecord, CallRecord.call_id == "p1@pbx.test")
    two = db.one(CallRecord, CallRecord.call_id == "p2@pbx.test")
    assert (one.live_text, one.live_seq) == ("첫 번째", 2)
    assert (two.live_text, two.live_seq) == ("둘", 1)
    assert failures == [1]


def test_every_call_gets_a_record_answered_or_cancelled(db, make_services):
    services = make_services(None)
    answered = FakeCall(call_id="ans@pbx.test")
    answered.arrived_at = START - timedelta(seconds=4)
    services.on_answered(answered)
    answered.hangup()
    answered.ended_at = START + timedelta(seconds=95)
    cancelled = FakeCall(call_id="cxl@pbx.test", remote_number="02912345678")
    cancelled.state, cancelled.answered_at = CallState.RINGING, None
    cancelled._end(Disposition.CANCELLED)
    cancelled.ended_at = START + timedelta(seconds=7)

    services.on_ended(answered)
    services.on_ended(cancelled)
    services.drain()  # the ends are written by the record writer

    done = db.one(CallRecord, CallRecord.call_id == "ans@pbx.test")
    assert (done.wait_s, done.talk_s, done.disposition) == (4.0, 95.0, Disposition.COMPLETED)
    assert done.ticket_id is not None
    gone = db.one(CallRecord, CallRecord.call_id == "cxl@pbx.test")
    assert gone.ticket_id is None and gone.answered_at is None
    assert (gone.wait_s, gone.talk_s, gone.disposition) == (7.0, 0.0, Disposition.CANCELLED)
    assert db.count(Ticket) == 1


# ---------------------------------------------------------------- hints and the status line


def test_hints_find_districts_streets_and_spoken_phone_numbers(session, clock):
    build_world(session, clock.now())
    rulebook.load_units(session, text=rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))
    places = call_hints.places_of(session.scalars(select(Unit)).all())
    hints = call_hints.five_element_hints(
        "我住在鼓楼街道，小区停水三天了，电话幺三八 一二三四 五六七八，备用 0912-3456789",
        places=places,
    )
    assert hints.streets == ["鼓楼街道"] and hints.districts == ["榆阳区"]
    assert hints.phones == ["13812345678", "09123456789"]
    assert not call_hints.five_element_hints("로이버 먹 리라", places=places)


def test_given_a_keyed_ticket_number_without_dash_then_status_and_reply_deadline_are_told(
    session, clock
):
    from hotline.intake import submit
    from tickets.models import TicketCreate

    build_world(session, clock.now())
    sub = submit(
        session, data=TicketCreate(description="公司拖欠工资三个月"), actor=None, now=clock.now()
    )
    [lead] = sub.dispatch.assignments

    answer = status_line.lookup_status(session, number=sub.ticket.number.replace("-", ""))

    assert answer.status == "dispatched" and answer.deadline == lead.reply_due_at
    assert status_line.lookup_status(session, number="20991231000001") is None
    assert status_line.ticket_number("20261127000042") == "20261127-000042"


def test_given_the_caller_hangs_up_mid_report_and_the_edge_tells_first_then_the_live_transcript_is_kept(  # noqa: E501
    db, make_services, recognizer, settings, task_queue
):
    services = make_services(recognizer)
    speech = frames_of(LEAK)
    call = FakeCall(
        frames=silence(200) + speech + silence(2000),
        call_id="hangup@pbx.test",
        hangup_at_ms=200 + 20 * len(speech) + 600,
    )
    hooks = services.hooks()
    finished = hooks.on_finished

    def edge_first(c, path, reason):
        services.on_ended(c)  # the edge's observer thread won the race
        finished(c, path, reason)

    hooks.on_finished = edge_first
    serve_inbound(
        call, prompts=FakePrompts(), hooks=hooks, settings=call_setup.flow_settings(settings)
    )
    services.drain()

    ticket, record = ticket_of(db, call.call_id)
    assert record.end_reason == "hangup" and record.disposition is Disposition.CALLER_HUNG_UP
    assert record.transcribed_by is TranscribedBy.live and LEAK_KEYWORD in record.transcript
    assert ticket.status == Status.dispatched and task_queue.sent == []


def test_given_menu_callers_then_status_is_read_back_and_callback_requests_reach_the_queue(
    db, make_services, settings, clock
):
    from hotline.intake import submit
    from tickets.models import TicketCreate

    with db.session() as s:
        sub = submit(
            s, data=TicketCreate(description="公司拖欠工资三个月"), actor=None, now=clock.now()
        )
        s.commit()
    settings.telephony.menu_enabled = True
    services = make_services(None)
    prompts = FakePrompts()
    keyed = [
        (400 + 200 * i, k) for i, k in enumerate("2" + sub.ticket.number.replace("-", "") + "#")
    ]
    status_call = FakeCall(frames=silence(60_000), keys=keyed, call_id="status@pbx.test")
    serve_inbound(
        status_call,
        prompts=prompts,
        hooks=services.hooks(),
        settings=call_setup.flow_settings(settings),
    )
    services.on_ended(status_call)
    services.drain()
    heard = status_call.heard(prompts)
    assert "status_dispatched" in heard and "deadline" in heard
    assert db.one(CallRecord, CallRecord.call_id == "status@pbx.test").ticket_id is None

    keys = [(400 + 200 * i, k) for i, k in enumerate("313912345678#")]
    back = FakeCall(frames=silence(60_000), keys=keys, call_id="back@pbx.test")
    serve_inbound(
        back, prompts=prompts, hooks=services.hooks(), settings=call_setup.flow_settings(settings)
    )
    ticket, _ = ticket_of(db, "back@pbx.test")
    assert ticket.status == Status.pending_dispatch
    assert ticket.description == "来电要求回拨，回拨号码：13912345678"
