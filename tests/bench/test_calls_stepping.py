"""bench/calls.py's live-ASR comparison steps each side to its capacity, whatever step a
repeat starts at (no platform, no Vosk: the sides are stand-ins that pass below a bound)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench._call_steps import AsrComparison, largest  # noqa: E402


def comparison(live_capacity: int, raw_capacity: int) -> tuple[AsrComparison, list[tuple]]:
    ran: list[tuple] = []
    sides = AsrComparison.__new__(AsrComparison)
    sides.heard = [b"\0\0"]

    def step(side: str, capacity: int, streams: int) -> dict:
        ran.append((side, streams))
        return {"streams": streams, "sustained": streams, "all_sustained": streams <= capacity}

    sides.live = lambda streams, tag: step("live", live_capacity, streams)  # type: ignore[method-assign]
    sides.raw = lambda streams: step("raw", raw_capacity, streams)  # type: ignore[method-assign]
    return sides, ran


def test_given_a_repeat_starting_above_a_sides_capacity_then_it_steps_down_to_it():
    """A repeat starts 2 below the capacity found before; a side that misses there goes
    down 2 at a time until a step passes (it used to halve towards 0: 8 for 14)."""
    sides, ran = comparison(live_capacity=14, raw_capacity=18)
    raw_steps, live_steps = sides.run((16, 18, 20, 22))
    assert largest(live_steps, "streams", "all_sustained") == 14
    assert largest(raw_steps, "streams", "all_sustained") == 18
    assert ("live", 8) not in ran
    # every step missed is tried twice, and the ladder stops where both sides missed
    assert ran.count(("live", 16)) == 2 and ran.count(("raw", 20)) == 2
    assert ("raw", 22) not in ran


def test_given_a_full_ladder_then_the_step_between_a_pass_and_a_miss_four_apart_is_run():
    sides, _ = comparison(live_capacity=17, raw_capacity=30)
    raw_steps, live_steps = sides.run((4, 8, 12, 16, 20, 24, 28, 32))
    assert largest(live_steps, "streams", "all_sustained") == 16
    assert [s["streams"] for s in live_steps] == [4, 8, 12, 16, 18, 20]
    assert largest(raw_steps, "streams", "all_sustained") == 30  # 28 passed, 32 missed
