from __future__ import annotations

import shutil
import wave
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from telephony.flows import REQUIRED_PROMPTS, FlowHooks, FlowSettings, serve_inbound
from telephony.prompts import BEEP, LANGUAGES, PromptError, PromptSet, date_pieces, number_pieces
from telephony.recording import frame_dbfs
from tests.speech import write_wav
from tests.telephony.fakes import FakeCall, silence, speech

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def korean(tmp_path_factory) -> PromptSet:
    prompts = PromptSet(tmp_path_factory.mktemp("prompts"), language="ko")
    made = prompts.ensure()
    assert set(made) == set(prompts.texts)
    return prompts


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_language_has_every_prompt_the_flows_use(language):
    assert REQUIRED_PROMPTS <= set(LANGUAGES[language].texts)


def test_given_setup_when_generated_then_every_prompt_is_non_silent_8khz_16_bit(korean):
    for name in korean.texts:
        with wave.open(str(korean.path(name)), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2), name
            assert w.getnframes() > 8000 * 0.1, name
        assert frame_dbfs(korean.pcm(name)) > -30, name
    assert len(korean.pcm("greeting")) > len(korean.pcm("digit_1")) * 3


def test_given_generated_prompts_when_ensured_again_then_nothing_is_regenerated(korean):
    before = {n: korean.path(n).stat().st_mtime_ns for n in korean.texts}
    again = PromptSet(korean.directory.parent, language="ko")
    assert again.ensure() == []
    assert {n: korean.path(n).stat().st_mtime_ns for n in korean.texts} == before


def test_given_a_changed_text_when_ensured_then_only_that_prompt_is_regenerated(korean, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(korean.directory.parent, copy)
    changed = PromptSet(copy, language="ko", texts={"closing": "감사합니다"})
    assert changed.ensure() == ["closing"]
    assert changed.pcm("closing") != korean.pcm("closing")
    (copy / "ko" / "digit_3.wav").unlink()
    assert changed.ensure() == ["digit_3"]


def test_given_a_greeting_wav_at_44khz_stereo_when_ensured_then_converted(korean, tmp_path):
    t = np.arange(44100) / 44100
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    stereo = np.column_stack([tone, tone]).ravel().tobytes()
    custom = tmp_path / "greeting.wav"
    with wave.open(str(custom), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo)
    shutil.copytree(korean.directory.parent, tmp_path / "p")
    prompts = PromptSet(tmp_path / "p", language="ko", overrides={"greeting": custom})
    assert prompts.ensure() == ["greeting"]
    assert len(prompts.pcm("greeting")) == pytest.approx(16000, abs=40)
    assert PromptSet(tmp_path / "p", language="ko", overrides={"greeting": custom}).ensure() == []


def test_given_a_ready_8khz_greeting_then_it_is_used_as_is(korean, tmp_path):
    pcm = b"".join(speech(500))
    custom = write_wav(tmp_path / "g.wav", pcm, 8000)
    shutil.copytree(korean.directory.parent, tmp_path / "p")
    prompts = PromptSet(tmp_path / "p", language="ko", overrides={"greeting": custom})
    prompts.ensure()
    assert prompts.pcm("greeting") == pcm


@pytest.mark.parametrize("content", [b"this is not audio at all", b"RIFF\x00\x00\x00\x00WAVE"])
def test_given_a_broken_greeting_wav_when_ensured_then_a_clear_error(tmp_path, content):
    broken = tmp_path / "greeting.wav"
    broken.write_bytes(content)
    prompts = PromptSet(tmp_path / "p", language="ko", overrides={"greeting": broken})
    with pytest.raises(PromptError, match="greeting.wav"):
        prompts.ensure()


def test_given_a_missing_greeting_file_then_a_clear_error(tmp_path):
    prompts = PromptSet(tmp_path, language="ko", overrides={"greeting": tmp_path / "nope.wav"})
    with pytest.raises(PromptError, match="does not exist"):
        prompts.ensure()


def test_given_an_unknown_language_then_refused(tmp_path):
    with pytest.raises(PromptError, match="klingon"):
        PromptSet(tmp_path, language="klingon")


def test_given_mandarin_when_generated_then_the_cmn_voice_speaks_the_chinese_texts(tmp_path):
    texts = LANGUAGES["zh"].texts
    prompts = PromptSet(tmp_path, language="zh")
    assert prompts.voice == "cmn"
    assert "12345" not in texts["greeting"] and "幺二三四五" in texts["greeting"]
    # Only a few prompts, to keep the run short: the cmn voice and Chinese text are the point.
    few = ["greeting", "digit_7", "status_closed"]
    assert sorted(prompts.ensure(few)) == sorted(few)
    assert len(prompts.pcm("greeting")) / 16000 > 3
    assert frame_dbfs(prompts.pcm("digit_7")) > -30


@pytest.mark.parametrize(
    ("n", "pieces"),
    [
        (0, ["digit_0"]),
        (7, ["digit_7"]),
        (10, ["ten"]),
        (12, ["ten", "digit_2"]),
        (20, ["digit_2", "ten"]),
        (31, ["digit_3", "ten", "digit_1"]),
        (2026, ["digit_2", "digit_0", "digit_2", "digit_6"]),
    ],
)
def test_numbers_are_composed_from_digits_and_ten(n, pieces):
    assert number_pieces(n) == pieces


def test_a_utc_deadline_is_spoken_as_the_local_date_and_time():
    late = datetime(2026, 12, 31, 16, 5, tzinfo=UTC)  # 1 January, 00:05 in Beijing
    assert date_pieces(late, SHANGHAI) == [
        "digit_2",
        "digit_0",
        "digit_2",
        "digit_7",
        "year",
        "digit_1",
        "month",
        "digit_1",
        "day",
        "digit_0",
        "hour",
        "digit_5",
        "minute",
    ]
    midnight = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 2 March, 00:00
    assert date_pieces(midnight, SHANGHAI)[-4:] == ["digit_3", "month", "digit_2", "day"]


def test_given_real_prompts_when_a_report_call_is_served_then_they_are_played(korean, tmp_path):
    call = FakeCall(frames=silence(15_000) + speech(1000) + silence(3000))
    serve_inbound(
        call, prompts=korean, hooks=FlowHooks(), settings=FlowSettings(recording_dir=tmp_path)
    )
    played = [pcm for _, pcm in call.played]
    assert played[0] == korean.pcm("greeting") + korean.pcm(BEEP)
    assert played[-1] == korean.pcm("closing")
