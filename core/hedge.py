"""HedgeGroup: the lifecycle of one intent (docs/architecture.md, State machines), its legs and its PnL.

The group's state is derived from its orders' fills in base units: both legs filled the
same quantity within one lot step -> hedged; one leg filled more -> broken; nothing filled
-> rejected. Compensation moves a broken group to repaired, unwound or failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.instruments import Instrument
from core.models import (
    CompensationAction,
    ExecutionIntent,
    Fill,
    GroupState,
    Order,
    OrderPurpose,
    Side,
    Venue,
)
from core.orders import is_terminal

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

_GROUP_TRANSITIONS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.PLANNED: frozenset({GroupState.WORKING, GroupState.REJECTED}),
    GroupState.WORKING: frozenset({GroupState.HEDGED, GroupState.BROKEN, GroupState.REJECTED}),
    GroupState.BROKEN: frozenset({GroupState.COMPENSATING}),
    GroupState.COMPENSATING: frozenset(
        {GroupState.REPAIRED, GroupState.UNWOUND, GroupState.FAILED, GroupState.COMPENSATING}
    ),
    # A terminal group that still held positions (a hedge is held until flatten; a failed
    # group's residual; an unwind that lot sizes left short of flat, e.g. 13 of 14 contracts
    # bought back against a 0.022 spot leg) is closed when closing orders took every position
    # to flat.
    GroupState.HEDGED: frozenset({GroupState.CLOSED}),
    GroupState.REPAIRED: frozenset({GroupState.CLOSED}),
    GroupState.UNWOUND: frozenset({GroupState.CLOSED}),
    GroupState.FAILED: frozenset({GroupState.CLOSED}),
}

GROUP_TERMINAL: frozenset[GroupState] = frozenset(
    {GroupState.HEDGED, GroupState.REPAIRED, GroupState.UNWOUND, GroupState.REJECTED, GroupState.FAILED,
     GroupState.CLOSED}
)

# Terminal states a group can leave for `closed`: it may still hold positions in them.
CLOSABLE: frozenset[GroupState] = frozenset(
    {GroupState.HEDGED, GroupState.REPAIRED, GroupState.UNWOUND, GroupState.FAILED}
)


def base36(n: int) -> str:
    if n < 0:
        raise ValueError("negative id component")
    digits = []
    while True:
        n, r = divmod(n, 36)
        digits.append(_ALPHABET[r])
        if n == 0:
            return "".join(reversed(digits))


def new_group_id(opened_ms: int, seq: int) -> str:
    """A group id that is unique across restarts (ms timestamp) and runs (sequence)."""
    return f"g{base36(opened_ms)}{base36(seq).rjust(3, '0')}"


def client_order_id(group_id: str, leg: int, attempt: int) -> str:
    """Deterministic client order id from (group, leg, attempt): `[A-Za-z0-9]{1,32}`.

    The same id is reused when the same attempt is re-sent, so a venue can refuse a
    duplicate instead of executing it twice.
    """
    coid = f"qa{group_id}l{leg}a{base36(attempt)}"
    if len(coid) > 32 or not coid.isalnum():
        raise ValueError(f"client order id {coid!r} is not in the safe format")
    return coid


@dataclass(slots=True)
class HedgeGroup:
    group_id: str
    intent: ExecutionIntent
    instruments: dict[Venue, Instrument]
    opened_ms: int
    state: GroupState = GroupState.PLANNED
    orders: list[Order] = field(default_factory=list)
    actions: list[CompensationAction] = field(default_factory=list)
    closed_ms: int = 0
    note: str = ""
    # Dust of earlier groups (same asset, base units) this group's compensation traded off.
    dust_folded: Decimal = Decimal(0)
    # The cash (before fees) and fees of the closing fills (a flatten's share, `core.attribution`)
    # that took this group's positions to flat: set by `close`.
    closing_cash: Decimal = Decimal(0)
    closing_fees: Decimal = Decimal(0)
    outcome: GroupState | None = None  # once closed: how its execution ended (hedged, repaired, failed)

    @property
    def pair(self) -> str:
        return self.intent.pair

    @property
    def buy_venue(self) -> Venue:
        return self.intent.buy.venue

    @property
    def sell_venue(self) -> Venue:
        return self.intent.sell.venue

    @property
    def terminal(self) -> bool:
        return self.state in GROUP_TERMINAL

    @property
    def step(self) -> Decimal:
        """One lot step in base units: the coarser of the two legs' steps."""
        return max(inst.base_step for inst in self.instruments.values())

    def transition(self, new: GroupState, now_ms: int) -> bool:
        """Move to `new` if the group state machine allows it."""
        if new not in _GROUP_TRANSITIONS.get(self.state, frozenset()):
            return False
        self.state = new
        if new in GROUP_TERMINAL and not self.closed_ms:
            self.closed_ms = now_ms  # a closed group keeps the time its execution ended
        return True

    def close(self, closing_cash: Decimal, closing_fees: Decimal, now_ms: int, by: str = "") -> bool:
        """Closing orders (a flatten's share, a close of this group) took every position flat:
        `closed`, with their cash and fees in its PnL. False (nothing changes) from a state that
        holds nothing to close."""
        before = self.state
        if not self.transition(GroupState.CLOSED, now_ms):
            return False
        self.closing_cash, self.closing_fees, self.outcome = closing_cash, closing_fees, before
        self.note = "; ".join(n for n in (self.note, f"{before} until closed{' by ' + by if by else ''}") if n)[:300]
        return True

    def base_filled(self, order: Order) -> Decimal:
        return self.instruments[order.venue].to_base_qty(order.filled_qty)

    def position(self, venue: Venue) -> Decimal:
        """Net base quantity this group holds on `venue` (+ long, - short)."""
        net = Decimal(0)
        for order in self.orders:
            if order.venue == venue:
                qty = self.base_filled(order)
                net += qty if order.side == "buy" else -qty
        return net

    def residual(self) -> Decimal:
        """Net base exposure across venues: zero when the group is hedged or flat."""
        return sum((self.position(v) for v in self.instruments), Decimal(0))

    def own_residual(self) -> Decimal:
        """The residual this group answers for: net exposure minus the dust it took over."""
        return self.residual() + self.dust_folded

    def entry_filled(self, side: Side) -> Decimal:
        return sum(
            (self.base_filled(o) for o in self.orders if o.side == side and o.purpose is OrderPurpose.ENTRY),
            Decimal(0),
        )

    def all_orders_terminal(self) -> bool:
        return all(is_terminal(o.state) for o in self.orders)

    def fills(self) -> list[Fill]:
        return [f for o in self.orders for f in o.fills]

    @property
    def fees(self) -> Decimal:
        """Every fee of its orders, and of the closing fills that closed it."""
        return sum((o.fees for o in self.orders), self.closing_fees)

    def cash_flow(self) -> Decimal:
        """What every fill of the group brought in (sells) minus what it took out (buys), before
        fees, in the quote currency at normalized prices."""
        cash = Decimal(0)
        for order in self.orders:
            inst = self.instruments[order.venue]
            notional = order.notional * inst.qty_per_unit * inst.price_scale
            cash += notional if order.side == "sell" else -notional
        return cash

    def residual_cost(self) -> Decimal:
        """The open residual at the average price of the side that holds it, signed like the
        residual (+ long): what the residual cost, so it is not taken for a gain or a loss."""
        residual = self.residual()
        if residual == 0:
            return Decimal(0)
        side: Side = "buy" if residual > 0 else "sell"
        qty = notional = Decimal(0)
        for order in self.orders:
            if order.side == side:
                inst = self.instruments[order.venue]
                qty += self.base_filled(order)
                notional += order.notional * inst.qty_per_unit * inst.price_scale
        return residual * notional / qty if qty else Decimal(0)

    @property
    def realized_pnl(self) -> Decimal:
        """The cash flow of the quantity the group hedged, after its fees (docs/ledger.md, Money).

        What one side bought or sold in excess of the other (the residual a broken or failed
        group holds) is excluded at that side's average price: an open position is valued at
        market (`unrealized`), never booked as profit by its notional. Equal to the cash flow
        after fees once the group holds no residual (hedged, repaired, unwound). A closed group
        holds nothing: its PnL is every cash flow, the closing fills' included, after every fee.
        """
        if self.state is GroupState.CLOSED:
            return self.cash_flow() + self.closing_cash - self.fees
        return self.cash_flow() + self.residual_cost() - self.fees

    def unrealized(self, mark: Decimal) -> Decimal:
        """The residual valued at `mark` (a normalized price) against what it cost (0 once closed)."""
        if self.state is GroupState.CLOSED:
            return Decimal(0)
        return self.residual() * mark - self.residual_cost()
