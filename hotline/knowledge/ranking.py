"""How articles rank for a query: the one ranking both databases' candidates go through
(hotline/knowledge/search_base.py fetches them; pure).

Okapi BM25 with a title field over the caller's concepts (hotline/knowledge/terms.py), each
by the best of its alternatives the article holds: the caller's weight for the word × how
sure the match is (word 1, synonym 0.85, same sound 0.75, near spelling 0.5 × the share of
its bigrams; the same characters cut otherwise 0.9 of it) × the idf of the article's words
it matched in this base (`TermStats`, the knowledge_term counts: an official term few
articles use says more than the caller's word many do) × BM25's saturation, the title
counting `TITLE_WEIGHT` more, normalised by the article's length — plus a bonus for two
words the caller said one after the other that the title says side by side. Overlapping
words of the caller (建国 in 章建国) count once. Every hit names its reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from hotline.knowledge.terms import FACTORS, Alternative, Query, sounds


@dataclass(frozen=True)
class TermStats:
    """How many articles of the index hold each term (`held`, keyed by field and term), how
    many articles there are and their words together: the knowledge_term table, the same
    on both databases, so the same query ranks the same articles alike on either."""

    articles: int = 0
    words: int = 0
    held: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def count(self, alternative: Alternative) -> int:
        """At most how many articles hold the alternative: its rarest term's count (all
        must be there), or for a near spelling its bigrams' counts together."""
        counts = [self.held.get((alternative.field, t), 0) for t in alternative.terms]
        if not counts:
            return 0
        return min(counts) if alternative.every else min(sum(counts), max(self.articles, 1))

    def idf(self, field_: str, term: str) -> float:
        """BM25's idf: ln(1 + (N - n + 0.5) / (n + 0.5)), n articles of N holding the term
        (one at least: a term the counts do not know yet is taken as rare)."""
        total = max(self.articles, 1)
        held = min(max(self.held.get((field_, term), 0), 1), total)
        return math.log(1 + (total - held + 0.5) / (held + 0.5))

    def alternative_idf(self, alternative: Alternative, terms: Sequence[str] = ()) -> float:
        """An alternative of several words is about as rare as its rarest word, and a
        little rarer for each other one (they go together more often than chance would
        have it); a near spelling counts its bigrams' average (`terms`: those held)."""
        idfs = sorted(
            (self.idf(alternative.field, t) for t in (terms or alternative.terms)), reverse=True
        )
        if not idfs:
            return 0.0
        if not alternative.every:
            return sum(idfs) / len(idfs)
        return min(self.idf("w", ""), idfs[0] + JOINT_IDF * sum(idfs[1:]))

    @property
    def average_length(self) -> float:
        return self.words / self.articles if self.articles and self.words else 1.0


@dataclass(frozen=True)
class Match:
    """Why an article was found: the caller's word, the article's words it matched, and
    how — "word", "synonym", "pinyin" (same sound) or "fuzzy" (near spelling)."""

    query_word: str
    article_words: tuple[str, ...]
    kind: str


class Document:
    """An article's terms, as the ranking reads them: given as sets, or as the
    space-separated text the index stores. The words are split once (most of what the
    ranking asks); a pinyin pair or a bigram is looked for in the text itself (a few are
    asked of each article, and splitting hundreds of them would cost more)."""

    def __init__(
        self,
        words: frozenset[str] | str,
        pinyin: frozenset[str] | str = frozenset(),
        grams: frozenset[str] | str = frozenset(),
        title: str = "",  # normalised: a concept the title names counts more
    ) -> None:
        self.words = frozenset(words.split()) if isinstance(words, str) else words
        self._given = {"p": pinyin, "g": grams}
        self.title = title

    @cached_property
    def pinyin(self) -> frozenset[str]:
        return self._set("p")

    @cached_property
    def grams(self) -> frozenset[str]:
        return self._set("g")

    def _set(self, field_: str) -> frozenset[str]:
        given = self._given[field_]
        return frozenset(given.split()) if isinstance(given, str) else given

    @cached_property
    def _padded(self) -> dict[str, str]:
        return {k: f" {v} " for k, v in self._given.items() if isinstance(v, str)}

    def holds(self, field_: str, term: str) -> bool:
        if field_ == "w":
            return term in self.words
        padded = self._padded.get(field_)
        if padded is not None:
            return f" {term} " in padded
        return term in self._set(field_)


# Okapi BM25 with a title field (BM25F): an article's terms are distinct (no counts), so a
# term counts once in the body and TITLE_WEIGHT times more when the title names it; long
# articles count a little less (B), as those saying everything say less of each thing.
K1 = 1.2
B = 0.4
TITLE_WEIGHT = 2.0
JOINT_IDF = 0.25
# what the title adds to a word of an article of average length
TITLE_GAIN = (1 + TITLE_WEIGHT) * (K1 + 1) / (1 + TITLE_WEIGHT + K1)
FUZZY_SHARE = 0.5
# Two of the caller's words the title says side by side (夜间施工): a phrase, not two
# words that happen to be in the same notice.
PROXIMITY = 0.3
PROXIMITY_GAP = 2  # characters between them, at most


@dataclass(frozen=True)
class Ranked:
    """An article's points for a query, the share of the query its title names (the first
    tie-break), and the reasons."""

    points: float
    title_share: float
    matches: tuple[Match, ...]


_Found = tuple[float, int, Alternative, bool, tuple[str, ...]]


class Ranker:
    """The one ranking both databases' candidates go through (hotline/knowledge/search_base
    fetches them): per concept the best of its alternatives the article holds — the
    caller's weight for the word × how sure the match is × the idf of the article's words
    it matched (from `TermStats`) × BM25F's saturation of title and body, normalised by the
    article's length — plus a bonus for two of the caller's words the title says side by
    side. Pure: the same candidates and counts rank the same everywhere."""

    def __init__(self, query: Query, stats: TermStats) -> None:
        self.query = query
        self.stats = stats
        # per concept: (alternative, the caller's weight × how sure × idf, that idf)
        self._options: list[list[tuple[Alternative, float, float]]] = [[] for _ in query.concepts]
        for alt in query.alternatives:
            idf = stats.alternative_idf(alt)
            weight = query.concepts[alt.concept].weight * alt.sure
            self._options[alt.concept].append((alt, weight * idf, idf))
        self._total_weight = sum(c.weight for c in query.concepts) or 1.0

    def rank(self, doc: Document) -> Ranked:
        norm = 1 - B + B * len(doc.words) / self.stats.average_length
        body = (K1 + 1) / (1 + K1 * norm)
        titled = (1 + TITLE_WEIGHT) * (K1 + 1) / (1 + TITLE_WEIGHT + K1 * norm)
        title, words = doc.title, doc.words
        found: list[_Found] = []
        for i, options in enumerate(self._options):
            best: _Found | None = None
            for alt, base, idf in options:
                held: tuple[str, ...] = ()
                if alt.field == "w":  # most asked: the words, a set
                    if not all(t in words for t in alt.terms):
                        continue
                    share = 1.0
                elif alt.every:
                    if not all(doc.holds(alt.field, t) for t in alt.terms):
                        continue
                    share = 1.0
                else:  # a near spelling: the share of its bigrams held, and their idf
                    held = tuple(t for t in alt.terms if doc.holds(alt.field, t))
                    share = len(held) / len(alt.terms)
                    if share < FUZZY_SHARE:
                        continue
                    base *= self.stats.alternative_idf(alt, held) / (idf or 1.0)
                in_title = (
                    alt.every
                    and alt.field != "p"
                    and bool(title)
                    and all(t in title for t in alt.terms)
                )
                value = base * share * (titled if in_title else body)
                if best is None or value > best[0]:
                    best = (value, i, alt, in_title, held)
            if best is not None:
                found.append(best)
        if not found:
            return self._spelling(doc, body)
        found.sort(key=lambda f: (-f[0], f[1]))
        total, titles = 0.0, 0.0
        matches: list[Match] = []
        counted: list[tuple[int, Match, float]] = []
        for value, i, alt, in_title, held in found:
            word = self.query.concepts[i].word
            # Overlapping words (建国 in 章建国) are one thing the caller said: the better
            # match of the two is the reason, and counts once.
            if any(word in m.query_word or m.query_word in word for m in matches):
                continue
            match = _reason(alt, word, held, doc)
            matches.append(match)
            counted.append((i, match, value))
            total += value
            titles += self.query.concepts[i].weight * in_title
        total += self._side_by_side(counted, title)
        return Ranked(round(total, 4), round(titles / self._total_weight, 4), tuple(matches))

    def _side_by_side(self, counted: list[tuple[int, Match, float]], title: str) -> float:
        """PROXIMITY of the lesser of two words the caller said one after the other, when
        the title has the article's words for them within PROXIMITY_GAP characters."""
        if len(counted) < 2 or not title:
            return 0.0
        said = sorted(counted, key=lambda c: self.query.concepts[c[0]].at)
        bonus = 0.0
        for (_, first, a), (_, second, b) in zip(said, said[1:], strict=False):
            if first.kind == "fuzzy" or second.kind == "fuzzy":
                continue
            if _near(first.article_words, second.article_words, title):
                bonus += PROXIMITY * min(a, b)
        return bonus

    def _spelling(self, doc: Document, body: float) -> Ranked:
        """No word matched as said (all mangled): the query's characters, as a near
        spelling of the whole query."""
        for alt in self.query.fallback():
            held = tuple(t for t in alt.terms if doc.holds("g", t))
            share = len(held) / len(alt.terms)
            if share >= FUZZY_SHARE:
                points = FACTORS["fuzzy"] * share * self.stats.alternative_idf(alt, held) * body
                match = Match("".join(alt.terms), held, "fuzzy")
                return Ranked(round(points, 4), 0.0, (match,))
        return Ranked(0.0, 0.0, ())


def _reason(alt: Alternative, word: str, held: tuple[str, ...], doc: Document) -> Match:
    """The caller's word, the article's words it matched, and how."""
    if alt.field == "p":
        return Match(word, _sounding(frozenset(alt.terms), doc), alt.kind)
    if alt.chars_of:
        return Match(word, (alt.chars_of,), alt.kind)
    return Match(word, held or alt.terms, alt.kind)


def _sounding(caller: frozenset[str], doc: Document) -> tuple[str, ...]:
    """The article's word (else its characters) that sounds like the caller's."""
    for word in sorted((w for w in doc.words if caller <= sounds(w)), key=len)[:1]:
        return (word,)
    return tuple(g for g in sorted(doc.grams) if sounds(g) & caller)


def _near(first: Sequence[str], second: Sequence[str], text: str) -> bool:
    """Whether `text` has a word of each within PROXIMITY_GAP characters, either way round."""
    for a in first:
        for b in second:
            if a == b or a in b or b in a:
                continue
            for x, y in ((a, b), (b, a)):
                at = text.find(x)
                while at >= 0:
                    end = at + len(x)
                    if 0 <= text.find(y, end, end + PROXIMITY_GAP + len(y)):
                        return True
                    at = text.find(x, at + 1)
    return False
