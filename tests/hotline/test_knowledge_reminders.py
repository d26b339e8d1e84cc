"""The knowledge reminder sweep: an article in service whose review is due within a week (or
past), or whose validity ends within a week, is brought to its unit's people once — in the
app, and by e-mail where they have an address — however often the sweep runs, and when two
sweeps run at once. The clock is injected; both backends, on databases that really commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings, SmtpSettings
from dispatch.models import Notification, NotificationStatus
from hotline.knowledge import reminders, service
from hotline.knowledge.models import (
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeReminder,
    ReminderKind,
)
from hotline.tables import metadata
from tests.factories import build_world

MAIL = Settings(environment="test", smtp=SmtpSettings(host="127.0.0.1"))
NO_MAIL = Settings(environment="test")


@pytest.fixture
def factory(fresh_db_url) -> Iterator:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def world(factory, clock):
    with session_scope(factory) as session:
        built = build_world(session, clock.now())
        return {
            "units": {code: u.id for code, u in built.units.items()},
            "supervisor": built.staff["supervisor"].id,
            "handlers": {code: u.id for code, u in built.handlers.items()},
            "heads": {code: u.id for code, u in built.heads.items()},
        }


def _article(factory, world, clock, *, unit="WATER", publish=True, **fields) -> int:
    from accounts.models import User

    with session_scope(factory) as session:
        handler = session.get(User, world["handlers"][unit])
        supervisor = session.get(User, world["supervisor"])
        assert handler is not None
        article = service.create_article(
            session,
            user=handler,
            data=KnowledgeArticleCreate(
                title=fields.pop("title", "供水中断时的临时供水安排"),
                body="因管网抢修造成供水中断的，应提前24小时公告。",
                category_code="0203",
                owner_unit_id=world["units"][unit],
                **fields,
            ),
            now=clock.now(),
        )
        assert handler is not None and supervisor is not None and article.id is not None
        if publish:
            service.submit_for_review(session, user=handler, article_id=article.id, now=clock.now())
            service.approve_article(
                session, user=supervisor, article_id=article.id, now=clock.now()
            )
        return article.id


def _notifications(factory) -> list[tuple[int | None, str, str | None, str]]:
    with session_scope(factory) as session:
        rows = session.scalars(select(Notification).order_by(col(Notification.id))).all()
        return [(n.user_id, n.channel, n.address, n.status.value) for n in rows]


def _reminders(factory) -> list[tuple[int, str]]:
    with session_scope(factory) as session:
        rows = session.scalars(select(KnowledgeReminder).order_by(col(KnowledgeReminder.id)))
        return [(r.article_id, r.kind.value) for r in rows]


def test_a_review_due_within_a_week_reminds_the_unit_once(factory, world, clock):
    now = clock.now()
    due = _article(factory, world, clock, review_due=now + timedelta(days=6))
    _article(factory, world, clock, title="水质", review_due=now + timedelta(days=9))
    queued: list[int] = []

    first = reminders.sweep(factory, now=now, enqueue=queued.append, settings=MAIL)

    assert (first.reminders, first.failed) == (1, 0)
    water = [world["handlers"]["WATER"], world["heads"]["WATER"]]
    sent = _notifications(factory)
    assert sorted((u, ch, st) for u, ch, _, st in sent) == sorted(
        [(u, "inapp", "sent") for u in water] + [(u, "email", "pending") for u in water]
    )
    assert first.notifications == 4
    assert {a for u, ch, a, _ in sent if ch == "email"} == {
        "water@units.example.org",
        "water-head@units.example.org",
    }
    assert len(queued) == 2  # the e-mails, queued after commit
    assert _reminders(factory) == [(due, "review")]

    # An hour later, and the day after: nothing new.
    for hours in (1, 24):
        clock.advance(timedelta(hours=hours))
        again = reminders.sweep(factory, now=clock.now(), enqueue=queued.append, settings=MAIL)
        assert (again.reminders, again.notifications) == (0, 0)
    assert len(_notifications(factory)) == 4 and len(queued) == 2


def test_a_past_review_and_a_near_expiry_are_two_reminders(factory, world, clock):
    now = clock.now()
    article = _article(
        factory,
        world,
        clock,
        unit="HOUSING",
        review_due=now - timedelta(days=30),
        valid_until=now + timedelta(days=2),
    )

    result = reminders.sweep(factory, now=now, settings=NO_MAIL)

    assert result.reminders == 2
    assert sorted(_reminders(factory)) == [(article, "expiry"), (article, "review")]
    # Without mail set up the reminder is in the app only.
    assert {ch for _, ch, _, _ in _notifications(factory)} == {"inapp"}
    with session_scope(factory) as session:
        subjects = set(session.scalars(select(col(Notification.subject))))
    assert any(s.startswith("【知识库复审】") for s in subjects)
    assert any(s.startswith("【知识库到期】") for s in subjects)


def test_a_new_review_date_is_a_new_reminder(factory, world, clock):
    from accounts.models import User

    now = clock.now()
    article = _article(factory, world, clock, review_due=now + timedelta(days=3))
    assert reminders.sweep(factory, now=now, settings=NO_MAIL).reminders == 1

    # Reviewed: the unit sets the next review date; when that one nears, it is reminded again.
    with session_scope(factory) as session:
        handler = session.get(User, world["handlers"]["WATER"])
        service.edit_article(
            session,
            user=handler,
            article_id=article,
            expected_version=1,
            changes=KnowledgeArticleUpdate(review_due=now + timedelta(days=90)),
            now=now,
        )
        service.submit_for_review(session, user=handler, article_id=article, now=now)
        service.approve_article(
            session, user=session.get(User, world["supervisor"]), article_id=article, now=now
        )
    assert reminders.sweep(factory, now=now, settings=NO_MAIL).reminders == 0

    clock.advance(timedelta(days=84))
    assert reminders.sweep(factory, now=clock.now(), settings=NO_MAIL).reminders == 1
    assert [k for _, k in _reminders(factory)] == ["review", "review"]


def test_drafts_retired_and_expired_articles_are_not_reminded(factory, world, clock):
    from accounts.models import User

    now = clock.now()
    _article(factory, world, clock, publish=False, review_due=now)
    retired = _article(factory, world, clock, review_due=now)
    with session_scope(factory) as session:
        service.retire_article(
            session,
            user=session.get(User, world["supervisor"]),
            article_id=retired,
            reason="政策废止",
            now=now,
        )
    _article(
        factory,
        world,
        clock,
        valid_from=now - timedelta(days=30),
        valid_until=now - timedelta(days=1),
    )

    assert reminders.sweep(factory, now=now, settings=NO_MAIL).reminders == 0
    assert _notifications(factory) == []


def test_two_sweeps_at_once_send_each_reminder_once(factory, world, clock):
    now = clock.now()
    for n in range(4):
        _article(factory, world, clock, title=f"文章{n}", review_due=now + timedelta(days=n))
    start = threading.Barrier(2)
    results: list[reminders.SweepResult] = []

    def run() -> None:
        start.wait()
        results.append(reminders.sweep(factory, now=now, settings=MAIL))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sum(r.reminders for r in results) == 4
    assert sum(r.failed for r in results) == 0
    with session_scope(factory) as session:
        count = session.scalar(select(func.count()).select_from(Notification))
        kinds = session.scalars(select(col(KnowledgeReminder.kind))).all()
    assert count == 4 * 4  # 2 people × (in-app + e-mail) per reminder
    assert kinds == [ReminderKind.review] * 4
    assert {st for *_, st in _notifications(factory)} == {
        NotificationStatus.sent.value,
        NotificationStatus.pending.value,
    }


def test_the_hourly_task_sweeps_with_the_runtime_clock_and_replays_a_moment(factory, world, clock):
    from core import runtime
    from hotline import tasks
    from hotline.worker import BEAT_SCHEDULE

    now = clock.now()
    _article(factory, world, clock, review_due=now + timedelta(days=10))
    runtime.set_runtime(settings=NO_MAIL, session_factory=factory, clock=clock)
    try:
        assert tasks.remind_knowledge_reviews.run() == {
            "reminders": 0,
            "notifications": 0,
            "failed": 0,
        }
        later = (now + timedelta(days=4)).isoformat()
        assert tasks.remind_knowledge_reviews.run(now=later)["reminders"] == 1
        assert tasks.remind_knowledge_reviews.run(now=later)["reminders"] == 0
    finally:
        runtime.reset_runtime()
    entry = BEAT_SCHEDULE["knowledge-reminders"]
    assert entry["task"] == tasks.remind_knowledge_reviews.name == "knowledge.remind_reviews"
