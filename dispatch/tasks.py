"""Thin Celery tasks over the escalation sweep and notification delivery. They take ids,
never ORM objects, and are safe to run twice: the sweep's conditional updates and
`deliver`'s status check are the idempotency guards."""
from __future__ import annotations

from datetime import datetime

from celery import shared_task

from dispatch import escalation, notify
from dispatch.models import NotificationStatus
from hotline import runtime
from hotline.db import session_scope


@shared_task(name="dispatch.sweep_sla", ignore_result=True)
def sweep_sla(now: str | None = None) -> dict[str, int]:
    """Fire due escalations. `now` (ISO 8601 with a zone) replays a sweep at that instant."""
    settings = runtime.get_settings()
    at = datetime.fromisoformat(now) if now else runtime.get_clock().now()
    result = escalation.sweep(runtime.get_session_factory(), now=at,
                              batch=settings.sla.sweep_batch,
                              enqueue=deliver_notification.delay, settings=settings)
    return {"fired": result.fired, "assignments": result.assignments, "failed": result.failed}


@shared_task(
    name="dispatch.deliver_notification",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(notify.DeliveryPending,),
    # deliver() gives up after MAX_ATTEMPTS on its own; Celery must not stop retrying first.
    max_retries=notify.MAX_ATTEMPTS,
    retry_backoff=30,
    retry_backoff_max=30 * 60,
    retry_jitter=True,
)
def deliver_notification(notification_id: int) -> str:
    status = notify.deliver(runtime.get_session_factory(), notification_id=notification_id,
                            now=runtime.get_clock().now(), settings=runtime.get_settings())
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
