"""A simulated MT5 terminal and broker account: the state that outlives an Expert Advisor restart.

`SimBroker` is what the EA simulator trades through: a hedging account with a balance,
positions and a deal history, and `execute(request)`, which behaves like `OrderSend` for
`TRADE_ACTION_DEAL` requests (MQL5 reference, `trading/ordersend` and the trade server return
codes). It is priced from a `touch(symbol) -> (bid, ask)` callable and, from a seeded RNG,
slips, requotes, rejects and partially fills as configured in `BrokerBehaviour`.

Modelled as on a real MT5 hedging account:

- every opening deal creates a position whose ticket is the ticket of the order that opened it;
- a close is a `TRADE_ACTION_DEAL` of the opposite type with `position=<ticket>`, for the whole
  volume or less (a partial close); closing realises the profit into the balance;
- the order comment is truncated to 31 characters and copied to the deal (`DEAL_COMMENT`), which
  is where the EA writes the command id so that it can find its own deals after a restart;
- a request that fails creates no order and no deal (`result.order == result.deal == 0`);
- commission is charged per lot on every deal (negative, as `DEAL_COMMISSION` reports it).

Simplifications: prices are in the account currency (USD-quoted symbols), margin is
`volume * contract_size * price / leverage`, the `RETURN` filling mode behaves like `IOC` on a
partial fill (the remainder is cancelled, not left as an order), and `FOK` never partially fills
(it rejects when the volume is not available).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from core.clock import Clock, RealClock
from core.instruments import Instrument, Pair

# ---------------------------------------------------------------- MQL5 constants

TRADE_ACTION_DEAL = 1  # ENUM_TRADE_REQUEST_ACTIONS: market order

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

# Success codes for a market deal (10008 PLACED does not happen for TRADE_ACTION_DEAL here).
RETCODES_DONE: frozenset[int] = frozenset({TRADE_RETCODE_DONE, TRADE_RETCODE_DONE_PARTIAL})

COMMENT_MAX = 31  # characters of an order comment the trade server keeps

OrderType = Literal["buy", "sell"]
Filling = Literal["FOK", "IOC", "RETURN"]
Execution = Literal["market", "instant"]
# (bid, ask) of a symbol now, None when it has no quote.
Touch = Callable[[str], tuple[float, float] | None]

_STATE_VERSION = 1


# ---------------------------------------------------------------- request / result / records


@dataclass(slots=True)
class TradeRequest:
    """The fields of `MqlTradeRequest` that a market deal uses. `volume` in lots."""

    symbol: str
    type: OrderType
    volume: float
    action: int = TRADE_ACTION_DEAL
    price: float = 0.0
    deviation: int = 0  # points; applies in instant execution
    type_filling: Filling = "IOC"
    magic: int = 0
    comment: str = ""
    position: int = 0  # ticket of the position to close, 0 to open


@dataclass(slots=True)
class TradeResult:
    """`MqlTradeResult`: `deal` and `order` are 0 unless something executed."""

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
        return self.retcode in RETCODES_DONE


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
    filling_modes: frozenset[str] = frozenset({"FOK", "IOC", "RETURN"})


@dataclass(eq=False)
class BrokerBehaviour:
    """How the simulated broker executes; assign to the fields at any time.

    - `slippage_points`: each fill is `uniform(0, slippage_points)` points worse than the touch
      (integer points; 0 fills at the touch).
    - `execution`: `market` ignores the request price; `instant` requotes (10004) when the fill
      price is more than `deviation` points worse than `request.price`.
    - `requote_prob`, `reject_prob`, `connection_prob`: chances that a request is answered
      10004, 10006 or 10031 without executing.
    - `partial_prob`: chance that only `uniform(partial_min_fraction, 1)` of the volume is
      available (IOC/RETURN fill that part, 10010; FOK rejects, 10006).
    - `commission_per_lot`: charged per lot on every deal, in the account currency.
    """

    slippage_points: int = 0
    execution: Execution = "market"
    requote_prob: float = 0.0
    reject_prob: float = 0.0
    connection_prob: float = 0.0
    partial_prob: float = 0.0
    partial_min_fraction: float = 0.3
    commission_per_lot: float = 0.0

    def __post_init__(self) -> None:
        for name in ("requote_prob", "reject_prob", "connection_prob", "partial_prob", "partial_min_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {value!r}")
        if self.slippage_points < 0 or self.commission_per_lot < 0:
            raise ValueError("slippage_points and commission_per_lot must be >= 0")


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
    tradable when `touch` quotes it. `state_file`, when given, is loaded if it exists (the
    account survives restarts) and rewritten after every change.
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
        specs: Mapping[str, SymbolSpec] | None = None,
        default_spec: SymbolSpec | None = None,
        behaviour: BrokerBehaviour | None = None,
        state_file: str | Path | None = None,
    ) -> None:
        if leverage <= 0:
            raise ValueError("leverage must be > 0")
        self._touch = touch
        self._clock: Clock = clock if clock is not None else RealClock()
        self._rng = random.Random(seed)
        self.balance = float(balance)
        self.leverage = leverage
        self.currency = currency
        self.specs: dict[str, SymbolSpec] = dict(specs or {})
        self.default_spec = default_spec if default_spec is not None else SymbolSpec()
        self.behaviour = behaviour if behaviour is not None else BrokerBehaviour()
        self.closed_markets: set[str] = set()  # symbols whose session is closed (10018)
        self.trade_disabled: set[str] = set()  # symbols with trading disabled (10017)
        self._positions: dict[int, Position] = {}
        self._deals: list[Deal] = []
        self._next_order = 10_000_001
        self._next_deal = 50_000_001
        self._request_ids = itertools.count(1)
        self.requests = 0  # OrderSend calls
        self.state_file = Path(state_file) if state_file is not None else None
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)

    # ------------------------------------------------------------ queries

    def spec(self, symbol: str) -> SymbolSpec:
        return self.specs.get(symbol, self.default_spec)

    def touch(self, symbol: str) -> tuple[float, float] | None:
        return self._touch(symbol)

    def positions(self, magic: int | None = None) -> list[Position]:
        """Open positions in ticket order, only those with `magic` when given."""
        return [p for _, p in sorted(self._positions.items()) if magic is None or p.magic == magic]

    def position(self, ticket: int) -> Position | None:
        return self._positions.get(ticket)

    def history_deals(self, from_ms: int | None = None, to_ms: int | None = None) -> list[Deal]:
        """Deals with `from_ms <= time_msc <= to_ms` in time order (`HistorySelect`)."""
        return [
            d for d in self._deals
            if (from_ms is None or d.time_msc >= from_ms) and (to_ms is None or d.time_msc <= to_ms)
        ]

    def deals_with_comment(self, comment: str) -> list[Deal]:
        """Deals whose `DEAL_COMMENT` equals `comment` as the server stores it (truncated)."""
        stored = comment[:COMMENT_MAX]
        return [d for d in self._deals if d.comment == stored]

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
        equity = self.balance + self.floating_profit()
        margin = self.margin()
        return AccountInfo(
            balance=round(self.balance, 2),
            equity=round(equity, 2),
            margin=round(margin, 2),
            margin_free=round(equity - margin, 2),
            leverage=self.leverage,
            currency=self.currency,
        )

    # ------------------------------------------------------------ OrderSend

    def execute(self, request: TradeRequest) -> TradeResult:
        """Run one trade request as the trade server would and return its `MqlTradeResult`."""
        self.requests += 1
        request_id = next(self._request_ids)
        rng = self._rng
        b = self.behaviour
        quote = self._touch(request.symbol) if request.symbol else None
        bid, ask = quote if quote is not None else (0.0, 0.0)

        def fail(retcode: int, comment: str = "") -> TradeResult:
            return TradeResult(retcode, bid=bid, ask=ask, comment=comment or RETCODE_TEXT.get(retcode, ""),
                               request_id=request_id)

        if request.action != TRADE_ACTION_DEAL:
            return fail(TRADE_RETCODE_INVALID, "only TRADE_ACTION_DEAL is simulated")
        if request.type not in ("buy", "sell") or not request.symbol:
            return fail(TRADE_RETCODE_INVALID)
        if b.connection_prob and rng.random() < b.connection_prob:
            return fail(TRADE_RETCODE_CONNECTION)
        if request.symbol in self.trade_disabled:
            return fail(TRADE_RETCODE_TRADE_DISABLED)
        if request.symbol in self.closed_markets:
            return fail(TRADE_RETCODE_MARKET_CLOSED)
        if quote is None or not (bid > 0 and ask > 0):
            return fail(TRADE_RETCODE_PRICE_OFF)
        spec = self.spec(request.symbol)
        if request.type_filling not in spec.filling_modes:
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

        # Price: the touch, made worse by slippage.
        slip = rng.randint(0, b.slippage_points) * spec.point if b.slippage_points else 0.0
        touch_price = ask if request.type == "buy" else bid
        price = touch_price + slip if request.type == "buy" else touch_price - slip
        price = _round_to(price, spec.point)
        if b.requote_prob and rng.random() < b.requote_prob:
            return fail(TRADE_RETCODE_REQUOTE)
        if b.execution == "instant" and request.price > 0:
            worse = price - request.price if request.type == "buy" else request.price - price
            if worse > request.deviation * spec.point + 1e-9:
                return fail(TRADE_RETCODE_REQUOTE)
        if b.reject_prob and rng.random() < b.reject_prob:
            return fail(TRADE_RETCODE_REJECT)

        volume = request.volume
        if b.partial_prob and rng.random() < b.partial_prob:
            available = _floor_to(volume * rng.uniform(b.partial_min_fraction, 1.0), spec.volume_step)
            available = max(available, spec.volume_min)
            if available < volume - 1e-9:
                if request.type_filling == "FOK":
                    return fail(TRADE_RETCODE_REJECT, "FOK: the volume is not available")
                volume = available

        if closing is None:
            required = volume * spec.contract_size * price / self.leverage
            if required > self.account().margin_free:
                return fail(TRADE_RETCODE_NO_MONEY)

        # Execute: one order, one deal.
        now = self._clock.time_ms()
        order = self._next_order
        self._next_order += 1
        deal_ticket = self._next_deal
        self._next_deal += 1
        comment = request.comment[:COMMENT_MAX]
        commission = -round(b.commission_per_lot * volume, 2)
        profit = 0.0
        if closing is None:
            position_id = order
            self._positions[order] = Position(order, request.symbol, request.type, volume, price, request.magic,
                                              comment, now)
            entry: Literal["in", "out"] = "in"
        else:
            position_id = closing.ticket
            profit = round(self._profit(closing.type, closing.price_open, price, volume, spec), 2)
            remaining = _round_to(closing.volume - volume, spec.volume_step)
            if remaining <= 1e-9:
                del self._positions[closing.ticket]
            else:
                closing.volume = remaining
            entry = "out"
        self.balance = round(self.balance + commission + profit, 2)
        self._deals.append(Deal(deal_ticket, order, position_id, request.symbol, request.type, entry, volume, price,
                                commission, profit, now, request.magic, comment))
        self._persist()
        retcode = TRADE_RETCODE_DONE if volume >= request.volume - 1e-9 else TRADE_RETCODE_DONE_PARTIAL
        return TradeResult(retcode, deal=deal_ticket, order=order, volume=volume, price=price, bid=bid, ask=ask,
                           comment=RETCODE_TEXT[retcode], request_id=request_id)

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
        return {
            "version": _STATE_VERSION,
            "balance": self.balance,
            "leverage": self.leverage,
            "currency": self.currency,
            "next_order": self._next_order,
            "next_deal": self._next_deal,
            "positions": [asdict(p) for p in self.positions()],
            "deals": [asdict(d) for d in self._deals],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the account with `state` (from `to_state`)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported broker state version {state.get('version')!r}")
        self.balance = float(state["balance"])
        self.leverage = int(state["leverage"])
        self.currency = str(state["currency"])
        self._next_order = int(state["next_order"])
        self._next_deal = int(state["next_deal"])
        self._positions = {int(p["ticket"]): Position(**p) for p in _records(state["positions"])}
        self._deals = [Deal(**d) for d in _records(state["deals"])]

    def save(self, path: str | Path | None = None) -> None:
        """Write the account atomically to `path` (default: `state_file`)."""
        target = Path(path) if path is not None else self.state_file
        if target is None:
            raise ValueError("no path to save the broker state to")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_state(), fh, separators=(",", ":"))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as fh:
            self.load_state(json.load(fh))

    def _persist(self) -> None:
        if self.state_file is not None:
            self.save()


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
    "RETCODES_DONE",
    "RETCODE_TEXT",
    "TRADE_ACTION_DEAL",
    "TRADE_RETCODE_CONNECTION",
    "TRADE_RETCODE_DONE",
    "TRADE_RETCODE_DONE_PARTIAL",
    "TRADE_RETCODE_INVALID",
    "TRADE_RETCODE_INVALID_CLOSE_VOLUME",
    "TRADE_RETCODE_INVALID_FILL",
    "TRADE_RETCODE_INVALID_VOLUME",
    "TRADE_RETCODE_MARKET_CLOSED",
    "TRADE_RETCODE_NO_MONEY",
    "TRADE_RETCODE_POSITION_CLOSED",
    "TRADE_RETCODE_PRICE_OFF",
    "TRADE_RETCODE_REJECT",
    "TRADE_RETCODE_REQUOTE",
    "TRADE_RETCODE_TIMEOUT",
    "TRADE_RETCODE_TOO_MANY_REQUESTS",
    "TRADE_RETCODE_TRADE_DISABLED",
    "AccountInfo",
    "BrokerBehaviour",
    "Deal",
    "Position",
    "SimBroker",
    "SymbolSpec",
    "TradeRequest",
    "TradeResult",
    "mt5_specs",
    "spec_from_instrument",
]
