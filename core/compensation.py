"""CompensationEngine: what to do about a broken hedge group (pure, no I/O).

The residual is the group's net exposure in base units across its venues (+ long, - short).
Actions, in order:

1. `retry_hedge`: a marketable limit on the venue whose leg did not fill, at most
   `max_slippage_bps` through the current touch, up to `max_retries` attempts; each attempt
   is a new order with a new client order id (attempt + 1).
2. `unwind`: close the residual on the venue that filled.
3. `escalate`: the group is `failed`, the RiskGate halts, the operator is alerted.

A residual smaller than what a venue can trade (below its lot step or minimum size) is dust:
it is booked per asset in the `DustBook` and folded into the next action for that asset
instead of being lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.hedge import HedgeGroup, client_order_id
from core.instruments import Instrument, ceil_to, floor_to
from core.models import CompensationAction, CompensationKind, Order, OrderPurpose, Side, Venue

UNWIND_LEG = 2

# (bid, ask) of an instrument in venue units; None when never quoted.
Touch = tuple[float, float] | None


class DustBook:
    """Untradeable leftovers per asset (base units, + long / - short): the remainder of
    positions, so a flatten that leaves an asset at zero everywhere takes it out (the runtime,
    `engine.flatten.zeroed_assets`)."""

    def __init__(self) -> None:
        self._dust: dict[str, Decimal] = {}

    def add(self, asset: str, qty: Decimal) -> None:
        total = self._dust.get(asset, Decimal(0)) + qty
        if total == 0:
            self._dust.pop(asset, None)
        else:
            self._dust[asset] = total

    def get(self, asset: str) -> Decimal:
        return self._dust.get(asset, Decimal(0))

    def take(self, asset: str) -> Decimal:
        return self._dust.pop(asset, Decimal(0))

    def items(self) -> dict[str, Decimal]:
        return dict(self._dust)


@dataclass(slots=True, frozen=True)
class Plan:
    """The next compensation step for one group.

    `kind` is None when nothing is left to do (`settled_as` says how the group ends);
    `order` is the order to send for retry_hedge/unwind (already with its client order id).
    """

    kind: CompensationKind | None
    action: CompensationAction | None = None
    order: Order | None = None
    residual: Decimal = Decimal(0)
    folded_dust: Decimal = Decimal(0)
    settled_as: str = ""


@dataclass(slots=True)
class _GroupBook:
    retries: int = 0
    unwinds: int = 0


@dataclass(slots=True)
class CompensationEngine:
    max_slippage_bps: float = 15.0
    max_retries: int = 2
    max_unwinds: int = 1
    dust: DustBook = field(default_factory=DustBook)
    _books: dict[str, _GroupBook] = field(default_factory=dict)

    # -- measurements ----------------------------------------------------------------
    def residual(self, group: HedgeGroup) -> Decimal:
        """The group's own net base exposure, net of dust it took over from earlier groups
        (`HedgeGroup.dust_folded`)."""
        return group.own_residual()

    def retries_used(self, group: HedgeGroup) -> int:
        return self._book(group).retries

    def _book(self, group: HedgeGroup) -> _GroupBook:
        book = self._books.get(group.group_id)
        if book is None:
            # A group recovered after a restart keeps the attempts it already made.
            book = self._books[group.group_id] = _GroupBook(
                retries=sum(1 for o in group.orders if o.purpose is OrderPurpose.RETRY_HEDGE),
                unwinds=sum(1 for o in group.orders if o.purpose is OrderPurpose.UNWIND),
            )
        return book

    def forget(self, group: HedgeGroup) -> None:
        self._books.pop(group.group_id, None)

    def skip_retries(self, group: HedgeGroup) -> None:
        """A group held open too long (hold_timeout): its next step is an unwind, not a retry."""
        book = self._book(group)
        book.retries = max(book.retries, self.max_retries)

    # -- decisions -------------------------------------------------------------------
    def next_step(self, group: HedgeGroup, touch: dict[Venue, Touch], now_ms: int) -> Plan:
        """The next action for a broken/compensating group, or a settled plan."""
        book = self._book(group)
        residual = self.residual(group)
        if abs(residual) < group.step:
            return self._settle(group, residual)
        long_excess = residual > 0
        side: Side = "sell" if long_excess else "buy"
        unfilled: Venue = group.sell_venue if long_excess else group.buy_venue
        filled: Venue = group.buy_venue if long_excess else group.sell_venue
        if book.retries < self.max_retries:
            book.retries += 1
            leg = 1 if unfilled == group.sell_venue else 0
            return self._trade(group, CompensationKind.RETRY_HEDGE, unfilled, side, residual, leg,
                               touch.get(unfilled), now_ms)
        if book.unwinds < self.max_unwinds:
            book.unwinds += 1
            return self._trade(group, CompensationKind.UNWIND, filled, side, residual, UNWIND_LEG,
                               touch.get(filled), now_ms)
        action = self._action(group, CompensationKind.ESCALATE,
                              f"residual {residual} left after {book.retries} retries and "
                              f"{book.unwinds} unwinds", now_ms)
        action.outcome = "halted"
        return Plan(CompensationKind.ESCALATE, action=action, residual=residual, settled_as="failed")

    def _settle(self, group: HedgeGroup, residual: Decimal) -> Plan:
        if residual != 0:
            self.dust.add(group.pair, residual)  # below one step: kept, folded later
        unwound = any(o.purpose is OrderPurpose.UNWIND and o.filled_qty > 0 for o in group.orders)
        return Plan(None, residual=residual, folded_dust=group.dust_folded,
                    settled_as="unwound" if unwound else "repaired")

    def _trade(
        self,
        group: HedgeGroup,
        kind: CompensationKind,
        venue: Venue,
        side: Side,
        residual: Decimal,
        leg: int,
        touch: Touch,
        now_ms: int,
    ) -> Plan:
        inst = group.instruments[venue]
        wanted = abs(residual)
        # Fold this asset's dust in when it points the same way as what we trade off.
        dust = self.dust.get(group.pair)
        fold = Decimal(0)
        if dust != 0 and (dust > 0) == (residual > 0):
            fold = dust
        qty = inst.to_venue_qty(wanted + abs(fold))
        if qty <= 0 or qty < inst.min_qty:
            qty = inst.to_venue_qty(wanted)
            fold = Decimal(0)
        if fold:
            self.dust.take(group.pair)
            group.dust_folded += fold
        action = self._action(group, kind, f"residual {residual} on {group.pair}"
                              + (f" (+dust {fold})" if fold else ""), now_ms)
        if qty <= 0 or qty < inst.min_qty:
            action.outcome = "below_min_size"
            return Plan(kind, action=action, residual=residual)
        attempt = next_attempt(group, leg)
        price = self.limit_price(group, inst, venue, side, touch)
        order = Order(
            client_order_id=client_order_id(group.group_id, leg, attempt),
            group_id=group.group_id,
            venue=venue,
            symbol=inst.symbol,
            side=side,
            qty=qty,
            price=price,
            purpose=OrderPurpose.RETRY_HEDGE if kind is CompensationKind.RETRY_HEDGE else OrderPurpose.UNWIND,
            created_ms=now_ms,
        )
        return Plan(kind, action=action, order=order, residual=residual, folded_dust=fold)

    def limit_price(
        self, group: HedgeGroup, inst: Instrument, venue: Venue, side: Side, touch: Touch
    ) -> Decimal:
        """Marketable limit at most `max_slippage_bps` through the touch (the entry price when
        the venue has no quote)."""
        slip = self.max_slippage_bps / 10_000.0
        if touch is not None:
            ref = touch[1] if side == "buy" else touch[0]
        else:
            entry = group.intent.buy if group.intent.buy.venue == venue else group.intent.sell
            ref = float(entry.limit_price)
        through = ref * (1 + slip) if side == "buy" else ref * (1 - slip)
        # Round inward (never past the bound), but never inside the touch itself.
        if side == "buy":
            return max(floor_to(Decimal(repr(through)), inst.tick_size), inst.limit_price(ref, "buy"))
        return min(ceil_to(Decimal(repr(through)), inst.tick_size), inst.limit_price(ref, "sell"))

    def _action(self, group: HedgeGroup, kind: CompensationKind, reason: str, now_ms: int) -> CompensationAction:
        action = CompensationAction(
            action_id=f"{group.group_id}c{len(group.actions) + 1}",
            group_id=group.group_id,
            kind=kind,
            reason=reason,
            created_ms=now_ms,
        )
        return action


def next_attempt(group: HedgeGroup, leg: int) -> int:
    """The next attempt number for `leg` of `group` (one past the highest already used)."""
    prefix = client_order_id(group.group_id, leg, 0)[:-1]
    used = [int(o.client_order_id[len(prefix):], 36) for o in group.orders
            if o.client_order_id.startswith(prefix)]
    return max(used) + 1 if used else (1 if leg == UNWIND_LEG else 0)
