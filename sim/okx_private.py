"""The private side of the OKX simulator: accounts, orders, matching, balances, positions.

Written from the OKX v5 documentation (venue-protocols.md B), never from the client code it
checks. `OkxPrivateVenue` answers the signed REST endpoints and the private WebSocket
(`/ws/v5/private`) of `sim.okx_server.OkxSimServer`:

- Authentication exactly as OKX checks it: OK-ACCESS-KEY / SIGN / TIMESTAMP / PASSPHRASE, the
  base64 HMAC-SHA256 of `timestamp + METHOD + requestPath(+query) + body`, the timestamp within
  30 s of server time, the `x-simulated-trading` header matching the key's environment. A bad
  request gets OKX's own code (50103-50107, 50111, 50113, 50102, 50101, HTTP 401).
- Orders (`market`, `limit`, `post_only`, `fok`, `ioc`, `optimal_limit_ioc`) match against the
  top of the synthetic book the public server publishes: a taker takes what the touch shows (a
  size taken stays taken until the book changes), the rest of an IOC is canceled (partial
  fill), a limit order rests (`live`) and fills when a later book crosses it. clOrdId must be
  unique among pending orders (51016); a query by clOrdId returns the latest order with it.
- Balances (spot cash per currency; USDT for swaps and futures, cross margin) and net
  positions with average price, unrealized PnL and initial margin at a fixed leverage.
- Private WebSocket: `login` (signature over `ts + "GET" + "/users/self/verify"`), `orders`
  channel pushes, and the `order` / `cancel-order` operations.
- Fault switches (`PrivateFaults`): hold answers past a client's timeout (processed or not),
  5xx answers (processed or not), 50011 rate limits, clock skew, dropped private streams;
  a real sliding-window rate limit per key and endpoint is always on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.clock import Clock
from core.instruments import Instrument
from sim.market import SimTick

PRIVATE_WS_PATH = "/ws/v5/private"
LOGIN_PATH = "/users/self/verify"
INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")
ORD_TYPES = ("market", "limit", "post_only", "fok", "ioc", "optimal_limit_ioc")
_CL_ORD_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FUTURES_RE = re.compile(r"-\d{6}$")
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_PENDING = ("live", "partially_filled")
_WINDOW_S = 2.0
# Requests per 2 s per key (per IP for public) and endpoint, from the OKX rate-limit tables.
RATE_LIMITS: dict[str, int] = {
    "/api/v5/trade/order": 60,
    "/api/v5/trade/batch-orders": 300,
    "/api/v5/trade/cancel-order": 60,
    "/api/v5/trade/orders-pending": 60,
    "/api/v5/trade/fills": 60,
    "/api/v5/account/balance": 10,
    "/api/v5/account/positions": 10,
    "/api/v5/account/trade-fee": 5,
    "/api/v5/asset/currencies": 6,
    "/api/v5/public/instruments": 20,
}
Answer = tuple[int, object, dict[str, str]]


def fmt(value: Decimal) -> str:
    """A Decimal as OKX writes numbers: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def sign(secret: str, prehash: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()


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
    cash: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[str, SimOrder] = field(default_factory=dict)  # by ordId
    by_cl_ord_id: dict[str, SimOrder] = field(default_factory=dict)  # the latest with that id
    fills: list[SimFill] = field(default_factory=list)


@dataclass(eq=False)
class PrivateFaults:
    """Switches for the private side; set them while the server runs.

    - `hang_next`, `hang_s`, `hang_processed`: the next N order-entry requests (REST place,
      batch, cancel; WebSocket order, cancel-order) get no answer for `hang_s` seconds (past the
      client's timeout); with `hang_processed` the venue acted on them, else they were lost.
    - `server_error_next`, `server_error_processed`: the next N order-entry REST requests answer
      HTTP 503 (with or without the venue having acted).
    - `rate_limit_next`: the next N private REST requests answer HTTP 429 `50011`, unprocessed.
    - `clock_skew_ms`: the venue's clock minus the simulation clock (server time and the 30 s
      timestamp window move with it).
    """

    hang_next: int = 0
    hang_s: float = 5.0
    hang_processed: bool = True
    server_error_next: int = 0
    server_error_processed: bool = True
    rate_limit_next: int = 0
    clock_skew_ms: int = 0

    def clear(self) -> None:
        self.hang_next = 0
        self.server_error_next = 0
        self.rate_limit_next = 0
        self.clock_skew_ms = 0


class _Refusal(Exception):
    """An OKX error answer (HTTP status, code, message)."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


@dataclass(eq=False)
class PrivateSession:
    """One private WebSocket connection, as the venue sees it."""

    conn_id: str
    send: Callable[[str], None]
    push: Callable[[str], None]
    account: OkxSimAccount | None = None
    subs: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


# ------------------------------------------------------------------ the venue


class OkxPrivateVenue:
    """Accounts and order matching of the OKX simulator; transport-free (the server calls it)."""

    def __init__(
        self,
        clock: Clock,
        book: Callable[[str], SimTick | None],
        specs: Iterable[SimInstrumentSpec],
        *,
        taker_fee: Decimal = Decimal("0.0005"),
        maker_fee: Decimal = Decimal("0.0002"),
        spot_taker_fee: Decimal = Decimal("0.001"),
        spot_maker_fee: Decimal = Decimal("0.0008"),
        leverage: Decimal = Decimal(10),
        rate_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.clock = clock
        self._book = book
        self.specs: dict[str, SimInstrumentSpec] = {s.inst_id: s for s in specs}
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.spot_taker_fee = spot_taker_fee
        self.spot_maker_fee = spot_maker_fee
        self.leverage = leverage
        self.rate_limits = dict(RATE_LIMITS if rate_limits is None else rate_limits)
        self.faults = PrivateFaults()
        self.accounts: dict[str, OkxSimAccount] = {}
        self.sessions: set[PrivateSession] = set()
        self._ord_ids = itertools.count(600_000_000_000_000_001)
        self._trade_ids = itertools.count(240_000_001)
        self._bill_ids = itertools.count(700_000_000_000_000_001)
        self._taken: dict[str, tuple[SimTick, Decimal, Decimal]] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._list_time = clock.time_ms()
        # Counters for tests.
        self.orders_received = 0
        self.order_ops_answered = 0
        self.auth_failures: list[str] = []
        # (monotonic arrival, method, path, HTTP status) of the latest private REST requests.
        self.request_log: list[tuple[float, str, str, int]] = []

    # -------------------------------------------------------------- setup

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

    def now_ms(self) -> int:
        return self.clock.time_ms() + self.faults.clock_skew_ms

    # -------------------------------------------------------------- REST

    def is_private_rest(self, method: str, path: str) -> bool:
        return method != "GET" or path.startswith(("/api/v5/trade/", "/api/v5/account/", "/api/v5/asset/")) or (
            path == "/api/v5/public/instruments"
        )

    async def rest(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one REST request: (HTTP status, JSON body, extra headers)."""
        arrived = time.monotonic()
        answer = await self._rest(method, target, headers, body)
        self.request_log.append((arrived, method, target.split("?", 1)[0], answer[0]))
        del self.request_log[:-1000]
        return answer

    async def _rest(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        url = urlsplit(target)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        if path == "/api/v5/public/instruments":
            if not self._allow("ip", path, method):
                return _rate_limited()
            return self._instruments(query)
        route = _ROUTES.get((method, path))
        if route is None:
            return 404, _not_found(), {}
        try:
            account = self._authenticate(method, target, headers, body)
        except _Refusal as refusal:
            self.auth_failures.append(refusal.code)
            return refusal.status, {"msg": refusal.msg, "code": refusal.code}, {}
        if self.faults.rate_limit_next > 0:
            self.faults.rate_limit_next -= 1
            return _rate_limited()
        if not self._allow(account.api_key, path, method):
            return _rate_limited()
        try:
            payload: Any = json.loads(body) if method == "POST" else None
        except ValueError:
            return 400, {"code": "50002", "msg": "Json data format error", "data": []}, {}
        entry = route in ("place", "batch", "cancel")
        in_time = _us()
        processed = True
        if entry and self.faults.server_error_next > 0:
            self.faults.server_error_next -= 1
            if self.faults.server_error_processed:
                self._handler(route)(account, query, payload)
            return 503, {"code": "50001", "msg": "Service temporarily unavailable, please try again later."}, {}
        if entry and self.faults.hang_next > 0:
            self.faults.hang_next -= 1
            processed = self.faults.hang_processed
            answer = self._handler(route)(account, query, payload) if processed else None
            await asyncio.sleep(self.faults.hang_s)
            if answer is None:
                return 504, {"code": "50004", "msg": "Endpoint request timeout."}, {}
            return answer
        status, obj, extra = self._handler(route)(account, query, payload)
        if entry and isinstance(obj, dict):
            obj["inTime"] = in_time
            obj["outTime"] = _us()
        return status, obj, extra

    def _handler(self, route: str) -> Callable[[OkxSimAccount, dict[str, list[str]], Any], Answer]:
        handler: Callable[[OkxSimAccount, dict[str, list[str]], Any], Answer] = getattr(self, f"_{route}")
        return handler

    def _allow(self, who: str, path: str, method: str) -> bool:
        """The sliding 2 s window of one key (or IP) on one endpoint (placing and querying
        share a path but not a limit)."""
        limit = self.rate_limits.get(path)
        if limit is None:
            return True
        now = time.monotonic()
        window = self._windows.setdefault((who, f"{method} {path}"), deque())
        while window and now - window[0] >= _WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _authenticate(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> OkxSimAccount:
        key = headers.get("OK-ACCESS-KEY", "")
        signature = headers.get("OK-ACCESS-SIGN", "")
        stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        passphrase = headers.get("OK-ACCESS-PASSPHRASE", "")
        if not key:
            raise _Refusal(401, "50103", "Request header OK-ACCESS-KEY can not be empty.")
        if not passphrase:
            raise _Refusal(401, "50104", "Request header OK-ACCESS-PASSPHRASE can not be empty.")
        if not signature:
            raise _Refusal(401, "50106", "Request header OK-ACCESS-SIGN can not be empty.")
        if not stamp:
            raise _Refusal(401, "50107", "Request header OK-ACCESS-TIMESTAMP can not be empty.")
        if not _ISO_RE.match(stamp):
            raise _Refusal(401, "50112", "Invalid OK-ACCESS-TIMESTAMP")
        try:
            sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise _Refusal(401, "50112", "Invalid OK-ACCESS-TIMESTAMP") from None
        sent_ms = int(sent.timestamp() * 1000)
        if abs(self.now_ms() - sent_ms) > 30_000:
            raise _Refusal(401, "50102", "Timestamp request expired")
        account = self.accounts.get(key)
        if account is None:
            raise _Refusal(401, "50111", "Invalid OK-ACCESS-KEY")
        demo = headers.get("x-simulated-trading", "") == "1"
        if demo != account.demo:
            raise _Refusal(401, "50101", "APIKey does not match current environment.")
        if not hmac.compare_digest(passphrase, account.passphrase):
            raise _Refusal(401, "50105", "Request header OK-ACCESS-PASSPHRASE incorrect.")
        text = body.decode("utf-8", "replace")
        expected = sign(account.secret, f"{stamp}{method.upper()}{target}{text}")
        if not hmac.compare_digest(signature, expected):
            raise _Refusal(401, "50113", "Invalid Sign")
        return account

    # -------------------------------------------------------------- public

    def _instruments(self, query: dict[str, list[str]]) -> Answer:
        inst_type = _q(query, "instType")
        if not inst_type:
            return 200, {"code": "50014", "msg": "Parameter instType can not be empty.", "data": []}, {}
        if inst_type not in INST_TYPES:
            return 200, {"code": "51000", "msg": "Parameter instType error", "data": []}, {}
        inst_id = _q(query, "instId")
        family = _q(query, "instFamily") or _q(query, "uly")
        rows = []
        for spec in self.specs.values():
            if spec.inst_type != inst_type or (inst_id and spec.inst_id != inst_id):
                continue
            row = spec.row(self._list_time)
            if family and row["instFamily"] != family:
                continue
            rows.append(row)
        return 200, {"code": "0", "msg": "", "data": rows}, {}

    # -------------------------------------------------------------- order entry

    def _place(self, account: OkxSimAccount, query: object, payload: Any) -> Answer:
        ack = self.place_order(account, payload)
        ok = ack["sCode"] == "0"
        return 200, {"code": "0" if ok else "1", "msg": "" if ok else "All operations failed", "data": [ack]}, {}

    def _batch(self, account: OkxSimAccount, query: object, payload: Any) -> Answer:
        if not isinstance(payload, list) or not payload or len(payload) > 20:
            return 200, {"code": "50000", "msg": "Body can not be empty.", "data": []}, {}
        acks = [self.place_order(account, item) for item in payload]
        good = sum(a["sCode"] == "0" for a in acks)
        code = "0" if good == len(acks) else ("1" if good == 0 else "2")
        msg = {"0": "", "1": "All operations failed", "2": "Bulk operation partially succeeded."}[code]
        return 200, {"code": code, "msg": msg, "data": acks}, {}

    def _cancel(self, account: OkxSimAccount, query: object, payload: Any) -> Answer:
        ack = self.cancel_order(account, payload)
        ok = ack["sCode"] == "0"
        return 200, {"code": "0" if ok else "1", "msg": "" if ok else "All operations failed", "data": [ack]}, {}

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
        except _Refusal as refusal:
            return refuse(refusal.code, refusal.msg)
        account.orders[order.ord_id] = order
        if order.cl_ord_id:
            account.by_cl_ord_id[order.cl_ord_id] = order
        self._match_new(account, order)
        return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "tag": order.tag, "ts": str(now),
                "sCode": "0", "sMsg": "Order placed", "subCode": ""}

    def _validate(self, account: OkxSimAccount, args: Any, now: int) -> SimOrder:
        if not isinstance(args, dict):
            raise _Refusal(200, "50000", "Body can not be empty.")
        inst_id = args.get("instId")
        if not isinstance(inst_id, str) or not inst_id:
            raise _Refusal(200, "50014", "Parameter instId can not be empty.")
        spec = self.specs.get(inst_id)
        if spec is None:
            raise _Refusal(200, "51001", "Instrument ID does not exist.")
        td_mode = args.get("tdMode")
        spot = spec.inst_type == "SPOT"
        if td_mode not in ("cash", "cross", "isolated") or (not spot and td_mode == "cash"):
            raise _Refusal(200, "51000", "Parameter tdMode error")
        side = args.get("side")
        if side not in ("buy", "sell"):
            raise _Refusal(200, "51000", "Parameter side error")
        ord_type = args.get("ordType")
        if ord_type not in ORD_TYPES or (spot and ord_type == "optimal_limit_ioc"):
            raise _Refusal(200, "51000", "Parameter ordType error")
        sz = _num(args.get("sz"))
        if sz is None or sz <= 0:
            raise _Refusal(200, "51000", "Parameter sz error")
        if sz % spec.lot_sz != 0:
            raise _Refusal(
                200, "51121", f"Order quantity must be a multiple of the lot size. Lot size is {fmt(spec.lot_sz)}."
            )
        if sz < spec.min_sz:
            raise _Refusal(200, "51020", "Your order should meet or exceed the minimum order amount.")
        if sz > spec.max_lmt_sz:
            raise _Refusal(200, "51202", "Market order amount exceeds the maximum amount.")
        px = Decimal(0)
        if ord_type not in ("market", "optimal_limit_ioc"):
            px_num = _num(args.get("px"))
            if px_num is None or px_num <= 0 or px_num % spec.tick_sz != 0:
                raise _Refusal(200, "51000", "Parameter px error")
            px = px_num
        cl = args.get("clOrdId", "")
        if cl != "" and (not isinstance(cl, str) or not _CL_ORD_ID_RE.match(cl)):
            raise _Refusal(200, "51000", "Parameter clOrdId error")
        tag = args.get("tag", "")
        if not isinstance(tag, str) or len(tag) > 16:
            raise _Refusal(200, "51000", "Parameter tag error")
        if cl:
            prev = account.by_cl_ord_id.get(cl)
            if prev is not None and prev.state in _PENDING:
                raise _Refusal(200, "51016", "Duplicated clOrdId")
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
                raise _Refusal(200, "51008", f"Order failed. Insufficient {ccy} balance in account.")
            return
        held = account.positions.get(spec.inst_id, SimPosition()).pos
        signed = sz if side == "buy" else -sz
        added = max(Decimal(0), abs(held + signed) - abs(held))
        need = added * spec.ct_val * price / self.leverage
        if self._available(account, spec.quote_ccy) < need:
            raise _Refusal(200, "51008", f"Order failed. Insufficient {spec.quote_ccy} margin in account")

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
                if order.inst_id != inst_id or order.state not in _PENDING:
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
        order = account.orders.get(ord_id) if ord_id else account.by_cl_ord_id.get(cl) if cl else None
        if order is not None and order.inst_id != args["instId"]:
            order = None
        echo_cl = cl if isinstance(cl, str) else ""
        echo_ord = ord_id if isinstance(ord_id, str) else ""
        if order is None:
            return {"clOrdId": echo_cl, "ordId": echo_ord, "ts": str(now), "sCode": "51400",
                    "sMsg": "Order cancellation failed as the order has been filled, canceled or does not exist."}
        if order.state == "filled":
            return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "51402",
                    "sMsg": "Order has been completed."}
        if order.state not in _PENDING:
            return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "51401",
                    "sMsg": "Order has been canceled."}
        self._finish(account, order, "canceled", "1")
        return {"clOrdId": order.cl_ord_id, "ordId": order.ord_id, "ts": str(now), "sCode": "0", "sMsg": ""}

    # -------------------------------------------------------------- reads

    def _order(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        inst_id = _q(query, "instId")
        if not inst_id:
            return 200, {"code": "50014", "msg": "Parameter instId can not be empty.", "data": []}, {}
        ord_id = _q(query, "ordId")
        cl = _q(query, "clOrdId")
        if not ord_id and not cl:
            return 200, {"code": "51000", "msg": "Parameter ordId or clOrdId error", "data": []}, {}
        order = account.orders.get(ord_id) if ord_id else account.by_cl_ord_id.get(cl)
        if order is None or order.inst_id != inst_id:
            return 200, {"code": "51603", "msg": "Order does not exist", "data": []}, {}
        return 200, {"code": "0", "msg": "", "data": [order.detail()]}, {}

    def _pending(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        rows = [o.detail() for o in reversed(list(account.orders.values()))
                if o.state in _PENDING and _matches(o.inst_id, query)]
        return 200, {"code": "0", "msg": "", "data": rows[: _limit(query)]}, {}

    def _fills(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        ord_id = _q(query, "ordId")
        after = _q(query, "after")
        before = _q(query, "before")
        rows = []
        for f in reversed(account.fills):
            if not _matches(f.order.inst_id, query) or (ord_id and f.order.ord_id != ord_id):
                continue
            if after and not (after.isdigit() and int(f.bill_id) < int(after)):
                continue
            if before and not (before.isdigit() and int(f.bill_id) > int(before)):
                continue
            rows.append(f.row())
        return 200, {"code": "0", "msg": "", "data": rows[: _limit(query)]}, {}

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
            if o.state not in _PENDING:
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

    def _balance(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        ccys = _q(query, "ccy")
        only = set(ccys.split(",")) if ccys else None
        return 200, {"code": "0", "msg": "", "data": [self.balance_data(account, only)]}, {}

    def _positions(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        rows = []
        now = self.now_ms()
        for inst_id, p in account.positions.items():
            if not _matches(inst_id, query):
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
        return 200, {"code": "0", "msg": "", "data": rows}, {}

    def _trade_fee(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        inst_type = _q(query, "instType")
        if inst_type not in INST_TYPES:
            return 200, {"code": "51000", "msg": "Parameter instType error", "data": []}, {}
        spot = inst_type in ("SPOT", "MARGIN")
        maker = self.spot_maker_fee if spot else self.maker_fee
        taker = self.spot_taker_fee if spot else self.taker_fee
        row = {"category": "1", "instType": inst_type, "level": "Lv1", "maker": fmt(-maker), "taker": fmt(-taker),
               "makerU": "" if spot else fmt(-maker), "takerU": "" if spot else fmt(-taker),
               "delivery": "", "exercise": "", "ts": str(self.now_ms())}
        return 200, {"code": "0", "msg": "", "data": [row]}, {}

    def _currencies(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        ccys: set[str] = set()
        for spec in self.specs.values():
            ccys.update((spec.base_ccy, spec.quote_ccy))
        rows = [{
            "ccy": ccy, "name": ccy, "chain": f"{ccy}-ERC20", "logoLink": "", "canDep": True, "canWd": False,
            "canInternal": False, "minDep": "0.00000001", "minWd": "0.001", "maxWd": "0", "wdTickSz": "8",
            "minFee": "0", "maxFee": "0", "mainNet": True, "needTag": False, "wdQuota": "0", "usedWdQuota": "0",
            "minDepArrivalConfirm": "12", "minWdUnlockConfirm": "12", "depQuotaFixed": "", "usedDepQuotaFixed": "",
        } for ccy in sorted(ccys)]
        return 200, {"code": "0", "msg": "", "data": rows}, {}

    # -------------------------------------------------------------- WebSocket

    def open_session(self, conn_id: str, send: Callable[[str], None], push: Callable[[str], None]) -> PrivateSession:
        session = PrivateSession(conn_id, send, push)
        self.sessions.add(session)
        return session

    def close_session(self, session: PrivateSession) -> None:
        self.sessions.discard(session)

    def on_ws(self, session: PrivateSession, msg: dict[str, Any], text: str) -> None:
        """One JSON request on a private connection."""
        op = msg.get("op")
        req_id = msg.get("id")
        args = msg.get("args")
        if op == "login":
            self._login(session, args)
        elif op in ("subscribe", "unsubscribe"):
            self._ws_subscribe(session, op, args, req_id)
        elif op in ("order", "cancel-order", "batch-orders"):
            asyncio.get_running_loop().create_task(self._ws_order_op(session, op, req_id, args))
        else:
            self._ws_error(session, req_id, "60012", f"Invalid request: {text[:200]}")

    def _ws_error(self, session: PrivateSession, req_id: Any, code: str, msg: str) -> None:
        body: dict[str, object] = {}
        if isinstance(req_id, str):
            body["id"] = req_id
        body.update({"event": "error", "code": code, "msg": msg, "connId": session.conn_id})
        session.send(_dumps(body))

    def _login(self, session: PrivateSession, args: Any) -> None:
        if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
            self._ws_error(session, None, "60012", "Invalid request")
            return
        a = args[0]
        key, passphrase, stamp, signature = (a.get(k) for k in ("apiKey", "passphrase", "timestamp", "sign"))
        if not all(isinstance(v, str) and v for v in (key, passphrase, stamp, signature)):
            self._ws_error(session, None, "60012", "Invalid request")
            return
        assert isinstance(key, str) and isinstance(stamp, str) and isinstance(signature, str)
        try:
            seconds = float(stamp)
        except ValueError:
            self._ws_error(session, None, "60006", "Timestamp request expired")
            return
        if abs(self.now_ms() / 1000 - seconds) > 30:
            self._ws_error(session, None, "60006", "Timestamp request expired")
            return
        account = self.accounts.get(key)
        if account is None:
            self.auth_failures.append("60005")
            self._ws_error(session, None, "60005", "Invalid OK-ACCESS-KEY")
            return
        if passphrase != account.passphrase:
            self.auth_failures.append("60024")
            self._ws_error(session, None, "60024", "Wrong passphrase")
            return
        if not hmac.compare_digest(signature, sign(account.secret, f"{stamp}GET{LOGIN_PATH}")):
            self.auth_failures.append("60007")
            self._ws_error(session, None, "60007", "Invalid sign")
            return
        session.account = account
        session.send(_dumps({"event": "login", "code": "0", "msg": "", "connId": session.conn_id}))

    def _ws_subscribe(self, session: PrivateSession, op: str, args: Any, req_id: Any) -> None:
        if session.account is None:
            self._ws_error(session, req_id, "60011", "Please log in")
            return
        if not isinstance(args, list) or not args:
            self._ws_error(session, req_id, "60012", "Invalid request")
            return
        for arg in args:
            if not isinstance(arg, dict) or arg.get("channel") != "orders" or arg.get("instType") not in (
                *INST_TYPES, "ANY"
            ):
                self._ws_error(session, req_id, "60018",
                               f"Wrong URL or channel:{arg.get('channel') if isinstance(arg, dict) else arg}, "
                               "Please use the correct URL, channel and parameters referring to API document.")
                continue
            clean = {k: v for k, v in arg.items() if k in ("channel", "instType", "instFamily", "instId")
                     and isinstance(v, str)}
            key = (clean["instType"], clean.get("instId", ""))
            ack: dict[str, object] = {"id": req_id} if isinstance(req_id, str) else {}
            ack.update({"event": op, "arg": clean, "connId": session.conn_id})
            if op == "subscribe":
                session.subs[key] = clean
                session.send(_dumps(ack))
                session.send(_dumps({"event": "channel-conn-count", "channel": "orders", "connCount": "1",
                                     "connId": session.conn_id}))
            else:
                session.subs.pop(key, None)
                session.send(_dumps(ack))

    async def _ws_order_op(self, session: PrivateSession, op: str, req_id: Any, args: Any) -> None:
        in_time = _us()
        account = session.account
        if account is None:
            session.send(_dumps({"id": req_id, "op": op, "code": "60011", "msg": "Please log in", "data": []}))
            return
        if not isinstance(req_id, str) or not _CL_ORD_ID_RE.match(req_id) or not isinstance(args, list) or not args:
            session.send(_dumps({"id": req_id if isinstance(req_id, str) else "", "op": op, "code": "60012",
                                 "msg": "Invalid request", "data": []}))
            return
        hang = self.faults.hang_next > 0
        processed = True
        if hang:
            self.faults.hang_next -= 1
            processed = self.faults.hang_processed
        if not processed:
            return  # lost on the way: no order, no answer
        if op == "cancel-order":
            acks = [self.cancel_order(account, a) for a in args[:1]]
        else:
            acks = [self.place_order(account, a) for a in (args[:1] if op == "order" else args[:20])]
        good = sum(a["sCode"] == "0" for a in acks)
        code = "0" if good == len(acks) else ("1" if good == 0 else "2")
        msg = {"0": "", "1": "All operations failed", "2": "Bulk operation partially succeeded."}[code]
        if hang:
            await asyncio.sleep(self.faults.hang_s)
        self.order_ops_answered += 1
        session.send(_dumps({"id": req_id, "op": op, "code": code, "msg": msg, "data": acks,
                             "inTime": in_time, "outTime": _us()}))

    def _push(self, account: OkxSimAccount, order: SimOrder, *, fill: bool) -> None:
        detail = order.detail(fill_fields=fill)
        inst_type = inst_type_of(order.inst_id)
        for session in list(self.sessions):
            if session.account is not account:
                continue
            for (sub_type, sub_inst), arg in session.subs.items():
                if sub_type not in ("ANY", inst_type) or (sub_inst and sub_inst != order.inst_id):
                    continue
                push_arg = dict(arg)
                push_arg["uid"] = account.uid
                session.push(_dumps({"arg": push_arg, "data": [detail]}))
                break


_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/api/v5/trade/order"): "place",
    ("POST", "/api/v5/trade/batch-orders"): "batch",
    ("POST", "/api/v5/trade/cancel-order"): "cancel",
    ("GET", "/api/v5/trade/order"): "order",
    ("GET", "/api/v5/trade/orders-pending"): "pending",
    ("GET", "/api/v5/trade/fills"): "fills",
    ("GET", "/api/v5/account/balance"): "balance",
    ("GET", "/api/v5/account/positions"): "positions",
    ("GET", "/api/v5/account/trade-fee"): "trade_fee",
    ("GET", "/api/v5/asset/currencies"): "currencies",
}


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _us() -> str:
    return str(time.time_ns() // 1000)


def _q(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    return values[0] if values else ""


def _limit(query: dict[str, list[str]]) -> int:
    text = _q(query, "limit")
    return min(100, int(text)) if text.isdigit() and int(text) > 0 else 100


def _matches(inst_id: str, query: dict[str, list[str]]) -> bool:
    inst_type = _q(query, "instType")
    want = _q(query, "instId")
    return (not inst_type or inst_type_of(inst_id) == inst_type) and (not want or want == inst_id)


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


def _rate_limited() -> Answer:
    return 429, {"msg": "Too Many Requests", "code": "50011"}, {}


def _not_found() -> dict[str, object]:
    return {"code": 404, "data": {}, "detailMsg": "", "error_code": "404", "error_message": "Not Found",
            "msg": "Not Found"}


__all__ = [
    "INST_TYPES", "PRIVATE_WS_PATH", "RATE_LIMITS", "OkxPrivateVenue", "OkxSimAccount", "PrivateFaults",
    "PrivateSession", "SimInstrumentSpec", "default_spec", "fmt", "inst_type_of", "spec_from_instrument",
]  # fmt: skip
