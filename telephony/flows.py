"""Call scripts (IVR) over the ``Call`` protocol. Telephony knows nothing of tickets: the
platform passes ``FlowHooks`` and gets audio, recordings, digits and survey answers back.

- ``serve_inbound``: the default handler. Greeting then listening (GB/T 33358: no menu before
  the caller has been heard), or, with ``menu_enabled``, a DTMF menu: 1 report, 2 status,
  3 callback number; no choice → report.
- ``report``: record the caller until end of speech, max length or hang-up, feeding every
  frame to the ASR hook, then thank them and hang up.
- ``status_query``: ticket number by keypad, status and deadline read back from pieces.
- ``survey``: outbound callback satisfaction, 1/2/3.

Timing comes from the audio itself (20 ms a frame) and from the Call's own timeouts, never a
wall clock, so a fake call runs a two-minute script in milliseconds. While a prompt plays the
caller's audio is still read: that paces the loop, keeps stale audio from piling up in the
receive buffer (it would otherwise land in the recording) and lets keys interrupt menus.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from telephony.endpoint import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    Call,
    CallState,
    IllegalCallTransition,
)
from telephony.loudness import SpeechKeeper
from telephony.prompts import BEEP, STATUSES, date_pieces, digit_pieces
from telephony.recording import (
    Endpointer,
    EndpointerSettings,
    EndReason,
    WavRecorder,
    frame_dbfs,
    recording_path,
)

log = logging.getLogger(__name__)

# Every prompt name a flow may ask for: each language's texts must cover them.
REQUIRED_PROMPTS = frozenset(
    {
        "greeting",
        "welcome",
        "menu",
        "speak_now",
        "closing",
        "no_speech",
        "enter_ticket",
        "ticket",
        "status_is",
        "deadline",
        "not_found",
        "no_input",
        "goodbye",
        "enter_callback",
        "callback_is",
        "callback_recorded",
        "survey_question",
        "invalid_key",
        "thanks",
        "queue_hold",
        "queue_position",
        "queue_position_end",
        "queue_wait",
        "queue_wait_end",
        "count_2",
        "queue_wait_short",
        "queue_callback_offer",
        "queue_overflow",
        "queue_callback_recorded",
        "ten",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        *(f"digit_{d}" for d in range(10)),
        *(f"status_{s}" for s in STATUSES),
    }
)


class Prompts(Protocol):
    def pcm(self, name: str) -> bytes:
        """A prompt as PCM16 LE 8 kHz mono."""


@dataclass(frozen=True)
class StatusAnswer:
    status: str  # one of telephony.prompts.STATUSES (the ticket lifecycle's names)
    deadline: datetime | None  # timezone-aware


class SurveyResult(str, enum.Enum):
    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    DISSATISFIED = "dissatisfied"


SURVEY_KEYS = {
    "1": SurveyResult.SATISFIED,
    "2": SurveyResult.BASICALLY_SATISFIED,
    "3": SurveyResult.DISSATISFIED,
}


def _ignore(*_: Any) -> None:
    return None


@dataclass
class FlowHooks:
    """What the platform plugs in. One object may serve every call: each hook gets the call.
    Hooks run in the call's thread; ``on_audio`` runs 50 times a second and must only hand
    the frame on (a queue), never block. A hook that raises is logged and the call goes on."""

    on_answered: Callable[[Call], None] = _ignore  # a report starts: create the ticket now
    on_audio: Callable[[Call, bytes], None] = _ignore  # every 20 ms of the report, in order
    on_finished: Callable[[Call, Path | None, EndReason], None] = _ignore  # once per report
    lookup_status: Callable[[str], StatusAnswer | None] = lambda number: None  # keyed digits
    on_callback_number: Callable[[Call, str], None] = _ignore
    on_survey_result: Callable[[Call, SurveyResult | None], None] = _ignore


@dataclass(frozen=True)
class FlowSettings:
    recording_dir: Path
    menu_enabled: bool = False
    # Caller speech stops the greeting (off: line echo can trigger it). Either way what the
    # caller says over the greeting is kept: it opens the recording, nothing of it is lost.
    barge_in: bool = False
    endpointer: EndpointerSettings = field(default_factory=EndpointerSettings)
    read_timeout_s: float = 0.2
    menu_timeout_s: float = 5.0
    first_digit_timeout_s: float = 8.0
    inter_digit_timeout_s: float = 4.0
    ticket_max_digits: int = 20
    phone_max_digits: int = 15
    status_attempts: int = 3  # the first try and two retries
    survey_timeout_s: float = 8.0
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))


# A peer flooding us must not keep discard_backlog() spinning: 60 s of frames at most.
_MAX_BACKLOG_FRAMES = 3000
# Frames taken in one read at most: a reader is woken every few ticks (telephony.media_loop)
# and takes what came meanwhile; after a stall, a second's worth at a time.
_READ_FRAMES = 50
# How often a call's thread reads the caller's audio while a prompt nothing interrupts plays
# (``_Flow._play_through``): rarely, and the receive buffer holds a second of it at most.
_PROMPT_READ_EVERY_S = 1.0


class _CallerGone(Exception):
    """The call ended under the flow; unwinds to the flow's top. ``speech``: what the caller
    said over a prompt that was being kept (``_Flow.play``'s ``keep_speech``) when the call
    ended — a caller who says it all over the greeting and hangs up loses nothing."""

    def __init__(self, speech: list[bytes] | None = None) -> None:
        super().__init__()
        self.speech = speech or []


@dataclass
class _Played:
    key: str | None = None  # a key that interrupted the prompt
    speech: list[bytes] = field(default_factory=list)  # caller audio over the prompt, kept


def _hook(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        log.exception("flow hook %s failed", getattr(fn, "__name__", fn))
        return None


def _enter(call: Call, state: CallState) -> None:
    if call.state == state:
        return
    if call.ended.is_set():
        raise _CallerGone
    try:
        call.set_state(state)
    except IllegalCallTransition:
        if call.ended.is_set() or call.state == CallState.ENDED:
            raise _CallerGone from None
        raise


class _Flow:
    def __init__(
        self, call: Call, prompts: Prompts, hooks: FlowHooks, settings: FlowSettings
    ) -> None:
        self.call = call
        self.prompts = prompts
        self.hooks = hooks
        self.settings = settings
        self.timeout_frames = max(1, round(settings.read_timeout_s * 1000 / FRAME_MS))
        # Frames read in one piece but not yet used (a prompt ended, or speech barged in,
        # part-way through them): the next read takes these first.
        self._unread: deque[bytes] = deque()
        self._read_frames = getattr(call, "read_frames", None)

    def read(self, timeout: float, limit: int = _READ_FRAMES) -> list[bytes] | None:
        """The caller's next frames: every whole 20 ms frame ready (at most ``limit``), at
        least one unless ``timeout`` passed with none (``[]``); None once the call ended and
        all was read. A ``Call`` with ``read_frames`` gives them in one piece (one trip
        through its lock for the frames of a reader's wake-up); another, one at a time."""
        if self._unread:
            return [self._unread.popleft() for _ in range(min(limit, len(self._unread)))]
        if self._read_frames is None or limit == 1:
            frame = self.call.read_frame(timeout)
            return None if frame is None else ([frame] if frame else [])
        chunk = self._read_frames(timeout, limit)
        if chunk is None:
            return None
        return [chunk[i : i + FRAME_BYTES] for i in range(0, len(chunk), FRAME_BYTES)]

    def unread(self, frames: list[bytes]) -> None:
        """Give back frames read but not used, for the next read."""
        self._unread.extendleft(reversed(frames))

    # ------------------------------------------------------------ primitives
    def discard_backlog(self) -> None:
        """Drop caller audio that piled up while we waited for keys or for playback to end:
        it would otherwise end a prompt's pacing loop early or open a recording with audio
        from before the beep."""
        self._unread.clear()
        dropped = 0
        while dropped < _MAX_BACKLOG_FRAMES:
            frames = self.read(0)
            if frames is None:
                raise _CallerGone
            if not frames:
                return
            dropped += len(frames)

    def play(
        self,
        pieces: list[str],
        *,
        keys_interrupt: bool = False,
        barge_in: bool = False,
        keep_speech: bool = False,
    ) -> _Played:
        """Play ``pieces`` to the end, or until a key (``keys_interrupt``) or the caller's
        speech (``barge_in``) stops them. ``keep_speech``: caller speech heard while they
        play is kept, from a little before its start, in ``_Played.speech``."""
        call = self.call
        pcm = b"".join(self.prompts.pcm(p) for p in pieces)
        self.discard_backlog()
        call.send_audio(pcm)
        if not (keys_interrupt or barge_in):
            return self._play_through(pcm, keep_speech=keep_speech)
        frames = math.ceil(len(pcm) / FRAME_BYTES)
        start_frames = max(1, self.settings.endpointer.speech_start_ms // FRAME_MS)
        recent: deque[bytes] = deque(maxlen=start_frames + 5)
        loud_run = 0
        done = 0
        kept: list[bytes] | None = None  # the caller's speech (and what follows), once heard
        while done < frames:
            got = self.read(self.settings.read_timeout_s, frames - done)
            if got is None:
                raise _CallerGone(kept)
            if not got:
                done += self.timeout_frames
                loud_run = 0
                if kept is not None:  # no packets: the time still passed
                    kept += [bytes(FRAME_BYTES)] * self.timeout_frames
                continue
            for n, frame in enumerate(got):
                if keys_interrupt:
                    key = call.read_dtmf(0)
                    if key is not None:
                        self.unread(got[n + 1 :])
                        call.clear_audio()
                        return _Played(key=key)
                done += 1
                if kept is not None:
                    kept.append(frame)
                elif barge_in or keep_speech:
                    recent.append(frame)
                    loud = frame_dbfs(frame) >= self.settings.endpointer.threshold_dbfs
                    loud_run = loud_run + 1 if loud else 0
                    if loud_run >= start_frames and barge_in:
                        self.unread(got[n + 1 :])
                        call.clear_audio()
                        return _Played(speech=list(recent))
                    if loud_run >= start_frames:
                        log.info("call %s: the caller speaks over the prompt: kept", call.call_id)
                        kept = list(recent)
        # The frame count is only an estimate of the playing time: wait for the real end.
        if not call.wait_sent(timeout=2.0) and call.ended.is_set():
            raise _CallerGone(kept)
        return _Played(speech=kept or [])

    def _play_through(self, pcm: bytes, *, keep_speech: bool) -> _Played:
        """``play`` where nothing stops the prompt: the caller's audio read about once a
        second, not paced (``_PROMPT_READ_EVERY_S``); the speech kept as when paced."""
        call = self.call
        frames = math.ceil(len(pcm) / FRAME_BYTES)
        ep = self.settings.endpointer
        speech = SpeechKeeper(ep.threshold_dbfs, ep.speech_start_ms // FRAME_MS)
        done = 0
        waits = math.ceil((len(pcm) / (2 * SAMPLE_RATE) + 2.0) / _PROMPT_READ_EVERY_S)
        for _ in range(waits):
            sent = call.wait_sent(timeout=_PROMPT_READ_EVERY_S)
            while done < frames:  # what came meanwhile, without waiting
                got = self.read(0, frames - done)
                if got is None:
                    raise _CallerGone(speech.kept)
                if not got:
                    break
                done += len(got)
                if keep_speech and speech.feed(got):
                    log.info("call %s: the caller speaks over the prompt: kept", call.call_id)
            if sent or call.ended.is_set():
                break
            if done >= frames:  # the caller's clock says it is over: its real end, 2 s at most
                call.wait_sent(timeout=2.0)
                break
        if call.ended.is_set():
            raise _CallerGone(speech.kept)
        return _Played(speech=speech.kept or [])

    def read_key(self, timeout: float) -> str | None:
        key = self.call.read_dtmf(timeout)
        if key is None and self.call.ended.is_set():
            raise _CallerGone
        return key

    def collect_digits(self, *, max_digits: int, first: str | None) -> str | None:
        """Digits until ``#``, ``max_digits`` or a pause; ``*`` starts over."""
        digits = ""
        key = first
        if key is None:
            key = self.read_key(self.settings.first_digit_timeout_s)
        while key is not None:
            if key == "#":
                break
            if key == "*":
                digits = ""
            elif key.isdigit():
                digits += key
                if len(digits) >= max_digits:
                    break
            timeout = (
                self.settings.inter_digit_timeout_s
                if digits
                else self.settings.first_digit_timeout_s
            )
            key = self.read_key(timeout)
        return digits or None

    # ------------------------------------------------------------ flows
    def report(self, *, greet: bool, opening: list[str] | None = None) -> EndReason:
        """``opening``: what is said before the beep instead of the greeting or "speak now"
        (a queued call handed to the robot is told why)."""
        call, s = self.call, self.settings
        _hook(self.hooks.on_answered, call)
        path: Path | None = None
        reason = EndReason.HANGUP
        endpointer = Endpointer(s.endpointer)
        try:
            if opening is not None:
                _enter(call, CallState.PROMPTING)
                played = self.play([*opening, BEEP], barge_in=s.barge_in, keep_speech=True)
            elif greet:
                _enter(call, CallState.GREETING)
                played = self.play(["greeting", BEEP], barge_in=s.barge_in, keep_speech=True)
            else:
                _enter(call, CallState.PROMPTING)
                played = self.play(["speak_now", BEEP], barge_in=s.barge_in, keep_speech=True)
            if not played.speech:
                self.discard_backlog()
            _enter(call, CallState.LISTENING)
            with WavRecorder(recording_path(s.recording_dir, call.call_id)) as recorder:
                path = recorder.path
                reason = self._listen(recorder, endpointer, played.speech)
        except _CallerGone as gone:
            reason = EndReason.HANGUP
            if path is None and gone.speech:
                # Hung up before the beep, having spoken over the prompt: that is the report.
                with WavRecorder(recording_path(s.recording_dir, call.call_id)) as recorder:
                    path = recorder.path
                    for frame in gone.speech:
                        _hook(self.hooks.on_audio, call, frame)
                        endpointer.feed(frame)
                    recorder.write(b"".join(gone.speech))
        log.info(
            "call %s report ended: %s after %d frames",
            call.call_id,
            reason.value,
            endpointer.frames,
        )
        _hook(self.hooks.on_finished, call, path, reason)
        if reason is not EndReason.HANGUP:
            try:
                _enter(call, CallState.PROMPTING)
                self.play(["closing" if endpointer.heard_speech else "no_speech"])
            except _CallerGone:
                return reason
            call.hangup()
        return reason

    def _listen(
        self, recorder: WavRecorder, endpointer: Endpointer, first: list[bytes]
    ) -> EndReason:
        call = self.call
        frame: bytes | None  # the first frames, then what the call reads (None: hung up)
        for frame in first:
            recorder.write(frame)
            _hook(self.hooks.on_audio, call, frame)
            endpointer.feed(frame)
        silence = bytes(FRAME_BYTES)
        while True:
            frames = self.read(self.settings.read_timeout_s)
            if frames is None:
                return EndReason.HANGUP
            if not frames:
                # No packets at all for a while (a phone suppressing silence, or a stalled
                # network): the time still passed, in the recording and for the recogniser.
                for _ in range(self.timeout_frames):
                    recorder.write(silence)
                    _hook(self.hooks.on_audio, call, silence)
                reason = endpointer.feed_silence(self.timeout_frames)
                if reason is not None:
                    return reason
                continue
            # The frames of one wake-up go to the file in one write, up to the one that
            # ended the turn; what follows it is the caller's audio after the report.
            reason = None
            for n, frame in enumerate(frames):
                _hook(self.hooks.on_audio, call, frame)
                reason = endpointer.feed(frame)
                if reason is not None:
                    self.unread(frames[n + 1 :])
                    frames = frames[: n + 1]
                    break
            recorder.write(b"".join(frames))
            if reason is not None:
                return reason

    def menu(self) -> str | None:
        _enter(self.call, CallState.MENU)
        for attempt in range(2):
            key = self.play(["menu"], keys_interrupt=True).key
            if key is None:
                key = self.read_key(self.settings.menu_timeout_s)
            if key is None:
                return None
            if key in ("1", "2", "3"):
                return key
            if attempt == 0:
                self.play(["invalid_key"])
        return None

    def status_query(self) -> None:
        call = self.call
        for _ in range(self.settings.status_attempts):
            _enter(call, CallState.MENU)
            key = self.play(["enter_ticket"], keys_interrupt=True).key
            number = self.collect_digits(max_digits=self.settings.ticket_max_digits, first=key)
            _enter(call, CallState.PROMPTING)
            if number is None:
                self.play(["no_input"])
                continue
            answer = _hook(self.hooks.lookup_status, number)
            if answer is None:
                self.play(["not_found"])
                continue
            self.play(status_pieces(number, answer, self.settings.tz))
            break
        _enter(call, CallState.PROMPTING)
        self.play(["goodbye"])
        call.hangup()

    def callback_number(self) -> None:
        call = self.call
        for _ in range(2):
            _enter(call, CallState.MENU)
            key = self.play(["enter_callback"], keys_interrupt=True).key
            number = self.collect_digits(max_digits=self.settings.phone_max_digits, first=key)
            _enter(call, CallState.PROMPTING)
            if number is not None:
                _hook(self.hooks.on_callback_number, call, number)
                self.play(["callback_is", *digit_pieces(number), "callback_recorded"])
                call.hangup()
                return
            self.play(["no_input"])
        self.play(["goodbye"])
        call.hangup()

    def survey(self) -> SurveyResult | None:
        call = self.call
        result: SurveyResult | None = None
        try:
            for attempt in range(2):
                _enter(call, CallState.PROMPTING)
                key = self.play(["survey_question"], keys_interrupt=True).key
                _enter(call, CallState.MENU)
                if key is None:
                    key = self.read_key(self.settings.survey_timeout_s)
                if key is None:
                    break
                result = SURVEY_KEYS.get(key)
                if result is not None or attempt == 1:
                    break
                _enter(call, CallState.PROMPTING)
                self.play(["invalid_key"])
            _enter(call, CallState.PROMPTING)
            self.play(["thanks" if result is not None else "goodbye"])
        except _CallerGone:
            pass
        _hook(self.hooks.on_survey_result, call, result)
        call.hangup()
        return result


def status_pieces(number: str, answer: StatusAnswer, tz: ZoneInfo) -> list[str]:
    """ "Ticket 2026…; status: being handled; deadline: 2026 year 12 month 4 day 17 o'clock"."""
    out = ["ticket", *digit_pieces(number), "status_is"]
    if answer.status in STATUSES:
        out.append(f"status_{answer.status}")
    else:
        log.warning("no prompt for ticket status %r; the status is not spoken", answer.status)
    if answer.deadline is not None:
        out += ["deadline", *date_pieces(answer.deadline, tz)]
    return out


# ---------------------------------------------------------------- entry points
def serve_inbound(
    call: Call, *, prompts: Prompts, hooks: FlowHooks, settings: FlowSettings
) -> None:
    """The CallHandler for inbound calls (bind the keywords with functools.partial)."""
    flow = _Flow(call, prompts, hooks, settings)
    if not settings.menu_enabled:
        flow.report(greet=True)
        return
    try:
        _enter(call, CallState.GREETING)
        flow.play(["welcome"])
        choice = flow.menu()
    except _CallerGone:
        return
    try:
        if choice == "2":
            flow.status_query()
        elif choice == "3":
            flow.callback_number()
        else:
            flow.report(greet=False)
    except _CallerGone:
        log.info("call %s ended during the %s flow", call.call_id, choice)


def report(
    call: Call, *, prompts: Prompts, hooks: FlowHooks, settings: FlowSettings, greet: bool = True
) -> EndReason:
    return _Flow(call, prompts, hooks, settings).report(greet=greet)


def status_query(call: Call, *, prompts: Prompts, hooks: FlowHooks, settings: FlowSettings) -> None:
    try:
        _Flow(call, prompts, hooks, settings).status_query()
    except _CallerGone:
        log.info("call %s ended during the status query", call.call_id)


def survey(
    call: Call, *, prompts: Prompts, hooks: FlowHooks, settings: FlowSettings
) -> SurveyResult | None:
    """Outbound satisfaction callback; the result also goes to ``hooks.on_survey_result``."""
    return _Flow(call, prompts, hooks, settings).survey()


def apologise(call: Call, *, prompts: Prompts, timeout_s: float = 20.0) -> None:
    """Ends a call the edge cannot keep (draining for a restart): whatever was playing is
    dropped, the caller hears the "maintenance" apology, and the call is hung up. The end
    goes through the call's normal end (record, recording, transcript)."""
    if not call.ended.is_set():
        call.clear_audio()
        call.send_audio(prompts.pcm("maintenance"))
        call.wait_sent(timeout_s)
    call.hangup()
