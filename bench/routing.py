"""How well does the default rule pack route realistic citizen requests?

Runs every request of tests/dispatch/routing_eval.yaml through the default Chinese pack
(dispatch/data/rules-zh.yaml) and scores the lead unit it picks: right when it equals the
label's `unit` or is in `also`; for `unit: manual` right only when no rule routes. A wrong
unit is a misroute (it costs a return and days); no unit where one was expected is a
manual dispatch (the lesser evil). Every 4th request (id % 4 == 0) is a held-out split that
was never looked at while tuning the pack; accuracy is reported on both splits.

    python bench/routing.py            # readable figures
    python bench/routing.py --json     # one JSON object (routing_accuracy, manual_share, ...)

`learned` in the output simulates the learned suggestion (dispatch/classifier.py): trained on
the tuning split as if it were the centre's history, it is scored on the held-out split alone
and combined with the rules (rules first; the suggestion only where no rule fired and its
confidence is at least SUGGESTION_THRESHOLD).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from dispatch.rule_matching import CompiledRules, TicketFacts
from dispatch.rule_specs import load_pack
from dispatch.rulebook import DEFAULT_RULES_PATH
from dispatch.segment import default_synonyms

EVAL_PATH = Path(__file__).resolve().parent.parent / "tests" / "dispatch" / "routing_eval.yaml"
MANUAL = "manual"
HELD_OUT_EVERY = 4
SUGGESTION_THRESHOLD = 0.25  # chosen by 3-fold cross-validation inside the tuning split


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


def learned(rules: CompiledRules, requests: list[dict[str, Any]]) -> dict[str, Any]:
    from dispatch.classifier import train

    history = [r for r in requests if r["id"] % HELD_OUT_EVERY != 0 and r["unit"] != MANUAL]
    model = train([r["text"] for r in history], [r["unit"] for r in history])
    held_out = [r for r in requests if r["id"] % HELD_OUT_EVERY == 0]
    alone, combined = [], []
    for request in held_out:
        suggestion = model.suggest(request["text"])
        confident = suggestion.unit if suggestion.confidence >= SUGGESTION_THRESHOLD else MANUAL
        alone.append(outcome(request, confident))
        ruled = predict(rules, request)
        combined.append(outcome(request, ruled if ruled != MANUAL else confident))
    return {
        "trained_on": model.trained_on,
        "threshold": SUGGESTION_THRESHOLD,
        "held_out_classifier_alone": _shares(alone),
        "held_out_rules_then_classifier": _shares(combined),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tuning-only", action="store_true", help="list only tuning-split cases")
    parser.add_argument("--no-learned", action="store_true", help="skip the classifier figures")
    args = parser.parse_args()
    rules, requests = default_rules(), load_requests()
    report = evaluate(rules, requests)
    if not args.no_learned:
        report["learned"] = learned(rules, requests)
    if args.tuning_only:
        for key in ("misroutes", "manual"):
            report[key] = [c for c in report[key] if c["id"] % HELD_OUT_EVERY != 0]
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return
    print(f"requests            {report['requests']}")
    print(f"routing_accuracy    {report['routing_accuracy']:.1%}")
    print(f"manual_share        {report['manual_share']:.1%}")
    print(f"misroute_share      {report['misroute_share']:.1%}")
    for split in ("tuning_split", "held_out_split"):
        s = report[split]
        right, wrong = s["accuracy"], s["misroute_share"]
        print(f"{split:<19} n={s['n']} accuracy {right:.1%} misroutes {wrong:.1%}")
    if "learned" in report:
        for name in ("held_out_classifier_alone", "held_out_rules_then_classifier"):
            s = report["learned"][name]
            right, wrong = s["accuracy"], s["misroute_share"]
            print(f"learned {name:<31} acc {right:.1%} misroutes {wrong:.1%}")
    for tag, s in report["by_tag"].items():
        print(
            f"  {tag:<18} n={s['n']:<4} acc {s['accuracy']:.0%} misroute {s['misroute_share']:.0%}"
        )
    for case in report["misroutes"]:
        print(f"MISROUTE #{case['id']} {case['expected']} -> {case['predicted']}: {case['text']}")
    for case in report["manual"]:
        print(f"MANUAL   #{case['id']} {case['expected']}: {case['text']}")


if __name__ == "__main__":
    main()
