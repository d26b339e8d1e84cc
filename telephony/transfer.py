"""Transfers of a bridged call: what one attempt is, and how it ended.

The bridge (``telephony.bridge``) does the work — it holds the caller, dials the target with
the edge's own ``dial`` and, on the answer, puts the new leg where the agent's was. This
module is the vocabulary the bridge, the queue flow and the call record share:

- ``BLIND``: the target is rung while the caller hears hold audio; the answer hands the
  caller over at once and the agent's leg is hung up.
- ``ATTENDED`` (consultative): the target's answer opens a consultation — the agent and the
  target talk, the caller still on hold — until the agent completes (or hangs up, which
  completes, as PBXs do) or cancels (back with the caller, the target hung up).

An attempt that fails (busy, no answer, cancelled, the target leaving the consultation)
brings the caller back to the agent. If the agent has left by then, the bridge ends with
``BridgeResult.caller_kept``: the caller is still on the line and the queue flow queues them
again rather than hang up on them.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from telephony.endpoint import Call, Disposition


class Dial(Protocol):
    """``SipEdge.dial`` / ``OutboundCalls.dial``: ring ``uri`` and return the answered leg,
    or raise ``CallFailed`` (``CANCELLED`` soon after ``cancel`` is set)."""

    def __call__(
        self, uri: str, *, ring_timeout: float, cancel: threading.Event | None = None
    ) -> Call: ...


class TransferKind(str, enum.Enum):
    BLIND = "blind"
    ATTENDED = "attended"
    THREE_WAY = "three_way"  # the agent left a three-way call: the third party stays


class TransferState(str, enum.Enum):
    RINGING = "ringing"  # the target is being dialled; the caller hears hold audio
    CONSULTING = "consulting"  # attended: the agent talks to the target, the caller held
    DONE = "done"  # see ``outcome``


class TransferOutcome(str, enum.Enum):
    COMPLETED = "completed"  # the target talks to the caller now
    FAILED = "failed"  # busy, no answer, refused, or the target left the consultation
    CANCELLED = "cancelled"  # the agent (or the caller's hang-up) called it off
    MERGED = "merged"  # the consulted party joined a three-way call (``Bridge.merge``)


class TransferRefused(Exception):
    """A transfer cannot start now (one is under way, the call ended, no way to dial)."""


@dataclass(eq=False)
class Transfer:
    """One attempt; the bridge moves it, the caller of ``Bridge.transfer`` waits on it."""

    kind: TransferKind
    target_uri: str
    from_leg: Call  # the agent's leg the attempt started from
    leg: Call | None = None  # the target's leg, once answered
    state: TransferState = TransferState.RINGING
    outcome: TransferOutcome | None = None
    disposition: Disposition | None = None  # why a failed or cancelled attempt did not happen
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    # Told the outcome as a SIP status as soon as it is known, before the agent's leg is
    # hung up: a REFER's sipfrag NOTIFY to the phone that asked (``SipCall.on_refer``).
    report: Callable[[int, str], None] | None = None
    started: float = field(default_factory=time.monotonic)
    rang_s: float | None = None  # how long the target rang (the caller's extra hold)

    def wait(self, timeout: float | None = None) -> TransferOutcome | None:
        """The outcome once decided (None on timeout, or while a consultation is up)."""
        self.done.wait(timeout)
        return self.outcome


def sip_status(outcome: TransferOutcome, why: Disposition | None) -> tuple[int, str]:
    """The status line a phone that sent REFER is told (RFC 3515 §2.4.5)."""
    if outcome in (TransferOutcome.COMPLETED, TransferOutcome.MERGED):
        return 200, "OK"
    if outcome is TransferOutcome.CANCELLED:
        return 487, "Request Terminated"
    return {
        Disposition.BUSY: (486, "Busy Here"),
        Disposition.NO_ANSWER: (408, "Request Timeout"),
        Disposition.CALLER_HUNG_UP: (480, "Temporarily Unavailable"),
    }.get(why or Disposition.FAILED, (503, "Service Unavailable"))
