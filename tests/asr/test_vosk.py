"""The Vosk recognizer on the real Korean model (deterministic copy, see conftest)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from asr.config import AsrConfig
from asr.offline import frames, transcribe_pcm, transcribe_wav
from asr.recognizer import AsrError, Transcript
from asr.vosk_engine import PoolStats, VoskRecognizer
from tests.speech import read_wav, speak, ulaw, ulaw_to_pcm

LEAK = "도로에 물이 새고 있습니다"
STREETLIGHT = "가로등이 고장 났어요. 빨리 고쳐 주세요."
NOISE = "아파트 옆 공사장 소음이 너무 심합니다"


def stream_decode(recognizer, pcm: bytes, *, sample_rate: int = 8000, grammar=None):
    """(transcript, partial texts) of `pcm` fed as a call feeds it: 20 ms frames."""
    stream = recognizer.open_stream(sample_rate=sample_rate, grammar=grammar)
    partials = []
    try:
        for frame in frames(pcm, sample_rate=sample_rate):
            partial = stream.accept(frame)
            if partial is not None:
                partials.append(partial.text)
        return stream.finish(), partials
    finally:
        stream.close()


def assert_words_fit(transcript: Transcript) -> None:
    assert transcript.words, "no words recognised"
    assert transcript.text == " ".join(word.text for word in transcript.words)
    previous_end = 0.0
    for word in transcript.words:
        assert 0.0 <= word.start_s <= word.end_s <= transcript.duration_s
        assert word.start_s >= previous_end - 1e-6
        assert 0.0 <= word.confidence <= 1.0
        previous_end = word.end_s


@pytest.mark.parametrize("sentence", [LEAK, STREETLIGHT, NOISE])
def test_given_speech_when_streamed_in_20ms_frames_then_equals_offline_decode_of_the_file(
    recognizer, sentence
):
    wav = speak(sentence)
    pcm, rate = read_wav(wav)
    streamed, _ = stream_decode(recognizer, pcm, sample_rate=rate)
    offline = transcribe_wav(recognizer=recognizer, path=wav)
    assert streamed == offline
    assert streamed.text
    assert streamed.duration_s == pytest.approx(len(pcm) / 2 / rate)
    assert_words_fit(streamed)


def test_given_mu_law_audio_when_decoded_twice_then_same_transcript(recognizer):
    pcm, rate = read_wav(speak(NOISE))
    telephone = ulaw_to_pcm(ulaw(pcm))
    first = transcribe_pcm(recognizer=recognizer, pcm16=telephone, sample_rate=rate)
    second = transcribe_pcm(recognizer=recognizer, pcm16=telephone, sample_rate=rate)
    assert first == second
    assert first.text


def test_given_a_used_recognizer_when_reused_then_same_one_and_decodes_as_when_fresh(vosk_config):
    pool = VoskRecognizer(vosk_config)
    leak, _ = read_wav(speak(LEAK))
    light, _ = read_wav(speak(STREETLIGHT))

    stream = pool.open_stream()
    engine = stream.engine_id
    stream.close()  # unused: goes back as it came
    fresh, _ = stream_decode(pool, leak)
    stream_decode(pool, light)
    reused, _ = stream_decode(pool, leak)
    again = pool.open_stream()
    try:
        assert again.engine_id == engine
    finally:
        again.close()

    assert pool.stats().created == 1
    assert pool.stats().idle == 1
    # Word times included: they count from the stream's start, not the recognizer's.
    assert reused == fresh
    assert_words_fit(reused)


def test_given_speech_when_streamed_then_partials_arrive_before_the_end(recognizer):
    pcm, _ = read_wav(speak(STREETLIGHT))
    stream = recognizer.open_stream()
    seen = []
    try:
        for index, frame in enumerate(frames(pcm, sample_rate=8000)):
            partial = stream.accept(frame)
            if partial is not None:
                seen.append((index, partial.text))
        final = stream.finish()
    finally:
        stream.close()
    total_frames = len(pcm) // 320
    assert len(seen) >= 2
    assert seen[0][0] < total_frames * 0.75
    assert all(text for _, text in seen)
    assert len({text for _, text in seen}) == len(seen)  # only changes are reported
    assert final.text


class _CountingRecognizer:
    """A KaldiRecognizer that counts the running-text reads made of it."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.partial_reads = 0

    def PartialResult(self) -> str:  # libvosk's name
        self.partial_reads += 1
        return self.rec.PartialResult()

    def __getattr__(self, name: str):
        return getattr(self.rec, name)


@pytest.mark.parametrize("batch_ms", [1000, 380, 30, 1010])
def test_given_speech_in_batches_when_accepted_then_as_in_frames_and_one_partial_read_each(
    recognizer, batch_ms
):
    """A live call's decoder gets its audio in batches (`live_batch_s`) and publishes one
    running text per batch, so the stream reads it once per `accept`, after the batch's
    last frame, not after each of its 20 ms frames (~10 % of the decoder's CPU); the
    engine still decodes 20 ms frames, so the transcript, word times included, is the one
    frame-by-frame feeding gives, and the last running text too — also when the pieces
    are not whole frames (30 ms packets; a batch of them): the rest of a frame waits."""
    pcm, rate = read_wav(speak(STREETLIGHT + " " + LEAK))
    by_frame, frame_partials = stream_decode(recognizer, pcm, sample_rate=rate)

    stream = recognizer.open_stream(sample_rate=rate)
    counting = _CountingRecognizer(stream._engine.rec)
    stream._engine.rec = counting
    batches = list(frames(pcm, sample_rate=rate, frame_ms=batch_ms))
    partials = []
    try:
        for batch in batches:
            partial = stream.accept(batch)
            if partial is not None:
                partials.append(partial.text)
        by_batch = stream.finish()
    finally:
        stream._engine.rec = counting.rec
        stream.close()

    assert by_batch == by_frame
    assert_words_fit(by_batch)
    assert 0 < counting.partial_reads <= len(batches)
    assert partials and partials[-1] == frame_partials[-1]


def test_given_a_16khz_recording_when_transcribed_then_words_fit_its_duration(recognizer):
    wav = speak(LEAK, rate=16000)
    transcript = transcribe_wav(recognizer=recognizer, path=wav)
    assert transcript.duration_s == pytest.approx(len(read_wav(wav)[0]) / 2 / 16000)
    assert_words_fit(transcript)


def test_given_silence_when_finished_then_empty_transcript(recognizer):
    transcript = transcribe_pcm(recognizer=recognizer, pcm16=b"\0" * 16000, sample_rate=8000)
    assert transcript == Transcript(text="", words=(), duration_s=1.0)


def test_given_a_grammar_when_streamed_then_only_its_words_and_own_pooled_recognizer(vosk_config):
    pool = VoskRecognizer(vosk_config)
    grammar = ["네", "아니요", "신고 접수"]
    vocabulary = {word for phrase in grammar for word in phrase.split()}
    pcm, _ = read_wav(speak("아니요"))

    transcript, _ = stream_decode(pool, pcm, grammar=grammar)
    assert transcript.text
    assert set(transcript.text.split()) <= vocabulary

    engines = {}
    for label, kind in (
        ("plain", None),
        ("same grammar as JSON", json.dumps(grammar)),
        ("other grammar", ["네"]),
    ):
        stream = pool.open_stream(grammar=kind)
        engines[label] = stream.engine_id
        stream.close()
    first = pool.open_stream(grammar=grammar)
    try:
        assert first.engine_id == engines["same grammar as JSON"]
    finally:
        first.close()
    assert len(set(engines.values())) == 3
    assert pool.stats().created == 3


@pytest.mark.parametrize(
    ("grammar", "problem"),
    [
        ("[]", "no phrases"),
        ('{"네": 1}', "list of phrases"),
        ('["네", ', "not valid JSON"),
        ('["네", 2]', "not a string"),
        (["네", ""], "empty phrase"),
        (["zzqx 네"], "not in the speech model's vocabulary: zzqx"),
    ],
)
def test_given_a_bad_grammar_when_opening_then_asr_error_and_process_survives(
    recognizer, grammar, problem
):
    with pytest.raises(AsrError, match=problem):
        recognizer.open_stream(grammar=grammar)
    with pytest.raises(AsrError, match=problem):
        recognizer.try_open_stream(grammar=grammar)
    assert recognizer.stats().live == 0


@pytest.mark.parametrize("rate", [0, -8000, 100, 1_000_000])
def test_given_an_absurd_sample_rate_when_opening_then_asr_error(recognizer, rate):
    with pytest.raises(AsrError, match="sample rate"):
        recognizer.open_stream(sample_rate=rate)
    with pytest.raises(AsrError, match="sample rate"):
        transcribe_pcm(recognizer=recognizer, pcm16=b"\0" * 320, sample_rate=rate)


def test_given_odd_length_audio_when_accepted_then_asr_error_and_stream_still_works(recognizer):
    pcm, _ = read_wav(speak(LEAK))
    stream = recognizer.open_stream()
    try:
        with pytest.raises(AsrError, match="whole number of 16-bit samples"):
            stream.accept(b"\0" * 321)
        for frame in frames(pcm, sample_rate=8000):
            stream.accept(frame)
        assert stream.finish() == transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=8000)
    finally:
        stream.close()
    with pytest.raises(AsrError, match="whole number"):
        transcribe_pcm(recognizer=recognizer, pcm16=pcm[:-1], sample_rate=8000)


def test_given_a_finished_stream_when_used_again_then_asr_error(recognizer):
    stream = recognizer.open_stream()
    stream.accept(b"\0" * 320)
    stream.finish()
    with pytest.raises(AsrError, match="finished"):
        stream.accept(b"\0" * 320)
    with pytest.raises(AsrError, match="finished"):
        stream.finish()
    stream.close()
    stream.close()
    with pytest.raises(AsrError, match="closed"):
        stream.accept(b"\0" * 320)


def _broken_models(root: Path) -> dict[str, Path]:
    missing = root / "missing"
    empty = root / "empty"
    empty.mkdir()
    conf_only = root / "conf-only"
    (conf_only / "conf").mkdir(parents=True)
    (conf_only / "conf" / "model.conf").write_text("--beam=10\n")
    hollow = root / "hollow"  # the right layout, empty files
    for name in ("am/final.mdl", "conf/model.conf", "graph/HCLG.fst"):
        (hollow / name).parent.mkdir(parents=True, exist_ok=True)
        (hollow / name).touch()
    garbage = root / "garbage"  # the right layout, files that are not a model
    for name in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst"):
        (garbage / name).parent.mkdir(parents=True, exist_ok=True)
        (garbage / name).write_bytes(b"not a model\n" * 10)
    a_file = root / "a-file"
    a_file.write_text("x")
    return {
        "missing": missing,
        "empty": empty,
        "conf-only": conf_only,
        "hollow": hollow,
        "garbage": garbage,
        "a-file": a_file,
    }


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing", "does not exist"),
        ("a-file", "does not exist"),
        ("empty", "not a Vosk model: missing or empty am/final.mdl"),
        ("conf-only", "missing or empty am/final.mdl, graph/HCLr.fst, graph/Gr.fst"),
        ("hollow", "missing or empty am/final.mdl, conf/model.conf, graph/HCLG.fst"),
        ("garbage", "Vosk could not load the speech model"),
    ],
)
def test_given_a_bad_model_path_when_used_then_asr_error_names_it_and_process_survives(
    tmp_path, case, problem
):
    path = _broken_models(tmp_path)[case]
    asr = VoskRecognizer(AsrConfig(model_path=path))
    with pytest.raises(AsrError, match=problem):
        asr.load()
    with pytest.raises(AsrError, match=problem):
        asr.try_open_stream()
    assert asr.stats().live == 0


def test_given_live_capacity_when_full_then_none_and_a_slot_frees_on_close(vosk_config):
    pool = VoskRecognizer(
        AsrConfig(model_path=vosk_config.model_path, max_live_streams=2, pool_size=2)
    )
    first = pool.try_open_stream()
    second = pool.try_open_stream()
    assert first is not None and second is not None
    assert pool.try_open_stream() is None
    assert pool.stats().live == 2

    offline = pool.open_stream()  # recordings are not live: never refused
    offline.close()
    first.close()
    third = pool.try_open_stream()
    assert third is not None
    assert pool.try_open_stream() is None
    for stream in (second, third):
        stream.close()
    assert pool.stats().live == 0


def test_given_two_calls_at_once_when_decoded_in_threads_then_each_as_if_alone(recognizer):
    pcms = [read_wav(speak(text))[0] for text in (LEAK, NOISE)]
    alone = [transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=8000) for pcm in pcms]
    together: list[Transcript | None] = [None, None]
    barrier = threading.Barrier(2)

    def decode(index: int) -> None:
        barrier.wait()
        together[index] = transcribe_pcm(recognizer=recognizer, pcm16=pcms[index], sample_rate=8000)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert together == alone
    assert recognizer.stats().live == 0


def test_given_a_small_pool_when_streams_close_then_least_recently_used_are_dropped(vosk_config):
    pool = VoskRecognizer(AsrConfig(model_path=vosk_config.model_path, pool_size=1))
    plain = pool.open_stream()
    with_grammar = pool.open_stream(grammar=["네"])
    plain.close()
    with_grammar.close()
    assert pool.stats() == PoolStats(idle=1, live=0, created=2)
    again = pool.open_stream(grammar=["네"])  # the most recent one was kept
    assert again.engine_id == with_grammar.engine_id
    again.close()

    no_pool = VoskRecognizer(AsrConfig(model_path=vosk_config.model_path, pool_size=0))
    no_pool.open_stream().close()
    assert no_pool.stats().idle == 0


def test_given_warm_up_speech_when_warming_then_the_pool_holds_that_many_and_decodes_as_fresh(
    vosk_config,
):
    pool = VoskRecognizer(
        AsrConfig(model_path=vosk_config.model_path, pool_size=3, max_live_streams=2)
    )
    warmup, _ = read_wav(speak(STREETLIGHT))
    leak, _ = read_wav(speak(LEAK))
    fresh, _ = stream_decode(VoskRecognizer(vosk_config), leak)

    assert pool.warm(warmup, count=2) == 2
    assert pool.stats() == PoolStats(idle=2, live=0, created=2)
    assert pool.warm(warmup, count=2) == 0  # already there: nothing more to do
    live = [pool.try_open_stream(), pool.try_open_stream()]
    assert all(stream is not None for stream in live)
    assert pool.stats() == PoolStats(idle=0, live=2, created=2)  # no fresh one was made
    for stream in live:
        stream.close()
    # A warmed recognizer decodes a caller exactly as a fresh one would, word times included.
    warmed, _ = stream_decode(pool, leak)
    assert warmed == fresh
    assert pool.stats().created == 2

    # Never more than the pool keeps.
    assert pool.warm(warmup, count=10) == 1
    assert pool.stats() == PoolStats(idle=3, live=0, created=3)


def test_given_two_threads_warming_one_pool_then_together_they_add_exactly_the_count(
    vosk_config,
):
    # A decoder process warms on each of its decoder threads; each counts the recognizers
    # the other is warming, so the two add the count between them, not a count each.
    pool = VoskRecognizer(
        AsrConfig(model_path=vosk_config.model_path, pool_size=8, max_live_streams=2)
    )
    warmup, _ = read_wav(speak(STREETLIGHT))
    added: list[int] = []
    go = threading.Barrier(2)

    def warm() -> None:
        go.wait()
        added.append(pool.warm(warmup, count=3))

    threads = [threading.Thread(target=warm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(added) == 3
    assert pool.stats() == PoolStats(idle=3, live=0, created=3)


def test_given_bad_warm_up_audio_or_a_stop_when_warming_then_error_or_nothing(vosk_config):
    pool = VoskRecognizer(AsrConfig(model_path=vosk_config.model_path, pool_size=2))
    with pytest.raises(AsrError, match="too short"):
        pool.warm(bytes(800), count=1)  # 50 ms
    with pytest.raises(AsrError, match="whole number"):
        pool.warm(bytes(16001), count=1)
    with pytest.raises(AsrError, match="sample rate"):
        pool.warm(bytes(16000), count=1, sample_rate=0)
    with pytest.raises(AsrError, match="count"):
        pool.warm(bytes(16000), count=-1)
    stopped = threading.Event()
    stopped.set()
    assert pool.warm(bytes(16000), count=2, stop=stopped) == 0
    assert pool.stats() == PoolStats(idle=0, live=0, created=0)
