"""The telephony edge as the rest of the platform sees it.

Everything outside ``telephony/`` talks to calls through these protocols, never through pyVoIP,
so most tests run against fakes and the SIP library can be fixed or replaced in one place.

Audio crosses this boundary as 16-bit little-endian mono PCM at 8 kHz in 20 ms frames
(``FRAME_BYTES``), whatever codec the call negotiated.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2


class CallDirection(str, enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallState(str, enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    GREETING = "greeting"
    MENU = "menu"
    LISTENING = "listening"
    PROMPTING = "prompting"
    QUEUED = "queued"  # waiting for an agent (telephony.queue_flow)
    BRIDGED = "bridged"  # talking to an agent (telephony.bridge)
    ENDED = "ended"


# After the answer a call moves freely between the talking states (a status query goes
# greeting → menu → prompting; a report greeting → listening; a queued call greeting →
# queued → bridged, or → prompting → listening when it overflows); ENDED is final.
_TALKING = {
    CallState.GREETING,
    CallState.MENU,
    CallState.LISTENING,
    CallState.PROMPTING,
    CallState.QUEUED,
    CallState.BRIDGED,
}
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.RINGING: frozenset({CallState.ANSWERED, CallState.ENDED}),
    CallState.ANSWERED: frozenset(_TALKING | {CallState.ENDED}),
    **{state: frozenset((_TALKING - {state}) | {CallState.ENDED}) for state in _TALKING},
    CallState.ENDED: frozenset(),
}


class Disposition(str, enum.Enum):
    COMPLETED = "completed"  # the platform ended the call after it was served
    CALLER_HUNG_UP = "caller_hung_up"  # the caller (or callee, outbound) sent BYE first
    CANCELLED = "cancelled"  # CANCEL before the answer
    NO_ANSWER = "no_answer"  # outbound: ring timeout
    BUSY = "busy"  # outbound: 486/600/603
    FAILED = "failed"  # signalling or media failure
    # A bridged call hung up by the edge because one of its phones sent no RTP for the
    # media timeout (``telephony.media_timeout``): gone without a BYE. An answered call.
    MEDIA_TIMEOUT = "media_timeout"
    # Inbound: turned away unanswered (503: every call slot or RTP port busy) — a missed call
    # the centre must call back; its record keeps the caller's number.
    REFUSED = "refused"


class IllegalCallTransition(Exception):
    def __init__(self, current: CallState, target: CallState) -> None:
        super().__init__(f"a call cannot go from {current.value} to {target.value}")
        self.current = current
        self.target = target


def check_transition(current: CallState, target: CallState) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalCallTransition(current, target)


class CallFailed(Exception):
    """An outbound call that was never answered; ``disposition`` says why."""

    def __init__(self, disposition: Disposition, reason: str = "") -> None:
        super().__init__(reason or disposition.value)
        self.disposition = disposition
        self.reason = reason


class Call(Protocol):
    # The call's key, the idempotency key of everything a call creates: its SIP Call-ID, made
    # unique per call and at most 255 long (``telephony.sip_call_keys``).
    call_id: str
    direction: CallDirection
    local_uri: str
    remote_uri: str  # From of an inbound call, the dialled URI of an outbound one
    remote_number: str  # the user part of remote_uri ("" when anonymous)
    codec: str  # "PCMU" or "PCMA"
    state: CallState
    disposition: Disposition | None
    arrived_at: datetime  # INVITE received / sent
    answered_at: datetime | None
    ended_at: datetime | None
    ended: threading.Event

    def set_state(self, state: CallState) -> None:
        """Move the call's state machine; raises IllegalCallTransition."""

    def read_frame(self, timeout: float) -> bytes | None:
        """The caller's next 20 ms as PCM; gaps come back as silence, so a quiet caller never
        blocks a reader past ``timeout`` (``b""`` then). ``None`` once the call has ended and
        everything received has been read."""

    def send_audio(self, pcm: bytes) -> None:
        """Queue PCM to play to the caller, paced in real time."""

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Block until queued audio has been played (True) or the call ended / timed out."""

    def clear_audio(self) -> None:
        """Drop audio still queued (barge-in)."""

    def read_dtmf(self, timeout: float) -> str | None:
        """The next key the caller pressed ("0"-"9", "*", "#", "A"-"D"), or None."""

    def hangup(self) -> None:
        """End the call from our side (BYE); a no-op once ended."""


class BridgeableCall(Call, Protocol):
    """What a bridge needs beyond ``Call`` (``SipCall`` has it; ``telephony.bridge`` checks):
    passing keys on, and how much audio waits to be sent, to keep a relay's delay bounded."""

    def send_dtmf(self, key: str) -> bool:
        """Send a key as RFC 4733 events; False when the peer takes none (no
        telephone-event in its SDP) or the call has ended."""

    @property
    def queued_ms(self) -> int:
        """Audio queued by ``send_audio`` and not yet played."""


CallHandler = Callable[[Call], None]
"""Serves one answered call, in a thread of its own; the edge hangs up when it returns."""

CallObserver = Callable[[Call], None]
"""Told about every call when it ends, answered or not (the call record)."""


class SipEndpoint(Protocol):
    @property
    def address(self) -> tuple[str, int]:
        """Where SIP is listened for (host, port), once started."""

    def start(self, *, on_call: CallHandler, on_ended: CallObserver) -> None: ...

    def stop(self) -> None:
        """Hang up every call, stop listening, free every port."""

    def dial(self, uri: str, *, ring_timeout: float, cancel: threading.Event | None = None) -> Call:
        """Place an outbound call and wait for the answer; raises CallFailed (CANCELLED
        soon after ``cancel`` is set by another thread)."""
