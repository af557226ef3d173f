"""Every OKX private REST body and private WebSocket message, decoded and checked.

Each `parse_*` function takes the raw bytes (or text) the venue sent and returns typed values,
or raises `OkxParseError` (a ValueError) naming what was wrong; nothing else ever leaves, so a
bad body can never crash the gateway or leave half-applied state. Decoding is msgspec with the
documented field names; absent fields take their documented empty value (OKX sends "" for
"none"), unknown fields are ignored. A venue error envelope (`code` other than "0") is not a
parse error: `parse_envelope` returns it and the caller classes it (errors.py).

Conversions to the domain (`order_update`, `push_fill`, `fill_from_row`, `instrument_spec`)
check every number: finite, in range, no negative sizes; OKX signs fees negative when charged,
our `Fill.fee` is positive when charged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from core.models import Fill, OrderState
from core.ports import OrderUpdate
from exchanges.venue import InstrumentSpec


class OkxParseError(ValueError):
    """A body or message that is not what the OKX documentation says it is."""


# --- wire shapes --------------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True):
    """`{"code": "0", "msg": "", "data": [...]}`; an unknown path answers a numeric code."""

    code: str | int
    msg: str = ""
    data: Any = None

    @property
    def ok(self) -> bool:
        return str(self.code) == "0"

    @property
    def code_text(self) -> str:
        return str(self.code)


class OrderAck(msgspec.Struct, frozen=True):
    """One item of a place or cancel answer (REST `data[]`, WebSocket op `data[]`)."""

    ordId: str = ""
    clOrdId: str = ""
    sCode: str = "0"
    sMsg: str = ""
    ts: str = ""
    tag: str = ""


class OrderDetail(msgspec.Struct, frozen=True):
    """An order (REST trade/order, orders-pending) or an `orders` channel push."""

    instId: str
    ordId: str
    state: str
    clOrdId: str = ""
    instType: str = ""
    px: str = ""
    sz: str = ""
    ordType: str = ""
    side: str = ""
    tdMode: str = ""
    accFillSz: str = "0"
    avgPx: str = ""
    fillPx: str = ""
    fillSz: str = ""
    fillTime: str = ""
    tradeId: str = ""
    fee: str = "0"
    feeCcy: str = ""
    fillFee: str = ""
    fillFeeCcy: str = ""
    execType: str = ""
    cancelSource: str = ""
    cTime: str = ""
    uTime: str = ""
    code: str = "0"
    msg: str = ""


class FillRow(msgspec.Struct, frozen=True):
    """One row of `GET /api/v5/trade/fills`."""

    instId: str
    tradeId: str
    ordId: str
    fillPx: str
    fillSz: str
    side: str
    clOrdId: str = ""
    instType: str = ""
    billId: str = ""
    execType: str = ""
    fee: str = "0"
    feeCcy: str = ""
    ts: str = ""
    fillTime: str = ""


class BalanceDetail(msgspec.Struct, frozen=True):
    ccy: str
    eq: str = ""
    cashBal: str = ""
    availBal: str = ""
    availEq: str = ""
    frozenBal: str = ""
    upl: str = ""


class Balance(msgspec.Struct, frozen=True):
    """`GET /api/v5/account/balance` data[0]."""

    totalEq: str = ""
    adjEq: str = ""
    availEq: str = ""
    imr: str = ""
    mmr: str = ""
    uTime: str = ""
    details: list[BalanceDetail] = msgspec.field(default_factory=list)


class PositionRow(msgspec.Struct, frozen=True):
    """One row of `GET /api/v5/account/positions` (net mode: `pos` is signed)."""

    instId: str
    pos: str
    instType: str = ""
    mgnMode: str = ""
    posSide: str = "net"
    avgPx: str = ""
    upl: str = ""
    imr: str = ""
    mmr: str = ""
    margin: str = ""
    notionalUsd: str = ""
    lever: str = ""
    liqPx: str = ""
    markPx: str = ""
    ccy: str = ""
    uTime: str = ""


class InstrumentRow(msgspec.Struct, frozen=True):
    """One row of `GET /api/v5/public/instruments`."""

    instId: str
    instType: str
    tickSz: str
    lotSz: str
    minSz: str
    ctVal: str = ""
    ctType: str = ""
    ctValCcy: str = ""
    settleCcy: str = ""
    baseCcy: str = ""
    quoteCcy: str = ""
    maxLmtSz: str = ""
    state: str = ""


class WsArg(msgspec.Struct, frozen=True):
    channel: str = ""
    instType: str = ""
    instId: str = ""


class WsMessage(msgspec.Struct, frozen=True):
    """Any private WebSocket text frame but `pong`: an event, an op answer or a push."""

    event: str = ""
    op: str = ""
    id: str = ""
    code: str = ""
    msg: str = ""
    connId: str = ""
    arg: WsArg | None = None
    data: Any = None


_envelope = msgspec.json.Decoder(Envelope)
_ws = msgspec.json.Decoder(WsMessage)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes | str, what: str) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise OkxParseError(f"okx {what}: {exc}") from None
    except Exception as exc:  # RecursionError on deep nesting, TypeError on a non-buffer
        raise OkxParseError(f"okx {what}: not decodable ({type(exc).__name__})") from None


def _items(data: Any, kind: type[Any], what: str) -> list[Any]:
    if not isinstance(data, list):
        raise OkxParseError(f"okx {what}: data is not a list")
    try:
        return [msgspec.convert(item, kind) for item in data]
    except msgspec.ValidationError as exc:
        raise OkxParseError(f"okx {what}: {exc}") from None


def parse_envelope(body: bytes | str, what: str = "response") -> Envelope:
    """The outer object of any REST answer; `data` still raw."""
    env: Envelope = _decode(_envelope, body, what)
    return env


def parse_acks(data: Any) -> list[OrderAck]:
    return _items(data, OrderAck, "order ack")


def parse_orders(data: Any) -> list[OrderDetail]:
    return _items(data, OrderDetail, "order")


def parse_fills(data: Any) -> list[FillRow]:
    return _items(data, FillRow, "fills")


def parse_balances(data: Any) -> list[Balance]:
    return _items(data, Balance, "balance")


def parse_positions(data: Any) -> list[PositionRow]:
    return _items(data, PositionRow, "positions")


def parse_instruments(data: Any) -> list[InstrumentRow]:
    return _items(data, InstrumentRow, "instruments")


def parse_server_time(data: Any) -> int:
    """`GET /api/v5/public/time` data -> the venue's time in ms."""
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise OkxParseError("okx time: data must hold one object")
    return timestamp(data[0].get("ts"), "time ts", required=True)


def parse_ws(text: bytes | str) -> WsMessage:
    """One private WebSocket frame (the text `pong` is not JSON: check for it first)."""
    msg: WsMessage = _decode(_ws, text, "websocket message")
    return msg


# --- numbers ------------------------------------------------------------------------------

_PLAIN = re.compile(r"^-?\d{1,30}(\.\d{1,30})?$")


def decimal(value: Any, what: str, *, allow_empty: bool = False, signed: bool = False) -> Decimal:
    """A plain decimal string ("97000.1", "-0.02") as a Decimal; "" is 0 when `allow_empty`;
    negative only if `signed`. Exponents, nan, inf and over-long numbers are refused."""
    if value == "" and allow_empty:
        return Decimal(0)
    if not isinstance(value, str) or not _PLAIN.match(value):
        raise OkxParseError(f"okx {what}: expected a plain decimal string, got {_show(value)}")
    number = Decimal(value)  # the pattern admits only finite plain decimals (OKX writes no exponents)
    if number < 0 and not signed:
        raise OkxParseError(f"okx {what}: negative: {_show(value)}")
    return number


def timestamp(value: Any, what: str, *, required: bool = False) -> int:
    """A ms timestamp string as an int (0 when absent and not required)."""
    if value in ("", None) and not required:
        return 0
    if not isinstance(value, str) or not value.isdigit() or len(value) > 16:
        raise OkxParseError(f"okx {what}: expected ms digits, got {_show(value)}")
    return int(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- to the domain ------------------------------------------------------------------------

_IOC_TYPES = frozenset({"ioc", "fok", "market", "optimal_limit_ioc"})


def order_state(detail: OrderDetail) -> OrderState:
    """OKX `state` as ours. An IOC's unfilled rest is `canceled` by OKX: that is our `expired`."""
    state = detail.state
    if state == "live":
        return OrderState.ACKED
    if state == "partially_filled":
        return OrderState.PARTIALLY_FILLED
    if state == "filled":
        return OrderState.FILLED
    if state in ("canceled", "mmp_canceled"):
        return OrderState.EXPIRED if detail.ordType in _IOC_TYPES else OrderState.CANCELLED
    raise OkxParseError(f"okx order {detail.ordId}: unknown state {_show(state)}")


def push_fill(detail: OrderDetail) -> Fill | None:
    """The execution one `orders` push (or REST order) reports, if it carries one.

    A push carries the last fill (`tradeId`, `fillSz`, `fillPx`, `fillFee`); a market order can
    say `filled` with `fillSz` "0", which is no fill."""
    if not detail.tradeId:
        return None
    qty = decimal(detail.fillSz, "fillSz", allow_empty=True)
    if qty == 0:
        return None
    price = decimal(detail.fillPx, "fillPx")
    if price == 0:
        raise OkxParseError(f"okx order {detail.ordId}: fill {detail.tradeId} at price 0")
    fee_text = detail.fillFee if detail.fillFee != "" else None
    fee = -decimal(fee_text, "fillFee", signed=True) if fee_text is not None else Decimal(0)
    ts = timestamp(detail.fillTime, "fillTime") or timestamp(detail.uTime, "uTime")
    return Fill(
        venue="okx",
        venue_trade_id=detail.tradeId,
        client_order_id=detail.clOrdId,
        qty=qty,
        price=price,
        fee=fee,
        fee_ccy=detail.fillFeeCcy or detail.feeCcy,
        ts_ms=ts,
    )


def fill_from_row(row: FillRow) -> Fill:
    """A `trade/fills` row as a Fill (fees turned to positive-when-charged)."""
    qty = decimal(row.fillSz, "fillSz")
    price = decimal(row.fillPx, "fillPx")
    if qty == 0 or price == 0:
        raise OkxParseError(f"okx fill {row.tradeId}: size and price must be > 0")
    if not row.tradeId:
        raise OkxParseError("okx fill: empty tradeId")
    return Fill(
        venue="okx",
        venue_trade_id=row.tradeId,
        client_order_id=row.clOrdId,
        qty=qty,
        price=price,
        fee=-decimal(row.fee, "fee", signed=True, allow_empty=True),
        fee_ccy=row.feeCcy,
        ts_ms=timestamp(row.fillTime, "fillTime") or timestamp(row.ts, "ts"),
    )


def order_update(detail: OrderDetail, fills: list[Fill]) -> OrderUpdate:
    """An OrderUpdate from an order's state and the fills known for it."""
    filled = decimal(detail.accFillSz, "accFillSz", allow_empty=True)
    reason = ""
    state = order_state(detail)
    if detail.code not in ("", "0"):
        reason = f"{detail.code} {detail.msg}".strip()
    elif state is OrderState.EXPIRED:
        reason = "ioc rest canceled" if filled or fills else "ioc not filled"
    return OrderUpdate(detail.clOrdId, state, detail.ordId, fills, reason)


def instrument_spec(row: InstrumentRow) -> InstrumentSpec:
    """The venue's own definition of an instrument (contracts for swaps and futures)."""
    tick = decimal(row.tickSz, "tickSz")
    lot = decimal(row.lotSz, "lotSz")
    min_sz = decimal(row.minSz, "minSz")
    if tick == 0 or lot == 0:
        raise OkxParseError(f"okx instrument {row.instId}: tickSz and lotSz must be > 0")
    ct_val = decimal(row.ctVal, "ctVal", allow_empty=True)
    max_sz = decimal(row.maxLmtSz, "maxLmtSz", allow_empty=True)
    return InstrumentSpec(
        venue="okx",
        symbol=row.instId,
        tick_size=tick,
        lot_size=lot,
        min_qty=min_sz,
        max_qty=max_sz or None,
        contract_value=ct_val if row.instType != "SPOT" and ct_val > 0 else Decimal(1),
    )


@dataclass(frozen=True, slots=True)
class Position:
    """A net position in contracts (spot: base units), signed: + long, - short."""

    inst_id: str
    qty: Decimal
    avg_price: Decimal
    unrealized_pnl: Decimal
    margin: Decimal


def position(row: PositionRow) -> Position:
    qty = decimal(row.pos, "pos", signed=True)
    if row.posSide == "short":
        qty = -abs(qty)
    return Position(
        inst_id=row.instId,
        qty=qty,
        avg_price=decimal(row.avgPx, "avgPx", allow_empty=True),
        unrealized_pnl=decimal(row.upl, "upl", allow_empty=True, signed=True),
        margin=decimal(row.imr or row.margin, "imr", allow_empty=True),
    )


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """What the risk gate needs: equity and free equity (USD), and per-currency cash."""

    total_equity: Decimal
    available_equity: Decimal
    initial_margin: Decimal
    cash: dict[str, Decimal]
    available: dict[str, Decimal]


def account_balance(balance: Balance) -> AccountBalance:
    cash: dict[str, Decimal] = {}
    available: dict[str, Decimal] = {}
    for d in balance.details:
        cash[d.ccy] = decimal(d.cashBal or d.eq, f"{d.ccy} cashBal", allow_empty=True, signed=True)
        available[d.ccy] = decimal(d.availBal or d.availEq, f"{d.ccy} availBal", allow_empty=True, signed=True)
    total = decimal(balance.totalEq, "totalEq", allow_empty=True, signed=True)
    avail = balance.availEq or balance.adjEq
    return AccountBalance(
        total_equity=total,
        available_equity=decimal(avail, "availEq", allow_empty=True, signed=True) if avail else total,
        initial_margin=decimal(balance.imr, "imr", allow_empty=True),
        cash=cash,
        available=available,
    )


__all__ = [
    "AccountBalance", "Balance", "BalanceDetail", "Envelope", "FillRow", "InstrumentRow", "OkxParseError",
    "OrderAck", "OrderDetail", "Position", "PositionRow", "WsArg", "WsMessage", "account_balance", "decimal",
    "fill_from_row", "instrument_spec", "order_state", "order_update", "parse_acks", "parse_balances",
    "parse_envelope", "parse_fills", "parse_instruments", "parse_orders", "parse_positions", "parse_server_time",
    "parse_ws", "position", "push_fill", "timestamp",
]  # fmt: skip
