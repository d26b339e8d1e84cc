"""What the queue engine (``telephony.acd``) is made of and speaks in: its configuration, the
agents and ringers it drives (``AgentPool``, ``Ringer``), a waiting call (``QueueEntry``) and the
events and results the caller's flow gets. ``telephony.acd`` re-exports every name."""

from __future__ import annotations

import enum
import queue
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from telephony.endpoint import Call

Clock = Callable[[], float]
"""Seconds on a monotonic scale (``time.monotonic`` outside tests)."""


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class AcdConfig:
    """The engine's rules; ``from_settings`` reads ``settings.acd``."""

    ring_timeout_s: float = 10.0
    retry_pause_s: float = 1.0
    # The ringer has its own ring timeout (``dial``'s); the engine's timer fires this much
    # later, so that an answer just inside the timeout is not thrown away by a race.
    ring_grace_s: float = 0.5
    position_every_s: float = 30.0
    overflow_after_s: float | None = 60.0  # None: never by wait
    overflow_queue_longer_than: int | None = 20  # None: never by length
    overflow_when_no_agents: bool = True
    # Until calls have been handled, expected waits assume this handle time.
    default_handle_s: float = 240.0
    handle_history: int = 50  # the recent handle times the estimate averages

    def __post_init__(self) -> None:
        if self.ring_timeout_s <= 0 or self.retry_pause_s < 0 or self.ring_grace_s < 0:
            raise ValueError("acd: ring_timeout_s must be > 0, retry_pause_s, ring_grace_s >= 0")
        if self.position_every_s <= 0 or self.default_handle_s <= 0 or self.handle_history < 1:
            raise ValueError("acd: position_every_s, default_handle_s, handle_history must be > 0")
        if self.overflow_after_s is not None and self.overflow_after_s <= 0:
            raise ValueError("acd: overflow_after_s must be > 0 (or None)")
        if self.overflow_queue_longer_than is not None and self.overflow_queue_longer_than < 0:
            raise ValueError("acd: overflow_queue_longer_than must be >= 0 (or None)")

    @classmethod
    def from_settings(cls, acd: Any) -> AcdConfig:
        """From ``core.settings.AcdSettings`` (duck-typed: telephony does not read settings)."""
        return cls(
            ring_timeout_s=acd.ring_timeout_s,
            retry_pause_s=acd.retry_pause_s,
            position_every_s=acd.position_every_s,
            overflow_after_s=acd.overflow_after_s,
            overflow_queue_longer_than=acd.overflow_queue_longer_than,
            overflow_when_no_agents=acd.overflow_when_no_agents,
        )


URGENT_PRIORITY = 20
REPEAT_CALLER_PRIORITY = 10


def call_priority(
    *,
    dialled: str,
    repeat_caller: bool,
    urgent_lines: Collection[str] = (),
    repeat_caller_priority: bool = True,
) -> int:
    """A call's place in line: urgent lines first, then repeat callers of an open ticket
    (they are chasing something already promised), then everyone in order of arrival."""
    if dialled and dialled in urgent_lines:
        return URGENT_PRIORITY
    if repeat_caller and repeat_caller_priority:
        return REPEAT_CALLER_PRIORITY
    return 0


# ---------------------------------------------------------------- agents and ringing
@dataclass(frozen=True)
class AgentOffer:
    """An agent reserved (ringing) for one call."""

    agent_id: str
    extension: str  # the seat to ring
    skills: frozenset[str] = frozenset()


class AgentPool(Protocol):
    """The agents as the engine sees them. Every method is an atomic move of one agent's
    state keyed by the call, so that a repeated or late call of it does nothing."""

    def reserve(self, skills: frozenset[str], call_key: str) -> AgentOffer | None:
        """The longest-idle ready agent having ``skills`` with a bound seat, now ringing for
        ``call_key``; None when there is none."""

    def answered(self, agent_id: str, call_key: str) -> None:
        """The agent picked up: on call."""

    def missed(self, agent_id: str, call_key: str) -> None:
        """The ring went unanswered (or the seat could not be reached): not ready (missed)."""

    def release(self, agent_id: str, call_key: str) -> None:
        """The ring stopped through no fault of the agent (the caller hung up): ready again,
        keeping their place in the idle order."""

    def call_ended(self, agent_id: str, call_key: str) -> None:
        """The bridged call ended: wrap-up."""

    def signed_in(self, skills: frozenset[str]) -> int:
        """Agents signed in (in any state) who have ``skills``: none means nobody will come."""

    def next_change_at(self) -> float | None:
        """When an agent becomes ready by themselves (a wrap-up ends), on the engine's clock;
        the engine wakes then. None when no such change is pending."""


@dataclass(frozen=True)
class RingAttempt:
    """One ring of one agent's seat for one call; ``id`` tells a late report from the current."""

    id: int
    call_key: str
    offer: AgentOffer
    timeout_s: float
    started_at: float


class Ringer(Protocol):
    """Rings seats. ``ring`` must not block: the answer comes back as
    ``Acd.ring_answered(attempt, leg)`` (hang the leg up if it returns False) or
    ``Acd.ring_failed(attempt, disposition)``."""

    def ring(self, attempt: RingAttempt) -> None: ...

    def cancel(self, attempt: RingAttempt) -> None:
        """Stop ringing (the caller left, or the engine's timer gave up on it)."""


# ---------------------------------------------------------------- a waiting call
class Outcome(str, enum.Enum):
    ANSWERED = "answered"  # bridged to an agent
    OVERFLOW = "overflow"  # handed to the robot (or a callback) by an overflow rule
    CALLBACK = "callback"  # the caller pressed the callback key
    ABANDONED = "abandoned"  # the caller hung up while waiting


class OverflowReason(str, enum.Enum):
    WAITED = "waited"  # overflow_after_s in the queue
    QUEUE_LONG = "queue_long"  # joined a queue longer than overflow_queue_longer_than
    NO_AGENTS = "no_agents"  # nobody signed in who could take it


@dataclass(frozen=True)
class Ringing:
    offer: AgentOffer


@dataclass(frozen=True)
class Connected:
    """An agent answered: ``leg`` is the agent's call, to bridge with the caller."""

    offer: AgentOffer
    leg: Call


@dataclass(frozen=True)
class Overflowed:
    reason: OverflowReason


AcdEvent = Ringing | Connected | Overflowed


@dataclass(frozen=True)
class QueueResult:
    """How a call left the queue; the call record keeps it."""

    call_key: str
    outcome: Outcome
    waited_s: float  # joined → answered / left
    agent_id: str | None = None
    overflow: OverflowReason | None = None
    missed_agents: tuple[str, ...] = ()  # agents rung who did not answer, in order


@dataclass
class QueueEntry:
    """A call in the queue, as its flow holds it: events come in ``events`` (read them with
    ``next_event``), and the flow tells the engine how the call left."""

    call_key: str
    priority: int
    skills: frozenset[str]
    enqueued_at: float
    seq: int
    events: queue.Queue[AcdEvent] = field(default_factory=queue.Queue)
    ring: RingAttempt | None = None
    retry_at: float = 0.0
    agent: AgentOffer | None = None  # once answered
    answered_at: float | None = None
    result: QueueResult | None = None
    missed: list[str] = field(default_factory=list)

    def next_event(self, timeout: float = 0.0) -> AcdEvent | None:
        try:
            return self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return None

    @property
    def order(self) -> tuple[int, float, int]:
        return (-self.priority, self.enqueued_at, self.seq)


@dataclass(frozen=True)
class Repair:
    """A stuck state ``reconcile`` found and repaired."""

    kind: str  # "ring_overdue", "caller_gone", "bridged_call_gone"
    call_key: str
    agent_id: str | None
