"""Transcribing recorded audio: calls live ASR could not serve, re-runs, tools."""

from __future__ import annotations

import array
import sys
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

from asr.recognizer import (
    FRAME_MS,
    AsrError,
    Recognizer,
    Transcript,
    check_pcm,
    check_sample_rate,
)

# Audio given to a stream at a time when a whole recording is transcribed: 50 frames.
OFFLINE_CHUNK_MS = 1000


def frames(pcm16: bytes, *, sample_rate: int, frame_ms: int = FRAME_MS) -> Iterator[bytes]:
    step = sample_rate * frame_ms // 1000 * 2
    for offset in range(0, len(pcm16), step):
        yield pcm16[offset : offset + step]


def transcribe_pcm(
    *,
    recognizer: Recognizer,
    pcm16: bytes,
    sample_rate: int,
    grammar: str | Sequence[str] | None = None,
) -> Transcript:
    """The transcript of 16-bit mono PCM, decoded exactly as live calls are.

    Decoded in the live path's 20 ms frames on purpose (a stream's `accept` cuts what it is
    given into those): the engine adapts to the speaker as it goes, so how audio is chunked
    changes the result, and a recording transcribed offline must read as it would have
    live. Given `OFFLINE_CHUNK_MS` at a time: a stream reads its running text once per
    `accept`, which nobody reads here, and a decoder process takes one trip per chunk.
    """
    data = check_pcm(pcm16)
    rate = check_sample_rate(sample_rate)
    stream = recognizer.open_stream(sample_rate=rate, grammar=grammar)
    try:
        for chunk in frames(data, sample_rate=rate, frame_ms=OFFLINE_CHUNK_MS):
            stream.accept(chunk)
        return stream.finish()
    finally:
        stream.close()


def transcribe_wav(
    *, recognizer: Recognizer, path: Path, grammar: str | Sequence[str] | None = None
) -> Transcript:
    pcm16, rate = read_wav(path)
    return transcribe_pcm(recognizer=recognizer, pcm16=pcm16, sample_rate=rate, grammar=grammar)


def read_wav(path: Path) -> tuple[bytes, int]:
    """(16-bit little-endian mono PCM, sample rate) of a 16-bit WAV file: mono as it is; of
    a stereo one (a call an operator took: caller left, operator right) the left channel —
    the caller's words are what the ticket is made of."""
    channels, rate = read_wav_channels(path)
    return channels[0], rate


def read_wav_channels(path: Path) -> tuple[list[bytes], int]:
    """Each channel of a 16-bit mono or stereo WAV file as 16-bit little-endian mono PCM,
    and the sample rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            if channels not in (1, 2) or wav.getsampwidth() != 2:
                raise AsrError(
                    f"{path} is not 16-bit mono or stereo PCM ({channels} channels, "
                    f"{8 * wav.getsampwidth()}-bit)"
                )
            pcm = wav.readframes(wav.getnframes())
            rate = wav.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise AsrError(f"cannot read {path} as a WAV file: {exc}") from None
    if channels == 1:
        return [pcm], rate
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 4])
    if sys.byteorder != "little":
        samples.byteswap()
    split = []
    for channel in (samples[0::2], samples[1::2]):
        if sys.byteorder != "little":
            channel.byteswap()
        split.append(channel.tobytes())
    return split, rate


def transcribe_channels(*, recognizer: Recognizer, path: Path) -> list[Transcript]:
    """The transcript of each channel of a recording (a bridged call's stereo file: the
    caller's, then the operator's), each decoded as its live stream would have been, with
    word times from the start of the file."""
    channels, rate = read_wav_channels(path)
    return [transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=rate) for pcm in channels]
