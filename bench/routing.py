"""How well does the dispatch router route realistic citizen requests?

Scores two files of labelled requests (see their headers for the labelling rules):
tests/dispatch/routing_eval.yaml (411 requests the rule pack was tuned on, except every 4th,
id % 4 == 0, the held-out split) and tests/dispatch/routing_holdout.yaml (176 fresh requests
written before the matching work of issue #15 and never tuned on). A prediction is right when
it equals the label's `unit` or is in `also`; for `unit: manual` right only when the router
declines. A wrong unit is a misroute (a return and days lost); no unit where one was expected
is a manual dispatch (the lesser evil).

Two routers are scored:
- `rules`: the default Chinese pack (dispatch/data/rules-zh.yaml) alone, first rule wins;
- `combined`: the unit the dispatcher sees proposed: the rules, the learned suggestion
  (dispatch/classifier.py) and the confidence gate (dispatch/advice.py);
- `auto_dispatched`: what of that dispatches by itself (dispatch/routing.py): the same, but
  where the proposal is the model's alone the ticket waits in the manual queue. The
  suggestion is trained only on texts that are not scored, plus the pack's prior documents:
  for routing_eval by 4-fold cross-validation over id % 4 (so the held-out split is scored
  by a model trained on the tuning split alone), for the holdout file on all of
  routing_eval.

The headline keys (`routing_accuracy`, `manual_share`, `misroute_share`, `requests`) are the
combined router on the holdout file (`headline` says so); every file, split and router is
under `files`. Individual failures are listed for routing_eval only: the holdout file is
scored in aggregate so that nobody tunes on it.

    python bench/routing.py               # readable figures
    python bench/routing.py --json        # one JSON object
    python bench/routing.py --no-learned  # the rules alone (no training; fast)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from dispatch.advice import AUTO_SOURCES, MODEL_ROUTES, Advice, advise
from dispatch.classifier import UnitClassifier, prior_documents, train
from dispatch.rule_matching import CompiledRules, TicketFacts
from dispatch.rule_specs import load_pack
from dispatch.rulebook import DEFAULT_RULES_PATH
from dispatch.segment import default_synonyms

TESTS = Path(__file__).resolve().parent.parent / "tests" / "dispatch"
EVAL_PATH = TESTS / "routing_eval.yaml"
HOLDOUT_PATH = TESTS / "routing_holdout.yaml"
MANUAL = "manual"
HELD_OUT_EVERY = 4


def load_requests(path: Path = EVAL_PATH) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))["requests"]
    return requests


def default_rules() -> CompiledRules:
    specs = load_pack(DEFAULT_RULES_PATH.read_text(encoding="utf-8"), "yaml")
    return CompiledRules.build(specs, default_synonyms())


def predict(rules: CompiledRules, request: dict[str, Any]) -> str:
    match = rules.match(TicketFacts(text=request["text"], district=request.get("district")))
    if match is None or match.rule.actions.lead_unit is None:
        return MANUAL
    return match.rule.actions.lead_unit


def outcome(request: dict[str, Any], predicted: str) -> str:
    """right | manual (left to manual dispatch, wrongly) | misroute (a wrong unit)."""
    if predicted == request["unit"] or predicted in request.get("also", []):
        return "right"
    return "manual" if predicted == MANUAL else "misroute"


def _shares(outcomes: list[str]) -> dict[str, float]:
    n = len(outcomes) or 1
    return {
        "n": len(outcomes),
        "accuracy": round(outcomes.count("right") / n, 4),
        "manual_share": round(outcomes.count("manual") / n, 4),
        "misroute_share": round(outcomes.count("misroute") / n, 4),
    }


def evaluate(rules: CompiledRules, requests: list[dict[str, Any]]) -> dict[str, Any]:
    results = []
    for request in requests:
        predicted = predict(rules, request)
        results.append((request, predicted, outcome(request, predicted)))
    every = [o for _, _, o in results]
    tuning = [o for r, _, o in results if r["id"] % HELD_OUT_EVERY != 0]
    held_out = [o for r, _, o in results if r["id"] % HELD_OUT_EVERY == 0]
    by_tag: dict[str, list[str]] = defaultdict(list)
    for request, _, o in results:
        for tag in request.get("tags", []):
            by_tag[tag].append(o)
    overall = _shares(every)
    return {
        "requests": overall["n"],
        "routing_accuracy": overall["accuracy"],
        "manual_share": overall["manual_share"],
        "misroute_share": overall["misroute_share"],
        "tuning_split": _shares(tuning),
        "held_out_split": _shares(held_out),
        "by_tag": {tag: _shares(os) for tag, os in sorted(by_tag.items())},
        "misroutes": [
            {"id": r["id"], "expected": r["unit"], "predicted": p, "text": r["text"]}
            for r, p, o in results
            if o == "misroute"
        ],
        "manual": [
            {"id": r["id"], "expected": r["unit"], "text": r["text"]}
            for r, _, o in results
            if o == "manual"
        ],
    }


def _folds(requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [[r for r in requests if r["id"] % HELD_OUT_EVERY == k] for k in range(HELD_OUT_EVERY)]


def _model(rules: CompiledRules, history: list[dict[str, Any]]) -> UnitClassifier:
    kept = [r for r in history if r["unit"] != MANUAL]
    return train([r["text"] for r in kept], [r["unit"] for r in kept], prior_documents(rules.specs))


def advise_one(
    rules: CompiledRules, model: UnitClassifier | None, request: dict[str, Any]
) -> Advice:
    """The combined router's advice for one request."""
    facts = TicketFacts(text=request["text"], district=request.get("district"))
    match, explanation = rules.decide(facts)
    suggestion = model.suggest(facts.text) if model is not None else None
    support = model.support if model is not None else None
    return advise(match, explanation, suggestion, support)


def _shown(advice: Advice) -> str:
    """What the dispatcher sees proposed (one click to confirm when it is the model's)."""
    return advice.unit or MANUAL


def _auto(advice: Advice) -> str:
    """What dispatches by itself (dispatch/routing.py): the model's proposals wait."""
    return advice.unit if advice.unit and advice.source in AUTO_SOURCES else MANUAL


def combined(
    rules: CompiledRules, evaluation: list[dict[str, Any]], holdout: list[dict[str, Any]]
) -> tuple[dict[int, Advice], dict[int, Advice], dict[int, str], int]:
    """Combined-router advice by id for routing_eval (cross-validated) and the holdout file,
    the suggestion alone on the holdout file, and the prior documents' count."""
    on_eval: dict[int, Advice] = {}
    for fold in _folds(evaluation):
        scored = {r["id"] for r in fold}
        model = _model(rules, [r for r in evaluation if r["id"] not in scored])
        on_eval.update((r["id"], advise_one(rules, model, r)) for r in fold)
    model = _model(rules, evaluation)
    on_holdout = {r["id"]: advise_one(rules, model, r) for r in holdout}
    alone = {}
    for r in holdout:
        suggestion = model.suggest(r["text"])
        alone[r["id"]] = suggestion.unit if suggestion.confidence >= MODEL_ROUTES else MANUAL
    return on_eval, on_holdout, alone, len(prior_documents(rules.specs))


def _scored(requests: list[dict[str, Any]], predicted: dict[int, str]) -> dict[str, float]:
    return _shares([outcome(r, predicted[r["id"]]) for r in requests])


def report(*, learned: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    rules, evaluation, holdout = default_rules(), load_requests(), load_requests(HOLDOUT_PATH)
    tuning = [r for r in evaluation if r["id"] % HELD_OUT_EVERY != 0]
    held_out = [r for r in evaluation if r["id"] % HELD_OUT_EVERY == 0]
    # ids restart at 1 in each file: one mapping per file
    ruled = {r["id"]: predict(rules, r) for r in evaluation}
    ruled_holdout = {r["id"]: predict(rules, r) for r in holdout}
    by_rules = evaluate(rules, evaluation)
    files: dict[str, Any] = {
        "routing_eval": {
            "requests": len(evaluation),
            "rules": _scored(evaluation, ruled),
            "splits": {
                "tuning": {"rules": _scored(tuning, ruled)},
                "held_out": {"rules": _scored(held_out, ruled)},
            },
        },
        "routing_holdout": {"requests": len(holdout), "rules": _scored(holdout, ruled_holdout)},
    }
    result: dict[str, Any] = {}
    if learned:
        on_eval, on_holdout, alone, priors = combined(rules, evaluation, holdout)
        eval_file, holdout_file = files["routing_eval"], files["routing_holdout"]
        for router, pick in (("combined", _shown), ("auto_dispatched", _auto)):
            shown = {i: pick(a) for i, a in on_eval.items()}
            eval_file[router] = _scored(evaluation, shown)
            eval_file["splits"]["tuning"][router] = _scored(tuning, shown)
            eval_file["splits"]["held_out"][router] = _scored(held_out, shown)
            holdout_file[router] = _scored(holdout, {i: pick(a) for i, a in on_holdout.items()})
        holdout_file["classifier_alone"] = _scored(holdout, alone)
        headline = holdout_file["combined"]
        result["headline"] = "combined router on tests/dispatch/routing_holdout.yaml"
        result["learned"] = {"prior_documents": priors, "model_routes_from": MODEL_ROUTES}
        cases = {r["id"]: _shown(on_eval[r["id"]]) for r in evaluation}
    else:
        headline = files["routing_holdout"]["rules"]
        result["headline"] = "rules alone on tests/dispatch/routing_holdout.yaml"
        cases = {r["id"]: ruled[r["id"]] for r in evaluation}
    result.update(
        {
            "requests": headline["n"],
            "routing_accuracy": headline["accuracy"],
            "manual_share": headline["manual_share"],
            "misroute_share": headline["misroute_share"],
            "files": files,
            "by_tag": by_rules["by_tag"],
            "misroutes": [
                {
                    "id": r["id"],
                    "expected": r["unit"],
                    "predicted": cases[r["id"]],
                    "text": r["text"],
                }
                for r in evaluation
                if outcome(r, cases[r["id"]]) == "misroute"
            ],
            "manual": [
                {"id": r["id"], "expected": r["unit"], "text": r["text"]}
                for r in evaluation
                if outcome(r, cases[r["id"]]) == "manual"
            ],
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tuning-only", action="store_true", help="list only tuning-split cases")
    parser.add_argument("--no-learned", action="store_true", help="the rules alone (no training)")
    args = parser.parse_args()
    result = report(learned=not args.no_learned)
    if args.tuning_only:
        for key in ("misroutes", "manual"):
            result[key] = [c for c in result[key] if c["id"] % HELD_OUT_EVERY != 0]
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(f"headline: {result['headline']}")
    print(
        f"  routing_accuracy {result['routing_accuracy']:.1%}  manual {result['manual_share']:.1%}"
        f"  misroute {result['misroute_share']:.1%}  (n={result['requests']})"
    )
    for name, figures in result["files"].items():
        rows = [(name, figures)] + [
            (f"{name}/{k}", v) for k, v in figures.get("splits", {}).items()
        ]
        for label, f in rows:
            for router in ("rules", "combined", "auto_dispatched", "classifier_alone"):
                if router in f:
                    s = f[router]
                    print(
                        f"{label:<26} {router:<17} n={s['n']:<4} acc {s['accuracy']:.1%}"
                        f"  manual {s['manual_share']:.1%}  misroute {s['misroute_share']:.1%}"
                    )
    for case in result["misroutes"]:
        print(f"MISROUTE #{case['id']} {case['expected']} -> {case['predicted']}: {case['text']}")
    for case in result["manual"]:
        print(f"MANUAL   #{case['id']} {case['expected']}: {case['text']}")


if __name__ == "__main__":
    main()
