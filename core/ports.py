"""Ports: what the engine needs from the outside world, as protocols.

Adapters (paper, simulated, OKX, Binance, MT5) implement `ExecutionGateway`. A gateway
never guesses: a timeout or lost connection is reported as `unknown`, and the caller asks
again by client order id (`query`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.models import Fill, Order, OrderState, Venue


@dataclass(slots=True)
class OrderUpdate:
    """What a venue said about one order: its state and any fills since the last update."""

    client_order_id: str
    state: OrderState
    venue_order_id: str = ""
    fills: list[Fill] = field(default_factory=list)
    reason: str = ""


class ExecutionGateway(Protocol):
    """Places, cancels and queries orders on one venue."""

    @property
    def venue(self) -> Venue: ...

    async def place(self, order: Order) -> OrderUpdate:
        """Send the order (its client order id already chosen) and report what the venue said."""
        ...

    async def cancel(self, order: Order) -> OrderUpdate: ...

    async def query(self, order: Order) -> OrderUpdate:
        """Ask the venue about an order by its client order id (after a timeout or restart)."""
        ...
