"""The live feed's cursor: ids committed out of order are each delivered once, and the resume
point never passes an id that may still appear — until its gap is old enough to be a
rolled-back insert."""

from __future__ import annotations

from hotline.live import Cursor


def test_given_ids_in_order_then_all_delivered_and_the_low_mark_follows():
    cursor = Cursor(low=10)
    assert cursor.accept([11, 12, 13], now=0.0, gap_wait_s=10) == [11, 12, 13]
    assert cursor.low == 13 and cursor.seen == set()


def test_given_a_later_id_first_then_the_low_mark_waits_for_the_earlier_one():
    cursor = Cursor(low=10)
    assert cursor.accept([12], now=0.0, gap_wait_s=10) == [12]
    assert cursor.low == 10  # 11 may still commit: a resume from here replays it
    assert cursor.accept([12], now=1.0, gap_wait_s=10) == []  # not delivered twice
    assert cursor.accept([11, 12], now=2.0, gap_wait_s=10) == [11]
    assert cursor.low == 12 and cursor.gaps == {}


def test_given_a_gap_that_never_fills_then_passed_after_the_wait():
    cursor = Cursor(low=0)
    cursor.accept([1, 3], now=0.0, gap_wait_s=10)
    assert cursor.low == 1
    cursor.accept([3, 4], now=9.0, gap_wait_s=10)
    assert cursor.low == 1
    cursor.accept([3, 4], now=10.5, gap_wait_s=10)
    assert cursor.low == 4 and cursor.seen == set()


def test_given_old_ids_again_then_ignored():
    cursor = Cursor(low=5)
    assert cursor.accept([3, 4, 5, 6], now=0.0, gap_wait_s=10) == [6]
