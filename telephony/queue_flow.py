"""The call flow of a centre with operators: welcome, wait in the queue, talk to a person.

After the welcome the call joins the ACD (``telephony.acd``). While it waits the caller hears
the hold audio, is told their place and expected wait on joining and every
``position_every_s``, and may press the callback key. The flow ends in one of four ways:

- bridged: an agent answered; the caller and the agent talk through ``telephony.bridge``
  until either hangs up, recorded as one stereo file;
- overflow: an overflow rule fired; the caller gets the voice-intake robot (the report flow,
  told why first), a callback, or the choice between them (``overflow_offer``);
- callback: the caller pressed the key; their number is kept (asked for by keypad when the
  call came anonymous) and the call becomes a callback task;
- abandoned: the caller hung up while waiting; the engine keeps the wait.

Time is counted in the caller's audio frames, as in ``telephony.flows``: the flow's pace is
the call's own, so a fake call runs a five-minute wait in milliseconds. The queue's own
deadlines (ring timeouts, overflow after a wait) are the engine's, on its clock.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from telephony.acd import Acd, AgentOffer, Connected, Overflowed, QueueEntry
from telephony.bridge import Bridge, BridgeResult
from telephony.endpoint import FRAME_BYTES, FRAME_MS, Call, CallState
from telephony.flows import FlowHooks, FlowSettings, Prompts, _CallerGone, _enter, _Flow, _hook
from telephony.prompts import HOLD, digit_pieces, number_pieces
from telephony.recording import Side

log = logging.getLogger(__name__)


# Hold audio is kept queued this far ahead of the caller's ear: a wake-up of the flow's
# reader may come late (up to its read timeout and then some) without a gap.
_HOLD_AHEAD_MS = 600


class QueueOutcome(str, enum.Enum):
    BRIDGED = "bridged"
    OVERFLOW_INTAKE = "overflow_intake"  # the robot took the report
    CALLBACK = "callback"  # by key while waiting, or chosen at overflow
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class QueueSettings:
    position_every_s: float = 30.0
    callback_key: str | None = "1"  # None: no callback offered while waiting
    overflow_offer: Literal["intake", "callback", "choice"] = "choice"
    choice_timeout_s: float = 5.0  # "choice": no key within this → the robot

    def __post_init__(self) -> None:
        if self.position_every_s <= 0:
            raise ValueError("position_every_s must be > 0")
        if self.callback_key is not None and self.callback_key not in "0123456789":
            raise ValueError(f"callback_key must be one digit, not {self.callback_key!r}")
        if self.overflow_offer not in ("intake", "callback", "choice"):
            raise ValueError(f"unknown overflow_offer {self.overflow_offer!r}")
        if self.overflow_offer != "intake" and self.callback_key is None:
            raise ValueError(f"overflow_offer {self.overflow_offer!r} needs a callback_key")

    @classmethod
    def from_settings(cls, acd: Any) -> QueueSettings:
        """From ``core.settings.AcdSettings`` (duck-typed)."""
        return cls(
            position_every_s=acd.position_every_s,
            callback_key=acd.callback_key,
            overflow_offer=acd.overflow_offer,
        )


def _no_placement(call: Call) -> tuple[int, frozenset[str]]:
    return 0, frozenset()


def _ignore(*_: Any) -> None:
    return None


@dataclass
class QueueHooks:
    """What the platform plugs in for queued calls (``FlowHooks`` serves the robot's part).
    Hooks run in the call's thread; ``on_audio`` runs for every chunk of either side and
    must only hand it on."""

    # The call's priority (telephony.acd.call_priority) and the skills it needs.
    placement: Callable[[Call], tuple[int, frozenset[str]]] = _no_placement
    on_bridged: Callable[[Call, Call, AgentOffer], None] = _ignore  # caller, agent leg, agent
    on_audio: Callable[[Call, Side, bytes], None] = _ignore  # caller's call, side, PCM
    on_bridge_ended: Callable[[Call, BridgeResult], None] = _ignore
    on_outcome: Callable[[Call, QueueOutcome], None] = _ignore
    bridge_factory: Callable[..., Bridge] = field(default=Bridge)


def position_pieces(position: int, wait_s: float) -> list[str]:
    """ "You are number 3; the expected wait is 4 minutes" (under a minute said so)."""
    out = ["queue_position", *number_pieces(position), "queue_position_end"]
    if wait_s < 60:
        return [*out, "queue_wait_short"]
    minutes = math.ceil(wait_s / 60)
    spoken = ["count_2"] if minutes == 2 else number_pieces(minutes)  # 两分钟
    return [*out, "queue_wait", *spoken, "queue_wait_end"]


class _QueuedCall:
    def __init__(
        self,
        flow: _Flow,
        acd: Acd,
        hooks: QueueHooks,
        settings: QueueSettings,
    ) -> None:
        self.flow = flow
        self.call = flow.call
        self.acd = acd
        self.hooks = hooks
        self.settings = settings
        self.elapsed = 0  # frames of the caller's time since joining
        self.audio_until = 0  # frame at which the audio queued to the caller runs out
        self.every = max(1, round(settings.position_every_s * 1000 / FRAME_MS))

    def queue_audio(self, pieces: list[str]) -> None:
        pcm = b"".join(self.flow.prompts.pcm(p) for p in pieces)
        self.call.send_audio(pcm)
        self.audio_until = max(self.elapsed, self.audio_until) + math.ceil(len(pcm) / FRAME_BYTES)

    def audio_left_ms(self) -> int:
        """How much of what was queued to the caller is still to play: the call's own count
        where it keeps one (``SipCall.queued_ms``); else reckoned from the frames read,
        which falls behind the truth when the caller sends nothing (a read that times out
        takes a little longer than its timeout)."""
        queued = getattr(self.call, "queued_ms", None)
        if isinstance(queued, int):
            return queued
        return (self.audio_until - self.elapsed) * FRAME_MS

    def announce(self, entry: QueueEntry, *, first: bool) -> None:
        position = self.acd.position(entry.call_key)
        wait = self.acd.expected_wait_s(entry.call_key)
        if position is None or wait is None:
            return
        self.call.clear_audio()
        self.audio_until = self.elapsed
        pieces = ["queue_hold"] if first else []
        pieces += position_pieces(position, wait)
        if self.settings.callback_key is not None:
            pieces += ["queue_callback_offer", *digit_pieces(self.settings.callback_key)]
        self.queue_audio(pieces)

    def run(self) -> QueueOutcome:
        call = self.call
        priority, skills = _hook(self.hooks.placement, call) or (0, frozenset())
        _enter(call, CallState.QUEUED)
        self.flow.discard_backlog()
        entry = self.acd.enqueue(call.call_id, priority=priority, skills=skills)
        try:
            return self._wait(entry)
        finally:
            if entry.result is None:  # the caller hung up, or the flow failed: not lost
                result = self.acd.abandon(entry.call_key)
                if result is not None:
                    log.info("call %s abandoned after %.1f s", call.call_id, result.waited_s)

    def _wait(self, entry: QueueEntry) -> QueueOutcome:
        call, flow = self.call, self.flow
        first_event = entry.next_event()
        if first_event is None and entry.ring is None:
            self.announce(entry, first=True)
        next_announce = self.every
        event = first_event
        while True:
            while event is not None:
                if isinstance(event, Connected):
                    return self._bridge(entry, event)
                if isinstance(event, Overflowed):
                    return self._overflow()
                event = entry.next_event()
            if self.elapsed >= next_announce:
                self.announce(entry, first=False)
                next_announce = self.elapsed + self.every
            while self.audio_left_ms() < _HOLD_AHEAD_MS:  # never dead air
                self.queue_audio([HOLD])
            frames = flow.read(flow.settings.read_timeout_s)
            if frames is None:
                raise _CallerGone
            self.elapsed += len(frames) if frames else flow.timeout_frames
            key = call.read_dtmf(0)
            if key is not None and key == self.settings.callback_key:
                if self.acd.callback(entry.call_key) is not None:
                    call.clear_audio()
                    return self._callback()
            event = entry.next_event()

    def _bridge(self, entry: QueueEntry, connected: Connected) -> QueueOutcome:
        call, leg = self.call, connected.leg
        call.clear_audio()
        self.flow.discard_backlog()
        _enter(call, CallState.BRIDGED)
        _hook(self.hooks.on_bridged, call, leg, connected.offer)
        # rtpengine mode (``telephony.media_relay``): the edge's calls name the relay; the
        # factory passes its options on to ``Bridge``.
        relay = getattr(call, "media_relay", None)
        options = {} if relay is None else {"relay": relay}
        try:
            bridge = self.hooks.bridge_factory(
                call,
                leg,
                recording_dir=self.flow.settings.recording_dir,
                hold_audio=self.flow.prompts.pcm(HOLD),
                on_audio=lambda side, pcm: self.hooks.on_audio(call, side, pcm),
                **options,
            )
            bridge.start()
            bridge.wait()
        finally:
            leg.hangup()  # whatever happened, no agent is left on a line to nobody
            self.acd.finished(entry.call_key)
        _hook(self.hooks.on_bridge_ended, call, bridge.result)
        return QueueOutcome.BRIDGED

    def _overflow(self) -> QueueOutcome:
        call, flow, offer = self.call, self.flow, self.settings.overflow_offer
        call.clear_audio()
        if offer == "callback":
            return self._callback()
        if offer == "choice" and self.settings.callback_key is not None:
            _enter(call, CallState.MENU)
            pieces = ["queue_callback_offer", *digit_pieces(self.settings.callback_key)]
            key = flow.play(pieces, keys_interrupt=True).key
            if key is None:
                key = flow.read_key(self.settings.choice_timeout_s)
            if key == self.settings.callback_key:
                return self._callback()
        flow.report(greet=False, opening=["queue_overflow"])
        return QueueOutcome.OVERFLOW_INTAKE

    def _callback(self) -> QueueOutcome:
        call, flow = self.call, self.flow
        if not call.remote_number:  # anonymous: ask for a number
            flow.callback_number()
            return QueueOutcome.CALLBACK
        _hook(flow.hooks.on_callback_number, call, call.remote_number)
        _enter(call, CallState.PROMPTING)
        flow.play(["queue_callback_recorded"])
        call.hangup()
        return QueueOutcome.CALLBACK


def serve_queue(
    call: Call,
    *,
    acd: Acd,
    prompts: Prompts,
    hooks: FlowHooks,
    settings: FlowSettings,
    queue_hooks: QueueHooks | None = None,
    queue_settings: QueueSettings | None = None,
) -> QueueOutcome:
    """The CallHandler of a centre with operators (bind the keywords with
    functools.partial): welcome, queue, then bridged / overflow / callback / abandoned."""
    flow = _Flow(call, prompts, hooks, settings)
    queued = _QueuedCall(flow, acd, queue_hooks or QueueHooks(), queue_settings or QueueSettings())
    outcome = QueueOutcome.ABANDONED
    try:
        _enter(call, CallState.GREETING)
        flow.play(["welcome"])
        outcome = queued.run()
    except _CallerGone:
        outcome = QueueOutcome.ABANDONED
    log.info("call %s left the queue flow: %s", call.call_id, outcome.value)
    _hook(queued.hooks.on_outcome, call, outcome)
    return outcome
