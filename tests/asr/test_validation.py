"""What is refused before it can reach libvosk, which aborts or hangs on it."""

import math

import pytest

from asr.config import AsrConfig, default_model_path
from asr.recognizer import AsrError, check_pcm, check_sample_rate, parse_grammar


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 8000.0])
def test_given_a_telephone_or_studio_rate_when_checked_then_accepted(rate):
    assert check_sample_rate(rate) == int(rate)


@pytest.mark.parametrize(
    "rate", [0, -8000, 7999, 48001, 1_000_000, 8000.5, math.nan, math.inf, True, "8000", None]
)
def test_given_an_absurd_sample_rate_when_checked_then_asr_error(rate):
    with pytest.raises(AsrError, match="sample rate"):
        check_sample_rate(rate)


@pytest.mark.parametrize(
    ("grammar", "expected"),
    [
        ('["네", "아니요"]', ("네", "아니요")),
        (["네", " 아니요  [unk] "], ("네", "아니요 [unk]")),
        (("하나",), ("하나",)),
    ],
)
def test_given_a_list_of_phrases_when_parsed_then_phrases_are_kept(grammar, expected):
    assert parse_grammar(grammar) == expected


@pytest.mark.parametrize(
    ("grammar", "problem"),
    [
        ('["네", ', "not valid JSON"),
        ("네", "not valid JSON"),
        ('{"a": 1}', "list of phrases"),
        ('"네"', "list of phrases"),
        ("[]", "no phrases"),
        ([], "no phrases"),
        ("[1, 2]", "not a string"),
        ('[""]', "empty phrase"),
        (["네", "   "], "empty phrase"),
        ('[["네"]]', "not a string"),
    ],
)
def test_given_a_malformed_grammar_when_parsed_then_asr_error_names_it(grammar, problem):
    with pytest.raises(AsrError, match=problem):
        parse_grammar(grammar)


def test_given_odd_length_audio_when_checked_then_asr_error():
    assert check_pcm(bytearray(4)) == b"\0" * 4
    with pytest.raises(AsrError, match="whole number of 16-bit samples"):
        check_pcm(b"\0\0\0")
    with pytest.raises(AsrError, match="bytes"):
        check_pcm("text")


def test_given_defaults_when_configured_then_model_is_the_installed_korean_one():
    config = AsrConfig()
    assert config.resolved_model_path() == default_model_path()
    assert (default_model_path() / "am" / "final.mdl").is_file()
    assert config.max_live_streams >= 1
    # Every live stream finds a warm recognizer in the pool.
    assert config.pool_size == config.max_live_streams
    assert AsrConfig(max_live_streams=0).pool_size == 1
    assert AsrConfig(max_live_streams=8, pool_size=3).pool_size == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pool_size": -1},
        {"max_live_streams": -1},
        {"live_lag_s": 0},
        {"live_lag_s": 10, "live_backlog_limit_s": 5},
        {"live_batch_s": 0},
    ],
)
def test_given_nonsense_settings_when_configured_then_asr_error(kwargs):
    with pytest.raises(AsrError):
        AsrConfig(**kwargs)
