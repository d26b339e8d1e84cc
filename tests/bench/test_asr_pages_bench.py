"""bench/asr_pages.py, one small run: it prints its one JSON object with both sides and
their ratio, and the huge-page side really got huge pages where the kernel gives them on
advice. No CPU figure is asserted: those are for the README, not for a test."""

from __future__ import annotations

from tests.bench.run import bench_json


def test_given_one_small_run_then_the_bench_prints_both_sides_and_their_ratio():
    figures = bench_json("asr_pages.py", "--runs", "1", "--recognizers", "1", "--rounds", "1")
    assert figures["same_transcripts"] is True
    for name in ("huge", "4k"):
        assert figures[name]["cpu_s"]["median"] > 0
        assert figures[name]["rss_mb"]["median"] > 300  # the model is loaded
    if figures["thp_mode"] == "madvise":
        assert figures["huge"]["huge_mb"]["median"] >= 100
        assert figures["4k"]["huge_mb"]["worst"] == 0
    assert figures["cpu_ratio_huge_vs_4k"]["median"] > 0
