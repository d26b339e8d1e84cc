"""The caller's speech over a prompt, found in audio read a piece at a time (``flows._Flow``
reads what the caller says over a prompt nothing interrupts about once a second): every
frame's level in one numpy pass, the same level as ``recording.frame_dbfs``."""

from __future__ import annotations

from collections import deque

import numpy as np

from telephony.endpoint import FRAME_BYTES, FRAME_SAMPLES
from telephony.recording import frame_dbfs

# Frames kept before the end of the loud run that starts speech (``flows._Flow.play``'s
# paced loop keeps its last ``start_frames + 5`` frames at that moment).
LEAD_FRAMES = 5


def loud_frames(frames: list[bytes], threshold_dbfs: float) -> list[bool]:
    """Whether each 20 ms frame is at least ``threshold_dbfs`` loud (``frame_dbfs``)."""
    if not frames:
        return []
    if any(len(frame) != FRAME_BYTES for frame in frames):
        return [frame_dbfs(frame) >= threshold_dbfs for frame in frames]
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    samples = samples.reshape(len(frames), FRAME_SAMPLES)
    energy = np.einsum("ij,ij->i", samples, samples)
    with np.errstate(divide="ignore"):
        dbfs = 20 * np.log10(np.sqrt(energy / FRAME_SAMPLES) / 32768)
    return [bool(loud) for loud in dbfs >= threshold_dbfs]


class SpeechKeeper:
    """Fed a prompt's caller audio in pieces: ``kept`` is None until a run of
    ``start_frames`` loud frames, then the speech from ``start_frames + LEAD_FRAMES`` frames
    before that run's end, and every frame fed after it."""

    def __init__(self, threshold_dbfs: float, start_frames: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.start_frames = max(1, start_frames)
        self.kept: list[bytes] | None = None
        self._recent: deque[bytes] = deque(maxlen=self.start_frames + LEAD_FRAMES)
        self._run = 0

    def feed(self, frames: list[bytes]) -> bool:
        """True when these frames started the speech."""
        if self.kept is not None:
            self.kept += frames
            return False
        for n, loud in enumerate(loud_frames(frames, self.threshold_dbfs)):
            self._recent.append(frames[n])
            self._run = self._run + 1 if loud else 0
            if self._run >= self.start_frames:
                self.kept = [*self._recent, *frames[n + 1 :]]
                return True
        return False
