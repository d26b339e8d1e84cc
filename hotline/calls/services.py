"""The platform behind the SIP edge: `CallServices` gives the call flows their hooks (ticket
at answer, live audio to the recognizer, the end of the report, the status line, callback
numbers) and finishes each call in a small pool, so nothing runs in a call's thread for long."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any

from accounts import privacy
from asr.live import DecodeSlots, LiveTranscriber, LiveTranscriptUnavailable
from asr.recognizer import AsrError, Recognizer
from core.clock import Clock
from core.db import after_commit, session_scope
from core.runtime import SessionFactory
from core.settings import Settings
from hotline.calls.intake import attach_transcript, open_ticket
from hotline.calls.partials import PartialWriter
from hotline.calls.records import end_values, get_call, recorded_at, upsert_call
from hotline.calls.setup import asr_config
from hotline.calls.status_line import lookup_status
from telephony.endpoint import (
    Call,
)
from telephony.flows import FlowHooks, StatusAnswer
from telephony.models import (
    TranscribedBy,
)
from telephony.recording import EndReason, recording_path
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import (
    Status,
)

log = logging.getLogger(__name__)


ABANDON_AFTER_S = 60.0


class CallServices:
    """The platform behind the SIP edge: `hooks()` for the call flows, `on_ended` for the
    edge's observer. One object serves every call."""

    def __init__(
        self,
        *,
        session_factory: SessionFactory,
        clock: Clock,
        settings: Settings,
        recognizer: Recognizer | None,
        enqueue_transcription: Callable[[str], Any] | None = None,
        finishers: int = 2,
        edge_id: str | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.edge_id = edge_id  # this `hotline sip` process (crash recovery finds its calls)
        self.clock = clock
        self.settings = settings
        self.recognizer = recognizer
        self._enqueue = enqueue_transcription or send_transcription_task
        self._live: dict[str, LiveTranscriber] = {}
        # Each answered call's ticket (opened at answer), so that the end of its report does
        # not go through the intake again to find it (at 100+ calls/s that was a quarter of
        # the database work per call).
        self._tickets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._writer = PartialWriter(session_factory, clock, settings.telephony.partial_interval_s)
        # Decoder processes take streams in turn by themselves; threads here need slots.
        self._slots = (
            None
            if getattr(recognizer, "decodes_elsewhere", False)
            else DecodeSlots(settings.asr.decode_slots or (os.cpu_count() or 1) + 1)
        )
        self._pool = ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="call-finish")
        # Waiting for a live transcript to drain is not work: a waiter per live stream, so
        # that no call's transcript queues behind another's (the writes stay in `_pool`).
        self._waiters = ThreadPoolExecutor(
            max_workers=max(1, asr_config(settings).max_live_streams),
            thread_name_prefix="call-transcript",
        )
        self._futures: set[Future] = set()

    def hooks(self) -> FlowHooks:
        return FlowHooks(
            on_answered=self.on_answered,
            on_audio=self.on_audio,
            on_finished=self.on_finished,
            lookup_status=self.lookup_status,
            on_callback_number=self.on_callback_number,
        )

    # -------------------------------------------------------------- the hooks
    def on_answered(self, call: Call, **record: Any) -> None:
        """A report starts: the call's ticket, its record (with ``record``'s columns too),
        and its live transcript."""
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings)
            # Where the report will be recorded and who answered, from the start: an edge
            # that dies mid-call leaves what crash recovery needs to close the call.
            owner: dict[str, Any] = {"edge_id": self.edge_id} if self.edge_id else {}
            if recorded_at(session, call.call_id) is None:
                owner["recording_path"] = str(next_recording(self.settings, call.call_id))
            upsert_call(session, call=call, now=now, ticket_id=ticket.id, **owner, **record)
            ticket_id = ticket.id
        if ticket_id is not None:
            with self._lock:
                self._tickets[call.call_id] = ticket_id
        # the caller's number stays out of the log in clear (it may be a confidential caller)
        caller = privacy.mask_phone(call.remote_number) or "anonymous"
        log.info("call %s from %s: ticket %s", call.call_id, caller, ticket.number)
        self.start_live(call)

    def track_ticket(self, call_id: str, ticket_id: int) -> None:
        """The ticket a call opened elsewhere (an operator's call: ``hotline.calls.operators``),
        so that the end of the call finds it as the robot's do."""
        with self._lock:
            self._tickets[call_id] = ticket_id

    def start_live(self, call: Call) -> None:
        """Transcribe the caller live, if a live stream is free (else from the recording)."""
        with self._lock:
            if call.call_id in self._live or self.recognizer is None:
                return
            stream = self.recognizer.try_open_stream()
            if stream is None:
                log.info(
                    "live ASR is full: call %s will be transcribed from its recording", call.call_id
                )
                return
            asr = asr_config(self.settings)
            self._live[call.call_id] = LiveTranscriber(
                stream,
                on_partial=partial(self._writer.offer, call.call_id),
                lag_s=asr.live_lag_s,
                backlog_limit_s=asr.live_backlog_limit_s,
                batch_s=asr.live_batch_s,
                slots=self._slots,
                name=f"asr-{call.call_id[:16]}",
            )

    def on_audio(self, call: Call, frame: bytes) -> None:
        transcriber = self._live.get(call.call_id)
        if transcriber is not None:
            try:
                transcriber.feed(frame)
            except AsrError:
                pass  # finished or given up: the recording is the source now

    def on_finished(self, call: Call, recording: Path | None, reason: EndReason) -> None:
        with self._lock:
            transcriber = self._live.pop(call.call_id, None)
        if transcriber is not None and recording is not None:
            self._submit(
                self._waiters, self._await_transcript, call, transcriber, recording, reason
            )
            return
        if transcriber is not None:  # the caller left before the report began
            transcriber.cancel()
        self._submit(
            self._pool, self._write_end, call, None if recording else "", recording, reason
        )

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            future = pool.submit(fn, *args)
            self._futures.add(future)
        future.add_done_callback(self._done)

    def on_ended(self, call: Call) -> None:
        """The edge's CallObserver: every call, answered or not, gets its record."""
        with self._lock:
            live = call.call_id in self._live
        if live:
            # A caller who hangs up mid-report is usually seen here before the flow's thread
            # reaches on_finished, which still wants the live transcript; only a flow that
            # never finishes would leave it, and that one is let go after a while.
            timer = threading.Timer(ABANDON_AFTER_S, self._abandon, args=(call.call_id,))
            timer.daemon = True
            timer.start()
        try:
            with session_scope(self.session_factory) as session:
                upsert_call(session, call=call, now=self.clock.now(), **end_values(call))
        except Exception:
            log.exception("recording the end of call %s failed", call.call_id)

    def _abandon(self, call_id: str) -> None:
        with self._lock:
            transcriber = self._live.pop(call_id, None)
            self._tickets.pop(call_id, None)
        if transcriber is not None:
            log.warning("call %s ended without finishing its report; live ASR released", call_id)
            transcriber.cancel()

    def lookup_status(self, number: str) -> StatusAnswer | None:
        with session_scope(self.session_factory) as session:
            return lookup_status(session, number=number)

    def on_callback_number(self, call: Call, number: str) -> None:
        """The caller keyed a number to be called back on (menu 3): a ticket for the
        operators' queue — no report was recorded, so there is nothing to dispatch by."""
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            ticket = open_ticket(
                session,
                call=call,
                now=now,
                settings=self.settings,
                description=f"来电要求回拨，回拨号码：{number}",
            )
            upsert_call(session, call=call, now=now, ticket_id=ticket.id)
            if ticket.status == Status.intake:
                tickets.add_note(
                    session,
                    ticket=ticket,
                    actor="system",
                    now=now,
                    kind="callback_number",
                    data={"number": number},
                )
                tickets.record(
                    session,
                    ticket=ticket,
                    action=Action.queue,
                    actor="system",
                    now=now,
                    reason="来电要求回拨：请人工回电受理",
                )

    # -------------------------------------------------------------- the end of a report
    def _await_transcript(
        self, call: Call, transcriber: LiveTranscriber, recording: Path, reason: EndReason
    ) -> None:
        text = None
        try:
            text = transcriber.finish(self.settings.telephony.live_finish_timeout_s).text
        except LiveTranscriptUnavailable as exc:
            log.warning(
                "live transcript of call %s unavailable (%s): transcribing the recording",
                call.call_id,
                exc,
            )
        self._submit(self._pool, self._write_end, call, text, recording, reason)

    def _write_end(
        self, call: Call, text: str | None, recording: Path | None, reason: EndReason
    ) -> None:
        """`text`: the live transcript; None to transcribe the recording offline; "" when
        there was no report to transcribe."""
        by = TranscribedBy.none if recording is None else TranscribedBy.live
        self._writer.forget(call.call_id)
        with self._lock:
            ticket_id = self._tickets.pop(call.call_id, None)
        now = self.clock.now()
        with session_scope(self.session_factory) as session:
            if ticket_id is None:  # its opening at answer failed: the intake again
                ticket_id = open_ticket(session, call=call, now=now, settings=self.settings).id
            upsert_call(
                session,
                call=call,
                now=now,
                ticket_id=ticket_id,
                end_reason=reason.value,
                recording_path=str(recording) if recording is not None else None,
            )
            if text is None and get_call(session, call.call_id).transcript is None:
                after_commit(session, partial(self._enqueue, call.call_id))
            else:
                attach_transcript(
                    session,
                    call_id=call.call_id,
                    text=text or "",
                    transcribed_by=by,
                    now=now,
                    settings=self.settings,
                )

    def _done(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)
        if future.exception() is not None:
            log.error("finishing a call failed", exc_info=future.exception())

    def drain(self, timeout: float | None = 60.0) -> None:
        """Wait for the calls being finished (shutdown, tests); re-raises their failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: list[Future] = []
        while True:  # a live transcript's wait hands its write on as a new future
            with self._lock:
                futures = [f for f in self._futures if f not in seen]
            if not futures:
                break
            seen += futures
            wait(futures, None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                break
        for future in seen:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def close(self) -> None:
        self.drain()
        self._waiters.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self._writer.stop()
        with self._lock:
            live, self._live = list(self._live.values()), {}
        for transcriber in live:
            transcriber.cancel()


def next_recording(settings: Settings, call_id: str) -> Path:
    """The file the report of this call will be recorded to: the first free one of the names
    `WavRecorder` tries (it never overwrites; a Call-ID may be reused)."""
    path = recording_path(settings.recording_dir, call_id)
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    return path


def send_transcription_task(call_id: str) -> None:
    from hotline.worker import app

    app.send_task("calls.transcribe_recording", args=[call_id])
