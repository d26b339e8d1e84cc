"""Calls that reach a person: the platform behind the queue flow (``telephony.queue_flow``).

``OperatorCalls`` gives ``serve_queue`` its ``QueueHooks`` and the queue engine its
``on_result``:

- where a call waits (``placement``): urgent lines first, then callers with a ticket still
  open (they are chasing something already promised), then everyone else in order
  (``telephony.acd.call_priority``); the call record notes when it joined and its priority;
- a call an operator takes (``on_bridged``): its ticket is opened as a draft in intake for
  that operator — the console pre-fills it from the caller's words, live — and the record
  notes the operator, the seat and the answer. The ticket is the operator's to decide
  (answered on the spot, dispatched with or without the suggestion, or saved for the
  dispatchers): ``attach_transcript`` never dispatches a call an operator took;
- both sides of the bridge are transcribed live (``CallServices.start_live`` for the
  caller — it has priority for a stream, it fills the ticket — and
  ``start_operator_live``); at the end the caller's transcript is attached to the draft as
  before and both sides' turns are the record's ``dialogue`` (live, or from the stereo
  recording's two channels by the transcription task);
- how each call left the queue (``on_result``, told by the engine under its lock, so it is
  handed to a writer thread): answered (with the agents rung), overflowed (and why), a
  callback asked for, or abandoned — each written once, never over an earlier outcome.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy import select, update
from sqlmodel import col

from core.db import session_scope, table_of
from core.settings import Settings
from hotline.calls.control_runner import CallControl
from hotline.calls.intake import open_ticket
from hotline.calls.records import upsert_call
from hotline.calls.services import CallServices
from telephony import sip_message as sm
from telephony.acd import Acd, AgentOffer, AgentPool, Outcome, QueueResult, call_priority
from telephony.bridge import BridgeResult
from telephony.endpoint import Call, CallHandler
from telephony.flows import FlowSettings, Prompts, serve_inbound
from telephony.models import CallRecord, QueueOutcome
from telephony.queue_flow import QueueHooks, QueueSettings, serve_queue
from telephony.recording import EndReason, Side, recording_path
from tickets.lifecycle import OPEN
from tickets.models import Ticket

log = logging.getLogger(__name__)

_OUTCOMES = {
    Outcome.OVERFLOW: QueueOutcome.overflowed,
    Outcome.CALLBACK: QueueOutcome.callback_requested,
    Outcome.ABANDONED: QueueOutcome.abandoned,
}


class OperatorCalls:
    """One object serves every queued call of a ``hotline sip`` process."""

    def __init__(self, services: CallServices, *, settings: Settings, writers: int = 1) -> None:
        self.services = services
        self.settings = settings
        self.session_factory = services.session_factory
        self.clock = services.clock
        self._writer = ThreadPoolExecutor(writers, thread_name_prefix="queue-records")

    def queue_hooks(self) -> QueueHooks:
        return QueueHooks(
            placement=self.placement,
            on_bridged=self.on_bridged,
            on_audio=self.on_audio,
            on_bridge_ended=self.on_bridge_ended,
        )

    # ----------------------------------------------------------- the call's own thread
    def placement(self, call: Call) -> tuple[int, frozenset[str]]:
        acd, now = self.settings.acd, self.clock.now()
        with session_scope(self.session_factory) as session:
            repeat = bool(
                acd.repeat_caller_priority
                and call.remote_number
                and session.scalar(
                    select(col(Ticket.id))
                    .where(
                        col(Ticket.caller_phone) == call.remote_number,
                        col(Ticket.status).in_(OPEN),
                    )
                    .limit(1)
                )
            )
            priority = call_priority(
                dialled=sm.uri_user(call.local_uri),
                repeat_caller=repeat,
                urgent_lines=acd.urgent_lines,
                repeat_caller_priority=acd.repeat_caller_priority,
            )
            upsert_call(
                session,
                call=call,
                now=now,
                queued_at=now,
                priority=priority,
                skills="",
                **self._owner(),
            )
        return priority, frozenset()

    def on_bridged(self, call: Call, leg: Call, offer: AgentOffer) -> None:
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings)
            upsert_call(
                session,
                call=call,
                now=now,
                ticket_id=ticket.id,
                queue_left_at=now,
                queue_outcome=QueueOutcome.agent,
                agent_user_id=_user_id(offer.agent_id),
                agent_extension=offer.extension,
                agent_answered_at=now,
                recording_path=str(self._bridge_recording(call)),
                dialogue=[],  # a two-speaker call from the start (the console shows turns)
                **self._owner(),
            )
            ticket_id, number = ticket.id, ticket.number
        if ticket_id is not None:
            self.services.track_ticket(call.call_id, ticket_id)
        log.info(
            "call %s answered by operator %s at seat %s: ticket %s",
            call.call_id,
            offer.agent_id,
            offer.extension,
            number,
        )
        self.services.start_live(call, dialogue=True)
        self.services.start_operator_live(call)

    def on_audio(self, call: Call, side: Side, pcm: bytes) -> None:
        if side is Side.CALLER:  # the ticket is made of the caller's words
            self.services.on_audio(call, pcm)
        else:  # the operator's, for the dialogue
            self.services.on_operator_audio(call, pcm)

    def on_bridge_ended(self, call: Call, result: BridgeResult) -> None:
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            upsert_call(
                session,
                call=call,
                now=now,
                hold_s=round(result.hold_s, 3),
                transfers=len(result.transfers),
            )
        # As the end of a robot's report: the live transcript (or the recording's caller
        # channel) onto the draft, which an operator's call never dispatches by itself; the
        # two sides' turns onto the record (live, or from both channels offline).
        self.services.on_finished(call, result.recording, EndReason.HANGUP)

    # ----------------------------------------------------------- the engine's report
    def on_result(self, result: QueueResult) -> None:
        """``Acd(on_result=…)``: told under the engine's lock, written on another thread."""
        self._writer.submit(self._write_result, result, self.clock.now())

    def _write_result(self, result: QueueResult, at: datetime) -> None:
        table = table_of(CallRecord)
        rings = len(result.missed_agents) + (1 if result.outcome is Outcome.ANSWERED else 0)
        try:
            with session_scope(self.session_factory) as session:
                if result.outcome is Outcome.ANSWERED:
                    session.execute(
                        update(table)
                        .where(table.c.call_id == result.call_key)
                        .values(rings=rings, updated_at=at)
                    )
                    return
                # Never over an earlier outcome (an answer written by the call's thread).
                session.execute(
                    update(table)
                    .where(table.c.call_id == result.call_key, table.c.queue_left_at.is_(None))
                    .values(
                        queue_left_at=at,
                        queue_outcome=_OUTCOMES[result.outcome],
                        overflow_reason=result.overflow.value if result.overflow else None,
                        rings=rings,
                        updated_at=at,
                    )
                )
        except Exception:
            log.exception("recording how call %s left the queue failed", result.call_key)

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    # -----------------------------------------------------------------------------
    def _owner(self) -> dict[str, str]:
        edge = self.services.edge_id
        return {"edge_id": edge} if edge else {}

    def _bridge_recording(self, call: Call) -> Path:
        """Where ``telephony.bridge.Bridge`` records this call (one stereo file)."""
        return recording_path(self.settings.recording_dir, call.call_id, "-bridge")


def _user_id(agent_id: str) -> int | None:
    """The queue's agent id as the operator's user id (``hotline.calls.agent_pool``)."""
    return int(agent_id) if agent_id.isdigit() else None


def call_handler(
    *,
    services: CallServices,
    operators: OperatorCalls,
    acd: Acd,
    pool: AgentPool,
    prompts: Prompts,
    flow: FlowSettings,
    queue_settings: QueueSettings,
    control: CallControl | None = None,
) -> CallHandler:
    """The edge's handler when the centre has seats: with any operator signed in the call
    waits for one (``serve_queue``); with nobody signed in (nights) it goes straight to the
    voice-intake robot as before seats — greeting, then the caller's report — and its
    record says so (``queue_outcome`` robot, ``overflow_reason`` no_agents)."""
    robot_hooks = dataclasses.replace(
        services.hooks(),
        on_answered=partial(
            services.on_answered,
            queue_outcome=QueueOutcome.robot,
            overflow_reason="no_agents",
        ),
    )
    queue_hooks = operators.queue_hooks()
    if control is not None:  # bridges that can dial: transfers, three-way, listening in
        answered = queue_hooks.on_bridged

        def on_bridged(call: Call, leg: Call, offer: AgentOffer) -> None:
            control.attach_agent(call.call_id, _user_id(offer.agent_id))
            answered(call, leg, offer)

        queue_hooks = dataclasses.replace(
            queue_hooks, on_bridged=on_bridged, bridge_factory=control.bridge_factory
        )

    def handle(call: Call) -> None:
        try:
            staffed = pool.signed_in(frozenset()) > 0
        except Exception:  # the database away: the robot takes the call, nothing is lost
            log.exception("cannot tell whether operators are signed in: the robot answers")
            staffed = False
        if not staffed:
            serve_inbound(call, prompts=prompts, hooks=robot_hooks, settings=flow)
            return
        serve_queue(
            call,
            acd=acd,
            prompts=prompts,
            hooks=services.hooks(),
            settings=flow,
            queue_hooks=queue_hooks,
            queue_settings=queue_settings,
        )

    return handle
