"""bench/calls.py's callers' audio: espeak-ng Korean through G.711 μ-law as sipp streams it,
the warm-up speech, and how closely a call's recording matches what was sent."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.asr import SENTENCES
from tests.speech import read_wav, speak, ulaw, ulaw_to_pcm

RATE = 8000
FRAME = 320  # 20 ms of 16-bit PCM
# What the platform (HOTLINE_ASR__WARMUP_AUDIO) warms its recognizers on when the ASR steps
# do not run (when they do, both sides warm on a caller's line: calls.py's run()).
WARMUP_SENTENCES = [
    "서울시 강남구에 사는 주민입니다",
    "쓰레기 수거가 일주일째 안 되고 있어요",
    "불법 주차 차량 때문에 소방차가 못 들어옵니다",
]


@dataclass(frozen=True)
class Audio:
    """What a caller sends: silence over the greeting and beep, then speech, then a breath;
    `pcm` is exactly what the platform decodes from the μ-law file sipp streams."""

    ulaw_path: Path
    pcm: bytes
    speech_pcm: bytes  # the speech alone, after G.711 (what live ASR hears)
    lead_s: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def speech(sentences: int) -> bytes:
    pause = bytes(int(0.4 * RATE) * 2)  # shorter than the endpointer's 1.8 s hangover
    parts = [read_wav(speak(SENTENCES[i % len(SENTENCES)], rate=RATE))[0] for i in range(sentences)]
    return pause.join(parts)


def warmup_audio(workdir: Path, pcm: bytes | None = None) -> tuple[Path, bytes]:
    """What both sides warm their recognizers on: `pcm` (for the ASR steps what a caller's
    line carries after the greeting) or other Korean speech. A recognizer decodes speech it
    has not met about twice as slowly as speech it has (its share of the lookahead graph is
    composed lazily), so with other speech the first ASR step of a run cost about twice
    what the same step cost later (raw Vosk: 8 streams took 63.7 s of CPU as the first step,
    35.8 s after smaller ones), and which step came first decided the figures. Warmed on
    the callers' line every recognizer is in the steady state of a long-running edge whose
    pool has met its callers' vocabulary."""
    pause = bytes(int(0.4 * RATE) * 2)
    pcm = (
        pcm
        if pcm is not None
        else pause.join(read_wav(speak(text, rate=RATE))[0] for text in WARMUP_SENTENCES)
    )
    path = workdir / "warmup.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path, pcm


def warm(recognizer: Any, pcm: bytes) -> None:
    """As VoskRecognizer.warm does: 20 ms frames, a partial read after each, the final."""
    for i in range(0, len(pcm), FRAME):
        if not recognizer.AcceptWaveform(pcm[i : i + FRAME]):
            recognizer.PartialResult()
    recognizer.FinalResult()


def caller_audio(workdir: Path, name: str, *, lead_s: float, sentences: int) -> Audio:
    raw = speech(sentences)
    silence_lead = bytes(int(lead_s * RATE) * 2)
    tail = bytes(int(0.3 * RATE) * 2)
    encoded = ulaw(silence_lead + raw + tail)
    path = workdir / f"{name}.ulaw"
    path.write_bytes(encoded)
    return Audio(path, ulaw_to_pcm(encoded), ulaw_to_pcm(ulaw(raw)), lead_s)


def correlation(sent: np.ndarray, recorded: np.ndarray) -> float:
    """Best-lag normalised cross-correlation: the recording is a stretch of what was sent
    (the platform records from the end of its greeting to the BYE). Energy of the recording
    outside the aligned stretch counts against it."""
    if recorded.size == 0 or not np.any(recorded) or not np.any(sent):
        return 0.0
    size = 1 << (sent.size + recorded.size).bit_length()
    spectrum = np.fft.rfft(sent, size) * np.conj(np.fft.rfft(recorded, size))
    xc = np.fft.irfft(spectrum, size)
    # xc[k] = sum_i sent[i + k] * recorded[i]; negative lags wrap to the end
    lags = np.concatenate([np.arange(0, sent.size), np.arange(-recorded.size + 1, 0)])
    values = np.concatenate([xc[: sent.size], xc[size - recorded.size + 1 :]])
    lag = int(lags[int(np.argmax(values))])
    if lag >= 0:
        s = sent[lag : lag + recorded.size]
        r = recorded[: s.size]
    else:
        r = recorded[-lag:]
        s = sent[: r.size]
        r = r[: s.size]
    denominator = float(np.sqrt(np.dot(s, s) * np.dot(recorded, recorded)))
    return float(np.dot(s, r)) / denominator if denominator else 0.0


def wav_samples(path: str | None) -> np.ndarray:
    if not path or not Path(path).is_file():
        return np.zeros(0)
    with wave.open(path, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def alignment(sent: np.ndarray, recorded: np.ndarray, window_s: float = 0.5) -> list[list[float]]:
    """Where a recording that does not match what was sent went astray: for each stretch of
    ``window_s`` with sound in it, [its start in the recording (s), where it lies in what was
    sent (s, best lag), its correlation there]. A lag that grows along the recording is
    silence put in (packets that came too late for the reader), one that shrinks is audio
    lost; a low correlation is audio that is not the caller's."""
    step = int(window_s * RATE)
    out = []
    for start in range(0, recorded.size - step + 1, step):
        piece = recorded[start : start + step]
        if not np.any(piece) or float(np.sqrt(np.mean(piece * piece))) < 100:
            continue  # silence matches anywhere
        size = 1 << (sent.size + step).bit_length()
        xc = np.fft.irfft(np.fft.rfft(sent, size) * np.conj(np.fft.rfft(piece, size)), size)
        lag = int(np.argmax(xc[: sent.size - step + 1]))
        s = sent[lag : lag + step]
        denominator = float(np.sqrt(np.dot(s, s) * np.dot(piece, piece)))
        corr = float(np.dot(s, piece)) / denominator if denominator else 0.0
        out.append([round(start / RATE, 2), round(lag / RATE, 3), round(corr, 3)])
    return out
