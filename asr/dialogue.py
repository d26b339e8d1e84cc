"""Two speakers' words as one dialogue: ordered turns, each one speaker's run of speech.

A bridged call is transcribed per side (each side its own stream, or its own channel of the
stereo recording), so each word's time is on that side's clock, and both clocks start at the
bridge. The final dialogue is the words of both sides in time order, a new turn wherever the
speaker changes (``merge_words``). While the call runs only running texts are known — a
partial carries no word times — so ``LiveDialogue`` places each change of a side's text at
the audio position where it was decoded and keeps turns from that; the end replaces it with
the one made from the word times.

Speakers are plain names here (the caller of ``asr`` decides them); the module knows nothing
of calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asr.recognizer import DEFAULT_SAMPLE_RATE, Partial, Stream, Transcript, Word

# A side that has been silent this long and speaks again starts a new turn even when the
# other side said nothing in between (a long pause reads as a new turn in a transcript).
PAUSE_S = 2.0
# How long after the start of a word its text usually shows in a partial: a change first
# seen at position t began about this much earlier (never before the side's previous turn).
PARTIAL_LAG_S = 0.6


@dataclass(frozen=True)
class Turn:
    speaker: str
    start_s: float  # from the start of both sides' audio (the bridge)
    end_s: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "start_s": round(self.start_s, 2),
            "end_s": round(self.end_s, 2),
            "text": self.text,
        }


def merge_words(sides: Mapping[str, Sequence[Word]], *, pause_s: float = PAUSE_S) -> list[Turn]:
    """Both sides' words in time order as turns: a new turn when the speaker changes, or the
    same speaker resumes after more than ``pause_s`` of silence. Words that overlap in time
    (both talking at once) go by their start, so a short interjection splits the other
    side's turn where it came — which is what was heard."""
    tagged = sorted(
        (
            (word.start_s, word.end_s, speaker, word.text)
            for speaker, ws in sides.items()
            for word in ws
        ),
        key=lambda item: (item[0], item[1]),
    )
    turns: list[Turn] = []
    speaker_of_last, start, end = "", 0.0, 0.0
    texts: list[str] = []
    for word_start, word_end, speaker, text in tagged:
        if texts and speaker == speaker_of_last and word_start - end <= pause_s:
            texts.append(text)
            end = max(end, word_end)
            continue
        if texts:
            turns.append(Turn(speaker_of_last, start, end, " ".join(texts)))
        speaker_of_last, start, end, texts = speaker, word_start, word_end, [text]
    if texts:
        turns.append(Turn(speaker_of_last, start, end, " ".join(texts)))
    return turns


def merge_transcripts(sides: Mapping[str, Transcript | None]) -> list[Turn]:
    """``merge_words`` of the sides that have a transcript."""
    return merge_words({s: t.words for s, t in sides.items() if t is not None})


def turns_as_dicts(turns: Iterable[Turn]) -> list[dict[str, Any]]:
    return [turn.as_dict() for turn in turns]


@dataclass
class _Segment:
    speaker: str
    first: int  # index of its first word in the side's running text
    start_s: float
    end_s: float


class LiveDialogue:
    """The turns of a call while it runs, from each side's running text and the audio
    position where each change was decoded. Sides update from their own decoder threads.

    A side's change extends its current turn unless the other side has started a turn since,
    or the side was silent more than ``pause_s``; otherwise it opens a new turn that starts
    ``PARTIAL_LAG_S`` before the change was seen. A revision of words already shown (the
    engine changed its mind) rewrites them in place, in whichever turn they are."""

    def __init__(self, *, pause_s: float = PAUSE_S) -> None:
        self._pause = pause_s
        self._lock = threading.Lock()
        self._words: dict[str, list[str]] = {}
        self._segments: list[_Segment] = []  # in order of start

    def update(self, speaker: str, text: str, position_s: float) -> list[Turn]:
        """Take ``speaker``'s running text as decoded up to ``position_s``; the turns now."""
        new = text.split()
        with self._lock:
            old = self._words.get(speaker, [])
            keep = 0
            while keep < min(len(old), len(new)) and old[keep] == new[keep]:
                keep += 1
            self._words[speaker] = new
            # Turns whose words were all revised away go.
            self._segments = [
                s for s in self._segments if s.speaker != speaker or s.first < len(new)
            ]
            if len(new) > keep:
                self._place(speaker, max(keep, len(old)), len(new), position_s)
            return self._turns()

    def turns(self) -> list[Turn]:
        with self._lock:
            return self._turns()

    def text_of(self, speaker: str) -> str:
        """The speaker's running text as last given."""
        with self._lock:
            return " ".join(self._words.get(speaker, ()))

    def _place(self, speaker: str, fresh: int, count: int, position_s: float) -> None:
        """Words from index ``fresh`` on are new speech (those before it that changed are
        revisions, which stay in their turn)."""
        mine = [s for s in self._segments if s.speaker == speaker]
        if not mine:
            start = max(position_s - PARTIAL_LAG_S, 0.0)
            self._segments.append(_Segment(speaker, 0, start, position_s))
        else:
            last = mine[-1]
            first = max(fresh, last.first + 1)
            others_since = any(
                s.speaker != speaker and s.start_s > last.start_s for s in self._segments
            )
            silent = position_s - PARTIAL_LAG_S - last.end_s > self._pause
            if first >= count:  # only revisions
                if not others_since:
                    last.end_s = max(last.end_s, position_s)
                return
            if not (others_since or silent):
                last.end_s = max(last.end_s, position_s)
                return
            start = max(position_s - PARTIAL_LAG_S, last.end_s)
            self._segments.append(_Segment(speaker, first, start, max(start, position_s)))
        self._segments.sort(key=lambda s: s.start_s)

    def _turns(self) -> list[Turn]:
        bounds: dict[int, int] = {}
        by_speaker: dict[str, list[_Segment]] = {}
        for segment in self._segments:
            by_speaker.setdefault(segment.speaker, []).append(segment)
        for speaker, segments in by_speaker.items():
            count = len(self._words.get(speaker, []))
            for here, after in zip(segments, [*segments[1:], None], strict=True):
                bounds[id(here)] = after.first if after is not None else count
        turns: list[Turn] = []
        for segment in self._segments:
            words = self._words.get(segment.speaker, [])[segment.first : bounds[id(segment)]]
            if not words:
                continue
            text = " ".join(words)
            if (
                turns
                and turns[-1].speaker == segment.speaker
                and segment.start_s - turns[-1].end_s <= self._pause
            ):
                last = turns[-1]
                turns[-1] = Turn(last.speaker, last.start_s, segment.end_s, f"{last.text} {text}")
            else:
                turns.append(Turn(segment.speaker, segment.start_s, segment.end_s, text))
        return turns


class TimedStream:
    """A ``Stream`` that knows how much audio it has been given: a partial read right after
    ``accept`` was decoded up to ``position_s``."""

    def __init__(self, stream: Stream, *, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        self._stream = stream
        self._bytes_per_s = sample_rate * 2
        self._bytes = 0

    @property
    def position_s(self) -> float:
        return self._bytes / self._bytes_per_s

    def accept(self, pcm16: bytes) -> Partial | None:
        partial = self._stream.accept(pcm16)
        self._bytes += len(pcm16)
        return partial

    def finish(self) -> Transcript:
        return self._stream.finish()

    def close(self) -> None:
        self._stream.close()
