"""ExposureBook: what we hold, and what orders in flight could add, per venue and asset.

The RiskGate judges every order against worst-case exposure: the position plus every open
order on the same venue and asset filling in full, buys and sells counted separately. So
two orders that each pass a limit cannot together break it, however their fills arrive.

Units are normalized: base units of the pair's asset, prices in quote currency per base
unit. Positions are signed (long > 0). Pure and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.models import Side

ZERO = Decimal(0)


@dataclass(slots=True)
class Reservation:
    """An open order's unfilled remainder, in base units (always >= 0)."""

    venue: str
    asset: str
    side: Side
    remaining: Decimal
    price: Decimal


class ExposureBook:
    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], Decimal] = {}
        self.marks: dict[str, Decimal] = {}
        self.reservations: dict[str, Reservation] = {}

    # -- updates ---------------------------------------------------------------------------
    def reserve(self, key: str, venue: str, asset: str, side: Side, qty: Decimal, price: Decimal) -> None:
        """An order is about to leave: until released, it counts as if it could fill in full."""
        self.reservations[key] = Reservation(venue, asset, side, qty, price)
        if price > 0:
            self.marks.setdefault(asset, price)

    def fill(self, venue: str, asset: str, side: Side, qty: Decimal, price: Decimal, key: str | None = None) -> None:
        """A fill moves the position (and uses up the order's reservation, if it had one).

        Fills are applied whether or not a reservation exists: a late fill after a cancel
        is real exposure.
        """
        signed = qty if side == "buy" else -qty
        k = (venue, asset)
        self.positions[k] = self.positions.get(k, ZERO) + signed
        if price > 0:
            self.marks[asset] = price
        if key is not None:
            res = self.reservations.get(key)
            if res is not None:
                res.remaining = max(ZERO, res.remaining - qty)

    def release(self, key: str) -> None:
        """The order is terminal: whatever did not fill no longer counts."""
        self.reservations.pop(key, None)

    def set_position(self, venue: str, asset: str, qty: Decimal, price: Decimal = ZERO) -> None:
        """A position as a venue or the ledger reports it (restart, flatten)."""
        self.positions[(venue, asset)] = qty
        if price > 0:
            self.marks[asset] = price

    def mark(self, asset: str, price: Decimal) -> None:
        if price > 0:
            self.marks[asset] = price

    # -- reads -----------------------------------------------------------------------------
    def position(self, venue: str, asset: str) -> Decimal:
        return self.positions.get((venue, asset), ZERO)

    def net(self, asset: str) -> Decimal:
        """Net position of an asset over every venue (what a hedge keeps near zero)."""
        return sum((q for (_, a), q in self.positions.items() if a == asset), ZERO)

    def pending(self, asset: str, side: Side, venue: str | None = None, exclude: str | None = None) -> Decimal:
        """Unfilled remainder of the open orders on one side of an asset (on one venue, or on
        every venue when `venue` is None), leaving out the order `exclude`."""
        return sum(
            (r.remaining for k, r in self.reservations.items()
             if r.asset == asset and r.side == side and k != exclude and (venue is None or r.venue == venue)),
            ZERO,
        )

    def _pending(self, venue: str, asset: str) -> tuple[Decimal, Decimal]:
        buys = sells = ZERO
        for r in self.reservations.values():
            if r.venue == venue and r.asset == asset:
                if r.side == "buy":
                    buys += r.remaining
                else:
                    sells += r.remaining
        return buys, sells

    def worst_qty(self, venue: str, asset: str, extra_buy: Decimal = ZERO, extra_sell: Decimal = ZERO) -> Decimal:
        """The largest |position| this venue and asset can reach if open orders fill."""
        pos = self.position(venue, asset)
        buys, sells = self._pending(venue, asset)
        return max(abs(pos + buys + extra_buy), abs(pos - sells - extra_sell))

    def _assets_of(self, venue: str) -> set[str]:
        assets = {a for (v, a) in self.positions if v == venue}
        assets.update(r.asset for r in self.reservations.values() if r.venue == venue)
        return assets

    def _venues_of(self, asset: str) -> set[str]:
        venues = {v for (v, a) in self.positions if a == asset}
        venues.update(r.venue for r in self.reservations.values() if r.asset == asset)
        return venues

    def venue_gross(self, venue: str, extra: tuple[str, Side, Decimal] | None = None) -> Decimal:
        """Worst-case gross notional on a venue (every asset at its mark)."""
        assets = self._assets_of(venue)
        if extra is not None:
            assets.add(extra[0])
        total = ZERO
        for asset in assets:
            eb, es = _extra(extra, asset)
            total += self.worst_qty(venue, asset, eb, es) * self.marks.get(asset, ZERO)
        return total

    def asset_gross(self, asset: str, extra: tuple[str, Side, Decimal] | None = None) -> Decimal:
        """Worst-case gross notional of an asset over every venue. `extra` is (venue, side, qty)."""
        venues = self._venues_of(asset)
        if extra is not None:
            venues.add(extra[0])
        mark = self.marks.get(asset, ZERO)
        total = ZERO
        for venue in venues:
            eb = es = ZERO
            if extra is not None and extra[0] == venue:
                eb, es = (extra[2], ZERO) if extra[1] == "buy" else (ZERO, extra[2])
            total += self.worst_qty(venue, asset, eb, es) * mark
        return total

    def gross_by_venue(self) -> dict[str, Decimal]:
        venues = {v for (v, _) in self.positions} | {r.venue for r in self.reservations.values()}
        return {v: self.venue_gross(v) for v in sorted(venues)}

    def gross_by_asset(self) -> dict[str, Decimal]:
        assets = {a for (_, a) in self.positions} | {r.asset for r in self.reservations.values()}
        return {a: self.asset_gross(a) for a in sorted(assets)}


def _extra(extra: tuple[str, Side, Decimal] | None, asset: str) -> tuple[Decimal, Decimal]:
    if extra is None or extra[0] != asset:
        return ZERO, ZERO
    return (extra[2], ZERO) if extra[1] == "buy" else (ZERO, extra[2])
