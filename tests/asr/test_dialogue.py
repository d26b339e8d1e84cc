"""Two speakers' words as one dialogue: the merge of timed words into turns (final), the
running turns from partial texts (live), and the timed stream the live side reads its
position from — with fakes for the many small cases and the real Vosk model for word times
that really come out of a stereo recording."""

from __future__ import annotations

from asr.dialogue import LiveDialogue, TimedStream, Turn, merge_transcripts, merge_words
from asr.offline import transcribe_channels
from asr.recognizer import Transcript, Word
from tests.asr.dialogue_audio import stereo_wav, timeline
from tests.asr.fakes import GatedStream
from tests.speech import read_wav, speak


def _words(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end, 1.0) for text, start, end in items]


def test_given_alternating_speakers_then_one_turn_per_run_in_time_order():
    caller = _words(("물이", 0.5, 0.9), ("새요", 1.0, 1.4), ("인민로", 5.0, 5.6))
    operator = _words(("어디", 2.0, 2.4), ("인가요", 2.5, 3.0))

    turns = merge_words({"caller": caller, "operator": operator})

    assert turns == [
        Turn("caller", 0.5, 1.4, "물이 새요"),
        Turn("operator", 2.0, 3.0, "어디 인가요"),
        Turn("caller", 5.0, 5.6, "인민로"),
    ]


def test_given_an_interjection_inside_a_turn_then_it_splits_the_turn_where_it_came():
    caller = _words(("하나", 0.0, 0.5), ("둘", 0.6, 1.0), ("셋", 1.6, 2.0))
    operator = _words(("네", 1.1, 1.3))

    turns = merge_words({"caller": caller, "operator": operator})

    assert [(t.speaker, t.text) for t in turns] == [
        ("caller", "하나 둘"),
        ("operator", "네"),
        ("caller", "셋"),
    ]


def test_given_one_speaker_pausing_long_then_a_new_turn_short_pauses_stay_one():
    caller = _words(("하나", 0.0, 0.5), ("둘", 1.5, 2.0), ("셋", 6.0, 6.5))

    turns = merge_words({"caller": caller}, pause_s=2.0)

    assert [t.text for t in turns] == ["하나 둘", "셋"]


def test_given_no_words_or_a_side_without_transcript_then_only_what_was_said():
    assert merge_words({"caller": [], "operator": []}) == []
    said = Transcript("물이", tuple(_words(("물이", 1.0, 1.5))), 3.0)

    turns = merge_transcripts({"caller": said, "operator": None})

    assert [t.as_dict() for t in turns] == [
        {"speaker": "caller", "start_s": 1.0, "end_s": 1.5, "text": "물이"}
    ]


def test_live_given_sides_taking_turns_then_turns_follow_the_positions_they_were_heard_at():
    live = LiveDialogue()
    live.update("caller", "물이", 1.0)
    live.update("caller", "물이 새요", 1.5)
    live.update("operator", "어디", 3.0)
    live.update("operator", "어디 인가요", 3.5)
    turns = live.update("caller", "물이 새요 인민로", 5.0)

    assert [(t.speaker, t.text) for t in turns] == [
        ("caller", "물이 새요"),
        ("operator", "어디 인가요"),
        ("caller", "인민로"),
    ]
    starts = [t.start_s for t in turns]
    assert starts == sorted(starts) and starts[1] >= turns[0].end_s
    assert live.text_of("caller") == "물이 새요 인민로"


def test_live_given_a_revision_of_the_words_shown_then_rewritten_in_their_turn():
    live = LiveDialogue()
    live.update("caller", "물이 세요", 1.0)
    live.update("operator", "네", 2.0)
    turns = live.update("caller", "물이 새요", 2.1)  # the engine changed its mind

    assert [(t.speaker, t.text) for t in turns] == [("caller", "물이 새요"), ("operator", "네")]


def test_live_given_the_running_text_shrinks_to_nothing_then_its_turn_goes():
    live = LiveDialogue()
    live.update("operator", "음", 0.5)
    turns = live.update("operator", "", 0.8)

    assert turns == []


def test_live_given_a_long_silence_of_one_side_then_its_next_words_open_a_new_turn():
    live = LiveDialogue(pause_s=2.0)
    live.update("caller", "하나", 1.0)
    turns = live.update("caller", "하나 둘", 6.0)

    assert [t.text for t in turns] == ["하나", "둘"]
    assert turns[1].start_s > turns[0].end_s


def test_timed_stream_counts_the_audio_given_and_passes_everything_through():
    inner = GatedStream()
    inner.gate.set()
    timed = TimedStream(inner)

    timed.accept(bytes(320 * 50))  # one second at 8 kHz
    assert timed.position_s == 1.0
    result = timed.finish()
    timed.close()

    assert result.duration_s == 1.0 and len(inner.frames) == 50 and inner.closed


def test_given_a_stereo_recording_then_each_channel_gives_its_speaker_s_timed_words(
    recognizer, tmp_path
):
    """Real Vosk: the caller speaks first (left), the operator after (right); the merge puts
    the caller's turn first, the operator's second, each with its own words."""
    first, _ = read_wav(speak("도로에 물이 새고 있습니다"))
    second, _ = read_wav(speak("네 주소를 말씀해 주세요"))
    left, right = timeline([(0.5, first)]), timeline([(4.5, second)])
    path = stereo_wav(tmp_path / "call.wav", left, right)

    caller, operator = transcribe_channels(recognizer=recognizer, path=path)
    turns = merge_transcripts({"caller": caller, "operator": operator})

    assert caller.text and operator.text
    assert [t.speaker for t in turns] == ["caller", "operator"]
    assert turns[0].text == caller.text and turns[1].text == operator.text
    assert turns[0].start_s >= 0.3 and turns[1].start_s >= 4.3
