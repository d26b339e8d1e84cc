"""What the phone-call tests share (test_calls*.py): a database of each test's own with the
demo city and a Korean rule, the call services on it, callers speaking espeak-ng Korean, and
the real Vosk recognizer (tests/asr's fixtures, one per test run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session, col

from asr.config import AsrConfig
from asr.vosk_engine import VoskRecognizer
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory
from core.settings import Settings, TelephonySettings
from dispatch import handling, review, rulebook
from dispatch.models import Assignment
from hotline.calls import services as call_services
from hotline.calls import setup as call_setup
from hotline.tables import metadata
from telephony.endpoint import FRAME_BYTES
from telephony.flows import serve_inbound
from telephony.models import CallRecord
from tests.asr.conftest import decoder_processes, recognizer, vosk_config, vosk_model_dir  # noqa: F401 - fixtures
from tests.factories import World, build_world
from tests.speech import read_wav, speak
from tests.telephony.fakes import FakeCall, FakePrompts, silence
from tickets.models import Ticket

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
            return s.scalars(select(func.count()).select_from(model).where(*where)).one()


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
        ticket = s.get(Ticket, record.ticket_id)
    assert ticket is not None, f"call {call_id} has no ticket"
    return ticket, record


def lead_unit(db: Db, ticket_id: int) -> str:
    with db.session() as s:
        [lead] = s.scalars(select(Assignment).where(col(Assignment.ticket_id) == ticket_id)).all()
    return next(code for code, unit in db.world.units.items() if unit.id == lead.unit_id)


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
        assert sub.dispatch is not None and sub.ticket.id is not None
        [lead, _co] = sub.dispatch.assignments
        assert lead.id is not None
        handler = db.world.handlers["WATER"]
        handling.sign(s, assignment_id=lead.id, actor=handler, now=now)
        handling.reply(s, assignment_id=lead.id, text="已抢修恢复供水", actor=handler, now=now)
        review.review_reply(s, ticket_id=sub.ticket.id, approve=True, actor=None, now=now)
        s.commit()
        return sub.ticket.id


@pytest.fixture
def callback_settings(settings: Settings) -> Settings:
    settings.telephony.callback_uri = "sip:{number}@gateway.test"
    settings.telephony.callback_hours = (0, 24)
    return settings
