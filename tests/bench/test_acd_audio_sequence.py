"""bench/acd.py's sampled phones put what they heard in RTP sequence order; the edge's leg
numbers its packets from a random start, so the numbers may wrap within a call's noise."""

from __future__ import annotations

from bench._acd_audio import extended_sequences


def test_given_numbers_that_wrap_then_they_stay_in_order():
    assert extended_sequences([65533, 65534, 65535, 0, 1]) == [65533, 65534, 65535, 65536, 65537]


def test_given_a_packet_late_across_the_wrap_then_it_sorts_before_the_wrap():
    assert extended_sequences([65535, 1, 0, 2]) == [65535, 65537, 65536, 65538]


def test_given_no_wrap_then_the_numbers_are_unchanged():
    assert extended_sequences([7, 8, 10, 9]) == [7, 8, 10, 9]
