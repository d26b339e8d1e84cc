"""What both knowledge search engines share (hotline/knowledge/search.py has the SQLite FTS5
and PostgreSQL implementations and `make_index`): the hit with its reasons, the
`KnowledgeIndex` protocol, and `_SqlIndex` — the search documents and the counts of their
terms (knowledge_term), the choice of candidates, and their ranking (ranking.Ranker).

A database only answers "which articles hold this term (these terms)": SQLite from its FTS5
index, PostgreSQL from the GIN index of its tsvector. Everything else is decided here, from
the same numbers, so the same query finds the same articles in the same order on either:

1. The counts: how many articles hold each of the query's terms, from knowledge_term (kept
   with the index on publish, retire and rebuild; exact on both databases).
2. The candidates (hotline/knowledge/candidates.py): the articles holding the rarest ways
   of saying the caller's concepts, within a budget, scored per concept as the ranking
   would; the best `CANDIDATES` are ranked.
3. The ranking (ranking.Ranker, BM25 with a title field, over the candidates' terms), with a
   tie-break that means something: how much of the query the title names, then how often
   operators answered with the article, then the more recently published, then the newer.
Only articles in service at the moment asked are returned (and for the region asked).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session

from hotline.knowledge.candidates import Candidates
from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeArticleVersion,
    KnowledgeSearchDoc,
    KnowledgeTerm,
    KnowledgeUse,
    UseKind,
)
from hotline.knowledge.ranking import Document, Match, Ranked, Ranker, TermStats
from hotline.knowledge.terms import (
    MAX_TERM_LENGTH,
    DocumentTerms,
    Query,
    Synonyms,
    default_synonyms,
    document_terms,
    normalise,
    parse_query,
)

REBUILD_PAGE = 500  # versions indexed per statement by a rebuild
COUNT_PAGE = 2_000  # knowledge_term rows written per statement
FIELDS = (("w", "words"), ("p", "pinyin"), ("g", "grams"))  # knowledge_term.kind, column
TOTALS = "#"  # knowledge_term.kind of the totals

_ARTICLES = KnowledgeArticle.__table__  # type: ignore[attr-defined]
_VERSIONS = KnowledgeArticleVersion.__table__  # type: ignore[attr-defined]
_DOCS = KnowledgeSearchDoc.__table__  # type: ignore[attr-defined]
_TERMS = KnowledgeTerm.__table__  # type: ignore[attr-defined]
_USES = KnowledgeUse.__table__  # type: ignore[attr-defined]
_ADD_COUNTS = text(
    "INSERT INTO knowledge_term (term, kind, articles) VALUES (:term, :kind, :articles) "
    "ON CONFLICT (term, kind) DO UPDATE SET articles = knowledge_term.articles + "
    "excluded.articles"
)


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


def term_counts(terms: DocumentTerms | Row[Any]) -> Counter[tuple[str, str]]:
    """The knowledge_term rows one article adds: one for each of its terms, and the totals."""
    counts: Counter[tuple[str, str]] = Counter()
    for kind, name in FIELDS:
        given = getattr(terms, name)
        # an index written before 0024 may hold longer terms: knowledge_term has no room
        held = [t for t in (given.split() if isinstance(given, str) else given) if _countable(t)]
        counts.update((kind, t) for t in held)
        if kind == "w":
            counts[(TOTALS, "words")] += len(held)
    counts[(TOTALS, "articles")] += 1
    return counts


def _countable(term: str) -> bool:
    return len(term) <= MAX_TERM_LENGTH


class _SqlIndex(Candidates):
    """What both databases share: the documents and their counts, the filter of what is in
    service, the choice of candidates (`Candidates`) and the ranking."""

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
                yield conn

    # ------------------------------------------------------------ writing

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
            terms = document_terms(row)  # the row: no model to build (or configure)
            counts = term_counts(terms)
            counts.subtract(self._drop(conn, article.id))
            conn.execute(
                _DOCS.insert().values(
                    article_id=article.id,
                    version=article.published_version,
                    words=" ".join(terms.words),
                    pinyin=" ".join(terms.pinyin),
                    grams=" ".join(terms.grams),
                    title=" ".join(terms.title),
                    length=len(terms.words),
                    document=self._vector_of(self._vector_value(terms)),
                )
            )
            self._count(conn, counts)

    def remove(self, article_id: int) -> None:
        with self._connection() as conn:
            counts: Counter[tuple[str, str]] = Counter()
            counts.subtract(self._drop(conn, article_id))
            self._count(conn, counts)

    def _drop(self, conn: Connection, article_id: int) -> Counter[tuple[str, str]]:
        """Delete the article's document; the counts it had added."""
        old = conn.execute(
            select(_DOCS.c.words, _DOCS.c.pinyin, _DOCS.c.grams).where(
                _DOCS.c.article_id == article_id
            )
        ).first()
        if old is None:
            return Counter()
        conn.execute(delete(_DOCS).where(_DOCS.c.article_id == article_id))
        return term_counts(old)

    def _count(self, conn: Connection, counts: Counter[tuple[str, str]]) -> None:
        """Add `counts` to knowledge_term (in key order: two publishing at once wait for
        each other, never deadlock), and forget the terms no article holds any more."""
        changes = sorted((key, n) for key, n in counts.items() if n)
        for start in range(0, len(changes), COUNT_PAGE):
            conn.execute(
                _ADD_COUNTS,
                [
                    {"kind": kind, "term": term, "articles": n}
                    for (kind, term), n in changes[start : start + COUNT_PAGE]
                ],
            )
        if any(n < 0 for _, n in changes):
            conn.execute(delete(_TERMS).where(_TERMS.c.articles <= 0, _TERMS.c.kind != TOTALS))

    def rebuild(self) -> int:
        """Index every article in service again (after a restore or a change of jieba's
        dictionary or the term rules), and count their terms again; returns how many. In
        pages of `REBUILD_PAGE` versions, each written in one statement."""
        in_service = (
            select(_VERSIONS)
            .join(
                _ARTICLES,
                and_(
                    _ARTICLES.c.id == _VERSIONS.c.article_id,
                    _ARTICLES.c.published_version == _VERSIONS.c.version,
                ),
            )
            .where(_ARTICLES.c.status != ArticleStatus.retired.value)
            .order_by(_VERSIONS.c.article_id)
            .limit(REBUILD_PAGE)
        )
        insert = _DOCS.insert().values(
            article_id=bindparam("article_id"),
            version=bindparam("version"),
            words=bindparam("words"),
            pinyin=bindparam("pinyin"),
            grams=bindparam("grams"),
            title=bindparam("title"),
            length=bindparam("length"),
            document=self._vector_of(bindparam("document")),
        )
        indexed, after = 0, None
        counts: Counter[tuple[str, str]] = Counter()
        with self._connection() as conn:
            conn.execute(delete(_DOCS))
            conn.execute(delete(_TERMS))
            while True:
                page = (
                    in_service
                    if after is None
                    else in_service.where(_VERSIONS.c.article_id > after)
                )
                rows = conn.execute(page).all()
                if not rows:
                    break
                params = []
                for row in rows:
                    terms = document_terms(row)  # the row: no model to build (or configure)
                    counts.update(term_counts(terms))
                    params.append(
                        {
                            "article_id": row.article_id,
                            "version": row.version,
                            "words": " ".join(terms.words),
                            "pinyin": " ".join(terms.pinyin),
                            "grams": " ".join(terms.grams),
                            "title": " ".join(terms.title),
                            "length": len(terms.words),
                            "document": self._vector_value(terms),
                        }
                    )
                conn.execute(insert, params)
                indexed, after = indexed + len(rows), rows[-1].article_id
            self._count(conn, counts)
            self._settle(conn)
        return indexed

    def _settle(self, conn: Connection) -> None:
        """After a rebuild: what the database should do with an index written anew."""

    def _vector_value(self, terms: DocumentTerms) -> Any:
        """What the `document` column holds (PostgreSQL: the lexemes of its tsvector)."""
        return None

    def _vector_of(self, value: Any) -> Any:
        return value

    # ------------------------------------------------------------ searching

    def search(
        self, query: str, *, now: datetime, region: str | None = None, limit: int = 10
    ) -> list[KnowledgeHit]:
        parsed = parse_query(query, self.synonyms)
        if parsed.empty or limit <= 0:
            return []
        with self._connection() as conn:
            stats = self._stats(conn, parsed)
            ranker = Ranker(parsed, stats)
            picking = [a for a in parsed.alternatives if a.concept in parsed.picking]
            others = [a for a in parsed.alternatives if a.concept not in parsed.picking]
            hits: list[KnowledgeHit] = []
            # The most telling words first; if they find nothing they say, the others may;
            # if no word matched as said, the query's characters (never the newest articles
            # holding some of them: that tells nothing).
            for alternatives, newest in (
                (picking, True),
                (others, True),
                (parsed.spelling(), False),
            ):
                if not alternatives:
                    continue
                ids = self._candidates(conn, parsed, stats, alternatives, newest=newest)
                hits = self._ranked(conn, ids, ranker, now=now, region=region, limit=limit)
                if hits:
                    break
        return hits

    def _stats(self, conn: Connection, query: Query) -> TermStats:
        """The counts of the query's terms (and the totals), from knowledge_term."""
        alternatives = (*query.alternatives, *query.fallback())
        keys = {(a.field, t) for a in alternatives for t in a.terms}
        terms = sorted({t for _, t in keys} | {"articles", "words"})
        rows = conn.execute(
            select(_TERMS.c.kind, _TERMS.c.term, _TERMS.c.articles).where(
                self._among(_TERMS.c.term, "terms", str)
            ),
            {"terms": self._values(terms)},
        ).all()
        held = {(kind, term): n for kind, term, n in rows if (kind, term) in keys}
        totals = {term: n for kind, term, n in rows if kind == TOTALS}
        return TermStats(totals.get("articles", 0), totals.get("words", 0), held)

    def _last_id(self, conn: Connection) -> int:
        return conn.execute(select(func.max(_DOCS.c.article_id))).scalar() or 0

    def _ranked(
        self,
        conn: Connection,
        ids: list[int],
        ranker: Ranker,
        *,
        now: datetime,
        region: str | None,
        limit: int,
    ) -> list[KnowledgeHit]:
        """The candidates in service, ranked (module docstring, step 3)."""
        if not ids:
            return []
        fields = {a.field for a in (*ranker.query.alternatives, *ranker.query.fallback())}
        rows = conn.execute(
            _in_service(now, region, pinyin="p" in fields, grams="g" in fields).where(
                self._among(_DOCS.c.article_id, "ids", int)
            ),
            {"ids": self._values(ids)},
        ).all()
        ranked: list[tuple[Ranked, Row[Any]]] = []
        for row in rows:
            doc = Document(
                row.words,
                getattr(row, "pinyin", ""),
                getattr(row, "grams", ""),
                title=normalise(row.title),
            )
            result = ranker.rank(doc)
            if result.matches:
                ranked.append((result, row))
        ranked.sort(key=lambda r: (r[0].points, r[0].title_share), reverse=True)
        uses = self._uses(conn, ranked, limit)

        def order(item: tuple[Ranked, Row[Any]]) -> tuple[Any, ...]:
            result, row = item
            published = row.published_at.timestamp() if row.published_at else 0.0
            return (
                -result.points,
                -result.title_share,
                -uses.get(row.article_id, 0),
                -published,
                -row.article_id,
            )

        ranked.sort(key=order)
        return [
            KnowledgeHit(
                article_id=row.article_id,
                number=row.number,
                version=row.version,
                title=row.title,
                score=result.points,
                matches=result.matches,
            )
            for result, row in ranked[:limit]
        ]

    def _uses(
        self, conn: Connection, ranked: list[tuple[Ranked, Row[Any]]], limit: int
    ) -> dict[int, int]:
        """How often operators answered with each article tied (same points, same share of
        the title) with another one among the first `limit`: asked only then."""
        keys = [(result.points, result.title_share) for result, _ in ranked]
        shown = Counter(keys)
        tied = {key for key in keys[:limit] if shown[key] > 1}
        ids = [row.article_id for (_, row), key in zip(ranked, keys, strict=True) if key in tied]
        if not ids:
            return {}
        rows = conn.execute(
            select(_USES.c.article_id, func.count())
            .where(
                self._among(_USES.c.article_id, "ids", int),
                _USES.c.kind == UseKind.answered.value,
            )
            .group_by(_USES.c.article_id),
            {"ids": self._values(ids)},
        ).all()
        return {article_id: n for article_id, n in rows}  # noqa: C416 (rows of two)

    # ------------------------------------------------------------ the database's part

    def _among(self, column: Any, name: str, kind: type) -> Any:
        """`column` is one of the values bound as `name` (`_values`): one parameter, where
        an IN list of thousands would be rendered into the statement each time."""
        raise NotImplementedError

    def _values(self, values: Sequence[Any]) -> Any:
        return list(values)


def _in_service(now: datetime, region: str | None, *, pinyin: bool, grams: bool) -> Select[Any]:
    """The indexed documents of articles in service at `now` (published, not retired, the
    indexed version the published one, valid at `now`, for the region or the whole city),
    with what the ranking reads."""
    conditions = [
        or_(_VERSIONS.c.valid_from.is_(None), _VERSIONS.c.valid_from <= now),
        or_(_VERSIONS.c.valid_until.is_(None), _VERSIONS.c.valid_until > now),
    ]
    if region is not None:
        conditions.append(or_(_VERSIONS.c.region.is_(None), _VERSIONS.c.region == region))
    columns = [
        _DOCS.c.article_id,
        _ARTICLES.c.number,
        _ARTICLES.c.published_at,
        _DOCS.c.version,
        _VERSIONS.c.title,
        _DOCS.c.words,
    ]
    columns += [_DOCS.c.pinyin] if pinyin else []
    columns += [_DOCS.c.grams] if grams else []
    return (
        select(*columns)
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
        .where(*conditions)
    )
