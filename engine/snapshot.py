"""The runtime snapshot: an immutable picture of the engine that views pull on a timer.

Views never receive one message per quote; they read one of these at <= 10 Hz and update
only the cells that changed. Every row has a stable key for that diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import EngineEvent


@dataclass(slots=True, frozen=True)
class QuoteRow:
    key: str
    pair: str
    venue: str
    symbol: str
    bid: float
    ask: float
    bid_qty: float
    ask_qty: float
    age_ms: float | None
    count: int
    outlier: bool = False  # the latest quote was refused by the price guard (no tradable quote)
    outliers: int = 0  # quotes refused as price outliers since start


@dataclass(slots=True, frozen=True)
class TerminalRow:
    """What the listener knows of one MT5 terminal's EA, wall-clock ms (None: never). In
    `/api/status` as `mt5_terminals`, where `quantarb doctor` reads it."""

    terminal: str
    last_seen_ms: int | None  # the last signed request of any kind
    last_tick_ms: int | None
    account_ms: int | None  # the last account report
    margin_mode: str | None  # hedging | netting | exchange, as the EA reports it
    trade_allowed: bool | None  # AutoTrading on (and the EA and account allowed to trade)


@dataclass(slots=True, frozen=True)
class FeedRow:
    """Health of one market-data source (an exchange feed or an MT5 terminal)."""

    key: str
    name: str
    venue: str
    transport: str
    state: str
    last_frame_age_ms: float | None
    frames_per_s: float
    frames: int
    quotes: int
    reconnects: int
    rest_polls: int
    dropped: int
    dropped_by_reason: dict[str, int]
    seq_resets: int
    last_error: str
    terminal: TerminalRow | None = None  # MT5 terminals only


@dataclass(slots=True, frozen=True)
class EdgeRow:
    key: str
    pair: str
    buy_venue: str
    sell_venue: str
    buy_price: float
    sell_price: float
    edge_bps: float | None
    last_reason: str


@dataclass(slots=True, frozen=True)
class LegRow:
    """One order of a group: entry legs and compensation orders, with fill progress."""

    client_order_id: str
    venue: str
    side: str
    purpose: str
    qty: str
    filled: str
    state: str


@dataclass(slots=True, frozen=True)
class GroupRow:
    key: str
    pair: str
    buy_venue: str
    sell_venue: str
    state: str
    base_qty: str
    expected_edge_bps: float
    realized_pnl: str
    opened_ms: int
    closed_ms: int
    legs: tuple[LegRow, ...] = ()


@dataclass(slots=True, frozen=True)
class PairRow:
    """Per-pair execution aggregates and monitor statistics."""

    key: str
    groups: int
    hit_rate: float
    total_pnl: str
    mean_slippage_bps: float | None
    trigger_rate: float
    edge_p50: float | None
    edge_p75: float | None
    edge_p90: float | None


@dataclass(slots=True, frozen=True)
class CompensationRow:
    """One compensation action (retry_hedge / unwind / escalate) and its outcome so far."""

    key: str
    group_id: str
    pair: str
    kind: str
    reason: str
    outcome: str
    ts_ms: int
    failed: bool


@dataclass(slots=True, frozen=True)
class LimitRow:
    """One RiskGate limit: its bound and current use (`utilization` is used/limit, or None)."""

    key: str
    rule: str
    scope: str
    limit: str
    used: str
    utilization: float | None


@dataclass(slots=True, frozen=True)
class BreakerRow:
    """One automatic breaker: `ok` or `tripped` (with what it does: halt, pause, block a venue)."""

    key: str
    name: str
    state: str
    effect: str
    detail: str
    since_ms: int | None
    until_ms: int | None


@dataclass(slots=True, frozen=True)
class RiskEventRow:
    key: str
    ts_ms: int
    kind: str
    reason: str
    trading_state: str


@dataclass(slots=True, frozen=True)
class PositionRow:
    """One non-zero net position (base units, signed) as the RiskGate's book holds it."""

    key: str
    venue: str
    asset: str
    qty: str


@dataclass(slots=True, frozen=True)
class HoldingLegRow:
    """One venue's position in an asset (decimal strings; "" when not known)."""

    venue: str
    qty: str  # base units, signed
    venue_qty: str  # the venue's units, signed
    unit: str  # "lot", "ct", or "" (the venue trades base units)
    mark: str  # normalized price
    unrealized: str  # in the instrument's quote currency
    quote_ccy: str


@dataclass(slots=True, frozen=True)
class HoldingRow:
    """One asset across venues, from the running portfolio (docs/ledger.md, Money): money in the
    account currency, "n/a" when a rate or mark is missing."""

    key: str  # the asset
    asset: str
    net: str  # net delta across venues, base units
    step: str  # the coarsest lot step in base units: a net delta this large is drift
    drift: bool
    mark: str
    unrealized: str
    carry: str
    held_since_ms: int | None
    legs: tuple[HoldingLegRow, ...] = ()
    in_flight: bool = False  # a group of this asset is open: its legs may be apart for now


@dataclass(slots=True, frozen=True)
class BalanceRow:
    """One venue's account (the risk screen): amounts in the account currency as decimal strings,
    "" where the source does not say."""

    key: str  # the venue
    venue: str
    source: str  # paper, paper spot, terminal NAME, venue (live: reconciliation's last read)
    balance: str
    equity: str
    margin: str
    free: str


@dataclass(slots=True, frozen=True)
class TimingRow:
    """The engine's live duration histograms (`core.durations`, fixed buckets of `bounds_ms`, the
    last one open): how long edges stayed over the threshold, and our reaction time (from the
    quote that made an intent to both entry orders sent). Quantiles are bucket upper bounds."""

    bounds_ms: tuple[float, ...]
    lifetimes: tuple[int, ...]
    reactions: tuple[int, ...]
    lifetime_p50_ms: float | None
    lifetime_p90_ms: float | None
    reaction_p50_ms: float | None
    reaction_p90_ms: float | None


@dataclass(slots=True, frozen=True)
class RuntimeSnapshot:
    ts_ms: int
    mode: str
    trading_state: str
    state_reason: str
    threshold_bps: float
    quotes_total: int
    decisions_total: int
    intents_total: int
    open_groups: int
    groups_by_state: dict[str, int]
    realized_pnl: str
    quotes: tuple[QuoteRow, ...]
    feeds: tuple[FeedRow, ...]
    edges: tuple[EdgeRow, ...]
    groups: tuple[GroupRow, ...]
    log: tuple[EngineEvent, ...]
    log_total: int
    pairs: tuple[PairRow, ...] = ()
    daily_pnl: str = "0.00"  # the day's equity change (UTC), "n/a" when a rate or mark is missing
    compensation: tuple[CompensationRow, ...] = ()
    limits: tuple[LimitRow, ...] = ()
    breakers: tuple[BreakerRow, ...] = ()
    risk_events: tuple[RiskEventRow, ...] = ()
    blocked_venues: tuple[str, ...] = ()
    # Live: orders reconciliation found on a venue that quantarb does not own ("venue cid").
    quarantined: tuple[str, ...] = ()
    # Equity change (realized + unrealized - fees + carry, docs/ledger.md, Money) in the account
    # currency: "" not computed, "n/a" a rate or mark is missing.
    equity: str = ""
    account_ccy: str = ""
    ledger_error: str = ""  # why the ledger cannot write now ("" while it writes)
    ledger_unwritten: int = 0  # events held in memory until it can
    # Decisions by reason since start (ok, below_threshold, price_outlier, ...), and quotes
    # refused by the price guard per venue.
    reasons: dict[str, int] = field(default_factory=dict)
    price_outliers: dict[str, int] = field(default_factory=dict)
    venues: tuple[str, ...] = ()  # every configured venue: "all blocked" needs the whole set
    positions: tuple[PositionRow, ...] = ()
    holdings: tuple[HoldingRow, ...] = ()  # the Positions pane: per asset, from the portfolio
    balances: tuple[BalanceRow, ...] = ()  # the risk screen: each venue's account and margin
    timings: TimingRow | None = None  # edge lifetimes against reaction times (analytics screen)
