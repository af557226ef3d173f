"""The simulated Binance WebSocket API and the USD-M listenKey user data stream, from the docs.

WebSocket API (spot `/ws-api/v3`, USD-M `/ws-fapi/v1`): one JSON request per text frame,
`{"id", "method", "params"}`, answered `{"id", "status", "result" | "error", "rateLimits"}`.
Signed methods (order.place, order.cancel, order.status, openOrders.status) carry `apiKey`,
`timestamp` and `signature`, the HMAC-SHA256 hex of every other parameter sorted by name as
`key=value&...` (the docs' own example is checked in the tests), unless the session logged
on: `session.logon` takes an Ed25519 signature (base64) over the same payload and needs the
account's Ed25519 public key. Spot user data: `userDataStream.subscribe.signature` (any
session, signed like a request) and `userDataStream.subscribe` (a logged-on session); events
arrive as `{"subscriptionId": n, "event": {...}}`. USD-M keeps its listenKey stream, served
on the 2026 `/private` route: `/private/ws/<listenKey>` or `/private/ws?listenKey=<key>`,
raw events (`ORDER_TRADE_UPDATE`, `ACCOUNT_UPDATE`, `listenKeyExpired`).

Faults: `drop_all()` closes every private connection abruptly; `drop_after_events` closes a
user data connection abruptly once it delivered that many events (the next one is lost:
a client must catch up over REST); `repeat_events` sends every event twice; the
`PrivateFaults` of the REST side apply to order.place.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sim.binance_exchange import RATE_LIMITS, ApiError, BinanceExchange, BinanceMarket, mandatory
from sim.binance_private import PrivateFaults, RateMeter, SimCredentials, check_key, check_timestamp, hmac_hex

log = logging.getLogger(__name__)

WS_API_PATH: dict[BinanceMarket, str] = {"spot": "/ws-api/v3", "usdm": "/ws-fapi/v1"}
_WEIGHTS = {"order.status": 4, "openOrders.status": 6, "userDataStream.subscribe": 2,
            "userDataStream.subscribe.signature": 2, "session.logon": 2}
_SIGNED = ("order.place", "order.cancel", "order.status", "openOrders.status")


def ws_payload(params: dict[str, Any]) -> str:
    """`key=value&...` over every parameter except `signature`, sorted by name."""
    return "&".join(f"{k}={_text(v)}" for k, v in sorted(params.items()) if k != "signature")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(10_000))  # None: drop
    logged_on: bool = False
    subscriptions: dict[int, int] = field(default_factory=dict)  # subscriptionId -> listener token
    next_subscription: int = 0
    events_sent: int = 0
    listen_key: str | None = None
    connected_ms: int = 0
    authorized_ms: int | None = None


class BinancePrivateWs:
    """The internal WebSocket server behind the venue port's private paths."""

    def __init__(
        self, exchange: BinanceExchange, credentials: SimCredentials, *, faults: PrivateFaults, meter: RateMeter
    ) -> None:
        self.exchange = exchange
        self.credentials = credentials
        self.faults = faults
        self.meter = meter
        self.market: BinanceMarket = exchange.market
        self.drop_after_events: int | None = None
        self.repeat_events = False
        self._server: Server | None = None
        self._conns: set[_Conn] = set()
        self._held: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections_accepted = 0
        self.requests = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None, max_size=1 << 16,
                                   server_header="quantarb-sim-binance")
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        for task in list(self._held):
            task.cancel()
        await asyncio.gather(*self._held, return_exceptions=True)
        server.close()
        await server.wait_closed()

    def owns(self, path: str) -> bool:
        return path == WS_API_PATH[self.market] or (self.market == "usdm" and path.startswith("/private/ws"))

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    @property
    def user_data_connections(self) -> int:
        return sum(1 for c in self._conns if c.subscriptions or c.listen_key)

    def drop_all(self) -> int:
        """Close every private connection abruptly (no close frame)."""
        conns = list(self._conns)
        for conn in conns:
            conn.ws.transport.abort()
        return len(conns)

    # ------------------------------------------------------------------ connection

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        url = urlsplit(request.path if request is not None else "")
        conn = _Conn(ws, connected_ms=self.exchange.clock.time_ms())
        if url.path.startswith("/private/ws"):
            key = url.path[len("/private/ws/"):] if url.path.startswith("/private/ws/") else None
            if key is None:
                key = (parse_qs(url.query).get("listenKey") or [""])[0]
            if not key or not self.exchange.listen_key_valid(key):
                await ws.close(1008, "Invalid listenKey")
                return
            conn.listen_key = key
            conn.subscriptions[0] = self.exchange.add_listener(self._raw_listener(conn))
        self.connections_accepted += 1
        self._conns.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for message in ws:
                if conn.listen_key is not None:
                    continue  # a user data stream takes no requests
                text = message if isinstance(message, str) else bytes(message).decode("utf-8", "replace")
                await self._request(conn, text)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            for token in conn.subscriptions.values():
                self.exchange.remove_listener(token)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _writer(self, conn: _Conn) -> None:
        while True:
            text = await conn.queue.get()
            if text is None:
                conn.ws.transport.abort()
                return
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                return

    def _raw_listener(self, conn: _Conn) -> Callable[[dict[str, Any]], None]:
        def listen(event: dict[str, Any]) -> None:
            self._deliver(conn, event, None)

        return listen

    def _deliver(self, conn: _Conn, event: dict[str, Any], subscription: int | None) -> None:
        limit = self.drop_after_events
        if limit is not None and conn.events_sent >= limit:
            # What was queued goes out first; this event is lost with the connection.
            with contextlib.suppress(asyncio.QueueFull):
                conn.queue.put_nowait(None)
            conn.events_sent += 1
            return
        conn.events_sent += 1
        frame = event if subscription is None else {"subscriptionId": subscription, "event": event}
        text = json.dumps(frame, separators=(",", ":"))
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(text)
            if self.repeat_events:  # the venue may deliver the same event more than once
                conn.queue.put_nowait(text)

    def _send(self, conn: _Conn, frame: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(json.dumps(frame, separators=(",", ":")))

    # ------------------------------------------------------------------ requests

    async def _request(self, conn: _Conn, text: str) -> None:
        self.requests += 1
        try:
            msg = json.loads(text)
        except ValueError:
            self._send(conn, {"id": None, "status": 400,
                              "error": {"code": -1100, "msg": "Illegal characters found in a parameter."}})
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            self._send(conn, {"id": msg.get("id") if isinstance(msg, dict) else None, "status": 400,
                              "error": {"code": -1102, "msg": "Mandatory parameter 'method' was not sent, was "
                                                              "empty/null, or malformed."}})
            return
        req_id = msg.get("id")
        method = str(msg["method"]).removeprefix("v3/").removeprefix("v1/")
        raw_params = msg.get("params") or {}
        if not isinstance(raw_params, dict):
            self._error(conn, req_id, ApiError(400, -1102, "Mandatory parameter 'params' was not sent, was "
                                                           "empty/null, or malformed."))
            return
        gate = self.meter.gate(_WEIGHTS.get(method, 1))
        if gate is not None:
            error, _retry = gate if isinstance(gate, tuple) else (gate, 1)
            until = max(self.meter.wait_until_ms, self.meter.banned_until_ms)
            self._send(conn, {"id": req_id, "status": error.http_status,
                              "error": {**error.body(), "data": {"serverTime": self._server_ms(), "retryAfter": until}},
                              "rateLimits": self._rate_limits()})
            return
        self.meter.charge(_WEIGHTS.get(method, 1))
        try:
            result = await self._dispatch(conn, method, raw_params)
        except ApiError as error:
            self._error(conn, req_id, error)
            return
        if result is _NO_ANSWER:
            return
        self._send(conn, {"id": req_id, "status": 200, "result": result, "rateLimits": self._rate_limits()})

    async def _dispatch(self, conn: _Conn, method: str, raw: dict[str, Any]) -> Any:
        params = {k: _text(v) for k, v in raw.items() if v is not None}
        ex = self.exchange
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self._server_ms()}
        if method == "session.logon":
            return self._logon(conn, raw, params)
        if method == "session.status":
            return self._status(conn)
        if method == "session.logout":
            conn.logged_on = False
            conn.authorized_ms = None
            return self._status(conn)
        if method in _SIGNED:
            self._authorize(conn, raw, params)
            if method == "order.place":
                return await self._place(params)
            if method == "order.cancel":
                return ex.cancel_order(params)
            if method == "order.status":
                return ex.query_order(params)
            return ex.open_orders(params)
        if self.market == "spot" and method == "userDataStream.subscribe.signature":
            self._authorize(conn, raw, params, force_signature=True)
            return self._subscribe(conn)
        if self.market == "spot" and method == "userDataStream.subscribe":
            if not conn.logged_on:
                raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
            return self._subscribe(conn)
        if self.market == "spot" and method == "userDataStream.unsubscribe":
            wanted = params.get("subscriptionId")
            for sub_id in list(conn.subscriptions):
                if wanted is None or str(sub_id) == wanted:
                    ex.remove_listener(conn.subscriptions.pop(sub_id))
            return {}
        if self.market == "spot" and method == "session.subscriptions":
            return [{"subscriptionId": s} for s in conn.subscriptions]
        if self.market == "usdm" and method in ("userDataStream.start", "userDataStream.ping", "userDataStream.stop"):
            check_key(self.credentials, params.get("apiKey"))
            if method == "userDataStream.start":
                return {"listenKey": ex.new_listen_key()}
            if method == "userDataStream.ping":
                ex.keepalive_listen_key(None)
                return {"listenKey": next(iter(ex.listen_keys), "")}
            ex.close_listen_key(None)
            return {}
        raise ApiError(400, -1020, "This operation is not supported.")

    async def _place(self, params: dict[str, str]) -> Any:
        faults = self.faults
        if faults.duplicate_orders > 0:
            faults.duplicate_orders -= 1
            if self.market == "spot":
                raise ApiError(400, -2010, "Duplicate order sent.")
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        self.meter.count_order()
        if faults.timeout_orders > 0:
            faults.timeout_orders -= 1
            if faults.timeout_executes:
                with contextlib.suppress(ApiError):
                    self.exchange.new_order(params)
            return _NO_ANSWER
        if faults.error_orders > 0:
            faults.error_orders -= 1
            if faults.error_executes:
                with contextlib.suppress(ApiError):
                    self.exchange.new_order(params)
            raise ApiError(faults.error_status, -1006 if faults.error_status == 503 else -1000,
                           "Unknown error, please check your request or try again later.")
        params = dict(params)
        params.setdefault("newOrderRespType", "FULL" if self.market == "spot" else "RESULT")
        return self.exchange.new_order(params)

    def _authorize(self, conn: _Conn, raw: dict[str, Any], params: dict[str, str], *,
                   force_signature: bool = False) -> None:
        if conn.logged_on and not force_signature and "signature" not in params:
            check_timestamp(params, self._server_ms())
            return
        check_key(self.credentials, params.get("apiKey"))
        signature = params.get("signature")
        if not signature:
            raise mandatory("signature")
        check_timestamp(params, self._server_ms())
        expected = hmac_hex(self.credentials.secret, ws_payload(raw))
        if signature.lower() != expected:
            raise ApiError(400, -1022, "Signature for this request is not valid.")

    def _logon(self, conn: _Conn, raw: dict[str, Any], params: dict[str, str]) -> Any:
        check_key(self.credentials, params.get("apiKey"))
        signature = params.get("signature")
        if not signature:
            raise mandatory("signature")
        check_timestamp(params, self._server_ms())
        pem = self.credentials.ed25519_public_pem
        if pem is None:
            raise ApiError(401, -4056, "HMAC_SHA256 API key is not supported.")
        if not _ed25519_valid(pem, signature, ws_payload(raw)):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        conn.logged_on = True
        conn.authorized_ms = self.exchange.clock.time_ms()
        return self._status(conn)

    def _status(self, conn: _Conn) -> dict[str, Any]:
        return {"apiKey": self.credentials.api_key if conn.logged_on else None,
                "authorizedSince": conn.authorized_ms, "connectedSince": conn.connected_ms,
                "returnRateLimits": True, "serverTime": self._server_ms(),
                "userDataStream": bool(conn.subscriptions) if self.market == "spot" else None}

    def _subscribe(self, conn: _Conn) -> dict[str, Any]:
        sub_id = conn.next_subscription
        conn.next_subscription += 1
        conn.subscriptions[sub_id] = self.exchange.add_listener(lambda e: self._deliver(conn, e, sub_id))
        return {"subscriptionId": sub_id}

    def _error(self, conn: _Conn, req_id: Any, error: ApiError) -> None:
        self._send(conn, {"id": req_id, "status": error.http_status, "error": error.body(),
                          "rateLimits": self._rate_limits()})

    def _server_ms(self) -> int:
        return self.exchange.clock.time_ms() + self.faults.clock_skew_ms

    def _rate_limits(self) -> list[dict[str, Any]]:
        weight = next(r for r in RATE_LIMITS[self.market] if r["rateLimitType"] == "REQUEST_WEIGHT")
        return [{**weight, "count": self.meter.used}]


class _NoAnswer:
    """A request the venue never answers (the timeout fault)."""


_NO_ANSWER = _NoAnswer()


def _ed25519_valid(public_pem: bytes, signature_b64: str, payload: str) -> bool:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:  # pragma: no cover - the sim then refuses every logon
        return False
    try:
        key = load_pem_public_key(public_pem)
        if not isinstance(key, Ed25519PublicKey):
            return False
        key.verify(base64.b64decode(signature_b64, validate=True), payload.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = ["WS_API_PATH", "BinancePrivateWs", "ws_payload"]
