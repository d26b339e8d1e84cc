"""The mixer of three-way calls and monitoring: sums clip instead of wrapping, sources are
summed in step, a stalled source is taken as silent past the skew bound, and sources may
join and leave."""

from __future__ import annotations

import numpy as np
import pytest

from telephony.endpoint import FRAME_BYTES
from telephony.mixer import Mixer, mix


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def frames(value: int, count: int) -> bytes:
    return np.full(count * FRAME_BYTES // 2, value, dtype="<i2").tobytes()


def test_mix_sums_and_clips_to_sixteen_bits():
    assert mix(pcm(1000, -1000, 30000, -30000), pcm(2000, 500, 30000, -30000)) == pcm(
        3000, -500, 32767, -32768
    )
    assert mix(pcm(7)) == pcm(7) and mix() == b""
    with pytest.raises(ValueError):
        mix(pcm(1, 2), pcm(1))


def test_given_two_sources_then_only_time_both_have_is_summed():
    out: list[bytes] = []
    mixer = Mixer(("a", "b"), out.append)
    mixer.push("a", frames(100, 3))
    assert out == []  # b has said nothing for that time yet
    mixer.push("b", frames(10, 2))
    assert out == [frames(110, 2)]
    mixer.push("b", frames(20, 2))
    assert out[1] == frames(120, 1)  # a's third frame with b's third
    mixer.push("a", frames(200, 1))
    assert out[2] == frames(220, 1)


def test_given_a_stalled_source_then_it_is_taken_as_silent_past_the_skew_bound():
    out: list[bytes] = []
    mixer = Mixer(("a", "b"), out.append, max_skew_ms=60)
    mixer.push("a", frames(100, 10))  # 200 ms from a, nothing from b
    assert b"".join(out) == frames(100, 7)  # all but the last 60 ms went out, b as silence
    assert mixer.padded_ms == {"a": 0, "b": 140}
    mixer.push("b", frames(5, 3))  # b is back: its audio meets a's last 60 ms
    assert b"".join(out)[-3 * FRAME_BYTES :] == frames(105, 3)


def test_given_a_source_leaves_or_joins_then_the_mix_goes_on_without_or_with_it():
    out: list[bytes] = []
    mixer = Mixer(("a", "b"), out.append)
    mixer.push("a", frames(100, 2))
    mixer.push("b", frames(1, 1))
    mixer.remove("a")  # what a said is still heard, padded: b waits for nobody now
    assert b"".join(out) == frames(101, 1) + frames(100, 1)
    mixer.push("b", frames(2, 1))
    assert out[-1] == frames(2, 1)
    mixer.add("c")
    mixer.push("b", frames(3, 1))
    mixer.push("c", frames(30, 1))
    assert out[-1] == frames(33, 1) and mixer.sources == ("b", "c")
    mixer.push("a", frames(999, 1))  # a late read of a leg that left: ignored
    assert out[-1] == frames(33, 1)
    with pytest.raises(ValueError):
        Mixer((), out.append)
