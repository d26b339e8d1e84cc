"""Delivery of escalation notifications over e-mail and webhooks.

In-app notifications are delivered by being stored; the others are stored pending and
delivered after commit, by a Celery task that calls `deliver` and retries with backoff
while it returns `pending`.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
from sqlalchemy import CursorResult, Select, and_, or_, select, update
from sqlmodel import Session, col
from standardwebhooks.webhooks import Webhook

from core.db import session_scope
from core.errors import NotFound
from core.settings import Settings
from dispatch.models import Notification, NotificationStatus
from dispatch.rows import existing

MAX_ATTEMPTS = 5
# A notification never attempted this long after it was made was never queued (the broker
# was down when its transaction committed); well past any normal queueing delay.
UNQUEUED_AFTER = timedelta(minutes=5)
# Longer than any channel's timeout: a claim this old was left by a worker that died.
CLAIM_TTL = timedelta(minutes=2)
# Standard Webhooks (https://www.standardwebhooks.com): the signature covers the message id,
# the timestamp and the body, so a receiver can reject a stale or replayed delivery.
SECRET_PREFIX = "whsec_"


class DeliveryError(Exception):
    """A channel could not deliver. `permanent` failures (a refused address, a 4xx answer)
    are not worth another try."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class DeliveryPending(Exception):
    """Raised by the Celery task when `deliver` left a notification pending, to retry."""


class Channel(Protocol):
    def send(self, notification: Notification, *, settings: Settings, now: datetime) -> None: ...


class EmailChannel:
    def send(self, notification: Notification, *, settings: Settings, now: datetime) -> None:
        smtp = settings.smtp
        if not smtp.host:
            raise DeliveryError("SMTP is not configured (HOTLINE_SMTP__HOST)", permanent=True)
        if not notification.address:
            raise DeliveryError("the notification has no e-mail address", permanent=True)
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = smtp.sender
        message["To"] = notification.address
        text, files = split_attachments(notification, settings=settings)
        message.set_content(text)
        for path in files:
            message.add_attachment(
                path.read_bytes(),
                maintype="application",
                subtype=_SUBTYPES.get(path.suffix, "octet-stream"),
                filename=path.name,
            )
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if smtp.username:
                    client.login(smtp.username, smtp.password or "")
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"recipient refused: {exc.recipients}", permanent=all(code >= 500 for code in codes)
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {exc!r}") from exc


# A notification made by the platform itself (no escalation: a scheduled report) may end
# with this line naming files under <data_dir>/reports to attach, as a JSON list of paths
# relative to the data dir. Escalations' bodies quote citizens' words and never attach.
ATTACHMENTS_LINE = "\n-- attachments: "
REPORTS_DIR = "reports"
_SUBTYPES = {".xlsx": "vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".pdf": "pdf"}


def with_attachments(text: str, paths: list[str]) -> str:
    return text + ATTACHMENTS_LINE + json.dumps(paths)


def split_attachments(notification: Notification, *, settings: Settings) -> tuple[str, list[Path]]:
    """The body's text and the files it names (see ATTACHMENTS_LINE), each checked to lie
    under the data dir's reports and to exist."""
    body = notification.body
    text, found, names = body.rpartition(ATTACHMENTS_LINE)
    if notification.escalation_id is not None or not found:
        return body, []
    try:
        named = json.loads(names)
    except ValueError:
        return body, []
    if not isinstance(named, list) or not all(isinstance(n, str) for n in named):
        return body, []
    root = (settings.data_dir / REPORTS_DIR).resolve()
    files = []
    for name in named:
        path = (settings.data_dir / name).resolve()
        if not path.is_relative_to(root):
            raise DeliveryError(f"attachment {name!r} is not under {root}", permanent=True)
        if not path.is_file():
            raise DeliveryError(f"attachment {path} does not exist", permanent=True)
        files.append(path)
    return text, files


def webhook_signer(secret: str) -> Webhook:
    """A `whsec_…` secret is base64, as Standard Webhooks issues them; any other secret is
    used as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        return Webhook(secret)
    return Webhook(secret.encode())


def message_id(notification: Notification) -> str:
    """The same for every attempt at one notification, so a receiver can deduplicate."""
    return f"msg_{notification.id}"


def webhook_headers(
    notification: Notification, *, secret: str | None, now: datetime
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (this attempt's, Unix seconds) and, with a secret,
    `webhook-signature` over `{id}.{timestamp}.{body}`."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "webhook-id": message_id(notification),
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secret:
        at = datetime.fromtimestamp(int(now.timestamp()), tz=UTC)
        headers["webhook-signature"] = webhook_signer(secret).sign(
            msg_id=headers["webhook-id"], timestamp=at, data=notification.body
        )
    return headers


class WebhookChannel:
    """POSTs the JSON fixed when the step fired, signed the Standard Webhooks way."""

    def send(self, notification: Notification, *, settings: Settings, now: datetime) -> None:
        url = notification.address or settings.webhook.url
        if not url:
            raise DeliveryError(
                "no webhook URL is configured (HOTLINE_WEBHOOK__URL)", permanent=True
            )
        body = notification.body.encode()
        headers = webhook_headers(notification, secret=settings.webhook.secret, now=now)
        try:
            response = httpx.post(
                url, content=body, headers=headers, timeout=settings.webhook.timeout_s
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {url}: {exc!r}") from exc
        if not response.is_success:
            status = response.status_code
            raise DeliveryError(
                f"webhook {url} answered {status}",
                permanent=400 <= status < 500 and status not in (408, 429),
            )


def default_channels() -> dict[str, Channel]:
    return {"email": EmailChannel(), "webhook": WebhookChannel()}


def deliver(
    session_factory: Callable[[], Session],
    *,
    notification_id: int,
    now: datetime,
    settings: Settings,
    channels: Mapping[str, Channel] | None = None,
) -> NotificationStatus:
    """One delivery attempt: claim, send, settle — each database step its own short unit of
    work, so no transaction (on SQLite: no write lock on the whole database) is held while
    an SMTP server or a webhook takes its time to answer.

    Returns `sent`, `failed` (permanently, or after MAX_ATTEMPTS), or `pending` when another
    attempt is due later or another worker holds the claim. A notification no longer
    pending is left alone, so a redelivered task never sends twice."""
    with session_scope(session_factory) as session:
        claimed = _claim(session, notification_id=notification_id, now=now)
        if isinstance(claimed, NotificationStatus):
            return claimed
        # a copy that outlives the session; the network call runs outside any transaction
        message = Notification.model_validate(claimed.model_dump())
    channel = (channels or default_channels()).get(message.channel)
    error: DeliveryError | None = None
    try:
        if channel is None:
            raise DeliveryError(f"no channel delivers {message.channel!r}", permanent=True)
        channel.send(message, settings=settings, now=now)
    except DeliveryError as exc:
        error = exc
    with session_scope(session_factory) as session:
        return _settle(session, notification_id=notification_id, now=now, error=error)


def _claim(
    session: Session, *, notification_id: int, now: datetime
) -> Notification | NotificationStatus:
    """Take the notification for one attempt with a conditional update; a claim older than
    CLAIM_TTL belonged to a worker that died mid-send and may be taken over."""
    # An UPDATE's result is a CursorResult, which has the rowcount; Session.execute is
    # typed for every statement.
    taken = cast(
        CursorResult[Any],
        session.execute(
            update(Notification)
            .where(
                col(Notification.id) == notification_id,
                col(Notification.status) == NotificationStatus.pending,
                or_(
                    col(Notification.claimed_at).is_(None),
                    col(Notification.claimed_at) < now - CLAIM_TTL,
                ),
            )
            .values(claimed_at=now, attempts=Notification.attempts + 1)
        ),
    )
    notification = session.scalars(
        select(Notification)
        .where(col(Notification.id) == notification_id)
        .execution_options(populate_existing=True)
    ).first()
    if notification is None:
        raise NotFound(
            f"notification {notification_id} does not exist", notification_id=notification_id
        )
    if taken.rowcount == 0:
        return notification.status
    return notification


def _settle(
    session: Session, *, notification_id: int, now: datetime, error: DeliveryError | None
) -> NotificationStatus:
    notification = existing(session, Notification, notification_id, populate_existing=True)
    notification.claimed_at = None
    if error is None:
        notification.status = NotificationStatus.sent
        notification.sent_at = now
    else:
        notification.last_error = str(error)[:1000]
        if error.permanent or notification.attempts >= MAX_ATTEMPTS:
            notification.status = NotificationStatus.failed
    session.add(notification)
    return notification.status


def unqueued(session: Session, *, now: datetime, limit: int = 500) -> list[int]:
    """Deliverable notifications that no task will deliver, oldest first: those no task
    ever picked up (a broker outage at commit time) and those whose claim expired (a worker
    killed mid-delivery, whose message the broker may have lost). An outage or a crash
    delays an e-mail or webhook but never loses it; `deliver`'s claim makes a second copy
    of a message that is still queued harmless."""
    # An id is a primary key, never NULL, though SQLModel types it as optional.
    ids = cast("Select[int]", select(col(Notification.id)))
    never_queued = and_(
        col(Notification.attempts) == 0,
        col(Notification.created_at) <= now - UNQUEUED_AFTER,
    )
    abandoned = and_(
        col(Notification.claimed_at).is_not(None),
        col(Notification.claimed_at) < now - CLAIM_TTL,
    )
    return list(
        session.scalars(
            ids.where(
                col(Notification.status) == NotificationStatus.pending,
                col(Notification.channel) != "inapp",
                or_(never_queued, abandoned),
            )
            .order_by(col(Notification.id))
            .limit(limit)
        )
    )
