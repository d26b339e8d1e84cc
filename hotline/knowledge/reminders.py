"""Reminders to the units that answer for articles: an article in service whose review is
due within `days` (or past), or whose validity ends within `days`, is brought to the owning
unit's people — in the app, and by e-mail where they have an address and mail is set up.

One reminder per article, kind and due date, ever: the sweep first inserts the
`KnowledgeReminder` row (INSERT … ON CONFLICT DO NOTHING on its unique constraint) and
writes the notifications only when the row was its own, in the same transaction. A rerun,
or a second worker sweeping at the same moment, finds the row and sends nothing; a new
review date (the article was reviewed and given the next one) is a new reminder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import after_commit, saved_id, session_scope
from core.settings import Settings, get_settings
from dispatch.models import Notification, NotificationStatus, Unit
from hotline.knowledge.models import ArticleStatus, KnowledgeArticle, KnowledgeReminder
from hotline.knowledge.models import ReminderKind as Kind

log = logging.getLogger(__name__)

DAYS = 7
Enqueue = Callable[[int], Any]


@dataclass(frozen=True)
class Due:
    article_id: int
    kind: Kind
    due: datetime


@dataclass(frozen=True)
class SweepResult:
    reminders: int  # reminders sent by this sweep
    notifications: int  # notifications written for them
    failed: int = 0  # articles skipped after an error (logged; the next sweep retries)


def due_reminders(session: Session, *, now: datetime, days: int = DAYS) -> list[Due]:
    """The reminders due at `now` for articles in service, reminded or not (the insert
    decides). Range conditions on the indexed date columns."""
    horizon = now + timedelta(days=days)
    A = KnowledgeArticle
    rows = session.execute(
        select(col(A.id), col(A.review_due), col(A.valid_until))
        .where(
            col(A.published_version).is_not(None),
            col(A.status) != ArticleStatus.retired,
            or_(
                col(A.review_due) <= horizon,
                and_(col(A.valid_until) > now, col(A.valid_until) <= horizon),
            ),
        )
        .order_by(col(A.id))
    ).all()
    found: list[Due] = []
    for article_id, review_due, valid_until in rows:
        if review_due is not None and review_due <= horizon:
            found.append(Due(article_id, Kind.review, review_due))
        if valid_until is not None and now < valid_until <= horizon:
            found.append(Due(article_id, Kind.expiry, valid_until))
    return found


def sweep(
    session_factory: Callable[[], Session],
    *,
    now: datetime,
    days: int = DAYS,
    enqueue: Enqueue | None = None,
    settings: Settings | None = None,
) -> SweepResult:
    """Send the reminders due at `now` that were never sent, each in its own transaction;
    the e-mails are queued (`enqueue(notification_id)`) after commit."""
    settings = settings or get_settings()
    with session_scope(session_factory) as session:
        due = due_reminders(session, now=now, days=days)
    sent = written = failed = 0
    for item in due:
        try:
            with session_scope(session_factory) as session:
                count = _remind(session, item, now=now, settings=settings, enqueue=enqueue)
        except Exception:
            log.exception("knowledge reminder %s failed; the next sweep retries it", item)
            failed += 1
            continue
        if count is not None:
            sent += 1
            written += count
    return SweepResult(reminders=sent, notifications=written, failed=failed)


def _claim(session: Session, item: Due, *, now: datetime) -> bool:
    """Insert the reminder's row unless it exists: True if this transaction owns it."""
    values = {"article_id": item.article_id, "kind": item.kind, "due": item.due, "sent_at": now}
    table = cast(Any, KnowledgeReminder).__table__
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id)
    return session.execute(stmt).first() is not None


def _remind(
    session: Session,
    item: Due,
    *,
    now: datetime,
    settings: Settings,
    enqueue: Enqueue | None,
) -> int | None:
    """The notifications of one reminder (how many), or None when it was sent before."""
    if not _claim(session, item, now=now):
        return None
    article = session.get(KnowledgeArticle, item.article_id)
    assert article is not None
    unit = session.get(Unit, article.owner_unit_id)
    people = session.scalars(
        select(User)
        .where(
            col(User.unit_id) == article.owner_unit_id,
            col(User.role) == Role.handler,
            col(User.active).is_(True),
        )
        .order_by(col(User.id))
    ).all()
    subject, body = compose(
        item,
        number=article.number,
        title=article.title,
        unit=unit.name if unit else "",
        settings=settings,
    )
    rows: list[Notification] = []
    outbox: list[Notification] = []
    for person in people:
        rows.append(
            Notification(
                user_id=person.id,
                channel="inapp",
                subject=subject,
                body=body,
                created_at=now,
                status=NotificationStatus.sent,
                sent_at=now,
            )
        )
        if person.email and settings.smtp.host:
            outbox.append(
                Notification(
                    user_id=person.id,
                    channel="email",
                    address=person.email,
                    subject=subject,
                    body=body,
                    created_at=now,
                )
            )
    session.add_all(rows + outbox)
    session.flush()
    if enqueue is not None and outbox:
        ids = [saved_id(n) for n in outbox]
        after_commit(session, lambda: _enqueue_all(enqueue, ids))
    return len(rows) + len(outbox)


def compose(
    item: Due, *, number: str, title: str, unit: str, settings: Settings
) -> tuple[str, str]:
    """The subject and the bilingual message, dates in the centre's time zone."""
    when = item.due.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
    if item.kind is Kind.review:
        subject = f"【知识库复审】{number} {title}"
        zh = f"知识库文章 {number}《{title}》（{unit}）应于 {when} 前复审，请核对内容并更新或确认。"
        en = f"Knowledge article {number} ({unit}) is due for review by {when}."
    else:
        subject = f"【知识库到期】{number} {title}"
        zh = f"知识库文章 {number}《{title}》（{unit}）将于 {when} 失效，请及时更新或下线。"
        en = f"Knowledge article {number} ({unit}) stops being valid at {when}."
    return subject[:300], f"{zh}\n{en}"


def _enqueue_all(enqueue: Enqueue, notification_ids: list[int]) -> None:
    # The reminder is committed by now; a broker hiccup leaves the e-mail pending, and the
    # requeue sweep (dispatch.notify.unqueued) sends it later.
    for notification_id in notification_ids:
        try:
            enqueue(notification_id)
        except Exception:
            log.exception("could not enqueue notification %s; it stays pending", notification_id)
