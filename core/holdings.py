"""Holdings: the portfolio's positions gathered per asset, as an operator reads them (pure).

One asset (a pair: `XAU`, `BTC`) is held on several venues in each venue's own units; a hedge
is long on one venue and short on another. Per asset this says each venue's position (base
units and the venue's units), the net delta across venues, the mark, the unrealized PnL and the
carry in the account currency, and since when the asset has been held.

- **held**: some venue holds at least one of its lot steps; dust (less than a lot step, left
  by rounding) is not a holding.
- **net delta**: the signed sum of the venues' base quantities: 0 for a perfect hedge.
- **drift**: the legs have come apart: the net delta is at least the asset's coarsest lot
  step (in base units). Less than that cannot be traded on the coarser venue: it is dust.
- **mark**: the mean of the marks of the venues that hold the asset (each venue's own mid
  values its own leg; one number says where the asset trades).
- **held since**: the earliest time one of the held legs opened (`PositionView.opened_ms`).

Money in the account currency is None when a rate or a mark it needs is missing, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.currency import RateBook
from core.instruments import Instrument
from core.models import Venue
from core.portfolio import PositionView

_ZERO = Decimal(0)


def unit_of(inst: Instrument) -> str:
    """The name of the venue's quantity unit, or "" when it is the base unit itself."""
    if inst.qty_per_unit == 1:
        return ""
    return "lot" if inst.venue == "mt5" else "ct"


@dataclass(slots=True, frozen=True)
class Leg:
    """One venue's position in an asset."""

    venue: Venue
    symbol: str
    qty: Decimal  # base units, + long
    venue_qty: Decimal  # the venue's units
    unit: str  # "lot", "ct", or "" (base units)
    mark: Decimal | None  # normalized price
    unrealized: Decimal | None  # quote currency
    quote_ccy: str
    opened_ms: int | None


@dataclass(slots=True, frozen=True)
class Holding:
    """One asset across venues (money in the account currency, None when it cannot be said)."""

    asset: str
    legs: tuple[Leg, ...]
    net: Decimal
    step: Decimal  # the coarsest lot step of the asset's instruments, in base units
    held: bool
    mark: Decimal | None
    unrealized: Decimal | None
    carry: Decimal | None
    held_since_ms: int | None

    @property
    def drift(self) -> bool:
        """The legs have come apart by at least a lot step."""
        return self.net != 0 and abs(self.net) >= self.step


def coarsest_steps(instruments: Iterable[Instrument]) -> dict[str, Decimal]:
    """Per asset (pair), the coarsest lot step of its instruments in base units: what one leg
    can leave behind, so the size by which legs count as apart."""
    steps: dict[str, Decimal] = {}
    for inst in instruments:
        steps[inst.pair] = max(steps.get(inst.pair, _ZERO), inst.base_step)
    return steps


def holdings(
    views: Iterable[PositionView], instruments: Mapping[tuple[Venue, str], Instrument], rates: RateBook
) -> list[Holding]:
    """Per asset with a position on some venue (flat assets left out), by asset name; legs by
    venue (those with a position). Carry is what those books have booked and accrued so far.
    `instruments` gives each view's lot step and units, and every instrument of an asset
    counts for its step (a venue that holds nothing still sets it)."""
    steps = coarsest_steps(instruments.values())
    by_asset: dict[str, list[PositionView]] = {}
    for v in views:
        if v.qty != 0:
            by_asset.setdefault(v.asset, []).append(v)
    out: list[Holding] = []
    for asset, group in sorted(by_asset.items()):
        legs: list[Leg] = []
        held_legs: list[Leg] = []
        for v in sorted(group, key=lambda x: x.venue):
            inst = instruments[(v.venue, v.symbol)]
            leg = Leg(v.venue, v.symbol, v.qty, v.venue_qty, unit_of(inst), v.mark, v.unrealized, v.quote_ccy,
                      v.opened_ms)
            legs.append(leg)
            if abs(v.qty) >= inst.base_step:
                held_legs.append(leg)
        marks = [leg.mark for leg in legs if leg.qty != 0 and leg.mark is not None]
        opened = [leg.opened_ms for leg in held_legs if leg.opened_ms is not None]
        out.append(Holding(
            asset=asset,
            legs=tuple(legs),
            net=sum((leg.qty for leg in legs), _ZERO),
            step=steps.get(asset, _ZERO),
            held=bool(held_legs),
            mark=sum(marks, _ZERO) / len(marks) if marks else None,
            unrealized=rates.total((leg.unrealized, leg.quote_ccy) for leg in legs),
            carry=rates.total((amount, ccy) for v in group for ccy, amount in v.carry.items()),
            held_since_ms=min(opened) if opened else None,
        ))
    return out
