"""Speech recognition as the rest of the platform sees it.

Everything outside ``asr/`` talks to a speech engine through these protocols, never through
vosk, so most tests run against fakes and the engine can be replaced in one place.

Audio crosses this boundary as 16-bit little-endian mono PCM, normally 8 kHz in 20 ms frames
(the telephony frame), at any rate in ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_SAMPLE_RATE = 8000
FRAME_MS = 20
# libvosk hangs on a zero rate and aborts on a negative one; telephony is 8 kHz and nothing
# we record goes above 48 kHz.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000


class AsrError(Exception):
    """Speech recognition could not do what was asked (bad input, a broken model, a stream
    used wrongly). The message names the problem; the process carries on."""


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float  # from the start of the stream
    end_s: float
    confidence: float  # 0..1, the engine's posterior for this word


@dataclass(frozen=True)
class Partial:
    """The running text of the whole stream so far; later partials may revise it."""

    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    duration_s: float  # of the audio fed


class Stream(Protocol):
    """One utterance or call being recognised. Used by one thread at a time."""

    def accept(self, pcm16: bytes) -> Partial | None:
        """Feed audio (a whole number of samples, any length: engines decode it in 20 ms
        frames, so the transcript does not depend on how it was cut); a `Partial` when the
        running text changed."""
        ...

    def finish(self) -> Transcript:
        """The final transcript of everything fed. The stream accepts no more audio."""
        ...

    def close(self) -> None:
        """Release the engine resources (a pooled recognizer goes back to the pool).
        Idempotent; a stream not finished is abandoned."""
        ...


class Recognizer(Protocol):
    def open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> Stream:
        """A stream for offline work: always granted, not counted against live capacity."""
        ...

    def try_open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> Stream | None:
        """A live stream, or None when live capacity is full — the caller then records the
        call and transcribes it offline; a call is never refused for lack of ASR."""
        ...


def check_sample_rate(sample_rate: object) -> int:
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, float))
        or not math.isfinite(sample_rate)
        or sample_rate != int(sample_rate)
    ):
        raise AsrError(f"sample rate must be a whole number of hertz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AsrError(f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return rate


def check_pcm(pcm16: object) -> bytes:
    if not isinstance(pcm16, (bytes, bytearray, memoryview)):
        raise AsrError(f"audio must be bytes of 16-bit PCM, got {type(pcm16).__name__}")
    data = bytes(pcm16)
    if len(data) % 2:
        raise AsrError(f"audio of {len(data)} bytes is not a whole number of 16-bit samples")
    return data


def parse_grammar(grammar: str | Sequence[str]) -> tuple[str, ...]:
    """The phrases of a grammar given as JSON text or as a sequence of strings.

    libvosk segfaults on anything but a non-empty JSON list of strings, so only what passes
    here may reach it.
    """
    if isinstance(grammar, str):
        try:
            phrases = json.loads(grammar)
        except ValueError as exc:
            raise AsrError(f"grammar is not valid JSON: {exc}") from None
    else:
        phrases = grammar
    if isinstance(phrases, (str, bytes)) or not isinstance(phrases, Sequence):
        raise AsrError(f"grammar must be a list of phrases, got {type(phrases).__name__}")
    if not phrases:
        raise AsrError("grammar has no phrases")
    cleaned = []
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise AsrError(f"grammar phrase {phrase!r} is not a string")
        words = phrase.split()
        if not words:
            raise AsrError("grammar has an empty phrase")
        cleaned.append(" ".join(words))
    return tuple(cleaned)


def grammar_json(phrases: Sequence[str]) -> str:
    return json.dumps(list(phrases), ensure_ascii=False)
