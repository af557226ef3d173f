"""Ports: what the engine needs from the outside world, as protocols.

Adapters (paper, simulated, OKX, Binance, MT5) implement `ExecutionGateway`. A gateway
never guesses: a timeout or lost connection is reported as `unknown`, and the caller asks
again by client order id (`query`).

`Journal` is the part of the ledger that execution writes to. The orchestrator and the
operator actions depend on it, not on `ledger/`, so execution can be read (and tested)
without SQLite, and the ledger can change how it stores without touching execution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from core.models import CompensationAction, Decision, Fill, Order, OrderState, TradingState, Venue

if TYPE_CHECKING:
    from core.hedge import HedgeGroup
    from core.risk import StateChange
    from core.runtime_settings import SettingChange

RiskKind = Literal["kill", "flatten", "rearm", "pause", "resume", "breaker", "setting"]


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


class JournalUnavailable(Exception):
    """The write-ahead row of an order could not be made durable: the order must not be sent."""


class Journal(Protocol):
    """The ledger calls execution makes. Queued calls return at once (their seq); `flush`
    makes everything queued so far durable. `order_created` is the write-ahead: committed
    before it returns, and an order is sent only if it returned (it raises
    `JournalUnavailable` when it cannot be). Nothing else raises: a journal that cannot
    write halts trading itself and keeps what it could not write."""

    def decision(self, decision: Decision, *, group_id: str | None = None) -> int | None: ...

    def group_opened(self, group: HedgeGroup) -> int: ...

    def group_state(self, group: HedgeGroup) -> int: ...

    async def order_created(self, order: Order) -> int: ...

    def order_state(self, order: Order) -> int: ...

    def fill(self, order: Order, fill: Fill) -> int: ...

    def compensation(self, action: CompensationAction) -> int: ...

    async def risk_event(
        self, kind: RiskKind, change: StateChange, *, breakers: Mapping[str, Mapping[str, Any]] | None = None
    ) -> int:
        """A trading-state change with every breaker's state, durable before it returns."""
        ...

    async def setting(self, change: SettingChange, state: TradingState) -> int:
        """A runtime setting changed (the audit record), durable before it returns."""
        ...

    def dust(self, pair: str, qty: Decimal) -> int: ...

    async def flush(self, seq: int | None = None) -> None: ...
