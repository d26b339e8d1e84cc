"""Audio for the dialogue tests: each side's timeline of speech placed at given seconds on
silence, and a bridged call's stereo WAV of two timelines (caller left, operator right)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 8000
FRAME_BYTES = RATE // 50 * 2


def timeline(parts: list[tuple[float, bytes]], *, tail_s: float = 2.5) -> bytes:
    """16-bit PCM: each (start second, speech) placed on silence, then ``tail_s`` more; a
    whole number of 20 ms frames."""
    end = max(int(start * RATE) * 2 + len(pcm) for start, pcm in parts) + int(tail_s * RATE) * 2
    out = bytearray(end + (-end) % FRAME_BYTES)
    for start, pcm in parts:
        at = int(start * RATE) * 2
        out[at : at + len(pcm)] = pcm
    return bytes(out)


def line_noise(seconds: float, *, level: float = 10.0, seed: int = 0) -> bytes:
    """A phone line's faint noise floor. Between and after speech the engine needs it: on
    digital silence the model stretches the last word over seconds and makes up new ones."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, level, int(seconds * RATE)).round()
    return samples.clip(-32768, 32767).astype("<i2").tobytes()


def with_noise(pcm: bytes, *, level: float = 10.0, seed: int = 0) -> bytes:
    noise = np.frombuffer(line_noise(len(pcm) / 2 / RATE, level=level, seed=seed), "<i2")
    mixed = np.frombuffer(pcm, "<i2").astype(np.int32)[: len(noise)] + noise
    return mixed.clip(-32768, 32767).astype("<i2").tobytes()


def same_length(left: bytes, right: bytes) -> tuple[bytes, bytes]:
    n = max(len(left), len(right))
    return left.ljust(n, b"\0"), right.ljust(n, b"\0")


def stereo_wav(path: Path, left: bytes, right: bytes) -> Path:
    left, right = same_length(left, right)
    both = np.empty(len(left), dtype="<i2")
    both[0::2] = np.frombuffer(left, "<i2")
    both[1::2] = np.frombuffer(right, "<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(both.tobytes())
    return path


def chunks(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
