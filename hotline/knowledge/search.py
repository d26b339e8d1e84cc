"""Finding articles from how citizens speak: a `KnowledgeIndex` the project owns, with a SQLite
FTS5 and a PostgreSQL tsvector implementation over the same search documents.

The search document (`KnowledgeSearchDoc`, one row per article in service) holds the terms of
the published version (hotline/knowledge/terms.py: jieba words, pinyin pairs, character
bigrams). Neither database needs a Chinese parser: the terms are computed here, FTS5 splits
them on spaces (unicode61) and PostgreSQL receives a ready tsvector (A words, B pinyin,
C grams) and tsquery — literals no text search configuration touches. The database returns
up to `CANDIDATES` documents holding two of the query's most telling concepts (else one of
them; else, when no word matched, any of its bigrams), ranked by bm25 / ts_rank; terms.score
ranks them again and gives each hit its reason. Asking for two concepts first keeps a large
base fast (the database ranks the few articles holding both, not the thousands naming one).

Only versions in service are returned: the search joins the article (its published version
must be the indexed one, and not retired) and that version's own validity, compared with the
`now` given — so an expired or not-yet-valid article never shows, whatever the index holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    cast,
    column,
    delete,
    func,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeArticleVersion,
    KnowledgeSearchDoc,
)
from hotline.knowledge.terms import (
    ConceptTerms,
    Document,
    DocumentTerms,
    Match,
    Query,
    Synonyms,
    default_synonyms,
    document_terms,
    normalise,
    parse_query,
    score,
)

CANDIDATES = 200  # rows the database ranks before they are scored here

_ARTICLES = KnowledgeArticle.__table__  # type: ignore[attr-defined]
_VERSIONS = KnowledgeArticleVersion.__table__  # type: ignore[attr-defined]
_DOCS = KnowledgeSearchDoc.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class KnowledgeHit:
    article_id: int
    number: str
    version: int  # the published version found, to cite
    title: str
    score: float
    matches: tuple[Match, ...] = field(default_factory=tuple)

    @property
    def matched_words(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for m in self.matches for w in m.article_words))


# ---------------------------------------------------------------- the index


class KnowledgeIndex(Protocol):
    def index(self, article: KnowledgeArticle) -> None:
        """Make the article's published version searchable (or remove it if none)."""

    def remove(self, article_id: int) -> None: ...

    def rebuild(self) -> int:
        """Index every article in service again; returns how many."""
        ...

    def search(
        self, query: str, *, now: datetime, region: str | None = None, limit: int = 10
    ) -> list[KnowledgeHit]:
        """Articles in service at `now` (and for `region`, besides city-wide ones), best
        first, each with the words that matched."""
        ...


Bind = Session | Connection | Engine


class _SqlIndex:
    """What both databases share: the documents, the filter of what is in service, scoring."""

    def __init__(self, bind: Bind, synonyms: Synonyms | None = None) -> None:
        self._bind = bind
        self.synonyms = synonyms or default_synonyms()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if isinstance(self._bind, Session):
            yield self._bind.connection()
        elif isinstance(self._bind, Connection):
            yield self._bind
        else:
            with self._bind.begin() as conn:
                self._prepare(conn)
                yield conn

    def _prepare(self, conn: Connection) -> None:
        """Storage the migrations do not own (SQLite's FTS5 table)."""

    def index(self, article: KnowledgeArticle) -> None:
        if article.id is None:
            raise ValueError("the article has not been saved")
        if article.published_version is None or article.status == ArticleStatus.retired:
            self.remove(article.id)
            return
        with self._connection() as conn:
            row = conn.execute(
                select(_VERSIONS).where(
                    _VERSIONS.c.article_id == article.id,
                    _VERSIONS.c.version == article.published_version,
                )
            ).one()
            terms = document_terms(KnowledgeArticleVersion.model_construct(**row._mapping))
            conn.execute(delete(_DOCS).where(_DOCS.c.article_id == article.id))
            conn.execute(
                _DOCS.insert().values(
                    article_id=article.id,
                    version=article.published_version,
                    words=" ".join(terms.words),
                    pinyin=" ".join(terms.pinyin),
                    grams=" ".join(terms.grams),
                    document=self._vector(terms),
                )
            )

    def remove(self, article_id: int) -> None:
        with self._connection() as conn:
            conn.execute(delete(_DOCS).where(_DOCS.c.article_id == article_id))

    def rebuild(self) -> int:
        """Index every article in service again (after a restore or a change of jieba's
        dictionary or the term rules); returns how many."""
        with self._connection() as conn:
            conn.execute(delete(_DOCS))
            rows = conn.execute(
                select(_ARTICLES.c.id, _ARTICLES.c.published_version, _ARTICLES.c.status).where(
                    _ARTICLES.c.published_version.is_not(None),
                    _ARTICLES.c.status != ArticleStatus.retired.value,
                )
            ).all()
        for article_id, published, status in rows:
            self.index(
                KnowledgeArticle.model_construct(
                    id=article_id, published_version=published, status=ArticleStatus(status)
                )
            )
        return len(rows)

    def search(
        self, query: str, *, now: datetime, region: str | None = None, limit: int = 10
    ) -> list[KnowledgeHit]:
        parsed = parse_query(query, self.synonyms)
        if parsed.empty or limit <= 0:
            return []
        in_service = [
            or_(_VERSIONS.c.valid_from.is_(None), _VERSIONS.c.valid_from <= now),
            or_(_VERSIONS.c.valid_until.is_(None), _VERSIONS.c.valid_until > now),
        ]
        if region is not None:
            in_service.append(or_(_VERSIONS.c.region.is_(None), _VERSIONS.c.region == region))
        stmt = (
            select(
                _DOCS.c.article_id,
                _ARTICLES.c.number,
                _DOCS.c.version,
                _VERSIONS.c.title,
                _DOCS.c.words,
                _DOCS.c.pinyin,
                _DOCS.c.grams,
            )
            .select_from(
                _DOCS.join(
                    _ARTICLES,
                    and_(
                        _ARTICLES.c.id == _DOCS.c.article_id,
                        _ARTICLES.c.published_version == _DOCS.c.version,
                        _ARTICLES.c.status != ArticleStatus.retired.value,
                    ),
                ).join(
                    _VERSIONS,
                    and_(
                        _VERSIONS.c.article_id == _DOCS.c.article_id,
                        _VERSIONS.c.version == _DOCS.c.version,
                    ),
                )
            )
            .where(*in_service)
        )
        groups = parsed.candidate_terms()
        ranked: list[tuple[float, int, KnowledgeHit]] = []
        if len(groups) >= 2:
            # Articles holding two of the concepts first: few, and where the answer is
            # nearly always; the database need not rank every article naming one of them.
            ranked = self._ranked(stmt, parsed, groups, pairs=True)
        if len(ranked) < limit and groups:
            ranked = self._ranked(stmt, parsed, groups, pairs=False)
        if not ranked and parsed.grams:
            # No word of the query matched as said: the scoring falls back to the query's
            # characters (terms.score), so fetch the articles holding any of them.
            fallback = (ConceptTerms(grams=tuple(sorted(parsed.grams))),)
            ranked = self._ranked(stmt, parsed, fallback, pairs=False)
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [hit for _, _, hit in ranked[:limit]]

    def _ranked(
        self,
        stmt: Select[Any],
        parsed: Query,
        groups: tuple[ConceptTerms, ...],
        *,
        pairs: bool,
    ) -> list[tuple[float, int, KnowledgeHit]]:
        with self._connection() as conn:
            rows = conn.execute(self._matching(stmt, groups, pairs).limit(CANDIDATES)).all()
        ranked = []
        for order, row in enumerate(rows):
            doc = Document(
                words=frozenset(row.words.split()),
                pinyin=frozenset(row.pinyin.split()),
                grams=frozenset(row.grams.split()),
                title=normalise(row.title),
            )
            points, matches = score(parsed, doc)
            if matches:
                hit = KnowledgeHit(
                    article_id=row.article_id,
                    number=row.number,
                    version=row.version,
                    title=row.title,
                    score=points,
                    matches=matches,
                )
                ranked.append((points, -order, hit))  # ties: the database's rank
        return ranked

    def _vector(self, terms: DocumentTerms) -> Any:
        return None

    def _matching(
        self, stmt: Select[Any], groups: tuple[ConceptTerms, ...], pairs: bool
    ) -> Select[Any]:
        """`stmt` restricted to the articles holding any of the groups (with `pairs`: two of
        them), best first by the database's rank."""
        raise NotImplementedError


def _either(groups: list[str], pairs: bool, and_: str, or_: str) -> str:
    if not pairs:
        return f" {or_} ".join(groups)
    return f" {or_} ".join(
        f"({a} {and_} {b})" for i, a in enumerate(groups) for b in groups[i + 1 :]
    )


# FTS5 keeps its index in shadow tables (knowledge_fts_data, _idx, ...) that Alembic's schema
# comparison cannot be told to skip (hotline/migrate.py), so the migrations do not create it:
# the SQLite index does, once per database, from the documents already there. Triggers keep
# it in step with knowledge_search, whoever writes that table.
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

    def _matching(
        self, stmt: Select[Any], groups: tuple[ConceptTerms, ...], pairs: bool
    ) -> Select[Any]:
        def group(terms: ConceptTerms) -> str:
            parts = [f"(words : ({' AND '.join(map(_fts_phrase, alt))}))" for alt in terms.words]
            for name, kind in (("pinyin", terms.pinyin), ("grams", terms.grams)):
                if kind:
                    parts.append(f"({name} : ({' OR '.join(map(_fts_phrase, kind))}))")
            return "(" + " OR ".join(parts) + ")"

        fts_query = _either([group(g) for g in groups], pairs, "AND", "OR")
        return (
            stmt.join(_FTS, _FTS.c.rowid == _DOCS.c.article_id)
            .where(text("knowledge_fts MATCH :fts_query").bindparams(fts_query=fts_query))
            .order_by(_FTS.c.rank)
        )


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresKnowledgeIndex(_SqlIndex):
    """Terms go in and out as tsvector/tsquery literals, so no text search parser (which
    would need a Chinese one) touches them; ranks are ts_rank over the GIN-indexed vector."""

    _WEIGHTS = ("A", "B", "C")

    def _vector(self, terms: DocumentTerms) -> Any:
        lexemes, position = [], 0
        for weight, kind in zip(
            self._WEIGHTS, (terms.words, terms.pinyin, terms.grams), strict=True
        ):
            for term in kind:
                position += 1
                lexemes.append(f"{_lexeme(term)}:{position}{weight}")
        return cast(" ".join(lexemes), TSVECTOR())

    def _matching(
        self, stmt: Select[Any], groups: tuple[ConceptTerms, ...], pairs: bool
    ) -> Select[Any]:
        def group(terms: ConceptTerms) -> str:
            parts = ["(" + " & ".join(f"{_lexeme(t)}:A" for t in alt) + ")" for alt in terms.words]
            parts += [f"{_lexeme(t)}:B" for t in terms.pinyin]
            parts += [f"{_lexeme(t)}:C" for t in terms.grams]
            return "(" + " | ".join(parts) + ")"

        tsquery = cast(_either([group(g) for g in groups], pairs, "&", "|"), TSQUERY())
        document: ColumnElement[Any] = _DOCS.c.document
        return stmt.where(document.op("@@")(tsquery)).order_by(
            func.ts_rank(document, tsquery).desc()
        )


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
