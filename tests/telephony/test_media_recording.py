from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from telephony.endpoint import FRAME_BYTES
from telephony.recording import (
    Endpointer,
    EndpointerSettings,
    EndReason,
    WavRecorder,
    frame_dbfs,
    recording_path,
)
from tests.speech import read_wav, speak
from tests.telephony.fakes import silence, speech


def _run(frames: list[bytes], settings: EndpointerSettings | None = None):
    ep = Endpointer(settings)
    for i, frame in enumerate(frames):
        reason = ep.feed(frame)
        if reason is not None:
            return reason, i + 1, ep
    return None, len(frames), ep


def _frames(pcm: bytes) -> list[bytes]:
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def test_levels_of_silence_noise_and_speech():
    assert frame_dbfs(bytes(FRAME_BYTES)) == float("-inf")
    assert frame_dbfs(silence(20, level=30)[0]) == pytest.approx(-61, abs=2)
    assert frame_dbfs(speech(20)[0]) == pytest.approx(-17.7, abs=0.5)


def test_given_speech_with_a_short_pause_then_ends_after_the_hangover_not_at_the_pause():
    frames = silence(500) + speech(1000) + silence(1000) + speech(1000) + silence(5000)
    reason, at, ep = _run(frames)
    assert reason is EndReason.SILENCE
    assert at == (500 + 1000 + 1000 + 1000 + 1800) // 20
    assert ep.speech_started_at == 25


def test_given_clicks_shorter_than_speech_start_then_not_speech():
    frames = (speech(60) + silence(500)) * 20
    reason, at, ep = _run(frames)
    assert reason is EndReason.NO_SPEECH and at == 400 and not ep.heard_speech


def test_given_endless_speech_then_max_length():
    reason, at, _ = _run(speech(10_000), EndpointerSettings(max_length_s=3))
    assert (reason, at) == (EndReason.MAX_LENGTH, 150)


def test_given_time_without_packets_then_it_counts_as_silence():
    ep = Endpointer(EndpointerSettings(end_silence_s=1.0))
    for frame in speech(500):
        assert ep.feed(frame) is None
    assert ep.feed_silence(40) is None
    assert ep.feed_silence(40) is EndReason.SILENCE
    assert ep.frames == 25 + 50


def test_given_espeak_korean_speech_with_line_noise_then_end_is_found_after_it():
    pcm, rate = read_wav(speak("도로에 물이 새고 있습니다. 빨리 고쳐 주세요."))
    assert rate == 8000
    rng = np.random.default_rng(1)
    lead = silence(1000, level=30)
    spoken = _frames(pcm)
    noisy = [
        (np.frombuffer(f, "<i2") + rng.standard_normal(160) * 30).astype("<i2").tobytes()
        for f in spoken
    ]
    reason, at, ep = _run(lead + noisy + silence(4000, level=30))
    assert reason is EndReason.SILENCE
    assert abs(ep.speech_started_at - len(lead)) <= 10  # within 200 ms of the first word
    # Ends one hangover after the speech's end (espeak trails ≈ 0.1–0.3 s of quiet).
    assert len(lead) + len(spoken) < at <= len(lead) + len(spoken) + 90 + 5


def test_given_frames_when_recorded_then_a_16_bit_8khz_mono_wav_of_that_length(tmp_path):
    path = recording_path(tmp_path / "calls", "abc@10.0.0.1")
    with WavRecorder(path) as rec:
        for frame in speech(1000):
            rec.write(frame)
        rec.write_silence(25)
    assert rec.duration_s == 1.5
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == 12000
        assert w.readframes(50 * 160) == b"".join(speech(1000))


def test_given_a_hostile_call_id_then_the_recording_stays_in_its_directory(tmp_path: Path):
    path = recording_path(tmp_path, "../../etc/passwd")
    assert path.parent == tmp_path and path.name == "etc_passwd.wav"
    assert recording_path(tmp_path, "...").name == "call.wav"


def _noisy(frames: list[bytes], level: float, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        np.clip(np.frombuffer(f, "<i2") + rng.standard_normal(160) * level, -32768, 32767)
        .astype("<i2")
        .tobytes()
        for f in frames
    ]


def test_given_street_noise_when_adaptive_then_speech_still_ends_but_fixed_runs_to_max():
    pcm, _ = read_wav(speak("도로에 물이 새고 있습니다. 빨리 고쳐 주세요."))
    spoken = _frames(pcm)
    # Noise at ≈ -33 dBFS: above the fixed -40 dBFS threshold, as on a busy street.
    frames = _noisy(silence(1000) + spoken + silence(6000), level=730, seed=3)
    fixed, _, _ = _run(frames, EndpointerSettings(max_length_s=8))
    assert fixed is EndReason.MAX_LENGTH
    adaptive, at, ep = _run(frames, EndpointerSettings(max_length_s=8, noise_margin_db=10))
    assert adaptive is EndReason.SILENCE
    assert ep.heard_speech and at > 50 + len(spoken)


def test_given_a_reused_call_id_then_the_earlier_recording_is_kept(tmp_path: Path):
    path = recording_path(tmp_path, "same-id")
    with WavRecorder(path) as first:
        first.write(speech(100)[0])
    with WavRecorder(path) as second:
        second.write_silence(1)
    assert first.path == path and second.path.name == "same-id-2.wav"
    assert read_wav(path)[0] == speech(100)[0]
