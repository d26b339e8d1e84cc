"""core.runtime.keep_start_up_out_of_full_collections: what exists when a process has
started is frozen out of the collector's full passes; garbage it left is collected first,
and what comes later is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from core.runtime import keep_start_up_out_of_full_collections


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def frozen_then_thawed() -> Iterator[None]:
    # The test process goes on after this test: nothing stays frozen.
    try:
        yield
    finally:
        gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_start_up_is_frozen_its_garbage_collected_and_later_cycles_still_are(
    frozen_then_thawed: None,
) -> None:
    kept = Node()
    left_by_start_up = cycle()  # unreachable already: collected, not frozen
    gc.disable()  # no automatic pass may decide it for us
    try:
        frozen = keep_start_up_out_of_full_collections()
        assert frozen > 0 and gc.get_freeze_count() > 0  # (frozen ones may die since)
        assert left_by_start_up() is None
        assert gc.is_tracked(kept)
        assert not any(o is kept for o in gc.get_objects())  # the permanent generation
        later = cycle()
        assert later() is not None
        gc.collect()
        assert later() is None  # what came after start-up is collected as ever
    finally:
        gc.enable()
