"""How citizens' words and articles become search terms, and how an article is scored
against a query (pure; the index in search.py stores the terms and picks the candidates).

An article's terms, from its published version's title, body, policy source and number:
- words: jieba's search-mode segmentation (`cut_for_search`), so 公积金 finds 住房公积金;
- pinyin: the toneless pinyin of every two adjacent characters, so a name or word written
  with other characters of the same sound (章建国 for 张建国, as speech recognition and fast
  typing produce) still matches;
- grams: every two adjacent characters, the fallback for a word with a wrong character.

A query becomes concepts: the caller's content words (stop words dropped), each with its
alternatives — the word, its search-mode parts, the official terms of the synonym table.
Scoring goes concept by concept (word 1.0, synonym 0.9, same sound 0.8, near spelling 0.5 ×
share of bigrams), the same on both databases, and names the reason for every match. A
concept weighs more the longer and the rarer the word (jieba's corpus frequency: 低保 says
more than 申请), less when it names a place (滨河路, 小区), and half again when the article's
title holds it. A word
jieba's dictionary knows is taken as said; only unknown ones (slips, names) are also matched
by sound and spelling, so 施工 does not find 临时供水 (shi gong).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any

from pypinyin import lazy_pinyin

from core import yaml_fast
from dispatch.segment import default_synonyms as slip_corrections
from dispatch.segment import jieba_module
from hotline.knowledge.models import KnowledgeArticleVersion

DEFAULT_SYNONYMS_PATH = Path(__file__).parent / "data" / "synonyms.yaml"

MAX_TERMS = 4000  # per kind and document: a tsvector holds positions up to 16383
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_TERM = re.compile(r"^[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+$")
# Words a caller says around the matter itself.
STOP_WORDS = frozenset(
    "我 我们 我家 你 你们 您 他 她 它 他们 的 地 得 了 吗 呢 啊 呀 吧 嘛 哦 是 在 有 和 与 或 "
    "就 都 也 又 还 再 很 太 怎么 怎么办 怎样 如何 为什么 什么 哪里 哪儿 哪个 多少 几 请问 "
    "请 问 问问 一下 想 想要 要 能 能不能 可以 可不可以 会 该 应该 这 那 这个 那个 这里 那里 "
    "这样 那样 一个 个 现在 今天 昨天 已经 一直 老是 总是 到底 给 把 被 让 对 从 到 去 来 "
    "说 知道 告诉 帮 帮忙 麻烦 谢谢 你好 您好 喂 咨询 反映 情况 事 事情 问题 一些 "
    # the spoken fillers of a phone call: never what the call is about
    "不能 不会 不要 要不要 这边 那边 家里 我家 好像 咋 咋办 咋弄 怎么弄 我该 里面 有人 没有 "
    "一点 还有 啥 去哪 去哪里 哪里办 多长时间 时候 什么时候 一直不 那么 这么 然后 就是 "
    "还是 但是 可是 因为 所以 如果 的话 人家 大家 自己 他们 我们家 听说 一下子 好几天 "
    "半天 那段 一段 这片 那片 这块 不能不 "
    # how a caller asks, hedges and stresses: never what the call is about either
    "是不是 是否 不是 有没有 能否 需要 必须 直接 一个人 特别 非常 十分 天天 每天 经常 "
    "好多 很多 好久 很久 这么久 谁 谁来 谁管 找谁 哪家 这算 算不算 算是 老是 总是 "
    "一般 大概 大约 左右 之前 以前 以后 之后 刚 刚才 刚刚 一下下 行不行 可能 估计 "
    "我想问一下 想问一下 问一下 请问一下 打听 了解 了解一下 这种 那种 这些 那些".split()
)


# ---------------------------------------------------------------- text to terms


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


_MD_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_AUTOLINK = re.compile(r"<[a-z][a-z0-9+.-]*:[^>]*>", re.IGNORECASE)
_MD_MARKUP = re.compile(r"[#*_>`~|]+")


def plain_text(markdown: str) -> str:
    """The words of a Markdown body: link and image texts kept, their addresses dropped."""
    text = _MD_IMAGE_OR_LINK.sub(r"\1", markdown)
    text = _MD_AUTOLINK.sub(" ", text)
    return _MD_MARKUP.sub(" ", text)


def _jieba() -> Any:
    return jieba_module()  # quiet, its dictionary cache one per user (dispatch.segment)


def _in_dictionary(word: str) -> bool:
    return bool(_jieba().get_FREQ(word))  # prefixes of longer words are there with 0


def _keep(term: str) -> bool:
    return bool(_TERM.match(term))


def search_words(text: str) -> list[str]:
    """jieba's search-mode words of normalised text, punctuation and spaces dropped."""
    return [w for w in _jieba().cut_for_search(text) if _keep(w)]


def _precise_words(text: str) -> list[str]:
    return [w for w in _jieba().lcut(text) if _keep(w)]


@lru_cache(maxsize=8192)
def _syllables(run: str) -> tuple[str, ...]:
    return tuple(lazy_pinyin(run))


def pinyin_pairs(text: str) -> list[str]:
    """Toneless pinyin of every two adjacent Chinese characters: 张建国 → zhangjian jianguo."""
    pairs: list[str] = []
    for run in _CJK.findall(text):
        sounds = _syllables(run)
        pairs.extend(a + b for a, b in zip(sounds, sounds[1:], strict=False))
    return pairs


def bigrams(text: str) -> list[str]:
    grams: list[str] = []
    for run in _CJK.findall(text):
        grams.extend(run[i : i + 2] for i in range(len(run) - 1))
    return grams


@dataclass(frozen=True)
class DocumentTerms:
    words: list[str]
    pinyin: list[str]
    grams: list[str]


def document_terms(version: KnowledgeArticleVersion) -> DocumentTerms:
    parts = [version.title, plain_text(version.body)]
    parts += [p for p in (version.policy_source, version.document_number) if p]
    text = normalise("\n".join(parts))
    return DocumentTerms(
        words=_distinct(search_words(text))[:MAX_TERMS],
        pinyin=_distinct(pinyin_pairs(text))[:MAX_TERMS],
        grams=_distinct(bigrams(text))[:MAX_TERMS],
    )


def _distinct(terms: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(terms))


# ---------------------------------------------------------------- synonyms and queries


class Synonyms:
    """Colloquial word → the official terms articles use (each a tuple of jieba words)."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self._table: dict[str, tuple[tuple[str, ...], ...]] = {}
        for word, terms in table.items():
            alternatives = [tuple(_precise_words(normalise(t))) for t in terms]
            self._table[normalise(word)] = tuple(a for a in alternatives if a)
        self._keys = sorted(self._table, key=len, reverse=True)

    def official(self, word: str) -> tuple[tuple[str, ...], ...]:
        return self._table.get(word, ())

    def found_in(self, text: str) -> list[str]:
        """The table's words that occur in `text`, longest first."""
        return [k for k in self._keys if k in text]


def parse_synonyms(source: str) -> Synonyms:
    data = yaml_fast.safe_load(source) or {}
    table = data.get("synonyms") or {}
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
        for k, v in table.items()
    ):
        raise ValueError("synonyms must map a word to a list of official terms")
    return Synonyms(table)


def load_synonyms(path: Path) -> Synonyms:
    return parse_synonyms(path.read_text(encoding="utf-8"))


@cache
def default_synonyms() -> Synonyms:
    return load_synonyms(DEFAULT_SYNONYMS_PATH)


@dataclass(frozen=True)
class Concept:
    """One thing the caller said, and the ways an article may say it."""

    word: str
    words: tuple[tuple[str, ...], ...]  # the word itself, or all of its search-mode parts
    official: tuple[tuple[str, ...], ...]  # from the synonym table
    weight: float
    # A word jieba's dictionary knows is taken as said; only an unknown one (a slip of the
    # ear or the pen, a name) is also matched by its sound and its spelling.
    known: bool
    # Two of jieba's pieces put together (章 建国 → 章建国): a guess at a name, not a word
    # the caller is known to have said.
    joined: bool = False

    def terms(self) -> set[str]:
        return {t for alt in (*self.words, *self.official) for t in alt}


# Guessed names (two of jieba's pieces put together) pick candidates only in a query of
# fewer words than this: else 窗户里 or 往我家, matched by their sounds and characters,
# would fill the candidates.
GUESSES_PICK = 4


@dataclass(frozen=True)
class ConceptTerms:
    """What an article holds when a concept matches it: all the words of one alternative,
    or one of the pinyin pairs, or one of the bigrams."""

    words: tuple[tuple[str, ...], ...] = ()
    pinyin: tuple[str, ...] = ()
    grams: tuple[str, ...] = ()
    weight: float = 1.0  # the concept's (`Concept.weight`)
    word: str = ""  # the concept's (`Concept.word`)


@dataclass(frozen=True)
class Query:
    concepts: tuple[Concept, ...]
    pinyin: frozenset[str]
    grams: frozenset[str]

    @property
    def empty(self) -> bool:
        return not (self.concepts or self.pinyin or self.grams)

    def candidate_terms(self) -> tuple[ConceptTerms, ...]:
        """What an article holds when each concept matches it (`_match`), to pick the
        candidates that are scored. Every concept may pick, settings and guessed names too:
        how many articles of the base hold each decides (search_base), not how rare the word
        is in jieba's corpus — 物业 or 投诉 name the matter in a base of notices about pipes
        and power lines. The articles full of 申请, 困难 or a street's name do not fill the
        candidates: a concept too many articles hold picks none and only counts in the
        scoring."""
        said = [c for c in self.concepts if not c.joined]
        guessed = [c for c in self.concepts if c.joined][: max(0, GUESSES_PICK - len(said))]
        return tuple(_concept_terms(c) for c in (*said, *guessed))

    def concept_terms(self) -> tuple[ConceptTerms, ...]:
        """What an article holds when each of the concepts matches it, in order."""
        return tuple(_concept_terms(c) for c in self.concepts)


def either(groups: Sequence[ConceptTerms]) -> ConceptTerms:
    """What an article holds when any of the groups matches it."""
    return ConceptTerms(
        words=tuple(dict.fromkeys(alt for g in groups for alt in g.words)),
        pinyin=tuple(dict.fromkeys(t for g in groups for t in g.pinyin)),
        grams=tuple(dict.fromkeys(t for g in groups for t in g.grams)),
        weight=max((g.weight for g in groups), default=1.0),
        word="|".join(g.word for g in groups),
    )


def _concept_terms(concept: Concept) -> ConceptTerms:
    words = tuple(dict.fromkeys(alt for alt in (*concept.words, *concept.official) if alt))
    if concept.known or not _CJK.fullmatch(concept.word):
        return ConceptTerms(words, weight=concept.weight, word=concept.word)
    grams = bigrams(concept.word) if len(concept.word) >= 3 else []
    sounds = tuple(dict.fromkeys(pinyin_pairs(concept.word)))
    return ConceptTerms(words, sounds, tuple(grams), weight=concept.weight, word=concept.word)


SETTING_WEIGHT = 0.5
# Place names a caller gives (滨河路, 榆阳区, 鼓楼街道): where, not what.
_PLACE = re.compile(
    r"^[\u3400-\u9fff]{1,8}(?:区|县|市|镇|乡|村|路|街|巷|街道|大道|大街|小区|社区)$"
)
# How much a word says, from how rare it is in jieba's dictionary (its corpus frequency):
# 申请, 困难, 晚上 are everywhere, 低保, 井盖, 遛狗 name a matter. The log of the inverse
# frequency, scaled so a middling word (路灯, 电梯: ~12) counts 1.
_RARITY_SCALE = 12.0
_RARITY_BOUNDS = (0.6, 1.25)


def base_rarity(held: int, common: int) -> float:
    """How much a concept says in the knowledge base itself, from how many articles hold
    it (`held`, counted up to `common` + 1): 1 for a concept one article holds, down to
    1/10 for one held by `common` articles or more (an idf: the log of the share). Words
    every article of a base says (a unit's name in every notice, 小区, 办理) say little
    there, whatever jieba's corpus says."""
    if held <= 1:
        return 1.0
    return max(0.1, 1.0 - 0.9 * math.log(held) / math.log(max(common, 2)))


def is_setting(word: str) -> bool:
    """Words naming where something happens (小区, 学校 — the centre's setting words,
    dispatch/data/synonyms-zh.yaml — and place names)."""
    return word in slip_corrections().settings or (len(word) >= 3 and bool(_PLACE.match(word)))


def _rarity(word: str) -> float:
    jieba = _jieba()
    frequency = jieba.get_FREQ(word) or 0
    total = jieba.dt.total or 1
    low, high = _RARITY_BOUNDS
    return min(high, max(low, math.log(total / max(frequency, 1)) / _RARITY_SCALE))


def _weight(word: str) -> float:
    """Longer words say more, and rarer ones; settings say less than what happened."""
    if not _CJK.fullmatch(word):
        return 1.0
    weight = (1.0 + 0.5 * (min(len(word), 4) - 2)) * _rarity(word)
    return weight * SETTING_WEIGHT if is_setting(word) else weight


def _with_lone_characters(words: Sequence[str]) -> list[str]:
    """A character jieba left on its own joined to the word beside it: jieba splits a name
    it does not know (章建国 → 章 建国), and the whole name is what sounds like the one in
    the article."""
    joined = []
    for i, word in enumerate(words):
        if len(word) != 1 or word in STOP_WORDS or not _CJK.fullmatch(word):
            continue
        for pair in (words[i - 1 : i + 1] if i else [], words[i : i + 2]):
            if len(pair) == 2 and all(_CJK.fullmatch(w) for w in pair):
                if 3 <= len(pair[0] + pair[1]) <= 4:
                    joined.append(pair[0] + pair[1])
    return joined


def parse_query(query: str, synonyms: Synonyms) -> Query:
    text = slip_corrections().apply(normalise(query))
    concepts: dict[str, Concept] = {}

    def add(word: str, *, split: bool = True, joined: bool = False) -> None:
        if word in concepts or word in STOP_WORDS:
            return
        official = synonyms.official(word)
        if len(word) < 2 and not official:
            return  # one character says too little on its own
        parts: tuple[str, ...] = ()
        if split:
            parts = tuple(p for p in search_words(word) if p != word and len(p) > 1)
        words = ((word,), parts) if parts else ((word,),)
        concepts[word] = Concept(
            word, words, official, _weight(word), known=_in_dictionary(word), joined=joined
        )

    for word in synonyms.found_in(text):
        add(word)
    words = _precise_words(text)
    for word in words:
        if not any(word in longer for longer in concepts if len(longer) > len(word)):
            add(word)
    for joined in _with_lone_characters(words):
        # whole, or by its sound or spelling: else it adds nothing
        add(joined, split=False, joined=True)
    content = "".join(c.word for c in concepts.values() if _CJK.fullmatch(c.word))
    return Query(
        concepts=tuple(concepts.values()),
        pinyin=frozenset(pinyin_pairs(content)),
        grams=frozenset(bigrams(text)),
    )


# ---------------------------------------------------------------- hits


@dataclass(frozen=True)
class Match:
    """Why an article was found: the caller's word, the article's words it matched, and
    how — "word", "synonym", "pinyin" (same sound) or "fuzzy" (near spelling)."""

    query_word: str
    article_words: tuple[str, ...]
    kind: str


class Document:
    """An article's terms, as the scoring reads them: given as sets, or as the
    space-separated text the index stores, split only when the scoring needs that kind
    (most queries never look at an article's pinyin or bigrams)."""

    def __init__(
        self,
        words: frozenset[str] | str,
        pinyin: frozenset[str] | str = frozenset(),
        grams: frozenset[str] | str = frozenset(),
        title: str = "",  # normalised: a concept the title names counts more
    ) -> None:
        self._given = {"words": words, "pinyin": pinyin, "grams": grams}
        self.title = title

    def _kind(self, name: str) -> frozenset[str]:
        given = self._given[name]
        return frozenset(given.split()) if isinstance(given, str) else given

    # Split once, on first use: the scoring asks for an article's words once per concept.
    @cached_property
    def words(self) -> frozenset[str]:
        return self._kind("words")

    @cached_property
    def pinyin(self) -> frozenset[str]:
        return self._kind("pinyin")

    @cached_property
    def grams(self) -> frozenset[str]:
        return self._kind("grams")


_FACTORS = {"word": 1.0, "synonym": 0.9, "pinyin": 0.8}
_FUZZY_FACTOR = 0.5
_FUZZY_SHARE = 0.5  # of a word's bigrams the article must hold


def _match(concept: Concept, doc: Document) -> tuple[Match, float] | None:
    words = doc.words
    for alt in concept.words:
        if all(w in words for w in alt):
            return Match(concept.word, alt, "word"), _FACTORS["word"]
    for alt in concept.official:
        if all(w in words for w in alt):
            return Match(concept.word, alt, "synonym"), _FACTORS["synonym"]
    if concept.known or not _CJK.fullmatch(concept.word):
        return None
    if len(concept.word) >= 2:
        sounds = _sounds(concept.word)
        if sounds <= doc.pinyin:
            return Match(concept.word, _sounding(sounds, doc), "pinyin"), _FACTORS["pinyin"]
    if len(concept.word) >= 3:
        grams = bigrams(concept.word)
        held = [g for g in grams if g in doc.grams]
        share = len(held) / len(grams)
        if share >= _FUZZY_SHARE:
            return Match(concept.word, tuple(held), "fuzzy"), _FUZZY_FACTOR * share
    return None


@lru_cache(maxsize=65536)
def _sounds(word: str) -> frozenset[str]:
    return frozenset(pinyin_pairs(word))


def _sounding(sounds: frozenset[str], doc: Document) -> tuple[str, ...]:
    """The article's word (else its characters) that sounds like the caller's."""
    for word in sorted((w for w in doc.words if sounds <= _sounds(w)), key=len)[:1]:
        return (word,)
    return tuple(g for g in sorted(doc.grams) if _sounds(g) & sounds)


TITLE_BONUS = 0.5  # a matched concept the title names: the article is about it


def _in_title(match: Match, title: str) -> bool:
    return bool(title) and match.kind != "fuzzy" and all(w in title for w in match.article_words)


def score(
    query: Query, doc: Document, in_base: Mapping[str, float] | None = None
) -> tuple[float, tuple[Match, ...]]:
    """The article's points for the query, and the reasons. `in_base`: how much each
    concept says in this knowledge base (`base_rarity`), besides jieba's general corpus."""
    in_base = in_base or {}
    found = [
        (
            c.weight
            * in_base.get(c.word, 1.0)
            * m[1]
            * (1 + TITLE_BONUS * _in_title(m[0], doc.title)),
            c.word,
            m[0],
        )
        for c in query.concepts
        if (m := _match(c, doc))
    ]
    found.sort(key=lambda f: f[0], reverse=True)
    total, matches, counted = 0.0, list[Match](), list[str]()
    for gain, word, match in found:
        # Overlapping words (建国 in 章建国) are one thing the caller said: the better
        # match of the two is the reason, and counts once.
        if any(word in other or other in word for other in counted):
            continue
        counted.append(word)
        matches.append(match)
        total += gain
    if not matches and len(query.grams) >= 2:
        # The words themselves were mangled: fall back to the characters of the query.
        held = sorted(query.grams & doc.grams)
        share = len(held) / len(query.grams)
        if share >= _FUZZY_SHARE:
            matches.append(Match("".join(sorted(query.grams)), tuple(held), "fuzzy"))
            total = _FUZZY_FACTOR * share
    return round(total, 4), tuple(matches)
