"""A simulated MT5 terminal and broker account: the state that outlives an Expert Advisor restart.

`SimBroker` is what the EA simulator trades through: a hedging account with a balance,
positions, active orders and an order and deal history, and `execute(request)`, which behaves
like `OrderSend` for `TRADE_ACTION_DEAL` and `TRADE_ACTION_REMOVE` requests (MQL5 reference,
`trading/ordersend` and the trade server return codes). It is priced from a
`touch(symbol) -> (bid, ask)` callable and, from a seeded RNG, slips, requotes, rejects and
partially fills as configured in `BrokerBehaviour`.

Modelled as on a real MT5 hedging account:

- every request that executes creates an order; an opening deal creates a position whose
  ticket is the ticket of that order;
- a close is a `TRADE_ACTION_DEAL` of the opposite type with `position=<ticket>`, for the whole
  volume or less (a partial close); closing realises the profit into the balance;
- each symbol has an execution mode (`SYMBOL_TRADE_EXEMODE`): under Request and Instant
  execution the request's `price` is required and the server requotes (10004) when the market
  is more than `deviation` points worse, and only FOK filling is accepted; under Market and
  Exchange execution the price is ignored (the deal is at the market, wherever it is); RETURN
  filling is accepted for market orders under Exchange execution only (MT5 "Fill Policy");
- the order comment is truncated to 31 characters and copied to the deal (`DEAL_COMMENT`),
  unless the broker rewrites or drops comments (`BrokerBehaviour.comments`), as some do;
- a request that fails creates no order and no deal (`result.order == result.deal == 0`);
- commission is charged per lot on every deal (negative, as `DEAL_COMMISSION` reports it);
- overnight swap is charged at the server's daily rollover by each symbol's `SYMBOL_SWAP_*`
  properties (`sim.mt5_swap`): it accrues on the position (`POSITION_SWAP`, in the equity) and a
  closing deal carries the closed share of it into the balance (`DEAL_SWAP`);
- the order and deal history reaches back `HISTORY_KEPT_MS`, at most `HISTORY_KEPT` of each (a
  real trade server keeps it all on the broker's side; this one runs inside the demo's process
  for weeks). Open positions and active orders are the account: never dropped.

Broker behaviours that make the EA's safety logic matter are switches on `BrokerBehaviour`:
market execution ignoring the price (`SymbolSpec.execution`), comments rewritten or dropped,
a TIMEOUT (10012) whose order still executes and whose deal appears later, and partial fills
whose RETURN remainder rests as an active order (filled later, or removed with
`TRADE_ACTION_REMOVE`).

Simplifications: prices are in the account currency (USD-quoted symbols), margin is
`volume * contract_size * price / leverage`, an IOC partial fill cancels the remainder, and
`FOK` never partially fills (it rejects when the volume is not available).

The broker can persist itself to a JSON file after every change, so that a separate
`quantarb mt5 sim` process finds its account again after a restart.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import msgspec

from core.clock import Clock, RealClock
from core.instruments import Instrument, Pair
from sim.mt5_swap import DAY_MS, NO_SWAP, SwapTerms, weekday_of_day

# ---------------------------------------------------------------- MQL5 constants

TRADE_ACTION_DEAL = 1  # ENUM_TRADE_REQUEST_ACTIONS: market order
TRADE_ACTION_REMOVE = 8  # remove an active order (`request.order`)

TRADE_RETCODE_REQUOTE = 10004
TRADE_RETCODE_REJECT = 10006
TRADE_RETCODE_CANCEL = 10007
TRADE_RETCODE_PLACED = 10008
TRADE_RETCODE_DONE = 10009
TRADE_RETCODE_DONE_PARTIAL = 10010
TRADE_RETCODE_ERROR = 10011
TRADE_RETCODE_TIMEOUT = 10012
TRADE_RETCODE_INVALID = 10013
TRADE_RETCODE_INVALID_VOLUME = 10014
TRADE_RETCODE_INVALID_PRICE = 10015
TRADE_RETCODE_TRADE_DISABLED = 10017
TRADE_RETCODE_MARKET_CLOSED = 10018
TRADE_RETCODE_NO_MONEY = 10019
TRADE_RETCODE_PRICE_CHANGED = 10020
TRADE_RETCODE_PRICE_OFF = 10021
TRADE_RETCODE_TOO_MANY_REQUESTS = 10024
TRADE_RETCODE_INVALID_FILL = 10030
TRADE_RETCODE_CONNECTION = 10031
TRADE_RETCODE_POSITION_CLOSED = 10036
TRADE_RETCODE_INVALID_CLOSE_VOLUME = 10038

RETCODE_TEXT: dict[int, str] = {
    TRADE_RETCODE_REQUOTE: "Requote",
    TRADE_RETCODE_REJECT: "Request rejected",
    TRADE_RETCODE_CANCEL: "Request canceled by trader",
    TRADE_RETCODE_PLACED: "Order placed",
    TRADE_RETCODE_DONE: "Request completed",
    TRADE_RETCODE_DONE_PARTIAL: "Only part of the request was completed",
    TRADE_RETCODE_ERROR: "Request processing error",
    TRADE_RETCODE_TIMEOUT: "Request canceled by timeout",
    TRADE_RETCODE_INVALID: "Invalid request",
    TRADE_RETCODE_INVALID_VOLUME: "Invalid volume in the request",
    TRADE_RETCODE_INVALID_PRICE: "Invalid price in the request",
    TRADE_RETCODE_TRADE_DISABLED: "Trade is disabled",
    TRADE_RETCODE_MARKET_CLOSED: "Market is closed",
    TRADE_RETCODE_NO_MONEY: "There is not enough money to complete the request",
    TRADE_RETCODE_PRICE_CHANGED: "Prices changed",
    TRADE_RETCODE_PRICE_OFF: "There are no quotes to process the request",
    TRADE_RETCODE_TOO_MANY_REQUESTS: "Too frequent requests",
    TRADE_RETCODE_INVALID_FILL: "Invalid order filling type",
    TRADE_RETCODE_CONNECTION: "No connection with the trade server",
    TRADE_RETCODE_POSITION_CLOSED: "Position with the specified POSITION_IDENTIFIER has already been closed",
    TRADE_RETCODE_INVALID_CLOSE_VOLUME: "A close volume exceeds the current position volume",
}

# A deal that executed, all of it or part (the rest cancelled, IOC, or resting, RETURN).
RETCODES_DONE: frozenset[int] = frozenset({TRADE_RETCODE_DONE, TRADE_RETCODE_DONE_PARTIAL})
# What the protocol acknowledges as `accepted`: executed, or an order placed (RETURN, nothing yet).
RETCODES_ACCEPTED: frozenset[int] = RETCODES_DONE | {TRADE_RETCODE_PLACED}

COMMENT_MAX = 31  # characters of an order comment the trade server keeps

OrderType = Literal["buy", "sell"]
Filling = Literal["FOK", "IOC", "RETURN"]
# SYMBOL_TRADE_EXEMODE: request, instant (price required, FOK only), market, exchange (price ignored).
Execution = Literal["request", "instant", "market", "exchange"]
OrderStatus = Literal["placed", "partial", "filled", "canceled"]
Comments = Literal["keep", "rewrite", "drop"]
TimeoutOutcome = Literal["executes", "lost"]
# (bid, ask) of a symbol now, None when it has no quote.
Touch = Callable[[str], tuple[float, float] | None]

_STATE_VERSION = 2
# The latest OrderSend requests, for tests to read: a soak's steady state comes within minutes
# (1,000 took most of an hour of the demo to fill, issue 19).
_REQUEST_LOG_MAX = 100
# How far back the order and deal history reaches. The EA looks up a command's order and deals
# around the moment it sent it: while the command can still be delivered (seconds), when an
# outcome it did not hear arrives, and when it re-sends the fills of the last five minutes after
# a restart (`sim.ea_sim.SIM_RESYNC_FILLS_MS` on this broker; its lookback of an hour is a
# margin around those). Eight minutes covers them, is about 150 deals and 150 orders at the demo's
# load, keeps the state file (rewritten after every change) small, and is full within `bench
# soak`'s ten-minute warm-up (fifteen was a slope in every soak, issue 19). Every fill the
# engine saw is in its ledger.
HISTORY_KEPT_MS = 8 * 60_000
# And at most this many orders and deals each, whatever the rate.
HISTORY_KEPT = 5_000


# ---------------------------------------------------------------- request / result / records


@dataclass(slots=True)
class TradeRequest:
    """The fields of `MqlTradeRequest` that a market deal or an order removal uses. `volume` in lots."""

    symbol: str
    type: OrderType
    volume: float
    action: int = TRADE_ACTION_DEAL
    price: float = 0.0  # required under Request/Instant execution, ignored under Market/Exchange
    deviation: int = 0  # points; applies under Request/Instant execution
    type_filling: Filling = "IOC"
    magic: int = 0
    comment: str = ""
    position: int = 0  # ticket of the position to close, 0 to open
    order: int = 0  # TRADE_ACTION_REMOVE: the active order to remove


@dataclass(slots=True)
class TradeResult:
    """`MqlTradeResult`: `deal` and `order` are 0 unless something executed or was placed."""

    retcode: int
    deal: int = 0
    order: int = 0
    volume: float = 0.0
    price: float = 0.0
    bid: float = 0.0
    ask: float = 0.0
    comment: str = ""
    request_id: int = 0
    retcode_external: int = 0

    @property
    def done(self) -> bool:
        """A deal executed (all or part of the volume)."""
        return self.retcode in RETCODES_DONE

    @property
    def accepted(self) -> bool:
        """Executed, or placed as an order that rests (10008): the protocol's `accepted`."""
        return self.retcode in RETCODES_ACCEPTED


@dataclass(slots=True)
class Position:
    """An open position of the hedging account (`POSITION_*`)."""

    ticket: int
    symbol: str
    type: OrderType
    volume: float
    price_open: float
    magic: int
    comment: str
    time_msc: int
    swap: float = 0.0  # POSITION_SWAP: accrued at the rollovers, not yet in the balance


@dataclass(slots=True)
class Order:
    """An order (`ORDER_*`): active while a remainder rests (`orders()`), then in the history.

    `volume_current` is the volume not filled (yet); `position` the position it closes (0 when
    it opens one).
    """

    ticket: int
    symbol: str
    type: OrderType
    volume_initial: float
    volume_current: float
    price: float
    type_filling: Filling
    state: OrderStatus
    magic: int
    comment: str
    position: int
    time_setup_msc: int
    time_done_msc: int = 0


@dataclass(slots=True)
class Deal:
    """One deal of the history (`DEAL_*`); `entry` is `in` (opens) or `out` (closes)."""

    ticket: int
    order: int
    position: int
    symbol: str
    side: OrderType
    entry: Literal["in", "out"]
    volume: float
    price: float
    commission: float
    profit: float
    time_msc: int
    magic: int
    comment: str
    swap: float = 0.0  # DEAL_SWAP: the closed volume's share of the position's swap


@dataclass(slots=True, frozen=True)
class AccountInfo:
    balance: float
    equity: float
    margin: float
    margin_free: float
    leverage: int
    currency: str


@dataclass(slots=True, frozen=True)
class SymbolSpec:
    """What the trade server knows of a symbol (`SYMBOL_*` properties)."""

    contract_size: float = 1.0
    point: float = 0.01
    volume_min: float = 0.01
    volume_step: float = 0.01
    volume_max: float = 100.0
    filling_modes: frozenset[str] = frozenset({"FOK", "IOC"})  # SYMBOL_FILLING_MODE flags
    execution: Execution = "market"  # SYMBOL_TRADE_EXEMODE
    swap: SwapTerms = NO_SWAP  # SYMBOL_SWAP_MODE, _LONG, _SHORT, _ROLLOVER3DAYS

    def allowed_fillings(self) -> frozenset[str]:
        """The filling modes a market order may use (MT5 Fill Policy by execution mode)."""
        if self.execution in ("request", "instant"):
            return frozenset({"FOK"})
        modes = self.filling_modes & {"FOK", "IOC"}
        return modes | {"RETURN"} if self.execution == "exchange" else modes


@dataclass(eq=False)
class BrokerBehaviour:
    """How the simulated broker executes; assign to the fields at any time.

    - `slippage_points`: each fill is `uniform(0, slippage_points)` points worse than the touch
      (integer points; 0 fills at the touch); `adverse_move_points` more: the market moves that
      far against every request between the terminal's quote and the server's execution.
    - `execution`: when set, overrides every symbol's `SymbolSpec.execution`.
    - `requote_prob`, `reject_prob`, `connection_prob`: chances that a request is answered
      10004, 10006 or 10031 without executing.
    - `partial_prob`: chance that only `uniform(partial_min_fraction, 1)` of the volume is
      available; `fill_fraction` < 1 makes exactly that fraction available on every request
      (0: nothing). IOC fills the available part (10010), FOK rejects (10006), RETURN fills it
      and leaves the rest as an active order (10010, or 10008 when nothing filled).
    - `resting_fill_after_ms`: a resting RETURN remainder fills that long after it was placed
      (None: it rests until removed with `TRADE_ACTION_REMOVE`).
    - `comments`: `keep` the order comment (truncated to 31 characters), `rewrite` it (the
      server's own text), or `drop` it, on orders, deals and positions.
    - `timeouts`: the next N requests are answered 10012 TIMEOUT; with `timeout_outcome`
      `executes` the request still executes `timeout_delay_ms` later (its order and deal appear
      then), with `lost` it never does.
    - `commission_per_lot`: charged per lot on every deal, in the account currency.
    """

    slippage_points: int = 0
    adverse_move_points: int = 0
    execution: Execution | None = None
    requote_prob: float = 0.0
    reject_prob: float = 0.0
    connection_prob: float = 0.0
    partial_prob: float = 0.0
    partial_min_fraction: float = 0.3
    fill_fraction: float = 1.0
    resting_fill_after_ms: int | None = None
    comments: Comments = "keep"
    timeouts: int = 0
    timeout_outcome: TimeoutOutcome = "executes"
    timeout_delay_ms: int = 300
    commission_per_lot: float = 0.0

    def __post_init__(self) -> None:
        for name in ("requote_prob", "reject_prob", "connection_prob", "partial_prob", "partial_min_fraction",
                     "fill_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {value!r}")
        if self.slippage_points < 0 or self.adverse_move_points < 0 or self.commission_per_lot < 0:
            raise ValueError("slippage_points, adverse_move_points and commission_per_lot must be >= 0")
        if self.timeouts < 0 or self.timeout_delay_ms < 0 or (self.resting_fill_after_ms or 0) < 0:
            raise ValueError("timeouts, timeout_delay_ms and resting_fill_after_ms must be >= 0")


def spec_from_instrument(inst: Instrument) -> SymbolSpec:
    """The symbol properties of an MT5 instrument of the configuration (lot = `qty_per_unit`)."""
    return SymbolSpec(
        contract_size=float(inst.qty_per_unit),
        point=float(inst.tick_size),
        volume_min=max(float(inst.min_qty), float(inst.lot_step)),
        volume_step=float(inst.lot_step),
    )


def mt5_specs(pairs: Iterable[Pair]) -> dict[str, SymbolSpec]:
    """Symbol properties for every MT5 instrument of `pairs` (to build a `SimBroker`)."""
    return {i.symbol: spec_from_instrument(i) for p in pairs for i in p.instruments if i.venue == "mt5"}


# ---------------------------------------------------------------- the broker


class SimBroker:
    """A simulated MT5 hedging account and its trade server.

    `specs` gives per-symbol properties (missing symbols use `default_spec`); a symbol is
    tradable when `touch` quotes it. `currency_digits` is how the account currency rounds
    (`ACCOUNT_CURRENCY_DIGITS`: 2 for USD, 8 for a BTC-denominated account). `state_file`, when
    given, is loaded if it exists (the account survives restarts) and rewritten after every
    change; requests still in flight after a TIMEOUT are not saved. `server_utc_offset_s` is the
    trade server's time zone (its midnight is the swap rollover; brokers run UTC+2 or +3).
    """

    def __init__(
        self,
        touch: Touch,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        balance: float = 100_000.0,
        leverage: int = 100,
        currency: str = "USD",
        currency_digits: int = 2,
        specs: Mapping[str, SymbolSpec] | None = None,
        default_spec: SymbolSpec | None = None,
        behaviour: BrokerBehaviour | None = None,
        state_file: str | Path | None = None,
        server_utc_offset_s: int = 0,
    ) -> None:
        if leverage <= 0:
            raise ValueError("leverage must be > 0")
        if not 0 <= currency_digits <= 12:
            raise ValueError("currency_digits must be within [0, 12]")
        self._touch = touch
        self._clock: Clock = clock if clock is not None else RealClock()
        self._rng = random.Random(seed)
        self.currency_digits = currency_digits
        self.balance = round(float(balance), currency_digits)
        self.leverage = leverage
        self.currency = currency
        self.specs: dict[str, SymbolSpec] = dict(specs or {})
        self.default_spec = default_spec if default_spec is not None else SymbolSpec()
        self.behaviour = behaviour if behaviour is not None else BrokerBehaviour()
        self.closed_markets: set[str] = set()  # symbols whose session is closed (10018)
        self.trade_disabled: set[str] = set()  # symbols with trading disabled (10017)
        self._positions: dict[int, Position] = {}
        self._orders: dict[int, Order] = {}  # active orders (a resting RETURN remainder)
        self._history_orders: deque[Order] = deque(maxlen=HISTORY_KEPT)
        self._deals: deque[Deal] = deque(maxlen=HISTORY_KEPT)
        self._in_flight: list[tuple[int, TradeRequest]] = []  # (due ms, request) after a TIMEOUT
        self._resting_due: dict[int, int] = {}  # active order ticket -> ms at which it fills
        self._next_order = 10_000_001
        self._next_deal = 50_000_001
        self._request_ids = itertools.count(1)
        self._settling = False
        self._server_offset_ms = int(server_utc_offset_s) * 1000
        self._swap_day: int | None = None  # the server day whose rollover was charged last
        self.requests = 0  # OrderSend calls
        self.request_log: deque[TradeRequest] = deque(maxlen=_REQUEST_LOG_MAX)  # what OrderSend was given
        self.state_file = Path(state_file) if state_file is not None else None
        self._save_buffer = bytearray()  # `save` encodes into it: one buffer reused, not ~1 MB of objects a call
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)

    # ------------------------------------------------------------ queries

    def spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol, self.default_spec)
        override = self.behaviour.execution
        return spec if override is None or override == spec.execution else replace(spec, execution=override)

    def touch(self, symbol: str) -> tuple[float, float] | None:
        return self._touch(symbol)

    def positions(self, magic: int | None = None) -> list[Position]:
        """Open positions in ticket order, only those with `magic` when given."""
        self._settle()
        return [p for _, p in sorted(self._positions.items()) if magic is None or p.magic == magic]

    def position(self, ticket: int) -> Position | None:
        self._settle()
        return self._positions.get(ticket)

    def orders(self) -> list[Order]:
        """Active orders in ticket order (`OrdersTotal`, `OrderGetTicket`)."""
        self._settle()
        return [o for _, o in sorted(self._orders.items())]

    def history_orders(self, from_ms: int | None = None) -> list[Order]:
        """Finished orders set up at or after `from_ms`, in time order (`HistorySelect`)."""
        self._settle()
        return [o for o in self._history_orders if from_ms is None or o.time_setup_msc >= from_ms]

    def history_deals(self, from_ms: int | None = None, to_ms: int | None = None) -> list[Deal]:
        """Deals with `from_ms <= time_msc <= to_ms` in time order (`HistorySelect`)."""
        self._settle()
        return [
            d for d in self._deals
            if (from_ms is None or d.time_msc >= from_ms) and (to_ms is None or d.time_msc <= to_ms)
        ]

    def deals_with_comment(self, comment: str) -> list[Deal]:
        """Deals whose `DEAL_COMMENT` equals `comment` as the server stores it (truncated)."""
        stored = comment[:COMMENT_MAX]
        return [d for d in self.history_deals() if d.comment == stored]

    def deals_of_order(self, order: int) -> list[Deal]:
        """The deals of one order (`DEAL_ORDER`)."""
        return [d for d in self.history_deals() if d.order == order]

    def floating_profit(self) -> float:
        total = 0.0
        for p in self._positions.values():
            quote = self._touch(p.symbol)
            if quote is None:
                continue
            close_price = quote[0] if p.type == "buy" else quote[1]
            total += self._profit(p.type, p.price_open, close_price, p.volume, self.spec(p.symbol))
        return total

    def margin(self) -> float:
        return sum(
            p.volume * self.spec(p.symbol).contract_size * p.price_open / self.leverage
            for p in self._positions.values()
        )

    def account(self) -> AccountInfo:
        self._settle()
        return self._account()

    # ------------------------------------------------------------ OrderSend

    def execute(self, request: TradeRequest) -> TradeResult:
        """Run one trade request as the trade server would and return its `MqlTradeResult`."""
        self._settle()
        self.requests += 1
        self.request_log.append(replace(request))
        request_id = next(self._request_ids)
        b = self.behaviour
        if b.connection_prob and self._rng.random() < b.connection_prob:
            return self._fail(request, request_id, TRADE_RETCODE_CONNECTION)
        if request.action == TRADE_ACTION_REMOVE:
            return self._remove(request, request_id)
        if b.timeouts > 0:
            # The request reached the server, but its answer never reached the terminal.
            b.timeouts -= 1
            if b.timeout_outcome == "executes":
                self._in_flight.append((self._clock.time_ms() + b.timeout_delay_ms, replace(request)))
            return self._fail(request, request_id, TRADE_RETCODE_TIMEOUT)
        return self._deal(request, request_id, self._clock.time_ms())

    # ------------------------------------------------------------ execution

    def _fail(self, request: TradeRequest, request_id: int, retcode: int, comment: str = "") -> TradeResult:
        quote = self._touch(request.symbol) if request.symbol else None
        bid, ask = quote if quote is not None else (0.0, 0.0)
        return TradeResult(retcode, bid=bid, ask=ask, comment=comment or RETCODE_TEXT.get(retcode, ""),
                           request_id=request_id)

    def _deal(self, request: TradeRequest, request_id: int, now: int) -> TradeResult:
        rng = self._rng
        b = self.behaviour
        quote = self._touch(request.symbol) if request.symbol else None
        bid, ask = quote if quote is not None else (0.0, 0.0)

        def fail(retcode: int, comment: str = "") -> TradeResult:
            return self._fail(request, request_id, retcode, comment)

        if request.action != TRADE_ACTION_DEAL:
            return fail(TRADE_RETCODE_INVALID, "only TRADE_ACTION_DEAL and TRADE_ACTION_REMOVE are simulated")
        if request.type not in ("buy", "sell") or not request.symbol:
            return fail(TRADE_RETCODE_INVALID)
        if request.symbol in self.trade_disabled:
            return fail(TRADE_RETCODE_TRADE_DISABLED)
        if request.symbol in self.closed_markets:
            return fail(TRADE_RETCODE_MARKET_CLOSED)
        if quote is None or not (bid > 0 and ask > 0):
            return fail(TRADE_RETCODE_PRICE_OFF)
        spec = self.spec(request.symbol)
        if request.type_filling not in spec.allowed_fillings():
            return fail(TRADE_RETCODE_INVALID_FILL)
        if not self._volume_ok(request.volume, spec):
            return fail(TRADE_RETCODE_INVALID_VOLUME)

        closing: Position | None = None
        if request.position:
            closing = self._positions.get(request.position)
            if closing is None:
                return fail(TRADE_RETCODE_POSITION_CLOSED)
            if closing.symbol != request.symbol or closing.type == request.type:
                return fail(TRADE_RETCODE_INVALID, "close must be the opposite type on the position's symbol")
            if request.volume > closing.volume + 1e-9:
                return fail(TRADE_RETCODE_INVALID_CLOSE_VOLUME)

        price = self._fill_price(request.type, bid, ask, spec)
        if b.requote_prob and rng.random() < b.requote_prob:
            return fail(TRADE_RETCODE_REQUOTE)
        if spec.execution in ("request", "instant"):
            # The price is the request's; the server requotes beyond the deviation.
            if not request.price > 0:
                return fail(TRADE_RETCODE_INVALID_PRICE)
            worse = price - request.price if request.type == "buy" else request.price - price
            if worse > request.deviation * spec.point + 1e-9:
                return fail(TRADE_RETCODE_REQUOTE)
        if b.reject_prob and rng.random() < b.reject_prob:
            return fail(TRADE_RETCODE_REJECT)

        volume = request.volume
        available = volume
        if b.fill_fraction < 1.0:
            available = _floor_to(volume * b.fill_fraction, spec.volume_step)
        elif b.partial_prob and rng.random() < b.partial_prob:
            available = max(_floor_to(volume * rng.uniform(b.partial_min_fraction, 1.0), spec.volume_step),
                            spec.volume_min)
        filled = min(available, volume)
        if filled < volume - 1e-9:
            if request.type_filling == "FOK":
                return fail(TRADE_RETCODE_REJECT, "FOK: the volume is not available")
            if request.type_filling == "IOC" and filled <= 1e-9:
                return fail(TRADE_RETCODE_REJECT, "IOC: no volume available")

        if closing is None and filled > 0:
            required = filled * spec.contract_size * price / self.leverage
            if required > self._account().margin_free:
                return fail(TRADE_RETCODE_NO_MONEY)

        # Execute: one order, and one deal for the part filled now.
        ticket = self._next_order
        self._next_order += 1
        rest = _round_to(volume - filled, spec.volume_step) if filled < volume - 1e-9 else 0.0
        resting = request.type_filling == "RETURN" and rest > 1e-9
        order = Order(ticket, request.symbol, request.type, volume, rest, request.price, request.type_filling,
                      "placed", request.magic, self._server_comment(request.comment, ticket), request.position, now)
        deal: Deal | None = None
        if filled > 1e-9:
            deal = self._book_deal(order, filled, price, now)
        if resting:
            order.state = "partial" if deal is not None else "placed"
            self._orders[ticket] = order
            if b.resting_fill_after_ms is not None:
                self._resting_due[ticket] = now + b.resting_fill_after_ms
        else:
            order.state = "filled" if rest <= 1e-9 else "partial"  # IOC: the rest is cancelled
            order.time_done_msc = now
            self._history_orders.append(order)
        self._persist()
        if deal is None:
            return TradeResult(TRADE_RETCODE_PLACED, order=ticket, bid=bid, ask=ask,
                               comment=RETCODE_TEXT[TRADE_RETCODE_PLACED], request_id=request_id)
        retcode = TRADE_RETCODE_DONE if rest <= 1e-9 else TRADE_RETCODE_DONE_PARTIAL
        return TradeResult(retcode, deal=deal.ticket, order=ticket, volume=filled, price=price, bid=bid, ask=ask,
                           comment=RETCODE_TEXT[retcode], request_id=request_id)

    def _remove(self, request: TradeRequest, request_id: int) -> TradeResult:
        """`TRADE_ACTION_REMOVE`: cancel the rest of an active order."""
        order = self._orders.pop(request.order, None)
        if order is None:
            return self._fail(request, request_id, TRADE_RETCODE_INVALID, "order not found")
        self._resting_due.pop(order.ticket, None)
        order.state = "canceled"
        order.time_done_msc = self._clock.time_ms()
        self._history_orders.append(order)
        self._persist()
        return TradeResult(TRADE_RETCODE_DONE, order=order.ticket, comment=RETCODE_TEXT[TRADE_RETCODE_DONE],
                           request_id=request_id)

    def _settle(self) -> None:
        """What the server did meanwhile: the daily rollovers charge swap, requests in flight after
        a TIMEOUT execute, resting remainders fill, each at its due time."""
        self._rollover()
        if self._settling or not (self._in_flight or self._resting_due):
            return
        self._settling = True
        try:
            now = self._clock.time_ms()
            due = sorted((t, r) for t, r in self._in_flight if t <= now) if self._in_flight else []
            self._in_flight = [(t, r) for t, r in self._in_flight if t > now]
            for at, request in due:
                self._deal(request, next(self._request_ids), at)
            for ticket, at in sorted(self._resting_due.items(), key=lambda kv: kv[1]):
                if at <= now:
                    del self._resting_due[ticket]
                    self._fill_resting(ticket, at)
        finally:
            self._settling = False

    def _rollover(self) -> None:
        """Charge each server midnight passed since the last one to the positions open across it.

        The first call only notes the day (a broker started mid-day charges its first rollover
        at the next midnight). At most a year of missed rollovers is charged at once.
        """
        today = (self._clock.time_ms() + self._server_offset_ms) // DAY_MS
        last = self._swap_day
        if last is not None and today <= last:
            return  # the same day, or a wall clock stepped back: that midnight is charged already
        self._swap_day = today
        if last is None:
            return
        changed = False
        for day in range(max(last, today - 366), today):
            midnight_ms = (day + 1) * DAY_MS - self._server_offset_ms
            weekday = weekday_of_day(day)
            for p in self._positions.values():
                if p.time_msc >= midnight_ms:
                    continue
                spec = self.spec(p.symbol)
                nights = spec.swap.nights(weekday)
                quote = self._touch(p.symbol)
                if not nights or quote is None:
                    continue
                buy = p.type == "buy"
                night = spec.swap.per_night(buy=buy, lots=p.volume, contract_size=spec.contract_size,
                                            point=spec.point, price_open=p.price_open,
                                            price_now=quote[0] if buy else quote[1])
                p.swap = round(p.swap + round(night * nights, self.currency_digits), self.currency_digits)
                changed = True
        if changed:
            self._persist()

    def _fill_resting(self, ticket: int, at: int) -> None:
        order = self._orders.get(ticket)
        quote = self._touch(order.symbol) if order is not None else None
        if order is None or quote is None:
            return
        spec = self.spec(order.symbol)
        volume = order.volume_current
        if order.position:
            pos = self._positions.get(order.position)
            volume = 0.0 if pos is None else min(volume, pos.volume)
        if volume > 1e-9:
            self._book_deal(order, volume, self._fill_price(order.type, *quote, spec), at)
        del self._orders[ticket]
        order.volume_current = 0.0
        order.state = "filled" if volume > 1e-9 else "canceled"
        order.time_done_msc = at
        self._history_orders.append(order)
        self._persist()

    def _book_deal(self, order: Order, volume: float, price: float, at: int) -> Deal:
        """One deal of `order`: opens a position (its ticket is the order's) or closes one."""
        spec = self.spec(order.symbol)
        digits = self.currency_digits
        deal_ticket = self._next_deal
        self._next_deal += 1
        commission = -round(self.behaviour.commission_per_lot * volume, digits)
        profit = 0.0
        swap = 0.0
        closing = self._positions.get(order.position) if order.position else None
        if closing is None:
            position_id = order.ticket
            existing = self._positions.get(position_id)
            if existing is None:
                self._positions[position_id] = Position(position_id, order.symbol, order.type, volume, price,
                                                        order.magic, order.comment, at)
            else:  # the resting remainder of an opening order adds to its position
                total = existing.volume + volume
                existing.price_open = _round_to((existing.price_open * existing.volume + price * volume) / total,
                                                spec.point)
                existing.volume = _round_to(total, spec.volume_step)
            entry: Literal["in", "out"] = "in"
        else:
            position_id = closing.ticket
            profit = round(self._profit(closing.type, closing.price_open, price, volume, spec), digits)
            remaining = _round_to(closing.volume - volume, spec.volume_step)
            if remaining <= 1e-9:
                swap = closing.swap
                del self._positions[closing.ticket]
            else:
                swap = round(closing.swap * volume / closing.volume, digits)
                closing.swap = round(closing.swap - swap, digits)
                closing.volume = remaining
            entry = "out"
        self.balance = round(self.balance + commission + profit + swap, digits)
        deal = Deal(deal_ticket, order.ticket, position_id, order.symbol, order.type, entry, volume, price,
                    commission, profit, at, order.magic, order.comment, swap)
        self._deals.append(deal)
        return deal

    def _fill_price(self, side: OrderType, bid: float, ask: float, spec: SymbolSpec) -> float:
        """The touch, made worse by the adverse move and slippage."""
        slippage = self.behaviour.slippage_points
        points = self.behaviour.adverse_move_points + (self._rng.randint(0, slippage) if slippage else 0)
        slip = points * spec.point
        price = ask + slip if side == "buy" else bid - slip
        return _round_to(price, spec.point)

    def _server_comment(self, comment: str, ticket: int) -> str:
        """The comment as the server keeps it: truncated, rewritten or dropped."""
        policy = self.behaviour.comments
        if policy == "drop" or not comment:
            return ""
        if policy == "rewrite":
            return f"[{ticket}]"
        return comment[:COMMENT_MAX]

    def _account(self) -> AccountInfo:
        digits = self.currency_digits
        equity = self.balance + self.floating_profit() + sum(p.swap for p in self._positions.values())
        margin = self.margin()
        return AccountInfo(
            balance=round(self.balance, digits),
            equity=round(equity, digits),
            margin=round(margin, digits),
            margin_free=round(equity - margin, digits),
            leverage=self.leverage,
            currency=self.currency,
        )

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _volume_ok(volume: float, spec: SymbolSpec) -> bool:
        if not math.isfinite(volume) or volume < spec.volume_min - 1e-9 or volume > spec.volume_max + 1e-9:
            return False
        steps = volume / spec.volume_step
        return abs(steps - round(steps)) < 1e-6

    @staticmethod
    def _profit(side: OrderType, price_open: float, price_close: float, volume: float, spec: SymbolSpec) -> float:
        direction = 1.0 if side == "buy" else -1.0
        return direction * (price_close - price_open) * volume * spec.contract_size

    # ------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """The account as JSON-able data (what `state_file` holds)."""
        state = self._state()
        for key in ("positions", "orders", "history_orders", "deals"):
            state[key] = [asdict(record) for record in state[key]]
        return state

    def _state(self) -> dict[str, Any]:
        """The account, its records as they are (dataclasses: what `save` encodes directly)."""
        positions, orders = self._positions, self._orders
        return {
            "version": _STATE_VERSION,
            "balance": self.balance,
            "leverage": self.leverage,
            "currency": self.currency,
            "currency_digits": self.currency_digits,
            "next_order": self._next_order,
            "next_deal": self._next_deal,
            "swap_day": self._swap_day,
            "positions": [positions[t] for t in sorted(positions)],  # by ticket
            "orders": [orders[t] for t in sorted(orders)],
            "history_orders": list(self._history_orders),
            "deals": list(self._deals),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the account with `state` (from `to_state`; version 1 files have no orders)."""
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise ValueError(f"unsupported broker state version {version!r}")
        self.balance = float(state["balance"])
        self.leverage = int(state["leverage"])
        self.currency = str(state["currency"])
        self.currency_digits = int(state.get("currency_digits", self.currency_digits))
        self._next_order = int(state["next_order"])
        self._next_deal = int(state["next_deal"])
        swap_day = state.get("swap_day")
        self._swap_day = int(swap_day) if swap_day is not None else None
        self._positions = {int(p["ticket"]): Position(**p) for p in _records(state["positions"])}
        self._orders = {int(o["ticket"]): Order(**o) for o in _records(state.get("orders", []))}
        self._history_orders = deque((Order(**o) for o in _records(state.get("history_orders", []))),
                                     maxlen=HISTORY_KEPT)
        self._deals = deque((Deal(**d) for d in _records(state["deals"])), maxlen=HISTORY_KEPT)
        self._resting_due.clear()
        self._in_flight.clear()

    def save(self, path: str | Path | None = None) -> None:
        """Write the account atomically to `path` (default: `state_file`).

        Called after every change (several times a second in the accelerated soak), so the JSON
        is encoded in C by msgspec straight from the records into one reused buffer and written
        with one call: `to_state()` and `json.dump` made ~2,000 dicts (~1 MB of short-lived
        objects) and thousands of small writes per call, churn that fragments the heap of the
        process the broker runs in (issue 19). The bytes decode to exactly `to_state()`.
        """
        target = Path(path) if path is not None else self.state_file
        if target is None:
            raise ValueError("no path to save the broker state to")
        data = self._encoded_state()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _encoded_state(self) -> bytes | bytearray:
        """`to_state()` as JSON bytes, encoded by msgspec unless only `json` writes it the same.

        msgspec writes a non-finite float as `null` (json: `NaN`, `Infinity`, which load back as
        themselves) and refuses a string with a lone surrogate (json escapes it): either falls
        back to `json`, so the file always loads back to `to_state()`. The only `null` expected
        otherwise is `swap_day` before the first rollover; a comment holding the text `null` is
        encoded as a string, so it costs a fallback, never a wrong file.
        """
        state = self._state()
        buffer = self._save_buffer
        try:
            _STATE_ENCODER.encode_into(state, buffer)
        except (UnicodeEncodeError, OverflowError):
            return json.dumps(self.to_state(), separators=(",", ":")).encode("utf-8")
        if buffer.count(b"null") != (self._swap_day is None):
            return json.dumps(self.to_state(), separators=(",", ":")).encode("utf-8")
        return buffer

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as fh:
            self.load_state(json.load(fh))

    def _persist(self) -> None:
        """After every change: the history trimmed to its horizon, then the file rewritten."""
        horizon = self._clock.time_ms() - HISTORY_KEPT_MS
        orders, deals = self._history_orders, self._deals
        while orders and orders[0].time_done_msc < horizon:
            orders.popleft()
        while deals and deals[0].time_msc < horizon:
            deals.popleft()
        if self.state_file is not None:
            self.save()


_STATE_ENCODER = msgspec.json.Encoder()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """All of `data` to `fd`: one `os.write` for a regular file, more only if it writes short."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


def _records(items: Iterable[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("broker state: a record is not an object")
        out.append(item)
    return out


def _round_to(value: float, step: float) -> float:
    if step <= 0:
        return value
    decimals = max(0, -math.floor(math.log10(step)) + 2)
    return round(round(value / step) * step, decimals)


def _floor_to(value: float, step: float) -> float:
    steps = math.floor(value / step + 1e-9)
    return _round_to(steps * step, step)


__all__ = [
    "COMMENT_MAX",
    "RETCODES_ACCEPTED",
    "RETCODES_DONE",
    "RETCODE_TEXT",
    "TRADE_ACTION_DEAL",
    "TRADE_ACTION_REMOVE",
    "TRADE_RETCODE_CONNECTION",
    "TRADE_RETCODE_DONE",
    "TRADE_RETCODE_DONE_PARTIAL",
    "TRADE_RETCODE_INVALID",
    "TRADE_RETCODE_INVALID_CLOSE_VOLUME",
    "TRADE_RETCODE_INVALID_FILL",
    "TRADE_RETCODE_INVALID_PRICE",
    "TRADE_RETCODE_INVALID_VOLUME",
    "TRADE_RETCODE_MARKET_CLOSED",
    "TRADE_RETCODE_NO_MONEY",
    "TRADE_RETCODE_PLACED",
    "TRADE_RETCODE_POSITION_CLOSED",
    "TRADE_RETCODE_PRICE_OFF",
    "TRADE_RETCODE_REJECT",
    "TRADE_RETCODE_REQUOTE",
    "TRADE_RETCODE_TIMEOUT",
    "TRADE_RETCODE_TOO_MANY_REQUESTS",
    "TRADE_RETCODE_TRADE_DISABLED",
    "AccountInfo",
    "BrokerBehaviour",
    "Comments",
    "Deal",
    "Execution",
    "Order",
    "Position",
    "SimBroker",
    "SymbolSpec",
    "TradeRequest",
    "TradeResult",
    "mt5_specs",
    "spec_from_instrument",
]
