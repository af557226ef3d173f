"""Tick labels that never collide in a plotext chart.

plotext de-duplicates tick labels through a set and then drops the ones that collide, so
colliding labels make the picture depend on the hash seed (snapshots differ run to run):
ticks are spaced so that no two labels collide.
"""

from __future__ import annotations

TICK_COLUMNS = 12  # columns per tick label (the widest, "100-200ms" or "00:00:00", and a gap)
Y_AXIS_COLUMNS = 6


def tick_count(width: int, wanted: int = 5) -> int:
    """How many evenly spaced tick labels fit a chart `width` columns wide (at least 2)."""
    return max(2, min(wanted, (width - Y_AXIS_COLUMNS) // TICK_COLUMNS))


def spaced_ticks(n: int, width: int) -> list[int]:
    """Indexes of `n` bars (one per column group) to label so that no two labels collide."""
    if n <= 0:
        return []
    per_bar = max(1.0, (width - Y_AXIS_COLUMNS) / n)
    step = max(1, -(-TICK_COLUMNS // int(per_bar)))
    return list(range(0, n, step))
