"""When the workstation runs the collector's full pass: on a schedule, at a quiet moment.

Textual's rendered lines are cycles (a `Strip` caches itself among its own crops), and they
live long enough in the tables' line caches to reach the old generation, where only a full
pass frees them; so do the HTTP clients' request/response pairs. Measured under the TUI at
the demo's load (session 11): about 67,000 such objects every 20 s. With the app's collector
thresholds a full pass ran every 5 to 20 minutes, the garbage piled up to ~7 MB between them,
and pymalloc kept the arenas it took at each peak: RSS rose 13.5 MB an hour after the warm-up.

A full pass over the engine's heap takes 70 to 130 ms (docs/performance.md), and the engine
runs on the app's event loop, so the pass holds quotes and orders too; one started by
allocation lands at a random moment, key presses and legs in flight included. So the app runs
it itself, every `every_s`, when the operator has not touched a key or the mouse for `quiet_s`
and no hedge group is open (a leg may be waiting for its partner); a pass overdue by
`OVERDUE_FACTOR` times the interval runs with groups open (under a market busy enough to
always hold one, as often as CPython's own passes came). The pile stays at a minute's worth
and the pause falls between keys and between groups. Young collections are left to CPython
(the thresholds in quantarb_tui.app); a full pass it starts itself still happens when the old
generation grows fast, as before.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_EVERY_S = 60.0  # the longest the cycles that died old wait for their pass
QUIET_S = 1.0  # no operator input for this long before a pass (else the next refresh asks again)
OVERDUE_FACTOR = 5  # with groups always open: a pass every five intervals all the same


class QuietCollector:
    """Asked on every refresh; runs a full pass when one is due, the operator is quiet and no
    group is open."""

    def __init__(self, every_s: float = FULL_EVERY_S, quiet_s: float = QUIET_S,
                 clock: Callable[[], float] = time.monotonic,
                 collect: Callable[[], int] = gc.collect) -> None:
        self._every_s = every_s
        self._quiet_s = quiet_s
        self._clock = clock
        self._collect = collect
        now = clock()
        self._last_pass = now
        self._last_input = float("-inf")
        self.passes = 0
        self.pass_ns = 0  # time spent in the passes (the bench reports it)

    def operator_input(self) -> None:
        """A key or a mouse press: no pass for `quiet_s` from now."""
        self._last_input = self._clock()

    def due(self, *, busy: bool = False) -> bool:
        """`busy`: a hedge group is open (its legs in flight), which defers a pass until it is
        `OVERDUE_FACTOR` intervals late."""
        now = self._clock()
        waited = now - self._last_pass
        if waited < self._every_s or now - self._last_input < self._quiet_s:
            return False
        return not busy or waited >= self._every_s * OVERDUE_FACTOR

    def maybe_collect(self, *, busy: bool = False) -> bool:
        """Run the full pass if it is due, the operator is quiet and nothing is in flight (or
        the pass is overdue); True when it ran."""
        if not self.due(busy=busy):
            return False
        t0 = time.perf_counter_ns()
        self._collect()
        self.pass_ns += time.perf_counter_ns() - t0
        self.passes += 1
        self._last_pass = self._clock()
        return True
