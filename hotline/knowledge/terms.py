"""How citizens' words and articles become search terms (pure; the index in search_base.py
stores the terms and the counts of them, ranking.py ranks the articles it fetches).

An article's terms, from its published version's title, body, policy source and number:
- words: jieba's search-mode segmentation (`cut_for_search`), so 公积金 finds 住房公积金;
- pinyin: the toneless pinyin of every two adjacent characters, so a name or word written
  with other characters of the same sound (章建国 for 张建国, as speech recognition and fast
  typing produce) still matches;
- grams: every two adjacent characters, the fallback for a word with a wrong character, and
  a word's characters side by side however jieba cut the article (路 / 灯不亮 holds 路灯);
- title: the title's characters and bigrams, to tell whether the title names a word.

A query becomes concepts: the caller's content words (stop words dropped; a spoken form
such as 水管子 also as written, 水管), each weighted — longer and rarer in jieba's corpus
says more (低保 more than 申请), a place less — and each with its alternatives: the word,
its search-mode parts, the official terms of the synonym table, their characters side by
side, and for a word jieba does not know (a slip, a name) its sound and its spelling. A
word jieba's dictionary knows is taken as said; only unknown ones are also matched by sound
and spelling, so 施工 does not find 临时供水 (shi gong).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

from pypinyin import lazy_pinyin

from core import yaml_fast
from dispatch.segment import default_synonyms as slip_corrections
from dispatch.segment import jieba_module

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


MAX_TERM_LENGTH = 32  # longer runs of letters or digits are not words anyone says


def _keep(term: str) -> bool:
    return len(term) <= MAX_TERM_LENGTH and bool(_TERM.match(term))


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


_LATIN = re.compile(r"[0-9a-z]+")


def title_terms(text: str) -> list[str]:
    """What the index keeps of a normalised title, to tell whether it names a word: its
    Chinese characters and their bigrams, its runs of letters and digits (the same rule as
    migration 0024's, which has no jieba)."""
    terms: list[str] = []
    for run in _CJK.findall(text):
        terms.extend(run)
        terms.extend(bigrams(run))
    terms.extend(t for t in _LATIN.findall(text) if len(t) <= MAX_TERM_LENGTH)
    return _distinct(terms)


def in_title(words: Sequence[str]) -> tuple[str, ...]:
    """The title terms a title naming all of `words` holds (`title_terms`)."""
    terms: list[str] = []
    for word in words:
        long_chinese = len(word) >= 2 and _CJK.fullmatch(word)
        terms.extend(bigrams(word) if long_chinese else title_terms(word))
    return tuple(_distinct(terms))


@dataclass(frozen=True)
class DocumentTerms:
    words: list[str]
    pinyin: list[str]
    grams: list[str]
    title: list[str] = field(default_factory=list)


class VersionText(Protocol):
    """What of a version is searched (a KnowledgeArticleVersion, or its row)."""

    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def policy_source(self) -> str | None: ...
    @property
    def document_number(self) -> str | None: ...


def document_terms(version: VersionText) -> DocumentTerms:
    parts = [version.title, plain_text(version.body)]
    parts += [p for p in (version.policy_source, version.document_number) if p]
    text = normalise("\n".join(parts))
    return DocumentTerms(
        words=_distinct(search_words(text))[:MAX_TERMS],
        pinyin=_distinct(pinyin_pairs(text))[:MAX_TERMS],
        grams=_distinct(bigrams(text))[:MAX_TERMS],
        title=title_terms(normalise(version.title)),
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
    at: int = 0  # where in the query the caller said it (for words said side by side)


# Guessed names (two of jieba's pieces put together) pick candidates only in a query of
# fewer words than this: else 窗户里 or 往我家, matched by their sounds and characters,
# would fill the candidates.
GUESSES_PICK = 4


# How sure a match is: the word said, an official term of the synonym table, the same
# sound, a near spelling (times the share of its bigrams held, half at least); the same
# characters of a word or term the article's segmentation cut otherwise, CHARS times less.
FACTORS = {"word": 1.0, "synonym": 0.85, "pinyin": 0.75, "fuzzy": 0.5}
CHARS = 0.9


@dataclass(frozen=True)
class Alternative:
    """One way an article holds a concept: all of `terms` in `field` (w: its words, p: the
    pinyin pairs of its characters, g: its bigrams — the word's characters side by side,
    however jieba cut the article), or for a near spelling (not `every`) half of its
    bigrams. `kind` is the reason a hit gives: word, synonym, pinyin (same sound), fuzzy;
    `sure` how sure a match is (FACTORS)."""

    concept: int  # the concept's place in `Query.concepts`
    kind: str
    field: str
    terms: tuple[str, ...]
    every: bool = True
    sure: float = 1.0
    chars_of: str = ""  # the word whose characters `terms` are (the reason names it)

    def in_title(self) -> Alternative | None:
        """The same, held in the title (words and characters: a title is not searched by
        sound)."""
        if not self.every or self.field not in ("w", "g"):
            return None
        terms = in_title(self.terms)
        return replace(self, field="t", terms=terms) if terms else None


@dataclass(frozen=True)
class Query:
    concepts: tuple[Concept, ...]
    pinyin: frozenset[str]
    grams: frozenset[str]

    @property
    def empty(self) -> bool:
        return not (self.concepts or self.pinyin or self.grams)

    @cached_property
    def alternatives(self) -> tuple[Alternative, ...]:
        """Every way an article may hold each concept, in the concepts' order."""
        return tuple(a for i, c in enumerate(self.concepts) for a in _alternatives(i, c))

    @cached_property
    def picking(self) -> frozenset[int]:
        """The concepts that may pick the candidates the database fetches. Every concept
        may — settings such as 物业 too: how many articles of the base hold it decides
        (search_base), not how rare the word is in jieba's corpus — except guessed names in
        a long query (窗户里, 往我家, matched by sound and spelling, would fill them)."""
        said = [i for i, c in enumerate(self.concepts) if not c.joined]
        guessed = [i for i, c in enumerate(self.concepts) if c.joined]
        return frozenset(said + guessed[: max(0, GUESSES_PICK - len(said))])

    @cached_property
    def overlapping(self) -> tuple[int, ...]:
        """For each concept, the first concept its word overlaps (建国 in 章建国, 来水 in
        自来水; itself if none): the ranking counts overlapping words once, the better."""
        first: list[int] = []
        for i, concept in enumerate(self.concepts):
            word = concept.word
            first.append(
                next(
                    (
                        first[j]
                        for j, other in enumerate(self.concepts[:i])
                        if word in other.word or other.word in word
                    ),
                    i,
                )
            )
        return tuple(first)

    def fallback(self) -> tuple[Alternative, ...]:
        """When no word of the query matched as said: its characters (Ranker scores them as
        a near spelling of the whole query)."""
        if len(self.grams) < 2:
            return ()
        grams = tuple(sorted(self.grams))
        return (Alternative(-1, "fuzzy", "g", grams, every=False, sure=FACTORS["fuzzy"]),)

    def spelling(self) -> tuple[Alternative, ...]:
        """The fallback's bigrams one by one, each its own concept (numbered -1, -2, …), to
        fetch the articles holding the most of them."""
        grams = [t for alt in self.fallback() for t in alt.terms]
        return tuple(
            Alternative(-1 - i, "fuzzy", "g", (g,), every=False, sure=FACTORS["fuzzy"])
            for i, g in enumerate(grams)
        )


def _alternatives(i: int, concept: Concept) -> list[Alternative]:
    out = [Alternative(i, "word", "w", alt, sure=FACTORS["word"]) for alt in concept.words]
    out += [
        Alternative(i, "synonym", "w", alt, sure=FACTORS["synonym"])
        for alt in concept.official
        if alt not in concept.words
    ]
    # The same characters side by side, cut otherwise: jieba makes 路 灯不亮 of 路灯不亮.
    out += [
        Alternative(
            i,
            kind,
            "g",
            tuple(dict.fromkeys(bigrams(word))),
            sure=FACTORS[kind] * CHARS,
            chars_of=word,
        )
        for kind, alts in (("word", concept.words[:1]), ("synonym", concept.official))
        for alt in alts
        if len(alt) == 1 and len(word := alt[0]) >= 2 and _CJK.fullmatch(word)
    ]
    out = [a for a in out if a.terms]
    if concept.known or not _CJK.fullmatch(concept.word):
        return out
    pairs = tuple(sorted(sounds(concept.word)))
    if pairs:
        out.append(Alternative(i, "pinyin", "p", pairs, sure=FACTORS["pinyin"]))
    if len(concept.word) >= 3:
        grams = tuple(dict.fromkeys(bigrams(concept.word)))
        out.append(Alternative(i, "fuzzy", "g", grams, every=False, sure=FACTORS["fuzzy"]))
    return out


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


_SPOKEN_SUFFIXES = ("儿", "子")  # 水管子, 味儿: how the word is said, not written


def _spoken_stem(word: str) -> str | None:
    """The written word a spoken one stands for (水管子 → 水管, 门口儿 → 门口), when jieba
    knows it and not the spoken one."""
    if len(word) >= 3 and word.endswith(_SPOKEN_SUFFIXES) and _in_dictionary(word[:-1]):
        return word[:-1]
    return None


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
        words: tuple[tuple[str, ...], ...] = ((word,), parts) if parts else ((word,),)
        known = _in_dictionary(word)
        stem = _spoken_stem(word) if not known else None
        if stem is not None:
            words += ((stem,),)
            official += synonyms.official(stem)
        concepts[word] = Concept(
            word,
            words,
            official,
            _weight(word),
            known=known,
            joined=joined,
            at=max(0, text.find(word)),
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


@lru_cache(maxsize=65536)
def sounds(word: str) -> frozenset[str]:
    """The pinyin pairs of a word (章建国: zhangjian, jianguo)."""
    return frozenset(pinyin_pairs(word))
