"""core/bounded.py: the count-and-age rule every bounded collection shares (issue 19)."""

from __future__ import annotations

from collections import OrderedDict

from core.bounded import forget_oldest


def test_the_oldest_go_beyond_the_count_then_while_older_than_the_horizon() -> None:
    memory: OrderedDict[str, int] = OrderedDict([("a", 10), ("b", 30), ("c", 20), ("d", 40)])
    forget_oldest(memory, kept=3, horizon=0, when=int)
    assert list(memory) == ["b", "c", "d"]  # "a" beyond the count
    forget_oldest(memory, kept=3, horizon=30, when=int)
    assert list(memory) == ["b", "c", "d"]  # "b" is exactly at the horizon: kept; "c" waits behind it
    forget_oldest(memory, kept=3, horizon=31, when=int)
    assert list(memory) == ["d"]  # "b", then "c" (older than the horizon) go
    forget_oldest(memory, kept=3, horizon=41, when=int)
    assert list(memory) == []
