"""The default pack on the routing evaluation set (bench/routing.py, routing_eval.yaml)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

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
