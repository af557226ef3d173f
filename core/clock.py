"""The Clock port: every component asks it for time, so tests can freeze and step it.

Two readings are needed: a wall clock (unix milliseconds) for records that leave the
process, and a monotonic clock (nanoseconds) for ages and deadlines, which must never
jump when NTP adjusts the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of time for the engine."""

    def time_ms(self) -> int:
        """Wall-clock time as unix milliseconds."""
        ...

    def monotonic_ns(self) -> int:
        """Monotonic time in nanoseconds; only differences are meaningful."""
        ...


class RealClock:
    """The system clocks."""

    __slots__ = ()

    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock:
    """A clock that only moves when told to: deterministic tests and snapshots."""

    __slots__ = ("_mono_ns", "_wall_ns")

    def __init__(self, wall_ms: int = 1_732_150_000_000, mono_ns: int = 1_000_000_000) -> None:
        self._wall_ns = wall_ms * 1_000_000
        self._mono_ns = mono_ns

    def time_ms(self) -> int:
        return self._wall_ns // 1_000_000

    def monotonic_ns(self) -> int:
        return self._mono_ns

    def advance(self, *, ms: float = 0.0, ns: int = 0) -> None:
        """Move both readings forward together."""
        # round, not int(): 2.01 ms * 1e6 is 2009999.9999999998 in binary floating point
        step_ns = round(ms * 1_000_000) + ns
        if step_ns < 0:
            raise ValueError("a clock never goes backwards")
        self._mono_ns += step_ns
        self._wall_ns += step_ns


class ReplayClock:
    """The recorded time of the frame being replayed: set by the replay loop before each one.

    Replays (and benches) run faster than real time; judging quotes on their recorded time
    keeps quote ages, persistence and cooldowns as they were when the frames arrived.
    """

    __slots__ = ("epoch_ms", "now_ns")

    def __init__(self, epoch_ms: int = 1_732_150_000_000, now_ns: int = 0) -> None:
        self.epoch_ms = epoch_ms
        self.now_ns = now_ns

    def time_ms(self) -> int:
        return self.epoch_ms + self.now_ns // 1_000_000

    def monotonic_ns(self) -> int:
        return self.now_ns
