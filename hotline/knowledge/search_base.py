"""What both knowledge search engines share (hotline/knowledge/search.py has the SQLite FTS5
and PostgreSQL implementations and `make_index`): the hit with its reasons, the
`KnowledgeIndex` protocol, and `_SqlIndex` — the search documents, the filter of what is in
service, the choice of candidates by the rarest concepts, and the scoring here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    or_,
    select,
)
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
    base_rarity,
    default_synonyms,
    document_terms,
    either,
    normalise,
    parse_query,
    score,
)

CANDIDATES = 200  # articles the database picks to be scored here
REBUILD_PAGE = 500  # versions indexed per statement by a rebuild
Clause = tuple[ConceptTerms, ...]  # groups an article must all hold

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

    budget = 10_000  # articles the database ranks to pick the candidates, at most
    common_groups = 3  # when every group is common: the rarest, paired, pick the candidates
    boosts = 3  # common groups that rank the candidates the others pick, the rarest first

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
        dictionary or the term rules); returns how many. In pages of `REBUILD_PAGE`
        versions, each written in one statement."""
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
            document=self._vector_of(bindparam("document")),
        )
        indexed, after = 0, None
        with self._connection() as conn:
            conn.execute(delete(_DOCS))
            while True:
                page = (
                    in_service
                    if after is None
                    else in_service.where(_VERSIONS.c.article_id > after)
                )
                rows = conn.execute(page).all()
                if not rows:
                    return indexed
                params = []
                for row in rows:
                    terms = document_terms(KnowledgeArticleVersion.model_construct(**row._mapping))
                    params.append(
                        {
                            "article_id": row.article_id,
                            "version": row.version,
                            "words": " ".join(terms.words),
                            "pinyin": " ".join(terms.pinyin),
                            "grams": " ".join(terms.grams),
                            "document": self._vector_text(terms),
                        }
                    )
                conn.execute(insert, params)
                indexed, after = indexed + len(rows), rows[-1].article_id

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
        with self._connection() as conn:
            concepts = parsed.concept_terms()
            singles: list[Clause] = [(c,) for c in concepts]
            counts = self._held(conn, singles) if concepts else []
            held = {c.word: n for c, n in zip(concepts, counts, strict=True)}
            in_base = {
                c.word: base_rarity(n, self.budget)
                for c, n in zip(concepts, self._held_in_base(conn, singles, counts), strict=True)
            }
            chosen = parsed.candidate_terms()
            ranked = self._ranked(conn, stmt, parsed, chosen, held, in_base)
            if not ranked:
                # The most telling words found nothing they say: the others may.
                others = tuple(c for c in concepts if c.word not in {g.word for g in chosen})
                ranked = self._ranked(conn, stmt, parsed, others, held, in_base)
            if not ranked and parsed.grams:
                # No word of the query matched as said: the scoring falls back to the
                # query's characters (terms.score), so fetch the articles holding them.
                grams = tuple(ConceptTerms(grams=(g,)) for g in sorted(parsed.grams))
                ranked = self._ranked(conn, stmt, parsed, grams, {}, in_base)
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [hit for _, _, hit in ranked[:limit]]

    def _ranked(
        self,
        conn: Connection,
        stmt: Select[Any],
        parsed: Query,
        groups: tuple[ConceptTerms, ...],
        held: dict[str, int],
        in_base: dict[str, float],
    ) -> list[tuple[float, int, KnowledgeHit]]:
        """The candidates the database picks, scored here: the articles holding the most of
        the query's groups, by the database's rank. The rarest groups pick them, as many as
        hold `budget` articles between them: a group half the base holds (工作, 通知) would
        have the database rank tens of thousands of articles for nothing; it still counts
        in the scoring. When even the rarest is that common, the articles holding two of
        the groups pick them; when those are still that many, the newest of them (ranking
        tens of thousands of articles that all say 街道 and 通知 tells nothing)."""
        if not groups:
            return []
        counts = [held[g.word] for g in groups] if all(g.word in held for g in groups) else None
        found = self._within_budget(conn, [(g,) for g in groups], counts)
        newest = False
        if not found:
            return []
        common = [clause[0] for clause, _, fits in found if not fits][: self.boosts]
        if not any(fits for _, _, fits in found):
            rarest = [clause[0] for clause, _, _ in found[: self.common_groups]]
            pairs: list[Clause] = [
                (a, b) for i, a in enumerate(rarest) for b in rarest[i + 1 :]
            ] or [(g,) for g in rarest]
            singles = found
            found = self._within_budget(conn, pairs)
            newest = not any(fits for _, _, fits in found)
            if newest:  # the rarest pair some article holds, else the rarest group
                found = [(clause, n, True) for clause, n, _ in (found or singles)[:1]]
        clauses = [(clause, sum(g.weight for g in clause)) for clause, n, fits in found if fits]
        if not clauses:
            return []
        if common and not newest:
            # A common concept picks no candidates, but among those picked, the ones that
            # also hold it rank higher: 检修 among the thousands holding 停电. Paired with
            # the picking concepts, it reads no more articles than they do.
            picking = either([g for clause, _ in clauses for g in clause])
            clauses += [((picking, g), g.weight) for g in common]
        ids = self._candidates(conn, clauses, newest=newest)
        if not ids:
            return []
        order = {article_id: -i for i, article_id in enumerate(ids)}
        rows = conn.execute(stmt.where(_DOCS.c.article_id.in_(ids))).all()
        ranked = []
        for row in rows:
            doc = Document(row.words, row.pinyin, row.grams, title=normalise(row.title))
            points, matches = score(parsed, doc, in_base)
            if matches:
                hit = KnowledgeHit(
                    article_id=row.article_id,
                    number=row.number,
                    version=row.version,
                    title=row.title,
                    score=points,
                    matches=matches,
                )
                ranked.append((points, order[row.article_id], hit))  # ties: the database's
        return ranked

    def _vector(self, terms: DocumentTerms) -> Any:
        return self._vector_of(self._vector_text(terms))

    def _vector_text(self, terms: DocumentTerms) -> str | None:
        return None

    def _vector_of(self, value: Any) -> Any:
        return value

    def _within_budget(
        self, conn: Connection, clauses: list[Clause], counts: list[int] | None = None
    ) -> list[tuple[Clause, int, bool]]:
        """The clauses some article holds, the rarest first: each with how many articles
        hold it (counted up to `budget` + 1) and whether it fits, with the rarer ones,
        within the `budget` of articles the database ranks."""
        counted = sorted(
            (
                (c, n)
                for c, n in zip(clauses, counts or self._held(conn, clauses), strict=True)
                if n
            ),
            key=lambda found: found[1],
        )
        out, total = [], 0
        for clause, held in counted:
            total += held
            out.append((clause, held, total <= self.budget))
        return out

    def _held_in_base(self, conn: Connection, clauses: list[Clause], held: list[int]) -> list[int]:
        """How many articles hold each clause, for `base_rarity` (`held`: as `_held` said)."""
        return held

    def _held(self, conn: Connection, clauses: list[Clause]) -> list[int]:
        """For each clause (groups an article must all hold), how many articles hold it,
        counted up to `budget` + 1 (the count stops there: more is "common")."""
        raise NotImplementedError

    def _candidates(
        self, conn: Connection, clauses: list[tuple[Clause, float]], *, newest: bool = False
    ) -> list[int]:
        """Up to `CANDIDATES` articles holding any of the weighted clauses, best first (with
        `newest`: the most recently created first, ranking nothing)."""
        raise NotImplementedError


# FTS5 keeps its index in shadow tables (knowledge_fts_data, _idx, ...) that Alembic's schema
# comparison cannot be told to skip (hotline/migrate.py), so the migrations do not create it:
# the SQLite index does, once per database, from the documents already there. Triggers keep
# it in step with knowledge_search, whoever writes that table.
