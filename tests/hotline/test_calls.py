"""Phone calls into the platform on real components: the call flows on a FakeCall (simulated
time, no sockets), the real Vosk recognizer on espeak-ng Korean speech, the real pipeline,
rules and dispatch, on SQLite and PostgreSQL. Each test has a database of its own, because
the call services write from threads of their own (the partial writer, the finishers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlmodel import Session

from asr.config import AsrConfig
from asr.offline import transcribe_wav
from asr.processes import DecoderProcesses
from asr.vosk_engine import VoskRecognizer
from core import runtime
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory
from core.settings import AsrSettings, Settings, TelephonySettings
from dispatch import rulebook
from dispatch import service as dispatching
from dispatch.models import Assignment, Unit
from hotline import tasks
from hotline.calls import callbacks as call_callbacks
from hotline.calls import dialer as call_dialer
from hotline.calls import hints as call_hints
from hotline.calls import intake as call_intake
from hotline.calls import partials as call_partials
from hotline.calls import services as call_services
from hotline.calls import setup as call_setup
from hotline.calls import status_line
from hotline.tables import metadata
from telephony.endpoint import FRAME_BYTES, CallDirection, CallFailed, CallState, Disposition
from telephony.flows import FlowSettings, serve_inbound
from telephony.models import CallbackAttempt, CallbackOutcome, CallRecord, TranscribedBy
from telephony.recording import EndReason
from tests.asr.conftest import decoder_processes, recognizer, vosk_config, vosk_model_dir  # noqa: F401
from tests.conftest import START
from tests.factories import World, build_world
from tests.speech import read_wav, speak
from tests.telephony.fakes import FakeCall, FakePrompts, silence
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketEvent

# espeak-ng's Korean decodes to "로이버 먹 리라" with the deterministic model, and to "모이모
# 립밤 먹이 니다" once it has been through G.711 μ-law: the rule pack keys on what the
# recogniser really hears.
LEAK = "도로에 물이 새고 있습니다"
LEAK_KEYWORD = "로이버"
LEAK_KEYWORD_ULAW = "립밤"
KOREAN_RULES = [
    {
        "name": "누수 (ko)",
        "priority": 1,
        "conditions": {"text_any": [LEAK_KEYWORD, LEAK_KEYWORD_ULAW]},
        "actions": {"category_code": "020301", "category_name": "供水", "lead_unit": "WATER"},
    }
]


@dataclass
class Db:
    factory: Callable[[], Session]
    world: World
    url: str

    def session(self) -> Session:
        return self.factory()

    def one(self, model, *where):
        with self.factory() as s:
            return s.scalars(select(model).where(*where)).one()

    def count(self, model, *where) -> int:
        with self.factory() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def db(fresh_db_url: str, clock: FrozenClock) -> Iterator[Db]:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        world = build_world(s, clock.now())
        for rule in KOREAN_RULES:
            rulebook.create_rule(s, data=rule, now=clock.now())
        s.commit()
    try:
        yield Db(factory, world, fresh_db_url)
    finally:
        engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test", data_dir=tmp_path, telephony=TelephonySettings(partial_interval_s=0.05)
    )


@dataclass
class Queue:
    sent: list[str] = field(default_factory=list)

    def __call__(self, call_id: str) -> None:
        self.sent.append(call_id)


@pytest.fixture
def task_queue() -> Queue:
    return Queue()


@pytest.fixture
def make_services(
    db, clock, settings, task_queue
) -> Iterator[Callable[..., call_services.CallServices]]:
    made: list[call_services.CallServices] = []

    def make(recognizer) -> call_services.CallServices:
        services = call_services.CallServices(
            session_factory=db.factory,
            clock=clock,
            settings=settings,
            recognizer=recognizer,
            enqueue_transcription=task_queue,
        )
        made.append(services)
        return services

    yield make
    for services in made:
        services.close()


@pytest.fixture(scope="session")
def full_recognizer(vosk_model_dir) -> VoskRecognizer:
    """Live capacity zero: every call is transcribed offline from its recording."""
    return VoskRecognizer(AsrConfig(model_path=vosk_model_dir, pool_size=2, max_live_streams=0))


def frames_of(text: str) -> list[bytes]:
    pcm, rate = read_wav(speak(text))
    assert rate == 8000
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
    return frames


def caller(
    text: str = LEAK, *, call_id: str = "call-1@pbx.test", number: str = "13800000000"
) -> FakeCall:
    """A caller who waits out the greeting, says `text` and pauses until the report ends."""
    return FakeCall(
        frames=silence(200) + frames_of(text) + silence(2500), call_id=call_id, remote_number=number
    )


def serve(services: call_services.CallServices, call: FakeCall, settings: Settings) -> None:
    serve_inbound(
        call,
        prompts=FakePrompts(),
        hooks=services.hooks(),
        settings=call_setup.flow_settings(settings),
    )
    services.on_ended(call)
    services.drain()


def ticket_of(db: Db, call_id: str) -> tuple[Ticket, CallRecord]:
    record = db.one(CallRecord, CallRecord.call_id == call_id)
    with db.session() as s:
        return s.get(Ticket, record.ticket_id), record


def lead_unit(db: Db, ticket_id: int) -> str:
    with db.session() as s:
        [lead] = s.scalars(select(Assignment).where(Assignment.ticket_id == ticket_id)).all()
    return next(code for code, unit in db.world.units.items() if unit.id == lead.unit_id)


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


# ---------------------------------------------------------------- callbacks (回访)


def reviewed_ticket(db: Db, clock: FrozenClock, phone: str = "13700000000") -> int:
    from hotline.intake import submit
    from tickets.models import TicketCreate

    now = clock.now()
    with db.session() as s:
        sub = submit(
            s,
            data=TicketCreate(description="小区停水两天了", caller_phone=phone),
            actor=None,
            now=now,
        )
        [lead, _co] = sub.dispatch.assignments
        handler = db.world.handlers["WATER"]
        dispatching.sign(s, assignment_id=lead.id, actor=handler, now=now)
        dispatching.reply(s, assignment_id=lead.id, text="已抢修恢复供水", actor=handler, now=now)
        dispatching.review_reply(s, ticket_id=sub.ticket.id, approve=True, actor=None, now=now)
        s.commit()
        return sub.ticket.id


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


@pytest.fixture
def callback_settings(settings: Settings) -> Settings:
    settings.telephony.callback_uri = "sip:{number}@gateway.test"
    settings.telephony.callback_hours = (0, 24)
    return settings


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
        dispatching.close(
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


# ---------------------------------------------------------------- ASR warm-up at start


class SpokenGreeting:
    """Prompts whose greeting is real speech (the warm-up's default audio)."""

    def pcm(self, name: str) -> bytes:
        assert name == "greeting"
        return read_wav(speak(LEAK))[0]


def warm_settings(tmp_path: Path, vosk_model_dir: Path, **asr: object) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        asr=AsrSettings(model_path=vosk_model_dir, max_live_streams=2, **asr),
    )


def test_given_defaults_when_the_edge_starts_then_one_warm_recognizer_per_live_stream(
    tmp_path, vosk_model_dir
):
    settings = warm_settings(tmp_path, vosk_model_dir)
    recognizer = VoskRecognizer(call_setup.asr_config(settings))

    assert (
        call_setup.warm_recognizers(settings, recognizer, SpokenGreeting(), threading.Event()) == 2
    )
    assert recognizer.stats().idle == 2
    streams = [recognizer.try_open_stream() for _ in range(2)]
    assert recognizer.stats().created == 2  # the live calls took warmed ones
    for stream in streams:
        stream.close()


def test_given_warm_up_audio_in_another_format_when_warming_then_converted_and_used(
    tmp_path, vosk_model_dir
):
    settings = warm_settings(
        tmp_path,
        vosk_model_dir,
        warm_recognizers=1,
        warmup_audio=speak("가로등이 고장 났어요", rate=16000),
    )
    recognizer = VoskRecognizer(call_setup.asr_config(settings))
    assert call_setup.warm_recognizers(settings, recognizer, FakePrompts(), threading.Event()) == 1
    assert recognizer.stats().idle == 1


def test_given_broken_warm_up_audio_when_warming_then_logged_and_the_edge_goes_on(
    tmp_path, vosk_model_dir, caplog
):
    broken = tmp_path / "warmup.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    settings = warm_settings(tmp_path, vosk_model_dir, warmup_audio=broken)
    recognizer = VoskRecognizer(call_setup.asr_config(settings))
    assert call_setup.warm_recognizers(settings, recognizer, FakePrompts(), threading.Event()) == 0
    assert "ASR warm-up skipped" in caplog.text and str(broken) in caplog.text
    # FakePrompts' greeting is 100 ms of a tone: too short to warm anything.
    short = warm_settings(tmp_path, vosk_model_dir)
    assert call_setup.warm_recognizers(short, recognizer, FakePrompts(), threading.Event()) == 0
    assert "too short" in caplog.text
    off = warm_settings(tmp_path, vosk_model_dir, warm_recognizers=0)
    assert call_setup.warm_recognizers(off, recognizer, SpokenGreeting(), threading.Event()) == 0
    assert recognizer.stats().created == 0


def test_given_decode_process_settings_then_the_edge_decodes_in_that_many_children(
    tmp_path, vosk_model_dir, monkeypatch
):
    monkeypatch.setattr(call_setup.os, "cpu_count", lambda: 3)
    default = call_setup.live_recognizer(warm_settings(tmp_path, vosk_model_dir))
    # One process per CPU, one decoder thread each: no more runnable decoders than cores.
    assert default.stats().processes == 3 and default.threads == 1
    assert (
        call_setup.live_recognizer(
            warm_settings(tmp_path, vosk_model_dir, decode_threads=2)
        ).threads
        == 2
    )
    # Fewer processes than CPUs share the CPUs out among them.
    assert (
        call_setup.live_recognizer(
            warm_settings(tmp_path, vosk_model_dir, decode_processes=2)
        ).threads
        == 2
    )
    assert (
        call_setup.live_recognizer(
            warm_settings(tmp_path, vosk_model_dir, decode_processes=1)
        ).threads
        == 3
    )
    assert call_setup.decode_threads(None, 4) == 1 and call_setup.decode_threads(5, 4) == 5
    threads = call_setup.live_recognizer(
        warm_settings(tmp_path, vosk_model_dir, decode_processes=0)
    )
    assert isinstance(threads, VoskRecognizer)

    settings = warm_settings(tmp_path, vosk_model_dir, decode_processes=2)
    children = call_setup.live_recognizer(settings)
    assert isinstance(children, DecoderProcesses)
    children.load()
    try:
        # The default warm-up, one per live stream, shared out among the children.
        assert (
            call_setup.warm_recognizers(settings, children, SpokenGreeting(), threading.Event())
            == 2
        )
        services = call_services.CallServices(
            session_factory=None, clock=None, settings=settings, recognizer=children
        )
        assert services._slots is None  # the children take their streams in turn
        services.close()
    finally:
        children.close()
    with pytest.raises(ValidationError):
        AsrSettings(decode_processes=-1)
    with pytest.raises(ValidationError):
        AsrSettings(decode_threads=0)
    with pytest.raises(ValidationError):
        AsrSettings(live_batch_s=0)
