"""The demo city's knowledge base: the articles of data/demo_articles.yaml written by the
owning unit's handler, submitted, and approved by the centre — the same path a real article
takes, so each has its version 1, its audit entries and its search document."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import Role, User
from core import yaml_fast
from dispatch.models import Unit
from hotline.knowledge import service
from hotline.knowledge.models import KnowledgeArticleCreate
from hotline.knowledge.search import make_index

DEMO_ARTICLES = Path(__file__).with_name("data") / "demo_articles.yaml"


def load_demo_articles(
    session: Session, *, approver: User, now: datetime, path: Path = DEMO_ARTICLES
) -> int:
    """Publish the demo articles; returns how many. Each is written by its unit's first
    handler (the centre's approver when the unit has none)."""
    entries = yaml_fast.safe_load(path.read_text("utf-8"))["articles"]
    units = {u.code: u for u in session.scalars(select(Unit))}
    writers: dict[int, User] = {}
    for user in session.scalars(
        select(User).where(col(User.role) == Role.handler).order_by(col(User.id))
    ):
        if user.unit_id is not None:
            writers.setdefault(user.unit_id, user)
    index = make_index(session)
    for entry in entries:
        unit = units[entry["owner"]]
        assert unit.id is not None
        writer = writers.get(unit.id, approver)
        article = service.create_article(
            session,
            user=writer,
            data=KnowledgeArticleCreate(
                title=entry["title"],
                body=entry["body"],
                category_code=entry["category_code"],
                owner_unit_id=unit.id,
                policy_source=entry.get("policy_source"),
                document_number=entry.get("document_number"),
                region=entry.get("region"),
            ),
            now=now,
        )
        assert article.id is not None
        service.submit_for_review(session, user=writer, article_id=article.id, now=now)
        service.approve_article(session, user=approver, article_id=article.id, now=now, index=index)
    return len(entries)
