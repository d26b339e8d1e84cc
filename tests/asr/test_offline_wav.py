"""What the offline transcription reads of a recording: a mono WAV as it is, a stereo one (a
call an operator took: caller left, operator right) as its caller's channel, anything else
refused in words."""

from __future__ import annotations

import struct
import wave

import pytest

from asr.offline import read_wav
from asr.recognizer import AsrError


def _wav(path, channels: int, frames: bytes, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(8000)
        wav.writeframes(frames)


def test_a_stereo_recording_is_read_as_its_left_channel(tmp_path):
    left, right = [1, -2, 300, -32768], [7, 8, -9, 32767]
    interleaved = b"".join(struct.pack("<hh", a, b) for a, b in zip(left, right, strict=True))
    _wav(tmp_path / "bridge.wav", 2, interleaved)
    pcm, rate = read_wav(tmp_path / "bridge.wav")
    assert rate == 8000
    assert list(struct.unpack(f"<{len(left)}h", pcm)) == left


def test_a_mono_recording_is_read_as_it_is(tmp_path):
    frames = struct.pack("<3h", 5, -5, 1000)
    _wav(tmp_path / "mono.wav", 1, frames)
    assert read_wav(tmp_path / "mono.wav") == (frames, 8000)


def test_other_formats_are_refused_in_words(tmp_path):
    _wav(tmp_path / "eight.wav", 1, b"\x80\x80", width=1)
    with pytest.raises(AsrError, match="16-bit mono or stereo"):
        read_wav(tmp_path / "eight.wav")
