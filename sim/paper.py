"""Paper gateway: fills marketable orders at the touch of the current book.

The first version of simulated execution: an order whose limit crosses the current
touch fills completely at the touch price (IOC semantics); one that does not is expired
unfilled, as an IOC order is on a real venue. Fees are the instrument's taker fee on
notional. Later versions add latency, partial fills, rejects and lost acknowledgements.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

from core.clock import Clock
from core.instruments import Instrument
from core.models import Fill, Order, OrderState, Venue
from core.ports import OrderUpdate

# (bid, ask) of an instrument right now, in venue units; None when never quoted.
TouchSource = Callable[[Venue, str], tuple[float, float] | None]


class PaperGateway:
    """An ExecutionGateway for one venue that trades against the last seen quote."""

    def __init__(
        self,
        venue: Venue,
        instruments: dict[str, Instrument],
        touch: TouchSource,
        clock: Clock,
        *,
        fee_ccy: str = "USDT",
    ) -> None:
        self._venue: Venue = venue
        self._instruments = instruments
        self._touch = touch
        self._clock = clock
        self._fee_ccy = fee_ccy
        self._trade_ids = itertools.count(1)
        self._order_ids = itertools.count(1)
        # Orders seen, by client order id: a re-sent id is answered, never executed twice.
        self._orders: dict[str, OrderUpdate] = {}

    @property
    def venue(self) -> Venue:
        return self._venue

    async def place(self, order: Order) -> OrderUpdate:
        seen = self._orders.get(order.client_order_id)
        if seen is not None:
            return OrderUpdate(order.client_order_id, seen.state, seen.venue_order_id, [], "duplicate")
        update = self._execute(order)
        self._orders[order.client_order_id] = update
        return update

    async def cancel(self, order: Order) -> OrderUpdate:
        seen = self._orders.get(order.client_order_id)
        if seen is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="unknown order")
        # IOC orders are already terminal: the cancel changes nothing.
        return OrderUpdate(order.client_order_id, seen.state, seen.venue_order_id, [], "already final")

    async def query(self, order: Order) -> OrderUpdate:
        seen = self._orders.get(order.client_order_id)
        if seen is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="order not found")
        return OrderUpdate(order.client_order_id, seen.state, seen.venue_order_id, list(seen.fills))

    def _execute(self, order: Order) -> OrderUpdate:
        venue_order_id = f"P{self._venue[:2].upper()}{next(self._order_ids)}"
        inst = self._instruments.get(order.symbol)
        if inst is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, venue_order_id, [], "unknown symbol")
        touch = self._touch(self._venue, order.symbol)
        if touch is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, venue_order_id, [], "no market")
        bid, ask = touch
        if order.side == "buy":
            price = Decimal(repr(ask))
            marketable = order.price >= price
        else:
            price = Decimal(repr(bid))
            marketable = order.price <= price
        if not marketable:
            return OrderUpdate(order.client_order_id, OrderState.EXPIRED, venue_order_id, [], "not marketable")
        notional = order.qty * inst.qty_per_unit * price * inst.price_scale
        fee = (notional * Decimal(repr(inst.taker_fee_bps)) / Decimal(10_000)).quantize(Decimal("0.00000001"))
        fill = Fill(
            venue=self._venue,
            venue_trade_id=f"T{self._venue[:2].upper()}{next(self._trade_ids)}",
            client_order_id=order.client_order_id,
            qty=order.qty,
            price=price,
            fee=fee,
            fee_ccy=self._fee_ccy,
            ts_ms=self._clock.time_ms(),
        )
        return OrderUpdate(order.client_order_id, OrderState.FILLED, venue_order_id, [fill])
