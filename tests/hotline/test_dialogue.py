"""A bridged call's two-speaker transcript (issue 17): the caller and the operator each speak
Korean (espeak-ng) through a real bridge, each side is decoded live by the real Vosk model,
and the call record keeps the turns — while they talk (the partial writer's batched writes)
and final at the end — with the caller's words alone still making the ticket. When the
operator's side had no live stream (capacity: the caller's side comes first), or nothing was
live, the stereo recording's two channels are decoded offline and merged by time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from asr.config import AsrConfig
from asr.vosk_engine import VoskRecognizer
from hotline.calls import intake as call_intake
from hotline.calls.operators import OperatorCalls
from telephony.acd import AgentOffer
from telephony.bridge import Bridge
from telephony.models import CallRecord, TranscribedBy
from telephony.recording import EndReason
from tests.asr.dialogue_audio import (
    chunks,
    line_noise,
    same_length,
    stereo_wav,
    timeline,
    with_noise,
)
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, LEAK_KEYWORD, ticket_of
from tests.speech import read_wav, speak
from tests.telephony.fakes import PipeCall
from tickets.models import Status, TicketEvent

ASK = "네 주소를 말씀해 주세요"  # the operator: "yes, tell me the address"
ADDRESS = "인민로 십이번지 입니다"  # the caller: "it is number 12, Renmin road"


def _pcm(text: str) -> bytes:
    pcm, rate = read_wav(speak(text))
    assert rate == 8000
    return pcm


def _sides() -> tuple[bytes, bytes]:
    """The caller reports (0.3 s), the operator asks (3.5 s), the caller answers (7 s). The
    operator's headset carries a faint noise floor (the caller's line is clean: the
    keyword is what the clean recording decodes to)."""
    left = timeline([(0.3, _pcm(LEAK)), (7.0, _pcm(ADDRESS))])
    right = with_noise(timeline([(3.5, _pcm(ASK))]), seed=2)
    return same_length(left, right)


@pytest.fixture
def patient(settings):
    """This machine is shared and often loaded: the end of a call waits for live decoding
    to catch up rather than give the call to the offline path these tests do not expect."""
    settings.telephony.live_finish_timeout_s = 120.0
    return settings


def _warmed(recognizer: VoskRecognizer, count: int) -> VoskRecognizer:
    """Recognizers that have decoded speech, as ``hotline sip`` warms them at start: a cold
    one decodes its first seconds several times slower."""
    recognizer.warm(_pcm(ASK), count=count)
    return recognizer


@pytest.fixture
def operators(make_services, patient, recognizer):
    made = OperatorCalls(make_services(_warmed(recognizer, 2)), settings=patient)
    yield made
    made.close()


class BridgedTalk:
    """A caller bridged to operator 7 by a real ``Bridge``, both sides played in step from
    their timelines (``pace_s`` per 20 ms frame: 5 ms is four times real time); after the
    script both lines carry their noise floor until ``finish`` (at most ``max_wall_s``), so
    neither side's clock runs on silence the bridge makes up."""

    def __init__(
        self,
        operators: OperatorCalls,
        call_id: str,
        left: bytes,
        right: bytes,
        *,
        pace_s: float = 0.005,
        max_wall_s: float = 300.0,
    ) -> None:
        self.operators = operators
        self.caller = PipeCall(call_id)
        self.agent = PipeCall("leg-" + call_id, remote_number="1001")
        self.bridge = Bridge(
            self.caller,
            self.agent,
            recording_dir=operators.settings.recording_dir,
            on_audio=lambda side, pcm: operators.on_audio(self.caller, side, pcm),
            # Longer than any stall of the feeder on a loaded machine: a read that times out
            # adds silence to that side alone, which would shift its clock against the other's.
            read_timeout_s=2.0,
        )
        self._script = list(zip(chunks(left), chunks(right), strict=True))
        self._pace = pace_s
        self._max_frames = int(max_wall_s / pace_s)
        self.fed, self._stop = threading.Event(), threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def start(self) -> None:
        self.operators.on_bridged(self.caller, self.agent, AgentOffer("7", "1001"))
        self.bridge.start()
        self._feeder.start()

    def _feed(self) -> None:
        hiss = chunks(line_noise(0.2, seed=3))
        start = time.monotonic()
        for i in range(self._max_frames):
            if i < len(self._script):
                left, right = self._script[i]
            else:
                self.fed.set()
                left, right = hiss[i % len(hiss)], hiss[(i + 5) % len(hiss)]
            if self._stop.is_set():
                return
            delay = start + self._pace * i - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.caller.feed(left)
            self.agent.feed(right)

    def finish(self):
        """The caller hangs up once the script is played; the bridge's result once the call
        is finished (its words written)."""
        assert self.fed.wait(120), "the script was not played"
        self._stop.set()
        self._feeder.join(5)
        self.caller.far_end_hangs_up()
        assert self.bridge.wait(10)
        self.operators.on_bridge_ended(self.caller, self.bridge.result)
        self.operators.services.on_ended(self.caller)
        self.operators.services.drain(180)
        return self.bridge.result


def _talk(operators: OperatorCalls, call_id: str, left: bytes, right: bytes, *, during=None):
    """The call played through; ``during`` runs while they talk."""
    talk = BridgedTalk(operators, call_id, left, right)
    talk.start()
    if during is not None:
        during()
    return talk.finish()


def _record(db, call_id: str) -> CallRecord:
    return db.one(CallRecord, CallRecord.call_id == call_id)


def _speakers(dialogue) -> list[str]:
    return [turn["speaker"] for turn in dialogue]


def _said(dialogue, speaker: str) -> str:
    return " ".join(t["text"] for t in dialogue if t["speaker"] == speaker)


def test_given_both_sides_speak_in_turn_then_the_dialogue_has_both_speakers_in_order_live_and_final(
    db, operators, task_queue
):
    call_id = "dialogue-live@pbx.test"
    left, right = _sides()
    seen_live: list[list[dict]] = []

    def watch() -> None:  # the turns the partial writer stores while they talk
        def both() -> bool:
            dialogue = _record(db, call_id).dialogue or []
            seen_live.append(dialogue)
            return {"caller", "operator"} <= set(_speakers(dialogue))

        wait_until(both, 90, message="both speakers in the live dialogue")

    _talk(operators, call_id, left, right, during=watch)

    record = _record(db, call_id)
    ticket, _ = ticket_of(db, call_id)
    dialogue = record.dialogue
    assert dialogue is not None
    assert _speakers(dialogue) == ["caller", "operator", "caller"]
    starts = [t["start_s"] for t in dialogue]
    assert starts == sorted(starts)
    assert 0.0 <= starts[0] < 2.3 < starts[1] < 6.0 < starts[2] < 9.0
    # The caller's side is the transcript, the ticket is made of it; the operator's words
    # are only in the dialogue.
    assert record.transcribed_by == TranscribedBy.live
    assert _said(dialogue, "caller") == record.transcript
    assert LEAK_KEYWORD in dialogue[0]["text"]
    assert dialogue[1]["text"] and dialogue[1]["text"] not in (record.transcript or "")
    assert ticket.status == Status.intake  # the operator's to decide, never dispatched
    assert task_queue.sent == []  # both sides were live: nothing left for the worker
    # Live, the turns already had both speakers in the order they spoke.
    live = next(d for d in seen_live if {"caller", "operator"} <= set(_speakers(d)))
    assert _speakers(live)[:2] == ["caller", "operator"]


def _calls_note_count(db, ticket_id: int) -> int:
    with db.session() as s:
        return sum(
            1
            for event in s.scalars(
                select(TicketEvent).where(col(TicketEvent.ticket_id) == ticket_id)
            )
            if (event.data or {}).get("kind") == "call"
        )


def test_given_the_operator_side_had_no_live_stream_then_the_worker_completes_the_dialogue_from_the_recording(  # noqa: E501
    db, clock, patient, make_services, vosk_model_dir, task_queue
):
    settings = patient
    one_stream = _warmed(
        VoskRecognizer(AsrConfig(model_path=vosk_model_dir, pool_size=2, max_live_streams=1)), 1
    )
    operators = OperatorCalls(make_services(one_stream), settings=settings)
    call_id = "dialogue-one-stream@pbx.test"
    left, right = _sides()
    try:
        result = _talk(operators, call_id, left, right)
    finally:
        operators.close()

    record = _record(db, call_id)
    # At the end: the caller's live words are on the ticket, the dialogue has the caller's
    # turns, and the worker is asked for the rest.
    assert record.transcribed_by == TranscribedBy.live and record.transcript
    assert set(_speakers(record.dialogue)) == {"caller"}
    assert task_queue.sent == [call_id]
    ticket, _ = ticket_of(db, call_id)
    notes = _calls_note_count(db, ticket.id)

    assert (
        call_intake.transcribe_recording(
            session_factory=db.factory,
            recognizer=one_stream,
            call_id=call_id,
            clock=clock,
            settings=settings,
        )
        == "transcribed"
    )

    record = _record(db, call_id)
    assert Path(record.recording_path) == result.recording
    assert _speakers(record.dialogue) == ["caller", "operator", "caller"]
    assert record.transcribed_by == TranscribedBy.live  # the caller's live words stay
    assert _calls_note_count(db, ticket.id) == notes  # and are not put on the ticket twice


def test_given_no_live_stream_then_both_channels_are_transcribed_offline_into_the_dialogue(
    db, clock, settings, make_services, full_recognizer, task_queue
):
    operators = OperatorCalls(make_services(full_recognizer), settings=settings)
    call_id = "dialogue-offline@pbx.test"
    caller = PipeCall(call_id)
    operators.on_bridged(caller, PipeCall("leg"), AgentOffer("7", "1001"))
    record = _record(db, call_id)
    assert record.dialogue == []  # marked two-speaker from the answer
    left, right = _sides()
    path = Path(record.recording_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stereo_wav(path, left, right)
    operators.services.on_finished(caller, path, EndReason.HANGUP)
    operators.services.drain()
    operators.close()
    assert task_queue.sent == [call_id]

    call_intake.transcribe_recording(
        session_factory=db.factory,
        recognizer=full_recognizer,
        call_id=call_id,
        clock=clock,
        settings=settings,
    )

    record = _record(db, call_id)
    ticket, _ = ticket_of(db, call_id)
    assert _speakers(record.dialogue) == ["caller", "operator", "caller"]
    assert record.transcribed_by == TranscribedBy.offline
    assert _said(record.dialogue, "caller") == record.transcript
    assert LEAK_KEYWORD in record.transcript
    assert ticket.status == Status.intake and LEAK_KEYWORD in ticket.description
    turns = record.dialogue
    assert turns[0]["end_s"] < turns[1]["start_s"] and turns[1]["end_s"] < turns[2]["start_s"]


def test_given_live_capacity_full_then_a_new_caller_takes_an_operator_side_s_stream(
    db, settings, make_services, vosk_model_dir, task_queue
):
    two_streams = VoskRecognizer(
        AsrConfig(model_path=vosk_model_dir, pool_size=3, max_live_streams=2)
    )
    services = make_services(two_streams)
    operators = OperatorCalls(services, settings=settings)
    try:
        bridged = PipeCall("bridged@pbx.test")
        operators.on_bridged(bridged, PipeCall("leg"), AgentOffer("7", "1001"))
        assert two_streams.stats().live == 2  # the caller's side and the operator's

        robot = PipeCall("robot@pbx.test")
        services.start_live(robot)

        assert two_streams.stats().live == 2
        assert robot.call_id in services._live and bridged.call_id in services._live
        assert bridged.call_id not in services._operator_live
    finally:
        operators.close()
        services.close()  # the two calls never end here: their live streams are let go
