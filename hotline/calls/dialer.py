"""The SIP process's callback dialer: places the satisfaction callbacks (回访) that are due, one
at a time, and runs the survey."""

from __future__ import annotations

import logging
import threading

from core.db import session_scope
from hotline.calls.callbacks import (
    claim_callback,
    reap_stale_attempts,
    record_callback_outcome,
    schedule_callbacks,
)
from hotline.calls.records import upsert_call
from hotline.calls.services import CallServices
from telephony.endpoint import CallFailed, Disposition, SipEndpoint
from telephony.flows import FlowHooks, FlowSettings, Prompts, survey
from telephony.models import CallbackAttempt, CallbackOutcome

log = logging.getLogger(__name__)

_FAILED_OUTCOME = {
    Disposition.BUSY: CallbackOutcome.busy,
    Disposition.NO_ANSWER: CallbackOutcome.no_answer,
}


class CallbackDialer:
    """The SIP process's callback loop: schedule, claim one due attempt, dial, run the
    survey, record the outcome — one call at a time, so the line is never flooded."""

    def __init__(
        self, *, services: CallServices, endpoint: SipEndpoint, prompts: Prompts, flow: FlowSettings
    ) -> None:
        self.services = services
        self.endpoint = endpoint
        self.prompts = prompts
        self.flow = flow

    @property
    def _telephony(self):
        return self.services.settings.telephony

    def run_once(self) -> CallbackAttempt | None:
        """Handle one due attempt, if there is one; returns it with its outcome."""
        s = self.services
        now = s.clock.now()
        with session_scope(s.session_factory) as session:
            schedule_callbacks(session, now=now)
            reap_stale_attempts(session, now=now, settings=s.settings)
        with session_scope(s.session_factory) as session:
            attempt = claim_callback(session, now=now, settings=s.settings)
        if attempt is None:
            return None
        assert attempt.id is not None  # a claimed attempt is a stored row
        uri = (self._telephony.callback_uri or "").format(number=attempt.number)
        call_id, detail = None, None
        try:
            call = self.endpoint.dial(uri, ring_timeout=self._telephony.callback_ring_timeout_s)
        except CallFailed as exc:
            outcome = _FAILED_OUTCOME.get(exc.disposition, CallbackOutcome.failed)
            detail = str(exc)
        else:
            call_id = call.call_id
            with session_scope(s.session_factory) as session:
                owner = {"edge_id": s.edge_id} if s.edge_id else {}
                upsert_call(
                    session, call=call, now=s.clock.now(), ticket_id=attempt.ticket_id, **owner
                )
            result = survey(call, prompts=self.prompts, hooks=FlowHooks(), settings=self.flow)
            outcome = (
                CallbackOutcome(result.value) if result is not None else CallbackOutcome.no_input
            )
        with session_scope(s.session_factory) as session:
            record_callback_outcome(
                session,
                attempt_id=attempt.id,
                outcome=outcome,
                now=s.clock.now(),
                settings=s.settings,
                call_id=call_id,
                detail=detail,
            )
        attempt.outcome, attempt.call_id = outcome, call_id
        log.info(
            "callback of ticket %s (attempt %d): %s",
            attempt.ticket_id,
            attempt.attempt_no,
            outcome.value,
        )
        return attempt

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                while not stop.is_set() and self.run_once() is not None:
                    pass
            except Exception:
                log.exception("callback loop iteration failed")
            stop.wait(self._telephony.callback_poll_s)
