"""The router on the routing evaluation sets (bench/routing.py): routing_eval.yaml, on which
the pack was tuned except its held-out split, and routing_holdout.yaml, fresh wording it was
never tuned on. Floors sit a few points under the figures reached, so a regression fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[2] / "bench" / "routing.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_routing", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_given_evaluation_set_then_it_is_large_labelled_and_consecutive(bench):
    requests = bench.load_requests()
    assert len(requests) >= 300
    assert [r["id"] for r in requests] == list(range(1, len(requests) + 1))
    assert len({r["text"] for r in requests}) == len(requests)


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
    units_file = Path(bench.__file__).parents[1] / "dispatch" / "data" / "units.yaml"
    codes = {u["code"] for u in yaml.safe_load(units_file.read_text("utf-8"))["units"]}
    for request in holdout:
        assert {request["unit"], *request.get("also", [])} <= codes | {bench.MANUAL}
    assert len({r["unit"] for r in holdout}) >= 25


def test_given_fresh_wording_when_benched_then_the_combined_router_holds_its_floor(report):
    # Reached: rules alone 81.8 % right / 9.7 % misroutes (79.0 / 10.8 before issue #15's
    # matching work); combined 92.6 / 4.0; dispatching by itself 81.8 / 2.8.
    holdout = report["files"]["routing_holdout"]
    assert report["headline"].startswith("combined router on")
    assert report["routing_accuracy"] == holdout["combined"]["accuracy"]
    assert holdout["combined"]["accuracy"] >= 0.89
    assert holdout["combined"]["misroute_share"] <= 0.06
    assert holdout["auto_dispatched"]["accuracy"] >= 0.78
    assert holdout["auto_dispatched"]["misroute_share"] <= 0.045
    assert holdout["rules"]["accuracy"] >= 0.78


def test_given_held_out_split_when_benched_then_the_gate_halves_the_misroutes(report):
    # Reached: rules 74.5 % / 13.7 %; combined 79.4 / 6.9; dispatching by itself 72.5 / 5.9.
    split = report["files"]["routing_eval"]["splits"]["held_out"]
    assert split["combined"]["accuracy"] >= 0.76
    assert split["combined"]["misroute_share"] <= 0.09
    assert split["auto_dispatched"]["misroute_share"] <= 0.08
    assert split["combined"]["accuracy"] > split["rules"]["accuracy"]
    assert split["combined"]["misroute_share"] < split["rules"]["misroute_share"]


def test_given_default_pack_when_benched_then_accuracy_and_misroutes_hold_their_floor(bench):
    report = bench.evaluate(bench.default_rules(), bench.load_requests())
    # Floors that the pack as it stood before the wording work (55.7 % right, 20.4 %
    # misroutes) failed; the targets are 90 % and 3 %.
    assert report["routing_accuracy"] >= 0.90
    assert report["misroute_share"] <= 0.06
    assert report["held_out_split"]["accuracy"] >= 0.70
    shares = report["routing_accuracy"] + report["manual_share"] + report["misroute_share"]
    assert shares == pytest.approx(1.0, abs=0.001)


def test_given_emergency_call_when_benched_then_it_is_left_to_the_operator(bench):
    request = {"id": 0, "text": "有人在我们小区门口打人，拿着刀，现在还在打", "unit": "manual"}
    assert bench.predict(bench.default_rules(), request) == bench.MANUAL
