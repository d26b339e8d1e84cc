"""Reading citizens' wording: synonyms for rule matching, jieba tokens for the classifier.

Synonyms: a centre-wide table (dispatch/data/synonyms-zh.yaml) maps variants (homophone
slips such as 停点 for 停电, colloquial and dialect wording) to the canonical word the rules
list. `Synonyms.apply` rewrites the normalised ticket text in one pass, longest variant
first, before keywords are matched; regular expressions still see the caller's own words.

Emergencies: the same file lists phrases of something happening now that needs police, fire
or ambulance (持刀, 着火了, 要跳楼 ...). `Synonyms.emergency` returns the first one found; the
rules then route nothing and the ticket stays with the operator, who transfers the caller
to 110/119/120/122 (国办发〔2020〕53号 keeps those lines separate from 12345).

Tokens: `tokens` segments Chinese text with jieba (its dictionary ships in the package; no
download) for the learned suggestion (dispatch/classifier.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import yaml

DEFAULT_SYNONYMS_PATH = Path(__file__).parent / "data" / "synonyms-zh.yaml"


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


class Synonyms:
    """Variant -> canonical rewriting of normalised text."""

    __slots__ = ("_table", "_pattern", "_emergency")

    def __init__(self, table: Mapping[str, str], emergency: Sequence[str] = ()) -> None:
        self._table = {_normalise(k): _normalise(v) for k, v in table.items() if k and k != v}
        variants = sorted(self._table, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, variants))) if variants else None
        phrases = [_normalise(p) for p in emergency if p]
        self._emergency = re.compile("|".join(map(re.escape, phrases))) if phrases else None

    def emergency(self, text: str) -> str | None:
        """The first emergency phrase in the (normalised) text, if any."""
        if self._emergency is None:
            return None
        found = self._emergency.search(text)
        return found.group(0) if found else None

    def __len__(self) -> int:
        return len(self._table)

    def apply(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._table[m.group(0)], text)


def parse_synonyms(text: str) -> Synonyms:
    data = yaml.safe_load(text) or {}
    table = data.get("synonyms") or {}
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise ValueError("synonyms must map variant strings to canonical strings")
    emergency = data.get("emergency") or []
    if not isinstance(emergency, list) or not all(isinstance(p, str) for p in emergency):
        raise ValueError("emergency must be a list of phrases")
    return Synonyms(table, emergency)


@cache
def default_synonyms() -> Synonyms:
    return parse_synonyms(DEFAULT_SYNONYMS_PATH.read_text(encoding="utf-8"))


def tokens(text: str) -> list[str]:
    """jieba words of the normalised text, synonyms applied, punctuation and spaces dropped."""
    import jieba

    jieba.setLogLevel(60)
    text = default_synonyms().apply(_normalise(text))
    return [w for w in jieba.lcut(text) if w.strip() and not _PUNCT.fullmatch(w)]


_PUNCT = re.compile(r"[\W_]+")
