"""The SIP edge's recognizer at start (hotline.calls.setup): the warm-up of the live pool
on the greeting or configured audio, and the decoder processes and threads the settings
ask for, on the real Vosk model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from asr.processes import DecoderProcesses
from asr.vosk_engine import VoskRecognizer
from core.settings import AsrSettings, Settings
from hotline.calls import services as call_services
from hotline.calls import setup as call_setup
from tests.hotline.conftest import LEAK
from tests.speech import read_wav, speak
from tests.telephony.fakes import FakePrompts


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


def test_given_the_edge_stopping_when_warming_fails_then_no_error_is_logged(
    tmp_path, vosk_model_dir, caplog
):
    """A stop (Ctrl-C at start) takes the decoders down under the warm-up: that is the
    stop, not a fault to report at ERROR."""
    broken = tmp_path / "warmup.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    settings = warm_settings(tmp_path, vosk_model_dir, warmup_audio=broken)
    recognizer = VoskRecognizer(call_setup.asr_config(settings))
    stopping = threading.Event()
    stopping.set()
    with caplog.at_level(logging.INFO):
        assert call_setup.warm_recognizers(settings, recognizer, FakePrompts(), stopping) == 0
    assert "ASR warm-up stopped with the edge" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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
    # On 1-2 CPUs the default decodes in the SIP process's threads (bench/calls.py there:
    # more live calls than two decoder processes of one thread).
    for cpus in (1, 2):
        monkeypatch.setattr(call_setup.os, "cpu_count", lambda cpus=cpus: cpus)
        assert isinstance(
            call_setup.live_recognizer(warm_settings(tmp_path, vosk_model_dir)), VoskRecognizer
        )
        assert call_setup.default_decode_processes(cpus) == 0
    assert call_setup.default_decode_processes(None) == 0  # unknown: taken as one CPU
    assert [call_setup.default_decode_processes(n) for n in (3, 4, 16)] == [3, 4, 16]
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
