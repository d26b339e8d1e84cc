"""The edge's side of the console's call controls (``hotline.calls.call_control``).

``CallControl`` makes every bridge of a ``hotline sip`` process (``bridge_factory``, the queue
flow's hook) with a way to dial — a seat's extension rings where its phone is registered, an
outside number goes out through ``settings.acd.outside_uri`` or the callback line — so that
transfers and three-way calls work both from the console and from the operator's own phone
(REFER). It keeps the bridges of its calls by Call-ID, and one thread takes the commands for
them: woken by the doorbell the moment a console writes one, and looking anyway every
``poll_s`` (a doorbell can be missed: a Redis reconnect). Each command is claimed by
compare-and-set, carried out, and its result written; what the call's controls then stand
at is written to the call record for the consoles.

Operators: when a transfer hands the caller over, the operator who left goes to wrap-up at
once (the next call may come to them while the caller talks to the department); a seat
rung for a transfer that belongs to a ready operator is reserved first, so the queue does
not ring the same phone meanwhile, and is on this call once it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, AgentStatus
from core.bell import Bell, Unsubscribe
from core.clock import Clock
from core.db import session_scope
from core.runtime import SessionFactory
from hotline.calls import call_control as cc
from telephony import sip_message as sm
from telephony.bridge import Bridge
from telephony.endpoint import Call
from telephony.models import CallCommand, CallCommandKind, CallCommandState, Seat
from telephony.transfer import Transfer, TransferKind, TransferOutcome, TransferRefused

log = logging.getLogger(__name__)

Dial = Callable[..., Call]


@dataclass
class _Held:
    """One bridged call of this edge, and what its controls did."""

    bridge: Bridge
    agent_id: int | None  # the operator on it now (accounts' user id), if known
    transfer: Transfer | None = None
    transfer_target: str = ""
    transfer_agent: int | None = None  # the operator reserved for the transfer's seat
    three_way: str | None = None
    last: dict[str, Any] | None = None
    extra_agents: set[int] = field(default_factory=set)  # operators who joined it


class CallControl:
    def __init__(
        self,
        session_factory: SessionFactory,
        clock: Clock,
        *,
        dial: Dial,
        seat_target: Callable[[str], str | None],
        outside_uri: str | None,
        wrap_up_s: float,
        ring_timeout_s: float = 20.0,
        bell: Bell | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.session_factory = session_factory
        self.clock = clock
        self.dial = dial
        self.seat_target = seat_target
        self.outside_uri = outside_uri
        self.wrap_up_s = wrap_up_s
        self.ring_timeout_s = ring_timeout_s
        self.bell = bell
        self.poll_s = poll_s
        self._held: dict[str, _Held] = {}
        self._answered_by: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Unsubscribe | None = None

    # ------------------------------------------------------------------ bridges
    def bridge_factory(self, caller: Call, agent: Call, **options: Any) -> Bridge:
        """``QueueHooks.bridge_factory``: a bridge that can dial, kept by its Call-ID."""
        bridge = Bridge(
            caller,
            agent,
            dial=self.dial,
            refer_target=self.refer_target,
            refer_ring_timeout=self.ring_timeout_s,
            on_transfer=self._on_transfer,
            **options,
        )
        with self._lock:
            agent_id = self._answered_by.pop(caller.call_id, None)
            self._held[caller.call_id] = _Held(bridge=bridge, agent_id=agent_id)
        return bridge

    def attach_agent(self, call_id: str, agent_id: int | None) -> None:
        """The operator who answered: the queue's ``on_bridged`` knows them, just before
        the bridge is made."""
        with self._lock:
            held = self._held.get(call_id)
            if held is not None:
                held.agent_id = agent_id
            elif agent_id is not None:
                self._answered_by[call_id] = agent_id

    def live_call_ids(self) -> list[str]:
        with self._lock:
            return [k for k, h in self._held.items() if not h.bridge.ended.is_set()]

    def resolve(self, target: str) -> str | None:
        """Where to dial ``target``: a seat's registered phone, or an outside number through
        the outside line; None when it cannot be reached."""
        with session_scope(self.session_factory) as session:
            seat = session.scalar(
                select(Seat).where(col(Seat.extension) == target, col(Seat.enabled).is_(True))
            )
        if seat is not None:
            return self.seat_target(target)
        if self.outside_uri and cc.OUTSIDE.match(target):
            return self.outside_uri.format(number=target)
        return None

    def refer_target(self, uri: str) -> str | None:
        """A REFER from the operator's phone names a seat or a number in its user part."""
        user = sm.uri_user(uri)
        return self.resolve(user) if user else None

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        if self.bell is not None:
            try:
                self._unsubscribe = self.bell.subscribe(cc.COMMAND_TOPIC, self._rung)
            except Exception:  # the doorbell away: the periodic look still finds commands
                log.exception("call control: no doorbell, looking every %.1f s", self.poll_s)
        self._thread = threading.Thread(target=self._run, name="call-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _rung(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.run_pending()
            except Exception:
                log.exception("call control: a look at the commands failed")

    def run_pending(self) -> int:
        """Carry out the commands waiting for this edge's calls; returns how many ran."""
        self._forget_ended()
        now = self.clock.now()
        keys = self.live_call_ids()
        with session_scope(self.session_factory) as session:
            cc.expire_untaken(session, now)
            commands = (
                list(
                    session.scalars(
                        select(CallCommand)
                        .where(
                            col(CallCommand.state) == CallCommandState.pending,
                            col(CallCommand.call_id).in_(keys),
                        )
                        .order_by(col(CallCommand.id))
                    )
                )
                if keys
                else []
            )
        ran = 0
        for command in commands:
            with session_scope(self.session_factory) as session:
                if not cc.claim(session, int(command.id or 0)):
                    continue
            ran += 1
            try:
                state, detail = self._carry_out(command)
            except Exception:
                log.exception("call control: command %s failed", command.id)
                state, detail = CallCommandState.failed, "error"
            self._finish(command, state, detail)
        return ran

    # ------------------------------------------------------------------ commands
    def _carry_out(self, command: CallCommand) -> tuple[CallCommandState, str]:
        with self._lock:
            held = self._held.get(command.call_id)
        if held is None or held.bridge.ended.is_set():
            return CallCommandState.failed, "ended"
        bridge, kind = held.bridge, command.kind
        done, failed = CallCommandState.done, CallCommandState.failed
        if kind is CallCommandKind.hold:
            bridge.hold()
            return done, "held"
        if kind is CallCommandKind.unhold:
            if held.transfer is not None and not held.transfer.done.is_set():
                return failed, "in_transfer"
            bridge.unhold()
            return done, "resumed"
        if kind in (CallCommandKind.transfer, CallCommandKind.consult):
            return self._transfer(held, command)
        if kind is CallCommandKind.complete:
            return (
                (done, "handed_over") if bridge.complete_transfer() else (failed, "no_consultation")
            )
        if kind is CallCommandKind.three_way:
            target = held.transfer_target
            if not bridge.merge():
                return failed, "no_consultation"
            held.three_way = target
            return done, "three_way"
        if kind is CallCommandKind.cancel:
            return (done, "cancelled") if bridge.cancel_transfer() else (failed, "no_transfer")
        if kind is CallCommandKind.monitor:
            return self._monitor(held, command)
        return failed, "error"

    def _transfer(self, held: _Held, command: CallCommand) -> tuple[CallCommandState, str]:
        uri = self.resolve(command.target)
        if uri is None:
            return CallCommandState.failed, "unreachable"
        reserved = self._reserve_target(command.target, command.call_id)
        try:
            start = (
                held.bridge.transfer
                if command.kind is CallCommandKind.transfer
                else held.bridge.consult
            )
            transfer = start(uri, ring_timeout=self.ring_timeout_s)
        except TransferRefused as exc:
            self._release_target(reserved, command.call_id)
            log.info("transfer of %s refused: %s", command.call_id, exc)
            return CallCommandState.failed, "refused"
        held.transfer, held.transfer_target, held.transfer_agent = (
            transfer,
            command.target,
            reserved,
        )
        threading.Thread(
            target=self._follow,
            args=(command.call_id, held, transfer),
            name="call-control-transfer",
            daemon=True,
        ).start()
        return CallCommandState.done, "ringing"

    def _monitor(self, held: _Held, command: CallCommand) -> tuple[CallCommandState, str]:
        uri = self.resolve(command.target)
        if uri is None:
            return CallCommandState.failed, "unreachable"
        try:
            leg = self.dial(uri, ring_timeout=self.ring_timeout_s)
        except Exception as exc:
            log.info(
                "listening in on %s: %s did not answer (%s)", command.call_id, command.target, exc
            )
            return CallCommandState.failed, "no_answer"
        held.bridge.monitor(leg, name=command.target)
        return CallCommandState.done, "listening"

    def _follow(self, call_id: str, held: _Held, transfer: Transfer) -> None:
        """Write each step of a transfer as it happens (ringing, consulting, its outcome)."""
        seen = None
        deadline = time.monotonic() + self.ring_timeout_s + 4 * 3600  # a consultation's end
        while time.monotonic() < deadline and not held.bridge.ended.is_set():
            step = (transfer.state, transfer.outcome)
            if step != seen:
                seen = step
                if transfer.leg is not None and held.transfer_agent is not None:
                    self._answered_target(held, call_id)
                self._write(call_id)
            if transfer.done.wait(0.1):
                break
        if transfer.leg is not None and held.transfer_agent is not None:
            self._answered_target(held, call_id)  # answered as it ended: on it, then on
        if (
            transfer.outcome is not TransferOutcome.COMPLETED
            and transfer.outcome is not TransferOutcome.MERGED
        ):
            self._release_target(held.transfer_agent, call_id)
        elif held.transfer_agent is not None:
            held.extra_agents.add(held.transfer_agent)
        held.transfer_agent = None
        self._write(call_id)

    # ------------------------------------------------------------------ operators
    def _on_transfer(self, caller: Call, old: Call, new: Call, kind: TransferKind) -> None:
        """The caller went on to ``new``: the operator who left goes to wrap-up now."""
        with self._lock:
            held = self._held.get(caller.call_id)
        if held is None:
            return
        leaving = held.agent_id
        held.agent_id = held.transfer_agent
        if leaving is not None:
            self._agent_call_ended(leaving, caller.call_id)

    def _reserve_target(self, extension: str, call_id: str) -> int | None:
        """The operator signed in at ``extension``, if ready, reserved for this call."""
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            user_id = session.scalar(
                select(col(AgentStatus.user_id)).where(
                    col(AgentStatus.extension) == extension,
                    col(AgentStatus.state) == AgentState.ready,
                )
            )
            if user_id is None:
                return None
            moved = agents.ring_for(session, user_id, call_id, now, bell=self.bell)
        return user_id if moved is not None else None

    def _answered_target(self, held: _Held, call_id: str) -> None:
        with session_scope(self.session_factory) as session:
            agents.answered(
                session, int(held.transfer_agent or 0), call_id, self.clock.now(), bell=self.bell
            )

    def _release_target(self, user_id: int | None, call_id: str) -> None:
        if user_id is None:
            return
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            if agents.release(session, user_id, call_id, now, bell=self.bell) is None:
                agents.call_ended(
                    session, user_id, call_id, now, wrap_up_s=self.wrap_up_s, bell=self.bell
                )

    def _agent_call_ended(self, user_id: int, call_id: str) -> None:
        with session_scope(self.session_factory) as session:
            agents.call_ended(
                session,
                user_id,
                call_id,
                self.clock.now(),
                wrap_up_s=self.wrap_up_s,
                bell=self.bell,
            )

    def _forget_ended(self) -> None:
        """Bridges that ended: the operators who joined them by a transfer end their call
        (the queue ends the first operator's), then the call is forgotten."""
        with self._lock:
            ended = [(k, h) for k, h in self._held.items() if h.bridge.ended.is_set()]
            for key, _ in ended:
                del self._held[key]
        for key, held in ended:
            for user_id in {*held.extra_agents, held.agent_id} - {None}:
                self._agent_call_ended(int(user_id or 0), key)
            self._release_target(held.transfer_agent, key)

    # ------------------------------------------------------------------ results
    def controls(self, call_id: str) -> cc.Controls:
        with self._lock:
            held = self._held.get(call_id)
        if held is None:
            return cc.Controls()
        bridge, transfer = held.bridge, held.transfer
        now_transfer = None
        if transfer is not None:
            now_transfer = {
                "kind": transfer.kind.value,
                "target": held.transfer_target,
                "state": transfer.state.value,
                "outcome": transfer.outcome.value if transfer.outcome else None,
                "why": transfer.disposition.value if transfer.disposition else None,
            }
        return cc.Controls(
            held=bridge.held,
            transfer=now_transfer,
            three_way=held.three_way if bridge.three_way else None,
            monitors=len(bridge.result.monitored_by),
            last=held.last,
        )

    def _write(self, call_id: str) -> None:
        try:
            with session_scope(self.session_factory) as session:
                cc.write_controls(session, call_id, self.controls(call_id), self.clock.now())
        except Exception:
            log.exception("call control: writing the controls of %s failed", call_id)

    def _finish(self, command: CallCommand, state: CallCommandState, detail: str) -> None:
        with self._lock:
            held = self._held.get(command.call_id)
            if held is not None:
                held.last = {"kind": command.kind.value, "state": state.value, "detail": detail}
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            cc.finish(session, int(command.id or 0), state, detail, now)
        log.info(
            "call %s: %s %s by user %s -> %s (%s)",
            command.call_id,
            command.kind.value,
            command.target,
            command.requested_by,
            state.value,
            detail,
        )
        self._write(command.call_id)
