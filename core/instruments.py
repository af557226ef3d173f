"""Instruments, pairs and the normalization between venue units and base units.

A venue quotes and trades in its own units: an MT5 lot may be 100 oz, an OKX swap contract
0.01 BTC, a Binance spot unit 1 BTC. quantarb compares and sizes in *base units* (one oz, one
BTC) at *normalized prices* (quote currency per base unit). Every conversion lives here so
that nobody multiplies by a contract size in two places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Context, Decimal
from fractions import Fraction

from core.models import Side, Venue

# Grid arithmetic is exact: the default 28-digit context cannot hold a large value on a fine grid
# (1e300 on a 0.01 tick needs 303 digits; quantize raised InvalidOperation) and rounds the quotient
# before flooring. Any float-derived value fits in 2000 digits; integer division costs no more.
_EXACT = Context(prec=2000)


def _steps(value: Decimal, step: Decimal, up: bool) -> Decimal:
    """floor (or ceil) of value / step, as an integral Decimal, computed exactly."""
    whole, rest = _EXACT.divmod(value, step)  # truncates toward zero; rest has value's sign
    if up and rest > 0:
        return _EXACT.add(whole, 1)
    if not up and rest < 0:
        return _EXACT.subtract(whole, 1)
    return whole


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round down to a whole number of steps (keeps the step's exponent, no 1E+2 forms)."""
    if step <= 0:
        return value
    return _EXACT.quantize(_EXACT.multiply(_steps(value, step, False), step), step)


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Round up to a whole number of steps."""
    if step <= 0:
        return value
    return _EXACT.quantize(_EXACT.multiply(_steps(value, step, True), step), step)


@dataclass(slots=True, frozen=True)
class Instrument:
    """One tradable symbol on one venue with its normalization.

    - `qty_per_unit`: base units in one venue quantity unit (MT5 lot, contract, coin).
    - `price_scale`: normalized price = venue price * price_scale (1 when the venue quotes
      per base unit, as nearly all do).
    - `tick_size`, `lot_step`, `min_qty` are in the venue's units; `min_notional` in the
      quote currency; `taker_fee_bps` is charged on notional.
    """

    venue: Venue
    symbol: str
    pair: str
    qty_per_unit: Decimal
    tick_size: Decimal
    lot_step: Decimal
    min_qty: Decimal
    taker_fee_bps: float
    price_scale: Decimal = Decimal(1)
    min_notional: Decimal = Decimal(0)
    # Float copies for the hot path, derived once.
    qty_per_unit_f: float = field(init=False, repr=False, compare=False)
    price_scale_f: float = field(init=False, repr=False, compare=False)
    fee_f: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.qty_per_unit <= 0 or self.price_scale <= 0:
            raise ValueError(f"{self.venue}:{self.symbol}: qty_per_unit and price_scale must be > 0")
        if self.tick_size <= 0 or self.lot_step <= 0:
            raise ValueError(f"{self.venue}:{self.symbol}: tick_size and lot_step must be > 0")
        object.__setattr__(self, "qty_per_unit_f", float(self.qty_per_unit))
        object.__setattr__(self, "price_scale_f", float(self.price_scale))
        object.__setattr__(self, "fee_f", self.taker_fee_bps / 10_000.0)

    @property
    def key(self) -> tuple[Venue, str]:
        return (self.venue, self.symbol)

    @property
    def base_step(self) -> Decimal:
        """The lot step expressed in base units."""
        return self.lot_step * self.qty_per_unit

    @property
    def base_min_qty(self) -> Decimal:
        return self.min_qty * self.qty_per_unit

    def to_base_qty(self, venue_qty: Decimal) -> Decimal:
        return venue_qty * self.qty_per_unit

    def to_venue_qty(self, base_qty: Decimal) -> Decimal:
        """Base units to venue units, rounded down to the lot step (never over-trade)."""
        # Floor in base units first: the quotient is then a whole number of lot steps, which
        # the exact context divides without rounding.
        whole = floor_to(base_qty, self.base_step)
        return _EXACT.quantize(_EXACT.divide(whole, self.qty_per_unit), self.lot_step)

    def normalized_price(self, venue_price: Decimal) -> Decimal:
        return venue_price * self.price_scale

    def limit_price(self, venue_price: float, side: Side) -> Decimal:
        """A venue price (float, as quoted) on the tick grid, as a limit for `side`.

        Buys round up and sells round down, so the limit never sits inside the quote that
        produced it (the order stays marketable).
        """
        raw = Decimal(repr(venue_price))
        return ceil_to(raw, self.tick_size) if side == "buy" else floor_to(raw, self.tick_size)


def common_step(a: Decimal, b: Decimal) -> Decimal:
    """The smallest quantity that is a whole number of both steps (LCM of two decimals)."""
    fa, fb = Fraction(a), Fraction(b)
    num = math.lcm(fa.numerator * fb.denominator, fb.numerator * fa.denominator)
    den = fa.denominator * fb.denominator
    result = Fraction(num, den)
    return Decimal(result.numerator) / Decimal(result.denominator)


@dataclass(slots=True, frozen=True)
class Pair:
    """One economic asset quoted on two or more venues."""

    name: str
    instruments: tuple[Instrument, ...]

    def __post_init__(self) -> None:
        venues = [i.venue for i in self.instruments]
        if len(venues) < 2:
            raise ValueError(f"pair {self.name}: needs instruments on at least two venues")
        if len(set(venues)) != len(venues):
            raise ValueError(f"pair {self.name}: one instrument per venue")

    def instrument(self, venue: Venue) -> Instrument:
        for inst in self.instruments:
            if inst.venue == venue:
                return inst
        raise KeyError(f"pair {self.name} has no instrument on {venue}")

    @property
    def venues(self) -> tuple[Venue, ...]:
        return tuple(i.venue for i in self.instruments)
