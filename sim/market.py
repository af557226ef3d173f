"""A seeded synthetic market: correlated prices on three venues with occasional dislocations.

Each pair has a fair value that follows a random walk with a component shared by all pairs.
Each venue quotes around it with its own small basis, mean-reverting noise and half spread.
Now and then one venue of one pair dislocates by 20-45 bps and decays back over a few
seconds: that is when net edges beat the fees and the pipeline trades.

The market is pure and deterministic: it moves only when `advance()` is called with a time
step, and all randomness comes from the seed. The same market later prices the loopback
venue servers, so it speaks in venue units (lots, contracts, venue prices).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from core.instruments import Instrument, Pair
from core.models import Venue

# Reference prices for the demo's assets; other pairs start at 100.
REFERENCE_PRICES: dict[str, float] = {"XAU": 2650.0, "BTC": 97_000.0, "ETH": 3_400.0}

# Half spread in bps per venue: the CFD broker is wider than the crypto books.
HALF_SPREAD_BPS: dict[Venue, float] = {"mt5": 1.5, "okx": 0.4, "binance": 0.3}


@dataclass(slots=True)
class SimTick:
    """One top-of-book update in venue units."""

    venue: Venue
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_ms: int


@dataclass(slots=True)
class _SimInstrument:
    inst: Instrument
    pair: str
    basis_bps: float
    noise_bps: float
    dislocation_bps: float
    dislocation_decay_s: float
    next_due_s: float
    tick: float
    lot: float
    typical_units: float


class SyntheticMarket:
    """Prices for every instrument of `pairs`, stepped explicitly."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        seed: int,
        tick_ms: float = 50.0,
        dislocation_every_s: float = 3.0,
        start_ms: int = 1_732_150_000_000,
        typical_notional: float = 8_000.0,
    ) -> None:
        if tick_ms <= 0 or dislocation_every_s <= 0:
            raise ValueError("tick_ms and dislocation_every_s must be > 0")
        self._rng = random.Random(seed)
        self._tick_s = tick_ms / 1000.0
        self._dislocation_every_s = dislocation_every_s
        self._t = 0.0
        self._start_ms = start_ms
        self._next_dislocation_s = self._rng.expovariate(1.0 / dislocation_every_s)
        self.fair: dict[str, float] = {p.name: REFERENCE_PRICES.get(p.name, 100.0) for p in pairs}
        self._instruments: list[_SimInstrument] = []
        for pair in pairs:
            for inst in pair.instruments:
                price = self.fair[pair.name]
                units = typical_notional / price / float(inst.qty_per_unit)
                self._instruments.append(
                    _SimInstrument(
                        inst=inst,
                        pair=pair.name,
                        basis_bps=self._rng.uniform(-1.0, 1.0),
                        noise_bps=0.0,
                        dislocation_bps=0.0,
                        dislocation_decay_s=2.0,
                        next_due_s=self._rng.uniform(0.0, self._tick_s),
                        tick=float(inst.tick_size),
                        lot=float(inst.lot_step),
                        typical_units=max(units, float(inst.min_qty)),
                    )
                )
        self.dislocations = 0

    @property
    def now_ms(self) -> int:
        return self._start_ms + int(self._t * 1000.0)

    def advance(self, dt_s: float) -> list[SimTick]:
        """Move the market forward by `dt_s` seconds; return the quotes that came due."""
        if dt_s < 0:
            raise ValueError("time only moves forward")
        rng = self._rng
        self._t += dt_s
        # Fair values: a shared factor plus an idiosyncratic one, ~0.6 bps per sqrt(second).
        shared = rng.gauss(0.0, 1.0)
        scale = 0.6e-4 * math.sqrt(dt_s) if dt_s > 0 else 0.0
        for name in self.fair:
            shock = 0.7 * shared + 0.71 * rng.gauss(0.0, 1.0)
            self.fair[name] *= math.exp(scale * shock)
        while self._t >= self._next_dislocation_s:
            self._dislocate()
            self._next_dislocation_s += rng.expovariate(1.0 / self._dislocation_every_s)
        ticks: list[SimTick] = []
        decay_noise = math.exp(-dt_s / 0.5) if dt_s > 0 else 1.0
        for si in self._instruments:
            si.noise_bps = si.noise_bps * decay_noise + rng.gauss(0.0, 0.25) * math.sqrt(max(dt_s, 0.0) * 4)
            if si.dislocation_bps:
                si.dislocation_bps *= math.exp(-dt_s / si.dislocation_decay_s)
                if abs(si.dislocation_bps) < 0.5:
                    si.dislocation_bps = 0.0
            if self._t >= si.next_due_s:
                si.next_due_s = self._t + rng.expovariate(1.0 / self._tick_s)
                ticks.append(self._quote(si))
        return ticks

    def quote_all(self) -> list[SimTick]:
        """A quote for every instrument now (a snapshot, e.g. on subscribe)."""
        return [self._quote(si) for si in self._instruments]

    def _dislocate(self) -> None:
        rng = self._rng
        si = rng.choice(self._instruments)
        si.dislocation_bps = rng.choice((-1.0, 1.0)) * rng.uniform(20.0, 45.0)
        si.dislocation_decay_s = rng.uniform(1.5, 4.0)
        self.dislocations += 1

    def _quote(self, si: _SimInstrument) -> SimTick:
        inst = si.inst
        rng = self._rng
        offset = (si.basis_bps + si.noise_bps + si.dislocation_bps) * 1e-4
        mid = self.fair[si.pair] * (1.0 + offset) / float(inst.price_scale)
        half = mid * HALF_SPREAD_BPS[inst.venue] * 1e-4
        tick = si.tick
        bid = math.floor((mid - half) / tick) * tick
        ask = math.ceil((mid + half) / tick) * tick
        if ask <= bid:
            ask = bid + tick
        bid_size = self._size(si, rng.uniform(0.6, 3.0))
        ask_size = self._size(si, rng.uniform(0.6, 3.0))
        return SimTick(
            venue=inst.venue,
            symbol=inst.symbol,
            bid=round(bid, 10),
            ask=round(ask, 10),
            bid_size=bid_size,
            ask_size=ask_size,
            ts_ms=self.now_ms,
        )

    @staticmethod
    def _size(si: _SimInstrument, factor: float) -> float:
        lots = max(1, math.floor(si.typical_units * factor / si.lot))
        return round(lots * si.lot, 10)
