from __future__ import annotations

from pathlib import Path

import pytest

from telephony.endpoint import CallDirection, CallState, Disposition
from telephony.flows import FlowHooks, FlowSettings, SurveyResult, survey
from tests.telephony.fakes import FakeCall, FakePrompts, silence


@pytest.fixture
def settings(tmp_path: Path) -> FlowSettings:
    return FlowSettings(recording_dir=tmp_path)


def _run(keys, settings, **call_kwargs):
    prompts = FakePrompts()
    results = []
    call = FakeCall(
        frames=silence(60_000), keys=keys, direction=CallDirection.OUTBOUND, **call_kwargs
    )
    hooks = FlowHooks(on_survey_result=lambda c, r: results.append((c.call_id, r)))
    returned = survey(call, prompts=prompts, hooks=hooks, settings=settings)
    return returned, results, call.heard(prompts), call


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("1", SurveyResult.SATISFIED),
        ("2", SurveyResult.BASICALLY_SATISFIED),
        ("3", SurveyResult.DISSATISFIED),
    ],
)
def test_given_a_key_after_the_question_then_the_result_is_reported(settings, key, expected):
    returned, results, heard, call = _run([(500, key)], settings)
    assert returned is expected
    assert results == [("fake-call-1", expected)]
    assert heard == ["survey_question", "thanks"]
    assert call.states[:2] == [CallState.PROMPTING, CallState.MENU]
    assert call.disposition is Disposition.COMPLETED


def test_given_an_invalid_key_then_the_question_is_repeated_once(settings):
    returned, _, heard, _ = _run([(500, "7"), (2000, "1")], settings)
    assert returned is SurveyResult.SATISFIED
    assert heard == ["survey_question", "invalid_key", "survey_question", "thanks"]


def test_given_two_invalid_keys_then_no_result(settings):
    returned, results, heard, _ = _run([(500, "7"), (2000, "#")], settings)
    assert returned is None and results == [("fake-call-1", None)]
    assert heard == ["survey_question", "invalid_key", "survey_question", "goodbye"]


def test_given_no_key_then_no_result(settings):
    returned, results, heard, _ = _run([], settings)
    assert returned is None and results == [("fake-call-1", None)]
    assert heard == ["survey_question", "goodbye"]


def test_given_a_key_during_the_question_then_it_counts_and_stops_the_question(settings):
    returned, _, heard, call = _run([(60, "3")], settings)
    assert returned is SurveyResult.DISSATISFIED
    assert call.cleared_at == [60]
    assert heard == ["survey_question", "thanks"]


def test_given_a_hang_up_after_the_key_then_the_result_still_counts(settings):
    returned, results, _, call = _run([(500, "2")], settings, hangup_at_ms=520)
    assert returned is SurveyResult.BASICALLY_SATISFIED
    assert results == [("fake-call-1", SurveyResult.BASICALLY_SATISFIED)]
    assert call.disposition is Disposition.CALLER_HUNG_UP


def test_given_a_hang_up_during_the_question_then_no_result(settings):
    returned, results, _, _ = _run([], settings, hangup_at_ms=50)
    assert returned is None and results == [("fake-call-1", None)]


def test_given_a_callee_who_sends_no_audio_when_a_key_comes_during_the_question_then_it_counts(
    settings,
):
    prompts = FakePrompts()
    call = FakeCall(frames=[], keys=[(40, "1")], direction=CallDirection.OUTBOUND)
    assert (
        survey(call, prompts=prompts, hooks=FlowHooks(), settings=settings)
        is SurveyResult.SATISFIED
    )
