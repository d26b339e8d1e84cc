"""Mixing the bridge's legs: what a three-way call's parties and a monitoring supervisor hear.

In a two-party bridge each side's audio goes to the other as it is read. With three parties
(三方通话) every leg must hear the *sum* of the other two, and a silently monitoring
supervisor the sum of everyone — so the audio of different legs has to be put in step before
it is added, though each leg's relay reads on its own RTP and wakes on its own schedule.

A ``Mixer`` does that as ``telephony.recording.StereoRecorder`` keeps its two channels in
step: each source's PCM waits in its own buffer until every source has audio for the same
stretch of time, and that stretch is summed (with clipping to 16 bits, so a loud pair
saturates rather than wraps round into a crack) and handed to ``sink``. A source that falls
more than ``max_skew_ms`` behind — its phone stopped sending, its reader stalled — is taken
as silent for the difference, so one bad leg delays the others by at most that much
(the per-leg jitter tolerance). The relays feed silence for time in which nothing came, as
they do for the recording, so quiet legs keep pace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from telephony.endpoint import FRAME_BYTES, FRAME_MS


def mix(*pieces: bytes) -> bytes:
    """Sum PCM16 pieces of the same length, clipped to 16 bits."""
    if not pieces:
        return b""
    total = np.zeros(len(pieces[0]) // 2, dtype=np.int32)
    for pcm in pieces:
        if len(pcm) != len(pieces[0]):
            raise ValueError("pieces to mix must be of the same length")
        total += np.frombuffer(pcm, dtype="<i2")
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


class Mixer:
    """The sum of ``sources``, in step, handed to ``sink`` in whole 20 ms frames."""

    def __init__(
        self,
        sources: Iterable[str],
        sink: Callable[[bytes], None],
        *,
        max_skew_ms: int = 120,
    ) -> None:
        self._pending: dict[str, bytearray] = {name: bytearray() for name in sources}
        if not self._pending:
            raise ValueError("a mixer needs at least one source")
        self._sink = sink
        self._max_skew = max_skew_ms // FRAME_MS * FRAME_BYTES
        self._lock = threading.Lock()
        self.padded_ms: dict[str, int] = dict.fromkeys(self._pending, 0)  # silence put in

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def push(self, source: str, pcm: bytes) -> None:
        """``source``'s next audio; sums and hands on what every source now has."""
        with self._lock:
            pending = self._pending.get(source)
            if pending is None:
                return  # left the mix (a late read after it was removed)
            pending += pcm
            lead = max(len(p) for p in self._pending.values())
            for name, other in self._pending.items():
                behind = lead - len(other) - self._max_skew
                if behind > 0:
                    behind -= behind % 2
                    other += bytes(behind)
                    self.padded_ms[name] += behind * FRAME_MS // FRAME_BYTES
            ready = min(len(p) for p in self._pending.values()) // FRAME_BYTES * FRAME_BYTES
            if ready <= 0:
                return
            pieces = [bytes(p[:ready]) for p in self._pending.values()]
            for p in self._pending.values():
                del p[:ready]
            out = mix(*pieces)
        self._sink(out)

    def add(self, source: str) -> None:
        """A source joins from now: earlier time is not waited for."""
        with self._lock:
            if source not in self._pending:
                self._pending[source] = bytearray()
                self.padded_ms[source] = 0

    def remove(self, source: str) -> None:
        """A source leaves: what it sent is still mixed (padded out), nothing more awaited."""
        with self._lock:
            gone = self._pending.pop(source, None)
            if gone is None or not self._pending:
                return
            lead = max(len(p) for p in self._pending.values())
            if len(gone) > lead:  # it was ahead: the others are taken as silent meanwhile
                for p in self._pending.values():
                    p += bytes(len(gone) - len(p))
                lead = len(gone)
            gone += bytes(max(0, lead - len(gone)))
            ready = min(len(p) for p in self._pending.values())
            pieces = [bytes(gone[:ready]), *(bytes(p[:ready]) for p in self._pending.values())]
            for p in self._pending.values():
                del p[:ready]
            out = mix(*pieces) if ready else b""
        if out:
            self._sink(out)
