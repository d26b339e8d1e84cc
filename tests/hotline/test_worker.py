from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

# celery ships no type information (no py.typed, no stubs installed)
from celery import Celery
from celery.schedules import crontab
from sqlalchemy import func, select
from sqlmodel import col

from core import runtime
from core.clock import FrozenClock, SystemClock
from core.db import make_engine, make_session_factory
from core.settings import Settings, SmtpSettings, get_settings
from dispatch import notify
from dispatch.models import Escalation, Notification, NotificationStatus
from hotline import tasks
from hotline.tables import metadata
from hotline.worker import BEAT_SCHEDULE, make_app
from tests import services
from tests.conftest import START, wait_until
from tests.dispatch.escalation_scene import SUPERVISE, Scene, savepoint_factory
from tests.dispatch.test_notify import Mailbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    yield box
    box.stop()


def test_every_beat_entry_names_a_registered_task(tmp_path):
    app = make_app(Settings(environment="test", data_dir=tmp_path))
    app.loader.import_default_modules()
    assert app.conf.beat_schedule == BEAT_SCHEDULE
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, f"beat entry {name} names an unknown task"


def test_sla_sweep_runs_every_minute_and_expires_before_the_next(tmp_path):
    entry = make_app(Settings(environment="test", data_dir=tmp_path)).conf.beat_schedule[
        "sla-sweep"
    ]
    assert entry["task"] == "dispatch.sweep_sla"
    assert entry["schedule"] == crontab(minute="*")
    assert entry["options"]["expires"] < 60


def test_beat_keeps_its_state_in_the_data_dir(tmp_path):
    app = make_app(Settings(environment="test", data_dir=tmp_path / "data"))
    assert Path(app.conf.beat_schedule_filename).parent == tmp_path / "data"


def test_given_redis_broker_when_app_is_made_then_tasks_are_acked_late_one_at_a_time(redis_url):
    app = make_app(Settings(environment="test", broker_url=redis_url, timezone="Asia/Shanghai"))
    assert app.conf.broker_url == redis_url
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_ignore_result and not app.conf.result_backend
    assert app.conf.timezone == "Asia/Shanghai"
    app.loader.import_default_modules()
    deliver = app.tasks["dispatch.deliver_notification"]
    assert deliver.acks_late and deliver.retry_backoff
    assert deliver.autoretry_for == (notify.DeliveryPending,)
    # deliver() marks a notification failed after MAX_ATTEMPTS; Celery must not give up sooner
    assert deliver.max_retries >= notify.MAX_ATTEMPTS - 1


def test_given_redis_broker_when_a_worker_dies_mid_delivery_then_the_message_returns_with_the_claim(
    redis_url,
):
    """The README promises a claim expires after two minutes; the broker must hand a killed
    worker's unacknowledged message out again as soon, not after kombu's default hour."""
    app = make_app(Settings(environment="test", broker_url=redis_url))
    timeout = app.conf.broker_transport_options["visibility_timeout"]
    assert timeout == notify.CLAIM_TTL.total_seconds()
    app.loader.import_default_modules()
    # a retry held by a worker until it is due must not outlast the timeout (or be doubled)
    assert app.tasks["dispatch.deliver_notification"].retry_backoff_max < timeout


def test_given_no_broker_url_when_app_is_made_then_filesystem_queue_serves_both_ends(tmp_path):
    app = make_app(Settings(environment="test", data_dir=tmp_path))
    options = app.conf.broker_transport_options
    assert app.conf.broker_url == "filesystem://localhost//"
    assert options["data_folder_in"] == options["data_folder_out"]
    for key in ("data_folder_in", "processed_folder", "control_folder"):
        assert Path(options[key]).is_dir() and tmp_path in Path(options[key]).parents
    app.send_task("dispatch.sweep_sla")
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("celery").get(timeout=5)
        assert message.headers["task"] == "dispatch.sweep_sla"
        message.ack()


# ---------------------------------------------------------------- the tasks, in process


@pytest.fixture
def in_process(session, clock, smtp, tmp_path) -> Iterator[tuple[Settings, Celery]]:
    """The tasks' runtime pointed at the test's database and frozen clock; what they send
    goes to a filesystem queue of the test's own (the app made last is the current one)."""
    settings = Settings(
        environment="test", data_dir=tmp_path, smtp=SmtpSettings(host="127.0.0.1", port=smtp.port)
    )
    app = make_app(settings)
    runtime.set_runtime(settings=settings, session_factory=savepoint_factory(session), clock=clock)
    yield settings, app
    runtime.reset_runtime()


def test_given_injected_runtime_when_sweep_task_runs_then_deliveries_are_queued(
    session, clock, in_process
):
    _, app = in_process
    Scene(session)
    clock.set(SUPERVISE)
    assert tasks.sweep_sla.run() == {"fired": 3, "assignments": 1, "failed": 0}
    session.expire_all()
    emails = session.scalars(
        select(Notification.id).where(Notification.channel == "email").order_by(Notification.id)
    ).all()
    assert len(emails) == 6
    queued = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("celery")
        for _ in emails:
            message = queue.get(timeout=5)
            queued.append((message.headers["task"], message.headers["argsrepr"]))
            message.ack()
    assert sorted(queued) == sorted(("dispatch.deliver_notification", f"({i},)") for i in emails)


def test_given_notifications_never_queued_when_requeue_runs_then_only_those_are_queued(
    session, clock, in_process
):
    """A broker outage at commit time: the notification stays pending with no attempt. The
    five-minute beat task queues it again; in-app, fresh and already tried ones are left."""
    _, app = in_process
    now = clock.now()

    def note(channel: str, age_min: int, attempts: int = 0) -> Notification:
        row = Notification(
            channel=channel,
            address="hrss@units.example.org",
            subject="催办",
            body="…",
            attempts=attempts,
            created_at=now - timedelta(minutes=age_min),
        )
        session.add(row)
        return row

    lost = note("email", 6)
    note("inapp", 30)
    note("email", 2)
    note("webhook", 30, attempts=1)
    session.flush()
    assert tasks.requeue_notifications.run() == 1
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("celery").get(timeout=5)
        assert (message.headers["task"], message.headers["argsrepr"]) == (
            "dispatch.deliver_notification",
            f"({lost.id},)",
        )
        message.ack()


def test_given_a_worker_killed_mid_delivery_when_requeue_runs_then_attempt_one_is_queued_again(
    session, clock, in_process
):
    """Claimed for attempt 1, never settled: once the claim has expired, the beat task
    queues it again (a broker that lost the message must not lose the notification); a
    claim still fresh, or a failed attempt awaiting its retry, is left to its task."""
    _, app = in_process
    now = clock.now()

    def note(*, claimed_min_ago: int | None) -> Notification:
        row = Notification(
            channel="webhook",
            address="https://units.example.org/hook",
            subject="催办",
            body="{}",
            attempts=1,
            claimed_at=None
            if claimed_min_ago is None
            else now - timedelta(minutes=claimed_min_ago),
            created_at=now - timedelta(minutes=30),
        )
        session.add(row)
        return row

    abandoned = note(claimed_min_ago=3)
    note(claimed_min_ago=1)
    note(claimed_min_ago=None)
    session.flush()
    assert tasks.requeue_notifications.run() == 1
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("celery").get(timeout=5)
        assert message.headers["argsrepr"] == f"({abandoned.id},)"
        message.ack()


def test_given_injected_runtime_when_delivery_task_runs_then_mail_is_sent_or_retried(
    session, clock, smtp, in_process
):
    settings, _ = in_process
    rows = [
        Notification(
            channel="email",
            address="urban@units.example.org",
            subject="【催办】工单 20261127-000001",
            body="请立即办理。",
            created_at=clock.now(),
        )
        for _ in range(2)
    ]
    session.add_all(rows)
    session.flush()
    assert tasks.deliver_notification.run(rows[0].id) == "sent"
    assert len(smtp.messages) == 1
    runtime.set_runtime(
        settings=settings.model_copy(
            update={"smtp": SmtpSettings(host="127.0.0.1", port=services.free_port())}
        )
    )
    with pytest.raises(notify.DeliveryPending):
        tasks.deliver_notification.run(rows[1].id)
    session.refresh(rows[1])
    assert (rows[1].status, rows[1].attempts) == (NotificationStatus.pending, 1)
    assert rows[1].last_error


def test_given_runtime_reset_when_asked_then_it_is_built_from_the_environment(tmp_path):
    runtime.set_runtime(clock=FrozenClock(START))
    assert runtime.get_clock().now() == START
    runtime.reset_runtime()
    assert isinstance(runtime.get_clock(), SystemClock)
    assert runtime.get_settings() is get_settings()


# ---------------------------------------------------------------- a real worker


@pytest.fixture(params=["redis+postgres", "filesystem+sqlite"])
def deployment(request, tmp_path) -> Iterator[tuple[Settings, str]]:
    """A broker and a database the worker subprocess and this test share: Redis with a fresh
    PostgreSQL database, or the embedded filesystem queue with a SQLite file."""
    if request.param == "redis+postgres":
        redis_url = request.getfixturevalue("redis_url")
        db_url, drop = services.create_database()
        yield (
            Settings(
                environment="test", data_dir=tmp_path, broker_url=redis_url, database_url=db_url
            ),
            request.param,
        )
        drop()
    else:
        yield (
            Settings(
                environment="test",
                data_dir=tmp_path,
                database_url=f"sqlite:///{tmp_path / 'core.db'}",
            ),
            request.param,
        )


@pytest.fixture
def worker(deployment, smtp, tmp_path) -> Iterator[Path]:
    settings, name = deployment
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_SECRET_KEY": os.environ["HOTLINE_SECRET_KEY"],
        "HOTLINE_DATA_DIR": str(settings.data_dir),
        "HOTLINE_DATABASE_URL": settings.db_url,
        "HOTLINE_SMTP__HOST": "127.0.0.1",
        "HOTLINE_SMTP__PORT": str(smtp.port),
    }
    if settings.broker_url:
        env["HOTLINE_BROKER_URL"] = settings.broker_url
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hotline.worker",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"test-{name}-{uuid.uuid4().hex[:6]}@localhost",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.celery_worker
def test_given_overdue_assignment_when_beat_sends_the_sweep_then_a_real_worker_mails_the_unit(
    deployment, worker, smtp: Mailbox
):
    settings, _ = deployment
    engine = make_engine(settings.db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            scene = Scene(session)
            session.commit()
            number = scene.ticket.number
        app = make_app(settings)
        # The worker runs on the wall clock; the sweep is replayed at the test's instant.
        app.send_task("dispatch.sweep_sla", kwargs={"now": SUPERVISE.isoformat()})
        try:
            wait_until(lambda: len(smtp.messages) >= 6, timeout=60, message="six e-mails")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- worker log ---\n{worker.read_text()[-4000:]}"
            ) from exc
        subjects = sorted(m["Subject"] for m in smtp.messages)
        assert [s[:4] for s in subjects] == ["【催办】"] * 2 + ["【督办】"] * 2 + ["【预警】"] * 2
        assert all(number in s for s in subjects)
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Escalation)) == 3

        def emails_sent() -> bool:
            with factory() as session:  # a fresh transaction each time, to see the worker's
                statuses = session.scalars(
                    select(col(Notification.status)).where(col(Notification.channel) == "email")
                ).all()
            return set(statuses) == {NotificationStatus.sent}

        wait_until(emails_sent, message="e-mail notifications marked sent")
    finally:
        engine.dispose()


@pytest.mark.celery_worker
def test_given_ticket_created_and_dispatched_when_clock_passes_sign_deadline_then_worker_mails_chase(  # noqa: E501 - the name says the behaviour
    deployment, worker, smtp: Mailbox
):
    """The whole path on real components: intake through the pipeline, rules dispatch it to
    HR & social security with a 24 h sign-for clock, time moves 25 h on, beat's sweep runs
    on the real worker, and the chase reaches the unit's handler by e-mail."""
    from dispatch.models import Assignment
    from hotline.intake import submit
    from tests.factories import build_world
    from tickets.models import TicketCreate

    settings, _ = deployment
    engine = make_engine(settings.db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    clock = FrozenClock(START)
    try:
        with factory() as session:
            build_world(session, clock.now())
            sub = submit(
                session,
                data=TicketCreate(description="公司拖欠工资三个月，老板失联"),
                actor=None,
                now=clock.now(),
            )
            session.commit()
            number = sub.ticket.number
            assert sub.dispatch is not None
            [lead] = sub.dispatch.assignments
            assert lead.sign_due_at == START + timedelta(hours=24)
        clock.advance(hours=25)
        make_app(settings).send_task("dispatch.sweep_sla", kwargs={"now": clock.now().isoformat()})

        def chase_mail():
            return [
                m
                for m in smtp.messages
                if m["Subject"].startswith("【催办】")
                and number in m["Subject"]
                and "hrss@units.example.org" in m["To"]
            ]

        try:
            wait_until(chase_mail, timeout=60, message="the chase e-mail")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- worker log ---\n{worker.read_text()[-4000:]}"
            ) from exc
        with factory() as session:
            kinds = sorted(session.scalars(select(col(Escalation.kind))).all())
            assert kinds == ["chase", "warning"]
            assignment = session.get(Assignment, lead.id)
            assert assignment is not None
            assert assignment.escalation_level == 2
    finally:
        engine.dispose()
