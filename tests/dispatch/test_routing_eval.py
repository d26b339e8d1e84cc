"""The router on the routing evaluation sets (bench/routing.py): routing_eval.yaml, the
evaluation set (split `tuned`, which the pack was tuned on, and `fresh`, written after the
last tuning), and routing_holdout.yaml, wording it was never tuned on. The headline and the
holdout's figures must reach issue #15's targets (90 % right, at most 3 % misroutes); the
fresh split's floor sits a few points under what it reached, so a regression fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[2] / "bench" / "routing.py"
ACCURACY_TARGET = 0.90
MISROUTE_TARGET = 0.03


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_routing", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _codes(bench: ModuleType) -> set[str]:
    units_file = BENCH.parents[1] / "dispatch" / "data" / "units.yaml"
    return {u["code"] for u in yaml.safe_load(units_file.read_text("utf-8"))["units"]}


def test_given_evaluation_set_then_it_is_large_labelled_consecutive_and_has_a_fresh_split(bench):
    requests = bench.load_requests()
    assert len(requests) >= 300
    assert [r["id"] for r in requests] == list(range(1, len(requests) + 1))
    assert len({r["text"] for r in requests}) == len(requests)
    codes = _codes(bench) | {bench.MANUAL}
    for request in requests:
        assert {request["unit"], *request.get("also", [])} <= codes, request["id"]
    assert sum(bench.is_fresh(r) for r in requests) >= 100


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    result: dict[str, Any] = bench.report(learned=True)
    return result


def test_given_holdout_set_then_it_is_large_fresh_and_labelled_with_known_units(bench):
    holdout = bench.load_requests(bench.HOLDOUT_PATH)
    assert len(holdout) >= 150
    assert [r["id"] for r in holdout] == list(range(1, len(holdout) + 1))
    texts = {r["text"] for r in holdout}
    assert len(texts) == len(holdout)
    assert not texts & {r["text"] for r in bench.load_requests()}
    codes = _codes(bench)
    for request in holdout:
        assert {request["unit"], *request.get("also", [])} <= codes | {bench.MANUAL}
    assert len({r["unit"] for r in holdout}) >= 25


def test_given_the_evaluation_set_when_benched_then_the_headline_reaches_the_target(report):
    # Reached: 94.1 % right, 3.1 % manual, 2.8 % misroutes (n=811).
    figures = report["files"]["routing_eval"]
    assert report["headline"] == "combined router on tests/dispatch/routing_eval.yaml"
    assert report["requests"] == figures["requests"]
    assert report["routing_accuracy"] == figures["combined"]["accuracy"]
    assert report["misroute_share"] == figures["combined"]["misroute_share"]
    assert report["routing_accuracy"] >= ACCURACY_TARGET
    assert report["misroute_share"] <= MISROUTE_TARGET
    shares = report["routing_accuracy"] + report["manual_share"] + report["misroute_share"]
    assert shares == pytest.approx(1.0, abs=0.001)


def test_given_fresh_wording_when_benched_then_the_holdout_reaches_the_target(report):
    # Reached: combined 96.0 % right / 2.3 % misroutes; rules alone 88.6 / 6.3;
    # dispatching by itself 88.6 / 1.1.
    holdout = report["files"]["routing_holdout"]
    assert report["holdout_routing_accuracy"] == holdout["combined"]["accuracy"]
    assert report["holdout_misroute_share"] == holdout["combined"]["misroute_share"]
    assert report["holdout_routing_accuracy"] >= ACCURACY_TARGET
    assert report["holdout_misroute_share"] <= MISROUTE_TARGET
    assert holdout["auto_dispatched"]["misroute_share"] <= MISROUTE_TARGET
    assert holdout["rules"]["accuracy"] >= 0.85


def test_given_the_fresh_split_when_benched_then_it_holds_its_floor(report):
    # Wording written after the last tuning. Reached: rules 68 % right / 15 % misroutes,
    # combined 78 / 10, dispatching by itself 65 / 9 (the three batches before scored
    # 78-79 / 7-11 for the rules and 81-86 / 7-9 combined when they were fresh): the pack's
    # vocabulary, not the gate, is what new wording still lacks (see the README).
    fresh = report["files"]["routing_eval"]["splits"]["fresh"]
    assert fresh["combined"]["accuracy"] >= 0.75
    assert fresh["combined"]["misroute_share"] <= 0.12
    assert fresh["auto_dispatched"]["misroute_share"] <= 0.11
    assert fresh["combined"]["accuracy"] >= fresh["rules"]["accuracy"]


def test_given_the_report_then_every_figure_says_what_it_was_scored_and_trained_on(report):
    for key in ("routing_accuracy", "manual_share", "misroute_share", "holdout_misroute_share"):
        assert key in report["legend"]
    assert "routing_eval" in report["legend"]["routing_accuracy"]
    assert "never on the requests scored" in report["legend"]["classifier"]
    files = report["files"]
    assert "three quarters" in files["routing_eval"]["classifier_trained_on"]
    assert files["routing_holdout"]["classifier_trained_on"].startswith("all of routing_eval")
    assert "tuned on" in files["routing_eval"]["splits"]["tuned"]["scored_on"]
    assert "not tuned on" in files["routing_eval"]["splits"]["fresh"]["scored_on"]


def test_given_cross_validation_then_no_request_is_scored_by_a_model_trained_on_it(
    bench, monkeypatch
):
    requests = [
        {"id": i, "text": f"第{i}号：停水了" if i % 2 else f"第{i}号：停电了", "unit": u}
        for i, u in ((i, "WATER" if i % 2 else "POWER") for i in range(1, 41))
    ]
    trained_on: list[set[int]] = []
    real_model = bench._model

    def recording(rules, history):
        trained_on.append({r["id"] for r in history})
        return real_model(rules, history)

    scored_by: dict[int, int] = {}
    real_advise = bench.advise_one

    def advising(rules, model, request):
        scored_by[request["id"]] = len(trained_on) - 1
        return real_advise(rules, model, request)

    monkeypatch.setattr(bench, "_model", recording)
    monkeypatch.setattr(bench, "advise_one", advising)
    on_eval, _, _, _ = bench.combined(bench.default_rules(), requests, [])
    assert set(on_eval) == {r["id"] for r in requests}
    for request_id, model_index in scored_by.items():
        assert request_id not in trained_on[model_index]
        assert len(trained_on[model_index]) == 30  # the other three quarters


def test_given_default_pack_when_benched_then_the_rules_alone_hold_their_floor(bench):
    report = bench.evaluate(bench.default_rules(), bench.load_requests())
    # The pack before the wording work: 55.7 % right, 20.4 % misroutes. The tuned split is a
    # training figure for the rules (99.3 % right reached); the fresh split is not (68 / 15).
    assert report["tuned_split"]["accuracy"] >= 0.97
    assert report["fresh_split"]["accuracy"] >= 0.65
    assert report["fresh_split"]["misroute_share"] <= 0.17
    shares = report["routing_accuracy"] + report["manual_share"] + report["misroute_share"]
    assert shares == pytest.approx(1.0, abs=0.001)


def test_given_emergency_call_when_benched_then_it_is_left_to_the_operator(bench):
    request = {"id": 0, "text": "有人在我们小区门口打人，拿着刀，现在还在打", "unit": "manual"}
    assert bench.predict(bench.default_rules(), request) == bench.MANUAL
