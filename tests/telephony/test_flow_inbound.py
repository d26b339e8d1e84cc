"""Inbound flows on a FakeCall: simulated time, so minutes of call run in milliseconds."""

from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telephony.endpoint import FRAME_BYTES, CallState, Disposition
from telephony.flows import FlowHooks, FlowSettings, StatusAnswer, serve_inbound, status_query
from telephony.recording import EndpointerSettings, EndReason
from tests.telephony.fakes import FakeCall, FakePrompts, silence, speech


class Recorder:
    """FlowHooks that remember what they were told."""

    def __init__(self, statuses: dict[str, StatusAnswer] | None = None) -> None:
        self.events: list[tuple] = []
        self.audio: list[bytes] = []
        self.statuses = statuses or {}
        self.lookups: list[str] = []

    def hooks(self, **overrides) -> FlowHooks:
        def lookup(number: str) -> StatusAnswer | None:
            self.lookups.append(number)
            return self.statuses.get(number)

        base: dict[str, Callable[..., Any]] = {
            "on_answered": lambda call: self.events.append(("answered", call.call_id)),
            "on_audio": lambda call, frame: self.audio.append(frame),
            "on_finished": lambda call, path, reason: self.events.append(
                ("finished", path, reason)
            ),
            "lookup_status": lookup,
            "on_callback_number": lambda call, n: self.events.append(("callback", n)),
        }
        base.update(overrides)
        return FlowHooks(**base)


@pytest.fixture
def settings(tmp_path: Path) -> FlowSettings:
    return FlowSettings(recording_dir=tmp_path / "rec")


@pytest.fixture
def prompts() -> FakePrompts:
    return FakePrompts()


GREETING_MS = 200  # "greeting" + "beep", 100 ms each in FakePrompts


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return w.getnframes() / 8000


def test_given_a_caller_who_speaks_then_pauses_when_served_then_recorded_thanked_and_hung_up(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=silence(GREETING_MS) + speech(3000) + silence(2500))
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    assert call.heard(prompts) == ["greeting", "beep", "closing"]
    assert call.states == [
        CallState.GREETING,
        CallState.LISTENING,
        CallState.PROMPTING,
        CallState.ENDED,
    ]
    assert call.disposition is Disposition.COMPLETED
    assert rec.events[0] == ("answered", "fake-call-1")
    _, path, reason = rec.events[1]
    assert reason is EndReason.SILENCE
    # 3 s of speech and the 1.8 s hangover; the greeting's time is not in the recording.
    assert _wav_seconds(path) == pytest.approx(4.8, abs=0.05)
    assert rec.audio[0] == speech(3000)[0]
    assert b"".join(rec.audio) == Path(path).read_bytes()[44:]


def test_given_a_caller_who_hangs_up_mid_sentence_then_recording_kept_and_no_prompt(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=silence(GREETING_MS) + speech(5000), hangup_at_ms=2000)
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    _, path, reason = rec.events[-1]
    assert reason is EndReason.HANGUP
    assert _wav_seconds(path) == pytest.approx(1.8, abs=0.05)
    assert call.heard(prompts) == ["greeting", "beep"]
    assert call.disposition is Disposition.CALLER_HUNG_UP


def test_given_a_hang_up_during_the_greeting_then_finished_without_recording(prompts, settings):
    rec = Recorder()
    call = FakeCall(frames=silence(1000), hangup_at_ms=100)
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)
    assert rec.events == [("answered", "fake-call-1"), ("finished", None, EndReason.HANGUP)]


def test_given_silence_only_when_no_speech_timeout_passes_then_no_speech_prompt(prompts, settings):
    rec = Recorder()
    call = FakeCall(frames=silence(20_000, level=30))  # line noise ≈ -60 dBFS
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    _, path, reason = rec.events[-1]
    assert reason is EndReason.NO_SPEECH
    assert _wav_seconds(path) == pytest.approx(8.0, abs=0.05)
    assert call.heard(prompts) == ["greeting", "beep", "no_speech"]


def test_given_a_caller_who_never_stops_when_max_length_reached_then_cut(prompts, settings):
    rec = Recorder()
    short = replace(settings, endpointer=EndpointerSettings(max_length_s=5))
    call = FakeCall(frames=silence(GREETING_MS) + speech(60_000))
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=short)

    _, path, reason = rec.events[-1]
    assert reason is EndReason.MAX_LENGTH
    assert _wav_seconds(path) == pytest.approx(5.0, abs=0.05)
    assert call.heard(prompts)[-1] == "closing"


def test_given_a_phone_that_stops_sending_when_quiet_then_the_gap_is_timed_as_silence(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=silence(GREETING_MS) + speech(1000))  # then no packets at all
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    _, path, reason = rec.events[-1]
    assert reason is EndReason.SILENCE
    assert _wav_seconds(path) == pytest.approx(2.8, abs=0.21)  # read timeouts are 200 ms
    assert len(rec.audio) * FRAME_BYTES == Path(path).stat().st_size - 44


def test_given_a_failing_asr_hook_then_the_call_is_still_recorded(prompts, settings):
    rec = Recorder()

    def broken(call, frame):
        raise RuntimeError("recogniser down")

    call = FakeCall(frames=silence(GREETING_MS) + speech(1000) + silence(2000))
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(on_audio=broken), settings=settings)
    _, path, reason = rec.events[-1]
    assert reason is EndReason.SILENCE and _wav_seconds(path) > 2.5


def test_given_barge_in_when_the_caller_talks_over_the_greeting_then_it_stops_and_records(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=speech(2000) + silence(2000))
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, barge_in=True)
    )

    assert call.cleared_at == [100]  # after 5 loud frames
    assert call.heard(prompts) == ["greeting", "closing"]
    _, path, _ = rec.events[-1]
    assert _wav_seconds(path) == pytest.approx(3.8, abs=0.05)  # nothing of the speech lost


def test_given_no_barge_in_when_the_caller_talks_over_the_greeting_then_all_speech_is_kept(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=speech(2000) + silence(2000))
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    assert call.cleared_at == []  # the greeting played to its end
    assert call.heard(prompts) == ["greeting", "beep", "closing"]
    assert rec.audio[:100] == speech(2000)  # all 2 s, from its start, to the recogniser
    _, path, _ = rec.events[-1]
    assert _wav_seconds(path) == pytest.approx(len(rec.audio) * 0.02, abs=0.01)


def test_given_a_caller_who_says_it_all_over_the_greeting_and_hangs_up_then_it_is_recorded(
    prompts, settings
):
    rec = Recorder()
    call = FakeCall(frames=speech(2000), hangup_at_ms=180)  # before the 200 ms greeting ends
    serve_inbound(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    _, path, reason = rec.events[-1]
    assert reason is EndReason.HANGUP and path is not None
    assert _wav_seconds(path) == pytest.approx(0.18, abs=0.03)  # from the speech's start
    assert b"".join(rec.audio) == Path(path).read_bytes()[44:]
    assert call.heard(prompts) == ["greeting", "beep"]


# ---------------------------------------------------------------- menu
DEADLINE = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)  # 17:30 in Beijing
TICKET = "20261127000042"


def _keys(at: int, text: str, step: int = 300) -> list[tuple[int, str]]:
    return [(at + i * step, k) for i, k in enumerate(text)]


def test_given_the_menu_when_caller_picks_2_then_status_and_deadline_are_spoken(prompts, settings):
    rec = Recorder({TICKET: StatusAnswer("in_progress", DEADLINE)})
    call = FakeCall(frames=silence(60_000), keys=_keys(400, "2") + _keys(1000, TICKET + "#"))
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, menu_enabled=True)
    )

    digits = [f"digit_{d}" for d in TICKET]
    assert call.heard(prompts) == [
        "welcome",
        "menu",
        "enter_ticket",
        "ticket",
        *digits,
        "status_is",
        "status_in_progress",
        "deadline",
        "digit_2",
        "digit_0",
        "digit_2",
        "digit_6",
        "year",
        "ten",
        "digit_2",
        "month",
        "digit_4",
        "day",
        "ten",
        "digit_7",
        "hour",
        "digit_3",
        "ten",
        "minute",
        "goodbye",
    ]
    assert rec.lookups == [TICKET]
    assert CallState.MENU in call.states and call.states[0] is CallState.GREETING
    assert not any(e[0] == "answered" for e in rec.events)  # no ticket for a status query
    assert call.disposition is Disposition.COMPLETED


def test_given_the_menu_when_a_key_is_pressed_during_it_then_the_menu_stops(prompts, settings):
    call = FakeCall(frames=silence(30_000), keys=[(140, "3")] + _keys(2000, "13800001111#"))
    rec = Recorder()
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, menu_enabled=True)
    )

    assert call.cleared_at and call.cleared_at[0] == 140
    assert ("callback", "13800001111") in rec.events
    heard = call.heard(prompts)
    assert heard[:3] == ["welcome", "menu", "enter_callback"]
    assert heard[3:] == ["callback_is", *[f"digit_{d}" for d in "13800001111"], "callback_recorded"]


def test_given_the_menu_when_nobody_presses_a_key_then_the_report_flow_runs(prompts, settings):
    rec = Recorder()
    call = FakeCall(frames=silence(5400) + speech(2000) + silence(2000))
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, menu_enabled=True)
    )

    assert call.heard(prompts) == ["welcome", "menu", "speak_now", "beep", "closing"]
    assert rec.events[0][0] == "answered"
    assert rec.events[-1][2] is EndReason.SILENCE


def test_given_the_menu_when_an_invalid_key_then_told_and_asked_again(prompts, settings):
    rec = Recorder()
    call = FakeCall(frames=silence(20_000), keys=[(300, "9"), (800, "1")])
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, menu_enabled=True)
    )
    assert call.heard(prompts)[:6] == [
        "welcome",
        "menu",
        "invalid_key",
        "menu",
        "speak_now",
        "beep",
    ]


# ---------------------------------------------------------------- status query
def test_given_unknown_numbers_when_retried_then_not_found_twice_then_found(prompts, settings):
    rec = Recorder({"77": StatusAnswer("closed", None)})
    keys = _keys(500, "11#") + _keys(3000, "12#") + _keys(6000, "7*77#")
    call = FakeCall(frames=silence(30_000), keys=keys)
    status_query(call, prompts=prompts, hooks=rec.hooks(), settings=settings)

    assert rec.lookups == ["11", "12", "77"]  # "*" started the third number over
    assert call.heard(prompts) == [
        "enter_ticket",
        "not_found",
        "enter_ticket",
        "not_found",
        "enter_ticket",
        "ticket",
        "digit_7",
        "digit_7",
        "status_is",
        "status_closed",
        "goodbye",
    ]


def test_given_only_unknown_numbers_when_three_tries_used_then_goodbye(prompts, settings):
    rec = Recorder()
    keys = _keys(500, "1#") + _keys(3000, "2#") + _keys(6000, "3#")
    call = FakeCall(frames=silence(30_000), keys=keys)
    status_query(call, prompts=prompts, hooks=rec.hooks(), settings=settings)
    assert call.heard(prompts) == ["enter_ticket", "not_found"] * 3 + ["goodbye"]


def test_given_no_keys_when_asked_for_a_ticket_then_no_input_and_goodbye(prompts, settings):
    call = FakeCall(frames=silence(60_000))
    status_query(call, prompts=prompts, hooks=Recorder().hooks(), settings=settings)
    assert call.heard(prompts) == ["enter_ticket", "no_input"] * 3 + ["goodbye"]
    assert call.now_ms < 60_000


def test_given_a_hang_up_while_keying_then_the_flow_just_ends(prompts, settings):
    rec = Recorder()
    call = FakeCall(frames=silence(30_000), keys=_keys(500, "12"), hangup_at_ms=1000)
    status_query(call, prompts=prompts, hooks=rec.hooks(), settings=settings)
    assert rec.lookups == []
    assert call.disposition is Disposition.CALLER_HUNG_UP


def test_given_the_caller_talks_while_the_menu_waits_then_that_is_not_in_the_recording(
    prompts, settings
):
    rec = Recorder()
    # Menu over at 200 ms, then 5 s waiting for a key: the caller talks into the void.
    call = FakeCall(
        frames=silence(400)
        + speech(1000, level=3000)
        + silence(4000)
        + speech(2000)
        + silence(2500)
    )
    serve_inbound(
        call, prompts=prompts, hooks=rec.hooks(), settings=replace(settings, menu_enabled=True)
    )

    _, path, reason = rec.events[-1]
    assert reason is EndReason.SILENCE
    assert rec.audio[0] != speech(1000, level=3000)[0]
    assert b"".join(speech(1000, level=3000)) not in b"".join(rec.audio)
