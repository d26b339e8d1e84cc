"""Which articles a search ranks in full (hotline/knowledge/search_base.py, step 2).

Each way of saying a concept is an alternative (terms.Alternative). The rarest, as many as
`budget` articles hold between them by the counts (knowledge_term), fetch the articles
holding them — in up to `PICK_ROUNDS` rounds, as words that must go together may go
together far less than the rarer one's count says. A common alternative fetches nothing,
but the articles fetched that also hold it are found (the rarest `boosts`, when more were
fetched than are ranked). Each article fetched scores per concept the best alternative it
holds, as ranking.Ranker would for an article of average length (more in the title), and
the best `CANDIDATES` are ranked; where the cut falls among equals, the shorter first.
When every alternative is common: pairs of the rarest concepts when the counts allow, else
the newest articles holding the rarest two. A database's part is only `_holding`,
`_newest`, `_lengths` and `_last_id`: the same answers give the same candidates on either.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from sqlalchemy.engine import Connection

from hotline.knowledge.ranking import FUZZY_SHARE, TITLE_GAIN, TermStats
from hotline.knowledge.terms import Alternative, Query

CANDIDATES = 100  # articles ranked in full
NEWEST_WINDOW = 4_000  # the newest articles looked through when every word is common
PICK_ROUNDS = 3  # rounds of rarest alternatives fetched, when the counts overstate
Group = tuple[Alternative, ...]  # an article holds a group when it holds any of them
Clause = tuple[Group, ...]  # an article holds a clause when it holds every group


class Candidates:
    """The choice of candidates, over what the database answers."""

    budget = 5_000  # articles the database hands over to pick the candidates from, at most
    common_groups = 3  # when every alternative is common: pairs of the rarest concepts
    boosts = 2  # common alternatives looked for among the articles the rarer ones fetch

    def _candidates(
        self,
        conn: Connection,
        query: Query,
        stats: TermStats,
        alternatives: Sequence[Alternative],
        *,
        newest: bool,
    ) -> list[int]:
        """Up to `CANDIDATES` articles, the likeliest first."""
        value = {alt: _worth(query, stats, alt) for alt in alternatives}
        # A word's characters side by side are held wherever the word is, and more: they
        # fetch for both, as sure as the word (the ranking tells them apart).
        twins = {(a.concept, a.kind, a.chars_of): a for a in alternatives if a.chars_of}
        kept = []
        for alt in alternatives:
            twin = twins.get((alt.concept, alt.kind, alt.terms[0])) if alt.field == "w" else None
            if twin is not None and len(alt.terms) == 1:
                value[twin] = _worth(query, stats, replace(twin, sure=alt.sure))
            else:
                kept.append(alt)
        # Two concepts said alike (办证's synonym 登记, and 登记): fetched once, for both.
        alike: dict[tuple[str, tuple[str, ...], bool], list[Alternative]] = {}
        for alt in kept:
            alike.setdefault((alt.field, alt.terms, alt.every), []).append(alt)
        alternatives = [same[0] for same in alike.values()]

        def credit(alt: Alternative, gain: float = 1.0) -> list[tuple[Alternative, float]]:
            same = alike[(alt.field, alt.terms, alt.every)]
            return [(a, value[a] * gain) for a in same]

        pending = sorted(
            ((stats.count(alt), i, alt) for i, alt in enumerate(alternatives)),
            key=lambda c: (c[0], c[1]),
        )
        pending = [entry for entry in pending if entry[0]]  # what no article holds: nothing
        # for each branch fetched, what an article holding it holds and what that is worth,
        # and the articles found for each
        worth: list[list[tuple[Alternative, float]]] = []
        found: list[list[int]] = []
        lengths: dict[int, int] = {}  # of articles fetched, when the database tells them
        picks: list[Alternative] = []
        fetched = 0
        # The rarest alternatives, as many as the budget holds by the counts. Words that
        # must go together are counted as the rarer of them (高龄 and 补贴: 2,779), but
        # may go together far less (none): then the next ones, with what is left.
        for _round in range(PICK_ROUNDS):
            batch: list[Alternative] = []
            bound = fetched
            for held, _order, alt in pending:
                if bound + held > self.budget:
                    break
                batch.append(alt)
                bound += held
            if not batch:
                break
            pending = pending[len(batch) :]
            branches: list[Clause] = []
            for alt in batch:
                worth.append(credit(alt))
                branches.append(((alt,),))
                titled = alt.in_title()  # the same in the title: worth more (ranking.Ranker)
                if titled is not None:
                    worth.append(credit(alt, TITLE_GAIN))
                    branches.append(((alt,), (titled,)))
            found += self._holding(conn, branches, lengths)
            fetched = sum(len(ids) for ids in found)
            picks += batch
        common = [alt for _, _, alt in pending]
        if not picks:
            if not newest or not common:
                return []
            return self._common_only(conn, stats, value, common)
        # A common alternative fetches nothing, but the articles fetched that also hold it
        # rank higher: 检修 among the thousands holding 停电 (when more were fetched than
        # are ranked: else all are ranked anyway).
        branches = []
        boosts = []
        if len(set().union(*found)) > CANDIDATES:
            # not those worth less than what picked for the same word: the best counts
            group = query.overlapping
            picked: dict[int, float] = {}
            for alt, points in (credited for pick in picks for credited in credit(pick)):
                key = group[alt.concept] if alt.concept >= 0 else alt.concept
                picked[key] = max(picked.get(key, 0.0), points)
            boosts = [
                alt
                for alt in common
                if value[alt]
                > picked.get(group[alt.concept] if alt.concept >= 0 else alt.concept, 0.0)
            ][: self.boosts]
        for alt in boosts:
            worth.append(credit(alt))
            branches.append((tuple(picks), (alt,)))
        found += self._holding(conn, branches, lengths)
        best: dict[int, dict[int, float]] = defaultdict(dict)
        for credited, ids in zip(worth, found, strict=True):
            for alt, points in credited:
                # overlapping words count once (the ranking's rule)
                said = query.overlapping[alt.concept] if alt.concept >= 0 else alt.concept
                per_article = best[said]
                for article_id in ids:
                    if per_article.get(article_id, 0.0) < points:
                        per_article[article_id] = points
        return self._best(conn, best.values(), lengths)

    def _common_only(
        self,
        conn: Connection,
        stats: TermStats,
        value: dict[Alternative, float],
        alternatives: Sequence[Alternative],
    ) -> list[int]:
        """Every alternative is common (街道, 通知): the articles holding two of the rarest
        concepts, when the counts say few enough may; else the newest holding the rarest
        two (ranking tens of thousands that all say 街道 and 通知 tells nothing) — among
        the newest articles only, as many as should hold `CANDIDATES` of them (so that a
        pair rarer than the counts guess is not looked for through the whole base)."""
        groups: dict[tuple[Alternative, ...], int] = {}  # concepts said alike count once
        for concept in dict.fromkeys(a.concept for a in alternatives):
            group = tuple(replace(a, concept=0) for a in alternatives if a.concept == concept)
            groups.setdefault(group, concept)
        rarest = [(tuple(a for a in alternatives if a.concept == c), c) for c in groups.values()][
            : self.common_groups
        ]
        articles = max(stats.articles, 1)
        held = [min(sum(stats.count(a) for a in group), articles) for group, _ in rarest]
        pairs = [(i, j) for i in range(len(rarest)) for j in range(i + 1, len(rarest))]
        fits, total = [], 0
        for i, j in sorted(pairs, key=lambda p: min(held[p[0]], held[p[1]])):
            bound = min(held[i], held[j])  # at most; the words may always go together
            if total + bound <= self.budget:
                fits.append((i, j))
                total += bound
        if fits:
            lengths: dict[int, int] = {}
            found = self._holding(conn, [(rarest[i][0], rarest[j][0]) for i, j in fits], lengths)
            best: dict[int, dict[int, float]] = defaultdict(dict)
            for n, ((i, j), ids) in enumerate(zip(fits, found, strict=True)):
                points = sum(max(value[a] for a in rarest[k][0]) for k in (i, j))
                for article_id in ids:
                    best[n][article_id] = points
            return self._best(conn, best.values(), lengths)
        two = rarest[:2]
        expected = math.prod(h / articles for h in held[:2]) or 1.0  # were they independent
        window = min(NEWEST_WINDOW, math.ceil(2 * CANDIDATES / expected))
        clause: Clause = tuple(group for group, _ in two)
        return self._newest(conn, clause, CANDIDATES, after=self._last_id(conn) - window)

    def _best(
        self, conn: Connection, per_concept: Iterable[dict[int, float]], lengths: dict[int, int]
    ) -> list[int]:
        """The `CANDIDATES` articles with the most points over the concepts. Where the
        cut falls among equals (the same words held in the same places: notices written
        from one template), the shorter first, as the ranking's length normalisation has
        it, then the newer."""
        points: Counter[int] = Counter()
        for best in per_concept:
            points.update(best)
        ranked = heapq.nlargest(CANDIDATES + 1, points.items(), key=_by_points)
        if len(ranked) <= CANDIDATES or ranked[-1][1] != ranked[-2][1]:
            return [article_id for article_id, _ in ranked[:CANDIDATES]]
        edge = ranked[-1][1]
        above = [article_id for article_id, p in ranked if p > edge]
        tied = [article_id for article_id, p in points.items() if p == edge]
        missing = [article_id for article_id in tied if article_id not in lengths]
        if missing:
            lengths = lengths | self._lengths(conn, missing)
        tied.sort(key=lambda article_id: (lengths.get(article_id, 0), -article_id))
        return above + tied[: CANDIDATES - len(above)]

    def _last_id(self, conn: Connection) -> int:
        """The highest article id in the index."""
        raise NotImplementedError

    def _holding(
        self, conn: Connection, clauses: Sequence[Clause], lengths: dict[int, int]
    ) -> list[list[int]]:
        """For each clause, the articles of the index holding it (any order); `lengths`
        gets the number of words of those it reads anyway."""
        raise NotImplementedError

    def _newest(self, conn: Connection, clause: Clause, n: int, *, after: int) -> list[int]:
        """The `n` newest (highest id) articles holding the clause with an id above `after`,
        newest first."""
        raise NotImplementedError

    def _lengths(self, conn: Connection, article_ids: Sequence[int]) -> dict[int, int]:
        """How many words each article's document has."""
        raise NotImplementedError


def _worth(query: Query, stats: TermStats, alt: Alternative) -> float:
    """What holding the alternative is worth before the ranking proper (ranking.Ranker for an
    article of average length with the word in its body)."""
    weight = query.concepts[alt.concept].weight if alt.concept >= 0 else 1.0
    if not alt.every:  # a near spelling: an article may hold just half, the commonest
        idf = min(stats.idf(alt.field, t) for t in alt.terms)
        return weight * alt.sure * FUZZY_SHARE * idf
    return weight * alt.sure * stats.alternative_idf(alt)


def _by_points(item: tuple[int, float]) -> tuple[float, int]:
    # The points are sums of the same values in the same order on either database: equal
    # ones are exactly equal.
    return item[1], item[0]
