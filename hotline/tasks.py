"""The Celery tasks: the SLA sweep, notification delivery and the offline transcription of
calls. Thin: they take ids (Call-IDs, notification ids), never ORM objects, and are safe to run
twice — the sweep's conditional updates, `deliver`'s status check and
`attach_transcript`'s check for a transcript already attached are the idempotency guards.
Task names are stable: queued messages and the beat schedule refer to them."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

# celery ships no type information (no py.typed, no stubs installed)
from celery import shared_task
from sqlalchemy.exc import OperationalError

from asr.recognizer import Recognizer
from core import bell, metrics, runtime
from core.db import session_scope
from core.errors import InvalidInput
from dispatch import classifier, escalation, notify
from dispatch.models import NotificationStatus
from hotline import attachments, duplicates_queue
from hotline.calls import intake, recovery, setup
from hotline.figures import monthly, summary
from hotline.knowledge import attachments as knowledge_files
from hotline.knowledge import reminders as knowledge_reminders

# ---------------------------------------------------------------- SLA and notifications

RETRY_BACKOFF_MAX_S = int(notify.CLAIM_TTL.total_seconds() * 3 / 4)


@shared_task(name="dispatch.sweep_sla", ignore_result=True)
def sweep_sla(now: str | None = None) -> dict[str, int]:
    """Fire due escalations. `now` (ISO 8601 with a zone) replays a sweep at that instant."""
    settings = runtime.get_settings()
    at = datetime.fromisoformat(now) if now else runtime.get_clock().now()
    with metrics.SLA_SWEEP_SECONDS.time():
        result = escalation.sweep(
            runtime.get_session_factory(),
            now=at,
            batch=settings.sla.sweep_batch,
            enqueue=deliver_notification.delay,
            settings=settings,
        )
    metrics.ESCALATIONS_FIRED.inc(result.fired)
    metrics.SLA_SWEEP_FAILURES.inc(result.failed)
    return {"fired": result.fired, "assignments": result.assignments, "failed": result.failed}


@shared_task(
    name="dispatch.deliver_notification",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(notify.DeliveryPending,),
    # deliver() gives up after MAX_ATTEMPTS on its own; Celery must not stop retrying first.
    max_retries=notify.MAX_ATTEMPTS,
    retry_backoff=30,
    # A retry waits in the worker (unacknowledged) until it is due; one that waited past the
    # broker's visibility timeout (the claim TTL) would be handed out a second time.
    retry_backoff_max=RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
)
def deliver_notification(notification_id: int) -> str:
    status = notify.deliver(
        runtime.get_session_factory(),
        notification_id=notification_id,
        now=runtime.get_clock().now(),
        settings=runtime.get_settings(),
    )
    if status is NotificationStatus.pending:
        raise notify.DeliveryPending(f"notification {notification_id} will be retried")
    return status.value


@shared_task(name="dispatch.requeue_notifications", ignore_result=True)
def requeue_notifications() -> int:
    """Queue again what a broker outage kept from being queued; `deliver` is idempotent,
    so a notification queued twice is still sent once."""
    with session_scope(runtime.get_session_factory()) as session:
        ids = notify.unqueued(session, now=runtime.get_clock().now())
    for notification_id in ids:
        deliver_notification.delay(notification_id)
    return len(ids)


@shared_task(name="knowledge.remind_reviews", ignore_result=True)
def remind_knowledge_reviews(now: str | None = None) -> dict[str, int]:
    """Remind the owning units of articles whose review is due or whose validity ends within
    a week; one reminder per article, kind and date however often it runs. `now` (ISO 8601
    with a zone) replays the sweep at that instant."""
    at = datetime.fromisoformat(now) if now else runtime.get_clock().now()
    result = knowledge_reminders.sweep(
        runtime.get_session_factory(),
        now=at,
        enqueue=deliver_notification.delay,
        settings=runtime.get_settings(),
    )
    return {
        "reminders": result.reminders,
        "notifications": result.notifications,
        "failed": result.failed,
    }


# Uploads an editor made on an article's form and never saved with a version are kept this
# long (a form left open over lunch still saves them), then forgotten with their bytes.
UNSAVED_KNOWLEDGE_FILES_KEPT = timedelta(days=1)


@shared_task(name="knowledge.purge_unsaved_files", ignore_result=True)
def purge_unsaved_knowledge_files(now: str | None = None) -> int:
    """Forget knowledge-article uploads no version took within UNSAVED_KNOWLEDGE_FILES_KEPT;
    how many."""
    at = datetime.fromisoformat(now) if now else runtime.get_clock().now()
    settings = runtime.get_settings()
    with session_scope(runtime.get_session_factory()) as session:
        return knowledge_files.purge_unsaved(
            session,
            store=attachments.store_for(settings),
            before=at - UNSAVED_KNOWLEDGE_FILES_KEPT,
        )


@shared_task(name="duplicates.drain_pending", ignore_result=True)
def drain_duplicate_checks() -> dict[str, int]:
    """The web and Open311 requests waiting to be compared with the open tickets
    (hotline.duplicates_queue), compared; nothing to do without Redis."""
    settings = runtime.get_settings()
    if not (settings.broker_url or "").startswith(("redis://", "rediss://")):
        return {"compared": 0, "suggested": 0}
    pending = duplicates_queue.client(settings.broker_url or "")
    try:
        compared, suggested = duplicates_queue.drain(
            pending, runtime.get_session_factory(), now=runtime.get_clock().now()
        )
    finally:
        pending.close()
    return {"compared": compared, "suggested": suggested}


# ---------------------------------------------------------------- learned routing suggestion


@shared_task(name="dispatch.train_router", ignore_result=True)
def train_router() -> int:
    """Retrain the learned routing suggestion on the centre's history and save it under the
    data directory; the number of tickets learned from, 0 while the history is too small."""
    path = runtime.get_settings().data_dir / classifier.MODEL_FILE
    with session_scope(runtime.get_session_factory()) as session:
        try:
            model = classifier.train_from_history(session, path=path)
        except InvalidInput:
            return 0
    return model.trained_on


# ---------------------------------------------------------------- calls


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

            _recognizer = VoskRecognizer(setup.asr_config(runtime.get_settings()))
        return _recognizer


@shared_task(
    name="calls.transcribe_recording",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    max_retries=5,
    retry_backoff=10,
    retry_jitter=True,
)
def transcribe_recording(call_id: str) -> str:
    """Decode a call's recording and attach it to its ticket, which is then dispatched."""
    return intake.transcribe_recording(
        session_factory=runtime.get_session_factory(),
        recognizer=get_recognizer(),
        call_id=call_id,
        clock=runtime.get_clock(),
        settings=runtime.get_settings(),
    )


@shared_task(name="calls.requeue_transcriptions", ignore_result=True)
def requeue_transcriptions() -> int:
    """Queue again the transcriptions a broker outage or a stopped SIP process lost."""
    with session_scope(runtime.get_session_factory()) as session:
        call_ids = intake.untranscribed(session, now=runtime.get_clock().now())
    for call_id in call_ids:
        transcribe_recording.delay(call_id)
    return len(call_ids)


@shared_task(name="calls.recover_lost_calls", ignore_result=True)
def recover_lost_calls() -> int:
    """Close the calls of SIP edges whose heartbeat stopped (a host that never came back)
    and queue their transcription; the number of calls closed."""
    settings = runtime.get_settings()
    closed = recovery.recover_calls(
        runtime.get_session_factory(),
        now=runtime.get_clock().now(),
        stale_after=timedelta(seconds=settings.telephony.edge_stale_after_s),
        enqueue_transcription=transcribe_recording.delay,
        wrap_up_s=settings.acd.wrap_up_s,
        bell=bell.for_settings(settings) if settings.acd.enabled else None,
    )
    return len(closed)


# ---------------------------------------------------------------- figures


@shared_task(name="figures.refresh_summaries", ignore_result=True)
def refresh_figure_summaries() -> dict[str, int]:
    """Count again the days of the figures' summary tables that changed (idempotent: a second
    run finds nothing new)."""
    done = summary.refresh_in(runtime.get_session_factory(), now=runtime.get_clock().now())
    return {"days": done.days, "watermark": done.watermark, "full": int(done.full)}


# ---------------------------------------------------------------- monthly reports


@shared_task(name="figures.monthly_reports", ignore_result=True, acks_late=True)
def monthly_reports(month: str | None = None) -> dict[str, int]:
    """Each unit's report of ``month`` (default: the month before this one, in the centre's
    time) written and e-mailed to its heads; running it again sends nothing twice."""
    settings = runtime.get_settings()
    now = runtime.get_clock().now()
    reports = monthly.monthly_reports(
        runtime.get_session_factory(),
        settings=settings,
        month=month or monthly.previous_month(now, settings.tz),
        now=now,
        enqueue=deliver_notification.delay,
    )
    return {
        "units": len(reports),
        "sent": sum(len(r.notification_ids) for r in reports),
        "failed": sum(r.error is not None for r in reports),
    }
