"""Finding articles from how citizens speak: a `KnowledgeIndex` the project owns, with a SQLite
FTS5 and a PostgreSQL tsvector implementation over the same search documents.

The search document (`KnowledgeSearchDoc`, one row per article in service) holds the terms of
the published version (hotline/knowledge/terms.py: jieba words, pinyin pairs, character
bigrams). Neither database needs a Chinese parser: the terms are computed here, FTS5 splits
them on spaces (unicode61) and PostgreSQL receives a ready tsvector (A words, B pinyin,
C grams) and tsquery — literals no text search configuration touches.

How a large base stays fast (issue 18: 100,000 articles): first, how many articles hold
each of the caller's concepts (SQLite: counted in FTS5's index, up to a bound; PostgreSQL:
estimated from ANALYZE's statistics of the vector's lexemes, as its planner does). The
rarest of the caller's concepts (settings such as 物业 too: this base's counts decide, not
jieba's corpus), as many as `budget` articles hold between them, pick the candidates: up
to `CANDIDATES` articles the database ranks (FTS5's bm25; PostgreSQL: the weight of the
concepts held, each by its rarest alternative held, from the GIN index alone, never
reading the TOASTed vectors as ts_rank would). A concept half the base holds (工作, 通知)
picks none, but ranks those the rarer ones pick (paired with them, so it reads no more
articles) and counts in the scoring; when all are that common, pairs of them pick, else
the newest articles holding the rarest. terms.score ranks the candidates again, a concept
counting less the more articles of this base hold it, and gives each hit its reason.

Only versions in service are returned: the search joins the article (its published version
must be the indexed one, and not retired) and that version's own validity, compared with the
`now` given — so an expired or not-yet-valid article never shows, whatever the index holds.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import (
    cast,
    column,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from hotline.knowledge import search_base as base
from hotline.knowledge.search_base import (
    CANDIDATES,
    REBUILD_PAGE,
    Bind,
    Clause,
    KnowledgeHit,
    KnowledgeIndex,
    _SqlIndex,
)
from hotline.knowledge.terms import (
    ConceptTerms,
    DocumentTerms,
    Synonyms,
)

__all__ = [
    "CANDIDATES",
    "REBUILD_PAGE",
    "Bind",
    "KnowledgeHit",
    "KnowledgeIndex",
    "PostgresKnowledgeIndex",
    "SqliteKnowledgeIndex",
    "drop_fts",
    "ensure_fts",
    "make_index",
]

_FTS_DDL = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(words, pinyin, grams, "
    "content='knowledge_search', content_rowid='article_id', tokenize='unicode61')",
    "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams); END",
    "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams); END",
    "CREATE TRIGGER knowledge_fts_update AFTER UPDATE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams); "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams); END",
    "INSERT INTO knowledge_fts(knowledge_fts) VALUES ('rebuild')",
)
FTS_OBJECTS = (
    ("trigger", "knowledge_fts_update"),
    ("trigger", "knowledge_fts_delete"),
    ("trigger", "knowledge_fts_insert"),
    ("table", "knowledge_fts"),
)
_FTS = table("knowledge_fts", column("rowid"), column("rank"))


def ensure_fts(conn: Connection) -> bool:
    """Create SQLite's FTS5 index over knowledge_search if this database has none yet, or
    again if its triggers are gone (a batch migration that rebuilds knowledge_search drops
    them), from the documents already there. True when it was all there already."""
    present = {
        (kind, name)
        for kind, name in conn.exec_driver_sql(
            "SELECT type, name FROM sqlite_master WHERE name LIKE 'knowledge\\_fts%' ESCAPE '\\'"
        )
    }
    if present >= set(FTS_OBJECTS):
        return True
    drop_fts(conn)
    for ddl in _FTS_DDL:
        conn.exec_driver_sql(ddl)
    return False


def drop_fts(conn: Connection) -> None:
    for kind, name in FTS_OBJECTS:
        conn.exec_driver_sql(f"DROP {kind.upper()} IF EXISTS {name}")


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class SqliteKnowledgeIndex(_SqlIndex):
    def __init__(self, bind: Bind, synonyms: Synonyms | None = None) -> None:
        super().__init__(bind, synonyms)
        self._fts_ready = False
        if not isinstance(bind, Engine):
            with self._connection() as conn:
                self._prepare(conn)

    def _prepare(self, conn: Connection) -> None:
        """Once per index: a search (the console's suggestions run one every few words)
        must not look the FTS5 table up in sqlite_master each time. Taken as ready once it
        was found in place (what this transaction created may still be rolled back)."""
        if not self._fts_ready:
            self._fts_ready = ensure_fts(conn)

    def _expression(self, clause: Clause) -> str:
        def group(terms: ConceptTerms) -> str:
            parts = [f"(words : ({' AND '.join(map(_fts_phrase, alt))}))" for alt in terms.words]
            for name, kind in (("pinyin", terms.pinyin), ("grams", terms.grams)):
                if kind:
                    parts.append(f"({name} : ({' OR '.join(map(_fts_phrase, kind))}))")
            return "(" + " OR ".join(parts) + ")"

        return "(" + " AND ".join(map(group, clause)) + ")"

    def _held(self, conn: Connection, clauses: list[Clause]) -> list[int]:
        counts = ", ".join(
            f"(SELECT count(*) FROM (SELECT rowid FROM knowledge_fts WHERE knowledge_fts "
            f"MATCH :q{i} LIMIT {self.budget + 1}))"
            for i in range(len(clauses))
        )
        params = {f"q{i}": self._expression(c) for i, c in enumerate(clauses)}
        return list(conn.execute(text(f"SELECT {counts}"), params).one())

    def _candidates(
        self, conn: Connection, clauses: list[tuple[Clause, float]], *, newest: bool = False
    ) -> list[int]:
        """FTS5's bm25 (which weighs the rarer terms more itself) over the clauses."""
        query = " OR ".join(self._expression(c) for c, _ in clauses)
        order = "rowid DESC" if newest else "rank"
        rows = conn.execute(
            text(
                "SELECT rowid FROM knowledge_fts WHERE knowledge_fts MATCH :q "
                f"ORDER BY {order} LIMIT :n"
            ),
            {"q": query, "n": base.CANDIDATES},
        )
        return [article_id for (article_id,) in rows]


_DEFAULT_MATCH_SHARE = 0.005  # PostgreSQL's DEFAULT_TS_MATCH_SEL
_LEXEME_STATS = text(
    "SELECT s.most_common_elems::text::text[] AS lexemes, "
    "s.most_common_elem_freqs AS shares, c.reltuples AS rows "
    "FROM pg_stats AS s JOIN pg_class AS c ON c.oid = 'knowledge_search'::regclass "
    "WHERE s.schemaname = current_schema() AND s.tablename = 'knowledge_search' "
    "AND s.attname = 'document'"
)


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresKnowledgeIndex(_SqlIndex):
    """Terms go in and out as tsvector/tsquery literals, so no text search parser (which
    would need a Chinese one) touches them; ranks are ts_rank over the GIN-indexed vector."""

    _WEIGHTS = ("A", "B", "C")
    budget = 6_000  # a heap page read for each (the vectors themselves never)
    common_groups = 2  # its estimates of a pair are a guess (correlated words)
    _stats: tuple[list[str], list[float], float] | None = None
    _stats_read: bool | None = None

    def _vector_of(self, value: Any) -> Any:
        return cast(value, TSVECTOR())

    def _vector_text(self, terms: DocumentTerms) -> str | None:
        lexemes, position = [], 0
        for weight, kind in zip(
            self._WEIGHTS, (terms.words, terms.pinyin, terms.grams), strict=True
        ):
            for term in kind:
                position += 1
                lexemes.append(f"{_lexeme(term)}:{position}{weight}")
        return " ".join(lexemes)

    def _tsquery(self, clause: Clause) -> str:
        """Lexemes without weights: the GIN index answers such a query alone (a weight
        would make PostgreSQL fetch and read every matching vector again); a word that
        is also some article's bigram is thus a candidate there too, and the scoring
        here tells them apart."""

        def group(terms: ConceptTerms) -> str:
            parts = ["(" + " & ".join(map(_lexeme, alt)) + ")" for alt in terms.words]
            parts += [_lexeme(t) for t in (*terms.pinyin, *terms.grams)]
            return "(" + " | ".join(parts) + ")"

        return " & ".join(map(group, clause))

    def _held(self, conn: Connection, clauses: list[Clause]) -> list[int]:
        """Estimates, as the planner makes them, from the statistics ANALYZE keeps of the
        vector's most common lexemes (a lexeme not among them: half the least common's
        share, at most 0.5 %). Counting would read a heap page for every article holding
        a common word (工作: half the base), or worse, the planner would scan the table and
        read every vector. Never analyzed, every clause looks rare: slower, the same results."""
        return self._estimates(conn, clauses, outside=None)

    def _held_in_base(self, conn: Connection, clauses: list[Clause], held: list[int]) -> list[int]:
        """For the scoring, a lexeme outside the statistics' most common ones is taken as
        rare (held by one article): their floor share would make 低保 and 申请 alike."""
        return self._estimates(conn, clauses, outside=0.0)

    def _estimates(
        self, conn: Connection, clauses: list[Clause], outside: float | None
    ) -> list[int]:
        stats = self._lexeme_stats(conn)
        if stats is None:
            return [1] * len(clauses)
        lexemes, shares, rows = stats
        share = dict(zip(lexemes, shares, strict=False))
        # after the lexemes' shares: the least and the most common's, and the nulls'
        floor = min(_DEFAULT_MATCH_SHARE, shares[len(lexemes)] / 2) if outside is None else outside

        def lexeme(term: str) -> float:
            return share.get(term, floor)

        def group(terms: ConceptTerms) -> float:
            parts = [math.prod(map(lexeme, alt)) for alt in terms.words]
            parts += [lexeme(t) for t in (*terms.pinyin, *terms.grams)]
            return 1 - math.prod(1 - p for p in parts)

        return [
            min(self.budget + 1, max(1, round(math.prod(map(group, c)) * rows))) for c in clauses
        ]

    def _lexeme_stats(self, conn: Connection) -> tuple[list[str], list[float], float] | None:
        """ANALYZE's statistics, read once per index (they change when ANALYZE runs)."""
        if self._stats_read is None:
            found = conn.execute(_LEXEME_STATS).first()
            self._stats = None
            if found is not None and found.lexemes and found.rows and found.rows > 0:
                self._stats = (found.lexemes, found.shares, found.rows)
            self._stats_read = True
        return self._stats

    def _candidates(
        self, conn: Connection, clauses: list[tuple[Clause, float]], *, newest: bool = False
    ) -> list[int]:
        """The articles holding the most (by weight) of the clauses, the shorter first
        among equals: read from the GIN index and the row's own columns, never the
        (TOASTed) vector itself, which ts_rank would read for every matching article."""
        # One branch per alternative of a single concept (医保, or the synonym 医疗保险),
        # as FTS5's bm25 weighs each term: the rarer alternative an article holds counts
        # more than the common one, not the concept's commonest way of being said.
        branches = [
            (i, j, query)
            for i, (clause, _) in enumerate(clauses)
            for j, query in enumerate(self._alternatives(clause))
        ]
        union = " UNION ALL ".join(
            f"SELECT article_id, {i} AS clause, {j} AS alt, CAST(:w{i} AS float8) AS weight, "
            f"pg_column_size(document) AS size FROM knowledge_search "
            f"WHERE document @@ CAST(:q{i}_{j} AS tsquery)"
            for i, j, _ in branches
        )
        params: dict[str, Any] = {f"q{i}_{j}": query for i, j, query in branches}
        params |= {f"w{i}": weight for i, (_, weight) in enumerate(clauses)}
        if newest:
            # Common, as the planner knows too: it walks the primary key down, reading
            # vectors until enough match, a few hundred.
            rows = conn.execute(
                text(f"SELECT article_id FROM ({union}) AS held ORDER BY article_id DESC LIMIT :n"),
                params | {"n": base.CANDIDATES},
            )
            return [article_id for (article_id,) in rows]
        # MATERIALIZED: planned apart from the LIMIT, the GIN index is used (with the
        # LIMIT the planner may walk the primary key, reading vectors until enough match:
        # seconds when few do).
        # An alternative counts its clause's weight times how rare it is:
        # 1 + ln((budget + 1) / held), held counted here, from the rows read anyway; a
        # clause counts its best alternative the article holds.
        rows = conn.execute(
            text(
                f"WITH held AS MATERIALIZED ({union}), scored AS (SELECT article_id, clause, "
                "size, weight * (1 + ln((:budget + 1) / count(*) OVER (PARTITION BY clause, "
                "alt))) AS points FROM held), best AS (SELECT article_id, max(points) AS "
                "points, min(size) AS size FROM scored GROUP BY article_id, clause) "
                "SELECT article_id FROM best GROUP BY article_id "
                "ORDER BY sum(points) DESC, min(size), article_id LIMIT :n"
            ),
            params | {"n": base.CANDIDATES, "budget": float(self.budget)},
        )
        return [article_id for (article_id,) in rows]

    def _alternatives(self, clause: Clause) -> list[str]:
        """The clause's tsquery, split into its alternatives when it is one concept."""
        if len(clause) != 1:
            return [self._tsquery(clause)]
        (terms,) = clause
        alternatives = ["(" + " & ".join(map(_lexeme, alt)) + ")" for alt in terms.words]
        alternatives += [_lexeme(t) for t in (*terms.pinyin, *terms.grams)]
        return alternatives or [self._tsquery(clause)]


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
