"""Celery tasks of the call pipeline. Thin: they take Call-IDs and are safe to retry —
`hotline.calls.attach_transcript` finds a transcript attached and a ticket dispatched and
does nothing twice."""
from __future__ import annotations

import threading

from celery import shared_task
from sqlalchemy.exc import OperationalError

from asr.recognizer import Recognizer
from hotline import calls, runtime
from hotline.db import session_scope

_lock = threading.Lock()
_recognizer: Recognizer | None = None


def set_recognizer(recognizer: Recognizer | None) -> None:
    """Use this recognizer instead of one built from the settings (tests); None forgets."""
    global _recognizer
    with _lock:
        _recognizer = recognizer


def get_recognizer() -> Recognizer:
    """One per worker process: the model loads once and the pool of recognizers stays warm."""
    global _recognizer
    with _lock:
        if _recognizer is None:
            from asr.vosk_engine import VoskRecognizer

            _recognizer = VoskRecognizer(calls.asr_config(runtime.get_settings()))
        return _recognizer


@shared_task(name="calls.transcribe_recording", ignore_result=True, acks_late=True,
             autoretry_for=(OperationalError,), max_retries=5, retry_backoff=10,
             retry_jitter=True)
def transcribe_recording(call_id: str) -> str:
    """Decode a call's recording and attach it to its ticket, which is then dispatched."""
    return calls.transcribe_recording(session_factory=runtime.get_session_factory(),
                                      recognizer=get_recognizer(), call_id=call_id,
                                      clock=runtime.get_clock(), settings=runtime.get_settings())


@shared_task(name="calls.requeue_transcriptions", ignore_result=True)
def requeue_transcriptions() -> int:
    """Queue again the transcriptions a broker outage or a stopped SIP process lost."""
    with session_scope(runtime.get_session_factory()) as session:
        call_ids = calls.untranscribed(session, now=runtime.get_clock().now())
    for call_id in call_ids:
        transcribe_recording.delay(call_id)
    return len(call_ids)
