"""Knowledge articles: the current head of each article, every saved version (immutable), and
the search document of the published version.

The body is Markdown, not HTML: the source an editor types is what is stored and diffed
between versions, links and attachments are Markdown links, and a page renders it with raw
HTML switched off (markdown-it-py), so there is no sanitiser to trust and nothing stored can
carry a script. Search reads the plain text (`search.plain_text`). An article's files
(`KnowledgeFile`) belong to a range of its versions; `[name](attachment:N)` links to one.

Validity: `valid_from` is the first moment an article applies, `valid_until` the first moment
it no longer does (both UTC; None: open-ended). A published version whose validity does not
cover the moment of the search is never returned."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import model_validator
from sqlalchemy import DDL, Column, Index, Text, UniqueConstraint, event
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, enum_type


class ArticleStatus(StrEnum):
    draft = "draft"  # being written or sent back
    in_review = "in_review"  # submitted to the centre
    published = "published"  # the head is the version in service
    retired = "retired"  # withdrawn: never shown again


# GB/T 39666-2020 category codes: 2 digits per level, up to three levels.
CATEGORY_CODE = re.compile(r"^\d{2}(?:\d{2}){0,2}$")

# The fields an editor sets; a version row keeps a copy of each.
CONTENT_FIELDS = (
    "title",
    "body",
    "category_code",
    "owner_unit_id",
    "policy_source",
    "document_number",
    "region",
    "valid_from",
    "valid_until",
    "review_due",
)


class KnowledgeArticleBase(SQLModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=100_000, sa_type=Text)  # Markdown
    category_code: str = Field(max_length=6)
    owner_unit_id: int = Field(foreign_key="unit.id")  # answers for the content
    policy_source: str | None = Field(default=None, max_length=200)  # 政策依据
    document_number: str | None = Field(default=None, max_length=100)  # 文号
    region: str | None = Field(default=None, max_length=64)  # None: the whole city
    valid_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_due: datetime | None = Field(default=None, sa_type=UTCDateTime)


class KnowledgeArticleCreate(KnowledgeArticleBase):
    @model_validator(mode="after")
    def _check(self) -> KnowledgeArticleCreate:
        check_content(self.model_dump())
        return self


class KnowledgeArticleUpdate(SQLModel):
    """Only the fields given change; the rest are kept from the head version."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=100_000)
    category_code: str | None = Field(default=None, max_length=6)
    owner_unit_id: int | None = None
    policy_source: str | None = Field(default=None, max_length=200)
    document_number: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=64)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    review_due: datetime | None = None


def check_content(values: dict[str, Any]) -> None:
    """Raises ValueError for content no article may have."""
    if not values["title"].strip() or not values["body"].strip():
        raise ValueError("title and body must not be blank")
    if not CATEGORY_CODE.match(values["category_code"]):
        raise ValueError("category_code must be 2, 4 or 6 digits (GB/T 39666-2020)")
    start, end = values.get("valid_from"), values.get("valid_until")
    for name in ("valid_from", "valid_until", "review_due"):
        moment = values.get(name)
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"{name} must carry a time zone")
    if start is not None and end is not None and end <= start:
        raise ValueError("valid_until must come after valid_from")


class KnowledgeArticle(KnowledgeArticleBase, table=True):
    """The head of an article: its latest saved version and where it is in review.
    `published_version` is the version in service (searchable) — an edit of a published
    article leaves it in service until the centre approves the new version."""

    __tablename__ = "knowledge_article"
    __table_args__ = (
        Index("ix_knowledge_article_category_code", "category_code"),
        Index("ix_knowledge_article_owner_unit_id", "owner_unit_id"),
        Index("ix_knowledge_article_review_due", "review_due"),  # the review reminders
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=32, unique=True, index=True)
    status: ArticleStatus = Field(sa_type=enum_type(ArticleStatus), index=True)
    version: int = 1  # the head version
    published_version: int | None = None
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    published_by: int | None = Field(default=None, foreign_key="user.id")
    review_note: str | None = Field(default=None, max_length=1000)  # why it was sent back
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: int = Field(foreign_key="user.id")
    updated_at: datetime = Field(sa_type=UTCDateTime)
    updated_by: int = Field(foreign_key="user.id")


class KnowledgeArticleVersion(KnowledgeArticleBase, table=True):
    """Every saved version, as saved: who, when, which fields changed and why. Never updated
    (an update raises); a direct answer cites the article and this version."""

    __tablename__ = "knowledge_article_version"
    __table_args__ = (UniqueConstraint("article_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="knowledge_article.id")
    version: int
    saved_at: datetime = Field(sa_type=UTCDateTime)
    saved_by: int = Field(foreign_key="user.id")
    changed: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    note: str | None = Field(default=None, max_length=1000)


@event.listens_for(KnowledgeArticleVersion, "before_update")
def _versions_are_immutable(*_: Any) -> None:
    raise RuntimeError("a saved knowledge article version is never changed")


# The search document's tsvector on PostgreSQL; SQLite keeps the column empty and searches
# through FTS5 over the same rows (hotline/knowledge/search.py).
SearchVector = Text().with_variant(TSVECTOR(), "postgresql")


class KnowledgeSearchDoc(SQLModel, table=True):
    """The search terms of an article's published version, one row per searchable article:
    jieba words, pinyin of adjacent characters, character bigrams, and the characters and
    bigrams of the title (space-separated).
    Derived data: written on publish, removed on retire, rebuilt from the versions.

    On PostgreSQL the terms live out of line (toast_tuple_target): finding the articles
    that hold a term reads the row of each, and a narrow row is ~70 to a page, not 4. No
    parallel workers: starting them costs more than the few thousand rows a search reads."""

    __tablename__ = "knowledge_search"
    __table_args__ = (
        Index("ix_knowledge_search_document", "document", postgresql_using="gin"),
        {"postgresql_with": {"toast_tuple_target": 128, "parallel_workers": 0}},
    )

    article_id: int = Field(
        foreign_key="knowledge_article.id",
        primary_key=True,
        sa_column_kwargs={"autoincrement": False},
    )
    version: int
    words: str = Field(sa_type=Text)
    pinyin: str = Field(sa_type=Text)
    grams: str = Field(sa_type=Text)
    document: str | None = Field(default=None, sa_type=SearchVector)
    # the title's characters and bigrams: whether the title names a word (so that
    # migration 0024 could make them for the documents already there, without jieba)
    title: str = Field(default="", sa_type=Text, sa_column_kwargs={"server_default": ""})
    length: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # how many words


# SQLite's full-text index over knowledge_search (its words, pinyin, bigrams and title as
# FTS5 columns), kept in step by triggers whoever writes the table. Migration 0024 creates the
# same for migrated databases; `create_all` gets it from here. A batch migration that
# rebuilds knowledge_search on SQLite drops the triggers: it must create them again.
FTS_DDL = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(words, pinyin, grams, title, "
    "content='knowledge_search', content_rowid='article_id', tokenize='unicode61')",
    "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams, title) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams, new.title); END",
    "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams, title) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams, old.title); END",
    "CREATE TRIGGER knowledge_fts_update AFTER UPDATE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams, title) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams, old.title); "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams, title) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams, new.title); END",
)
FTS_DROP = (
    "DROP TRIGGER IF EXISTS knowledge_fts_update",
    "DROP TRIGGER IF EXISTS knowledge_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_fts_insert",
    "DROP TABLE IF EXISTS knowledge_fts",
)
for _ddl in FTS_DDL:
    event.listen(
        KnowledgeSearchDoc.__table__,  # type: ignore[attr-defined]
        "after_create",
        DDL(_ddl).execute_if(dialect="sqlite"),
    )
for _ddl in FTS_DROP:
    event.listen(
        KnowledgeSearchDoc.__table__,  # type: ignore[attr-defined]
        "before_drop",
        DDL(_ddl).execute_if(dialect="sqlite"),
    )

# PostgreSQL's: the articles whose vector matches a tsquery, always by the GIN index. Its
# planner sees a narrow table and a cheap @@ and may scan it all, reading (de-TOASTing) a
# vector per row: half a second at 100,000 articles. The setting holds in the function only.
HOLDING_DDL = (
    "CREATE FUNCTION knowledge_holding(q tsquery) "
    "RETURNS TABLE (article_id integer, length integer) "
    "LANGUAGE sql STABLE SET enable_seqscan = off AS "
    "$$ SELECT s.article_id, s.length FROM knowledge_search AS s WHERE s.document @@ q $$"
)
HOLDING_DROP = "DROP FUNCTION IF EXISTS knowledge_holding(tsquery)"
event.listen(
    KnowledgeSearchDoc.__table__,  # type: ignore[attr-defined]
    "after_create",
    DDL(HOLDING_DDL).execute_if(dialect="postgresql"),
)
event.listen(
    KnowledgeSearchDoc.__table__,  # type: ignore[attr-defined]
    "before_drop",
    DDL(HOLDING_DROP).execute_if(dialect="postgresql"),
)


class KnowledgeTerm(SQLModel, table=True):
    """How many articles of the search index hold each term — the ranking's idf, the same
    numbers on both databases (hotline/knowledge/search_base.py keeps them with the index:
    on publish, retire and rebuild). `kind`: w a word, p a pinyin pair, g a bigram, and #
    the totals (term "articles": how many are indexed; "words": their words together, for
    the average length)."""

    __tablename__ = "knowledge_term"

    # the term first: a search looks its terms up whatever their kind
    term: str = Field(max_length=64, primary_key=True)
    kind: str = Field(max_length=1, primary_key=True)
    articles: int


class UseKind(StrEnum):
    answered = "answered"  # 直接办结 citing the article (ticket_id set)
    not_answered = "not_answered"  # "this did not answer it": feedback to the owning unit


class KnowledgeUse(SQLModel, table=True):
    """An operator's use of a published article: a direct answer that cites it (the ticket
    and the version given to the caller), or feedback that it did not answer the request —
    which the owning unit sees until someone there marks it handled."""

    __tablename__ = "knowledge_use"
    __table_args__ = (
        Index("ix_knowledge_use_article_at", "article_id", "at"),
        Index("ix_knowledge_use_kind_at", "kind", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="knowledge_article.id")
    version: int
    kind: UseKind = Field(sa_type=enum_type(UseKind))
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    user_id: int = Field(foreign_key="user.id")
    at: datetime = Field(sa_type=UTCDateTime)
    note: str | None = Field(default=None, max_length=1000)  # what the caller asked
    handled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    handled_by: int | None = Field(default=None, foreign_key="user.id")


class ReminderKind(StrEnum):
    review = "review"  # review_due is near or past
    expiry = "expiry"  # valid_until is near


class KnowledgeReminder(SQLModel, table=True):
    """A reminder sent to an article's owning unit: one per article, kind and due date, so
    a sweep that runs every hour never sends the same one twice."""

    __tablename__ = "knowledge_reminder"
    __table_args__ = (UniqueConstraint("article_id", "kind", "due"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="knowledge_article.id", index=True)
    kind: ReminderKind = Field(sa_type=enum_type(ReminderKind))
    due: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime = Field(sa_type=UTCDateTime)


class KnowledgeFile(SQLModel, table=True):
    """A file attached to an article (a policy document, a map): the bytes live in the file
    store (hotline.attachments) under `storage_key`. It belongs to the versions from
    `added_in` up to, not including, `removed_in` — so every new version carries the files of
    the one before unless it removes them, and each version's files stay as they were. A
    file uploaded but not yet saved with a version has no `added_in` (the edit form holds
    it); only the article's writers see it."""

    __tablename__ = "knowledge_file"
    __table_args__ = (Index("ix_knowledge_file_article_added", "article_id", "added_in"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="knowledge_article.id")
    filename: str = Field(max_length=200)  # as uploaded, cleaned: the download's name
    content_type: str = Field(max_length=100)
    size: int
    sha256: str = Field(max_length=64)
    storage_key: str = Field(max_length=200, unique=True)
    uploaded_by: int = Field(foreign_key="user.id")
    uploaded_at: datetime = Field(sa_type=UTCDateTime)
    added_in: int | None = None  # the first version that carries it
    removed_in: int | None = None  # the first version that no longer does

    def in_version(self, version: int) -> bool:
        return (
            self.added_in is not None
            and self.added_in <= version
            and (self.removed_in is None or version < self.removed_in)
        )
