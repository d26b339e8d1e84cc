"""How well does the dispatch router route realistic citizen requests?

Scores two files of labelled requests (see their headers for the labelling rules):

- tests/dispatch/routing_eval.yaml, the evaluation set, in two splits: `tuned` (ids below
  FRESH_FROM: the rule pack was tuned on every one of them, so for the rules alone these are
  training figures) and `fresh` (ids from FRESH_FROM: written after the last tuning, before
  the router was run on them);
- tests/dispatch/routing_holdout.yaml, written before the matching work of issue #15 and
  never tuned on: scored in aggregate only, so that nobody tunes on it.

A prediction is right when it equals the label's `unit` or is in `also`; for `unit: manual`
right only when the router declines. A wrong unit is a misroute (a return and days lost); no
unit where one was expected is a manual dispatch (the lesser evil).

Routers scored:
- `rules`: the default Chinese pack (dispatch/data/rules-zh.yaml) alone, first rule wins;
- `combined`: the unit the dispatcher sees proposed: the rules, the learned suggestion
  (dispatch/classifier.py) and the confidence gate (dispatch/advice.py);
- `auto_dispatched`: what of that dispatches by itself (dispatch/routing.py): the same, but
  where the proposal is the model's alone the ticket waits in the manual queue;
- `classifier_alone` (holdout file): the suggestion where it reaches MODEL_ROUTES.

The learned suggestion is trained only on what a centre would have in production, its
history and the rule pack's wording (`prior_documents`), never on the requests it is scored
on: on routing_eval by 4-fold cross-validation over id % 4 (each request is scored by a
model whose history is the other three quarters), on the holdout file with all of
routing_eval as history.

The headline keys (`routing_accuracy`, `manual_share`, `misroute_share`, `requests`) are the
combined router on the whole of routing_eval; the `holdout_` keys the same router on the
holdout file; `legend` says what every key is and `files` holds every file, split and router,
each with what it was scored on and trained on. Individual failures are listed for the tuned
split only.

    python bench/routing.py               # readable figures
    python bench/routing.py --json        # one JSON object
    python bench/routing.py --no-learned  # the rules alone (no training; fast)
    python bench/routing.py --no-learned --tuning-only  # while tuning a pack: the tuned
                                          # split only, so the untuned figures stay unseen
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
FOLDS = 4
FRESH_FROM = 712  # routing_eval ids from here were written after the pack's last tuning

EVAL_HISTORY = "the other three quarters of routing_eval (4-fold by id % 4) + the rule pack"
HOLDOUT_HISTORY = "all of routing_eval + the rule pack"
LEGEND = {
    "routing_accuracy": "combined router, routing_eval (all splits): share routed right",
    "manual_share": "combined router, routing_eval: share left to manual dispatch wrongly",
    "misroute_share": "combined router, routing_eval: share sent to a wrong unit",
    "requests": "routing_eval requests scored",
    "holdout_routing_accuracy": "combined router, routing_holdout: share routed right",
    "holdout_manual_share": "combined router, routing_holdout: manual dispatch share",
    "holdout_misroute_share": "combined router, routing_holdout: misroute share",
    "holdout_requests": "routing_holdout requests scored",
    "classifier": f"on routing_eval trained on {EVAL_HISTORY}; on routing_holdout on "
    f"{HOLDOUT_HISTORY}; never on the requests scored",
    "rules": f"the pack was tuned on routing_eval ids below {FRESH_FROM} (split `tuned`): "
    "training figures for the rules; `fresh` and routing_holdout were not tuned on",
}


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


def is_fresh(request: dict[str, Any]) -> bool:
    return int(request["id"]) >= FRESH_FROM


def _shares(outcomes: list[str]) -> dict[str, float]:
    n = len(outcomes) or 1
    return {
        "n": len(outcomes),
        "accuracy": round(outcomes.count("right") / n, 4),
        "manual_share": round(outcomes.count("manual") / n, 4),
        "misroute_share": round(outcomes.count("misroute") / n, 4),
    }


def evaluate(rules: CompiledRules, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules alone on `requests`, overall, per split and per tag, with the failures."""
    results = []
    for request in requests:
        predicted = predict(rules, request)
        results.append((request, predicted, outcome(request, predicted)))
    every = [o for _, _, o in results]
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
        "tuned_split": _shares([o for r, _, o in results if not is_fresh(r)]),
        "fresh_split": _shares([o for r, _, o in results if is_fresh(r)]),
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
    return [[r for r in requests if r["id"] % FOLDS == k] for k in range(FOLDS)]


def _model(rules: CompiledRules, history: list[dict[str, Any]]) -> UnitClassifier:
    """What the retraining task would learn from `history` as the centre's dispatched
    tickets: requests left to manual dispatch never got a lead unit, so they are no label."""
    kept = [r for r in history if r["unit"] != MANUAL]
    return train(
        [r["text"] for r in kept],
        [r["unit"] for r in kept],
        prior_documents(rules.specs, default_synonyms().settings),
    )


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
    priors = len(prior_documents(rules.specs, default_synonyms().settings))
    return on_eval, on_holdout, alone, priors


def _scored(requests: list[dict[str, Any]], predicted: dict[int, str]) -> dict[str, float]:
    return _shares([outcome(r, predicted[r["id"]]) for r in requests])


def report(*, learned: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    rules, evaluation, holdout = default_rules(), load_requests(), load_requests(HOLDOUT_PATH)
    tuned = [r for r in evaluation if not is_fresh(r)]
    fresh = [r for r in evaluation if is_fresh(r)]
    # ids restart at 1 in each file: one mapping per file
    ruled = {r["id"]: predict(rules, r) for r in evaluation}
    ruled_holdout = {r["id"]: predict(rules, r) for r in holdout}
    files: dict[str, Any] = {
        "routing_eval": {
            "requests": len(evaluation),
            "classifier_trained_on": EVAL_HISTORY,
            "rules": _scored(evaluation, ruled),
            "splits": {
                "tuned": {
                    "ids": f"1-{FRESH_FROM - 1}",
                    "scored_on": "requests the rule pack was tuned on (training for the rules)",
                    "rules": _scored(tuned, ruled),
                },
                "fresh": {
                    "ids": f"{FRESH_FROM}-",
                    "scored_on": "requests written after the pack's last tuning, not tuned on",
                    "rules": _scored(fresh, ruled),
                },
            },
        },
        "routing_holdout": {
            "requests": len(holdout),
            "classifier_trained_on": HOLDOUT_HISTORY,
            "scored_on": "requests never tuned on (aggregate only)",
            "rules": _scored(holdout, ruled_holdout),
        },
    }
    result: dict[str, Any] = {}
    if learned:
        on_eval, on_holdout, alone, priors = combined(rules, evaluation, holdout)
        eval_file, holdout_file = files["routing_eval"], files["routing_holdout"]
        for router, pick in (("combined", _shown), ("auto_dispatched", _auto)):
            shown = {i: pick(a) for i, a in on_eval.items()}
            eval_file[router] = _scored(evaluation, shown)
            eval_file["splits"]["tuned"][router] = _scored(tuned, shown)
            eval_file["splits"]["fresh"][router] = _scored(fresh, shown)
            holdout_file[router] = _scored(holdout, {i: pick(a) for i, a in on_holdout.items()})
        holdout_file["classifier_alone"] = _scored(holdout, alone)
        router = "combined"
        result["headline"] = "combined router on tests/dispatch/routing_eval.yaml"
        result["learned"] = {"prior_documents": priors, "model_routes_from": MODEL_ROUTES}
        cases = {r["id"]: _shown(on_eval[r["id"]]) for r in evaluation}
    else:
        router = "rules"
        result["headline"] = "rules alone on tests/dispatch/routing_eval.yaml"
        cases = ruled
    headline, holdout_line = files["routing_eval"][router], files["routing_holdout"][router]
    listed = tuned  # failures are listed for the tuned split only
    result.update(
        {
            "requests": headline["n"],
            "routing_accuracy": headline["accuracy"],
            "manual_share": headline["manual_share"],
            "misroute_share": headline["misroute_share"],
            "holdout_requests": holdout_line["n"],
            "holdout_routing_accuracy": holdout_line["accuracy"],
            "holdout_manual_share": holdout_line["manual_share"],
            "holdout_misroute_share": holdout_line["misroute_share"],
            "legend": LEGEND,
            "files": files,
            "by_tag": evaluate(rules, evaluation)["by_tag"],
            "misroutes": [
                {
                    "id": r["id"],
                    "expected": r["unit"],
                    "predicted": cases[r["id"]],
                    "text": r["text"],
                }
                for r in listed
                if outcome(r, cases[r["id"]]) == "misroute"
            ],
            "manual": [
                {"id": r["id"], "expected": r["unit"], "text": r["text"]}
                for r in listed
                if outcome(r, cases[r["id"]]) == "manual"
            ],
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-learned", action="store_true", help="the rules alone (no training)")
    parser.add_argument(
        "--tuning-only",
        action="store_true",
        help="print the tuned split's figures and failures only (no fresh, no holdout)",
    )
    args = parser.parse_args()
    result = report(learned=not args.no_learned)
    if args.tuning_only:
        tuned = result["files"]["routing_eval"]["splits"]["tuned"]
        tuning = {k: v for k, v in result.items() if k in ("misroutes", "manual", "seconds")}
        result = {"tuned_split": tuned, **tuning}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    if args.tuning_only:
        for router in ("rules", "combined", "auto_dispatched"):
            if router in result["tuned_split"]:
                s = result["tuned_split"][router]
                print(f"tuned split  {router:<17} n={s['n']:<4} acc {s['accuracy']:.1%}")
        _failures(result)
        return
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(f"headline: {result['headline']}")
    print(
        f"  routing_accuracy {result['routing_accuracy']:.1%}  manual {result['manual_share']:.1%}"
        f"  misroute {result['misroute_share']:.1%}  (n={result['requests']})"
    )
    print(
        f"  holdout: routing_accuracy {result['holdout_routing_accuracy']:.1%}"
        f"  manual {result['holdout_manual_share']:.1%}"
        f"  misroute {result['holdout_misroute_share']:.1%}  (n={result['holdout_requests']})"
    )
    for key in ("classifier", "rules"):
        print(f"  {key}: {LEGEND[key]}")
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
    _failures(result)


def _failures(result: dict[str, Any]) -> None:
    print(f"failures of the tuned split (ids below {FRESH_FROM}):")
    for case in result["misroutes"]:
        print(f"MISROUTE #{case['id']} {case['expected']} -> {case['predicted']}: {case['text']}")
    for case in result["manual"]:
        print(f"MANUAL   #{case['id']} {case['expected']}: {case['text']}")


if __name__ == "__main__":
    main()
