"""A bridged call's two-speaker transcript (对话记录): the caller (市民) and the operator
(话务员), each side transcribed on its own — live while they talk, or from its channel of
the stereo recording — and merged into ordered turns by time (``asr.dialogue``).

The caller's side is what the ticket is made of (the transcript, the form's pre-fill); the
dialogue is kept beside it on the call record, for the console and the ticket page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from asr.dialogue import LiveDialogue, TimedStream, merge_transcripts, turns_as_dicts
from asr.recognizer import Transcript

CALLER = "caller"
OPERATOR = "operator"
SPEAKERS = (CALLER, OPERATOR)  # the stereo recording's channels, left then right

Turns = list[dict[str, Any]]


def final_dialogue(caller: Transcript | None, operator: Transcript | None) -> Turns:
    """The stored turns of both sides' final transcripts (a side without one is left out)."""
    return turns_as_dicts(merge_transcripts({CALLER: caller, OPERATOR: operator}))


class CallDialogue:
    """One bridged call's running dialogue. Each side's decoder thread reports its running
    text (``on_partial``) with the position its ``TimedStream`` had decoded to; every change
    is offered to the partial writer as (the caller's text, the turns), so the caller's
    text keeps filling the form and the dialogue rides in the same batched write."""

    def __init__(self, call_id: str, offer: Callable[[str, str, Turns], None]) -> None:
        self.call_id = call_id
        self._offer = offer
        self._live = LiveDialogue()
        self._lock = threading.Lock()  # offers go out in the order the changes were made
        self.streams: dict[str, TimedStream] = {}

    def timed(self, speaker: str, stream: TimedStream) -> Callable[[str], None]:
        """The ``on_partial`` for ``speaker``'s live stream."""
        self.streams[speaker] = stream

        def on_partial(text: str) -> None:
            with self._lock:
                turns = self._live.update(speaker, text, stream.position_s)
                self._offer(self.call_id, self._live.text_of(CALLER), turns_as_dicts(turns))

        return on_partial

    def turns(self) -> Turns:
        return turns_as_dicts(self._live.turns())
