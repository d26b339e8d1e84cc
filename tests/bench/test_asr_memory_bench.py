"""bench/asr_memory.py on one decoder process, one run: it prints its one JSON object with
both modes' figures and their ratios. No figure is asserted beyond what holds on any
machine: the figures are for the README, not for a test."""

from __future__ import annotations

from tests.bench.run import bench_json


def test_given_one_process_and_one_run_then_the_bench_prints_both_modes_and_their_ratio():
    figures = bench_json("asr_memory.py", "--processes", "1", "--runs", "1")
    one = figures["processes"]["1"]
    for mode in ("separate", "shared"):
        assert one[mode]["ready_s"]["median"] > 0
        for when in ("idle", "after_call"):
            memory = one[mode][when]
            assert {"child_rss_mb", "child_pss_mb", "total_pss_mb"} <= memory.keys()
            assert memory["total_pss_mb"]["median"] > 0
            assert memory["total_pss_mb"]["worst"] >= memory["total_pss_mb"]["median"]
    assert "zygote_pss_mb" in one["shared"]["idle"]
    assert "zygote_pss_mb" not in one["separate"]["idle"]  # no zygote without sharing
    ratio = one["ratio_total_pss_shared_vs_separate"]
    assert ratio["idle"]["median"] > 0 and ratio["after_call"]["median"] > 0
    assert one["ratio_ready_s_shared_vs_separate"]["median"] > 0
