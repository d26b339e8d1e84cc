"""The platform behind the SIP edge: `CallServices` gives the call flows their hooks (ticket
at answer, live audio to the recognizer, the end of the report, the status line, callback
numbers) and finishes each call in a small pool, so nothing runs in a call's thread for long;
the call records at answer and at the end go through one writer, many calls a transaction
(``record_writer``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any

from sqlmodel import Session

from accounts import privacy
from asr.dialogue import TimedStream
from asr.live import DecodeSlots, LiveTranscriber, LiveTranscriptUnavailable
from asr.recognizer import AsrError, Recognizer, Stream, Transcript
from core.clock import Clock
from core.db import after_commit, session_scope
from core.runtime import SessionFactory
from core.settings import Settings
from dispatch import segment
from hotline.calls.dialogue import CALLER, OPERATOR, CallDialogue, final_dialogue
from hotline.calls.intake import attach_transcript, open_ticket
from hotline.calls.partials import PartialWriter
from hotline.calls.record_writer import CallRecordWriter
from hotline.calls.records import end_values, get_call, recorded_at, set_dialogue, upsert_call
from hotline.calls.setup import asr_config, decode_slots
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
# How long a call's flow waits for its record at answer (the writer's batch to commit);
# beyond it the hook fails (logged), the call goes on and its end opens the ticket again.
ANSWER_WRITE_TIMEOUT_S = 30.0
# How long a caller's new live stream waits for the stream an operator's side gives up.
YIELD_WAIT_S = 1.0

# A bridged call's final transcripts, the caller's and the operator's (None: not live).
Sides = tuple[Transcript | None, Transcript | None]


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
        # A bridged call's operator side, live when a stream was free after the caller's,
        # and its running dialogue.
        self._operator_live: dict[str, LiveTranscriber] = {}
        self._dialogues: dict[str, CallDialogue] = {}
        # Each answered call's ticket (opened at answer), so that the end of its report does
        # not go through the intake again to find it (at 100+ calls/s that was a quarter of
        # the database work per call).
        self._tickets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._writer = PartialWriter(session_factory, clock, settings.telephony.partial_interval_s)
        # Every call's record at answer and at its end, many calls a transaction.
        self._records = CallRecordWriter(session_factory)
        # Decoder processes take streams in turn by themselves; threads here need slots.
        self._slots = (
            None
            if getattr(recognizer, "decodes_elsewhere", False)
            else DecodeSlots(decode_slots(settings.asr.decode_slots))
        )
        self._pool = ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="call-finish")
        # Waiting for a live transcript to drain is not work: a waiter per live stream, so
        # that no call's transcript queues behind another's (the writes stay in `_pool`).
        self._waiters = ThreadPoolExecutor(
            max_workers=max(1, asr_config(settings).max_live_streams),
            thread_name_prefix="call-transcript",
        )
        self._futures: set[Future] = set()
        warm_dispatch()
        if enqueue_transcription is None:
            warm_transcription_queue()

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

        def write(session: Session) -> tuple[int | None, str]:
            ticket = open_ticket(session, call=call, now=now, settings=self.settings)
            # Where the report will be recorded and who answered, from the start: an edge
            # that dies mid-call leaves what crash recovery needs to close the call.
            owner: dict[str, Any] = {"edge_id": self.edge_id} if self.edge_id else {}
            if recorded_at(session, call.call_id) is None:
                owner["recording_path"] = str(next_recording(self.settings, call.call_id))
            upsert_call(session, call=call, now=now, ticket_id=ticket.id, **owner, **record)
            return ticket.id, ticket.number

        # Written with the other calls' records of the moment, durable before the greeting.
        ticket_id, number = self._records.submit(write).result(ANSWER_WRITE_TIMEOUT_S)
        if ticket_id is not None:
            with self._lock:
                self._tickets[call.call_id] = ticket_id
        # the caller's number stays out of the log in clear (it may be a confidential caller)
        caller = privacy.mask_phone(call.remote_number) or "anonymous"
        log.info("call %s from %s: ticket %s", call.call_id, caller, number)
        self.start_live(call)

    def track_ticket(self, call_id: str, ticket_id: int) -> None:
        """The ticket a call opened elsewhere (an operator's call: ``hotline.calls.operators``),
        so that the end of the call finds it as the robot's do."""
        with self._lock:
            self._tickets[call_id] = ticket_id

    def start_live(self, call: Call, *, dialogue: bool = False) -> None:
        """Transcribe the caller live, if a live stream is free (else from the recording).
        ``dialogue``: a bridged call, whose running turns are kept with the operator's."""
        if self.recognizer is None:
            return
        with self._lock:
            if call.call_id in self._live:
                return
            talk = None
            if dialogue:
                talk = self._dialogues.setdefault(
                    call.call_id, CallDialogue(call.call_id, self._writer.offer)
                )
        stream = self._open_for_caller(call.call_id)
        if stream is None:
            log.info(
                "live ASR is full: call %s will be transcribed from its recording", call.call_id
            )
            return
        if talk is not None:
            timed = TimedStream(stream)
            transcriber = self._transcriber(timed, talk.timed(CALLER, timed), call.call_id)
        else:
            transcriber = self._transcriber(
                stream, partial(self._writer.offer, call.call_id), call.call_id
            )
        with self._lock:
            if call.call_id in self._live:  # started twice at once: one is enough
                transcriber.cancel()
                return
            self._live[call.call_id] = transcriber

    def start_operator_live(self, call: Call) -> None:
        """The operator's side of a bridged call, live, if a stream is free once the
        caller's has one (the caller's side comes first: it fills the ticket); else the
        operator's words come from the recording's right channel after the call."""
        with self._lock:
            talk = self._dialogues.get(call.call_id)
            if (
                self.recognizer is None
                or talk is None
                or call.call_id not in self._live
                or call.call_id in self._operator_live
            ):
                return
            stream = self.recognizer.try_open_stream()
            if stream is None:
                log.info("live ASR is full: the operator's side of call %s waits", call.call_id)
                return
            timed = TimedStream(stream)
            self._operator_live[call.call_id] = self._transcriber(
                timed, talk.timed(OPERATOR, timed), call.call_id, "asr-op-"
            )

    def _transcriber(
        self,
        stream: Stream,
        on_partial: Callable[[str], object],
        call_id: str,
        prefix: str = "asr-",
    ) -> LiveTranscriber:
        asr = asr_config(self.settings)
        return LiveTranscriber(
            stream,
            on_partial=on_partial,
            lag_s=asr.live_lag_s,
            backlog_limit_s=asr.live_backlog_limit_s,
            batch_s=asr.live_batch_s,
            slots=self._slots,
            name=f"{prefix}{call_id[:16]}",
        )

    def _open_for_caller(self, call_id: str) -> Stream | None:
        """A live stream for a caller; when none is free, an operator's side gives its
        stream up (its words will come from the recording) and the caller takes it."""
        assert self.recognizer is not None
        stream = self.recognizer.try_open_stream()
        if stream is not None:
            return stream
        with self._lock:
            victim = next(iter(self._operator_live), None)  # the oldest
            transcriber = self._operator_live.pop(victim) if victim is not None else None
        if transcriber is None:
            return None
        log.info("call %s takes the live stream of call %s's operator side", call_id, victim)
        transcriber.cancel()
        # The stream is released once its decoder thread sees the cancel: moments.
        deadline = time.monotonic() + YIELD_WAIT_S
        while time.monotonic() < deadline:
            stream = self.recognizer.try_open_stream()
            if stream is not None:
                return stream
            time.sleep(0.01)
        return None

    def on_audio(self, call: Call, frame: bytes) -> None:
        self._feed(self._live.get(call.call_id), frame)

    def on_operator_audio(self, call: Call, frame: bytes) -> None:
        self._feed(self._operator_live.get(call.call_id), frame)

    @staticmethod
    def _feed(transcriber: LiveTranscriber | None, frame: bytes) -> None:
        if transcriber is not None:
            try:
                transcriber.feed(frame)
            except AsrError:
                pass  # finished or given up: the recording is the source now

    def on_finished(self, call: Call, recording: Path | None, reason: EndReason) -> None:
        with self._lock:
            transcriber = self._live.pop(call.call_id, None)
            operator = self._operator_live.pop(call.call_id, None)
            bridged = self._dialogues.pop(call.call_id, None) is not None
        if transcriber is not None and recording is not None:
            self._submit(
                self._waiters,
                self._await_transcript,
                call,
                transcriber,
                recording,
                reason,
                operator,
                bridged,
            )
            return
        for unused in (transcriber, operator):  # the caller left before the report began
            if unused is not None:
                unused.cancel()
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
        # Written with the other calls' writes of the moment (``CallRecordWriter``); ``drain``
        # waits for it.
        now, values = self.clock.now(), end_values(call)
        written: Future[None] = Future()  # done either way: a failure is logged, not raised
        with self._lock:
            self._futures.add(written)
        written.add_done_callback(self._done)
        self._records.submit(
            lambda session: upsert_call(session, call=call, now=now, **values)
        ).add_done_callback(partial(self._ended_written, call.call_id, written))

    @staticmethod
    def _ended_written(call_id: str, written: Future[None], future: Future[None]) -> None:
        if future.exception() is not None:
            log.error("recording the end of call %s failed", call_id, exc_info=future.exception())
        written.set_result(None)

    def _abandon(self, call_id: str) -> None:
        with self._lock:
            transcriber = self._live.pop(call_id, None)
            operator = self._operator_live.pop(call_id, None)
            self._dialogues.pop(call_id, None)
            self._tickets.pop(call_id, None)
        if transcriber is not None:
            log.warning("call %s ended without finishing its report; live ASR released", call_id)
            transcriber.cancel()
        if operator is not None:
            operator.cancel()

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
        self,
        call: Call,
        transcriber: LiveTranscriber,
        recording: Path,
        reason: EndReason,
        operator: LiveTranscriber | None = None,
        bridged: bool = False,
    ) -> None:
        timeout = self.settings.telephony.live_finish_timeout_s
        caller = self._final(call, transcriber, timeout, "")
        spoken = self._final(call, operator, timeout, "operator's ") if operator else None
        text = caller.text if caller is not None else None
        sides = (caller, spoken) if bridged else None
        self._submit(self._pool, self._write_end, call, text, recording, reason, sides)

    @staticmethod
    def _final(
        call: Call, transcriber: LiveTranscriber, timeout: float, whose: str
    ) -> Transcript | None:
        try:
            return transcriber.finish(timeout)
        except LiveTranscriptUnavailable as exc:
            log.warning(
                "live %stranscript of call %s unavailable (%s): transcribing the recording",
                whose,
                call.call_id,
                exc,
            )
            return None

    def _write_end(
        self,
        call: Call,
        text: str | None,
        recording: Path | None,
        reason: EndReason,
        sides: Sides | None = None,
    ) -> None:
        """`text`: the live transcript; None to transcribe the recording offline; "" when
        there was no report to transcribe. `sides`: a bridged call's live transcripts — the
        dialogue is made of them, or, where the operator's side was not live, from the
        recording's two channels by the transcription task."""
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
                return
            attach_transcript(
                session,
                call_id=call.call_id,
                text=text or "",
                transcribed_by=by,
                now=now,
                settings=self.settings,
            )
            if sides is not None:
                caller, spoken = sides
                turns = final_dialogue(caller, spoken)
                set_dialogue(session, call_id=call.call_id, dialogue=turns, now=now)
                if spoken is None and recording is not None:
                    after_commit(session, partial(self._enqueue, call.call_id))

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
        self._records.close()
        self._writer.stop()
        with self._lock:
            live = [*self._live.values(), *self._operator_live.values()]
            self._live, self._operator_live = {}, {}
        for transcriber in live:
            transcriber.cancel()


def warm_dispatch() -> None:
    """jieba (the rules segment a transcript with it) imported and its dictionary loaded
    before the first call: the first report's end did it, and compiling jieba's tables
    (without cached bytecode) and loading its dictionary held the GIL for about a second
    (py-spy, bench/calls.py's first step) while every call of the process waited."""
    segment.jieba_module().dt.initialize()


def warm_transcription_queue() -> None:
    """The Celery app that takes the recordings to transcribe, imported and made ready
    before the first call. The first call whose report had no live stream imported it (and
    Celery's task-message and event modules) in a finisher thread: under 300 calls at once
    that import held the process for seconds (py-spy: other threads queued on the import
    lock, the media loop starved, callers' packets came too late to be recorded), which was
    the unexplained early stall of the first step of bench/calls.py. Nothing here connects
    to the broker."""
    from hotline.worker import app

    app.finalize(auto=True)
    app.amqp  # noqa: B018  (lazy: the task-message module and its routes)
    app.producer_pool  # noqa: B018
    app.events.Dispatcher  # noqa: B018  (the task-sent event dispatcher, on its first use)


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
