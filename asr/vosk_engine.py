"""The Recognizer on Vosk (libvosk, Kaldi). The only module that imports vosk.

Costs that shape it (bench/asr.py prints the figures for this machine):
- A ``Model`` (253 MB on disk for the Korean one) loads in ~1.5 s and is read-only, so one is
  loaded per process per path and shared by every recognizer.
- A ``KaldiRecognizer`` is cheap to create but decodes its first seconds of speech several
  times slower than a used one: the lookahead graph (HCLr ∘ Gr) is composed lazily and each
  recognizer caches the states it has visited. So recognizers are pooled and reused.
- libvosk aborts or segfaults, taking the process with it, on input it does not expect: a
  grammar that is not a non-empty JSON list of strings, a zero or negative sample rate, some
  broken model directories, a grammar set on a running recognizer. Everything is validated
  before it reaches libvosk, and a grammar is only ever given when a recognizer is created
  (a grammar stream gets a recognizer of its own, pooled under its grammar).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import vosk

from asr.config import AsrConfig
from asr.model_view import without_dither
from asr.normalise import normalise_text, normalise_token
from asr.offline import frames
from asr.recognizer import (
    DEFAULT_SAMPLE_RATE,
    FRAME_MS,
    AsrError,
    Partial,
    Transcript,
    Word,
    check_pcm,
    check_sample_rate,
    grammar_json,
    parse_grammar,
)

# A grammar may allow out-of-grammar speech with this token even where the model lacks it.
UNKNOWN_WORD = "[unk]"

_models: dict[Path, vosk.Model] = {}
_models_lock = threading.Lock()


def check_model_layout(path: Path) -> None:
    """Refuse a directory libvosk could not load, before libvosk sees it (it may abort)."""
    if not path.is_dir():
        raise AsrError(f"speech model directory {path} does not exist")
    required = ["am/final.mdl", "conf/model.conf"]
    if (path / "graph/HCLG.fst").is_file():
        required.append("graph/HCLG.fst")
    else:
        required += ["graph/HCLr.fst", "graph/Gr.fst"]
    missing = [
        name
        for name in required
        if not (path / name).is_file() or (path / name).stat().st_size == 0
    ]
    if missing:
        raise AsrError(
            f"speech model directory {path} is not a Vosk model: missing or empty "
            + ", ".join(missing)
        )


def load_model(path: Path, *, quiet: bool = True) -> vosk.Model:
    """The process's one loaded model for `path`, loading it on first use (through its
    no-dither view when it dithers: ``asr.model_view``)."""
    key = Path(path).absolute()
    with _models_lock:
        model = _models.get(key)
        if model is None:
            check_model_layout(key)
            if quiet:
                vosk.SetLogLevel(-1)
            try:
                model = vosk.Model(str(without_dither(key)))
            except Exception as exc:
                raise AsrError(f"Vosk could not load the speech model at {key}: {exc}") from None
            _models[key] = model
    return model


@dataclass(frozen=True)
class PoolStats:
    idle: int  # warmed recognizers waiting in the pool
    live: int  # streams admitted by try_open_stream and not yet closed
    created: int  # recognizers created since start (each one costs a warm-up)


@dataclass(frozen=True)
class _Key:
    sample_rate: int
    grammar: str | None  # canonical JSON


class _Engine:
    """One KaldiRecognizer and what we must remember about it across streams."""

    def __init__(self, model: vosk.Model, key: _Key) -> None:
        try:
            if key.grammar is None:
                self.rec = vosk.KaldiRecognizer(model, key.sample_rate)
            else:
                self.rec = vosk.KaldiRecognizer(model, key.sample_rate, key.grammar)
        except Exception as exc:
            raise AsrError(f"Vosk could not create a recognizer for {key}: {exc}") from None
        self.rec.SetWords(True)
        self.key = key
        # libvosk's word times count from the recognizer's creation, across streams.
        self.samples_fed = 0
        self.usable = True


class VoskRecognizer:
    """The platform's Recognizer on Vosk: a shared model and a pool of warmed recognizers."""

    def __init__(self, config: AsrConfig | None = None) -> None:
        self.config = config or AsrConfig()
        self._lock = threading.Lock()
        self._idle: list[_Engine] = []  # least recently used first
        self._live = 0
        self._created = 0
        self._warming = 0  # recognizers being warmed now, by every `warm` running

    def load(self) -> None:
        """Load the model now (at start-up) rather than on the first stream."""
        self._model()

    def open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> VoskStream:
        key = self._key(sample_rate, grammar)
        return VoskStream(self._acquire(key), self._release_offline)

    def try_open_stream(
        self, *, sample_rate: int = DEFAULT_SAMPLE_RATE, grammar: str | Sequence[str] | None = None
    ) -> VoskStream | None:
        key = self._key(sample_rate, grammar)
        with self._lock:
            if self._live >= self.config.max_live_streams:
                return None
            self._live += 1
        try:
            return VoskStream(self._acquire(key), self._release_live)
        except BaseException:
            with self._lock:
                self._live -= 1
            raise

    def warm(
        self,
        pcm16: bytes,
        *,
        count: int,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        stop: threading.Event | None = None,
    ) -> int:
        """Fill the pool with up to `count` recognizers that have decoded `pcm16` (speech in
        the model's language), so that the first calls after a start find warm ones instead
        of paying the warm-up while they are live. Fed as a live call feeds: batches of
        `live_batch_s`, each decoded in 20 ms frames with a partial read after the batch.
        Runs in the caller's thread (seconds of CPU per recognizer); `stop` ends it early.
        Several threads may warm at once (a decoder process warms on each of its decoder
        threads): together they add up to `count`, each counting the ones the others are
        warming. Returns how many this call added."""
        data = check_pcm(pcm16)
        rate = check_sample_rate(sample_rate)
        if count < 0:
            raise AsrError(f"count must be >= 0, got {count}")
        if len(data) < rate:  # bytes: half a second of 16-bit samples
            raise AsrError(
                f"warm-up audio of {len(data) / 2 / rate:.2f} s is too short; "
                "give at least 0.5 s of speech"
            )
        key = self._key(rate, None)
        batch_ms = max(FRAME_MS, round(self.config.live_batch_s * 1000))  # the stream frames it
        target = min(count, self.config.pool_limit)  # the pool keeps no more
        added = 0
        for _ in range(target):  # bounded even while calls take warmed ones meanwhile
            if stop is not None and stop.is_set():
                break
            with self._lock:
                if sum(e.key == key for e in self._idle) + self._warming >= target:
                    break
                self._warming += 1
            try:
                engine = _Engine(self._model(), key)
                with self._lock:
                    self._created += 1
                stream = VoskStream(engine, self._release_offline)
                try:
                    for batch in frames(data, sample_rate=rate, frame_ms=batch_ms):
                        if stop is not None and stop.is_set():
                            break
                        stream.accept(batch)
                finally:
                    stream.close()  # back to the pool, warm
            finally:
                with self._lock:
                    self._warming -= 1
            added += 1
        return added

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(idle=len(self._idle), live=self._live, created=self._created)

    def _model(self) -> vosk.Model:
        return load_model(self.config.resolved_model_path(), quiet=self.config.quiet_engine_log)

    def _key(self, sample_rate: int, grammar: str | Sequence[str] | None) -> _Key:
        rate = check_sample_rate(sample_rate)
        if grammar is None:
            return _Key(rate, None)
        phrases = parse_grammar(grammar)
        path = self.config.resolved_model_path()
        if not (path / "graph/HCLr.fst").is_file():
            raise AsrError(f"the speech model at {path} has a static graph and takes no grammar")
        model = self._model()
        unknown = sorted(
            {
                word
                for phrase in phrases
                for word in phrase.split()
                if word != UNKNOWN_WORD and model.vosk_model_find_word(word) < 0
            }
        )
        if unknown:
            raise AsrError(
                "grammar words not in the speech model's vocabulary: "
                + ", ".join(unknown[:10])
                + (" ..." if len(unknown) > 10 else "")
            )
        return _Key(rate, grammar_json(phrases))

    def _acquire(self, key: _Key) -> _Engine:
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):
                if self._idle[index].key == key:
                    return self._idle.pop(index)
        engine = _Engine(self._model(), key)
        with self._lock:
            self._created += 1
        return engine

    def _release_offline(self, engine: _Engine) -> None:
        self._release(engine, live=False)

    def _release_live(self, engine: _Engine) -> None:
        self._release(engine, live=True)

    def _release(self, engine: _Engine, *, live: bool) -> None:
        with self._lock:
            if live:
                self._live -= 1
            if engine.usable and self.config.pool_limit > 0:
                self._idle.append(engine)
                # The least recently used go: their graph cache is the coldest.
                del self._idle[: -self.config.pool_limit]


class VoskStream:
    def __init__(self, engine: _Engine, release: Callable[[_Engine], None]) -> None:
        self._engine = engine
        self._release = release
        self._rate = engine.key.sample_rate
        self._frame_bytes = self._rate * FRAME_MS // 1000 * 2
        # Audio short of a whole frame, decoded with the next `accept` or at the end: so the
        # engine meets the same 20 ms frames however the audio was cut (30 ms packets, a
        # batch of them, a recording read a second at a time).
        self._carry = b""
        self._start_sample = engine.samples_fed
        self._samples = 0
        self._words: list[Word] = []  # of the utterances libvosk closed at endpoints
        self._last_text = ""
        self._state = "open"

    @property
    def engine_id(self) -> int:
        """Identifies the pooled recognizer serving this stream (for logs and tests)."""
        return id(self._engine)

    def accept(self, pcm16: bytes) -> Partial | None:
        """Fed to libvosk in 20 ms frames counted from the stream's start, whatever the
        lengths given (the rest of a frame waits for the next audio), so that a transcript
        does not depend on how its audio was cut (the engine adapts as it goes, and it
        looks for the end of an utterance after each frame); the running text is read once,
        after the last frame, and returned when it changed. Reading it after every frame,
        as this did until 2026-12, cost ~10 % of the decoder's CPU for partials nobody saw:
        the live transcriber publishes one per batch (`live_batch_s`), and a partial does
        not change the decoding."""
        self._check_open()
        data = check_pcm(pcm16)
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % self._frame_bytes
        self._carry = data[whole:]
        if not whole:
            return None
        data = data[:whole]
        rec = self._engine.rec
        try:
            endpoint = False
            for frame in frames(data, sample_rate=self._rate):
                endpoint = rec.AcceptWaveform(frame)
                self._samples += len(frame) // 2  # before a commit: it bounds word times
                self._engine.samples_fed += len(frame) // 2
                if endpoint:
                    self._commit(rec.Result())
            if endpoint:
                running = self._committed_text()
            else:
                partial = json.loads(rec.PartialResult()).get("partial", "")
                running = " ".join(filter(None, (self._committed_text(), normalise_text(partial))))
        except Exception as exc:
            self._engine.usable = False
            raise AsrError(f"Vosk failed on the audio: {exc}") from None
        if running == self._last_text:
            return None
        self._last_text = running
        return Partial(running)

    def finish(self) -> Transcript:
        self._check_open()
        self._finalise()
        return Transcript(
            text=self._committed_text(),
            words=tuple(self._words),
            duration_s=self._samples / self._rate,
        )

    def close(self) -> None:
        if self._state == "closed":
            return
        if self._state == "open":
            try:
                self._finalise()
            except AsrError:
                pass  # the engine is marked unusable and will not be pooled
        self._state = "closed"
        self._release(self._engine)

    def _finalise(self) -> None:
        # FinalResult, not Reset, ends a stream: Reset keeps the feature pipeline (CMVN and
        # i-vector adaptation to this caller), so the next caller would be decoded
        # differently from a fresh recognizer; after FinalResult libvosk rebuilds it.
        try:
            if self._carry:
                endpoint = self._engine.rec.AcceptWaveform(self._carry)
                self._samples += len(self._carry) // 2
                self._engine.samples_fed += len(self._carry) // 2
                self._carry = b""
                if endpoint:
                    self._commit(self._engine.rec.Result())
            self._commit(self._engine.rec.FinalResult())
        except Exception as exc:
            self._engine.usable = False
            raise AsrError(f"Vosk failed to finish the stream: {exc}") from None
        finally:
            self._state = "finished"

    def _commit(self, result_json: str) -> None:
        offset = self._start_sample / self._rate
        duration = self._samples / self._rate
        for item in json.loads(result_json).get("result", ()):
            text = normalise_token(item["word"])
            if not text:
                continue
            # libvosk prints times to 1 µs; less the offset, that is noise below a millisecond.
            start = min(max(round(item["start"] - offset, 3), 0.0), duration)
            end = min(max(round(item["end"] - offset, 3), start), duration)
            self._words.append(
                Word(text=text, start_s=start, end_s=end, confidence=float(item["conf"]))
            )

    def _committed_text(self) -> str:
        return " ".join(word.text for word in self._words)

    def _check_open(self) -> None:
        if self._state != "open":
            raise AsrError(f"the stream is {self._state}; it accepts no more audio")
