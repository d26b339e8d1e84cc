"""bench/relay.py on two calls: every relay (the edge's own, rtpengine, rtpengine with the
edge's taps) carries the stamped packets to the other leg of their own call, the taps get
their copies, and the figures have their keys. No timing is
asserted: the machine is shared."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench.relay import KEYS, bench, read_stamp, stamp, summarise  # noqa: E402
from telephony import codecs  # noqa: E402


def test_given_a_stamp_through_mulaw_decode_and_encode_then_it_reads_back():
    payload = stamp(513, 70_000, 4_000_000_000)
    assert len(payload) == 160
    through = codecs.ulaw_encode(codecs.ulaw_decode(payload))
    assert read_stamp(through) == (513, 70_000, 4_000_000_000)
    assert read_stamp(b"\xff" * 160) is None  # silence the relay sent
    assert read_stamp(b"") is None


def test_given_runs_then_the_summary_is_median_and_highest_and_the_ratio_of_medians():
    def run(loss, cpu):
        return {"loss": loss, "delay_p95_ms": 10.0, "jitter_p95_ms": 1.0, "cpu_pct": cpu}

    out = summarise(
        {
            "own": [run(0.0, 40.0), run(0.02, 60.0), run(0.01, 50.0)],
            "rtpengine": [run(0.0, 5.0), run(0.0, 4.0), run(0.0, 9.0)],
        }
    )
    own = out["summary"]["own"]
    assert own["cpu_pct"] == {"median": 50.0, "worst": 60.0}
    assert own["loss"] == {"median": 0.01, "worst": 0.02}
    assert out["ratio_to_own"]["rtpengine"]["cpu_pct"] == 0.1
    assert out["ratio_to_own"]["rtpengine"]["loss"] == 0.0


def test_given_two_calls_then_both_relays_deliver_both_ways_to_the_right_leg():
    result = bench([2], repeat=1, seconds=1.0, warmup=1.0, progress=False)
    figures = result["by_n"]["2"]
    assert set(figures["summary"]) == {"own", "rtpengine", "rtpengine_tap"}
    assert set(figures["summary"]["own"]) == {*KEYS, "runs_generator_behind"}
    for relay in ("own", "rtpengine", "rtpengine_tap"):
        (run,) = figures["runs"][relay]
        assert run["packets_expected"] == 4 * 50  # 4 streams, 1 s at 50 packets/s
        assert run["misrouted"] == 0 and run["duplicates"] == 0
    # rtpengine forwards every packet as it came; the own relay re-packetises, pads with
    # silence, and may drop a backlog a stall of the shared machine built up (its delay bound).
    engine, own = figures["runs"]["rtpengine"][0], figures["runs"]["own"][0]
    assert engine["packets_received"] == engine["packets_expected"] and engine["filler"] == 0
    assert own["packets_received"] >= 0.95 * own["packets_expected"], own
    # The edge's taps had a copy of both sides of both calls (the recording's media).
    tapped = figures["runs"]["rtpengine_tap"][0]
    assert set(tapped["cpu_pct_by_process"]) == {"rtpengine", "edge_tap"}
    assert tapped["tap_loss"] <= 0.05, tapped
