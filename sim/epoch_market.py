"""One synthetic market shared by separate processes: stepped on a wall-clock grid from an epoch.

The rehearsal world (`quantarb sim world`) runs OKX, Binance and the MT5 terminal as separate
processes, each with its own `SyntheticMarket`. If each stepped its market by its own loop's
elapsed time, the random draws would follow different paths: prices would drift apart and
every "edge" between venues would be fake. `EpochMarket` makes them agree: every process
builds the market from the same pairs (`world_pairs()`) and seed, and advances it in fixed
steps of `step_ms`, as many as wall-clock time since the shared `epoch_ms` allows. Step k is
the same computation everywhere, so all processes quote the same prices at the same moment,
and the market's seeded dislocations are the only edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.clock import Clock
from core.config import demo_config
from core.instruments import Pair
from core.models import Venue
from sim.market import SimTick, SyntheticMarket

DEFAULT_STEP_MS = 50


def world_pairs() -> tuple[Pair, ...]:
    """The pairs every process of a shared market prices (the demo's: XAU, BTC, ETH on all
    three venues). The same pairs in the same order everywhere: the random draws depend on them."""
    return demo_config().build_pairs()


class EpochMarket:
    """A `SyntheticMarket` advanced in fixed steps counted from a shared epoch."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        seed: int,
        epoch_ms: int,
        step_ms: int = DEFAULT_STEP_MS,
        tick_ms: float = 50.0,
        dislocation_every_s: float = 3.0,
    ) -> None:
        if step_ms <= 0:
            raise ValueError("step_ms must be > 0")
        if epoch_ms < 0:
            raise ValueError("epoch_ms must be >= 0")
        self._epoch_ms = epoch_ms
        self._step_ms = step_ms
        self._dt_s = step_ms / 1000.0
        self._steps = 0
        self.market = SyntheticMarket(
            pairs, seed=seed, tick_ms=tick_ms, dislocation_every_s=dislocation_every_s, start_ms=epoch_ms
        )
        # The snapshot at the epoch: drawn once at construction in every process alike.
        self._latest: dict[tuple[Venue, str], SimTick] = {(t.venue, t.symbol): t for t in self.market.quote_all()}

    @property
    def steps(self) -> int:
        """Grid steps taken since the epoch."""
        return self._steps

    @property
    def epoch_ms(self) -> int:
        return self._epoch_ms

    def step_at(self, now_ms: int) -> int:
        """The grid step that wall-clock `now_ms` falls in (0 before the epoch)."""
        return max(0, (now_ms - self._epoch_ms) // self._step_ms)

    def catch_up(self, now_ms: int) -> list[SimTick]:
        """Take every step up to `now_ms`; return the last quote of each instrument that came due
        (one per instrument, however many steps a late call covers)."""
        target = self.step_at(now_ms)
        due: dict[tuple[Venue, str], SimTick] = {}
        while self._steps < target:
            self._steps += 1
            for tick in self.market.advance(self._dt_s):
                due[(tick.venue, tick.symbol)] = tick
        self._latest.update(due)
        return list(due.values())

    def step(self) -> list[SimTick]:
        """Exactly one step, every quote that came due in it (for tests that follow the path)."""
        self._steps += 1
        ticks = self.market.advance(self._dt_s)
        for tick in ticks:
            self._latest[(tick.venue, tick.symbol)] = tick
        return ticks

    def quotes(self) -> list[SimTick]:
        """The current quote of every instrument (a snapshot for a new subscriber)."""
        return list(self._latest.values())


class MarketPacer(Protocol):
    """How a simulator process moves its market in real time."""

    def snapshot(self) -> list[SimTick]:
        """A quote of every instrument now."""
        ...

    def due(self) -> list[SimTick]:
        """The quotes that came due since the last call."""
        ...


class ElapsedPacer:
    """A market of the process's own, advanced by the monotonic time elapsed between calls
    (a simulator run alone: its prices agree with no other process)."""

    def __init__(self, market: SyntheticMarket, clock: Clock) -> None:
        self.market = market
        self._clock = clock
        self._last_ns = clock.monotonic_ns()

    def snapshot(self) -> list[SimTick]:
        return self.market.quote_all()

    def due(self) -> list[SimTick]:
        now = self._clock.monotonic_ns()
        dt_s = max(0, now - self._last_ns) / 1e9
        self._last_ns = now
        return self.market.advance(dt_s) if dt_s > 0 else []


class EpochPacer:
    """The shared grid: caught up to wall-clock time on every call."""

    def __init__(self, market: EpochMarket, clock: Clock) -> None:
        self.market = market
        self._clock = clock
        market.catch_up(clock.time_ms())

    def snapshot(self) -> list[SimTick]:
        return self.market.quotes()

    def due(self) -> list[SimTick]:
        return self.market.catch_up(self._clock.time_ms())


def pacer(
    own_pairs: Sequence[Pair], *, seed: int, clock: Clock, epoch_ms: int | None = None
) -> ElapsedPacer | EpochPacer:
    """A simulator's market: its own over `own_pairs`, or (with `epoch_ms`) the shared grid
    over `world_pairs()`."""
    if epoch_ms is None:
        return ElapsedPacer(SyntheticMarket(own_pairs, seed=seed, start_ms=clock.time_ms()), clock)
    return EpochPacer(EpochMarket(world_pairs(), seed=seed, epoch_ms=epoch_ms), clock)


__all__ = ["DEFAULT_STEP_MS", "ElapsedPacer", "EpochMarket", "EpochPacer", "MarketPacer", "pacer", "world_pairs"]
