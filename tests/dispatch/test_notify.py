from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core.clock import SystemClock
from core.db import make_engine, make_session_factory, session_scope
from dispatch.models import Clock, EscalationKind, Notification, NotificationStatus
from dispatch.notify import (
    MAX_ATTEMPTS,
    DeliveryError,
    EmailChannel,
    WebhookChannel,
    deliver,
)
from hotline.tables import metadata
from tests.conftest import START, wait_until
from tests.dispatch.escalation_scene import (
    SUPERVISE,
    Scene,
    savepoint_factory,
    settings_for,
    swept,
)
from tests.services import free_port


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives and refuses
    the addresses it is told to."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        )
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    yield box
    box.stop()


class Receiver:
    """A real HTTP endpoint on loopback that records each POST and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/12345"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def pending(
    session,
    channel: str,
    address: str,
    *,
    subject: str = "【催办】工单 20261127-000001",
    body: str = "请立即办理。\nAct on it now.",
) -> Notification:
    row = Notification(
        channel=channel, address=address, subject=subject, body=body, created_at=START
    )
    session.add(row)
    session.flush()
    return row


# ---------------------------------------------------------------- e-mail


def attempt(session: Session, **kwargs) -> NotificationStatus:
    """One delivery attempt the way a worker makes it — its own units of work, here on the
    test's connection — after which the test's session reads the outcome afresh."""
    status = deliver(savepoint_factory(session), **kwargs)
    session.expire_all()
    return status


def test_given_pending_email_when_delivered_then_utf8_mail_arrives_and_it_is_sent_once(
    session, mailbox, clock, tmp_path
):
    settings = settings_for(tmp_path, smtp_port=mailbox.port)
    note = pending(session, "email", "urban@units.example.org")
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        == NotificationStatus.sent
    )
    [mail] = mailbox.messages
    assert mail["Subject"] == "【催办】工单 20261127-000001"
    assert mail["To"] == "urban@units.example.org"
    assert mail["From"] == settings.smtp.sender
    assert mail.get_content_charset() == "utf-8"
    assert mail.get_content().replace("\r\n", "\n").strip() == "请立即办理。\nAct on it now."
    assert (note.status, note.attempts, note.sent_at, note.last_error) == (
        NotificationStatus.sent,
        1,
        clock.now(),
        None,
    )

    clock.advance(minutes=1)
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        == NotificationStatus.sent
    )
    assert len(mailbox.messages) == 1 and note.attempts == 1


def test_given_smtp_down_when_delivered_then_retried_until_max_attempts_then_failed(
    session, clock, tmp_path
):
    settings = settings_for(tmp_path, smtp_port=free_port())  # nothing listens there
    note = pending(session, "email", "urban@units.example.org")
    statuses = [
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        for _ in range(MAX_ATTEMPTS)
    ]
    assert statuses == [NotificationStatus.pending] * (MAX_ATTEMPTS - 1) + [
        NotificationStatus.failed
    ]
    assert note.attempts == MAX_ATTEMPTS
    assert "Connection refused" in note.last_error or "ConnectionRefused" in note.last_error


def test_given_smtp_back_when_retried_then_the_pending_mail_is_sent(
    session, mailbox, clock, tmp_path
):
    note = pending(session, "email", "urban@units.example.org")
    down = settings_for(tmp_path, smtp_port=free_port())
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=down)
        == NotificationStatus.pending
    )
    assert note.last_error
    clock.advance(minutes=2)
    up = settings_for(tmp_path, smtp_port=mailbox.port)
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=up)
        == NotificationStatus.sent
    )
    assert (note.attempts, note.sent_at, len(mailbox.messages)) == (2, clock.now(), 1)


def test_given_refused_address_when_delivered_then_failed_at_once(
    session, mailbox, clock, tmp_path
):
    mailbox.refuse.add("nobody@units.example.org")
    note = pending(session, "email", "nobody@units.example.org")
    assert (
        attempt(
            session,
            notification_id=note.id,
            now=clock.now(),
            settings=settings_for(tmp_path, smtp_port=mailbox.port),
        )
        == NotificationStatus.failed
    )
    assert note.attempts == 1 and "550" in note.last_error
    assert mailbox.messages == []


def test_given_no_smtp_host_when_email_channel_sends_then_permanent_error(session, tmp_path):
    note = pending(session, "email", "urban@units.example.org")
    with pytest.raises(DeliveryError) as raised:
        EmailChannel().send(note, settings=settings_for(tmp_path), now=START)
    assert raised.value.permanent


# ---------------------------------------------------------------- webhook


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks signature check alone, at the delivery's own timestamp (a
    test's frozen clock is days behind the real one `Webhook.verify` compares with)."""
    at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret.encode()).sign(headers["webhook-id"], at, body.decode())
    return expected in headers["webhook-signature"].split(" ")


def test_given_pending_webhook_when_delivered_then_json_is_posted_with_standard_webhooks_headers(
    session, receiver, clock, tmp_path
):
    clock.set(SystemClock().now())
    settings = settings_for(tmp_path, webhook_url=receiver.url)
    body = json.dumps({"ticket_number": "20261127-000001", "message": "催办"}, ensure_ascii=False)
    note = pending(session, "webhook", receiver.url, body=body)
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        == NotificationStatus.sent
    )
    [(headers, raw)] = receiver.requests
    assert headers["Content-Type"].startswith("application/json")
    assert headers["webhook-id"] == f"msg_{note.id}"
    assert headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    # what the README tells receivers to run
    assert Webhook(b"s3cret").verify(raw, headers) == {
        "ticket_number": "20261127-000001",
        "message": "催办",
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(b"wrong secret").verify(raw, headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed: no re-labelling
        Webhook(b"s3cret").verify(raw, {**headers, "webhook-id": "msg_other"})


def test_given_a_captured_delivery_when_replayed_minutes_later_then_verification_rejects_it(
    session, receiver, clock, tmp_path
):
    clock.set(SystemClock().now() - timedelta(minutes=6))
    note = pending(session, "webhook", receiver.url, body='{"message": "催办"}')
    attempt(
        session,
        notification_id=note.id,
        now=clock.now(),
        settings=settings_for(tmp_path, webhook_url=receiver.url),
    )
    [(headers, raw)] = receiver.requests
    assert signed_by("s3cret", headers, raw)  # genuine, but stale
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(b"s3cret").verify(raw, headers)


def test_given_a_failed_webhook_when_retried_then_same_message_id_and_a_fresh_signed_timestamp(
    session, receiver, clock, tmp_path
):
    settings = settings_for(tmp_path, webhook_url=receiver.url)
    note = pending(session, "webhook", receiver.url, body='{"message": "催办"}')
    receiver.status = 503
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        == NotificationStatus.pending
    )
    clock.advance(minutes=1)
    receiver.status = 200
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
        == NotificationStatus.sent
    )
    (first, raw1), (second, raw2) = receiver.requests
    assert first["webhook-id"] == second["webhook-id"] == f"msg_{note.id}"
    assert int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 60
    assert signed_by("s3cret", first, raw1) and signed_by("s3cret", second, raw2)


def test_given_a_whsec_secret_when_delivered_then_it_is_used_as_base64_like_standard_webhooks(
    session, receiver, clock, tmp_path
):
    clock.set(SystemClock().now())
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = settings_for(tmp_path, webhook_url=receiver.url)
    settings.webhook.secret = secret
    note = pending(session, "webhook", receiver.url, body="{}")
    attempt(session, notification_id=note.id, now=clock.now(), settings=settings)
    [(headers, raw)] = receiver.requests
    assert Webhook(secret).verify(raw, headers) == {}


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (503, NotificationStatus.pending),
        (429, NotificationStatus.pending),
        (400, NotificationStatus.failed),
        (404, NotificationStatus.failed),
    ],
)
def test_given_receiver_error_when_delivered_then_server_errors_retry_and_client_errors_fail(
    session, receiver, clock, tmp_path, status, outcome
):
    receiver.status = status
    note = pending(session, "webhook", receiver.url, body="{}")
    assert (
        attempt(
            session,
            notification_id=note.id,
            now=clock.now(),
            settings=settings_for(tmp_path, webhook_url=receiver.url),
        )
        == outcome
    )
    assert str(status) in note.last_error and note.attempts == 1


def test_given_receiver_down_when_webhook_sent_then_retryable_error(session, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/hook"
    note = pending(session, "webhook", url, body="{}")
    with pytest.raises(DeliveryError) as raised:
        WebhookChannel().send(note, settings=settings_for(tmp_path, webhook_url=url), now=START)
    assert not raised.value.permanent


def test_given_unknown_channel_when_delivered_then_failed(session, clock, tmp_path):
    note = pending(session, "carrier-pigeon", "loft 3")
    assert (
        attempt(session, notification_id=note.id, now=clock.now(), settings=settings_for(tmp_path))
        == NotificationStatus.failed
    )
    assert "carrier-pigeon" in note.last_error


# ---------------------------------------------------------------- sweep → outbox → channels


def test_given_supervision_fires_when_outbox_is_drained_then_mail_and_webhook_arrive(
    session, mailbox, receiver, clock, tmp_path
):
    """Collect what the sweep enqueues after commit, then drain it the way the worker would."""
    scene = Scene(session)
    factory = savepoint_factory(session)
    settings = settings_for(tmp_path, smtp_port=mailbox.port, webhook_url=receiver.url)
    outbox: list[int] = []
    clock.set(SUPERVISE)
    swept(session, factory, now=clock.now(), enqueue=outbox.append, settings=settings)
    assert len(outbox) == 3 * 2 + 3  # warning and chase to 2 handlers, the head twice; 3 hooks
    for notification_id in outbox:
        deliver(factory, notification_id=notification_id, now=clock.now(), settings=settings)
    session.expire_all()
    statuses = session.scalars(select(Notification.status).where(Notification.id.in_(outbox))).all()
    assert set(statuses) == {NotificationStatus.sent}
    wait_until(lambda: len(mailbox.messages) == 6, message="six e-mails")
    subjects = sorted((m["To"], m["Subject"][:4]) for m in mailbox.messages)
    assert subjects == sorted(
        [
            ("urban@units.example.org", "【预警】"),
            ("head@units.example.org", "【预警】"),
            ("urban@units.example.org", "【催办】"),
            ("head@units.example.org", "【催办】"),
            ("head@units.example.org", "【督办】"),
            ("urban-head@units.example.org", "【督办】"),
        ]
    )
    hooks = [json.loads(body) for _, body in receiver.requests]
    assert [(h["level"], h["kind"], h["clock"]) for h in hooks] == [
        (1, EscalationKind.warning.value, Clock.sign.value),
        (2, EscalationKind.chase.value, Clock.sign.value),
        (3, EscalationKind.supervision.value, Clock.sign.value),
    ]
    assert {h["ticket_number"] for h in hooks} == {scene.ticket.number}
    assert hooks[2]["unit"] == {"code": "URBAN", "name": "URBAN局"}
    assert hooks[2]["deadline"] == scene.assignment.sign_due_at.isoformat()
    assert hooks[2]["message"].startswith("【督办】")
    for headers, body in receiver.requests:
        assert signed_by("s3cret", headers, body)
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 3


# ---------------------------------------------------------------- claims


def test_given_another_worker_holds_a_fresh_claim_then_nothing_is_sent(
    session, mailbox, clock, tmp_path
):
    note = pending(session, "email", "urban@units.example.org")
    note.claimed_at = clock.now()
    session.flush()
    assert (
        attempt(
            session,
            notification_id=note.id,
            now=clock.now(),
            settings=settings_for(tmp_path, smtp_port=mailbox.port),
        )
        == NotificationStatus.pending
    )
    assert mailbox.messages == [] and note.attempts == 0


def test_given_a_claim_left_by_a_dead_worker_then_it_is_taken_over_and_sent(
    session, mailbox, clock, tmp_path
):
    note = pending(session, "email", "urban@units.example.org")
    note.claimed_at, note.attempts = clock.now() - timedelta(minutes=3), 1
    session.flush()
    assert (
        attempt(
            session,
            notification_id=note.id,
            now=clock.now(),
            settings=settings_for(tmp_path, smtp_port=mailbox.port),
        )
        == NotificationStatus.sent
    )
    assert note.claimed_at is None and note.attempts == 2
    wait_until(lambda: len(mailbox.messages) == 1, message="the e-mail")


class _WritesWhileSending:
    """A channel that, mid-send, writes to the database through another connection with a
    short lock timeout — as the web server would while an SMTP server is slow."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def send(self, notification, *, settings, now) -> None:
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout=1000")
            else:
                conn.exec_driver_sql("SET lock_timeout = '1s'")
            conn.execute(
                update(Notification).where(Notification.id == notification.id).values(read_at=START)
            )
            conn.commit()


def test_given_a_slow_channel_then_no_lock_is_held_while_it_sends(fresh_db_url, clock, tmp_path):
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as session:
            note_id = pending(session, "email", "urban@units.example.org").id
        status = deliver(
            factory,
            notification_id=note_id,
            now=clock.now(),
            settings=settings_for(tmp_path),
            channels={"email": _WritesWhileSending(engine)},
        )
        assert status == NotificationStatus.sent
        with session_scope(factory) as session:
            assert session.get(Notification, note_id).read_at == START
    finally:
        engine.dispose()
