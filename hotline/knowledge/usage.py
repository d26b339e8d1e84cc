"""The knowledge base at the operator's side: suggestions from what the caller says, the
direct answer (直接办结) that closes a ticket at intake citing the article and the version read
to the caller, and "this did not answer it" — feedback the owning unit finds on its
knowledge feedback page until someone there marks it handled.

Suggestions search the caller's words as they arrive. A long call is many sentences; the
search takes the ticket's summary and demand (what the operator wrote) and the caller's most
recent words, so a suggestion follows where the conversation went."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import User
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import closing
from dispatch.models import Unit
from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeArticleVersion,
    KnowledgeUse,
    UseKind,
)
from hotline.knowledge.search import KnowledgeHit, KnowledgeIndex
from hotline.knowledge.terms import plain_text
from tickets.models import Ticket

# The caller's most recent words searched (characters): about the last three sentences.
RECENT_WORDS = 120
SUGGESTIONS = 5
NOTE_LIMIT = 1000


@dataclass(frozen=True)
class Suggestion:
    """A published article found for the caller's words: what to cite, why it was found,
    and the text the operator reads out."""

    hit: KnowledgeHit
    article: KnowledgeArticleVersion  # the version in service (the one to cite)
    owner: str  # the unit answering for its content
    answer: str  # the body as plain text, for the answer box

    @property
    def article_id(self) -> int:
        return self.hit.article_id

    @property
    def number(self) -> str:
        return self.hit.number

    @property
    def version(self) -> int:
        return self.hit.version


def query_of(
    *, title: str | None, request: str | None, caller_words: Sequence[str], typed: str = ""
) -> str:
    """What to search for: the operator's own words when typed; otherwise the summary and
    demand written so far and the caller's most recent words."""
    if typed.strip():
        return typed.strip()[:200]
    said = "".join(w.strip() for w in caller_words if w and w.strip())
    parts = [p.strip() for p in (title or "", request or "") if p and p.strip()]
    parts.append(said[-RECENT_WORDS:])
    return " ".join(p for p in parts if p)


def caller_words(calls: Sequence[Any]) -> list[str]:
    """The caller's side of a ticket's calls (hotline.calls.intake.CallWords): the caller's
    turns of a call an operator took, else the final transcript or the live words."""
    words: list[str] = []
    for call in calls:
        if call.dialogue:
            words += [t.get("text", "") for t in call.dialogue if t.get("speaker") == "caller"]
        else:
            words.append(call.transcript or call.live_text or "")
    return words


def suggest(
    session: Session,
    *,
    index: KnowledgeIndex,
    query: str,
    now: datetime,
    region: str | None = None,
    limit: int = SUGGESTIONS,
) -> list[Suggestion]:
    """The articles in service at `now` best matching `query`, with the cited version."""
    if not query.strip():
        return []
    hits = index.search(query, now=now, region=region, limit=limit)
    if not hits:
        return []
    versions = {
        (v.article_id, v.version): v
        for v in session.scalars(
            select(KnowledgeArticleVersion).where(
                col(KnowledgeArticleVersion.article_id).in_([h.article_id for h in hits])
            )
        )
    }
    units = {u.id: u.name for u in session.scalars(select(Unit))}
    found = []
    for hit in hits:
        version = versions.get((hit.article_id, hit.version))
        if version is None:  # indexed a moment ago and not visible in this transaction
            continue
        found.append(
            Suggestion(
                hit=hit,
                article=version,
                owner=units.get(version.owner_unit_id, ""),
                answer=plain_text(version.body),
            )
        )
    return found


def cited_version(
    session: Session, *, article_id: int, version: int, now: datetime
) -> tuple[KnowledgeArticle, KnowledgeArticleVersion]:
    """The article and the version an operator read out, if that version is the one in
    service now: an answer never cites a retired, expired or superseded text."""
    article = session.get(KnowledgeArticle, article_id)
    if article is None:
        raise NotFound(f"knowledge article {article_id} does not exist", article_id=article_id)
    if article.status == ArticleStatus.retired or article.published_version is None:
        raise Conflict(f"{article.number} is not in service", article=article.number)
    if article.published_version != version:
        raise Conflict(
            f"{article.number} version {version} is no longer in service: version "
            f"{article.published_version} is",
            article=article.number,
            version=article.published_version,
        )
    row = session.scalars(
        select(KnowledgeArticleVersion).where(
            col(KnowledgeArticleVersion.article_id) == article_id,
            col(KnowledgeArticleVersion.version) == version,
        )
    ).one()
    if (row.valid_from is not None and row.valid_from > now) or (
        row.valid_until is not None and row.valid_until <= now
    ):
        raise Conflict(f"{article.number} is not valid now", article=article.number)
    return article, row


def answer_with_article(
    session: Session,
    *,
    ticket_id: int,
    article_id: int,
    version: int,
    answer: str,
    user: User,
    now: datetime,
) -> Ticket:
    """直接办结 citing the article: the ticket (and those merged into it) closes at intake,
    its event names the article and version, and the use is counted for the article."""
    article, _ = cited_version(session, article_id=article_id, version=version, now=now)
    ticket = closing.close_at_intake(
        session,
        ticket_id=ticket_id,
        answer=answer,
        actor=user,
        now=now,
        data={"article": article.number, "article_id": article_id, "version": version},
    )
    session.add(
        KnowledgeUse(
            article_id=article_id,
            version=version,
            kind=UseKind.answered,
            ticket_id=ticket_id,
            user_id=_id(user),
            at=now,
        )
    )
    return ticket


def report_not_answered(
    session: Session,
    *,
    article_id: int,
    version: int,
    user: User,
    now: datetime,
    ticket_id: int | None = None,
    note: str | None = None,
) -> KnowledgeUse:
    """ "This did not answer it": the owning unit sees it (with the ticket and the note of
    what the caller asked) until handled. One report per ticket, article and operator —
    a second click changes nothing."""
    article = session.get(KnowledgeArticle, article_id)
    if article is None or article.published_version is None:
        raise NotFound(f"knowledge article {article_id} is not in service", article_id=article_id)
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_LIMIT:
        raise InvalidInput(f"the note is longer than {NOTE_LIMIT} characters")
    if ticket_id is not None:
        existing = session.scalars(
            select(KnowledgeUse).where(
                col(KnowledgeUse.article_id) == article_id,
                col(KnowledgeUse.ticket_id) == ticket_id,
                col(KnowledgeUse.user_id) == _id(user),
                col(KnowledgeUse.kind) == UseKind.not_answered,
            )
        ).first()
        if existing is not None:
            if note and not existing.note:
                existing.note = note
                session.add(existing)
            return existing
    use = KnowledgeUse(
        article_id=article_id,
        version=version,
        kind=UseKind.not_answered,
        ticket_id=ticket_id,
        user_id=_id(user),
        at=now,
        note=note,
    )
    session.add(use)
    session.flush()
    return use


@dataclass(frozen=True)
class Citation:
    article_id: int
    number: str
    version: int


def cited_article(session: Session, *, ticket_id: int) -> Citation | None:
    """The article (and version) a direct answer of this ticket cited, if any."""
    row = session.execute(
        select(
            col(KnowledgeUse.article_id), col(KnowledgeUse.version), col(KnowledgeArticle.number)
        )
        .join(KnowledgeArticle, col(KnowledgeArticle.id) == col(KnowledgeUse.article_id))
        .where(col(KnowledgeUse.ticket_id) == ticket_id, col(KnowledgeUse.kind) == UseKind.answered)
        .order_by(col(KnowledgeUse.id).desc())
    ).first()
    return Citation(row.article_id, row.number, row.version) if row is not None else None


def _id(user: User) -> int:
    if user.id is None:
        raise InvalidInput("the user is not saved")
    return user.id
