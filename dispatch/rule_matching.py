"""Matching dispatch rules against a ticket in one pass, and explaining the choice.

Rules are tried in priority order (lower first, ties by name) and the first whose conditions
all hold wins. Pure: no database and no I/O beyond the text it is given.

Text conditions are compared on normalised text: NFKC (full-width letters and digits become
half-width) and lower-cased, on both the keyword and the ticket side. Regular expressions
run on the NFKC text with IGNORECASE, so write them with half-width characters.

Negation: a keyword inside a clause the caller denies ("不是停水，是水有怪味") does not count
as a hit, so the denied subject neither routes the ticket nor blocks a `text_none` rule. A
denied clause starts at 不是/并不是/并非/倒不是 (not after 是, so "是不是停水了" still counts)
and runs to the next comma when what follows names the subject the caller means (是, 而是,
主要是, 我们家是: at most four characters before 是).

Emphasis: when the caller stresses one demand among several ("路灯坏了……这些都不算啥，主要是
小区停电两天了"), the rules hit by the words after the last 主要是/关键是/重点是 are tried first
(still in priority order), then the rest.

Specificity: a rule whose hits are all setting words (小区, 物业, 马路 ...: the wording
table's `settings`, dispatch/segment.py) is weak; when the first rule that holds is weak and
a later one routes elsewhere on a subject word, that one wins ("小区里的电梯坏了": elevator,
not property). With the table's `segmentation` on, a keyword of one or two characters
strictly inside a longer jieba word is no hit (油烟 in 抽油烟机; 公园 in 河滨公园 is).

Confidence: `decide` also lists the other rules that hold and route elsewhere
(`alternatives`, at most ALTERNATIVES_CAP) and rates the choice (`confidence`, 0..1): 1.0
with no rival unit, lower the closer the best rival's priority, at most WEAK_CONFIDENCE
(WEAK_ALONE_CONFIDENCE with no rival) on setting words alone (`evidence`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import time
from typing import Any, TypedDict

import ahocorasick

from core.errors import InvalidInput
from dispatch.rule_specs import RuleSpec, TimeWindow
from dispatch.segment import Synonyms
from tickets.models import Channel, RequestType, Urgency

EXPLAIN_CANDIDATES_CAP = 20
ALTERNATIVES_CAP = 3
CONFIDENCE_PRIORITY_SPAN = 60
WEAK_CONFIDENCE = 0.4  # setting words alone, another unit also in play
WEAK_ALONE_CONFIDENCE = 0.7  # setting words alone, no other unit in play
SEGMENTED_KEYWORD_LENGTH = 2  # keywords this short must touch a jieba word boundary
_EMPHASIS = re.compile(r"主要是|关键是|最主要的是|主要想问|主要想反映|我主要说的是|重点是")
_NEGATED = re.compile(
    r"(?<!是)(?:并不是|倒不是|不是|并非)([^，,。；;！!？?\s]{1,20})[，,]\s*"
    r"(?=[^，,。；;！!？?\s]{0,4}是)"
)


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What rules look at. `text` is title, description and request joined by the caller;
    `local_time` is the intake time in the centre's time zone."""

    text: str
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    district: str | None = None
    channel: Channel | None = None
    local_time: time | None = None


class ConditionOutcome(TypedDict):
    condition: str
    passed: bool
    detail: dict[str, Any]


class RuleTrace(TypedDict):
    rule: str
    priority: int
    matched_terms: list[str]
    conditions: list[ConditionOutcome]


class CandidateTrace(TypedDict):
    rule: str
    priority: int
    failed: ConditionOutcome


class Alternative(TypedDict):
    rule: str
    priority: int
    lead_unit: str | None
    matched_terms: list[str]


class Explanation(TypedDict):
    """Why a ticket was (or was not) routed; plain JSON for the ticket's audit event.
    `checked` lists the candidates tried before the winner, in order, with the first
    condition each failed (at most EXPLAIN_CANDIDATES_CAP; `checked_total` counts all).
    `alternatives` are the other rules that hold and would send the ticket to another unit,
    and `confidence` (0..1, None when nothing fired) rates the winner against them;
    `evidence` is "subject", or "setting" when the winner fired on setting words alone;
    `wording` names what in the caller's phrasing shaped the choice: "emphasis" (the winner
    was hit after 主要是/关键是), "negation" (a denied clause was set aside).
    `emergency` is the phrase that kept an emergency call from being routed at all."""

    fired: RuleTrace | None
    actions: dict[str, Any] | None
    checked: list[CandidateTrace]
    checked_total: int
    rules_total: int
    confidence: float | None
    evidence: str | None
    wording: list[str]
    alternatives: list[Alternative]
    emergency: str | None


@dataclass(frozen=True, slots=True)
class Match:
    rule: RuleSpec
    matched_terms: tuple[str, ...]
    explanation: RuleTrace


@dataclass(frozen=True, slots=True)
class _Context:
    text: str  # NFKC + lower, for keywords
    nfkc: str  # NFKC only, for regular expressions
    hits: frozenset[int]  # ids of the keywords found in the text
    facts: TicketFacts
    emphasis: frozenset[int] = frozenset()  # hits after "主要是/关键是 ..."
    settings: frozenset[int] = frozenset()  # ids of the setting words (小区, 物业 ...)
    negated: bool = False  # a keyword was found in a clause the caller denies


class _Terms:
    """One keyword condition over ids in the shared automaton; `terms` keeps the author's
    spelling for explanations."""

    __slots__ = ("ids", "terms")
    condition = ""

    def __init__(self, ids: frozenset[int], terms: dict[int, list[str]]) -> None:
        self.ids = ids
        self.terms = terms

    def passes(self, ctx: _Context) -> bool:
        raise NotImplementedError

    def spelled(self, ids: frozenset[int]) -> list[str]:
        return [term for i, terms in self.terms.items() if i in ids for term in terms]

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        return {
            "condition": self.condition,
            "passed": self.passes(ctx),
            "detail": {"hit": self.spelled(ctx.hits)},
        }


class _AnyTerms(_Terms):
    __slots__ = ()
    condition = "text_any"

    def passes(self, ctx: _Context) -> bool:
        return not self.ids.isdisjoint(ctx.hits)


class _AllTerms(_Terms):
    __slots__ = ()
    condition = "text_all"

    def passes(self, ctx: _Context) -> bool:
        return self.ids <= ctx.hits

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        outcome = super().outcome(ctx)
        outcome["detail"]["missing"] = self.spelled(self.ids - ctx.hits)
        return outcome


class _NoTerms(_Terms):
    __slots__ = ()
    condition = "text_none"

    def passes(self, ctx: _Context) -> bool:
        return self.ids.isdisjoint(ctx.hits)


class _Regex:
    __slots__ = ("patterns",)

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [re.compile(p, re.IGNORECASE) for p in patterns]

    def first(self, ctx: _Context) -> re.Match[str] | None:
        for pattern in self.patterns:
            found = pattern.search(ctx.nfkc)
            if found:
                return found
        return None

    def passes(self, ctx: _Context) -> bool:
        return self.first(ctx) is not None

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        found = self.first(ctx)
        detail = (
            {"pattern": found.re.pattern, "matched": found.group(0)}
            if found
            else {"pattern": None, "matched": None}
        )
        return {"condition": "regex", "passed": found is not None, "detail": detail}


class _OneOf:
    __slots__ = ("condition", "attribute", "allowed", "listed")

    def __init__(self, condition: str, attribute: str, listed: Sequence[Any]) -> None:
        self.condition = condition
        self.attribute = attribute
        self.listed = [str(v) for v in listed]
        self.allowed = frozenset(self.listed)

    def _actual(self, ctx: _Context) -> str | None:
        value = getattr(ctx.facts, self.attribute)
        return None if value is None else str(value).strip()

    def passes(self, ctx: _Context) -> bool:
        return self._actual(ctx) in self.allowed

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        return {
            "condition": self.condition,
            "passed": self.passes(ctx),
            "detail": {"expected": self.listed, "actual": self._actual(ctx)},
        }


class _Window:
    __slots__ = ("window",)

    def __init__(self, window: TimeWindow) -> None:
        self.window = window

    def passes(self, ctx: _Context) -> bool:
        moment = ctx.facts.local_time
        return moment is not None and self.window.contains(moment)

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        moment = ctx.facts.local_time
        return {
            "condition": "time_of_day",
            "passed": self.passes(ctx),
            "detail": {
                "expected": self.window.model_dump(),
                "actual": None if moment is None else moment.isoformat(),
            },
        }


class _CatchAll:
    __slots__ = ()

    def passes(self, ctx: _Context) -> bool:
        return True

    def outcome(self, ctx: _Context) -> ConditionOutcome:
        return {"condition": "catch_all", "passed": True, "detail": {}}


_Test = _Terms | _Regex | _OneOf | _Window | _CatchAll


class _Compiled:
    __slots__ = ("spec", "tests", "positive")

    def __init__(self, spec: RuleSpec, tests: list[_Test], positive: list[_Terms]) -> None:
        self.spec = spec
        self.tests = tests
        self.positive = positive

    def holds(self, ctx: _Context) -> bool:
        for test in self.tests:
            if not test.passes(ctx):
                return False
        return True

    def first_failure(self, ctx: _Context) -> ConditionOutcome | None:
        for test in self.tests:
            if not test.passes(ctx):
                return test.outcome(ctx)
        return None

    def weak(self, ctx: _Context) -> bool:
        """Fired on setting words alone (a rule testing no keywords, or a pattern, is not
        weak)."""
        if any(isinstance(test, _Regex) for test in self.tests):
            return False
        hit = [ctx.hits & terms.ids for terms in self.positive]
        ids = frozenset().union(*hit) if hit else frozenset()
        return bool(ids) and ids <= ctx.settings

    def matched_terms(self, ctx: _Context) -> tuple[str, ...]:
        found: list[str] = []
        for terms in self.positive:
            found += [t for t in terms.spelled(ctx.hits) if t not in found]
        return tuple(found)

    def trace(self, ctx: _Context) -> RuleTrace:
        return {
            "rule": self.spec.name,
            "priority": self.spec.priority,
            "matched_terms": list(self.matched_terms(ctx)),
            "conditions": [t.outcome(ctx) for t in self.tests],
        }


class CompiledRules:
    """Every enabled rule, ready to match. Keywords of all rules live in one Aho-Corasick
    automaton, so one pass over the text finds every hit; only rules with a hit, plus the
    rules that test no keywords, are then evaluated, in priority order."""

    def __init__(
        self,
        rules: list[_Compiled],
        automaton: Any,
        term_rules: list[tuple[int, ...]],
        always: tuple[int, ...],
        synonyms: Synonyms | None = None,
        settings: frozenset[int] = frozenset(),
    ) -> None:
        self._rules = rules
        self._automaton = automaton
        self._term_rules = term_rules
        self._always = always
        self._synonyms = synonyms
        self._settings = settings

    @classmethod
    def build(cls, specs: Iterable[RuleSpec], synonyms: Synonyms | None = None) -> CompiledRules:
        """`synonyms` rewrite the ticket's wording (dispatch/segment.py) before keywords
        are looked up; without them keywords match the text as written."""
        enabled = sorted((s for s in specs if s.enabled), key=lambda s: (s.priority, s.name))
        duplicates = sorted(n for n, count in Counter(s.name for s in enabled).items() if count > 1)
        if duplicates:
            raise InvalidInput(f"duplicate rule names: {', '.join(duplicates)}")

        term_ids: dict[str, int] = {}
        term_rules: list[list[int]] = []

        def intern(kind: type[_Terms], keywords: list[str], index: int) -> _Terms:
            spelled: dict[int, list[str]] = {}
            for keyword in keywords:
                key = normalise(keyword)
                if key not in term_ids:
                    term_ids[key] = len(term_rules)
                    term_rules.append([])
                tid = term_ids[key]
                spelled.setdefault(tid, [])
                if keyword not in spelled[tid]:
                    spelled[tid].append(keyword)
                if kind is not _NoTerms and index not in term_rules[tid][-1:]:
                    term_rules[tid].append(index)
            return kind(frozenset(spelled), spelled)

        rules: list[_Compiled] = []
        always: list[int] = []
        for index, spec in enumerate(enabled):
            c = spec.conditions
            tests: list[_Test] = []
            positive = [
                intern(kind, words, index)
                for kind, words in ((_AnyTerms, c.text_any), (_AllTerms, c.text_all))
                if words
            ]
            tests += positive
            if c.text_none:
                tests.append(intern(_NoTerms, c.text_none, index))
            tests += [
                _OneOf(name, attribute, listed)
                for name, attribute, listed in (
                    ("request_types", "request_type", c.request_types),
                    ("urgencies", "urgency", c.urgencies),
                    ("districts", "district", c.districts),
                    ("channels", "channel", c.channels),
                )
                if listed
            ]
            if c.time_of_day is not None:
                tests.append(_Window(c.time_of_day))
            if c.regex:
                tests.append(_Regex(c.regex))
            if not tests:
                tests.append(_CatchAll())
            if not positive:
                always.append(index)
            rules.append(_Compiled(spec, tests, positive))

        automaton = None
        if term_ids:
            automaton = ahocorasick.Automaton()
            for key, tid in term_ids.items():
                automaton.add_word(key, (tid, len(key)))
            automaton.make_automaton()
        settings = frozenset(
            tid
            for key, tid in term_ids.items()
            if synonyms is not None and key in synonyms.settings
        )
        term_tuples = [tuple(r) for r in term_rules]
        return cls(rules, automaton, term_tuples, tuple(always), synonyms, settings)

    @property
    def specs(self) -> list[RuleSpec]:
        """The enabled rules in evaluation order."""
        return [r.spec for r in self._rules]

    def _context(self, facts: TicketFacts) -> _Context:
        nfkc = unicodedata.normalize("NFKC", facts.text)
        text = nfkc.lower()
        if self._synonyms is not None:
            text = self._synonyms.apply(text)
        if self._automaton is None:
            return _Context(text=text, nfkc=nfkc, hits=frozenset(), facts=facts)
        denied = [m.span(1) for m in _NEGATED.finditer(text)]
        stressed = [m.end() for m in _EMPHASIS.finditer(text)]
        inside = self._synonyms.inside_words(text) if self._synonyms is not None else frozenset()
        every = list(self._automaton.iter(text))
        kept = [
            (end, (tid, length))
            for end, (tid, length) in every
            if not any(start <= end - length + 1 and end < stop for start, stop in denied)
        ]
        found = [
            (tid, end - length + 1)
            for end, (tid, length) in kept
            if length > SEGMENTED_KEYWORD_LENGTH or not {end - length + 1, end + 1} <= inside
        ]
        hits = frozenset(tid for tid, _ in found)
        emphasis = frozenset(tid for tid, start in found if stressed and start >= stressed[-1])
        return _Context(
            text=text,
            nfkc=nfkc,
            hits=hits,
            facts=facts,
            emphasis=emphasis,
            settings=hits & self._settings,
            negated=len(kept) < len(every),
        )

    def _candidates(self, ctx: _Context) -> list[int]:
        found = set(self._always)
        for tid in ctx.hits:
            found.update(self._term_rules[tid])
        if not ctx.emphasis:
            return sorted(found)
        stressed = set(self._always)
        for tid in ctx.emphasis:
            stressed.update(self._term_rules[tid])
        # The demand the caller stresses is tried first, each group in priority order.
        return sorted(found, key=lambda index: (index not in stressed, index))

    def match(self, facts: TicketFacts) -> Match | None:
        ctx = self._context(facts)
        if self._synonyms is not None and self._synonyms.emergency(ctx.text):
            return None
        candidates = self._candidates(ctx)
        for position, index in enumerate(candidates):
            rule = self._rules[index]
            if rule.holds(ctx):
                rule = self._specific(ctx, rule, candidates[position + 1 :])
                return Match(rule.spec, rule.matched_terms(ctx), rule.trace(ctx))
        return None

    def _specific(self, ctx: _Context, first: _Compiled, rest: Sequence[int]) -> _Compiled:
        """`first`, unless it stands on setting words alone and a later rule that holds
        routes elsewhere on a subject word: then that rule."""
        if not ctx.settings or not first.weak(ctx):
            return first
        for index in rest:
            rule = self._rules[index]
            if (
                rule.positive
                and rule.spec.actions.lead_unit != first.spec.actions.lead_unit
                and rule.holds(ctx)
                and not rule.weak(ctx)
            ):
                return rule
        return first

    def explain(self, facts: TicketFacts) -> Explanation:
        return self.decide(facts)[1]

    def decide(self, facts: TicketFacts) -> tuple[Match | None, Explanation]:
        """One pass that both picks the rule and explains the choice, for dispatch, which
        stores the explanation on the ticket's audit event."""
        ctx = self._context(facts)
        checked: list[CandidateTrace] = []
        checked_total = 0
        emergency = self._synonyms.emergency(ctx.text) if self._synonyms is not None else None
        candidates = [] if emergency else self._candidates(ctx)
        for position, index in enumerate(candidates):
            rule = self._rules[index]
            failure = rule.first_failure(ctx)
            if failure is None:
                rest = candidates[position + 1 :]
                chosen = self._specific(ctx, rule, rest)
                if chosen is not rule:
                    # The setting-word rule still counts as a rival, ahead of the rest.
                    rest = [index, *(i for i in rest if self._rules[i] is not chosen)]
                    rule = chosen
                trace = rule.trace(ctx)
                alternatives = self._alternatives(ctx, rule, rest)
                weak = rule.weak(ctx) and bool(ctx.settings)
                confidence = _confidence(rule.spec, alternatives)
                return Match(rule.spec, rule.matched_terms(ctx), trace), {
                    "fired": trace,
                    "actions": rule.spec.actions.model_dump(mode="json", exclude_defaults=True),
                    "checked": checked,
                    "checked_total": checked_total,
                    "rules_total": len(self._rules),
                    "confidence": _weakened(confidence, alternatives) if weak else confidence,
                    "evidence": "setting" if weak else "subject",
                    "wording": _wording(ctx, rule),
                    "alternatives": alternatives,
                    "emergency": None,
                }
            checked_total += 1
            if len(checked) < EXPLAIN_CANDIDATES_CAP:
                checked.append(
                    {"rule": rule.spec.name, "priority": rule.spec.priority, "failed": failure}
                )
        return None, {
            "fired": None,
            "actions": None,
            "checked": checked,
            "checked_total": checked_total,
            "rules_total": len(self._rules),
            "confidence": None,
            "evidence": None,
            "wording": [],
            "alternatives": [],
            "emergency": emergency,
        }

    def _alternatives(
        self, ctx: _Context, winner: _Compiled, rest: Sequence[int]
    ) -> list[Alternative]:
        """Later rules that also hold and would lead with another unit, one per unit."""
        units = {winner.spec.actions.lead_unit}
        found: list[Alternative] = []
        for index in rest:
            rule = self._rules[index]
            unit = rule.spec.actions.lead_unit
            if unit in units or not rule.holds(ctx):
                continue
            units.add(unit)
            found.append(
                {
                    "rule": rule.spec.name,
                    "priority": rule.spec.priority,
                    "lead_unit": unit,
                    "matched_terms": list(rule.matched_terms(ctx)),
                }
            )
            if len(found) == ALTERNATIVES_CAP:
                break
        return found


def _confidence(winner: RuleSpec, alternatives: list[Alternative]) -> float:
    """1.0 with no rival unit; else grows with the priority gap to the nearest rival."""
    if not alternatives:
        return 1.0
    gap = min(a["priority"] for a in alternatives) - winner.priority
    return round(0.5 + 0.5 * min(1.0, max(0, gap) / CONFIDENCE_PRIORITY_SPAN), 2)


def _weakened(confidence: float, alternatives: list[Alternative]) -> float:
    """The rating of a match on setting words alone: the setting may well be the subject
    (物业乱收费) when nothing else fired, much less so when another unit is in play."""
    return min(confidence, WEAK_CONFIDENCE if alternatives else WEAK_ALONE_CONFIDENCE)


def _wording(ctx: _Context, winner: _Compiled) -> list[str]:
    stressed = any(not terms.ids.isdisjoint(ctx.emphasis) for terms in winner.positive)
    return [name for name, used in (("emphasis", stressed), ("negation", ctx.negated)) if used]
