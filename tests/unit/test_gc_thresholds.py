"""The workstation's collector settings still run full collections (issue 19): cycles that
die in the old generation are reclaimed after a bounded number of allocations, not never."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from quantarb_tui.app import GC_THRESHOLDS

# A full collection within this many young cycles: about 5M with the app's thresholds, a
# couple of minutes of refreshing; with (5000, 10, 10000) it took about 500M, hours.
FULL_COLLECTION_WITHIN = 10_000_000


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def app_thresholds() -> Iterator[list[int]]:
    saved = gc.get_threshold()
    full: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])

    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.callbacks.append(seen)
    try:
        yield full
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*saved)


def test_cycles_that_die_old_are_collected_within_the_thresholds(app_thresholds: list[int]) -> None:
    full = app_thresholds
    old = [_Node() for _ in range(200_000)]
    probe = weakref.ref(old[0])
    gc.collect(1)
    gc.collect(1)  # survivors of the middle generation: now in the old one
    del old  # 200,000 cycles dead in the old generation
    assert probe() is not None and full == []
    # Young cycles drive the collector (an object freed by its refcount takes its count back).
    budget = FULL_COLLECTION_WITHIN
    for _ in range(budget // 10_000):
        for _ in range(10_000):
            _Node()
        if probe() is None:
            break
    assert probe() is None, f"no full collection within {budget:,} allocations"
    assert full and max(full) >= 200_000
