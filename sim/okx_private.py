"""The private API of the OKX simulator: signed REST and the private WebSocket, over `OkxExchange`.

Written from the OKX v5 documentation (venue-protocols.md B), never from the client code it
checks. `OkxPrivateVenue` answers the signed REST endpoints and `/ws/v5/private` of
`sim.okx_server.OkxSimServer`; the books (orders, matching, balances, positions) are
`sim.okx_accounts.OkxExchange`.

- Authentication exactly as OKX checks it: OK-ACCESS-KEY / SIGN / TIMESTAMP / PASSPHRASE, the
  base64 HMAC-SHA256 of `timestamp + METHOD + requestPath(+query) + body`, the timestamp within
  30 s of server time, the `x-simulated-trading` header matching the key's environment. A bad
  request gets OKX's own code (50103-50107, 50111-50113, 50102, 50101, HTTP 401).
- REST: place, batch-orders, cancel-order, order, orders-pending, fills, account balance,
  positions, trade-fee and config (the key's `perm`, `acctLv` and `posMode`, as set on the
  account; reported, not enforced), asset currencies, and public instruments for every instType.
- Private WebSocket: `login` (signature over `ts + "GET" + "/users/self/verify"`), `orders`
  channel pushes, and the `order` / `cancel-order` / `batch-orders` operations.
- Fault switches (`PrivateFaults`): hold answers past a client's timeout (processed or not),
  5xx answers (processed or not), 50011 rate limits, clock skew; a real sliding-window rate
  limit per key and endpoint is always on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.clock import Clock
from sim.market import SimTick
from sim.okx_accounts import (
    CL_ORD_ID_RE,
    INST_TYPES,
    PENDING,
    OkxExchange,
    OkxSimAccount,
    Refusal,
    SimInstrumentSpec,
    SimOrder,
    inst_type_of,
)

PRIVATE_WS_PATH = "/ws/v5/private"
LOGIN_PATH = "/users/self/verify"
_SECONDS_RE = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_WINDOW_S = 2.0
# The latest private REST requests kept for tests to read (a bound, not a history).
REQUEST_LOG_KEPT = 200
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
    "/api/v5/account/config": 5,
    "/api/v5/asset/currencies": 6,
    "/api/v5/public/instruments": 20,
}
Answer = tuple[int, object, dict[str, str]]


def sign(secret: str, prehash: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()


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
    - `duplicate_next`: the next N orders are refused with 51016 (duplicate clOrdId) unplaced,
      as if another order with the id were pending.
    """

    hang_next: int = 0
    hang_s: float = 5.0
    hang_processed: bool = True
    server_error_next: int = 0
    server_error_processed: bool = True
    rate_limit_next: int = 0
    clock_skew_ms: int = 0
    duplicate_next: int = 0

    def clear(self) -> None:
        self.hang_next = 0
        self.server_error_next = 0
        self.rate_limit_next = 0
        self.clock_skew_ms = 0
        self.duplicate_next = 0


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
    """The signed REST and private WebSocket of the simulated OKX; transport-free (the server
    calls it), over the books of `exchange`."""

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
        self.faults = PrivateFaults()
        self.exchange = OkxExchange(self.now_ms, book, specs, taker_fee=taker_fee, maker_fee=maker_fee,
                                    spot_taker_fee=spot_taker_fee, spot_maker_fee=spot_maker_fee, leverage=leverage)
        self.exchange.on_change = self._push
        self.rate_limits = dict(RATE_LIMITS if rate_limits is None else rate_limits)
        self.sessions: set[PrivateSession] = set()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._list_time = clock.time_ms()
        # Counters for tests.
        self.order_ops_answered = 0
        self.auth_failures: list[str] = []
        # (monotonic arrival, method, path, HTTP status) of the latest private REST requests.
        self.request_log: deque[tuple[float, str, str, int]] = deque(maxlen=REQUEST_LOG_KEPT)

    # -------------------------------------------------------------- the books

    @property
    def accounts(self) -> dict[str, OkxSimAccount]:
        return self.exchange.accounts

    @property
    def specs(self) -> dict[str, SimInstrumentSpec]:
        return self.exchange.specs

    @property
    def orders_received(self) -> int:
        return self.exchange.orders_received

    def add_account(self, api_key: str, secret: str, passphrase: str, *,
                    balances: Mapping[str, Decimal | str | int] | None = None, demo: bool = False) -> OkxSimAccount:
        """A key with its account; default balance 100 000 USDT."""
        return self.exchange.add_account(api_key, secret, passphrase, balances=balances, demo=demo)

    def place_order(self, account: OkxSimAccount, args: Any) -> dict[str, str]:
        if self.faults.duplicate_next > 0:
            self.faults.duplicate_next -= 1
            cl = args.get("clOrdId", "") if isinstance(args, dict) else ""
            return {"clOrdId": cl if isinstance(cl, str) else "", "ordId": "", "tag": "", "ts": str(self.now_ms()),
                    "sCode": "51016", "sMsg": "Duplicated clOrdId", "subCode": ""}
        return self.exchange.place_order(account, args)

    def cancel_order(self, account: OkxSimAccount, args: Any) -> dict[str, str]:
        return self.exchange.cancel_order(account, args)

    def on_book(self, inst_id: str) -> None:
        self.exchange.on_book(inst_id)

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
        except Refusal as refusal:
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
            raise Refusal(401, "50103", "Request header OK-ACCESS-KEY can not be empty.")
        if not passphrase:
            raise Refusal(401, "50104", "Request header OK-ACCESS-PASSPHRASE can not be empty.")
        if not signature:
            raise Refusal(401, "50106", "Request header OK-ACCESS-SIGN can not be empty.")
        if not stamp:
            raise Refusal(401, "50107", "Request header OK-ACCESS-TIMESTAMP can not be empty.")
        if not _ISO_RE.match(stamp):
            raise Refusal(401, "50112", "Invalid OK-ACCESS-TIMESTAMP")
        try:
            sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise Refusal(401, "50112", "Invalid OK-ACCESS-TIMESTAMP") from None
        sent_ms = int(sent.timestamp() * 1000)
        if abs(self.now_ms() - sent_ms) > 30_000:
            raise Refusal(401, "50102", "Timestamp request expired")
        account = self.accounts.get(key)
        if account is None:
            raise Refusal(401, "50111", "Invalid OK-ACCESS-KEY")
        demo = headers.get("x-simulated-trading", "") == "1"
        if demo != account.demo:
            raise Refusal(401, "50101", "APIKey does not match current environment.")
        if not hmac.compare_digest(passphrase, account.passphrase):
            raise Refusal(401, "50105", "Request header OK-ACCESS-PASSPHRASE incorrect.")
        text = body.decode("utf-8", "replace")
        expected = sign(account.secret, f"{stamp}{method.upper()}{target}{text}")
        if not hmac.compare_digest(signature, expected):
            raise Refusal(401, "50113", "Invalid Sign")
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
                if o.state in PENDING and _matches(o.inst_id, query)]
        return 200, {"code": "0", "msg": "", "data": rows[: _limit(query)]}, {}

    def _fills(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        """The newest `limit` fills that pass the filters, newest first (`after`/`before`: older/newer
        than that billId). Stops once `limit` rows are built: a row is ~15 strings, and the engine
        reads this every reconcile pass, when ~1,300 fills are kept at the soak's rate (issue 19)."""
        ord_id = _q(query, "ordId")
        after = _q(query, "after")
        before = _q(query, "before")
        limit = _limit(query)
        rows: list[dict[str, str]] = []
        for f in reversed(account.fills):
            if not _matches(f.order.inst_id, query) or (ord_id and f.order.ord_id != ord_id):
                continue
            if after and not (after.isdigit() and int(f.bill_id) < int(after)):
                continue
            if before and not (before.isdigit() and int(f.bill_id) > int(before)):
                continue
            rows.append(f.row())
            if len(rows) >= limit:
                break
        return 200, {"code": "0", "msg": "", "data": rows}, {}

    def _balance(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        ccys = _q(query, "ccy")
        only = set(ccys.split(",")) if ccys else None
        return 200, {"code": "0", "msg": "", "data": [self.exchange.balance_data(account, only)]}, {}

    def _positions(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        rows = self.exchange.position_rows(account, lambda inst_id: _matches(inst_id, query))
        return 200, {"code": "0", "msg": "", "data": rows}, {}

    def _trade_fee(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        inst_type = _q(query, "instType")
        if inst_type not in INST_TYPES:
            return 200, {"code": "51000", "msg": "Parameter instType error", "data": []}, {}
        return 200, {"code": "0", "msg": "", "data": [self.exchange.fee_row(inst_type)]}, {}

    def _account_config(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        """The documented fields; `perm`, `acctLv` and `posMode` from the account (settable)."""
        row = {
            "uid": account.uid, "mainUid": account.uid, "acctLv": account.acct_lv, "acctStpMode": "cancel_maker",
            "posMode": account.pos_mode, "autoLoan": False, "greeksType": "PA", "level": "Lv1", "levelTmp": "",
            "ctIsoMode": "automatic", "mgnIsoMode": "automatic", "roleType": "0", "traderInsts": [],
            "spotRoleType": "0", "spotTraderInsts": [], "opAuth": "0", "kycLv": "2", "label": "quantarb-sim",
            "ip": "", "perm": account.perm, "liquidationGear": "-1", "enableSpotBorrow": False,
            "spotBorrowAutoRepay": False, "type": "0", "settleCcy": "USDT", "settleCcyList": ["USDT"],
        }
        return 200, {"code": "0", "msg": "", "data": [row]}, {}

    def _currencies(self, account: OkxSimAccount, query: dict[str, list[str]], payload: object) -> Answer:
        return 200, {"code": "0", "msg": "", "data": self.exchange.currency_rows()}, {}

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
        if not _SECONDS_RE.match(stamp) or abs(self.now_ms() / 1000 - float(stamp)) > 30:
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
        if not isinstance(req_id, str) or not CL_ORD_ID_RE.match(req_id) or not isinstance(args, list) or not args:
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
    def _push(self, account: OkxSimAccount, order: SimOrder, fill: bool) -> None:
        """An order changed: push it on the `orders` channel of the account's sessions."""
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
    ("GET", "/api/v5/account/config"): "account_config",
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


def _rate_limited() -> Answer:
    return 429, {"msg": "Too Many Requests", "code": "50011"}, {}


def _not_found() -> dict[str, object]:
    return {"code": 404, "data": {}, "detailMsg": "", "error_code": "404", "error_message": "Not Found",
            "msg": "Not Found"}


__all__ = ["PRIVATE_WS_PATH", "RATE_LIMITS", "OkxPrivateVenue", "PrivateFaults", "PrivateSession"]
