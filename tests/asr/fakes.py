"""Fast stand-ins behind the Recognizer protocol, for tests about what surrounds decoding."""

from __future__ import annotations

import threading

from asr.recognizer import Partial, Transcript


class GatedStream:
    """A Stream whose decoding waits for `gate`: a decoder as slow as a test wants.

    It "recognises" each frame as its length, so a transcript shows every frame arrived,
    in order."""

    def __init__(self, sample_rate: int = 8000) -> None:
        self.gate = threading.Event()
        self.sample_rate = sample_rate
        self.frames: list[bytes] = []
        self.closed = False

    def accept(self, pcm16: bytes) -> Partial | None:
        """Takes 20 ms frames from audio of any length, as engines do."""
        self.gate.wait()
        step = self.sample_rate // 50 * 2
        self.frames += [pcm16[i : i + step] for i in range(0, len(pcm16), step)]
        return Partial(f"{len(self.frames)} frames")

    def finish(self) -> Transcript:
        self.gate.wait()
        samples = sum(len(frame) for frame in self.frames) // 2
        return Transcript(
            text=" ".join(str(frame[0]) for frame in self.frames),
            words=(),
            duration_s=samples / self.sample_rate,
        )

    def close(self) -> None:
        self.closed = True
