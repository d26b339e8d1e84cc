"""The Celery app and its beat schedule.

Run a worker with `celery -A hotline.worker worker` and the scheduler with
`celery -A hotline.worker beat`. Without HOTLINE_BROKER_URL the broker is kombu's
filesystem transport under the data directory, so the embedded install needs no Redis.
"""

from __future__ import annotations

from typing import Any

# celery ships no type information (no py.typed, no stubs installed)
from celery import Celery
from celery.schedules import crontab

from core import logging_setup
from core.settings import Settings, get_settings
from dispatch import classifier
from dispatch.notify import CLAIM_TTL

TASK_MODULES = ["hotline.tasks"]

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "sla-sweep": {
        "task": "dispatch.sweep_sla",
        "schedule": crontab(minute="*"),
        # A sweep still queued when the next one is due is redundant: drop it.
        "options": {"expires": 55},
    },
    "requeue-notifications": {
        "task": "dispatch.requeue_notifications",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 240},
    },
    "train-router": {
        "task": "dispatch.train_router",
        "schedule": crontab(hour=3, minute=30),
        "options": {"expires": 3600},
    },
    "requeue-transcriptions": {
        "task": "calls.requeue_transcriptions",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 240},
    },
    # Knowledge articles due for review or about to expire: their units are reminded once.
    "knowledge-reminders": {
        "task": "knowledge.remind_reviews",
        "schedule": crontab(minute=17),
        "options": {"expires": 3000},
    },
    # Web and Open311 requests waiting to be compared with the open tickets (production:
    # hotline.duplicates_queue); the dispatcher sees their suggestions seconds later.
    "duplicate-checks": {
        "task": "duplicates.drain_pending",
        "schedule": 5.0,
        "options": {"expires": 4},
    },
    # Knowledge-article uploads never saved with a version, forgotten after a day.
    "knowledge-unsaved-files": {
        "task": "knowledge.purge_unsaved_files",
        "schedule": crontab(hour=4, minute=10),
        "options": {"expires": 3600},
    },
    # Each unit's report of last month to its heads (hotline.figures.monthly), at 06:00 on
    # the 1st in the centre's time zone (the app's `timezone`); a day to get through.
    "monthly-reports": {
        "task": "figures.monthly_reports",
        "schedule": crontab(minute=0, hour=6, day_of_month=1),
        "options": {"expires": 86400},
    },
    # The figures' summary tables (hotline.figures.summary): the days that changed, counted
    # again; the pages stay exact between runs, this keeps them fast.
    "figure-summaries": {
        "task": "figures.refresh_summaries",
        "schedule": crontab(minute="*"),
        "options": {"expires": 55},
    },
    # Calls left open by a SIP edge that died (its host never came back to restart it).
    "recover-lost-calls": {
        "task": "calls.recover_lost_calls",
        "schedule": crontab(minute="*"),
        "options": {"expires": 55},
    },
}


def _filesystem_transport(settings: Settings) -> dict[str, str]:
    root = settings.broker_folder
    # Producers write where consumers read: one queue folder serves both directions.
    folders = {
        "queue": root / "queue",
        "processed": root / "processed",
        "control": root / "control",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    classifier.watch(data_dir / classifier.MODEL_FILE)  # also reloads the other workers' training
    app = Celery("hotline", broker=settings.broker, include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        timezone=settings.timezone,
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        beat_schedule=BEAT_SCHEDULE,
        # beat's state belongs with the rest of the data, not in whatever directory it ran in
        beat_schedule_filename=str(data_dir / "celerybeat-schedule"),
    )
    if settings.broker.startswith("filesystem://"):
        app.conf.broker_transport_options = _filesystem_transport(settings)
    else:
        # A message a killed worker took (acks late) comes back after the visibility
        # timeout — kombu's default is an hour; make it the delivery claim's expiry, so a
        # notification is retried within minutes, as the README promises.
        app.conf.broker_transport_options = {"visibility_timeout": int(CLAIM_TTL.total_seconds())}
    return app


# Workers and beat log in the platform's format; a task logs with the ids of what queued it.
logging_setup.connect_celery()
app = make_app()
