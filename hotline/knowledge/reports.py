"""What the knowledge pages read: the list of articles a person may see, an article shown as
one of its versions with the difference from the version before, the "did not answer"
feedback a unit has to work through, and the dashboard (articles used, articles going
stale, feedback open, and the direct answers given without an article — the articles that
are missing).

Visibility follows the review flow (hotline/knowledge/lifecycle.py): everyone reads the
articles in service; drafts and articles in review are seen by centre editors and by the
owning unit only; a unit's handler sees the feedback and the dashboard of its own articles."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, exists, func, or_, select, update
from sqlmodel import Session, col

from accounts import audit
from accounts.models import Role, User
from core.errors import Conflict, Forbidden, NotFound
from dispatch.models import Unit
from hotline.knowledge import service
from hotline.knowledge.lifecycle import CENTRE_EDITORS, may_write, sees_unpublished
from hotline.knowledge.models import (
    CONTENT_FIELDS,
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeArticleVersion,
    KnowledgeUse,
    UseKind,
)
from tickets.models import Ticket, TicketEvent

SOON = timedelta(days=14)  # the dashboard's "going stale" horizon
LIST_LIMIT = 200

A = KnowledgeArticle
V = KnowledgeArticleVersion


def in_service() -> ColumnElement[bool]:
    """An article whose published version is in service (an edit in progress keeps it)."""
    return and_(col(A.published_version).is_not(None), col(A.status) != ArticleStatus.retired)


def _scope(user: User) -> ColumnElement[bool] | None:
    """The articles `user` may see beyond those in service: None for centre editors (all)."""
    if user.role in CENTRE_EDITORS:
        return None
    if user.role == Role.handler and user.unit_id is not None:
        return or_(in_service(), col(A.owner_unit_id) == user.unit_id)
    return in_service()


def unit_scope(user: User) -> int | None:
    """The unit whose articles a handler's feedback and dashboard cover; None: every unit
    (the centre)."""
    if user.role in CENTRE_EDITORS:
        return None
    if user.role == Role.handler and user.unit_id is not None:
        return user.unit_id
    raise Forbidden("only the centre and the units work on the knowledge base")


# ---------------------------------------------------------------- the list


@dataclass(frozen=True)
class ArticleRow:
    id: int
    number: str
    title: str
    category_code: str
    owner_unit_id: int
    owner: str
    status: ArticleStatus
    version: int  # the version shown (the head for writers, the one in service for readers)
    published_version: int | None
    review_due: datetime | None
    valid_until: datetime | None
    updated_at: datetime


def list_articles(
    session: Session,
    *,
    user: User,
    category: str | None = None,
    owner_unit_id: int | None = None,
    status: ArticleStatus | None = None,
    ids: Collection[int] | None = None,
    limit: int = LIST_LIMIT,
) -> list[ArticleRow]:
    """The articles `user` may see, most recently changed first. Retired ones only when
    asked for by status; a reader who may not see unpublished work sees the title and dates
    of the version in service."""
    stmt = select(A, col(Unit.name)).join(Unit, col(Unit.id) == col(A.owner_unit_id))
    scope = _scope(user)
    if scope is not None:
        stmt = stmt.where(scope)
    if category:
        stmt = stmt.where(col(A.category_code).startswith(category, autoescape=True))
    if owner_unit_id is not None:
        stmt = stmt.where(col(A.owner_unit_id) == owner_unit_id)
    if ids is not None:
        stmt = stmt.where(col(A.id).in_(list(ids)))
    if status is not None:
        stmt = stmt.where(col(A.status) == status)
    else:
        stmt = stmt.where(col(A.status) != ArticleStatus.retired)
    stmt = stmt.order_by(col(A.updated_at).desc(), col(A.id).desc()).limit(limit)
    rows = session.execute(stmt).all()
    shown: dict[int, Any] = {}
    readers_only = [
        (a.id, a.published_version)
        for a, _ in rows
        if not sees_unpublished(user, a.owner_unit_id) and a.published_version != a.version
    ]
    if readers_only:
        pairs = or_(
            *(
                and_(col(V.article_id) == aid, col(V.version) == version)
                for aid, version in readers_only
            )
        )
        shown = {v.article_id: v for v in session.scalars(select(V).where(pairs))}
    result = []
    for article, owner in rows:
        source: Any = shown.get(article.id, article)
        result.append(
            ArticleRow(
                id=cast(int, article.id),
                number=article.number,
                title=source.title,
                category_code=source.category_code,
                owner_unit_id=article.owner_unit_id,
                owner=owner,
                status=article.status,
                version=source.version,
                published_version=article.published_version,
                review_due=source.review_due,
                valid_until=source.valid_until,
                updated_at=article.updated_at,
            )
        )
    return result


def excerpts(
    session: Session, *, versions: Collection[tuple[int, int]], length: int = 140
) -> dict[int, str]:
    """The opening words of each (article, version)'s answer, as plain text, by article."""
    if not versions:
        return {}
    pairs = or_(*(and_(col(V.article_id) == a, col(V.version) == v) for a, v in versions))
    found = {}
    for article_id, body in session.execute(select(col(V.article_id), col(V.body)).where(pairs)):
        text = _unmarked(body)
        found[article_id] = text if len(text) <= length else text[:length].rstrip() + "…"
    return found


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LIST_MARK = re.compile(r"(?m)^\s*(?:[-+*]|\d+\.)\s+")
_EMPHASIS = re.compile(r"[*_`#>|~]+")


def _unmarked(markdown: str) -> str:
    """The body as a reader sees it, in one line: Markdown's marks dropped without leaving
    gaps between Chinese characters, link texts kept."""
    text = _EMPHASIS.sub("", _LIST_MARK.sub("", _LINK.sub(r"\1", markdown)))
    return " ".join(text.split())


def review_queue(session: Session, *, user: User) -> list[ArticleRow]:
    """Articles waiting for the centre's review, the longest waiting first."""
    rows = list_articles(session, user=user, status=ArticleStatus.in_review)
    return sorted(rows, key=lambda r: (r.updated_at, r.id))


def review_count(session: Session) -> int:
    stmt = select(func.count()).select_from(A).where(col(A.status) == ArticleStatus.in_review)
    return int(session.scalar(stmt) or 0)


# ---------------------------------------------------------------- one article


@dataclass(frozen=True)
class FieldChange:
    name: str
    before: Any
    after: Any


@dataclass(frozen=True)
class VersionDiff:
    """A version against the one before it: the fields that changed, and the body as a
    line diff (each line prefixed "+", "-", " " or "@")."""

    version: int
    previous: int | None
    fields: list[FieldChange]
    body: list[str]


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    saved_at: datetime
    saved_by: str
    changed: list[str]
    note: str | None


@dataclass
class ArticleView:
    article: KnowledgeArticle
    shown: KnowledgeArticleVersion  # the version the page shows
    owner: str
    history: list[HistoryEntry]
    diff: VersionDiff | None
    may_write: bool
    sees_unpublished: bool
    names: dict[int, str] = field(default_factory=dict)  # user ids → display names


def article_view(
    session: Session, *, user: User, article_id: int, version: int | None = None
) -> ArticleView:
    """The article as `user` may see it: the chosen version, else the head (writers) or the
    version in service (readers); its history; the chosen version's difference from the
    one before."""
    article = service.get_article(session, user=user, article_id=article_id)
    versions = service.article_history(session, user=user, article_id=article_id)
    by_number = {v.version: v for v in versions}
    writer = sees_unpublished(user, article.owner_unit_id)
    default = article.version if writer else (article.published_version or article.version)
    chosen = version if version is not None else default
    if chosen not in by_number:
        raise NotFound(
            f"knowledge article {article_id} has no version {chosen}",
            article_id=article_id,
            version=chosen,
        )
    shown = by_number[chosen]
    ids = {v.saved_by for v in versions} | {article.published_by or 0, article.updated_by}
    names = dict(
        session.execute(
            select(col(User.id), col(User.display_name)).where(col(User.id).in_(ids))
        ).all()
    )
    unit = session.get(Unit, article.owner_unit_id)
    history = [
        HistoryEntry(
            version=v.version,
            saved_at=v.saved_at,
            saved_by=names.get(v.saved_by, str(v.saved_by)),
            changed=list(v.changed),
            note=v.note,
        )
        for v in reversed(versions)
    ]
    previous = by_number.get(chosen - 1)
    return ArticleView(
        article=article,
        shown=shown,
        owner=unit.name if unit else str(article.owner_unit_id),
        history=history,
        diff=diff_versions(previous, shown),
        may_write=may_write(user, article.owner_unit_id)
        and article.status in (ArticleStatus.draft, ArticleStatus.published),
        sees_unpublished=writer,
        names=names,
    )


def diff_versions(
    previous: KnowledgeArticleVersion | None, current: KnowledgeArticleVersion
) -> VersionDiff | None:
    """`current` against `previous` (None for the first version: nothing to compare)."""
    if previous is None:
        return None
    fields = [
        FieldChange(name, getattr(previous, name), getattr(current, name))
        for name in CONTENT_FIELDS
        if name != "body" and getattr(previous, name) != getattr(current, name)
    ]
    body = [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            previous.body.splitlines(),
            current.body.splitlines(),
            lineterm="",
            n=2,
        )
    ][2:]  # without the ---/+++ file header
    return VersionDiff(version=current.version, previous=previous.version, fields=fields, body=body)


# ---------------------------------------------------------------- feedback


@dataclass(frozen=True)
class FeedbackRow:
    id: int
    article_id: int
    number: str
    title: str
    owner: str
    version: int
    ticket_id: int | None
    ticket_number: str | None
    operator: str
    at: datetime
    note: str | None
    handled_at: datetime | None
    handled_by: str | None


def feedback(
    session: Session, *, user: User, handled: bool = False, limit: int = LIST_LIMIT
) -> list[FeedbackRow]:
    """ "Did not answer" feedback on the articles of the user's unit (the centre: every
    unit's), open ones by default, newest first."""
    unit_id = unit_scope(user)
    U = cast(Any, User).__table__.alias("operator")
    H = cast(Any, User).__table__.alias("handler")
    stmt = (
        select(
            KnowledgeUse,
            col(A.number),
            col(A.title),
            col(Unit.name),
            col(Ticket.number),
            U.c.display_name,
            H.c.display_name,
        )
        .join(A, col(A.id) == col(KnowledgeUse.article_id))
        .join(Unit, col(Unit.id) == col(A.owner_unit_id))
        .outerjoin(Ticket, col(Ticket.id) == col(KnowledgeUse.ticket_id))
        .join(U, U.c.id == col(KnowledgeUse.user_id))
        .outerjoin(H, H.c.id == col(KnowledgeUse.handled_by))
        .where(col(KnowledgeUse.kind) == UseKind.not_answered)
    )
    if unit_id is not None:
        stmt = stmt.where(col(A.owner_unit_id) == unit_id)
    handled_at = col(KnowledgeUse.handled_at)
    stmt = stmt.where(handled_at.is_not(None) if handled else handled_at.is_(None))
    stmt = stmt.order_by(col(KnowledgeUse.at).desc(), col(KnowledgeUse.id).desc()).limit(limit)
    return [
        FeedbackRow(
            id=cast(int, use.id),
            article_id=use.article_id,
            number=number,
            title=title,
            owner=owner,
            version=use.version,
            ticket_id=use.ticket_id,
            ticket_number=ticket_number,
            operator=operator,
            at=use.at,
            note=use.note,
            handled_at=use.handled_at,
            handled_by=handler,
        )
        for use, number, title, owner, ticket_number, operator, handler in session.execute(stmt)
    ]


def open_feedback_count(session: Session, *, user: User) -> int:
    try:
        unit_id = unit_scope(user)
    except Forbidden:
        return 0
    stmt = (
        select(func.count())
        .select_from(KnowledgeUse)
        .join(A, col(A.id) == col(KnowledgeUse.article_id))
        .where(
            col(KnowledgeUse.kind) == UseKind.not_answered,
            col(KnowledgeUse.handled_at).is_(None),
        )
    )
    if unit_id is not None:
        stmt = stmt.where(col(A.owner_unit_id) == unit_id)
    return int(session.scalar(stmt) or 0)


def mark_feedback_handled(
    session: Session, *, user: User, use_id: int, now: datetime
) -> KnowledgeUse:
    """The owning unit (or the centre) has dealt with the feedback. Only the first of two
    people marking it at once records it; the second is told it was handled already."""
    use = session.get(KnowledgeUse, use_id)
    article = session.get(A, use.article_id) if use is not None else None
    if use is None or article is None or use.kind != UseKind.not_answered:
        raise NotFound(f"no feedback {use_id}", use_id=use_id)
    if not may_write(user, article.owner_unit_id):
        # Another unit's feedback does not exist for this user.
        raise NotFound(f"no feedback {use_id}", use_id=use_id)
    result = cast(
        CursorResult[Any],
        session.execute(
            update(KnowledgeUse)
            .where(col(KnowledgeUse.id) == use_id, col(KnowledgeUse.handled_at).is_(None))
            .values(handled_at=now, handled_by=user.id)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        raise Conflict(f"feedback {use_id} was handled already", use_id=use_id)
    session.refresh(use)
    audit.record(
        session,
        at=now,
        action="knowledge.feedback_handled",
        user_id=user.id,
        target=article.number,
        detail={"article_id": article.id, "use_id": use_id, "ticket_id": use.ticket_id},
    )
    return use


# ---------------------------------------------------------------- the dashboard


@dataclass(frozen=True)
class UsedRow:
    article_id: int
    number: str
    title: str
    owner: str
    answers: int


@dataclass(frozen=True)
class StaleRow:
    article_id: int
    number: str
    title: str
    owner: str
    review_due: datetime | None
    valid_until: datetime | None
    review_overdue: bool
    expired: bool


@dataclass
class MissingRow:
    category_code: str | None
    category_name: str | None
    tickets: int
    examples: list[tuple[int, str]]  # (ticket id, number), newest first


@dataclass
class Dashboard:
    since: datetime
    until: datetime
    answered: int  # direct answers citing an article in the period
    used: list[UsedRow]
    stale: list[StaleRow]
    feedback_open: int
    missing: list[MissingRow] | None  # None: not shown to a unit


def dashboard(
    session: Session,
    *,
    user: User,
    since: datetime,
    until: datetime,
    now: datetime,
    top: int = 10,
    soon: timedelta = SOON,
) -> Dashboard:
    """The period (since, until] (the last days up to now): direct answers per article (top
    `top`) and in all, and the direct answers given without any article, by category; at
    `now`: articles in service whose review is due within `soon` (or past) or whose validity
    ends within `soon`, and the feedback still open. A unit sees its own articles and no
    "missing" list (tickets are the centre's, not a unit's)."""
    unit_id = unit_scope(user)
    own = [col(A.owner_unit_id) == unit_id] if unit_id is not None else []
    answers = func.count(col(KnowledgeUse.id)).label("answers")
    used_rows = session.execute(
        select(col(A.id), col(A.number), col(A.title), col(Unit.name), answers)
        .join(KnowledgeUse, col(KnowledgeUse.article_id) == col(A.id))
        .join(Unit, col(Unit.id) == col(A.owner_unit_id))
        .where(
            col(KnowledgeUse.kind) == UseKind.answered,
            col(KnowledgeUse.at) > since,
            col(KnowledgeUse.at) <= until,
            *own,
        )
        .group_by(col(A.id), col(A.number), col(A.title), col(Unit.name))
        .order_by(answers.desc(), col(A.id))
        .limit(top)
    ).all()
    answered = session.scalar(
        select(func.count(col(KnowledgeUse.id)))
        .join(A, col(A.id) == col(KnowledgeUse.article_id))
        .where(
            col(KnowledgeUse.kind) == UseKind.answered,
            col(KnowledgeUse.at) > since,
            col(KnowledgeUse.at) <= until,
            *own,
        )
    )
    horizon = now + soon
    stale_rows = session.execute(
        select(A, col(Unit.name))
        .join(Unit, col(Unit.id) == col(A.owner_unit_id))
        .where(
            in_service(),
            or_(col(A.review_due) <= horizon, col(A.valid_until) <= horizon),
            *own,
        )
        .order_by(func.coalesce(col(A.review_due), col(A.valid_until)), col(A.id))
        .limit(LIST_LIMIT)
    ).all()
    missing = None if unit_id is not None else _missing(session, since=since, until=until)
    return Dashboard(
        since=since,
        until=until,
        answered=int(answered or 0),
        used=[UsedRow(*row) for row in used_rows],
        stale=[
            StaleRow(
                article_id=cast(int, a.id),
                number=a.number,
                title=a.title,
                owner=owner,
                review_due=a.review_due,
                valid_until=a.valid_until,
                review_overdue=a.review_due is not None and a.review_due <= now,
                expired=a.valid_until is not None and a.valid_until <= now,
            )
            for a, owner in stale_rows
        ],
        feedback_open=open_feedback_count(session, user=user),
        missing=missing,
    )


def _missing(
    session: Session, *, since: datetime, until: datetime, examples: int = 5
) -> list[MissingRow]:
    """Tickets answered at intake in the period that cite no article, by category: what
    callers ask that the knowledge base has no answer for."""
    cited = exists().where(
        col(KnowledgeUse.ticket_id) == col(Ticket.id),
        col(KnowledgeUse.kind) == UseKind.answered,
    )
    closed = (
        select(col(TicketEvent.ticket_id))
        .where(
            col(TicketEvent.action) == "close_at_intake",
            col(TicketEvent.at) > since,
            col(TicketEvent.at) <= until,
        )
        .distinct()
    )
    rows = session.execute(
        select(
            col(Ticket.id), col(Ticket.number), col(Ticket.category_code), col(Ticket.category_name)
        )
        .where(col(Ticket.id).in_(closed), ~cited)
        .order_by(col(Ticket.id).desc())
    ).all()
    groups: dict[str | None, MissingRow] = {}
    for ticket_id, number, code, name in rows:
        group = groups.get(code)
        if group is None:
            group = groups[code] = MissingRow(code, name, 0, [])
        group.tickets += 1
        if len(group.examples) < examples:
            group.examples.append((ticket_id, number))
    return sorted(groups.values(), key=lambda g: (-g.tickets, g.category_code or ""))
