"""The books of the simulated OKX: instruments, accounts, orders, matching, balances, positions.

`OkxExchange` is the venue behind the private API of `sim.okx_private` and knows nothing of HTTP
or WebSocket: it validates an order as OKX does (answering OKX's sCode), matches it against the
top of the synthetic book (a taker takes what the touch shows; a size taken stays taken until the
book changes; the rest of an IOC is canceled; a limit order rests and fills when a later book
crosses it), settles fills into cash and net positions, and reports every order change to
`on_change` (the `orders` channel). clOrdId is unique among pending orders only (51016), as on
OKX; a query by clOrdId finds the latest order with it.

History is bounded, as the demo runs these books inside the engine's process for weeks: a final
order and a fill are kept `HISTORY_KEPT_MS` (eight minutes), at most `HISTORY_KEPT` of each
per account; an older one is no longer found (51603, as OKX answers for an order past its
history window). The engine asks about an order within seconds of sending it, and every fill
it saw is in its ledger. Open orders are kept whatever their age.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from core.instruments import Instrument
from sim.market import SimTick

INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")
ORD_TYPES = ("market", "limit", "post_only", "fok", "ioc", "optimal_limit_ioc")
CL_ORD_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
PENDING = ("live", "partially_filled")
_FUTURES_RE = re.compile(r"-\d{6}$")
HISTORY_KEPT_MS = 8 * 60_000  # final orders and fills are kept this long (venue clock)
HISTORY_KEPT = 5_000  # and at most this many of each, per account


def fmt(value: Decimal) -> str:
    """A Decimal as OKX writes numbers: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def inst_type_of(inst_id: str) -> str:
    if inst_id.endswith("-SWAP"):
        return "SWAP"
    if _FUTURES_RE.search(inst_id):
        return "FUTURES"
    return "SPOT"


# ------------------------------------------------------------------ instruments


@dataclass(frozen=True, slots=True)
class SimInstrumentSpec:
    """How the simulated OKX defines one instrument (OKX's own field meanings)."""

    inst_id: str
    tick_sz: Decimal
    lot_sz: Decimal
    min_sz: Decimal
    ct_val: Decimal = Decimal(1)
    max_lmt_sz: Decimal = Decimal(100_000_000)

    @property
    def inst_type(self) -> str:
        return inst_type_of(self.inst_id)

    @property
    def base_ccy(self) -> str:
        return self.inst_id.split("-")[0]

    @property
    def quote_ccy(self) -> str:
        parts = self.inst_id.split("-")
        return parts[1] if len(parts) > 1 else "USDT"

    def row(self, list_time_ms: int) -> dict[str, str]:
        """The `public/instruments` row."""
        spot = self.inst_type == "SPOT"
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "uly": "" if spot else f"{self.base_ccy}-{self.quote_ccy}",
            "instFamily": "" if spot else f"{self.base_ccy}-{self.quote_ccy}",
            "category": "1",
            "baseCcy": self.base_ccy if spot else "",
            "quoteCcy": self.quote_ccy if spot else "",
            "settleCcy": "" if spot else self.quote_ccy,
            "ctVal": "" if spot else fmt(self.ct_val),
            "ctMult": "" if spot else "1",
            "ctValCcy": "" if spot else self.base_ccy,
            "ctType": "" if spot else "linear",
            "optType": "",
            "stk": "",
            "listTime": str(list_time_ms),
            "expTime": "",
            "lever": "" if spot else "100",
            "tickSz": fmt(self.tick_sz),
            "lotSz": fmt(self.lot_sz),
            "minSz": fmt(self.min_sz),
            "maxLmtSz": fmt(self.max_lmt_sz),
            "maxMktSz": "1000000",
            "alias": "",
            "state": "live",
        }


def default_spec(inst_id: str) -> SimInstrumentSpec:
    """A plausible definition for an instrument id nobody described (swaps: 0.01 base/contract)."""
    if inst_type_of(inst_id) == "SPOT":
        return SimInstrumentSpec(inst_id, Decimal("0.1"), Decimal("0.00000001"), Decimal("0.00001"))
    return SimInstrumentSpec(inst_id, Decimal("0.1"), Decimal(1), Decimal(1), ct_val=Decimal("0.01"))


def spec_from_instrument(inst: Instrument) -> SimInstrumentSpec:
    """The venue definition that agrees with a configured instrument (what the demo trades)."""
    return SimInstrumentSpec(
        inst.symbol, inst.tick_size, inst.lot_step, inst.min_qty or inst.lot_step, ct_val=inst.qty_per_unit
    )


# ------------------------------------------------------------------ state


@dataclass(slots=True)
class SimOrder:
    ord_id: str
    cl_ord_id: str
    inst_id: str
    side: str
    ord_type: str
    td_mode: str
    px: Decimal
    sz: Decimal
    tag: str
    c_time: int
    state: str = "live"
    acc_fill_sz: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)  # OKX sign: negative = charged
    fee_ccy: str = ""
    u_time: int = 0
    cancel_source: str = ""
    last_trade_id: str = ""
    last_fill_px: Decimal = Decimal(0)
    last_fill_sz: Decimal = Decimal(0)
    last_fill_fee: Decimal = Decimal(0)
    last_fill_time: int = 0

    def detail(self, fill_fields: bool = True) -> dict[str, str]:
        """The order as `trade/order` and the `orders` channel show it."""
        avg = self.notional / self.acc_fill_sz if self.acc_fill_sz else None
        has_fill = fill_fields and bool(self.last_trade_id)
        return {
            "instType": inst_type_of(self.inst_id),
            "instId": self.inst_id,
            "ccy": "",
            "ordId": self.ord_id,
            "clOrdId": self.cl_ord_id,
            "tag": self.tag,
            "px": fmt(self.px) if self.ord_type != "market" else "",
            "sz": fmt(self.sz),
            "pnl": "0",
            "ordType": self.ord_type,
            "side": self.side,
            "posSide": "net",
            "tdMode": self.td_mode,
            "accFillSz": fmt(self.acc_fill_sz),
            "fillPx": fmt(self.last_fill_px) if has_fill else "",
            "tradeId": self.last_trade_id if has_fill else "",
            "fillSz": fmt(self.last_fill_sz) if has_fill else "0",
            "fillTime": str(self.last_fill_time) if has_fill else "",
            "fillFee": fmt(self.last_fill_fee) if has_fill else "0",
            "fillFeeCcy": self.fee_ccy if has_fill else "",
            "execType": "T" if has_fill else "",
            "avgPx": fmt(avg) if avg is not None else "",
            "state": self.state,
            "lever": "10" if inst_type_of(self.inst_id) != "SPOT" else "",
            "fee": fmt(self.fee),
            "feeCcy": self.fee_ccy,
            "rebate": "0",
            "rebateCcy": self.fee_ccy,
            "category": "normal",
            "reduceOnly": "false",
            "cancelSource": self.cancel_source,
            "cancelSourceReason": "",
            "source": "",
            "stpMode": "cancel_maker",
            "uTime": str(self.u_time),
            "cTime": str(self.c_time),
            "code": "0",
            "msg": "",
        }


@dataclass(slots=True)
class SimFill:
    trade_id: str
    bill_id: str
    order: SimOrder
    px: Decimal
    sz: Decimal
    fee: Decimal
    fee_ccy: str
    ts: int
    exec_type: str

    def row(self) -> dict[str, str]:
        o = self.order
        return {
            "instType": inst_type_of(o.inst_id),
            "instId": o.inst_id,
            "tradeId": self.trade_id,
            "ordId": o.ord_id,
            "clOrdId": o.cl_ord_id,
            "billId": self.bill_id,
            "tag": o.tag,
            "fillPx": fmt(self.px),
            "fillSz": fmt(self.sz),
            "side": o.side,
            "posSide": "net",
            "execType": self.exec_type,
            "feeCcy": self.fee_ccy,
            "fee": fmt(self.fee),
            "ts": str(self.ts),
            "fillTime": str(self.ts),
        }


@dataclass(slots=True)
class SimPosition:
    pos: Decimal = Decimal(0)  # contracts, signed (net mode)
    avg_px: Decimal = Decimal(0)
    c_time: int = 0
    u_time: int = 0


@dataclass
class OkxSimAccount:
    """One API key and the account behind it."""

    api_key: str
    secret: str = field(repr=False)
    passphrase: str = field(repr=False)
    demo: bool = False
    uid: str = "614488474791936"
    # GET /api/v5/account/config: the key's permissions, account level and position mode.
    perm: str = "read_only,trade"
    acct_lv: str = "2"
    pos_mode: str = "net_mode"
    cash: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[str, SimOrder] = field(default_factory=dict)  # by ordId
    by_cl_ord_id: dict[str, SimOrder] = field(default_factory=dict)  # the latest with that id
    fills: list[SimFill] = field(default_factory=list)


def forget_history(account: OkxSimAccount, now_ms: int) -> None:
    """Drop the final orders and the fills past `HISTORY_KEPT_MS` or beyond `HISTORY_KEPT`
    (oldest first; open orders stay)."""
    horizon = now_ms - HISTORY_KEPT_MS
    excess = len(account.orders) + 1 - HISTORY_KEPT  # room for the one coming
    gone: list[SimOrder] = []
    for order in account.orders.values():  # oldest first (by creation)
        if order.state in PENDING:
            continue
        if order.u_time >= horizon and len(gone) >= excess:
            break
        gone.append(order)
    for order in gone:
        del account.orders[order.ord_id]
        if account.by_cl_ord_id.get(order.cl_ord_id) is order:
            del account.by_cl_ord_id[order.cl_ord_id]
    fills = account.fills
    cut = max(0, len(fills) + 1 - HISTORY_KEPT)
    while cut < len(fills) and fills[cut].ts < horizon:
        cut += 1
    if cut:
        del fills[:cut]


class Refusal(Exception):
    """An OKX error answer (HTTP status, code, message)."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg



class OkxExchange:
    """Accounts and order matching; time from `now_ms` (the venue's clock, skew included)."""

    def __init__(
        self,
        now_ms: Callable[[], int],
        book: Callable[[str], SimTick | None],
        specs: Iterable[SimInstrumentSpec],
        *,
        taker_fee: Decimal = Decimal("0.0005"),
        maker_fee: Decimal = Decimal("0.0002"),
        spot_taker_fee: Decimal = Decimal("0.001"),
        spot_maker_fee: Decimal = Decimal("0.0008"),
        leverage: Decimal = Decimal(10),
    ) -> None:
        self.now_ms = now_ms
        self._book = book
        self.specs: dict[str, SimInstrumentSpec] = {s.inst_id: s for s in specs}
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.spot_taker_fee = spot_taker_fee
        self.spot_maker_fee = spot_maker_fee
        self.leverage = leverage
        self.accounts: dict[str, OkxSimAccount] = {}
        self.on_change: Callable[[OkxSimAccount, SimOrder, bool], None] | None = None
        # Ids start from the clock, as a venue's never repeat: a simulator started again (the
        # demo's, after an engine restart) must not hand out a trade id the ledger already has.
        start = now_ms() * 1000
        self._ord_ids = itertools.count(600_000_000_000_000_001 + start)
        self._trade_ids = itertools.count(240_000_001 + start)
        self._bill_ids = itertools.count(700_000_000_000_000_001 + start)
        self._taken: dict[str, tuple[SimTick, Decimal, Decimal]] = {}
        self.orders_received = 0


    def add_account(
        self,
        api_key: str,
        secret: str,
        passphrase: str,
        *,
        balances: Mapping[str, Decimal | str | int] | None = None,
        demo: bool = False,
    ) -> OkxSimAccount:
        """A key with its account; default balance 100 000 USDT."""
        cash = {ccy: Decimal(str(v)) for ccy, v in (balances or {"USDT": 100_000}).items()}
        account = OkxSimAccount(api_key, secret, passphrase, demo=demo, cash=cash)
        self.accounts[api_key] = account
        return account

    def place_order(self, account: OkxSimAccount, args: Any) -> dict[str, str]:
        """Validate, accept and match one order; the per-item answer (sCode "0" = accepted)."""
        self.orders_received += 1
        now = self.now_ms()
        cl = args.get("clOrdId", "") if isinstance(args, dict) else ""
        cl = cl if isinstance(cl, str) else ""
        tag = args.get("tag", "") if isinstance(args, dict) else ""

        def refuse(code: str, msg: str) -> dict[str, str]:
            return {"clOrdId": cl, "ordId": "", "tag": tag if isinstance(tag, str) else "", "ts": str(now),
                    "sCode": code, "sMsg": msg, "subCode": ""}

        try:
            order = self._validate(account, args, now)
        except Refusal as refusal:
            return refuse(refusal.code, refusal.msg)
        forget_history(account, now)
        account.orders[order.ord_id] = order
        if order.cl_ord_id:
            account.by_cl_ord_id[order.cl_ord_id] = order
        self._match_new(account, order)
        return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "tag": order.tag, "ts": str(now),
                "sCode": "0", "sMsg": "Order placed", "subCode": ""}

    def _validate(self, account: OkxSimAccount, args: Any, now: int) -> SimOrder:
        if not isinstance(args, dict):
            raise Refusal(200, "50000", "Body can not be empty.")
        inst_id = args.get("instId")
        if not isinstance(inst_id, str) or not inst_id:
            raise Refusal(200, "50014", "Parameter instId can not be empty.")
        spec = self.specs.get(inst_id)
        if spec is None:
            raise Refusal(200, "51001", "Instrument ID does not exist.")
        td_mode = args.get("tdMode")
        spot = spec.inst_type == "SPOT"
        if td_mode not in ("cash", "cross", "isolated") or (not spot and td_mode == "cash"):
            raise Refusal(200, "51000", "Parameter tdMode error")
        side = args.get("side")
        if side not in ("buy", "sell"):
            raise Refusal(200, "51000", "Parameter side error")
        ord_type = args.get("ordType")
        if ord_type not in ORD_TYPES or (spot and ord_type == "optimal_limit_ioc"):
            raise Refusal(200, "51000", "Parameter ordType error")
        sz = _num(args.get("sz"))
        if sz is None or sz <= 0:
            raise Refusal(200, "51000", "Parameter sz error")
        if sz % spec.lot_sz != 0:
            raise Refusal(
                200, "51121", f"Order quantity must be a multiple of the lot size. Lot size is {fmt(spec.lot_sz)}."
            )
        if sz < spec.min_sz:
            raise Refusal(200, "51020", "Your order should meet or exceed the minimum order amount.")
        if sz > spec.max_lmt_sz:
            raise Refusal(200, "51202", "Market order amount exceeds the maximum amount.")
        px = Decimal(0)
        if ord_type not in ("market", "optimal_limit_ioc"):
            px_num = _num(args.get("px"))
            if px_num is None or px_num <= 0 or px_num % spec.tick_sz != 0:
                raise Refusal(200, "51000", "Parameter px error")
            px = px_num
        cl = args.get("clOrdId", "")
        if cl != "" and (not isinstance(cl, str) or not CL_ORD_ID_RE.match(cl)):
            raise Refusal(200, "51000", "Parameter clOrdId error")
        tag = args.get("tag", "")
        if not isinstance(tag, str) or len(tag) > 16:
            raise Refusal(200, "51000", "Parameter tag error")
        if cl:
            prev = account.by_cl_ord_id.get(cl)
            if prev is not None and prev.state in PENDING:
                raise Refusal(200, "51016", "Duplicated clOrdId")
        self._check_funds(account, spec, side, sz, px)
        fee_ccy = spec.quote_ccy if not spot or side == "sell" else spec.base_ccy
        return SimOrder(
            ord_id=str(next(self._ord_ids)), cl_ord_id=cl, inst_id=inst_id, side=side, ord_type=ord_type,
            td_mode=td_mode, px=px, sz=sz, tag=tag, c_time=now, u_time=now, fee_ccy=fee_ccy,
        )

    def _check_funds(
        self, account: OkxSimAccount, spec: SimInstrumentSpec, side: str, sz: Decimal, px: Decimal
    ) -> None:
        price = px
        if price == 0:
            tick = self._book(spec.inst_id)
            price = Decimal(repr(tick.ask if side == "buy" else tick.bid)) if tick is not None else Decimal(0)
        if spec.inst_type == "SPOT":
            if side == "buy":
                need, ccy = sz * price, spec.quote_ccy
            else:
                need, ccy = sz, spec.base_ccy
            if self._available(account, ccy) < need:
                raise Refusal(200, "51008", f"Order failed. Insufficient {ccy} balance in account.")
            return
        held = account.positions.get(spec.inst_id, SimPosition()).pos
        signed = sz if side == "buy" else -sz
        added = max(Decimal(0), abs(held + signed) - abs(held))
        need = added * spec.ct_val * price / self.leverage
        if self._available(account, spec.quote_ccy) < need:
            raise Refusal(200, "51008", f"Order failed. Insufficient {spec.quote_ccy} margin in account")

    # -------------------------------------------------------------- matching

    def _liquidity(self, inst_id: str, side: str) -> tuple[Decimal, Decimal] | None:
        """(price, size left) of the touch an order on `side` takes from, or None."""
        tick = self._book(inst_id)
        if tick is None:
            return None
        taken = self._taken.get(inst_id)
        if taken is None or taken[0] is not tick:
            taken = (tick, Decimal(0), Decimal(0))
            self._taken[inst_id] = taken
        if side == "buy":
            return Decimal(repr(tick.ask)), Decimal(repr(tick.ask_size)) - taken[2]
        return Decimal(repr(tick.bid)), Decimal(repr(tick.bid_size)) - taken[1]

    def _take(self, inst_id: str, side: str, qty: Decimal) -> None:
        tick, bid_taken, ask_taken = self._taken[inst_id]
        if side == "buy":
            self._taken[inst_id] = (tick, bid_taken, ask_taken + qty)
        else:
            self._taken[inst_id] = (tick, bid_taken + qty, ask_taken)

    def _match_new(self, account: OkxSimAccount, order: SimOrder) -> None:
        spec = self.specs[order.inst_id]
        touch = self._liquidity(order.inst_id, order.side)
        market = order.ord_type in ("market", "optimal_limit_ioc")
        crosses = touch is not None and (
            market or (order.px >= touch[0] if order.side == "buy" else order.px <= touch[0])
        )
        if order.ord_type == "post_only" and crosses:
            self._finish(account, order, "canceled", "31")
            return
        if crosses and touch is not None:
            price, size = touch
            qty = min(order.sz, _floor(size, spec.lot_sz))
            if order.ord_type == "fok" and qty < order.sz:
                qty = Decimal(0)
            if qty > 0:
                self._take(order.inst_id, order.side, qty)
                self._fill(account, order, price, qty, "T")
        if order.state == "filled":
            return
        if order.ord_type in ("ioc", "fok", "market", "optimal_limit_ioc"):
            self._finish(account, order, "canceled", "14" if order.ord_type != "fok" else "15")
        elif order.acc_fill_sz == 0:
            self._push(account, order, fill=False)  # resting: `live`

    def on_book(self, inst_id: str) -> None:
        """A new top of book: resting limit orders it crosses fill as makers at their price."""
        for account in self.accounts.values():
            for order in list(account.orders.values()):
                if order.inst_id != inst_id or order.state not in PENDING:
                    continue
                touch = self._liquidity(inst_id, order.side)
                if touch is None:
                    return
                price, size = touch
                if not (order.px >= price if order.side == "buy" else order.px <= price):
                    continue
                spec = self.specs[inst_id]
                qty = min(order.sz - order.acc_fill_sz, _floor(size, spec.lot_sz))
                if qty > 0:
                    self._take(inst_id, order.side, qty)
                    self._fill(account, order, order.px, qty, "M")

    def _fill(self, account: OkxSimAccount, order: SimOrder, price: Decimal, qty: Decimal, exec_type: str) -> None:
        spec = self.specs[order.inst_id]
        now = self.now_ms()
        spot = spec.inst_type == "SPOT"
        rate = (self.spot_taker_fee if exec_type == "T" else self.spot_maker_fee) if spot else (
            self.taker_fee if exec_type == "T" else self.maker_fee)
        # Spot buys pay the fee in the base currency, sells in the quote; derivatives in USDT.
        fee_base = (qty if order.side == "buy" else qty * price) if spot else qty * spec.ct_val * price
        fee = -(fee_base * rate).quantize(Decimal("0.00000001"))
        order.acc_fill_sz += qty
        order.notional += qty * price
        order.fee += fee
        order.u_time = now
        order.last_trade_id = str(next(self._trade_ids))
        order.last_fill_px = price
        order.last_fill_sz = qty
        order.last_fill_fee = fee
        order.last_fill_time = now
        order.state = "filled" if order.acc_fill_sz == order.sz else "partially_filled"
        account.fills.append(SimFill(order.last_trade_id, str(next(self._bill_ids)), order, price, qty, fee,
                                     order.fee_ccy, now, exec_type))
        self._settle(account, spec, order.side, qty, price, fee, order.fee_ccy, now)
        self._push(account, order, fill=True)

    def _settle(self, account: OkxSimAccount, spec: SimInstrumentSpec, side: str, qty: Decimal, price: Decimal,
                fee: Decimal, fee_ccy: str, now: int) -> None:
        cash = account.cash
        if spec.inst_type == "SPOT":
            sign_ = 1 if side == "buy" else -1
            cash[spec.base_ccy] = cash.get(spec.base_ccy, Decimal(0)) + sign_ * qty
            cash[spec.quote_ccy] = cash.get(spec.quote_ccy, Decimal(0)) - sign_ * qty * price
            cash[fee_ccy] = cash.get(fee_ccy, Decimal(0)) + fee
            return
        p = account.positions.setdefault(spec.inst_id, SimPosition(c_time=now))
        signed = qty if side == "buy" else -qty
        realized = Decimal(0)
        if p.pos == 0 or (p.pos > 0) == (signed > 0):
            total = p.pos + signed
            p.avg_px = (p.avg_px * abs(p.pos) + price * qty) / abs(total)
            p.pos = total
        else:
            closing = min(abs(signed), abs(p.pos))
            direction = 1 if p.pos > 0 else -1
            realized = (price - p.avg_px) * closing * spec.ct_val * direction
            p.pos += signed
            if p.pos == 0:
                p.avg_px = Decimal(0)
            elif (p.pos > 0) != (direction > 0):
                p.avg_px = price  # flipped: the rest opened at this price
        p.u_time = now
        cash[spec.quote_ccy] = cash.get(spec.quote_ccy, Decimal(0)) + realized + fee
        if p.pos == 0:
            account.positions.pop(spec.inst_id, None)

    def _finish(self, account: OkxSimAccount, order: SimOrder, state: str, source: str) -> None:
        order.state = state
        order.cancel_source = source
        order.u_time = self.now_ms()
        self._push(account, order, fill=False)

    def cancel_order(self, account: OkxSimAccount, args: Any) -> dict[str, str]:
        now = self.now_ms()
        if not isinstance(args, dict) or not isinstance(args.get("instId"), str) or not args.get("instId"):
            return {"clOrdId": "", "ordId": "", "ts": str(now), "sCode": "50014",
                    "sMsg": "Parameter instId can not be empty."}
        ord_id = args.get("ordId") or ""
        cl = args.get("clOrdId") or ""
        if not isinstance(ord_id, str) or not isinstance(cl, str):
            return {"clOrdId": "", "ordId": "", "ts": str(now), "sCode": "51000",
                    "sMsg": "Parameter ordId or clOrdId error"}
        order = account.orders.get(ord_id) if ord_id else account.by_cl_ord_id.get(cl) if cl else None
        if order is not None and order.inst_id != args["instId"]:
            order = None
        echo_cl, echo_ord = cl, ord_id
        if order is None:
            return {"clOrdId": echo_cl, "ordId": echo_ord, "ts": str(now), "sCode": "51400",
                    "sMsg": "Order cancellation failed as the order has been filled, canceled or does not exist."}
        if order.state == "filled":
            return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "51402",
                    "sMsg": "Order has been completed."}
        if order.state not in PENDING:
            return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "51401",
                    "sMsg": "Order has been canceled."}
        self._finish(account, order, "canceled", "1")
        return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "0", "sMsg": ""}

    def _mark(self, inst_id: str) -> Decimal:
        tick = self._book(inst_id)
        if tick is None:
            return Decimal(0)
        return (Decimal(repr(tick.bid)) + Decimal(repr(tick.ask))) / 2

    def _used_margin(self, account: OkxSimAccount, ccy: str) -> tuple[Decimal, Decimal]:
        """(initial margin, unrealized PnL) of the positions settled in `ccy`."""
        imr = upl = Decimal(0)
        for inst_id, p in account.positions.items():
            spec = self.specs[inst_id]
            if spec.quote_ccy != ccy:
                continue
            mark = self._mark(inst_id) or p.avg_px
            imr += abs(p.pos) * spec.ct_val * mark / self.leverage
            upl += (mark - p.avg_px) * p.pos * spec.ct_val
        return imr, upl

    def _frozen(self, account: OkxSimAccount, ccy: str) -> Decimal:
        frozen = Decimal(0)
        for o in account.orders.values():
            if o.state not in PENDING:
                continue
            spec = self.specs[o.inst_id]
            left = o.sz - o.acc_fill_sz
            if spec.inst_type == "SPOT":
                if o.side == "buy" and spec.quote_ccy == ccy:
                    frozen += left * o.px
                elif o.side == "sell" and spec.base_ccy == ccy:
                    frozen += left
            elif spec.quote_ccy == ccy:
                frozen += left * spec.ct_val * o.px / self.leverage
        return frozen

    def _available(self, account: OkxSimAccount, ccy: str) -> Decimal:
        imr, upl = self._used_margin(account, ccy)
        return account.cash.get(ccy, Decimal(0)) + min(upl, Decimal(0)) - imr - self._frozen(account, ccy)

    def _usd(self, ccy: str, amount: Decimal) -> Decimal:
        if ccy in ("USDT", "USDC", "USD"):
            return amount
        for inst_id in (f"{ccy}-USDT", f"{ccy}-USDT-SWAP"):
            if inst_id in self.specs:
                return amount * self._mark(inst_id)
        return Decimal(0)

    def balance_data(self, account: OkxSimAccount, only: set[str] | None = None) -> dict[str, object]:
        now = self.now_ms()
        details = []
        total = imr_total = Decimal(0)
        for ccy in sorted(account.cash):
            if only and ccy not in only:
                continue
            cash = account.cash[ccy]
            imr, upl = self._used_margin(account, ccy)
            frozen = self._frozen(account, ccy) + imr
            eq = cash + upl
            avail = self._available(account, ccy)
            eq_usd = self._usd(ccy, eq)
            total += eq_usd
            imr_total += self._usd(ccy, imr)
            details.append({
                "ccy": ccy, "eq": fmt(eq), "cashBal": fmt(cash), "availBal": fmt(avail), "availEq": fmt(avail),
                "frozenBal": fmt(frozen), "ordFrozen": fmt(self._frozen(account, ccy)), "upl": fmt(upl),
                "eqUsd": fmt(eq_usd), "disEq": fmt(eq_usd), "imr": fmt(imr), "mmr": fmt(imr / 2),
                "liab": "0", "interest": "0", "uTime": str(now),
            })
        return {
            "totalEq": fmt(total), "adjEq": fmt(total), "availEq": fmt(total - imr_total), "isoEq": "0",
            "imr": fmt(imr_total), "mmr": fmt(imr_total / 2), "ordFroz": "0", "mgnRatio": "",
            "notionalUsd": "", "upl": "", "uTime": str(now), "details": details,
        }

    def _push(self, account: OkxSimAccount, order: SimOrder, *, fill: bool) -> None:
        if self.on_change is not None:
            self.on_change(account, order, fill)

    def position_rows(self, account: OkxSimAccount, wanted: Callable[[str], bool]) -> list[dict[str, str]]:
        """`account/positions` rows of the instruments `wanted` accepts."""
        rows = []
        now = self.now_ms()
        for inst_id, p in account.positions.items():
            if not wanted(inst_id):
                continue
            spec = self.specs[inst_id]
            mark = self._mark(inst_id) or p.avg_px
            notional = abs(p.pos) * spec.ct_val * mark
            rows.append({
                "instType": spec.inst_type, "instId": inst_id, "mgnMode": "cross", "posId": inst_id.replace("-", ""),
                "posSide": "net", "pos": fmt(p.pos), "availPos": "", "avgPx": fmt(p.avg_px),
                "upl": fmt((mark - p.avg_px) * p.pos * spec.ct_val), "lever": fmt(self.leverage),
                "liqPx": "", "markPx": fmt(mark), "imr": fmt(notional / self.leverage), "margin": "",
                "mmr": fmt(notional / self.leverage / 2), "notionalUsd": fmt(notional), "ccy": spec.quote_ccy,
                "adl": "1", "cTime": str(p.c_time), "uTime": str(p.u_time or now),
            })
        return rows

    def fee_row(self, inst_type: str) -> dict[str, str]:
        """`account/trade-fee`: OKX reports the rates charged as negative numbers."""
        spot = inst_type in ("SPOT", "MARGIN")
        maker = self.spot_maker_fee if spot else self.maker_fee
        taker = self.spot_taker_fee if spot else self.taker_fee
        return {"category": "1", "instType": inst_type, "level": "Lv1", "maker": fmt(-maker), "taker": fmt(-taker),
                "makerU": "" if spot else fmt(-maker), "takerU": "" if spot else fmt(-taker),
                "delivery": "", "exercise": "", "ts": str(self.now_ms())}

    def currency_rows(self) -> list[dict[str, object]]:
        """`asset/currencies`: the currencies of the listed instruments (deposits only)."""
        ccys: set[str] = set()
        for spec in self.specs.values():
            ccys.update((spec.base_ccy, spec.quote_ccy))
        return [{
            "ccy": ccy, "name": ccy, "chain": f"{ccy}-ERC20", "logoLink": "", "canDep": True, "canWd": False,
            "canInternal": False, "minDep": "0.00000001", "minWd": "0.001", "maxWd": "0", "wdTickSz": "8",
            "minFee": "0", "maxFee": "0", "mainNet": True, "needTag": False, "wdQuota": "0", "usedWdQuota": "0",
            "minDepArrivalConfirm": "12", "minWdUnlockConfirm": "12", "depQuotaFixed": "", "usedDepQuotaFixed": "",
        } for ccy in sorted(ccys)]


def _num(value: Any) -> Decimal | None:
    if not isinstance(value, str) or not value or len(value) > 40:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _floor(value: Decimal, step: Decimal) -> Decimal:
    if value <= 0:
        return Decimal(0)
    return (value / step).to_integral_value(ROUND_DOWN) * step



__all__ = [
    "CL_ORD_ID_RE", "INST_TYPES", "ORD_TYPES", "PENDING", "OkxExchange", "OkxSimAccount", "Refusal", "SimFill",
    "SimInstrumentSpec", "SimOrder", "SimPosition", "default_spec", "fmt", "inst_type_of", "spec_from_instrument",
]  # fmt: skip
