"""A prompt nothing can interrupt (the greeting without barge-in, the closing words): the
call's thread does not wake ten times a second to read the caller's audio while it plays,
but about once a second, without waiting for audio; what the caller said over it is still
kept, from the same frame as when it was read paced (``_Flow.play``'s loop, still used for
keys and barge-in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from telephony.endpoint import FRAME_BYTES, FRAME_MS, CallState
from telephony.flows import FlowHooks, FlowSettings, _CallerGone, _Flow, serve_inbound
from telephony.loudness import SpeechKeeper, loud_frames
from telephony.recording import frame_dbfs
from tests.telephony.fakes import FakeCall, silence, speech

GREETING_S = 10


class LongPrompts:
    """A 10 s greeting (a real one is ~9.5 s), every other piece 100 ms."""

    def pcm(self, name: str) -> bytes:
        seconds = GREETING_S if name == "greeting" else 0.1
        return np.full(int(8000 * seconds), 700, "<i2").tobytes()


class CountingCall(FakeCall):
    """A FakeCall that counts how often its reader waited for audio, and how long the
    prompt's waits were."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.blocking_reads = 0
        self.waits: list[float | None] = []
        self.blocking_reads_before_listening: int | None = None

    def read_frame(self, timeout: float) -> bytes | None:
        self.blocking_reads += timeout > 0
        return super().read_frame(timeout)

    def wait_sent(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait_sent(timeout)

    def set_state(self, state: CallState) -> None:
        if state == CallState.LISTENING:
            self.blocking_reads_before_listening = self.blocking_reads
        super().set_state(state)


class SlowCall(FakeCall):
    """A FakeCall whose prompt takes real waits to play: ``wait_sent`` moves the time on by
    its timeout at most, so the flow's reads fall between (how much audio each one finds)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chunks: list[int] = []

    def wait_sent(self, timeout: float | None = None) -> bool:
        if self.ended.is_set():
            return False
        step = self.now_ms + (timeout or 0) * 1000
        self._advance_to(min(self._play_end_ms, step))
        return self.now_ms >= self._play_end_ms and not self.ended.is_set()

    def read_frame(self, timeout: float) -> bytes | None:
        frame = super().read_frame(timeout)
        if frame and self.state != CallState.LISTENING:
            if not self.chunks or self.chunks[-1] < 0:
                self.chunks.append(0)
            self.chunks[-1] += 1
        elif not frame and self.chunks and self.chunks[-1] > 0:
            self.chunks.append(-1)
        return frame


class StalledCall(SlowCall):
    """A SlowCall whose process stalls for 8 s in the prompt's first wait (the GIL held
    elsewhere): the prompt, paced again from then on, ends 8 s late; the caller's audio came
    all along."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stalled = False
        self.listening_at: int | None = None

    def wait_sent(self, timeout: float | None = None) -> bool:
        if not self._stalled and self._play_end_ms:
            self._stalled = True
            self._play_end_ms += 8000
            self._advance_to(self.now_ms + 8000)
            return False
        return super().wait_sent(timeout)

    def set_state(self, state: CallState) -> None:
        if state == CallState.LISTENING:
            self.listening_at = self.now_ms
        super().set_state(state)


@pytest.fixture
def settings(tmp_path: Path) -> FlowSettings:
    return FlowSettings(recording_dir=tmp_path / "rec")


def test_given_a_greeting_without_barge_in_then_the_call_thread_never_waits_for_audio(settings):
    call = CountingCall(frames=silence(GREETING_S * 1000 + 3000))

    serve_inbound(call, prompts=LongPrompts(), hooks=FlowHooks(), settings=settings)

    # Paced, the 10 s greeting cost a blocking read per frame here (500), every 100 ms on
    # a real call; now waits for the prompt of about a second, the audio read between them.
    assert call.blocking_reads_before_listening == 0
    assert call.waits and all(wait == pytest.approx(1.0) for wait in call.waits)
    assert call.frames_read > GREETING_S * 1000 // FRAME_MS


def test_given_a_greeting_playing_then_the_audio_is_read_about_once_a_second(settings):
    call = SlowCall(frames=silence(GREETING_S * 1000 + 3000))
    flow = _Flow(call, LongPrompts(), FlowHooks(), settings)

    assert flow.play(["greeting"], keep_speech=True).speech == []

    sizes = [n for n in call.chunks if n > 0]
    assert len(sizes) == GREETING_S and all(n == 1000 // FRAME_MS for n in sizes)


def test_given_a_prompt_sent_late_then_listening_starts_by_the_callers_clock(settings):
    call = StalledCall(frames=silence(30_000))

    serve_inbound(call, prompts=LongPrompts(), hooks=FlowHooks(), settings=settings)

    # As paced: once the caller's audio says the greeting's time (10.1 s) has passed, its
    # real end is waited for 2 s at most, and the recording starts on the caller's clock
    # (waiting for the late greeting's end, 18.1 s, lost a caller's first words).
    assert call.listening_at is not None and call.listening_at <= 13_500


@pytest.mark.parametrize("call_cls", [FakeCall, SlowCall])
@pytest.mark.parametrize("speech_at_ms", [0, 60, 960, 2000, 9900])
def test_given_speech_over_the_greeting_then_kept_from_the_same_frame_as_read_paced(
    settings, speech_at_ms, call_cls
):
    # The caller's phone sends all along (a real stream: a gap in its timestamps comes back
    # as silence from the jitter buffer, so only packets that never come are not made up).
    frames = silence(speech_at_ms) + speech(3000) + silence(GREETING_S * 1000)

    def kept(call: FakeCall, **how) -> list[bytes]:
        flow = _Flow(call, LongPrompts(), FlowHooks(), settings)
        return flow.play(["greeting"], keep_speech=True, **how).speech

    paced = kept(FakeCall(frames=frames), keys_interrupt=True)  # no keys: paced throughout
    assert paced and kept(call_cls(frames=frames)) == paced


def test_given_a_caller_who_speaks_over_the_greeting_and_hangs_up_then_the_speech_goes_with_the_end(
    settings,
):
    frames = silence(1000) + speech(3000) + silence(6000)
    flow = _Flow(FakeCall(frames=frames, hangup_at_ms=5000), LongPrompts(), FlowHooks(), settings)

    with pytest.raises(_CallerGone) as gone:
        flow.play(["greeting"], keep_speech=True)

    assert b"".join(speech(3000)) in b"".join(gone.value.speech)


def test_given_frames_then_their_loudness_in_one_pass_is_each_frames_own():
    rng = np.random.default_rng(7)
    frames = [
        (rng.standard_normal(FRAME_BYTES // 2) * level).astype("<i2").tobytes()
        for level in (0, 1, 30, 100, 300, 1000, 3000, 10000)
    ] + [bytes(FRAME_BYTES)]
    for threshold in (-60.0, -45.0, -35.0, -20.0):
        assert loud_frames(frames, threshold) == [frame_dbfs(f) >= threshold for f in frames]
    assert loud_frames([b"\x10\x00" * 3], -90.0) == [frame_dbfs(b"\x10\x00" * 3) >= -90.0]
    # fed in pieces: kept from 5 frames before the loud run of 5 that starts the speech
    keeper = SpeechKeeper(-35.0, 5)
    frames = silence(200) + speech(500)
    assert not keeper.feed(frames[:12]) and keeper.kept is None
    assert keeper.feed(frames[12:16]) and keeper.kept == frames[5:16]
    assert not keeper.feed(frames[16:]) and keeper.kept == frames[5:]
    quiet = SpeechKeeper(-35.0, 5)
    assert not quiet.feed(silence(2000)) and quiet.kept is None
