"""Recording the caller (16-bit 8 kHz mono WAV) and deciding when they have finished; and
recording a bridged call as one stereo WAV, the caller left and the agent right.

End of speech is energy-based: once speech has been heard, ``end_silence_s`` below the
threshold ends the turn (the hangover keeps a pause for breath from cutting a caller off);
``max_length_s`` bounds a recording, and ``no_speech_timeout_s`` ends one where nobody
spoke. Time is counted in frames, not read from a clock, so the same audio always gives the
same decision and tests need no sleeps.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from telephony.endpoint import FRAME_BYTES, FRAME_MS, SAMPLE_RATE

log = logging.getLogger(__name__)


class EndReason(str, enum.Enum):
    SILENCE = "silence"  # the caller spoke, then stayed quiet for the hangover
    MAX_LENGTH = "max_length"
    NO_SPEECH = "no_speech"  # nothing above the threshold before the no-speech timeout
    HANGUP = "hangup"  # the caller hung up while we listened


@dataclass(frozen=True)
class EndpointerSettings:
    threshold_dbfs: float = -40.0  # G.711 idle noise sits near -70 dBFS, speech at -30…-10
    # Opt-in: over background noise (a street, a car) the threshold becomes the noise floor
    # (the quietest frame of the last ``noise_window_s``) plus this margin, so a caller in
    # traffic still gets an end of speech. It assumes speech has a dip within the window, as
    # speech does and a held tone doesn't; None keeps the fixed threshold.
    noise_margin_db: float | None = None
    noise_window_s: float = 2.0
    speech_start_ms: int = 100  # this long above the threshold, in a row, counts as speech
    end_silence_s: float = 1.8  # hangover: callers pause mid-complaint
    max_length_s: float = 120.0
    no_speech_timeout_s: float = 8.0

    def __post_init__(self) -> None:
        if self.end_silence_s <= 0 or self.max_length_s <= 0 or self.no_speech_timeout_s <= 0:
            raise ValueError("endpointer durations must be positive")


def frame_dbfs(frame: bytes) -> float:
    """RMS level of PCM16 relative to full scale; -inf for digital silence. Every frame of
    every call goes through here (twice while a prompt plays and the report is listened to),
    so the energy is one dot product (2 µs a frame, where mean(x * x) took 7)."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return float("-inf")
    energy = float(np.dot(samples, samples))
    return 20 * math.log10(math.sqrt(energy / samples.size) / 32768) if energy > 0 else -math.inf


class Endpointer:
    """Feed 20 ms frames; ``feed`` returns an EndReason once the turn is over."""

    def __init__(self, settings: EndpointerSettings | None = None) -> None:
        self.settings = settings or EndpointerSettings()
        s = self.settings
        self._start_frames = max(1, s.speech_start_ms // FRAME_MS)
        self._end_frames = round(s.end_silence_s * 1000 / FRAME_MS)
        self._max_frames = round(s.max_length_s * 1000 / FRAME_MS)
        self._no_speech_frames = round(s.no_speech_timeout_s * 1000 / FRAME_MS)
        self.frames = 0
        self.speech_started_at: int | None = None  # frame index
        self._loud_run = 0
        self._quiet_run = 0
        window = max(1, round(s.noise_window_s * 1000 / FRAME_MS))
        self._levels: deque[float] = deque(maxlen=window)

    @property
    def threshold_dbfs(self) -> float:
        margin = self.settings.noise_margin_db
        if margin is None or not self._levels:
            return self.settings.threshold_dbfs
        return max(self.settings.threshold_dbfs, min(self._levels) + margin)

    @property
    def heard_speech(self) -> bool:
        return self.speech_started_at is not None

    def feed(self, frame: bytes) -> EndReason | None:
        self.frames += 1
        level = frame_dbfs(frame)
        if self.settings.noise_margin_db is not None:
            self._levels.append(level)
        loud = level >= self.threshold_dbfs
        if loud:
            self._loud_run += 1
            self._quiet_run = 0
            if self.speech_started_at is None and self._loud_run >= self._start_frames:
                self.speech_started_at = self.frames - self._loud_run
        else:
            self._loud_run = 0
            self._quiet_run += 1
        return self._decide()

    def feed_silence(self, frames: int) -> EndReason | None:
        """Account for time in which no audio arrived at all (a read that timed out)."""
        for _ in range(frames):
            self.frames += 1
            if self.settings.noise_margin_db is not None:
                self._levels.append(float("-inf"))
            self._loud_run = 0
            self._quiet_run += 1
            reason = self._decide()
            if reason is not None:
                return reason
        return None

    def _decide(self) -> EndReason | None:
        if self.frames >= self._max_frames:
            return EndReason.MAX_LENGTH
        if self.speech_started_at is None:
            return EndReason.NO_SPEECH if self.frames >= self._no_speech_frames else None
        return EndReason.SILENCE if self._quiet_run >= self._end_frames else None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def recording_path(directory: Path, call_id: str, suffix: str = "") -> Path:
    """Where a call's recording goes: the Call-ID made filename-safe (it is chosen by the
    caller's phone, so it may hold ``/`` or ``..``)."""
    name = _UNSAFE.sub("_", call_id).strip("._") or "call"
    return Path(directory) / f"{name[:120]}{suffix}.wav"


class RecordingError(ValueError):
    """A file that is not a recording we can repair (not a PCM WAV)."""


# The canonical 44-byte PCM header (as ``wave`` writes it): the RIFF size sits at byte 4,
# the data chunk's size at byte 40.
_RIFF_SIZE_AT = 4
_DATA_SIZE_AT = 40
_HEADER_BYTES = 44


def _header(data_bytes: int, channels: int = 1) -> bytes:
    """RIFF/WAVE header of 16-bit PCM at ``SAMPLE_RATE`` with ``data_bytes`` of audio."""
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", _HEADER_BYTES - 8 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, SAMPLE_RATE, SAMPLE_RATE * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class WavRecorder:
    """Writes 20 ms PCM16 frames to a WAV as they come, keeping the header true as it grows.

    A crash (``kill -9``, an OOM kill) cannot run ``close``, so the header is rewritten after
    every ``patch_every_s`` of audio: a file left behind plays, and its header covers all but
    at most the last second. The audio after that is on disk too (the file is unbuffered);
    ``repair_wav`` makes the header cover it.
    """

    def __init__(self, path: Path, patch_every_s: float = 1.0, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise ValueError(f"a recording has 1 or 2 channels, not {channels}")
        self.channels = channels
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Never overwrite: a Call-ID comes from the caller's phone and may be reused.
        for n in range(1, 1000):
            candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
            try:
                # Unbuffered: every write reaches the OS at once, so a killed process leaves
                # all the audio it wrote in the file (an fsync is not needed for that: the
                # page cache outlives the process; only a power cut would need one).
                self._file = open(candidate, "xb", buffering=0)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"too many recordings named {path}")
        self.path = candidate
        # The canonical 44-byte header ``wave`` writes, written here: ``wave``'s own
        # bookkeeping cost more than the write itself on every 20 ms frame of every call.
        self._fd = self._file.fileno()
        self._data = 0  # bytes of audio written
        self._file.write(_header(0, channels))
        self.samples = 0  # per channel
        self._patch_every = max(1, round(patch_every_s * SAMPLE_RATE))
        self._patched_at = 0  # samples written when the header was last made true

    def write(self, pcm16: bytes) -> None:
        """Write PCM16 (interleaved left, right when stereo)."""
        self._data += self._file.write(pcm16) or 0
        self.samples += len(pcm16) // (2 * self.channels)
        if self.samples - self._patched_at >= self._patch_every:
            self._patch_header()

    def _patch_header(self) -> None:
        """Rewrite the RIFF and data sizes for the audio written so far (positioned writes:
        the file's offset stays at the end)."""
        data = self._data
        os.pwrite(self._fd, struct.pack("<I", _HEADER_BYTES - 8 + data), _RIFF_SIZE_AT)
        os.pwrite(self._fd, struct.pack("<I", data), _DATA_SIZE_AT)
        self._patched_at = self.samples

    def write_silence(self, frames: int) -> None:
        if frames > 0:
            self.write(bytes(FRAME_BYTES * self.channels * frames))

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._data & 1:  # RIFF chunks are word-aligned, as ``wave`` pads them
                self._file.write(b"\0")
            self._patch_header()
        finally:
            self._file.close()

    def __enter__(self) -> WavRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Side(str, enum.Enum):
    CALLER = "caller"  # left
    AGENT = "agent"  # right


class StereoRecorder:
    """A bridged call as one stereo WAV: the caller left, the agent right, in step.

    Each side's relay thread hands its frames as it reads them; the two never arrive in
    lockstep (each reader wakes on its own RTP), so a side's frames wait here until the
    other side's matching frames come, and are written interleaved. A side that falls more
    than ``max_skew_frames`` behind (its phone stopped sending, its reader stalled) is filled
    with silence, as the mono recordings count missing time: the two channels stay aligned
    and the file's length stays the call's. Crash safety is ``WavRecorder``'s: the header is
    made true every second and ``repair_wav`` fixes the rest.
    """

    def __init__(self, path: Path, *, max_skew_frames: int = 25) -> None:
        self._wav = WavRecorder(path, channels=2)
        self.path = self._wav.path
        self._pending: dict[Side, bytearray] = {Side.CALLER: bytearray(), Side.AGENT: bytearray()}
        self._max_skew = max_skew_frames * FRAME_BYTES
        self._lock = threading.Lock()

    def write(self, side: Side, pcm16: bytes) -> None:
        with self._lock:
            if self._wav._file.closed:
                return
            self._pending[side] += pcm16
            left, right = self._pending[Side.CALLER], self._pending[Side.AGENT]
            behind = Side.AGENT if len(left) > len(right) else Side.CALLER
            lead = max(len(left), len(right))
            lag = min(len(left), len(right))
            if lead - lag > self._max_skew:
                self._pending[behind] += bytes(lead - lag - self._max_skew)
            self._flush(min(len(left), len(right)) // 2 * 2)

    def _flush(self, size: int) -> None:
        if size <= 0:
            return
        left, right = self._pending[Side.CALLER], self._pending[Side.AGENT]
        out = np.empty(size, dtype="<i2")
        out[0::2] = np.frombuffer(bytes(left[:size]), dtype="<i2")
        out[1::2] = np.frombuffer(bytes(right[:size]), dtype="<i2")
        del left[:size]
        del right[:size]
        self._wav.write(out.tobytes())

    @property
    def duration_s(self) -> float:
        return self._wav.duration_s

    def close(self) -> None:
        """Write what is left, the shorter side padded with silence."""
        with self._lock:
            if self._wav._file.closed:
                return
            left, right = self._pending[Side.CALLER], self._pending[Side.AGENT]
            size = max(len(left), len(right)) // 2 * 2
            left += bytes(size - len(left))
            right += bytes(size - len(right))
            self._flush(size)
            self._wav.close()

    def __enter__(self) -> StereoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(data: bytes, start: int) -> list[tuple[bytes, int, int]]:
    """(id, body offset, declared size) of each RIFF chunk from ``start`` on; the last one
    may claim more (or less) than the file holds."""
    out = []
    at = start
    while at + 8 <= len(data):
        cid, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        out.append((cid, at + 8, size))
        at += 8 + size + (size & 1)
    return out


def _whole(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` is a run of chunks (printable ids, as RIFF requires, so that
    audio such as silence is not mistaken for one) ending exactly at the end of the file."""
    chunks = _chunks(data, start)
    printable = all(all(32 <= b < 127 for b in cid) for cid, _, _ in chunks)
    return printable and sum(8 + s + (s & 1) for _, _, s in chunks) == len(data) - start


def repair_wav(path: Path) -> float:
    """Fix the header of a PCM WAV left by a crash and return its duration in seconds.

    The data chunk is taken to run to the end of the file (as ``WavRecorder`` writes it; a
    trailing partial frame is cut off), unless chunks that fit the file exactly follow it.
    A file whose header is already true is left untouched, so this is safe to run on every
    recording. Raises RecordingError for anything that is not a PCM WAV.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        content = f.read()  # recordings are minutes of 8 kHz audio: a few MB at most
        if len(content) < 12 or content[:4] != b"RIFF" or content[8:12] != b"WAVE":
            raise RecordingError(f"{path} is not a WAV file")
        chunks = _chunks(content, 12)
        fmt = next((c for c in chunks if c[0] == b"fmt "), None)
        data = next((c for c in chunks if c[0] == b"data"), None)
        if fmt is None or data is None or fmt[2] < 16 or fmt[1] + 16 > len(content):
            raise RecordingError(f"{path} is not a WAV file (no fmt or data chunk)")
        tag, channels, rate, _, block_align, _ = struct.unpack(
            "<HHIIHH", content[fmt[1] : fmt[1] + 16]
        )
        # 0xFFFE (extensible) carries the real format as a sub-format GUID starting at 24.
        if tag == 0xFFFE and fmt[2] >= 26:
            tag = struct.unpack("<H", content[fmt[1] + 24 : fmt[1] + 26])[0]
        if tag != 1 or channels == 0 or rate == 0 or block_align == 0:
            raise RecordingError(f"{path} is not a PCM WAV (format {tag:#x})")
        _, body, declared = data
        end = body + declared + (declared & 1)
        if end <= len(content) and _whole(content, end):
            size, file_end = declared, len(content)  # chunks after the audio fit exactly
        else:
            size = (len(content) - body) // block_align * block_align
            file_end = body + size
        riff = file_end - 8
        if file_end != len(content):
            f.truncate(file_end)
        if declared != size:
            f.seek(body - 4)
            f.write(struct.pack("<I", size))
        if struct.unpack("<I", content[4:8])[0] != riff:
            f.seek(4)
            f.write(struct.pack("<I", riff))
    if file_end != len(content) or declared != size:
        log.warning("repaired %s: %d bytes of audio", path, size)
    return size / block_align / rate
