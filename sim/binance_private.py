"""The simulated Binance private REST API (spot `/api/v3`, USD-M `/fapi`), from the docs.

Security is checked as the venue checks it, in its order:

1. the API key (`X-MBX-APIKEY`): missing or malformed -> -2014 "API-key format invalid.",
   well formed but not ours -> -2015 "Invalid API-key, IP, or permissions for action." (401);
2. `timestamp` and `signature` present (-1102), `recvWindow` at most 60000 (-1131);
3. the timestamp: accepted when `timestamp < server + 1000` and `server - timestamp <=
   recvWindow` (default 5000), else -1021 (400);
4. the signature: lowercase-or-uppercase hex HMAC-SHA256 of the secret over the query string
   as sent concatenated with the body as sent, the `signature` parameter taken out (-1022).

Every answer carries `X-MBX-USED-WEIGHT-1M` (request weight used this minute of the server
clock); orders carry `X-MBX-ORDER-COUNT-10S` and `-1D` (spot) or `-1M` (USD-M). Over the
weight limit a request gets 429 -1003 with `Retry-After`; a client that keeps sending during
the wait is banned: 418 -1003 "IP banned until ..." with `Retry-After`.

Fault switches (`PrivateFaults`, change them at any time): the next N orders time out (the
answer never comes; the order executed or not, as chosen), 5xx answers whose execution status
is unknown, forced 429s and bans, forced duplicate-client-id refusals, and a server clock skew.

The spot listenKey endpoints (`/api/v3/userDataStream`) were retired on 2026-02-20: they
answer 410 here, so a client still using them fails loudly. The few `/sapi` endpoints a
widely used client reads while loading markets (capital config, margin pairs) answer from
the listed symbols, and the other market families' `exchangeInfo` answer an empty symbol list.
`/sapi/v1/account/apiRestrictions` reports the key's switches (`api_restrictions`, settable;
trading enabled for the simulated market, withdrawals off); they are reported, not enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

from sim.binance_exchange import ApiError, BinanceExchange, BinanceMarket, mandatory
from sim.http_front import HttpRequest, HttpResponse

_KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{64}$")
_MAX_RECV_WINDOW = 60_000
_BAN_AFTER_IGNORED = 3  # requests sent while told to wait before the IP is banned
_BAN_S = 120

Security = Literal["NONE", "USER_STREAM", "SIGNED"]


@dataclass(frozen=True, slots=True)
class SimCredentials:
    """The one account's key. `ed25519_public_pem` enables `session.logon` on the WebSocket API."""

    api_key: str
    secret: str = field(repr=False)
    ed25519_public_pem: bytes | None = field(default=None, repr=False)


@dataclass(eq=False)
class PrivateFaults:
    """Fault switches of the private API (REST and WebSocket API alike)."""

    # The next N order placements get no answer: held `timeout_hold_s`, then the connection
    # drops. `timeout_executes` decides whether the venue executed them meanwhile.
    timeout_orders: int = 0
    timeout_executes: bool = True
    timeout_hold_s: float = 30.0
    # The next N order placements get a 5xx: status unknown ("Unknown error, please check your
    # request or try again later."); `error_executes` decides whether they executed.
    error_orders: int = 0
    error_status: int = 503
    error_executes: bool = False
    # The next N requests of any kind are refused 429 -1003 with Retry-After.
    rate_limit_requests: int = 0
    rate_limit_retry_after_s: int = 2
    # The next N order placements are refused as duplicates (-2010 spot, -4116 USD-M).
    duplicate_orders: int = 0
    # Added to the server's clock when checking timestamps and in `time`.
    clock_skew_ms: int = 0

    def clear(self) -> None:
        self.timeout_orders = 0
        self.error_orders = 0
        self.rate_limit_requests = 0
        self.duplicate_orders = 0
        self.clock_skew_ms = 0


class RateMeter:
    """Request weight per minute of the server clock, order counts, and the IP ban."""

    def __init__(self, now_ms: Callable[[], int], weight_limit: int) -> None:
        self._now_ms = now_ms
        self.weight_limit = weight_limit
        self._minute = -1
        self.used = 0
        self._ten_s = -1
        self.orders_10s = 0
        self._day = -1
        self.orders_1d = 0
        self.orders_1m = 0
        self._order_minute = -1
        self.wait_until_ms = 0  # a 429 told the client to wait until then
        self.banned_until_ms = 0
        self.ignored = 0
        self.rejected_429 = 0
        self.rejected_418 = 0

    def _roll(self, now: int) -> None:
        minute = now // 60_000
        if minute != self._minute:
            self._minute, self.used = minute, 0

    def charge(self, weight: int) -> None:
        now = self._now_ms()
        self._roll(now)
        self.used += weight

    def count_order(self) -> None:
        now = self._now_ms()
        if now // 10_000 != self._ten_s:
            self._ten_s, self.orders_10s = now // 10_000, 0
        if now // 86_400_000 != self._day:
            self._day, self.orders_1d = now // 86_400_000, 0
        if now // 60_000 != self._order_minute:
            self._order_minute, self.orders_1m = now // 60_000, 0
        self.orders_10s += 1
        self.orders_1d += 1
        self.orders_1m += 1

    def gate(self, weight: int) -> ApiError | tuple[ApiError, int] | None:
        """None to serve; else the refusal and its Retry-After (seconds)."""
        now = self._now_ms()
        self._roll(now)
        if now < self.banned_until_ms:
            self.rejected_418 += 1
            return _ban_error(self.banned_until_ms), _seconds_until(now, self.banned_until_ms)
        if now < self.wait_until_ms:
            self.ignored += 1
            if self.ignored >= _BAN_AFTER_IGNORED:
                self.banned_until_ms = now + _BAN_S * 1000
                self.rejected_418 += 1
                return _ban_error(self.banned_until_ms), _BAN_S
        if self.used + weight > self.weight_limit:
            self.used += weight
            self.wait_until_ms = (now // 60_000 + 1) * 60_000
            self.rejected_429 += 1
            return _weight_error(self.weight_limit), _seconds_until(now, self.wait_until_ms)
        return None

    def told_to_wait(self, retry_after_s: int) -> None:
        self.wait_until_ms = self._now_ms() + retry_after_s * 1000
        self.rejected_429 += 1


def _seconds_until(now: int, until: int) -> int:
    return max(1, -(-(until - now) // 1000))


def _weight_error(limit: int) -> ApiError:
    return ApiError(429, -1003, f"Too much request weight used; current limit is {limit} request weight per "
                                "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.")


def _ban_error(until_ms: int) -> ApiError:
    return ApiError(418, -1003, f"Way too much request weight used; IP banned until {until_ms}. "
                                "Please use WebSocket Streams for live updates to avoid bans.")


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), sha256).hexdigest()


def check_key(credentials: SimCredentials, api_key: str | None) -> None:
    if api_key is None or not api_key:
        raise ApiError(401, -2014, "API-key format invalid.")
    if api_key == credentials.api_key:
        return
    if not _KEY_FORMAT.fullmatch(api_key):
        raise ApiError(401, -2014, "API-key format invalid.")
    raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def check_timestamp(params: Mapping[str, str], server_ms: int) -> None:
    """recvWindow and timestamp as the venue checks them (-1102, -1131, -1021)."""
    raw = params.get("timestamp")
    if not raw or not (raw.isascii() and raw.isdigit()):
        raise mandatory("timestamp")
    stamp = int(raw)
    if stamp > 10**14:  # microseconds are accepted too
        stamp //= 1000
    window_raw = params.get("recvWindow") or "5000"
    try:
        window = float(window_raw)
    except ValueError:
        raise mandatory("recvWindow") from None
    if not 0 < window <= _MAX_RECV_WINDOW:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    if stamp >= server_ms + 1000:
        raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if server_ms - stamp > window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def split_signature(raw: str) -> tuple[str, str | None, int]:
    """The raw parameter string without `signature`, the signature, and how often it came."""
    kept: list[str] = []
    signature: str | None = None
    count = 0
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = unquote(part[len("signature="):])
            count += 1
        else:
            kept.append(part)
    return "&".join(kept), signature, count


@dataclass(frozen=True, slots=True)
class Route:
    weight: int
    security: Security
    handler: Callable[[dict[str, str]], Any]
    order: bool = False  # counts toward the order rate limits


class BinancePrivateRest:
    """The HTTP handler of one simulated market (spot or USD-M), public and private paths."""

    def __init__(
        self,
        exchange: BinanceExchange,
        credentials: SimCredentials,
        *,
        faults: PrivateFaults,
        meter: RateMeter,
        public_rest: Callable[[str, dict[str, list[str]]], tuple[int, object]] | None = None,
    ) -> None:
        self.exchange = exchange
        self.credentials = credentials
        self.faults = faults
        self.meter = meter
        self._public_rest = public_rest
        self.market: BinanceMarket = exchange.market
        # GET /sapi/v1/account/apiRestrictions: the key's switches (reported, not enforced).
        self.api_restrictions: dict[str, bool] = {
            "ipRestrict": False, "enableReading": True, "enableWithdrawals": False, "enableInternalTransfer": False,
            "enableMargin": False, "enableFutures": self.market == "usdm", "permitsUniversalTransfer": False,
            "enableVanillaOptions": False, "enableFixApiTrade": False, "enableFixReadOnly": False,
            "enableSpotAndMarginTrading": self.market == "spot", "enablePortfolioMarginTrading": False,
        }
        self.routes = self._routes()
        self.orders_received = 0
        self.requests_served = 0
        self._held: set[asyncio.Task[None]] = set()

    def server_ms(self) -> int:
        return self.exchange.clock.time_ms() + self.faults.clock_skew_ms

    # ------------------------------------------------------------------ routes

    def _routes(self) -> dict[tuple[str, str], Route]:
        ex = self.exchange
        empty_info = {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "exchangeFilters": [], "symbols": []}

        def time_(_: dict[str, str]) -> Any:
            return {"serverTime": self.server_ms()}

        def other_family(_: dict[str, str]) -> Any:
            return {**empty_info, "serverTime": self.server_ms()}

        shared: dict[tuple[str, str], Route] = {
            ("GET", "/sapi/v1/capital/config/getall"): Route(10, "SIGNED", self._capital_config),
            ("GET", "/sapi/v1/margin/allPairs"): Route(1, "USER_STREAM", lambda _: []),
            ("GET", "/sapi/v1/margin/isolated/allPairs"): Route(10, "SIGNED", lambda _: []),
            ("GET", "/sapi/v1/account/apiRestrictions"): Route(1, "SIGNED", self._restrictions),
        }
        if self.market == "spot":
            return {
                **shared,
                ("GET", "/api/v3/ping"): Route(1, "NONE", lambda _: {}),
                ("GET", "/api/v3/time"): Route(1, "NONE", time_),
                ("GET", "/api/v3/exchangeInfo"): Route(20, "NONE", lambda _: ex.exchange_info()),
                ("POST", "/api/v3/order"): Route(1, "SIGNED", ex.new_order, order=True),
                ("GET", "/api/v3/order"): Route(4, "SIGNED", ex.query_order),
                ("DELETE", "/api/v3/order"): Route(1, "SIGNED", ex.cancel_order),
                ("GET", "/api/v3/openOrders"): Route(6, "SIGNED", ex.open_orders),
                ("GET", "/api/v3/myTrades"): Route(20, "SIGNED", ex.trade_list),
                ("GET", "/api/v3/account"): Route(20, "SIGNED", ex.spot_account),
                ("GET", "/api/v3/account/commission"): Route(20, "SIGNED", ex.spot_commission),
                ("GET", "/fapi/v1/exchangeInfo"): Route(1, "NONE", other_family),
                ("GET", "/dapi/v1/exchangeInfo"): Route(1, "NONE", other_family),
            }
        return {
            **shared,
            ("GET", "/fapi/v1/ping"): Route(1, "NONE", lambda _: {}),
            ("GET", "/fapi/v1/time"): Route(1, "NONE", time_),
            ("GET", "/fapi/v1/exchangeInfo"): Route(1, "NONE", lambda _: ex.exchange_info()),
            ("POST", "/fapi/v1/order"): Route(0, "SIGNED", ex.new_order, order=True),
            ("GET", "/fapi/v1/order"): Route(1, "SIGNED", ex.query_order),
            ("DELETE", "/fapi/v1/order"): Route(1, "SIGNED", ex.cancel_order),
            ("GET", "/fapi/v1/openOrders"): Route(1, "SIGNED", ex.open_orders),
            ("GET", "/fapi/v1/userTrades"): Route(5, "SIGNED", ex.trade_list),
            ("GET", "/fapi/v2/account"): Route(5, "SIGNED", ex.futures_account),
            ("GET", "/fapi/v3/account"): Route(5, "SIGNED", ex.futures_account),
            ("GET", "/fapi/v2/balance"): Route(5, "SIGNED", ex.futures_balance),
            ("GET", "/fapi/v3/balance"): Route(5, "SIGNED", ex.futures_balance),
            ("GET", "/fapi/v2/positionRisk"): Route(5, "SIGNED", ex.position_risk),
            ("GET", "/fapi/v3/positionRisk"): Route(5, "SIGNED", ex.position_risk),
            ("GET", "/fapi/v1/commissionRate"): Route(20, "SIGNED", ex.futures_commission),
            ("POST", "/fapi/v1/listenKey"): Route(1, "USER_STREAM", lambda _: {"listenKey": ex.new_listen_key()}),
            ("PUT", "/fapi/v1/listenKey"): Route(1, "USER_STREAM", self._keepalive),
            ("DELETE", "/fapi/v1/listenKey"): Route(1, "USER_STREAM", self._close_key),
            ("GET", "/api/v3/exchangeInfo"): Route(20, "NONE", other_family),
            ("GET", "/dapi/v1/exchangeInfo"): Route(1, "NONE", other_family),
        }

    def _keepalive(self, params: dict[str, str]) -> Any:
        self.exchange.keepalive_listen_key(params.get("listenKey"))
        return {"listenKey": params.get("listenKey") or next(iter(self.exchange.listen_keys), "")}

    def _close_key(self, params: dict[str, str]) -> Any:
        self.exchange.close_listen_key(params.get("listenKey"))
        return {}

    def _restrictions(self, _: dict[str, str]) -> Any:
        trading = self.api_restrictions.get("enableSpotAndMarginTrading", False)
        return {**self.api_restrictions, "createTime": 1_700_000_000_000,
                **({"tradingAuthorityExpirationTime": 1_900_000_000_000} if trading else {})}

    def _capital_config(self, _: dict[str, str]) -> Any:
        assets = sorted({s.base for s in self.exchange.symbols.values()} | {"USDT"})
        return [
            {"coin": a, "name": a, "depositAllEnable": True, "withdrawAllEnable": True, "free": "0", "locked": "0",
             "freeze": "0", "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False,
             "trading": True,
             "networkList": [{"network": a if a != "USDT" else "ETH", "coin": a,
                              "withdrawIntegerMultiple": "0.00000001",
                              "isDefault": True, "depositEnable": True, "withdrawEnable": True, "depositDesc": "",
                              "withdrawDesc": "", "specialTips": "", "name": a, "resetAddressStatus": False,
                              "addressRegex": "", "memoRegex": "", "withdrawFee": "0.0005", "withdrawMin": "0.001",
                              "withdrawMax": "9999999", "minConfirm": 1, "unLockConfirm": 2, "sameAddress": False,
                              "estimatedArrivalTime": 5, "busy": False}]}
            for a in assets
        ]

    # ------------------------------------------------------------------ HTTP

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests_served += 1
        route = self.routes.get((request.method, request.path))
        if route is None:
            return self._unrouted(request)
        gate = self.meter.gate(route.weight)
        if gate is not None:
            error, retry_after = gate if isinstance(gate, tuple) else (gate, 1)
            return self._error(error, retry_after=retry_after)
        self.meter.charge(route.weight)
        if self.faults.rate_limit_requests > 0:
            self.faults.rate_limit_requests -= 1
            retry = self.faults.rate_limit_retry_after_s
            self.meter.told_to_wait(retry)
            return self._error(_weight_error(self.meter.weight_limit), retry_after=retry)
        try:
            params = self._params(request)
            if route.security != "NONE":
                check_key(self.credentials, request.header("X-MBX-APIKEY"))
            if route.security == "SIGNED":
                self._check_signed(request, params)
            if route.order:
                return await self._order(route, params)
            return self._ok(route.handler(params))
        except ApiError as error:
            return self._error(error)

    async def _order(self, route: Route, params: dict[str, str]) -> HttpResponse:
        self.orders_received += 1
        self.meter.count_order()
        faults = self.faults
        if faults.duplicate_orders > 0:
            faults.duplicate_orders -= 1
            if self.market == "spot":
                raise ApiError(400, -2010, "Duplicate order sent.")
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        if faults.timeout_orders > 0:
            faults.timeout_orders -= 1
            if faults.timeout_executes:
                with contextlib.suppress(ApiError):
                    route.handler(params)
            await asyncio.sleep(faults.timeout_hold_s)
            return HttpResponse(504, drop=True)
        if faults.error_orders > 0:
            faults.error_orders -= 1
            if faults.error_executes:
                with contextlib.suppress(ApiError):
                    route.handler(params)
            return self._error(ApiError(faults.error_status, -1000 if faults.error_status != 503 else -1006,
                                        "Unknown error, please check your request or try again later."))
        response = self._ok(route.handler(params))
        response.headers += self._order_headers()
        return response

    def _check_signed(self, request: HttpRequest, params: dict[str, str]) -> None:
        query, sig_q, n_q = split_signature(request.raw_query)
        body_raw = request.body.decode("latin-1") if request.body else ""
        body, sig_b, n_b = split_signature(body_raw)
        if n_q + n_b == 0 or not (sig_q or sig_b):
            raise mandatory("signature")
        if n_q + n_b > 1:
            raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
        check_timestamp(params, self.server_ms())
        signature = (sig_q or sig_b or "").lower()
        expected = hmac_hex(self.credentials.secret, query + body)
        if not hmac.compare_digest(signature, expected):
            raise ApiError(400, -1022, "Signature for this request is not valid.")

    def _params(self, request: HttpRequest) -> dict[str, str]:
        pairs = parse_qsl(request.raw_query, keep_blank_values=True)
        if request.body:
            content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
            if content_type not in ("", "application/x-www-form-urlencoded"):
                raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            pairs += parse_qsl(request.body.decode("latin-1"), keep_blank_values=True)
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in params:
                raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
            params[name] = value
        return params

    def _unrouted(self, request: HttpRequest) -> HttpResponse:
        if self.market == "spot" and request.path == "/api/v3/userDataStream":
            return self._json(410, {"code": -1099, "msg": "The listenKey user data stream was retired on "
                                                          "2026-02-20; use userDataStream.subscribe on the "
                                                          "WebSocket API."})
        if request.method == "GET" and self._public_rest is not None:
            self.meter.charge(2)
            status, body = self._public_rest(request.path, request.query)
            return self._json(status, body)
        return self._json(404, {"code": -1000 if request.method == "GET" else -1099, "msg": "Not Found"})

    # ------------------------------------------------------------------ rendering

    def _weight_headers(self) -> list[tuple[str, str]]:
        return [("X-MBX-USED-WEIGHT-1M", str(self.meter.used))]

    def _order_headers(self) -> list[tuple[str, str]]:
        m = self.meter
        if self.market == "spot":
            return [("X-MBX-ORDER-COUNT-10S", str(m.orders_10s)), ("X-MBX-ORDER-COUNT-1D", str(m.orders_1d))]
        return [("X-MBX-ORDER-COUNT-10S", str(m.orders_10s)), ("X-MBX-ORDER-COUNT-1M", str(m.orders_1m))]

    def _json(self, status: int, body: object) -> HttpResponse:
        data = json.dumps(body, separators=(",", ":")).encode()
        return HttpResponse(status, data, headers=self._weight_headers())

    def _ok(self, body: object) -> HttpResponse:
        return self._json(200, body)

    def _error(self, error: ApiError, *, retry_after: int | None = None) -> HttpResponse:
        response = self._json(error.http_status, error.body())
        if retry_after is not None:
            response.headers.append(("Retry-After", str(retry_after)))
        return response


__all__ = [
    "BinancePrivateRest",
    "PrivateFaults",
    "RateMeter",
    "Route",
    "SimCredentials",
    "check_key",
    "check_timestamp",
    "hmac_hex",
    "split_signature",
]
