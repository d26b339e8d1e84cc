"""Crash recovery of operators' calls (issue 17 with issue 15's rule): when the SIP edge that
bridged a caller to an operator dies, the next start (or the sweep) closes the call from its
stereo recording, gives the operator's draft the caller's words and leaves it theirs,
releases the operator, and a caller still waiting in the queue is counted as lost by the
platform — not as an abandon."""

from __future__ import annotations

import array
import struct
import threading
import wave
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, AgentStateChange, Role
from accounts.service import create_user
from asr.offline import transcribe_pcm
from core.db import make_engine, make_session_factory, saved_id
from hotline.calls import acd_figures, recovery
from hotline.calls import intake as call_intake
from hotline.calls.operators import OperatorCalls
from telephony.acd import AgentOffer
from telephony.endpoint import Disposition
from telephony.models import CallRecord, QueueOutcome, SipEdgeRecord, TranscribedBy
from telephony.recording import SAMPLE_RATE
from tests.hotline.conftest import LEAK, LEAK_KEYWORD, frames_of, ticket_of
from tests.telephony.fakes import FakeCall
from tickets.models import Status

STALE = timedelta(seconds=60)
WRAP_UP_S = 20.0


@pytest.fixture
def operators(make_services, settings):
    services = make_services(None)
    services.edge_id = "dead"
    made = OperatorCalls(services, settings=settings)
    yield made
    made.close()


def _edge(db, clock, *, edge_id: str = "dead", heartbeat_at=None) -> None:
    with db.session() as s:
        beat = heartbeat_at or clock.now()
        s.add(SipEdgeRecord(id=edge_id, host="h", pid=999_999, started_at=beat, heartbeat_at=beat))
        s.commit()


def _operator(db, clock, *, name: str = "li", extension: str = "1001") -> int:
    with db.session() as s:
        user, _ = create_user(
            s, username=name, display_name=name, role=Role.operator, now=clock.now()
        )
        s.flush()
        agents.sign_in(s, user, extension, "", clock.now())
        agents.set_ready(s, saved_id(user), clock.now())
        s.commit()
        return saved_id(user)


def _ring(db, clock, call_id: str) -> int:
    with db.session() as s:
        agent = agents.reserve(s, [], call_id, clock.now())
        s.commit()
    assert agent is not None
    return agent.user_id


def _state(db, clock, user_id: int) -> agents.Agent:
    with db.session() as s:
        return agents.status(s, user_id, clock.now())


def _moves_by_recovery(db, user_id: int) -> list[AgentStateChange]:
    with db.session() as s:
        return [c for c in agents.changes_of(s, user_id) if c.source == "reconciler"]


def _stereo_crash(path: Path, left: list[bytes], right: list[bytes]) -> float:
    """The stereo file a bridge leaves at a kill: caller left, operator right, all the audio
    on disk but a header that still says 20 ms. Its true length in seconds."""
    n = max(len(left), len(right))
    pcm_l = array.array("h", b"".join(left).ljust(n * 320, b"\0"))
    pcm_r = array.array("h", b"".join(right).ljust(n * 320, b"\0"))
    both = array.array("h", bytes(len(pcm_l) * 4))
    both[0::2], both[1::2] = pcm_l, pcm_r
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(both.tobytes())
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 36 + 640))
        f.seek(40)
        f.write(struct.pack("<I", 640))
    return len(pcm_l) / SAMPLE_RATE


def _bridged(db, clock, operators, *, call_id: str, operator_id: int, left, right):
    """A caller queued, rung to the operator and bridged by the edge "dead", which then died
    mid-talk: the record open, the draft in intake, the operator on the call."""
    call = FakeCall(call_id=call_id)
    operators.placement(call)
    clock.advance(timedelta(seconds=4))
    _ring(db, clock, call_id)
    clock.advance(timedelta(seconds=2))
    with db.session() as s:
        assert agents.answered(s, operator_id, call_id, clock.now()) is not None
        s.commit()
    operators.on_bridged(call, FakeCall(call_id="leg"), AgentOffer(str(operator_id), "1001"))
    record = db.one(CallRecord, CallRecord.call_id == call_id)
    return Path(record.recording_path), _stereo_crash(Path(record.recording_path), left, right)


def _recover(db, clock, task_queue, **kwargs):
    return recovery.recover_calls(
        db.factory,
        now=clock.now(),
        stale_after=STALE,
        enqueue_transcription=task_queue,
        wrap_up_s=kwargs.pop("wrap_up_s", WRAP_UP_S),
        **kwargs,
    )


def test_given_an_edge_dead_mid_bridge_when_recovered_then_closed_from_the_stereo_file_and_the_operator_wraps_up(  # noqa: E501
    db, clock, operators, task_queue
):
    operator_id = _operator(db, clock)
    path, seconds = _bridged(
        db, clock, operators, call_id="b-1", operator_id=operator_id,
        left=[b"\1\0"] * 150, right=[b"\2\0"] * 150,
    )  # fmt: skip
    _edge(db, clock, heartbeat_at=clock.now() + timedelta(seconds=9))
    clock.advance(timedelta(minutes=5))

    assert _recover(db, clock, task_queue) == ["b-1"]

    record = db.one(CallRecord, CallRecord.call_id == "b-1")
    assert (record.end_reason, record.disposition) == (recovery.EDGE_LOST, Disposition.FAILED)
    assert record.agent_answered_at is not None and record.answered_at is not None
    # talk up to the last evidence: the bridge's file, which began at the operator's answer
    assert record.ended_at == record.agent_answered_at + timedelta(seconds=seconds)
    assert seconds == 3.0
    assert record.talk_s == (record.ended_at - record.answered_at).total_seconds()
    assert record.queue_outcome is QueueOutcome.agent  # answered: its outcome stands
    assert record.recording_path == str(path)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getnframes()) == (2, 3 * SAMPLE_RATE)
    assert path.stat().st_size == 44 + 3 * SAMPLE_RATE * 4
    assert task_queue.sent == ["b-1"]  # the draft waits for the caller's words

    state = _state(db, clock, operator_id)
    assert (state.state, state.call_key) == (AgentState.wrap_up, "b-1")
    assert state.wrap_up_until == clock.now() + timedelta(seconds=WRAP_UP_S)
    [move] = _moves_by_recovery(db, operator_id)
    assert (move.from_state, move.to_state, move.call_key) == (
        AgentState.on_call,
        AgentState.wrap_up,
        "b-1",
    )

    assert _recover(db, clock, task_queue) == []  # once
    assert task_queue.sent == ["b-1"] and len(_moves_by_recovery(db, operator_id)) == 1
    with db.session() as s:  # the wrap-up ends as any other: ready for the next call
        assert agents.end_wrap_ups(s, clock.now() + timedelta(seconds=WRAP_UP_S))
        s.commit()
    assert _state(db, clock, operator_id).state is AgentState.ready


def test_given_no_wrap_up_time_when_recovered_then_the_operator_is_ready_at_once(
    db, clock, operators, task_queue
):
    operator_id = _operator(db, clock)
    _bridged(
        db, clock, operators, call_id="b-2", operator_id=operator_id,
        left=[b"\0\0"] * 50, right=[b"\0\0"] * 50,
    )  # fmt: skip
    _edge(db, clock)
    clock.advance(timedelta(minutes=5))
    assert _recover(db, clock, task_queue, wrap_up_s=0) == ["b-2"]
    state = _state(db, clock, operator_id)
    assert (state.state, state.call_key) == (AgentState.ready, None)


def test_given_a_recovered_bridge_when_its_transcription_runs_then_the_draft_gets_the_callers_words_and_stays_the_operators(  # noqa: E501
    db, clock, operators, task_queue, full_recognizer, settings
):
    operator_id = _operator(db, clock)
    caller, operator = frames_of(LEAK), frames_of("안녕하세요 무엇을 도와드릴까요")
    _bridged(
        db, clock, operators, call_id="b-3", operator_id=operator_id, left=caller, right=operator
    )
    _edge(db, clock)
    clock.advance(timedelta(minutes=5))
    assert _recover(db, clock, task_queue) == ["b-3"]

    [call_id] = task_queue.sent
    call_intake.transcribe_recording(
        session_factory=db.factory,
        recognizer=full_recognizer,
        call_id=call_id,
        clock=clock,
        settings=settings,
    )
    ticket, record = ticket_of(db, "b-3")
    caller_alone = transcribe_pcm(
        recognizer=full_recognizer, pcm16=b"".join(caller), sample_rate=SAMPLE_RATE
    ).text
    assert LEAK_KEYWORD in caller_alone
    # the caller's channel alone, the operator's words left out
    assert (record.transcript, record.transcribed_by) == (caller_alone, TranscribedBy.offline)
    assert caller_alone in ticket.description
    # an operator's call: never dispatched by itself, still the operator's draft
    assert ticket.status is Status.intake and record.agent_user_id == operator_id


def test_given_a_caller_waiting_in_the_dead_edges_queue_when_recovered_then_lost_not_abandoned_and_the_rung_operator_ready(  # noqa: E501
    db, clock, operators, task_queue
):
    operator_id = _operator(db, clock)
    clock.advance(timedelta(seconds=30))
    with db.session() as s:
        idle_since = agents.status(s, operator_id, clock.now()).idle_since
    operators.placement(FakeCall(call_id="q-1"))
    clock.advance(timedelta(seconds=3))
    _ring(db, clock, "q-1")
    last_beat = clock.now() + timedelta(seconds=1)
    _edge(db, clock, heartbeat_at=last_beat)
    clock.advance(timedelta(minutes=5))

    assert _recover(db, clock, task_queue) == ["q-1"]

    record = db.one(CallRecord, CallRecord.call_id == "q-1")
    assert record.end_reason == recovery.EDGE_LOST
    assert (record.queue_outcome, record.queue_left_at) == (QueueOutcome.lost, last_beat)
    assert record.ended_at == last_beat and record.ticket_id is None
    assert task_queue.sent == []  # nothing was said to an operator: no draft
    state = _state(db, clock, operator_id)
    assert (state.state, state.call_key) == (AgentState.ready, None)
    assert state.idle_since == idle_since  # their place in the idle order is kept

    with db.session() as s:
        figures = acd_figures.report(
            s,
            start=record.arrived_at - timedelta(hours=1),
            end=clock.now(),
            interval=acd_figures.Interval.day,
            tz=ZoneInfo("Asia/Shanghai"),
            now=clock.now(),
            answer_target_s=15.0,
            short_abandon_s=5.0,
        ).total
    # the platform lost it: not the caller's abandon, and not answered in time either
    assert (figures.queued, figures.answered, figures.abandoned) == (1, 0, 0)
    assert figures.abandon_rate == 0.0 and figures.service_level == 0.0
    assert (figures.lost, figures.refused) == (1, 0)  # a figure of its own


def test_given_an_edge_that_ended_the_call_and_died_before_moving_the_operator_when_recovered_then_released(  # noqa: E501
    db, clock, operators, task_queue
):
    operator_id = _operator(db, clock)
    _bridged(
        db, clock, operators, call_id="b-4", operator_id=operator_id,
        left=[b"\0\0"] * 50, right=[b"\0\0"] * 50,
    )  # fmt: skip
    with db.session() as s:  # the edge wrote the end of the call, then was killed
        row = s.get(CallRecord, db.one(CallRecord, CallRecord.call_id == "b-4").id)
        assert row is not None
        row.ended_at, row.disposition = clock.now(), Disposition.COMPLETED
        s.add(row)
        s.commit()
    _edge(db, clock)
    clock.advance(timedelta(minutes=5))

    assert _recover(db, clock, task_queue) == []  # the call was closed by its edge
    assert _state(db, clock, operator_id).state is AgentState.wrap_up
    assert db.one(CallRecord, CallRecord.call_id == "b-4").end_reason is None


def test_given_a_live_edge_when_recovered_then_its_operator_on_a_call_is_left_alone(
    db, clock, operators, task_queue
):
    operator_id = _operator(db, clock)
    _bridged(
        db, clock, operators, call_id="b-5", operator_id=operator_id,
        left=[b"\0\0"] * 50, right=[b"\0\0"] * 50,
    )  # fmt: skip
    _edge(db, clock)  # beating now
    assert _recover(db, clock, task_queue) == []
    assert recovery.release_operators(db.factory, edge_ids=["other"], now=clock.now()) == []
    assert _state(db, clock, operator_id).state is AgentState.on_call


def test_given_two_recoverers_racing_when_they_recover_then_each_operator_is_moved_once(
    db, clock, operators, task_queue
):
    ids = [_operator(db, clock, name=f"op{n}", extension=f"100{n}") for n in range(3)]
    for n, operator_id in enumerate(ids):
        _bridged(
            db, clock, operators, call_id=f"r-{n}", operator_id=operator_id,
            left=[b"\0\0"] * 50, right=[b"\0\0"] * 50,
        )  # fmt: skip
    _edge(db, clock)
    clock.advance(timedelta(minutes=5))
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
                    wrap_up_s=WRAP_UP_S,
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
    assert sorted(c for result in results for c in result) == ["r-0", "r-1", "r-2"]
    for operator_id in ids:
        assert _state(db, clock, operator_id).state is AgentState.wrap_up
        assert len(_moves_by_recovery(db, operator_id)) == 1
    assert db.count(CallRecord, col(CallRecord.ended_at).is_(None)) == 0
