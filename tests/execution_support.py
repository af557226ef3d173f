"""Shared pieces for the execution tests: instruments, intents and a scripted gateway.

`ScriptedGateway` implements the ExecutionGateway port. Each new order placed on it takes
the next step of its script:

- `fill`: filled at its limit;
- `reject`: rejected;
- `partial:F`: a fraction F of the quantity fills, the rest of the IOC expires;
- `expire`: expired, nothing filled;
- `timeout`: place raises TimeoutError; a query then reports the order filled;
- `timeout_expired`: place raises TimeoutError; a query then reports it expired unfilled;
- `ack_lost`: place raises ConnectionError; a query then reports the order filled;
- `late_fill`: expired unfilled on place; a later query reports the fill that arrived late;
- `timeout_late`: place raises TimeoutError; the first query reports it expired unfilled, a
  later one the fill that arrived late.

When the script runs out, orders `reject`. Every place is recorded, with the identity of the
order object, so a test can check that no client order id was sent for two different orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.clock import ManualClock
from core.hedge import HedgeGroup
from core.instruments import Instrument
from core.models import ExecutionIntent, ExecutionLeg, Fill, Order, OrderState, Venue
from core.ports import OrderUpdate

MT5 = Instrument(venue="mt5", symbol="BTCUSD", pair="BTC", qty_per_unit=Decimal(1),
                 tick_size=Decimal("0.01"), lot_step=Decimal("0.01"), min_qty=Decimal("0.01"),
                 taker_fee_bps=0.0)
BINANCE = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=Decimal(1),
                     tick_size=Decimal("0.1"), lot_step=Decimal("0.001"), min_qty=Decimal("0.001"),
                     taker_fee_bps=5.0)
OKX = Instrument(venue="okx", symbol="BTC-USDT-SWAP", pair="BTC", qty_per_unit=Decimal("0.01"),
                 tick_size=Decimal("0.1"), lot_step=Decimal(1), min_qty=Decimal(1), taker_fee_bps=5.0)
INSTRUMENTS: dict[tuple[Venue, str], Instrument] = {i.key: i for i in (MT5, BINANCE, OKX)}
BY_VENUE: dict[Venue, Instrument] = {i.venue: i for i in (MT5, BINANCE, OKX)}


def make_intent(
    buy: Venue = "mt5",
    sell: Venue = "binance",
    base_qty: Decimal = Decimal("0.1"),
    buy_price: Decimal = Decimal("60000"),
    sell_price: Decimal = Decimal("60100"),
    now_ms: int = 1_732_150_000_000,
) -> ExecutionIntent:
    bi, si = BY_VENUE[buy], BY_VENUE[sell]
    return ExecutionIntent(
        pair="BTC",
        buy=ExecutionLeg(buy, bi.symbol, "buy", bi.to_venue_qty(base_qty), buy_price, base_qty),
        sell=ExecutionLeg(sell, si.symbol, "sell", si.to_venue_qty(base_qty), sell_price, base_qty),
        base_qty=base_qty,
        expected_edge_bps=float((sell_price - buy_price) / buy_price * 10_000) - 10.0,
        buy_price=float(buy_price),
        sell_price=float(sell_price),
        created_ms=now_ms,
    )


def make_group(intent: ExecutionIntent | None = None, group_id: str = "gtest001") -> HedgeGroup:
    intent = intent or make_intent()
    return HedgeGroup(
        group_id=group_id,
        intent=intent,
        instruments={leg.venue: BY_VENUE[leg.venue] for leg in intent.legs},
        opened_ms=intent.created_ms,
    )


@dataclass
class _Placed:
    order: Order
    step: str
    fills: list[Fill] = field(default_factory=list)
    state: OrderState = OrderState.SUBMITTED
    pending_fills: list[Fill] = field(default_factory=list)
    late_after: int = 0  # queries that still see no fill


class ScriptedGateway:
    """An ExecutionGateway whose answers follow a script (see the module docstring)."""

    def __init__(self, venue: Venue, script: list[str], clock: ManualClock, *,
                 fee_bps: Decimal = Decimal(5)) -> None:
        self._venue: Venue = venue
        self.script = list(script)
        self._clock = clock
        self._fee = fee_bps / Decimal(10_000)
        self._trade = 0
        self.orders: dict[str, _Placed] = {}
        self.places: list[tuple[str, int]] = []  # (client order id, id(order)) per place call
        self.queries: list[str] = []
        self.cancels: list[str] = []

    @property
    def venue(self) -> Venue:
        return self._venue

    def _fill(self, order: Order, qty: Decimal) -> Fill:
        self._trade += 1
        return Fill(self._venue, f"{self._venue}-t{self._trade}", order.client_order_id, qty,
                    order.price, qty * order.price * self._fee, "USDT", self._clock.time_ms())

    def _update(self, placed: _Placed) -> OrderUpdate:
        return OrderUpdate(placed.order.client_order_id, placed.state, f"v-{placed.order.client_order_id}",
                           list(placed.fills))

    async def place(self, order: Order) -> OrderUpdate:
        self.places.append((order.client_order_id, id(order)))
        seen = self.orders.get(order.client_order_id)
        if seen is not None:  # a re-sent client id is answered, never executed twice
            return self._update(seen)
        step = self.script.pop(0) if self.script else "reject"
        placed = self.orders[order.client_order_id] = _Placed(order, step)
        if step == "fill":
            placed.fills.append(self._fill(order, order.qty))
            placed.state = OrderState.FILLED
        elif step == "reject":
            placed.state = OrderState.REJECTED
        elif step.startswith("partial:"):
            frac = Decimal(step.split(":", 1)[1])
            inst = BY_VENUE[self._venue]
            qty = (order.qty * frac).quantize(inst.lot_step)
            if qty > 0:
                placed.fills.append(self._fill(order, qty))
            placed.state = OrderState.EXPIRED
        elif step == "expire":
            placed.state = OrderState.EXPIRED
        elif step in ("timeout", "ack_lost"):
            placed.fills.append(self._fill(order, order.qty))
            placed.state = OrderState.FILLED
            raise TimeoutError("no answer") if step == "timeout" else ConnectionError("reset")
        elif step == "timeout_expired":
            placed.state = OrderState.EXPIRED
            raise TimeoutError("no answer")
        elif step == "late_fill":
            placed.state = OrderState.EXPIRED
            placed.pending_fills.append(self._fill(order, order.qty))
            return self._update(placed)
        elif step == "timeout_late":
            placed.state = OrderState.EXPIRED
            placed.pending_fills.append(self._fill(order, order.qty))
            placed.late_after = 1
            raise TimeoutError("no answer")
        else:
            raise AssertionError(f"unknown script step {step!r}")
        return self._update(placed)

    async def cancel(self, order: Order) -> OrderUpdate:
        self.cancels.append(order.client_order_id)
        placed = self.orders.get(order.client_order_id)
        if placed is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="unknown order")
        if placed.state not in (OrderState.FILLED, OrderState.REJECTED, OrderState.EXPIRED):
            placed.state = OrderState.CANCELLED
        return self._update(placed)

    async def query(self, order: Order) -> OrderUpdate:
        self.queries.append(order.client_order_id)
        placed = self.orders.get(order.client_order_id)
        if placed is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="never received")
        if placed.late_after > 0:
            placed.late_after -= 1
        elif placed.pending_fills:  # the late fill shows up now
            placed.fills.extend(placed.pending_fills)
            placed.pending_fills.clear()
        return self._update(placed)
