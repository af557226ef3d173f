"""The domain vocabulary (docs/architecture.md, Vocabulary).

Hot-path records (Quote) are plain slotted dataclasses: they are built once per frame and
never mutated afterwards, but `frozen=True` would double their construction cost.
Everything that goes to a venue or the ledger carries `Decimal` amounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Literal

Venue = Literal["mt5", "okx", "binance"]
VENUES: tuple[Venue, ...] = ("mt5", "okx", "binance")

Side = Literal["buy", "sell"]


def opposite(side: Side) -> Side:
    """The side that closes a position opened with `side`."""
    return "sell" if side == "buy" else "buy"


@dataclass(slots=True)
class Quote:
    """Best bid/ask of one instrument, in the venue's own units.

    `venue_ts_ms` is the venue's timestamp (0 when the venue sends none); `recv_ns` is the
    local monotonic receive time that the stale-quote guard measures ages against.
    """

    venue: Venue
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    venue_ts_ms: int
    recv_ns: int


class TradingState(StrEnum):
    """What the RiskGate lets through (docs/architecture.md, Vocabulary)."""

    ACTIVE = "active"
    PAUSED = "paused"
    REDUCING = "reducing"
    HALTED = "halted"


class Reason(StrEnum):
    """Machine-readable reasons on a Decision. Risk rules add `risk:<rule>` strings."""

    OK = "ok"
    BELOW_THRESHOLD = "below_threshold"
    PERSISTING = "persisting"
    COOLDOWN = "cooldown"
    STALE_QUOTE = "stale_quote"
    IN_FLIGHT = "in_flight"
    SIZE_TOO_SMALL = "size_too_small"
    NO_COUNTER_QUOTE = "no_counter_quote"
    PRICE_OUTLIER = "price_outlier"
    EDGE_ABOVE_CEILING = "edge_above_ceiling"
    HALTED = "halted"
    PAUSED = "paused"
    REDUCING = "reducing"
    PAIR_DISABLED = "pair_disabled"


class Outcome(StrEnum):
    INTENT = "intent"
    BLOCKED = "blocked"


@dataclass(slots=True, frozen=True)
class DirectedEdge:
    """Buy on `buy_venue` at its ask, sell on `sell_venue` at its bid.

    Prices are normalized (quote currency per base unit), quantities in base units.
    `edge_bps` is net of both taker fees: the proceeds of the sell leg after its fee over
    the cost of the buy leg after its fee, minus one, in basis points.
    """

    pair: str
    buy_venue: Venue
    sell_venue: Venue
    buy_price: float
    sell_price: float
    buy_qty: float
    sell_qty: float
    gross_bps: float
    edge_bps: float


@dataclass(slots=True, frozen=True)
class PairComparison:
    """All directed edges of one pair at one instant."""

    pair: str
    ts_ns: int
    edges: tuple[DirectedEdge, ...]

    @property
    def best(self) -> DirectedEdge | None:
        return max(self.edges, key=lambda e: e.edge_bps, default=None)


@dataclass(slots=True, frozen=True)
class ExecutionLeg:
    """One side of an intent, in the venue's units, rounded to its tick and lot step."""

    venue: Venue
    symbol: str
    side: Side
    quantity: Decimal
    limit_price: Decimal
    base_qty: Decimal


@dataclass(slots=True, frozen=True)
class ExecutionIntent:
    """The two legs that one directed edge asks for."""

    pair: str
    buy: ExecutionLeg
    sell: ExecutionLeg
    base_qty: Decimal
    expected_edge_bps: float
    buy_price: float
    sell_price: float
    created_ms: int
    # The receive time (monotonic ns) of the later of the two quotes the intent was priced
    # on: the orchestrator measures its reaction time (to both entry orders sent) from it.
    # 0 = unknown (an intent recovered from the ledger).
    quote_ns: int = 0

    @property
    def legs(self) -> tuple[ExecutionLeg, ExecutionLeg]:
        return (self.buy, self.sell)


@dataclass(slots=True)
class Decision:
    """The pipeline's verdict on one directed edge."""

    ts_ms: int
    pair: str
    buy_venue: Venue | None
    sell_venue: Venue | None
    edge_bps: float
    outcome: Outcome
    reason: str
    intent: ExecutionIntent | None = None


class OrderState(StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    ACKED = "acked"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class OrderPurpose(StrEnum):
    ENTRY = "entry"
    RETRY_HEDGE = "retry_hedge"
    UNWIND = "unwind"
    FLATTEN = "flatten"


@dataclass(slots=True)
class Fill:
    """One execution of an order; unique per (venue, venue_trade_id)."""

    venue: Venue
    venue_trade_id: str
    client_order_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_ccy: str
    ts_ms: int


@dataclass(slots=True)
class Order:
    """One order on one venue. The client order id is chosen before it is sent."""

    client_order_id: str
    group_id: str
    venue: Venue
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    purpose: OrderPurpose
    created_ms: int
    state: OrderState = OrderState.NEW
    venue_order_id: str = ""
    updated_ms: int = 0
    filled_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    reject_reason: str = ""
    fills: list[Fill] = field(default_factory=list)
    # The venue touch (ask for a buy, bid for a sell) when the order was sent; 0 = unknown.
    # PnL splits slippage into latency (intent price -> this) and impact (this -> fills).
    touch_price: Decimal = Decimal(0)
    # May only reduce the account's position on the symbol (a flatten order, sent after a kill):
    # a venue with the flag (Binance USD-M `reduceOnly`) refuses it anything else.
    reduce_only: bool = False

    @property
    def avg_price(self) -> Decimal:
        return self.notional / self.filled_qty if self.filled_qty else Decimal(0)


class GroupState(StrEnum):
    PLANNED = "planned"
    WORKING = "working"
    HEDGED = "hedged"
    BROKEN = "broken"
    COMPENSATING = "compensating"
    REPAIRED = "repaired"
    UNWOUND = "unwound"
    REJECTED = "rejected"
    FAILED = "failed"
    CLOSED = "closed"  # a hedged/repaired/failed group whose positions a flatten or close took to flat


class CompensationKind(StrEnum):
    RETRY_HEDGE = "retry_hedge"
    UNWIND = "unwind"
    ESCALATE = "escalate"


@dataclass(slots=True)
class CompensationAction:
    """What was done to repair a broken group, and how it ended."""

    action_id: str
    group_id: str
    kind: CompensationKind
    reason: str
    created_ms: int
    outcome: str = "pending"
