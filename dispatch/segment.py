"""Reading citizens' wording: synonyms for rule matching, jieba tokens for the classifier.

Synonyms: a centre-wide table (dispatch/data/synonyms-zh.yaml) maps variants (homophone
slips such as 停点 for 停电, colloquial and dialect wording) to the canonical word the rules
list. `Synonyms.apply` rewrites the normalised ticket text in one pass, longest variant
first, before keywords are matched; regular expressions still see the caller's own words.

Emergencies: the same file lists phrases of something happening now that needs police, fire
or ambulance (持刀, 着火了, 要跳楼 ...). `Synonyms.emergency` returns the first one found; the
rules then route nothing and the ticket stays with the operator, who transfers the caller
to 110/119/120/122 (国办发〔2020〕53号 keeps those lines separate from 12345). A phrase the
caller only fears ("真要着火了就完了", "万一起火了") reports a hazard, not an emergency, and
is skipped: a worry word (万一, 要是, 真要, 就怕 ...) shortly before it in the same clause says
so; so is a phrase the caller denies (打不着火了, 没着火). A threat to someone's life (跳楼,
跳河) counts however it is worded.

Settings: words that name where something happens rather than what it is (小区, 物业, 学校,
医院, 马路, 村 ...). A rule that fired on setting words alone is weak evidence: its match is
rated low (dispatch/rule_matching.py) and the confidence gate (dispatch/advice.py) may leave
the ticket to manual dispatch.

Segmentation: with `segmentation: true` in the file, a short keyword hit strictly inside a
longer jieba word does not count (油烟 in 抽油烟机); see `inner_starts` and
dispatch/rule_matching.py.

Tokens: `tokens` segments Chinese text with jieba (its dictionary ships in the package; no
download) for the learned suggestion (dispatch/classifier.py).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from core import yaml_fast

DEFAULT_SYNONYMS_PATH = Path(__file__).parent / "data" / "synonyms-zh.yaml"


_WORRY = re.compile(
    r"(?:万一|要是|如果|假如|真要|一旦|就怕|怕|担心|容易|迟早|早晚|会不会|可能)"
    r"[^，,。；;！!？?]{0,3}$"
)
_DENIED = re.compile(r"(?:不|没|没有|未)$")
_WORRY_BEFORE = 6  # characters looked at before an emergency phrase
_ALWAYS = ("跳",)  # a threat to someone's life is never only a worry


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


class Synonyms:
    """Variant -> canonical rewriting of normalised text, the setting words, the emergency
    phrases, and whether keyword hits must respect jieba's word boundaries."""

    __slots__ = ("_table", "_pattern", "_emergency", "settings", "segmentation")

    def __init__(
        self,
        table: Mapping[str, str],
        emergency: Sequence[str] = (),
        settings: Sequence[str] = (),
        *,
        segmentation: bool = False,
    ) -> None:
        self.settings = frozenset(_normalise(w) for w in settings if w)
        self.segmentation = segmentation
        self._table = {_normalise(k): _normalise(v) for k, v in table.items() if k and k != v}
        variants = sorted(self._table, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, variants))) if variants else None
        phrases = [_normalise(p) for p in emergency if p]
        self._emergency = re.compile("|".join(map(re.escape, phrases))) if phrases else None

    def emergency(self, text: str) -> str | None:
        """The first emergency phrase in the (normalised) text that the caller does not
        merely fear, if any."""
        if self._emergency is None:
            return None
        for found in self._emergency.finditer(text):
            phrase = found.group(0)
            before = text[max(0, found.start() - _WORRY_BEFORE) : found.start()]
            if any(w in phrase for w in _ALWAYS):
                return phrase
            if not _WORRY.search(before) and not _DENIED.search(before):
                return phrase
        return None

    def inside_words(self, text: str) -> frozenset[int]:
        """With segmentation on, the offsets strictly inside jieba words (`inner_starts`)."""
        return inner_starts(text) if self.segmentation else frozenset()

    def __len__(self) -> int:
        return len(self._table)

    def apply(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._table[m.group(0)], text)


def parse_synonyms(text: str) -> Synonyms:
    data = yaml_fast.safe_load(text) or {}
    table = data.get("synonyms") or {}
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise ValueError("synonyms must map variant strings to canonical strings")
    emergency = data.get("emergency") or []
    if not isinstance(emergency, list) or not all(isinstance(p, str) for p in emergency):
        raise ValueError("emergency must be a list of phrases")
    settings = data.get("settings") or []
    if not isinstance(settings, list) or not all(isinstance(w, str) for w in settings):
        raise ValueError("settings must be a list of words")
    return Synonyms(table, emergency, settings, segmentation=bool(data.get("segmentation")))


@cache
def default_synonyms() -> Synonyms:
    return parse_synonyms(DEFAULT_SYNONYMS_PATH.read_text(encoding="utf-8"))


def jieba_module() -> Any:
    """jieba, quiet, with its dictionary cache one per user: its default, one
    ``/tmp/jieba.cache`` written 0600 by whoever came first (root running the tests, say),
    is unreadable to the platform's own user, which would then rebuild the dictionary at
    every start (seconds) and fail to save it."""
    import jieba

    jieba.setLogLevel(60)
    if jieba.dt.cache_file is None:
        jieba.dt.cache_file = f"jieba.u{os.getuid()}.cache"
    return jieba


_jieba = jieba_module


def tokens(text: str) -> list[str]:
    """jieba words of the normalised text, synonyms applied, punctuation and spaces dropped."""
    text = prepared(text)
    return [w for w in _jieba().lcut(text) if w.strip() and not _PUNCT.fullmatch(w)]


def prepared(text: str) -> str:
    """The normalised text with the default synonyms applied (the classifier's character
    n-grams read this)."""
    return default_synonyms().apply(_normalise(text))


def inner_starts(text: str) -> frozenset[int]:
    """Offsets in `text` that lie strictly inside a jieba word (not at its first character)."""
    inside: set[int] = set()
    for _, start, end in _jieba().tokenize(text):
        inside.update(range(start + 1, end))
    return frozenset(inside)


_PUNCT = re.compile(r"[\W_]+")
