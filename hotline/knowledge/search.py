"""Finding articles from how citizens speak: a `KnowledgeIndex` the project owns, with a SQLite
FTS5 and a PostgreSQL tsvector implementation over the same search documents.

The search document (`KnowledgeSearchDoc`, one row per article in service) holds the terms of
the published version (hotline/knowledge/terms.py: jieba words, pinyin pairs, character
bigrams, the title's characters and bigrams). Neither database needs a Chinese parser: the
terms are computed here, FTS5 splits them on spaces (unicode61, one column per kind) and
PostgreSQL receives the lexemes of a ready tsvector — the words as they are, pinyin pairs as
``p:…``, bigrams as ``g:…`` and the title's as ``t:…``, so that the word 供水 is not found in
an article that only has 暂停供水's bigram — and tsquery literals no text search
configuration touches.

Each database only answers which articles hold a term, or a few terms together; how many
articles hold each term (knowledge_term), which articles become candidates and how they
rank is decided once, in search_base.py and ranking.Ranker — so both databases return the
same articles in the same order. The FTS5 table and its triggers, and PostgreSQL's
knowledge_holding(), are made by migration 0024 (and by `create_all`,
hotline/knowledge/models.py).

Only versions in service are returned: the search joins the article (its published version
must be the indexed one, and not retired) and that version's own validity, compared with the
`now` given — so an expired or not-yet-valid article never shows, whatever the index holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, Text, any_, bindparam, cast, func, select, text
from sqlalchemy import column as column_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError
from sqlmodel import Session

from hotline.knowledge.candidates import CANDIDATES, Clause, Group
from hotline.knowledge.search_base import (
    REBUILD_PAGE,
    Bind,
    KnowledgeHit,
    KnowledgeIndex,
    _SqlIndex,
)
from hotline.knowledge.terms import Alternative, DocumentTerms, Synonyms

__all__ = [
    "CANDIDATES",
    "REBUILD_PAGE",
    "Bind",
    "KnowledgeHit",
    "KnowledgeIndex",
    "PostgresKnowledgeIndex",
    "SqliteKnowledgeIndex",
    "make_index",
]


def _by_branch(rows: Sequence[Any], branches: int) -> list[list[int]]:
    found: list[list[int]] = [[] for _ in range(branches)]
    for branch, article_id in rows:
        found[branch].append(article_id)
    return found


# ---------------------------------------------------------------- SQLite


_FTS_COLUMNS = {"w": "words", "p": "pinyin", "g": "grams", "t": "title"}


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class SqliteKnowledgeIndex(_SqlIndex):
    """FTS5 over knowledge_search: one column per kind of term."""

    @staticmethod
    def _expression(clause: Clause) -> str:
        def alternative(alt: Alternative) -> str:
            joiner = " AND " if alt.every else " OR "
            return f"({_FTS_COLUMNS[alt.field]} : ({joiner.join(map(_fts_phrase, alt.terms))}))"

        def group(alts: Group) -> str:
            return "(" + " OR ".join(map(alternative, alts)) + ")"

        return "(" + " AND ".join(map(group, clause)) + ")"

    def _holding(
        self, conn: Connection, clauses: Sequence[Clause], lengths: dict[int, int]
    ) -> list[list[int]]:
        if not clauses:
            return []
        union = " UNION ALL ".join(
            f"SELECT {i}, rowid FROM knowledge_fts WHERE knowledge_fts MATCH :q{i}"
            for i in range(len(clauses))
        )
        params = {f"q{i}": self._expression(c) for i, c in enumerate(clauses)}
        return _by_branch(conn.execute(text(union), params).all(), len(clauses))

    def _newest(self, conn: Connection, clause: Clause, n: int, *, after: int) -> list[int]:
        rows = conn.execute(
            text(
                "SELECT rowid FROM knowledge_fts WHERE knowledge_fts MATCH :q AND rowid > :after "
                "ORDER BY rowid DESC LIMIT :n"
            ),
            {"q": self._expression(clause), "n": n, "after": after},
        )
        return [article_id for (article_id,) in rows]

    def _lengths(self, conn: Connection, article_ids: Sequence[int]) -> dict[int, int]:
        """From FTS5's own count of each document's tokens (knowledge_fts_docsize: a
        varint per column, the words first — one token per word), a small table, where
        knowledge_search's rows are pages wide."""
        rows = conn.execute(
            text(
                "SELECT id, sz FROM knowledge_fts_docsize "
                "WHERE id IN (SELECT value FROM json_each(:ids))"
            ),
            {"ids": self._values(article_ids)},
        ).all()
        return {article_id: _first_varint(size) for article_id, size in rows}

    def _among(self, column: Any, name: str, kind: type) -> Any:
        return column.in_(select(column_("value")).select_from(func.json_each(bindparam(name))))

    def _values(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values), ensure_ascii=False)


def _first_varint(blob: bytes) -> int:
    """The first of SQLite's varints in `blob` (big-endian 7-bit groups, a set high bit
    continuing, the ninth byte whole)."""
    value = 0
    for i, byte in enumerate(blob[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value


# ---------------------------------------------------------------- PostgreSQL


_PREFIXES = {"w": "", "p": "p:", "g": "g:", "t": "t:"}


def _lexeme(field: str, term: str) -> str:
    return "'" + (_PREFIXES[field] + term).replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresKnowledgeIndex(_SqlIndex):
    """Terms go in and out as tsvector lexemes and tsquery literals, so no text search
    parser (which would need a Chinese one) touches them; the GIN index over the vector
    answers which articles hold them. The vector is never read: no ts_rank, no weights
    (either would have PostgreSQL fetch every matching vector from TOAST)."""

    def _vector_value(self, terms: DocumentTerms) -> Any:
        return [
            _PREFIXES[kind] + term
            for kind, kind_terms in (
                ("w", terms.words),
                ("p", terms.pinyin),
                ("g", terms.grams),
                ("t", terms.title),
            )
            for term in kind_terms
        ]

    def _vector_of(self, value: Any) -> Any:
        return func.array_to_tsvector(cast(value, ARRAY(Text())))

    def _settle(self, conn: Connection) -> None:
        """The GIN index keeps new entries in a pending list every search reads through
        until VACUUM (a manual ANALYZE does not) merges them: after a rebuild, megabytes of
        it (a search's time on PostgreSQL's side up by half at 100,000 articles). Only
        the index's owner may: another role leaves it to autovacuum."""
        try:
            with conn.begin_nested():
                conn.execute(text("SELECT gin_clean_pending_list('ix_knowledge_search_document')"))
        except ProgrammingError:  # InsufficientPrivilege
            pass

    @staticmethod
    def _tsquery(clause: Clause) -> str:
        def alternative(alt: Alternative) -> str:
            joiner = " & " if alt.every else " | "
            return "(" + joiner.join(_lexeme(alt.field, t) for t in alt.terms) + ")"

        def group(alts: Group) -> str:
            return "(" + " | ".join(map(alternative, alts)) + ")"

        return " & ".join(map(group, clause))

    def _holding(
        self, conn: Connection, clauses: Sequence[Clause], lengths: dict[int, int]
    ) -> list[list[int]]:
        """The row of each article found is read (the GIN index has no ids): its length
        comes with it. Through knowledge_holding (migration 0024), always by the index."""
        if not clauses:
            return []
        union = " UNION ALL ".join(
            f"SELECT {i} AS branch, article_id, length "
            f"FROM knowledge_holding(CAST(:q{i} AS tsquery))"
            for i in range(len(clauses))
        )
        params = {f"q{i}": self._tsquery(c) for i, c in enumerate(clauses)}
        rows = conn.execute(text(union), params).all()
        lengths.update((article_id, length) for _, article_id, length in rows)
        return _by_branch([(branch, article_id) for branch, article_id, _ in rows], len(clauses))

    def _newest(self, conn: Connection, clause: Clause, n: int, *, after: int) -> list[int]:
        # The planner walks the primary key down from the newest, reading vectors until
        # enough match, never further than `after`.
        rows = conn.execute(
            text(
                "SELECT article_id FROM knowledge_search WHERE document @@ CAST(:q AS tsquery) "
                "AND article_id > :after ORDER BY article_id DESC LIMIT :n"
            ),
            {"q": self._tsquery(clause), "n": n, "after": after},
        )
        return [article_id for (article_id,) in rows]

    def _lengths(self, conn: Connection, article_ids: Sequence[int]) -> dict[int, int]:
        rows = conn.execute(
            text(
                "SELECT article_id, length FROM knowledge_search "
                "WHERE article_id = ANY(CAST(:ids AS integer[]))"
            ),
            {"ids": list(article_ids)},
        ).all()
        return {article_id: length for article_id, length in rows}  # noqa: C416 (pairs)

    def _among(self, column: Any, name: str, kind: type) -> Any:
        element = Integer() if kind is int else Text()
        return column == any_(cast(bindparam(name), ARRAY(element)))


def make_index(bind: Bind, synonyms: Synonyms | None = None) -> KnowledgeIndex:
    """The index for the database `bind` talks to. With a session or connection the index
    works inside its transaction (publishing and indexing commit together)."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind.engine
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return SqliteKnowledgeIndex(bind, synonyms)
    if dialect == "postgresql":
        return PostgresKnowledgeIndex(bind, synonyms)
    raise ValueError(f"no knowledge index for {dialect}")
