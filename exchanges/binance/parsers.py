"""Every Binance private REST body and private stream message, parsed (msgspec).

Each `parse_*` takes the raw bytes (or text) of one body or frame and returns typed,
venue-neutral values, or raises `ParseError` with a clear reason; it never raises anything
else, whatever the input (hypothesis checks that). Amounts are `Decimal` from the venue's
decimal strings, finite and (where the venue never sends a negative) non-negative.

Spot and USD-M share one vocabulary: `OrderReport` (an order's state with its trades, from
an order response, a query, a cancel, or a user data event), `TradeReport` (one execution,
keyed by the venue trade id), balances and (USD-M) positions. Order status maps onto
`OrderState`: NEW -> acked, PENDING_NEW -> submitted, PARTIALLY_FILLED, FILLED,
CANCELED -> cancelled, PENDING_CANCEL -> cancel_pending, REJECTED, EXPIRED and
EXPIRED_IN_MATCH -> expired (an IOC order with what it could not fill ends EXPIRED, not
CANCELED).

Commissions are positive when charged, in the commission asset (spot charges the asset
received: a buy pays in the base asset; USD-M charges the margin asset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from core.models import OrderState
from exchanges.binance.endpoints import BinanceMarket
from exchanges.venue import InstrumentSpec

VENUE = "binance"
# The venue writes decimals plainly: an optional minus, digits, an optional fraction.
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class ParseError(ValueError):
    """A body or message that is not what the venue documents."""


STATUS: dict[str, OrderState] = {
    "NEW": OrderState.ACKED,
    "PENDING_NEW": OrderState.SUBMITTED,
    "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
    "FILLED": OrderState.FILLED,
    "CANCELED": OrderState.CANCELLED,
    "PENDING_CANCEL": OrderState.CANCEL_PENDING,
    "REJECTED": OrderState.REJECTED,
    "EXPIRED": OrderState.EXPIRED,
    "EXPIRED_IN_MATCH": OrderState.EXPIRED,
}


# ---------------------------------------------------------------------- values


def dec(raw: object, name: str, *, signed: bool = False) -> Decimal:
    """A venue decimal: a numeric string (or an int), finite; negative only when `signed`."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ParseError(f"{name}: expected a decimal string, got {type(raw).__name__}")
    text = str(raw)
    if len(text) > 64 or not _DECIMAL.fullmatch(text):
        raise ParseError(f"{name}: {text[:40]!r} is not a plain decimal")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ParseError(f"{name}: {text[:40]!r} is not a decimal") from None
    if not value.is_finite():
        raise ParseError(f"{name}: {text[:40]!r} is not finite")
    if value < 0 and not signed:
        raise ParseError(f"{name}: {text[:40]!r} is negative")
    return value


def _status(raw: str) -> OrderState:
    state = STATUS.get(raw)
    if state is None:
        raise ParseError(f"unknown order status {raw[:40]!r}")
    return state


def _decode(raw: bytes | str, kind: Any, what: str) -> Any:
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ParseError(f"{what}: {exc}") from None
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise ParseError(f"{what}: {type(exc).__name__}") from None


# ---------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TradeReport:
    """One execution of one order."""

    trade_id: str
    order_id: str
    symbol: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_ccy: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class OrderReport:
    """An order as the venue reports it, with the trades that message carries (maybe none)."""

    symbol: str
    client_order_id: str
    venue_order_id: str
    state: OrderState
    venue_status: str
    orig_qty: Decimal
    executed_qty: Decimal
    price: Decimal
    quote_qty: Decimal
    update_ms: int
    trades: tuple[TradeReport, ...] = ()


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True, slots=True)
class PositionReport:
    """A USD-M position (one-way mode): `qty` signed, base units."""

    symbol: str
    qty: Decimal
    entry_price: Decimal
    unrealized_pnl: Decimal
    leverage: int


@dataclass(frozen=True, slots=True)
class FuturesAccount:
    wallet_balance: Decimal
    available_balance: Decimal
    margin_balance: Decimal
    unrealized_pnl: Decimal
    fee_tier: int
    balances: dict[str, Balance]
    positions: dict[str, PositionReport]


@dataclass(frozen=True, slots=True)
class SpotAccount:
    can_trade: bool
    maker_rate: Decimal | None
    taker_rate: Decimal | None
    balances: dict[str, Balance]


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """Specs of the symbols that can be traded on the grid; the others and why not."""

    specs: dict[str, InstrumentSpec]
    trading: frozenset[str]
    unusable: dict[str, str]
    weight_limit: int | None


# ---------------------------------------------------------------------- error bodies


class _ErrorBody(msgspec.Struct):
    code: int
    msg: str


def parse_error_body(raw: bytes) -> tuple[int | None, str]:
    """(code, msg) of an error body; (None, a short excerpt) when it is not the venue's shape."""
    try:
        body = msgspec.json.decode(raw, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError, ValueError):
        text = raw[:200].decode("utf-8", "replace").strip()
        return None, text or "(empty body)"
    return body.code, body.msg


# ---------------------------------------------------------------------- orders and trades


class _Fill(msgspec.Struct):
    price: str
    qty: str
    commission: str
    commissionAsset: str
    tradeId: int


class _Order(msgspec.Struct, kw_only=True):
    symbol: str
    orderId: int
    clientOrderId: str
    status: str
    origClientOrderId: str | None = None
    price: str = "0"
    origQty: str = "0"
    executedQty: str = "0"
    cummulativeQuoteQty: str | None = None
    cumQuote: str | None = None
    updateTime: int | None = None
    transactTime: int | None = None
    time: int | None = None
    fills: list[_Fill] = []


def _order(o: _Order) -> OrderReport:
    stamp = o.updateTime or o.transactTime or o.time or 0
    quote = o.cummulativeQuoteQty if o.cummulativeQuoteQty is not None else (o.cumQuote or "0")
    trades = tuple(
        TradeReport(str(f.tradeId), str(o.orderId), o.symbol, dec(f.qty, "fills.qty"), dec(f.price, "fills.price"),
                    dec(f.commission, "fills.commission", signed=True), f.commissionAsset, stamp)
        for f in o.fills
    )
    return OrderReport(
        symbol=o.symbol,
        # A spot cancel answers with a fresh clientOrderId and ours in origClientOrderId.
        client_order_id=o.origClientOrderId or o.clientOrderId,
        venue_order_id=str(o.orderId),
        state=_status(o.status),
        venue_status=o.status,
        orig_qty=dec(o.origQty, "origQty"),
        executed_qty=dec(o.executedQty, "executedQty"),
        price=dec(o.price, "price"),
        quote_qty=dec(quote, "cumulative quote quantity"),
        update_ms=stamp,
        trades=trades,
    )


def parse_order(raw: bytes | str) -> OrderReport:
    """An order response (place ACK/RESULT/FULL, query, cancel), spot or USD-M."""
    return _order(_decode(raw, _Order, "order"))


def parse_orders(raw: bytes | str) -> list[OrderReport]:
    """openOrders."""
    return [_order(o) for o in _decode(raw, list[_Order], "open orders")]


class _SpotTrade(msgspec.Struct):
    symbol: str
    id: int
    orderId: int
    price: str
    qty: str
    commission: str
    commissionAsset: str
    time: int


def parse_trades(raw: bytes | str) -> list[TradeReport]:
    """myTrades (spot) or userTrades (USD-M): the fields both share."""
    rows = _decode(raw, list[_SpotTrade], "trades")
    return [TradeReport(str(t.id), str(t.orderId), t.symbol, dec(t.qty, "qty"), dec(t.price, "price"),
                        dec(t.commission, "commission", signed=True), t.commissionAsset, t.time) for t in rows]


# ---------------------------------------------------------------------- time, keys, exchangeInfo


class _Time(msgspec.Struct):
    serverTime: int


def parse_server_time(raw: bytes | str) -> int:
    stamp = _decode(raw, _Time, "server time").serverTime
    if stamp <= 0:
        raise ParseError("server time: not positive")
    return int(stamp)


class _ListenKey(msgspec.Struct):
    listenKey: str


def parse_listen_key(raw: bytes | str) -> str:
    key = _decode(raw, _ListenKey, "listenKey").listenKey
    if not key or len(key) > 128 or not key.isascii() or any(c in key for c in "/?#& "):
        raise ParseError("listenKey: not a usable key")
    return str(key)


class _RateLimit(msgspec.Struct):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class _Symbol(msgspec.Struct):
    symbol: str
    status: str
    filters: list[dict[str, Any]]


class _Info(msgspec.Struct):
    symbols: list[_Symbol]
    rateLimits: list[_RateLimit] = []


def parse_exchange_info(raw: bytes | str, market: BinanceMarket) -> ExchangeInfo:
    """exchangeInfo: PRICE_FILTER, LOT_SIZE and NOTIONAL / MIN_NOTIONAL into `InstrumentSpec`s."""
    info = _decode(raw, _Info, "exchangeInfo")
    specs: dict[str, InstrumentSpec] = {}
    unusable: dict[str, str] = {}
    trading: set[str] = set()
    for sym in info.symbols:
        if sym.status == "TRADING":
            trading.add(sym.symbol)
        try:
            specs[sym.symbol] = _spec(sym, market)
        except ParseError as exc:
            unusable[sym.symbol] = str(exc)
    weight = next((r.limit * 1 for r in info.rateLimits
                   if r.rateLimitType == "REQUEST_WEIGHT" and r.interval == "MINUTE" and r.intervalNum == 1), None)
    return ExchangeInfo(specs, frozenset(trading), unusable, weight)


def _spec(sym: _Symbol, market: BinanceMarket) -> InstrumentSpec:
    filters: dict[str, dict[str, Any]] = {}
    for f in sym.filters:
        kind = f.get("filterType")
        if isinstance(kind, str):
            filters[kind] = f
    price = filters.get("PRICE_FILTER")
    lot = filters.get("LOT_SIZE")
    if price is None or lot is None:
        raise ParseError(f"{sym.symbol}: PRICE_FILTER or LOT_SIZE missing")
    tick = dec(price.get("tickSize"), "PRICE_FILTER.tickSize")
    step = dec(lot.get("stepSize"), "LOT_SIZE.stepSize")
    if tick <= 0 or step <= 0:
        raise ParseError(f"{sym.symbol}: tickSize or stepSize is 0 (no grid to round to)")
    max_qty = dec(lot.get("maxQty", "0"), "LOT_SIZE.maxQty")
    min_notional = Decimal(0)
    if "NOTIONAL" in filters:
        min_notional = dec(filters["NOTIONAL"].get("minNotional", "0"), "NOTIONAL.minNotional")
    elif "MIN_NOTIONAL" in filters:
        key = "notional" if market == "usdm" else "minNotional"
        min_notional = dec(filters["MIN_NOTIONAL"].get(key, "0"), f"MIN_NOTIONAL.{key}")
    try:
        return InstrumentSpec(
            venue=VENUE,
            symbol=sym.symbol,
            tick_size=tick.normalize(),
            lot_size=step.normalize(),
            min_qty=dec(lot.get("minQty", "0"), "LOT_SIZE.minQty").normalize(),
            min_notional=min_notional.normalize(),
            max_qty=max_qty.normalize() if max_qty > 0 else None,
        )
    except ValueError as exc:
        raise ParseError(f"{sym.symbol}: {exc}") from None


# ---------------------------------------------------------------------- accounts


class _SpotBalance(msgspec.Struct):
    asset: str
    free: str
    locked: str


class _Rates(msgspec.Struct):
    maker: str
    taker: str


class _SpotAccount(msgspec.Struct):
    balances: list[_SpotBalance]
    canTrade: bool = True
    commissionRates: _Rates | None = None


def parse_spot_account(raw: bytes | str) -> SpotAccount:
    acc = _decode(raw, _SpotAccount, "spot account")
    balances = {b.asset: Balance(b.asset, dec(b.free, "free"), dec(b.locked, "locked")) for b in acc.balances}
    rates = acc.commissionRates
    return SpotAccount(acc.canTrade, dec(rates.maker, "maker") if rates else None,
                       dec(rates.taker, "taker") if rates else None, balances)


class _Asset(msgspec.Struct):
    asset: str
    walletBalance: str
    availableBalance: str


class _AccountPosition(msgspec.Struct):
    symbol: str
    positionAmt: str
    entryPrice: str = "0"
    unrealizedProfit: str = "0"
    leverage: str = "0"


class _FuturesAccount(msgspec.Struct):
    totalWalletBalance: str
    availableBalance: str
    totalMarginBalance: str
    totalUnrealizedProfit: str
    assets: list[_Asset]
    positions: list[_AccountPosition] = []
    feeTier: int = 0


def parse_futures_account(raw: bytes | str) -> FuturesAccount:
    acc = _decode(raw, _FuturesAccount, "futures account")
    balances = {}
    for a in acc.assets:
        wallet = dec(a.walletBalance, "walletBalance", signed=True)
        free = dec(a.availableBalance, "availableBalance", signed=True)
        balances[a.asset] = Balance(a.asset, free, wallet - free)
    positions = {p.symbol: _position(p.symbol, p.positionAmt, p.entryPrice, p.unrealizedProfit, p.leverage)
                 for p in acc.positions}
    return FuturesAccount(
        wallet_balance=dec(acc.totalWalletBalance, "totalWalletBalance", signed=True),
        available_balance=dec(acc.availableBalance, "availableBalance", signed=True),
        margin_balance=dec(acc.totalMarginBalance, "totalMarginBalance", signed=True),
        unrealized_pnl=dec(acc.totalUnrealizedProfit, "totalUnrealizedProfit", signed=True),
        fee_tier=acc.feeTier,
        balances=balances,
        positions={s: p for s, p in positions.items() if p.qty != 0},
    )


class _PositionRisk(msgspec.Struct):
    symbol: str
    positionAmt: str
    entryPrice: str = "0"
    unRealizedProfit: str = "0"
    leverage: str = "0"
    positionSide: str = "BOTH"


def parse_position_risk(raw: bytes | str) -> list[PositionReport]:
    rows = _decode(raw, list[_PositionRisk], "positionRisk")
    return [_position(r.symbol, r.positionAmt, r.entryPrice, r.unRealizedProfit, r.leverage) for r in rows]


def _position(symbol: str, amt: str, entry: str, upnl: str, leverage: str) -> PositionReport:
    if not (leverage.isascii() and leverage.isdigit()) or len(leverage) > 4:
        raise ParseError(f"{symbol}: leverage {leverage[:10]!r} is not an integer")
    return PositionReport(symbol, dec(amt, "positionAmt", signed=True), dec(entry, "entryPrice"),
                          dec(upnl, "unrealizedProfit", signed=True), int(leverage))


class _Commission(msgspec.Struct):
    symbol: str
    standardCommission: _Rates | None = None
    makerCommissionRate: str | None = None
    takerCommissionRate: str | None = None


def parse_commission(raw: bytes | str) -> tuple[Decimal, Decimal]:
    """(maker, taker) fee rates of a symbol, spot `account/commission` or USD-M `commissionRate`."""
    c = _decode(raw, _Commission, "commission")
    if c.standardCommission is not None:
        return dec(c.standardCommission.maker, "maker"), dec(c.standardCommission.taker, "taker")
    if c.makerCommissionRate is None or c.takerCommissionRate is None:
        raise ParseError("commission: no rates")
    return dec(c.makerCommissionRate, "makerCommissionRate"), dec(c.takerCommissionRate, "takerCommissionRate")


# ---------------------------------------------------------------------- WebSocket API


@dataclass(frozen=True, slots=True)
class WsResponse:
    """One WebSocket API answer: `result` (raw JSON) on success, else the error."""

    request_id: str
    status: int
    result: bytes | None
    error_code: int | None
    error_msg: str
    retry_after_ms: int | None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """executionReport (spot) or ORDER_TRADE_UPDATE (USD-M): the order and its new trade."""

    report: OrderReport
    event_ms: int


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """outboundAccountPosition (spot) or ACCOUNT_UPDATE (USD-M)."""

    balances: dict[str, Balance]
    positions: dict[str, PositionReport]
    event_ms: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The venue ended the subscription (listenKeyExpired, eventStreamTerminated, serverShutdown)."""

    reason: str
    event_ms: int


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A documented event this gateway has no use for (balanceUpdate, TRADE_LITE, ...)."""

    name: str


UserEvent = OrderEvent | AccountEvent | StreamEnded | OtherEvent


class _WsError(msgspec.Struct):
    code: int
    msg: str
    data: dict[str, Any] | None = None


class _Frame(msgspec.Struct):
    id: str | int | None = None
    status: int | None = None
    result: msgspec.Raw = msgspec.Raw(b"")  # Raw cannot be in a union: empty means absent
    error: _WsError | None = None
    subscriptionId: int | None = None
    event: msgspec.Raw = msgspec.Raw(b"")
    e: str | None = None


def parse_ws_frame(raw: bytes | str) -> WsResponse | UserEvent:
    """One WebSocket API frame: a response, or a user data event (wrapped or raw)."""
    frame = _decode(raw, _Frame, "websocket frame")
    if frame.status is not None:
        if frame.error is not None:
            data = frame.error.data or {}
            retry = data.get("retryAfter")
            retry_ms = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
            return WsResponse(str(frame.id), frame.status, None, frame.error.code, frame.error.msg, retry_ms)
        if frame.status >= 400:
            raise ParseError(f"websocket response: status {frame.status} without an error")
        if not frame.result:
            raise ParseError("websocket response: no result")
        return WsResponse(str(frame.id), frame.status, bytes(frame.result), None, "", None)
    if frame.event:
        return parse_user_event(bytes(frame.event))
    if frame.e is not None:
        return parse_user_event(raw)
    raise ParseError("websocket frame: neither a response nor an event")


class _ExecutionReport(msgspec.Struct):
    """Spot executionReport (single-letter fields are case-sensitive: `c` vs `C`, `x` vs `X`)."""

    E: int
    s: str
    c: str
    x: str
    X: str
    i: int
    q: str
    p: str
    l: str  # noqa: E741 - the venue's field name
    z: str
    L: str
    n: str | None
    N: str | None
    T: int
    t: int
    Z: str
    C: str = ""


class _FuturesOrder(msgspec.Struct):
    s: str
    c: str
    x: str
    X: str
    i: int
    q: str
    p: str
    l: str  # noqa: E741 - the venue's field name
    z: str
    L: str
    T: int
    t: int
    N: str | None = None
    n: str | None = None
    ap: str = "0"


class _OrderTradeUpdate(msgspec.Struct):
    E: int
    o: _FuturesOrder


class _SpotPositionBalance(msgspec.Struct):
    a: str
    f: str
    l: str  # noqa: E741 - the venue's field name


class _OutboundAccountPosition(msgspec.Struct):
    E: int
    B: list[_SpotPositionBalance]


class _FutBalance(msgspec.Struct):
    a: str
    wb: str
    cw: str


class _FutPosition(msgspec.Struct):
    s: str
    pa: str
    ep: str
    up: str


class _FutAccountData(msgspec.Struct):
    B: list[_FutBalance] = []
    P: list[_FutPosition] = []


class _AccountUpdate(msgspec.Struct):
    E: int
    a: _FutAccountData


class _Named(msgspec.Struct):
    e: str
    E: int = 0


def parse_user_event(raw: bytes | str) -> UserEvent:
    """One user data event (unwrapped): spot or USD-M."""
    head = _decode(raw, _Named, "user data event")
    name = head.e
    if name == "executionReport":
        return _execution_report(_decode(raw, _ExecutionReport, "executionReport"))
    if name == "ORDER_TRADE_UPDATE":
        return _order_trade_update(_decode(raw, _OrderTradeUpdate, "ORDER_TRADE_UPDATE"))
    if name == "outboundAccountPosition":
        ev = _decode(raw, _OutboundAccountPosition, "outboundAccountPosition")
        balances = {b.a: Balance(b.a, dec(b.f, "f"), dec(b.l, "l")) for b in ev.B}
        return AccountEvent(balances, {}, ev.E)
    if name == "ACCOUNT_UPDATE":
        upd = _decode(raw, _AccountUpdate, "ACCOUNT_UPDATE")
        bals = {}
        for b in upd.a.B:
            wallet = dec(b.wb, "wb", signed=True)
            bals[b.a] = Balance(b.a, wallet, Decimal(0))
        positions = {p.s: PositionReport(p.s, dec(p.pa, "pa", signed=True), dec(p.ep, "ep"),
                                         dec(p.up, "up", signed=True), 0) for p in upd.a.P}
        return AccountEvent(bals, positions, upd.E)
    if name in ("listenKeyExpired", "eventStreamTerminated", "serverShutdown"):
        return StreamEnded(name, head.E)
    return OtherEvent(name[:40])


def _execution_report(ev: _ExecutionReport) -> OrderEvent:
    trades: tuple[TradeReport, ...] = ()
    if ev.x == "TRADE":
        if ev.t < 0:
            raise ParseError("executionReport: a TRADE without a trade id")
        trades = (TradeReport(str(ev.t), str(ev.i), ev.s, dec(ev.l, "l"), dec(ev.L, "L"),
                              dec(ev.n or "0", "n", signed=True), ev.N or "", ev.T),)
    report = OrderReport(
        symbol=ev.s,
        # On a cancel, `c` is the cancel request's id and `C` the order's own.
        client_order_id=ev.C if ev.x == "CANCELED" and ev.C else ev.c,
        venue_order_id=str(ev.i),
        state=_status(ev.X),
        venue_status=ev.X,
        orig_qty=dec(ev.q, "q"),
        executed_qty=dec(ev.z, "z"),
        price=dec(ev.p, "p"),
        quote_qty=dec(ev.Z, "Z"),
        update_ms=ev.T,
        trades=trades,
    )
    return OrderEvent(report, ev.E)


def _order_trade_update(ev: _OrderTradeUpdate) -> OrderEvent:
    o = ev.o
    trades: tuple[TradeReport, ...] = ()
    if o.x == "TRADE":
        if o.t <= 0:
            raise ParseError("ORDER_TRADE_UPDATE: a TRADE without a trade id")
        trades = (TradeReport(str(o.t), str(o.i), o.s, dec(o.l, "l"), dec(o.L, "L"),
                              dec(o.n or "0", "n", signed=True), o.N or "", o.T),)
    executed = dec(o.z, "z")
    report = OrderReport(
        symbol=o.s,
        client_order_id=o.c,
        venue_order_id=str(o.i),
        state=_status(o.X),
        venue_status=o.X,
        orig_qty=dec(o.q, "q"),
        executed_qty=executed,
        price=dec(o.p, "p"),
        quote_qty=executed * dec(o.ap, "ap"),
        update_ms=o.T,
        trades=trades,
    )
    return OrderEvent(report, ev.E)


__all__ = [
    "STATUS",
    "AccountEvent",
    "Balance",
    "ExchangeInfo",
    "FuturesAccount",
    "OrderEvent",
    "OrderReport",
    "OtherEvent",
    "ParseError",
    "PositionReport",
    "SpotAccount",
    "StreamEnded",
    "TradeReport",
    "UserEvent",
    "WsResponse",
    "dec",
    "parse_commission",
    "parse_error_body",
    "parse_exchange_info",
    "parse_futures_account",
    "parse_listen_key",
    "parse_order",
    "parse_orders",
    "parse_position_risk",
    "parse_server_time",
    "parse_spot_account",
    "parse_trades",
    "parse_user_event",
    "parse_ws_frame",
]
