"""Knowledge base operations: write a draft, edit (a new version), submit for review,
approve (publish), send back with a reason, retire; read an article and its history.

Every saved content is a new immutable `KnowledgeArticleVersion` (who, when, which fields
changed, why); every move is also an audit entry (accounts.audit). Publishing and retiring
update the search index in the same transaction, so search never sees a half-done change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select
from sqlmodel import Session, col

from accounts import audit
from accounts.models import User
from core.errors import Conflict, InvalidInput, NotFound
from dispatch.models import Unit
from hotline.knowledge.lifecycle import (
    Action,
    check_centre,
    check_write,
    next_status,
    sees_unpublished,
)
from hotline.knowledge.models import (
    CONTENT_FIELDS,
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeArticleVersion,
    check_content,
)
from hotline.knowledge.search import KnowledgeIndex, make_index


def create_article(
    session: Session,
    *,
    user: User,
    data: KnowledgeArticleCreate,
    now: datetime,
    note: str | None = None,
) -> KnowledgeArticle:
    """A new draft, version 1."""
    check_write(user, data.owner_unit_id)
    _check_unit(session, data.owner_unit_id)
    content = {name: getattr(data, name) for name in CONTENT_FIELDS}
    article = KnowledgeArticle.model_validate(
        content,
        update={
            # The number derives from the id, which the database gives on insert.
            "number": uuid4().hex,
            "status": ArticleStatus.draft,
            "version": 1,
            "created_at": now,
            "created_by": _id(user),
            "updated_at": now,
            "updated_by": _id(user),
        },
    )
    session.add(article)
    session.flush()
    assert article.id is not None
    article.number = f"KB{article.id:06d}"
    changed = [name for name in CONTENT_FIELDS if content[name] is not None]
    _save_version(session, article, user=user, now=now, changed=changed, note=note)
    _audit(session, user, "create", article, now, changed=changed)
    return article


def edit_article(
    session: Session,
    *,
    user: User,
    article_id: int,
    expected_version: int,
    changes: KnowledgeArticleUpdate,
    now: datetime,
    note: str | None = None,
    also_changed: Sequence[str] = (),
) -> KnowledgeArticle:
    """A new version of a draft or published article (the published one stays in service
    until this one is approved). `expected_version` is the version the editor started from:
    a different head means someone saved in between, and the edit is refused. `also_changed`
    names what changed beside the fields (the files, hotline/knowledge/attachments.py)."""
    article = _locked(session, user=user, article_id=article_id)
    check_write(user, article.owner_unit_id)
    status = next_status(Action.edit, article.status)
    if article.version != expected_version:
        raise Conflict(
            f"{article.number} is at version {article.version}, not {expected_version}",
            version=article.version,
        )
    given = changes.model_dump(exclude_unset=True)
    unknown = set(given) - set(CONTENT_FIELDS)
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)[0]}")
    for name in ("title", "body", "category_code", "owner_unit_id"):
        if name in given and given[name] is None:
            raise InvalidInput(f"{name} cannot be removed")
    content = {name: getattr(article, name) for name in CONTENT_FIELDS} | given
    try:
        check_content(content)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if content["owner_unit_id"] != article.owner_unit_id:
        check_write(user, content["owner_unit_id"])  # a unit cannot give an article away
        _check_unit(session, content["owner_unit_id"])
    fields = [name for name in CONTENT_FIELDS if content[name] != getattr(article, name)]
    changed = fields + list(also_changed)
    if not changed:
        raise InvalidInput("nothing changed")
    for name in fields:
        setattr(article, name, content[name])
    article.version += 1
    article.status = status
    article.updated_at, article.updated_by = now, _id(user)
    _save_version(session, article, user=user, now=now, changed=changed, note=note)
    _audit(session, user, "edit", article, now, changed=changed)
    return article


def submit_for_review(
    session: Session, *, user: User, article_id: int, now: datetime
) -> KnowledgeArticle:
    article = _locked(session, user=user, article_id=article_id)
    check_write(user, article.owner_unit_id)
    article.status = next_status(Action.submit, article.status)
    article.review_note = None
    article.updated_at, article.updated_by = now, _id(user)
    _audit(session, user, "submit", article, now)
    return article


def approve_article(
    session: Session,
    *,
    user: User,
    article_id: int,
    now: datetime,
    index: KnowledgeIndex | None = None,
) -> KnowledgeArticle:
    """Publish the head version: it replaces the version in service and is searchable."""
    article = _locked(session, user=user, article_id=article_id)
    check_centre(user, Action.approve)
    article.status = next_status(Action.approve, article.status)
    article.published_version = article.version
    article.published_at, article.published_by = now, _id(user)
    article.updated_at, article.updated_by = now, _id(user)
    session.flush()
    (index or make_index(session)).index(article)
    _audit(session, user, "approve", article, now)
    return article


def send_back(
    session: Session, *, user: User, article_id: int, reason: str, now: datetime
) -> KnowledgeArticle:
    """Return an article in review to its writers with the reason; any version in service
    stays in service."""
    reason = _reason(reason, "send an article back")
    article = _locked(session, user=user, article_id=article_id)
    check_centre(user, Action.send_back)
    article.status = next_status(Action.send_back, article.status)
    article.review_note = reason[:1000]
    article.updated_at, article.updated_by = now, _id(user)
    _audit(session, user, "send_back", article, now, reason=reason)
    return article


def retire_article(
    session: Session,
    *,
    user: User,
    article_id: int,
    reason: str,
    now: datetime,
    index: KnowledgeIndex | None = None,
) -> KnowledgeArticle:
    """Withdraw the article: it leaves search at once and cannot be edited again."""
    reason = _reason(reason, "retire an article")
    article = _locked(session, user=user, article_id=article_id)
    check_centre(user, Action.retire)
    article.status = next_status(Action.retire, article.status)
    article.published_version = None
    article.review_note = reason[:1000]
    article.updated_at, article.updated_by = now, _id(user)
    session.flush()
    assert article.id is not None
    (index or make_index(session)).remove(article.id)
    _audit(session, user, "retire", article, now, reason=reason)
    return article


def get_article(session: Session, *, user: User, article_id: int) -> KnowledgeArticle:
    """The article if `user` may see it: one in service, or any the user may write. Others
    are reported missing, so another unit's drafts do not leak."""
    article = session.get(KnowledgeArticle, article_id)
    if article is None or not _visible(user, article):
        raise NotFound(f"knowledge article {article_id} does not exist", article_id=article_id)
    return article


def article_history(
    session: Session, *, user: User, article_id: int
) -> list[KnowledgeArticleVersion]:
    """Every saved version, oldest first. A reader who may not see drafts sees the versions
    up to the one in service."""
    article = get_article(session, user=user, article_id=article_id)
    stmt = (
        select(KnowledgeArticleVersion)
        .where(col(KnowledgeArticleVersion.article_id) == article_id)
        .order_by(col(KnowledgeArticleVersion.version))
    )
    if not sees_unpublished(user, article.owner_unit_id):
        stmt = stmt.where(col(KnowledgeArticleVersion.version) <= (article.published_version or 0))
    return list(session.scalars(stmt))


def article_version(
    session: Session, *, user: User, article_id: int, version: int
) -> KnowledgeArticleVersion:
    """One saved version, as it was (what a direct answer cites)."""
    for saved in article_history(session, user=user, article_id=article_id):
        if saved.version == version:
            return saved
    raise NotFound(
        f"knowledge article {article_id} has no version {version}",
        article_id=article_id,
        version=version,
    )


def _reason(reason: str, to: str) -> str:
    """The reason a send-back or a retirement must give, trimmed; none is a clear error."""
    if not reason.strip():
        raise InvalidInput(f"a reason is required to {to}")
    return reason.strip()


def _visible(user: User, article: KnowledgeArticle) -> bool:
    in_service = article.published_version is not None and article.status != ArticleStatus.retired
    return in_service or sees_unpublished(user, article.owner_unit_id)


def _locked(session: Session, *, user: User, article_id: int) -> KnowledgeArticle:
    article = session.get(KnowledgeArticle, article_id, with_for_update=True)
    if article is None or not _visible(user, article):
        raise NotFound(f"knowledge article {article_id} does not exist", article_id=article_id)
    return article


def _check_unit(session: Session, unit_id: int) -> None:
    unit = session.get(Unit, unit_id)
    if unit is None or not unit.active:
        raise InvalidInput(f"no active unit {unit_id}", owner_unit_id=unit_id)


def _id(user: User) -> int:
    if user.id is None:
        raise ValueError("the user has not been saved")
    return user.id


def _save_version(
    session: Session,
    article: KnowledgeArticle,
    *,
    user: User,
    now: datetime,
    changed: list[str],
    note: str | None,
) -> KnowledgeArticleVersion:
    assert article.id is not None
    saved = KnowledgeArticleVersion.model_validate(
        {name: getattr(article, name) for name in CONTENT_FIELDS},
        update={
            "article_id": article.id,
            "version": article.version,
            "saved_at": now,
            "saved_by": _id(user),
            "changed": changed,
            "note": (note or "").strip()[:1000] or None,
        },
    )
    session.add(saved)
    session.flush()
    return saved


def _audit(
    session: Session,
    user: User,
    action: str,
    article: KnowledgeArticle,
    now: datetime,
    **detail: Any,
) -> None:
    audit.record(
        session,
        at=now,
        action=f"knowledge.{action}",
        user_id=user.id,
        target=article.number,
        detail={"article_id": article.id, "version": article.version, **detail},
    )
