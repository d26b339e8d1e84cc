"""LiveTranscriber: the call's media thread feeds it and must never wait on decoding."""

from __future__ import annotations

import threading

import pytest

from asr.live import QUANTUM_S, DecodeSlots, LiveTranscriber, LiveTranscriptUnavailable
from asr.offline import frames, transcribe_pcm
from asr.recognizer import AsrError
from tests.asr.fakes import GatedStream
from tests.conftest import wait_until
from tests.speech import read_wav, speak

FRAME = 320  # 20 ms at 8 kHz


def numbered_frames(count: int) -> list[bytes]:
    return [bytes([index % 256]) * FRAME for index in range(count)]


def feed_all(live: LiveTranscriber, chunks: list[bytes], stuck: GatedStream | None = None) -> None:
    """Feeds every chunk from a thread of its own, as the call's media thread does. With
    ``stuck`` (the decoder, its gate closed) it asserts that all were fed while it stayed
    stuck: a feed that waited on decoding would never return before the gate opens. (No
    timing is asserted: on a loaded machine a feed may be slow, but never on the decoder.)"""

    def run() -> None:
        for chunk in chunks:
            live.feed(chunk)

    feeder = threading.Thread(target=run, name="media", daemon=True)
    feeder.start()
    feeder.join(30)
    assert not feeder.is_alive(), "feeding waited on the stuck decoder"
    if stuck is not None:
        assert not stuck.gate.is_set()


def test_given_a_stalled_decoder_when_fed_then_feed_never_blocks_and_no_audio_is_lost():
    stream = GatedStream()
    live = LiveTranscriber(stream, lag_s=0.5, backlog_limit_s=60)
    chunks = numbered_frames(250)  # 5 s of audio while the decoder is stuck

    feed_all(live, chunks, stream)

    assert live.degraded
    assert live.behind_s >= 5.0 - QUANTUM_S - 0.01  # the decoder holds one quantum at most
    stream.gate.set()
    transcript = live.finish(timeout=10)
    assert transcript.text == " ".join(str(index % 256) for index in range(250))
    assert transcript.duration_s == pytest.approx(5.0)
    assert stream.closed
    assert live.behind_s == 0


def test_given_a_decoder_that_never_catches_up_when_backlog_exceeds_limit_then_offline_needed():
    stream = GatedStream()
    live = LiveTranscriber(stream, lag_s=0.2, backlog_limit_s=1.0)

    feed_all(live, numbered_frames(150), stream)  # 3 s against a 1 s limit

    assert live.failure and "behind" in live.failure
    assert live.behind_s == 0  # the backlog is released, not kept growing
    with pytest.raises(LiveTranscriptUnavailable, match="behind"):
        live.finish(timeout=0.2)
    stream.gate.set()
    wait_until(lambda: stream.closed, timeout=5, message="stream closed")


def test_given_a_slow_decoder_when_finish_times_out_then_offline_needed_and_stream_freed():
    stream = GatedStream()
    live = LiveTranscriber(stream)
    live.feed(b"\0" * FRAME)
    with pytest.raises(LiveTranscriptUnavailable, match="did not finish within 0.1 s"):
        live.finish(timeout=0.1)
    stream.gate.set()
    wait_until(lambda: stream.closed, timeout=5, message="stream closed")


def test_given_a_failing_subscriber_when_partials_come_then_transcription_goes_on():
    stream = GatedStream()
    stream.gate.set()
    calls = []

    def broken(text: str) -> None:
        calls.append(text)
        raise RuntimeError("websocket closed")

    live = LiveTranscriber(stream, on_partial=broken)  # a batch is 100 ms: 5 frames
    feed_all(live, numbered_frames(5))
    wait_until(lambda: calls == ["5 frames"], message="the first batch's partial")
    feed_all(live, numbered_frames(10)[5:])
    wait_until(lambda: len(calls) == 2, message="the second batch's partial")
    assert live.finish(timeout=5).text == " ".join(str(i) for i in range(10))
    assert calls == ["5 frames", "10 frames"]


def test_given_misuse_when_feeding_then_asr_error_in_the_callers_thread():
    stream = GatedStream()
    stream.gate.set()
    live = LiveTranscriber(stream)
    with pytest.raises(AsrError, match="whole number"):
        live.feed(b"\0" * 3)
    live.finish(timeout=5)
    with pytest.raises(AsrError, match="finished"):
        live.feed(b"\0" * FRAME)


def test_given_cancel_when_decoding_then_stream_is_freed():
    stream = GatedStream()
    live = LiveTranscriber(stream)
    live.feed(b"\0" * FRAME)
    live.cancel()
    live.feed(b"\0" * FRAME)  # a late frame from the media thread is ignored
    stream.gate.set()
    wait_until(lambda: stream.closed, timeout=5, message="stream closed")
    with pytest.raises(LiveTranscriptUnavailable, match="cancelled"):
        live.finish(timeout=1)


def test_given_a_real_call_when_transcribed_live_then_partials_and_final_match_offline(recognizer):
    pcm, _ = read_wav(speak("가로등이 고장 났어요. 빨리 고쳐 주세요."))
    stream = recognizer.try_open_stream()
    assert stream is not None
    partials = []
    threads = set()

    def on_partial(text: str) -> None:
        threads.add(threading.current_thread().name)
        partials.append(text)

    live = LiveTranscriber(stream, on_partial=on_partial, name="asr-live-test")
    for frame in frames(pcm, sample_rate=8000):
        live.feed(frame)
    transcript = live.finish(timeout=30)

    assert transcript == transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=8000)
    assert partials and transcript.text
    assert threads == {"asr-live-test"}
    assert recognizer.stats().live == 0


# ---------------------------------------------------------------- decode slots


def test_given_more_streams_than_slots_when_decoding_then_at_most_that_many_at_once_in_turn():
    slots = DecodeSlots(2)
    gates = [threading.Event() for _ in range(4)]
    entered: list[int] = []

    def decode(index: int) -> None:
        with slots.slot():
            entered.append(index)
            gates[index].wait(10)

    threads = []
    for index in range(4):
        threads.append(threading.Thread(target=decode, args=(index,), daemon=True))
        threads[-1].start()
        # The next one asks only once this one holds a slot or waits in line.
        wait_until(lambda: len(entered) + len(slots._waiting) == index + 1)
    assert entered == [0, 1]  # two at once; 2 and 3 wait
    gates[1].set()
    wait_until(lambda: entered == [0, 1, 2], message="the first in line")
    gates[0].set()
    wait_until(lambda: entered == [0, 1, 2, 3], message="the second in line")
    for gate in gates:
        gate.set()
    for thread in threads:
        thread.join(10)
    assert slots._busy == 0 and not slots._waiting
    with pytest.raises(AsrError):
        DecodeSlots(0)


def test_given_one_slot_for_two_calls_when_fed_then_they_take_turns_and_both_complete():
    slots = DecodeSlots(1)
    first, second = GatedStream(), GatedStream()
    one = LiveTranscriber(first, slots=slots, name="one")
    two = LiveTranscriber(second, slots=slots, name="two")
    feed_all(one, numbered_frames(50))  # 1 s: two quanta
    wait_until(lambda: slots._busy == 1, message="the first call decoding")
    feed_all(two, numbered_frames(10))
    wait_until(lambda: len(slots._waiting) == 1, message="the second call waiting its turn")
    assert second.frames == []
    first.gate.set()  # the first call's quantum ends, the slot passes on
    wait_until(lambda: len(first.frames) >= 25, message="the first quantum")
    second.gate.set()
    assert one.finish(timeout=10).text == " ".join(str(i) for i in range(50))
    assert two.finish(timeout=10).text == " ".join(str(i) for i in range(10))
    assert first.closed and second.closed
    assert slots._busy == 0
