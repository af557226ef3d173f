"""When a screen that reads the ledger reads it again: once the groups the snapshot counts have
changed (more closed, or one moved between closed states: closed by the operator, netted), at
most every `min_interval_s`, and never missing the last change.

The history and analytics screens read hundreds of rows (analytics replays the whole ledger),
and under load a group closes several times a second while the snapshot arrives at up to
10 Hz: reloading on every change read the ledger that often (the history screen's 500 rows,
about half a megabyte of rows, each time). A change that comes inside the interval is held,
not dropped: the next snapshot after the interval reloads, also when nothing closed since (the
screen is never left showing less than the ledger holds because the last group closed early).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class ReloadPacer:
    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._seen: Hashable | None = None  # what the last snapshot said of the groups
        self._due = False  # a change not read yet
        self._loaded_at = float("-inf")

    def loaded(self) -> None:
        """A read starts now (also one the screen starts itself: on open, a filter changed)."""
        self._loaded_at = self._clock()
        self._due = False

    def failed(self) -> None:
        """The read failed: read again at the next chance (after the interval)."""
        self._due = True

    def should_reload(self, groups: Hashable) -> bool:
        """What the snapshot says of the groups (`groups_token`): True when the screen should
        read again now."""
        if self._seen is not None and groups != self._seen:
            self._due = True
        self._seen = groups
        return self._due and self._clock() - self._loaded_at >= self._min_interval_s


def groups_token(groups_by_state: dict[str, int], realized_pnl: str) -> Hashable:
    """The snapshot's groups as a value that changes when the ledger's rows of them do: the
    count per state (a group closed by the operator moves between closed states, the total
    unchanged) and the realized PnL (netting changes a closed group's)."""
    return tuple(sorted(groups_by_state.items())), realized_pnl
