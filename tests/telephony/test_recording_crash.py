"""A recording survives ``kill -9`` of the process writing it: the WAV header on disk covers
all but at most the last second, and ``repair_wav`` makes it exact."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from telephony.endpoint import FRAME_BYTES, SAMPLE_RATE
from telephony.recording import RecordingError, WavRecorder, repair_wav

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 149  # 2.98 s of 20 ms frames: just short of a patch, the worst moment to die

# Records distinct frames through the real recorder as fast as it can (it counts audio, not
# wall time) and waits, mid-call, for the kill that never lets it close the file. It says
# so after ``say_after`` frames and goes on writing up to ``total``.
CHILD = f"""
import sys
from pathlib import Path
from telephony.recording import WavRecorder
say_after, total = int(sys.argv[2]), int(sys.argv[3])
rec = WavRecorder(Path(sys.argv[1]))
for i in range(total):
    rec.write(bytes([i % 251, 1]) * ({FRAME_BYTES} // 2))
    if i + 1 == say_after:
        print(rec.path, flush=True)
sys.stdin.read()
"""


def _expected_pcm(frames: int = FRAMES) -> bytes:
    return b"".join(bytes([i % 251, 1]) * (FRAME_BYTES // 2) for i in range(frames))


def _record_then_kill(path: Path, say_after: int = FRAMES, total: int = FRAMES) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(say_after), str(total)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        written = Path(child.stdout.readline().strip())  # blocks until say_after are written
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert written == path
    return written


def _header_frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


def test_given_a_recorder_killed_mid_call_then_the_header_covers_all_but_the_last_second(
    tmp_path: Path,
):
    path = _record_then_kill(tmp_path / "call.wav")

    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        nframes = w.getnframes()
        audio = w.readframes(nframes)
    assert nframes >= FRAMES * FRAME_BYTES // 2 - SAMPLE_RATE
    assert audio == _expected_pcm()[: nframes * 2]


def test_given_a_recorder_killed_while_writing_then_the_header_covers_all_but_the_last_second(
    tmp_path: Path,
):
    # The kill lands wherever the child has got to in a long stream of frames.
    path = _record_then_kill(tmp_path / "call.wav", say_after=50, total=20_000)
    on_disk = path.stat().st_size - 44

    nframes = _header_frames(path)

    assert nframes * 2 >= on_disk - 2 * SAMPLE_RATE
    seconds = repair_wav(path)
    assert _header_frames(path) * 2 == on_disk // 2 * 2
    # Not seconds × 2 × rate: 8.04 × 16000 is 128639.99999999999 in floating point.
    assert seconds == on_disk // 2 * 2 / 2 / SAMPLE_RATE
    frames = -(-on_disk // FRAME_BYTES)
    with wave.open(str(path), "rb") as w:
        assert w.readframes(w.getnframes()) == _expected_pcm(frames)[: on_disk // 2 * 2]


def test_given_a_recording_left_by_a_kill_when_repaired_then_the_header_covers_all_audio(
    tmp_path: Path,
):
    path = _record_then_kill(tmp_path / "call.wav")

    assert repair_wav(path) == FRAMES * FRAME_BYTES / 2 / SAMPLE_RATE  # 2.98 s, exactly

    with wave.open(str(path), "rb") as w:
        assert w.readframes(w.getnframes() + 1) == _expected_pcm()
    repaired = path.read_bytes()
    assert repair_wav(path) == 2.98
    assert path.read_bytes() == repaired


def test_given_a_torn_last_write_when_repaired_then_the_partial_frame_is_cut_off(
    tmp_path: Path,
):
    path = _record_then_kill(tmp_path / "call.wav")
    with open(path, "ab") as f:
        f.write(b"\x07")  # half a sample: the write the kill interrupted

    assert repair_wav(path) == 2.98

    assert path.stat().st_size == 44 + len(_expected_pcm())
    assert _header_frames(path) == FRAMES * FRAME_BYTES // 2


def _closed_recording(path: Path) -> Path:
    with WavRecorder(path) as rec:
        rec.write(_expected_pcm())
        rec.write_silence(3)
    return rec.path


def test_given_a_closed_recording_when_repaired_then_nothing_changes(tmp_path: Path):
    path = _closed_recording(tmp_path / "call.wav")
    before = path.read_bytes()

    assert repair_wav(path) == 3.04

    assert path.read_bytes() == before


def test_given_a_wav_with_a_chunk_after_the_audio_when_repaired_then_nothing_changes(
    tmp_path: Path,
):
    path = _closed_recording(tmp_path / "call.wav")
    info = b"INFOICMT" + struct.pack("<I", 5) + b"12345" + b"\0"
    listed = path.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info
    listed = listed[:4] + struct.pack("<I", len(listed) - 8) + listed[8:]
    path.write_bytes(listed)

    assert repair_wav(path) == 3.04

    assert path.read_bytes() == listed


def _float_wav() -> bytes:
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)  # IEEE float
    data = bytes(400)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "content",
    [b"", b"not a recording at all, just some text\n", b"RIFF\0\0\0\0AVI ", _float_wav()],
    ids=["empty", "text", "avi", "float-wav"],
)
def test_given_a_file_that_is_not_a_pcm_wav_when_repaired_then_it_is_refused_untouched(
    tmp_path: Path, content: bytes
):
    path = tmp_path / "other.wav"
    path.write_bytes(content)

    with pytest.raises(RecordingError, match="not a"):
        repair_wav(path)

    assert path.read_bytes() == content
