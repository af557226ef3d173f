"""A venue double for kill and flatten tests: orders stay in flight until the test lets go.

`ScriptedGateway` (tests/execution_support.py) answers every call at once, so a group never
sits in flight and a kill or flatten can only be tested against timing (the kill bench).
`HoldingGateway` keeps orders open for as long as the test wants, with no clock and no sleep:

- `fill` / `reject`: `place` answers at once (filled at the limit, or rejected);
- `rest`: `place` answers ACKED at once and the order rests on the book; a `query` (the
  orchestrator asks about an order that is not final) long-polls until the order leaves
  the book, by a `cancel` or by the test's `finish`;
- `hold`: `place` itself does not answer until the order is cancelled or `finish`ed (a
  venue slow to answer; e.g. a flatten order the test keeps in progress).

What to do with each order comes from `decide(order)`, so a test can script by group and
purpose rather than by arrival order (concurrent groups arrive in no promised order).
Every `place` is appended to a `placements` list that several gateways may share, so a
test can assert what left, where, and in which order relative to a kill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from core.clock import Clock
from core.config import QuantarbConfig, demo_config
from core.models import Fill, Order, OrderPurpose, OrderState, Venue
from core.ports import OrderUpdate

Step = Literal["fill", "reject", "rest", "hold"]
Outcome = Literal["fill", "expire", "reject", "half_then_expire"]

_OPEN = (OrderState.SUBMITTED, OrderState.ACKED)


@dataclass(frozen=True, slots=True)
class Placement:
    """One `place` call as the venue saw it."""

    venue: Venue
    client_order_id: str
    group_id: str
    purpose: OrderPurpose
    side: str
    qty: Decimal


@dataclass(slots=True)
class _Held:
    order: Order
    state: OrderState
    fills: list[Fill] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class HoldingGateway:
    """An ExecutionGateway whose orders stay open until cancelled or `finish`ed (module doc)."""

    def __init__(self, venue: Venue, clock: Clock, decide: Callable[[Order], Step],
                 placements: list[Placement]) -> None:
        self._venue: Venue = venue
        self._clock = clock
        self._decide = decide
        self.placements = placements
        self.orders: dict[str, _Held] = {}
        self.cancels: list[str] = []
        self.queries: list[str] = []
        self.parked: set[str] = set()  # client ids with a place or query waiting on the venue
        self._trade = 0

    @property
    def venue(self) -> Venue:
        return self._venue

    def _fill(self, order: Order, qty: Decimal | None = None) -> Fill:
        self._trade += 1
        return Fill(self._venue, f"{self._venue}-t{self._trade}", order.client_order_id,
                    order.qty if qty is None else qty, order.price,
                    Decimal(0), "USDT", self._clock.time_ms())

    def _update(self, held: _Held) -> OrderUpdate:
        reason = "rejected by the test venue" if held.state is OrderState.REJECTED else ""
        return OrderUpdate(held.order.client_order_id, held.state, f"v-{held.order.client_order_id}",
                           list(held.fills), reason)

    async def _park(self, held: _Held) -> None:
        coid = held.order.client_order_id
        self.parked.add(coid)
        try:
            while held.state in _OPEN:
                await held.changed.wait()
        finally:
            self.parked.discard(coid)

    async def place(self, order: Order) -> OrderUpdate:
        self.placements.append(Placement(self._venue, order.client_order_id, order.group_id, order.purpose,
                                         order.side, order.qty))
        if order.client_order_id in self.orders:
            raise AssertionError(f"{order.client_order_id} placed twice")
        step = self._decide(order)
        held = self.orders[order.client_order_id] = _Held(order, OrderState.SUBMITTED)
        if step == "fill":
            held.fills.append(self._fill(order))
            held.state = OrderState.FILLED
        elif step == "reject":
            held.state = OrderState.REJECTED
        elif step == "rest":
            held.state = OrderState.ACKED
        else:
            await self._park(held)
        return self._update(held)

    async def query(self, order: Order) -> OrderUpdate:
        self.queries.append(order.client_order_id)
        held = self.orders.get(order.client_order_id)
        if held is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="never received")
        await self._park(held)
        return self._update(held)

    async def cancel(self, order: Order) -> OrderUpdate:
        self.cancels.append(order.client_order_id)
        held = self.orders.get(order.client_order_id)
        if held is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="unknown order")
        if held.state in _OPEN:
            held.state = OrderState.CANCELLED
            held.changed.set()
        return self._update(held)

    def finish(self, client_order_id: str, outcome: Outcome) -> None:
        """The venue ends an open order: filled in full, expired unfilled, rejected, or half
        filled then expired (an IOC the book took part of: final, its one trade reported)."""
        held = self.orders[client_order_id]
        if held.state not in _OPEN:
            raise AssertionError(f"{client_order_id} is already {held.state}")
        if outcome == "fill":
            held.fills.append(self._fill(held.order))
            held.state = OrderState.FILLED
        elif outcome == "half_then_expire":
            held.fills.append(self._fill(held.order, held.order.qty / 2))
            held.state = OrderState.EXPIRED
        else:
            held.state = OrderState.EXPIRED if outcome == "expire" else OrderState.REJECTED
        held.changed.set()


async def until(condition: Callable[[], bool], what: str, turns: int = 5000) -> None:
    """Let the event loop run until `condition` holds; fail (never return) if it does not
    within `turns` loop iterations. No clock: the doubles above need no time to answer."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached after {turns} event-loop turns: {what}")


def held_config() -> QuantarbConfig:
    """The demo config where only the test moves things: no quote makes an intent (groups are
    submitted by the test) and no engine timeout fires while the test holds an order (the price
    guard's ceiling, max_edge_bps, stays above the threshold)."""
    cfg = demo_config().model_dump(mode="python")
    cfg["strategy"].update({"threshold_bps": 10_000, "max_edge_bps": 20_000, "order_timeout_ms": 600_000,
                            "group_deadline_ms": 600_000})
    return QuantarbConfig.model_validate(cfg)
