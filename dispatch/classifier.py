"""A learned suggestion beside the rules: which unit the centre's own history would pick.

A TF-IDF model over jieba words and word pairs plus character 2-3-grams (dispatch/segment.py;
the n-grams survive typos and words jieba splits oddly) with a multinomial logistic
regression, trained on the centre's history: a ticket's text labelled with the lead unit it
was dispatched to, counting only lead assignments the unit did not return (replied or
completed). Everything runs in-process; there is no external service.

Little history: the rule pack's own wording is added as prior documents (`prior_documents`:
each rule's keywords as one document and each keyword alone, labelled with the rule's lead
unit), so a centre with a few hundred tickets already gets useful suggestions for units its
history barely covers; the history, being real wording, outweighs them as it grows.

The suggestion is advice shown to the dispatcher with its confidence (the model's
probability) and the next best units; rules that fire still decide the dispatch. The process
uses the model installed with `install` (the retraining task installs what it trained) or
`load_installed` (a process that starts later reads the saved file, re-read when it changes);
with none installed, dispatch shows no suggestion.
"""

from __future__ import annotations

import pickle
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from core.errors import InvalidInput
from dispatch import reference
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus, Unit
from dispatch.rule_specs import RuleSpec
from dispatch.segment import default_synonyms, prepared, tokens
from tickets.models import Ticket

MODEL_FILE = Path("models") / "routing-classifier.pkl"  # under the data directory
MIN_SAMPLES = 20
MIN_UNITS = 2
TOP = 3
LABELLING_STATUSES = (AssignmentStatus.replied, AssignmentStatus.completed)


@dataclass(frozen=True, slots=True)
class Suggestion:
    unit: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...]

    def to_data(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "confidence": self.confidence,
            "alternatives": [{"unit": u, "confidence": p} for u, p in self.alternatives],
        }


class UnitClassifier:
    """Fitted model; `suggest` ranks units for one text."""

    def __init__(
        self, pipeline: Any, trained_on: int, support: dict[str, int] | None = None
    ) -> None:
        self._pipeline = pipeline
        self.trained_on = trained_on
        self._support = support

    def support(self, unit: str) -> int | None:
        """How many history tickets of `unit` the model learned from (prior documents not
        counted); None for a model saved before this was recorded."""
        support = getattr(self, "_support", None)
        return None if support is None else support.get(unit, 0)

    @property
    def units(self) -> list[str]:
        return [str(u) for u in self._pipeline.classes_]

    def suggest(self, text: str) -> Suggestion:
        probabilities = self._pipeline.predict_proba([text])[0]
        ranked = sorted(zip(self.units, probabilities, strict=True), key=lambda up: -up[1])
        top = [(u, round(float(p), 3)) for u, p in ranked[:TOP]]
        return Suggestion(unit=top[0][0], confidence=top[0][1], alternatives=tuple(top[1:]))

    def dumps(self) -> bytes:
        return pickle.dumps(self)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(self.dumps())
        tmp.replace(path)


def load(path: Path) -> UnitClassifier | None:
    """The model saved at `path` by `train_from_history`, or None when there is none yet.
    Only load files this platform wrote: the format is pickle."""
    if not path.exists():
        return None
    model = pickle.loads(path.read_bytes())
    return model if isinstance(model, UnitClassifier) else None


_lock = threading.Lock()
_installed: UnitClassifier | None = None
_loaded_from: tuple[Path, float] | None = None


def install(model: UnitClassifier | None) -> None:
    """Use `model` for suggestions in this process (None: no suggestions)."""
    global _installed, _loaded_from
    with _lock:
        _installed, _loaded_from = model, None


def load_installed(path: Path) -> UnitClassifier | None:
    """Install the model saved at `path`, re-reading it only when the file changed."""
    global _installed, _loaded_from
    with _lock:
        if not path.exists():
            return _installed
        stamp = (path, path.stat().st_mtime)
        if stamp != _loaded_from:
            _installed, _loaded_from = load(path), stamp
        return _installed


_watched: Path | None = None
_checked_at = float("-inf")
WATCH_EVERY_S = 60.0  # how often a watching process looks whether the file changed


def watch(path: Path | None) -> None:
    """Follow the model file at ``path``: ``installed()`` loads it when it appears and
    re-reads it when the scheduled retraining (in the worker) replaces it — looking at most
    every ``WATCH_EVERY_S``. Every process that dispatches (web, SIP edge, worker) watches
    the same file, so a ticket gets the same advice whichever process routes it."""
    global _watched, _checked_at
    with _lock:
        _watched, _checked_at = path, float("-inf")


def installed() -> UnitClassifier | None:
    global _checked_at
    path = _watched
    if path is not None:
        import time

        now = time.monotonic()
        if now - _checked_at >= WATCH_EVERY_S:
            _checked_at = now
            try:
                return load_installed(path)
            except (OSError, pickle.UnpicklingError, EOFError):  # half-written: next time
                return _installed
    return _installed


def prior_documents(
    specs: Iterable[RuleSpec], settings: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """(text, lead unit) documents from the rules' keywords: per enabled rule with a lead unit
    one document of all its keywords, its name and category, then each keyword alone.

    A keyword alone is a label only where it names one unit: the locality rules list the
    same words (社区, 村干部, 调解) once per district, and a setting word (`settings`: 小区,
    物业 ...) says where, not what. Fed as documents, those taught the model that 村干部
    means each district at once and 小区 means water; the rule holds such words together
    with its district or subject, the model sees only the text."""
    docs: list[tuple[str, str]] = []
    alone: list[tuple[str, str]] = []
    for spec in specs:
        unit = spec.actions.lead_unit
        keywords = [*spec.conditions.text_any, *spec.conditions.text_all]
        if not spec.enabled or unit is None or not keywords:
            continue
        names = [spec.name, spec.actions.category_name or ""]
        docs.append((" ".join([*keywords, *names]).strip(), unit))
        alone += [(keyword, unit) for keyword in keywords]
    units: dict[str, set[str]] = {}
    for keyword, unit in alone:
        units.setdefault(keyword, set()).add(unit)
    where = set(settings)
    return docs + [(k, u) for k, u in alone if len(units[k]) == 1 and k not in where]


def train(
    texts: Sequence[str], units: Sequence[str], priors: Sequence[tuple[str, str]] = ()
) -> UnitClassifier:
    """Fit on (text, lead unit) pairs; needs MIN_SAMPLES pairs over MIN_UNITS units. `priors`
    (see `prior_documents`) are learned from too but do not count towards the minimum."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    if len(texts) != len(units):
        raise InvalidInput("texts and units differ in length")
    if len(texts) < MIN_SAMPLES or len(Counter(units)) < MIN_UNITS:
        raise InvalidInput(
            f"too little history to learn from: {len(texts)} tickets over "
            f"{len(Counter(units))} units (need {MIN_SAMPLES} over {MIN_UNITS})"
        )
    pipeline = make_pipeline(
        make_union(
            TfidfVectorizer(
                tokenizer=tokens,
                token_pattern=None,
                lowercase=False,
                ngram_range=(1, 2),
                sublinear_tf=True,
            ),
            TfidfVectorizer(
                analyzer="char", preprocessor=prepared, ngram_range=(2, 3), sublinear_tf=True
            ),
        ),
        LogisticRegression(max_iter=3000, C=10.0, solver="saga", random_state=0),
    )
    pipeline.fit([*texts, *(t for t, _ in priors)], [*units, *(u for _, u in priors)])
    return UnitClassifier(pipeline, trained_on=len(texts), support=dict(Counter(units)))


def history(session: Session, *, limit: int = 50_000) -> tuple[list[str], list[str]]:
    """Texts and lead units of tickets whose lead unit kept the ticket (not returned),
    newest first, at most `limit`."""
    rows = session.exec(
        select(Ticket.title, Ticket.description, Ticket.request, Unit.code)
        .join(Assignment, col(Assignment.ticket_id) == col(Ticket.id))
        .join(Unit, col(Unit.id) == col(Assignment.unit_id))
        .where(col(Assignment.role) == AssignmentRole.lead)
        .where(col(Assignment.status).in_(LABELLING_STATUSES))
        .order_by(col(Assignment.id).desc())
        .limit(limit)
    ).all()
    texts, units = [], []
    for title, description, request, code in rows:
        texts.append("\n".join(p for p in (title, description, request) if p))
        units.append(code)
    return texts, units


def train_from_history(session: Session, *, path: Path) -> UnitClassifier:
    """Retrain on the history and the live rules' wording, save the model to `path` and
    install it (the scheduled task)."""
    texts, units = history(session)
    rules = reference.snapshot(session).rules
    model = train(texts, units, prior_documents(rules.specs, default_synonyms().settings))
    model.save(path)
    install(model)
    return model
