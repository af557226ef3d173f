"""InFlightOrderTracker: every order in flight, moved only along the order state machine (docs/architecture.md).

Pure (no asyncio): the orchestrator feeds it what it sent and what the venues said, and asks
it which orders timed out. Time comes from the Clock.

- Transitions not allowed by `core.orders.can_transition` are refused and reported with both
  states (`Refusal`); the caller logs them.
- Fills are aggregated per order and deduplicated by venue trade id.
- An order without an answer for `order_timeout_ms` after it was sent moves to `unknown`
  (`check_timeouts`); the caller then queries the venue by client order id. A retry of the
  same order reuses its client order id; nothing is re-sent blindly.
- A fill that arrives after the order was `cancelled`/`expired` is applied (real venues do
  this) and flagged `late`, so the orchestrator re-opens the group's residual.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from core.clock import Clock
from core.models import Fill, Order, OrderState
from core.orders import can_transition, is_terminal
from core.ports import OrderUpdate

_LATE_FILL_STATES = frozenset({OrderState.CANCELLED, OrderState.EXPIRED})
# Refused transitions kept for inspection (the newest). Each is also returned to the caller,
# which logs it (the orchestrator's `refused` events), and the order's real states are in the
# ledger; a venue that keeps repeating a stale update must not grow memory for weeks.
REFUSALS_KEPT = 100


@dataclass(slots=True, frozen=True)
class Refusal:
    """A transition the order state machine does not allow (logged by the caller)."""

    client_order_id: str
    current: OrderState
    requested: OrderState

    def __str__(self) -> str:
        return f"order {self.client_order_id}: refused transition {self.current} -> {self.requested}"


@dataclass(slots=True)
class Applied:
    """The effect of one venue update on one order."""

    order: Order
    new_fills: list[Fill] = field(default_factory=list)
    changed: bool = False
    refused: Refusal | None = None
    late: bool = False


class InFlightOrderTracker:
    def __init__(self, clock: Clock, *, order_timeout_ms: int = 3000) -> None:
        if order_timeout_ms <= 0:
            raise ValueError("order_timeout_ms must be > 0")
        self._clock = clock
        self.order_timeout_ms = order_timeout_ms
        self._orders: dict[str, Order] = {}
        self._deadline_ms: dict[str, int] = {}
        self.refusals: deque[Refusal] = deque(maxlen=REFUSALS_KEPT)

    # -- registry --------------------------------------------------------------------
    def track(self, order: Order) -> None:
        """Start following an order (new, or recovered from the ledger)."""
        self._orders[order.client_order_id] = order
        if not is_terminal(order.state) and order.state is not OrderState.NEW:
            self._deadline_ms.setdefault(
                order.client_order_id, self._clock.time_ms() + self.order_timeout_ms
            )

    def get(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def forget(self, client_order_id: str) -> None:
        self._orders.pop(client_order_id, None)
        self._deadline_ms.pop(client_order_id, None)

    @property
    def in_flight(self) -> list[Order]:
        return [o for o in self._orders.values() if not is_terminal(o.state)]

    def __len__(self) -> int:
        return len(self._orders)

    # -- transitions -----------------------------------------------------------------
    def transition(self, order: Order, new: OrderState) -> Refusal | None:
        """Move `order` to `new` if the order state machine allows it; otherwise return (and keep) the refusal."""
        if new is order.state and new is OrderState.PARTIALLY_FILLED:
            order.updated_ms = self._clock.time_ms()
            return None
        if not can_transition(order.state, new):
            refusal = Refusal(order.client_order_id, order.state, new)
            self.refusals.append(refusal)
            return refusal
        order.state = new
        order.updated_ms = self._clock.time_ms()
        if is_terminal(new):
            self._deadline_ms.pop(order.client_order_id, None)
        return None

    def sent(self, order: Order) -> Refusal | None:
        """The order is leaving now (`new` -> `submitted`); its answer is due within the timeout."""
        self._orders.setdefault(order.client_order_id, order)
        refusal = self.transition(order, OrderState.SUBMITTED)
        self._deadline_ms[order.client_order_id] = self._clock.time_ms() + self.order_timeout_ms
        return refusal

    def timed_out(self, order: Order) -> Refusal | None:
        """No answer in time (or a lost connection): `unknown`, to be resolved by a query."""
        if order.state is OrderState.UNKNOWN:
            return None
        return self.transition(order, OrderState.UNKNOWN)

    def check_timeouts(self) -> list[Order]:
        """Orders whose answer is overdue: moved to `unknown`; query each by client order id."""
        now = self._clock.time_ms()
        due: list[Order] = []
        for coid, deadline in list(self._deadline_ms.items()):
            order = self._orders.get(coid)
            if order is None or is_terminal(order.state):
                self._deadline_ms.pop(coid, None)
                continue
            if now >= deadline:
                self.timed_out(order)
                # The next deadline is for the query that is about to go out.
                self._deadline_ms[coid] = now + self.order_timeout_ms
                due.append(order)
        return due

    def apply(self, order: Order, update: OrderUpdate) -> Applied:
        """Apply a venue update: new fills (deduplicated), then the reported state."""
        result = Applied(order)
        was = order.state
        if update.venue_order_id:
            order.venue_order_id = update.venue_order_id
        seen = {f.venue_trade_id for f in order.fills}
        for fill in update.fills:
            if fill.venue_trade_id in seen:
                continue  # deduplicated by (venue, venue trade id)
            seen.add(fill.venue_trade_id)
            order.fills.append(fill)
            order.filled_qty += fill.qty
            order.notional += fill.qty * fill.price
            order.fees += fill.fee
            result.new_fills.append(fill)
        if update.reason:
            order.reject_reason = update.reason
        if result.new_fills and was in _LATE_FILL_STATES:
            # Applied as a fill; the order stays where it ended.
            result.late = True
            order.updated_ms = self._clock.time_ms()
            return result
        target = update.state
        if result.new_fills and target in (OrderState.ACKED, OrderState.SUBMITTED):
            target = OrderState.PARTIALLY_FILLED
        if target is not order.state or target is OrderState.PARTIALLY_FILLED:
            if target is order.state:
                order.updated_ms = self._clock.time_ms()
            else:
                result.refused = self.transition(order, target)
        result.changed = order.state is not was or bool(result.new_fills)
        return result
