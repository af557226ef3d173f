"""The matching engine and the account behind the simulated Binance spot or USD-M API.

Written from Binance's documentation, never from our client: it validates an order the way
the venue does (mandatory parameters, enums, the client order id's legal range, the symbol's
PRICE_FILTER / LOT_SIZE / NOTIONAL (spot) or MIN_NOTIONAL (USD-M) filters, balance or
margin), matches it against the synthetic top of book, and keeps orders, trades, balances
and (USD-M) positions. Every refusal is an `ApiError` carrying the venue's HTTP status, code
and message; the REST and WebSocket layers only render it.

Matching: a marketable LIMIT (or MARKET) order takes the touch up to the size shown there,
less what earlier orders already took since the last book update; what is left of an IOC
(or MARKET) order expires (`EXPIRED`, also when nothing filled), a FOK that cannot fill
whole expires unfilled, a GTC rests and fills at its own price (maker) when a later book
crosses it. The spot account charges commission in the asset received, USD-M in the margin
asset; USD-M positions are one-way (`positionSide` BOTH) with realized PnL on reductions.

Client order ids are unique among *open* orders only (the docs: "A unique id among open
orders"): a terminal order's id may be used again, and a new order then gets it; a query by
client order id answers the latest order carrying it. Time is the injected clock's.

History is bounded, as the demo runs this venue inside the engine's process for weeks: a final
order and a trade are kept `HISTORY_KEPT_MS` (eight minutes), at most `HISTORY_KEPT` of each;
an older order is no longer found (-2013) and an older trade no longer listed. The engine asks
about an order within seconds of sending it, and every fill it saw is in its ledger. Open
orders are kept whatever their age.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from core.clock import Clock
from sim.binance_server import BinanceMarket

Params = Mapping[str, str]
EventListener = Callable[[dict[str, Any]], None]

# The legal client order id ranges as the docs give them (the spot one is the FIX/REST range).
CLIENT_ID_RE: dict[BinanceMarket, re.Pattern[str]] = {
    "spot": re.compile(r"^[a-zA-Z0-9-_]{1,36}$"),
    "usdm": re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$"),
}
_CLIENT_ID_RANGE: dict[BinanceMarket, str] = {
    "spot": "^[a-zA-Z0-9-_]{1,36}$",
    "usdm": "^[\\.A-Z\\:/a-z0-9_-]{1,36}$",
}
_SYMBOL_RE = re.compile(r"^[A-Z0-9-_.]{1,20}$")
_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")
_OPEN = ("NEW", "PARTIALLY_FILLED")
_LISTEN_KEY_TTL_MS = 60 * 60 * 1000
HISTORY_KEPT_MS = 8 * 60_000  # final orders and trades are kept this long
HISTORY_KEPT = 5_000  # and at most this many of each


class ApiError(Exception):
    """A refusal as the venue renders it: HTTP status, error code, message."""

    def __init__(self, http_status: int, code: int, msg: str) -> None:
        super().__init__(f"{http_status} {code} {msg}")
        self.http_status = http_status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def mandatory(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


@dataclass(frozen=True, slots=True)
class SimSymbol:
    """One listed symbol and its filters (venue units)."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal = Decimal("9000")
    min_price: Decimal | None = None
    max_price: Decimal = Decimal("4529764")

    @property
    def lowest_price(self) -> Decimal:
        return self.tick_size if self.min_price is None else self.min_price


def _sym(symbol: str, base: str, tick: str, step: str, min_qty: str, notional: str) -> SimSymbol:
    return SimSymbol(symbol, base, "USDT", Decimal(tick), Decimal(step), Decimal(min_qty), Decimal(notional))


# Filters close to the real ones (July 2026); tests may list their own.
DEFAULT_SYMBOLS: dict[BinanceMarket, tuple[SimSymbol, ...]] = {
    "spot": (
        _sym("BTCUSDT", "BTC", "0.01", "0.00001", "0.00001", "5"),
        _sym("ETHUSDT", "ETH", "0.01", "0.0001", "0.0001", "5"),
        _sym("PAXGUSDT", "PAXG", "0.01", "0.0001", "0.0001", "5"),
    ),
    "usdm": (
        _sym("BTCUSDT", "BTC", "0.1", "0.001", "0.001", "100"),
        _sym("ETHUSDT", "ETH", "0.01", "0.001", "0.001", "20"),
        _sym("PAXGUSDT", "PAXG", "0.01", "0.001", "0.001", "5"),
    ),
}

RATE_LIMITS: dict[BinanceMarket, list[dict[str, Any]]] = {
    "spot": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ],
    "usdm": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ],
}


@dataclass(slots=True)
class Touch:
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    taken_bid: Decimal = Decimal(0)  # taken by our orders since this book arrived
    taken_ask: Decimal = Decimal(0)


@dataclass(slots=True)
class SimTrade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    maker: bool
    realized_pnl: Decimal = Decimal(0)


@dataclass(slots=True)
class SimOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_ms: int = 0
    reduce_only: bool = False
    locked: Decimal = Decimal(0)  # spot: funds held for a resting order
    trades: list[SimTrade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass(slots=True)
class Position:
    amount: Decimal = Decimal(0)  # signed, in base units
    entry_price: Decimal = Decimal(0)
    update_ms: int = 0


def parse_decimal(params: Params, name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not _DECIMAL_RE.fullmatch(raw):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                   "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise mandatory(name) from None


def decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def fmt8(value: Decimal) -> str:
    """Spot's fixed eight decimals ("0.10000000")."""
    return f"{value.quantize(Decimal('0.00000001'), ROUND_DOWN):f}"


def fmt_at(value: Decimal, places: int) -> str:
    """USD-M's own precision per symbol ("7819.01", "0.002")."""
    return f"{value.quantize(Decimal(1).scaleb(-places), ROUND_DOWN):f}"


class BinanceExchange:
    """Orders, trades, balances and positions of the one simulated account."""

    def __init__(
        self,
        market: BinanceMarket,
        clock: Clock,
        *,
        symbols: Iterable[SimSymbol] | None = None,
        balances: Mapping[str, Decimal | str] | None = None,
        taker_rate: Decimal | None = None,
        maker_rate: Decimal | None = None,
        leverage: int = 20,
    ) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', not {market!r}")
        self.market: BinanceMarket = market
        self.clock = clock
        self.symbols: dict[str, SimSymbol] = {s.symbol: s for s in (symbols or DEFAULT_SYMBOLS[market])}
        default_balances: dict[str, Decimal | str] = (
            {"USDT": "100000", "BTC": "2", "ETH": "40", "PAXG": "20"} if market == "spot" else {"USDT": "100000"}
        )
        self.free: dict[str, Decimal] = {a: Decimal(v) for a, v in (balances or default_balances).items()}
        self.locked: dict[str, Decimal] = {}
        spot = market == "spot"
        self.taker_rate = taker_rate if taker_rate is not None else Decimal("0.001" if spot else "0.0005")
        self.maker_rate = maker_rate if maker_rate is not None else Decimal("0.001" if spot else "0.0002")
        self.leverage = leverage
        self.positions: dict[str, Position] = {}
        self.books: dict[str, Touch] = {}
        self.orders: dict[int, SimOrder] = {}
        self.by_client: dict[str, SimOrder] = {}  # the latest order with each client order id
        self.trades: list[SimTrade] = []
        # From the clock, as a venue's ids never repeat (a simulator started again must not
        # hand out a trade id the ledger already has).
        start = clock.time_ms() * 1000
        self._order_ids = itertools.count((28_000_000 if spot else 8_389_765_000) + start)
        self._trade_ids = itertools.count((56_000 if spot else 698_759_000) + start)
        self._cancel_ids = itertools.count(1)
        self._listeners: dict[int, EventListener] = {}
        self._listener_ids = itertools.count(1)
        self.listen_keys: dict[str, int] = {}  # USD-M listenKey -> valid until (ms)
        self.events_emitted = 0
        self._resting: dict[str, dict[int, SimOrder]] = {}  # symbol -> orders that were open when placed

    # ------------------------------------------------------------------ market

    def set_book(self, symbol: str, bid: Decimal, ask: Decimal, bid_size: Decimal, ask_size: Decimal) -> None:
        """A new top of book: what it shows is available again; resting orders it crosses fill."""
        if symbol not in self.symbols:
            return
        self.books[symbol] = Touch(bid, ask, bid_size, ask_size)
        resting = self._resting.get(symbol)
        if not resting:
            return
        for order in list(resting.values()):
            if order.is_open:
                self._fill_resting(order)
            if not order.is_open:
                resting.pop(order.order_id, None)

    def mid(self, symbol: str) -> Decimal | None:
        book = self.books.get(symbol)
        return None if book is None else (book.bid + book.ask) / 2

    # ------------------------------------------------------------------ user data listeners

    def add_listener(self, listener: EventListener) -> int:
        token = next(self._listener_ids)
        self._listeners[token] = listener
        return token

    def remove_listener(self, token: int) -> None:
        self._listeners.pop(token, None)

    def _emit(self, event: dict[str, Any]) -> None:
        self.events_emitted += 1
        for listener in list(self._listeners.values()):
            listener(event)

    # ------------------------------------------------------------------ orders

    def symbol_of(self, params: Params) -> SimSymbol:
        raw = params.get("symbol")
        if not raw:
            raise mandatory("symbol")
        if not _SYMBOL_RE.fullmatch(raw):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbol'; legal range is "
                                       "'^[A-Z0-9-_.]{1,20}$'.")
        spec = self.symbols.get(raw)
        if spec is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return spec

    def new_order(self, params: Params) -> dict[str, Any]:
        """Validate, accept and match one order; the response the venue would send."""
        spec = self.symbol_of(params)
        side = params.get("side")
        if not side:
            raise mandatory("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        kind = params.get("type")
        if not kind:
            raise mandatory("type")
        if kind not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise ApiError(400, -1116, "Invalid orderType.")
        if kind == "LIMIT_MAKER" and self.market == "usdm":
            raise ApiError(400, -1116, "Invalid orderType.")
        tif = params.get("timeInForce", "")
        if kind == "LIMIT":
            if not tif:
                raise mandatory("timeInForce")
            allowed = ("GTC", "IOC", "FOK") if self.market == "spot" else ("GTC", "IOC", "FOK", "GTX")
            if tif not in allowed:
                raise ApiError(400, -1115, "Invalid timeInForce.")
        elif tif:
            raise ApiError(400, -1106, "Parameter 'timeInForce' sent when not required.")
        qty = parse_decimal(params, "quantity")
        assert qty is not None
        price = parse_decimal(params, "price", required=kind != "MARKET")
        if kind == "MARKET" and price is not None:
            raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
        resp_type = params.get("newOrderRespType") or ("FULL" if self.market == "spot" else "ACK")
        allowed_resp = ("ACK", "RESULT", "FULL") if self.market == "spot" else ("ACK", "RESULT")
        if resp_type not in allowed_resp:
            raise ApiError(400, -1177 if self.market == "spot" else -1100, "Invalid newOrderRespType.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        if reduce_only and self.market == "spot":
            raise ApiError(400, -1104, "Not all sent parameters were read; read 1 parameter(s) but was sent more.")
        client_id = params.get("newClientOrderId") or self._generated_client_id()
        if not CLIENT_ID_RE[self.market].fullmatch(client_id):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                       f"'{_CLIENT_ID_RANGE[self.market]}'.")
        self._check_filters(spec, qty, price, reduce_only=reduce_only)
        existing = self.by_client.get(client_id)
        if existing is not None and existing.is_open:
            if self.market == "spot":
                raise ApiError(400, -2010, "Duplicate order sent.")
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        book = self.books.get(spec.symbol)
        if kind == "MARKET" and book is None:
            raise ApiError(400, -2010 if self.market == "spot" else -4131,
                           "Market is closed." if self.market == "spot"
                           else "The counterparty's best price does not meet the PERCENT_PRICE filter limit.")
        if kind == "LIMIT_MAKER" or tif == "GTX":
            crosses = book is not None and price is not None and (
                (side == "BUY" and price >= book.ask) or (side == "SELL" and price <= book.bid))
            if crosses:
                if self.market == "spot":
                    raise ApiError(400, -2010, "Order would immediately match and take.")
                raise ApiError(400, -5022, "Due to the order could not be executed as maker, the Post Only order "
                                           "will be rejected.")
        if price is not None:
            limit = price
        else:  # MARKET: priced at the touch (the book exists, checked above)
            assert book is not None
            limit = book.ask if side == "BUY" else book.bid
        self._check_funds(spec, side, qty, limit, reduce_only)
        now = self.clock.time_ms()
        order = SimOrder(
            order_id=next(self._order_ids),
            client_order_id=client_id,
            symbol=spec.symbol,
            side=side,
            type=kind,
            time_in_force=tif if kind == "LIMIT" else ("GTC" if kind == "LIMIT_MAKER" else ""),
            price=price if price is not None else Decimal(0),
            orig_qty=qty,
            time_ms=now,
            update_ms=now,
            reduce_only=reduce_only,
        )
        self._forget_history(now)
        self.orders[order.order_id] = order
        self.by_client[client_id] = order
        ack = self.order_json(order, for_query=False)  # the state at acceptance (ACK/RESULT base)
        self._order_event(order, "NEW", None)
        self._take(order, spec, limit, fok=tif == "FOK")
        if order.is_open:
            if kind == "MARKET" or tif in ("IOC", "FOK"):
                self._finish(order, "EXPIRED")
            else:
                self._lock(order, spec)
                # Resting: the next book may cross it (set_book looks only at these).
                self._resting.setdefault(order.symbol, {})[order.order_id] = order
        if resp_type == "ACK":
            if self.market == "spot":
                return {k: ack[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")}
            return ack
        body = self.order_json(order, for_query=False)
        if resp_type == "FULL":
            body["fills"] = [
                {"price": fmt8(t.price), "qty": fmt8(t.qty), "commission": fmt8(t.commission),
                 "commissionAsset": t.commission_asset, "tradeId": t.trade_id}
                for t in order.trades
            ]
        return body

    def find_order(self, params: Params) -> SimOrder:
        spec = self.symbol_of(params)
        raw_id = params.get("orderId")
        client = params.get("origClientOrderId")
        if not raw_id and not client:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        order: SimOrder | None = None
        if raw_id:
            if not (raw_id.isascii() and raw_id.isdigit()):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'orderId'; legal range is "
                                           "'^[0-9]{1,20}$'.")
            order = self.orders.get(int(raw_id))
        else:
            order = self.by_client.get(client or "")
        if order is None or order.symbol != spec.symbol or (client and raw_id and order.client_order_id != client):
            raise ApiError(400, -2013, "Order does not exist.")
        return order

    def query_order(self, params: Params) -> dict[str, Any]:
        return self.order_json(self.find_order(params), for_query=True)

    def cancel_order(self, params: Params) -> dict[str, Any]:
        try:
            order = self.find_order(params)
        except ApiError as exc:
            if exc.code == -2013:
                raise ApiError(400, -2011, "Unknown order sent.") from None
            raise
        if not order.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        self._unlock(order)
        self._finish(order, "CANCELED")
        body = self.order_json(order, for_query=False)
        if self.market == "spot":
            body["origClientOrderId"] = order.client_order_id
            body["clientOrderId"] = f"sim{next(self._cancel_ids)}"
            body.pop("workingTime", None)
        return body

    def open_orders(self, params: Params) -> list[dict[str, Any]]:
        symbol = self.symbol_of(params).symbol if params.get("symbol") else None
        return [self.order_json(o, for_query=True) for o in sorted(self._open(), key=lambda o: o.order_id)
                if symbol is None or o.symbol == symbol]

    def trade_list(self, params: Params) -> list[dict[str, Any]]:
        """myTrades (spot) / userTrades (USD-M): a symbol's trades, oldest first."""
        spec = self.symbol_of(params)
        order_id = params.get("orderId")
        start = params.get("startTime")
        end = params.get("endTime")
        from_id = params.get("fromId")
        limit_raw = params.get("limit") or "500"
        if not (limit_raw.isascii() and limit_raw.isdigit()) or not 1 <= int(limit_raw) <= 1000:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.")
        limit = int(limit_raw)
        out: list[dict[str, Any]] = []
        for t in self.trades:
            if t.symbol != spec.symbol:
                continue
            if order_id and str(t.order_id) != order_id:
                continue
            if start and (start.isascii() and start.isdigit()) and t.time_ms < int(start):
                continue
            if end and (end.isascii() and end.isdigit()) and t.time_ms > int(end):
                continue
            if from_id and (from_id.isascii() and from_id.isdigit()) and t.trade_id < int(from_id):
                continue
            out.append(self._trade_json(t))
            if len(out) >= limit:
                break  # the rest would be built only to be dropped: ~1 MB a call with a busy history
        return out

    # ------------------------------------------------------------------ account

    def spot_account(self, params: Params) -> dict[str, Any]:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        assets = sorted(set(self.free) | set(self.locked))
        balances = [{"asset": a, "free": fmt8(self.free.get(a, Decimal(0))),
                     "locked": fmt8(self.locked.get(a, Decimal(0)))} for a in assets]
        if omit_zero:
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        bps = int(self.taker_rate * 10_000)
        return {
            "makerCommission": int(self.maker_rate * 10_000), "takerCommission": bps,
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": fmt8(self.maker_rate), "taker": fmt8(self.taker_rate),
                                "buyer": fmt8(Decimal(0)), "seller": fmt8(Decimal(0))},
            "canTrade": True, "canWithdraw": False, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.clock.time_ms(), "accountType": "SPOT", "balances": balances,
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def spot_commission(self, params: Params) -> dict[str, Any]:
        spec = self.symbol_of(params)
        rates = {"maker": fmt8(self.maker_rate), "taker": fmt8(self.taker_rate),
                 "buyer": fmt8(Decimal(0)), "seller": fmt8(Decimal(0))}
        zero = dict.fromkeys(("maker", "taker", "buyer", "seller"), fmt8(Decimal(0)))
        return {"symbol": spec.symbol, "standardCommission": rates, "specialCommission": zero,
                "taxCommission": zero, "discount": {"enabledForAccount": False, "enabledForSymbol": False,
                                                    "discountAsset": "BNB", "discount": "0.75000000"}}

    def futures_commission(self, params: Params) -> dict[str, Any]:
        spec = self.symbol_of(params)
        return {"symbol": spec.symbol, "makerCommissionRate": f"{self.maker_rate:f}",
                "takerCommissionRate": f"{self.taker_rate:f}"}

    def _position_margin(self) -> tuple[Decimal, Decimal]:
        """(initial margin of positions, unrealized PnL) at the mid prices."""
        margin = Decimal(0)
        upnl = Decimal(0)
        for symbol, pos in self.positions.items():
            if not pos.amount:
                continue
            mark = self.mid(symbol) or pos.entry_price
            margin += abs(pos.amount) * mark / self.leverage
            upnl += (mark - pos.entry_price) * pos.amount
        return margin, upnl

    def _open_order_margin(self) -> Decimal:
        return sum((o.remaining * o.price / self.leverage for o in self._open()), Decimal(0))

    def _forget_history(self, now_ms: int) -> None:
        """Drop the final orders and the trades past `HISTORY_KEPT_MS` or beyond `HISTORY_KEPT`
        (oldest first; open orders stay)."""
        horizon = now_ms - HISTORY_KEPT_MS
        excess = len(self.orders) + 1 - HISTORY_KEPT  # room for the one coming
        gone: list[SimOrder] = []
        for order in self.orders.values():  # oldest first (by order id)
            if order.is_open:
                continue
            if order.update_ms >= horizon and len(gone) >= excess:
                break
            gone.append(order)
        for order in gone:
            del self.orders[order.order_id]
            if self.by_client.get(order.client_order_id) is order:
                del self.by_client[order.client_order_id]
        trades = self.trades
        cut = max(0, len(trades) + 1 - HISTORY_KEPT)
        while cut < len(trades) and trades[cut].time_ms < horizon:
            cut += 1
        if cut:
            del trades[:cut]

    def _open(self) -> list[SimOrder]:
        """Every open order: only orders that rested can be (an IOC/FOK/MARKET ends at once)."""
        return [o for orders in self._resting.values() for o in orders.values() if o.is_open]

    def futures_available(self) -> Decimal:
        margin, upnl = self._position_margin()
        return self.free.get("USDT", Decimal(0)) + upnl - margin - self._open_order_margin()

    def futures_account(self, params: Params) -> dict[str, Any]:
        wallet = self.free.get("USDT", Decimal(0))
        margin, upnl = self._position_margin()
        orders = self._open_order_margin()
        available = wallet + upnl - margin - orders
        f = fmt8
        now = self.clock.time_ms()
        return {
            "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True, "canWithdraw": False,
            "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
            "totalInitialMargin": f(margin + orders), "totalMaintMargin": f(margin / 10),
            "totalWalletBalance": f(wallet), "totalUnrealizedProfit": f(upnl), "totalMarginBalance": f(wallet + upnl),
            "totalPositionInitialMargin": f(margin), "totalOpenOrderInitialMargin": f(orders),
            "totalCrossWalletBalance": f(wallet), "totalCrossUnPnl": f(upnl), "availableBalance": f(available),
            "maxWithdrawAmount": f(max(available, Decimal(0))),
            "assets": [{
                "asset": "USDT", "walletBalance": f(wallet), "unrealizedProfit": f(upnl),
                "marginBalance": f(wallet + upnl), "maintMargin": f(margin / 10), "initialMargin": f(margin + orders),
                "positionInitialMargin": f(margin), "openOrderInitialMargin": f(orders),
                "crossWalletBalance": f(wallet), "crossUnPnl": f(upnl), "availableBalance": f(available),
                "maxWithdrawAmount": f(max(available, Decimal(0))), "marginAvailable": True, "updateTime": now,
            }],
            "positions": [self._account_position(s) for s in self.symbols],
        }

    def futures_balance(self, params: Params) -> list[dict[str, Any]]:
        wallet = self.free.get("USDT", Decimal(0))
        _, upnl = self._position_margin()
        available = self.futures_available()
        return [{"accountAlias": "SgsR", "asset": "USDT", "balance": fmt8(wallet), "crossWalletBalance": fmt8(wallet),
                 "crossUnPnl": fmt8(upnl), "availableBalance": fmt8(available),
                 "maxWithdrawAmount": fmt8(max(available, Decimal(0))), "marginAvailable": True,
                 "updateTime": self.clock.time_ms()}]

    def position_risk(self, params: Params) -> list[dict[str, Any]]:
        symbols = [self.symbol_of(params).symbol] if params.get("symbol") else list(self.symbols)
        out = []
        for symbol in symbols:
            pos = self.positions.get(symbol, Position())
            mark = self.mid(symbol) or pos.entry_price
            spec = self.symbols[symbol]
            out.append({
                "symbol": symbol, "positionAmt": fmt_at(pos.amount, decimals(spec.step_size)) if pos.amount >= 0
                else "-" + fmt_at(-pos.amount, decimals(spec.step_size)),
                "entryPrice": f"{pos.entry_price:f}", "breakEvenPrice": f"{pos.entry_price:f}",
                "markPrice": fmt8(mark), "unRealizedProfit": fmt8((mark - pos.entry_price) * pos.amount),
                "liquidationPrice": "0", "leverage": str(self.leverage), "maxNotionalValue": "250000",
                "marginType": "cross", "isolatedMargin": "0.00000000", "isAutoAddMargin": "false",
                "positionSide": "BOTH", "notional": fmt8(mark * pos.amount), "isolatedWallet": "0",
                "updateTime": pos.update_ms,
            })
        return out

    def _account_position(self, symbol: str) -> dict[str, Any]:
        pos = self.positions.get(symbol, Position())
        mark = self.mid(symbol) or pos.entry_price
        return {"symbol": symbol, "initialMargin": fmt8(abs(pos.amount) * mark / self.leverage),
                "maintMargin": fmt8(abs(pos.amount) * mark / self.leverage / 10),
                "unrealizedProfit": fmt8((mark - pos.entry_price) * pos.amount),
                "positionInitialMargin": fmt8(abs(pos.amount) * mark / self.leverage), "openOrderInitialMargin": "0",
                "leverage": str(self.leverage), "isolated": False, "entryPrice": f"{pos.entry_price:f}",
                "breakEvenPrice": f"{pos.entry_price:f}", "maxNotional": "250000", "bidNotional": "0",
                "askNotional": "0", "positionSide": "BOTH", "positionAmt": f"{pos.amount:f}",
                "updateTime": pos.update_ms}

    # ------------------------------------------------------------------ listen keys (USD-M)

    def new_listen_key(self) -> str:
        now = self.clock.time_ms()
        for key, until in self.listen_keys.items():
            if until > now:
                self.listen_keys[key] = now + _LISTEN_KEY_TTL_MS
                return key
        key = secrets.token_urlsafe(48).replace("-", "a").replace("_", "b")[:64]
        self.listen_keys[key] = now + _LISTEN_KEY_TTL_MS
        return key

    def keepalive_listen_key(self, key: str | None) -> None:
        now = self.clock.time_ms()
        if key is None:
            key = next((k for k, until in self.listen_keys.items() if until > now), None)
        if key is None or self.listen_keys.get(key, 0) <= now:
            raise ApiError(400, -1125, "This listenKey does not exist.")
        self.listen_keys[key] = now + _LISTEN_KEY_TTL_MS

    def close_listen_key(self, key: str | None) -> None:
        if key is None:
            self.listen_keys.clear()
            return
        self.listen_keys.pop(key, None)

    def listen_key_valid(self, key: str) -> bool:
        return self.listen_keys.get(key, 0) > self.clock.time_ms()

    # ------------------------------------------------------------------ exchangeInfo

    def exchange_info(self) -> dict[str, Any]:
        now = self.clock.time_ms()
        if self.market == "spot":
            return {"timezone": "UTC", "serverTime": now, "rateLimits": RATE_LIMITS["spot"], "exchangeFilters": [],
                    "symbols": [self._spot_symbol_info(s) for s in self.symbols.values()]}
        return {"timezone": "UTC", "serverTime": now, "futuresType": "U_MARGINED", "rateLimits": RATE_LIMITS["usdm"],
                "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": [self._usdm_symbol_info(s) for s in self.symbols.values()]}

    def _spot_symbol_info(self, s: SimSymbol) -> dict[str, Any]:
        return {
            "symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
            "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt8(s.lowest_price), "maxPrice": fmt8(s.max_price),
                 "tickSize": fmt8(s.tick_size)},
                {"filterType": "LOT_SIZE", "minQty": fmt8(s.min_qty), "maxQty": fmt8(s.max_qty),
                 "stepSize": fmt8(s.step_size)},
                {"filterType": "NOTIONAL", "minNotional": fmt8(s.min_notional), "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _usdm_symbol_info(self, s: SimSymbol) -> dict[str, Any]:
        pp, qp = decimals(s.tick_size), decimals(s.step_size)
        return {
            "symbol": s.symbol, "pair": s.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": s.base, "quoteAsset": s.quote, "marginAsset": s.quote,
            "pricePrecision": pp, "quantityPrecision": qp, "baseAssetPrecision": 8, "quotePrecision": 8,
            "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": f"{s.lowest_price:f}", "maxPrice": f"{s.max_price:f}",
                 "tickSize": f"{s.tick_size:f}"},
                {"filterType": "LOT_SIZE", "minQty": f"{s.min_qty:f}", "maxQty": f"{s.max_qty:f}",
                 "stepSize": f"{s.step_size:f}"},
                {"filterType": "MARKET_LOT_SIZE", "minQty": f"{s.min_qty:f}", "maxQty": f"{s.max_qty:f}",
                 "stepSize": f"{s.step_size:f}"},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": f"{s.min_notional:f}"},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY"],
        }

    # ------------------------------------------------------------------ rendering

    def order_json(self, o: SimOrder, *, for_query: bool) -> dict[str, Any]:
        spec = self.symbols[o.symbol]
        if self.market == "spot":
            body: dict[str, Any] = {
                "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_order_id,
            }
            if not for_query:
                body["transactTime"] = o.update_ms
            body.update({
                "price": fmt8(o.price), "origQty": fmt8(o.orig_qty), "executedQty": fmt8(o.executed_qty),
                "cummulativeQuoteQty": fmt8(o.cum_quote), "status": o.status, "timeInForce": o.time_in_force or "GTC",
                "type": o.type, "side": o.side,
            })
            if for_query:
                body.update({"stopPrice": fmt8(Decimal(0)), "icebergQty": fmt8(Decimal(0)), "time": o.time_ms,
                             "updateTime": o.update_ms, "isWorking": True, "origQuoteOrderQty": fmt8(Decimal(0))})
            body["workingTime"] = o.time_ms
            if not for_query:
                body["origQuoteOrderQty"] = fmt8(Decimal(0))
            body["selfTradePreventionMode"] = "EXPIRE_MAKER"
            return body
        pp, qp = decimals(spec.tick_size), decimals(spec.step_size)
        avg = o.cum_quote / o.executed_qty if o.executed_qty else Decimal(0)
        body = {
            "orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_order_id,
            "price": fmt_at(o.price, pp), "avgPrice": fmt_at(avg, pp + 4) if o.executed_qty else "0",
            "origQty": fmt_at(o.orig_qty, qp), "executedQty": fmt_at(o.executed_qty, qp),
            "cumQty": fmt_at(o.executed_qty, qp), "cumQuote": fmt_at(o.cum_quote, pp + qp),
            "timeInForce": o.time_in_force or "GTC", "type": o.type, "reduceOnly": o.reduce_only,
            "closePosition": False, "side": o.side, "positionSide": "BOTH", "stopPrice": "0",
            "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type, "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "updateTime": o.update_ms,
        }
        if for_query:
            body["time"] = o.time_ms
        return body

    def _trade_json(self, t: SimTrade) -> dict[str, Any]:
        buyer = t.side == "BUY"
        if self.market == "spot":
            return {"symbol": t.symbol, "id": t.trade_id, "orderId": t.order_id, "orderListId": -1,
                    "price": fmt8(t.price), "qty": fmt8(t.qty), "quoteQty": fmt8(t.price * t.qty),
                    "commission": fmt8(t.commission), "commissionAsset": t.commission_asset, "time": t.time_ms,
                    "isBuyer": buyer, "isMaker": t.maker, "isBestMatch": True}
        return {"buyer": buyer, "commission": fmt8(t.commission), "commissionAsset": t.commission_asset,
                "id": t.trade_id, "maker": t.maker, "orderId": t.order_id, "price": f"{t.price:f}",
                "qty": f"{t.qty:f}", "quoteQty": f"{t.price * t.qty:f}", "realizedPnl": fmt8(t.realized_pnl),
                "side": t.side, "positionSide": "BOTH", "symbol": t.symbol, "time": t.time_ms}

    # ------------------------------------------------------------------ internals

    def _generated_client_id(self) -> str:
        return secrets.token_hex(11)

    def _check_filters(self, spec: SimSymbol, qty: Decimal, price: Decimal | None, *,
                       reduce_only: bool = False) -> None:
        """The symbol's filters, in Binance's order and with its codes. USDⓈ-M does not apply the
        minimum notional to a reduce-only order (-4164 says "unless you choose reduce only"): a
        position's last lots below it can always be closed."""
        spot = self.market == "spot"
        if spot and (decimals(qty) > 8 or (price is not None and decimals(price) > 8)):
            raise ApiError(400, -1111, "Parameter 'quantity' has too much precision." if decimals(qty) > 8
                           else "Parameter 'price' has too much precision.")
        if price is not None:
            if price <= 0:
                raise ApiError(400, -1013 if spot else -4001,
                               "Filter failure: PRICE_FILTER" if spot else "Price less than 0.")
            if price < spec.lowest_price:
                raise ApiError(400, -1013 if spot else -4013,
                               "Filter failure: PRICE_FILTER" if spot else "Price less than min price.")
            if price > spec.max_price:
                raise ApiError(400, -1013 if spot else -4002,
                               "Filter failure: PRICE_FILTER" if spot else "Price greater than max price.")
            if price % spec.tick_size:
                raise ApiError(400, -1013 if spot else -4014,
                               "Filter failure: PRICE_FILTER" if spot else "Price not increased by tick size.")
        if qty <= 0:
            raise ApiError(400, -1013 if spot else -4003,
                           "Filter failure: LOT_SIZE" if spot else "Quantity less than or equal to zero.")
        if qty < spec.min_qty:
            raise ApiError(400, -1013 if spot else -4004,
                           "Filter failure: LOT_SIZE" if spot else "Quantity less than min quantity.")
        if qty > spec.max_qty:
            raise ApiError(400, -1013 if spot else -4005,
                           "Filter failure: LOT_SIZE" if spot else "Quantity greater than max quantity.")
        if qty % spec.step_size:
            raise ApiError(400, -1013 if spot else -1111, "Filter failure: LOT_SIZE" if spot
                           else "Precision is over the maximum defined for this asset.")
        reference = price if price is not None else self.mid(spec.symbol)
        if reference is not None and qty * reference < spec.min_notional and not reduce_only:
            if spot:
                raise ApiError(400, -1013, "Filter failure: NOTIONAL")
            raise ApiError(400, -4164, f"Order's notional must be no smaller than {spec.min_notional:f} "
                                       "(unless you choose reduce only).")

    def _check_funds(self, spec: SimSymbol, side: str, qty: Decimal, limit: Decimal, reduce_only: bool) -> None:
        if self.market == "spot":
            if side == "BUY":
                need, asset = qty * limit, spec.quote
            else:
                need, asset = qty, spec.base
            if self.free.get(asset, Decimal(0)) < need:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            return
        pos = self.positions.get(spec.symbol, Position()).amount
        signed = qty if side == "BUY" else -qty
        if reduce_only:
            if pos == 0 or (pos > 0) == (signed > 0) or abs(signed) > abs(pos):
                raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
            return
        increase = abs(pos + signed) - abs(pos)
        if increase > 0:
            need = increase * limit / self.leverage + increase * limit * self.taker_rate
            if need > self.futures_available():
                raise ApiError(400, -2019, "Margin is insufficient.")

    def _take(self, order: SimOrder, spec: SimSymbol, limit: Decimal, *, fok: bool) -> None:
        """Take liquidity at the touch for a new order."""
        book = self.books.get(order.symbol)
        if book is None:
            return
        buy = order.side == "BUY"
        touch = book.ask if buy else book.bid
        marketable = order.type == "MARKET" or (touch <= order.price if buy else touch >= order.price)
        if not marketable:
            return
        shown = (book.ask_size - book.taken_ask) if buy else (book.bid_size - book.taken_bid)
        available = max(Decimal(0), shown)
        available -= available % spec.step_size
        qty = min(order.remaining, available)
        if fok and qty < order.remaining:
            return
        if qty <= 0:
            return
        if buy:
            book.taken_ask += qty
        else:
            book.taken_bid += qty
        self._execute(order, spec, touch, qty, maker=False)

    def _fill_resting(self, order: SimOrder) -> None:
        book = self.books[order.symbol]
        spec = self.symbols[order.symbol]
        buy = order.side == "BUY"
        crossed = book.ask <= order.price if buy else book.bid >= order.price
        if not crossed:
            return
        shown = (book.ask_size - book.taken_ask) if buy else (book.bid_size - book.taken_bid)
        qty = min(order.remaining, max(Decimal(0), shown - shown % spec.step_size))
        if qty <= 0:
            return
        if buy:
            book.taken_ask += qty
        else:
            book.taken_bid += qty
        self._unlock(order)
        self._execute(order, spec, order.price, qty, maker=True)
        if order.is_open:
            self._lock(order, spec)

    def _execute(self, order: SimOrder, spec: SimSymbol, price: Decimal, qty: Decimal, *, maker: bool) -> None:
        now = self.clock.time_ms()
        rate = self.maker_rate if maker else self.taker_rate
        quote = price * qty
        realized = Decimal(0)
        if self.market == "spot":
            if order.side == "BUY":
                commission, asset = (qty * rate).quantize(Decimal("0.00000001")), spec.base
                self._add(spec.quote, -quote)
                self._add(spec.base, qty - commission)
            else:
                commission, asset = (quote * rate).quantize(Decimal("0.00000001")), spec.quote
                self._add(spec.base, -qty)
                self._add(spec.quote, quote - commission)
        else:
            commission, asset = (quote * rate).quantize(Decimal("0.00000001")), spec.quote
            realized = self._move_position(spec.symbol, qty if order.side == "BUY" else -qty, price, now)
            self._add("USDT", realized - commission)
        trade = SimTrade(next(self._trade_ids), order.order_id, order.symbol, order.side, price, qty,
                         commission, asset, now, maker, realized)
        self.trades.append(trade)
        order.trades.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_ms = now
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        self._order_event(order, "TRADE", trade)
        self._account_event(spec)

    def _move_position(self, symbol: str, signed: Decimal, price: Decimal, now: int) -> Decimal:
        pos = self.positions.setdefault(symbol, Position())
        realized = Decimal(0)
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            total = pos.amount + signed
            pos.entry_price = (pos.entry_price * abs(pos.amount) + price * abs(signed)) / abs(total)
            pos.amount = total
        else:
            closing = min(abs(signed), abs(pos.amount))
            direction = Decimal(1) if pos.amount > 0 else Decimal(-1)
            realized = (price - pos.entry_price) * closing * direction
            rest = pos.amount + signed
            if rest == 0:
                pos.amount, pos.entry_price = Decimal(0), Decimal(0)
            elif (rest > 0) == (pos.amount > 0):
                pos.amount = rest
            else:
                pos.amount, pos.entry_price = rest, price
        pos.update_ms = now
        return realized

    def _add(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, Decimal(0)) + amount

    def _lock(self, order: SimOrder, spec: SimSymbol) -> None:
        if self.market != "spot":
            return
        amount = order.remaining * order.price if order.side == "BUY" else order.remaining
        asset = spec.quote if order.side == "BUY" else spec.base
        self._add(asset, -amount)
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount
        order.locked = amount

    def _unlock(self, order: SimOrder) -> None:
        if self.market != "spot" or not order.locked:
            return
        spec = self.symbols[order.symbol]
        asset = spec.quote if order.side == "BUY" else spec.base
        self.locked[asset] = self.locked.get(asset, Decimal(0)) - order.locked
        self._add(asset, order.locked)
        order.locked = Decimal(0)

    def _finish(self, order: SimOrder, status: str) -> None:
        order.status = status
        order.update_ms = self.clock.time_ms()
        self._order_event(order, status, None)

    # ------------------------------------------------------------------ events

    def _order_event(self, order: SimOrder, execution: str, trade: SimTrade | None) -> None:
        now = self.clock.time_ms()
        spec = self.symbols[order.symbol]
        last_qty = trade.qty if trade else Decimal(0)
        last_px = trade.price if trade else Decimal(0)
        if self.market == "spot":
            self._emit({
                "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_order_id, "S": order.side,
                "o": order.type, "f": order.time_in_force or "GTC", "q": fmt8(order.orig_qty), "p": fmt8(order.price),
                "P": fmt8(Decimal(0)), "F": fmt8(Decimal(0)), "g": -1, "C": "", "x": execution, "X": order.status,
                "r": "NONE", "i": order.order_id, "l": fmt8(last_qty), "z": fmt8(order.executed_qty),
                "L": fmt8(last_px), "n": fmt8(trade.commission) if trade else "0",
                "N": trade.commission_asset if trade else None, "T": order.update_ms,
                "t": trade.trade_id if trade else -1, "v": 0, "I": 8_641_984_000 + order.order_id,
                "w": order.is_open and execution != "TRADE", "m": trade.maker if trade else False, "M": False,
                "O": order.time_ms, "Z": fmt8(order.cum_quote), "Y": fmt8(last_qty * last_px),
                "Q": fmt8(Decimal(0)), "W": order.time_ms, "V": "EXPIRE_MAKER",
            })
            return
        pp, qp = decimals(spec.tick_size), decimals(spec.step_size)
        avg = order.cum_quote / order.executed_qty if order.executed_qty else Decimal(0)
        self._emit({
            "e": "ORDER_TRADE_UPDATE", "E": now, "T": order.update_ms,
            "o": {
                "s": order.symbol, "c": order.client_order_id, "S": order.side, "o": order.type,
                "f": order.time_in_force or "GTC", "q": fmt_at(order.orig_qty, qp), "p": fmt_at(order.price, pp),
                "ap": fmt_at(avg, pp + 4) if order.executed_qty else "0", "sp": "0", "x": execution,
                "X": order.status, "i": order.order_id, "l": fmt_at(last_qty, qp), "z": fmt_at(order.executed_qty, qp),
                "L": fmt_at(last_px, pp), "N": trade.commission_asset if trade else "USDT",
                "n": fmt8(trade.commission) if trade else "0", "T": order.update_ms,
                "t": trade.trade_id if trade else 0, "b": "0", "a": "0", "m": trade.maker if trade else False,
                "R": order.reduce_only, "wt": "CONTRACT_PRICE", "ot": order.type, "ps": "BOTH", "cp": False,
                "rp": fmt8(trade.realized_pnl) if trade else "0", "pP": False, "si": 0, "ss": 0,
                "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
            },
        })

    def _account_event(self, spec: SimSymbol) -> None:
        now = self.clock.time_ms()
        if self.market == "spot":
            self._emit({"e": "outboundAccountPosition", "E": now, "u": now, "B": [
                {"a": a, "f": fmt8(self.free.get(a, Decimal(0))), "l": fmt8(self.locked.get(a, Decimal(0)))}
                for a in (spec.base, spec.quote)]})
            return
        pos = self.positions.get(spec.symbol, Position())
        wallet = fmt8(self.free.get("USDT", Decimal(0)))
        mark = self.mid(spec.symbol) or pos.entry_price
        self._emit({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": "ORDER",
            "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
            "P": [{"s": spec.symbol, "pa": f"{pos.amount:f}", "ep": f"{pos.entry_price:f}",
                   "bep": f"{pos.entry_price:f}", "cr": "0", "up": fmt8((mark - pos.entry_price) * pos.amount),
                   "mt": "cross", "iw": "0", "ps": "BOTH"}],
        }})


__all__ = [
    "CLIENT_ID_RE",
    "DEFAULT_SYMBOLS",
    "RATE_LIMITS",
    "ApiError",
    "BinanceExchange",
    "BinanceMarket",
    "SimOrder",
    "SimSymbol",
    "SimTrade",
    "mandatory",
]
