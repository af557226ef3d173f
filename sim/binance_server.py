"""A loopback Binance market-data server (spot or USD-M), written from the Binance docs.

One port serves the market streams and the REST book ticker of one market:

- spot: raw streams at `/ws/<stream>` (or `/ws` and live SUBSCRIBE), combined streams at
  `/stream?streams=<a>/<b>`; REST `GET /api/v3/ticker/bookTicker`, `/api/v3/ping`,
  `/api/v3/time`.
- USD-M: the same under `/public` (`/public/ws/<stream>`, `/public/stream?streams=...`); the
  legacy `/ws` and `/stream` paths were retired on 2026-04-23, so their handshakes are
  refused with 404. REST `GET /fapi/v1/ticker/bookTicker`, `/fapi/v1/ping`, `/fapi/v1/time`.

Streams are `<symbol>@bookTicker` with the symbol in lowercase. A stream name that names no
listed symbol (an unknown or upper-case symbol) is accepted and never sends anything, as
on the venue. Combined connections wrap each payload as `{"stream":..,"data":..}`.

Live requests: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY / GET_PROPERTY
(`combined`), answered `{"result":..,"id":..}`; a bad request gets
`{"error":{"code":..,"msg":..},"id":..}` with the documented codes (0 unknown property,
1 invalid value type, 2 invalid request, 3 invalid JSON).

Keepalive: the server sends a ping frame every `ping_interval_s` (20 s spot, 180 s USD-M)
and closes the connection (1011) when the pong does not come within `pong_timeout_s`
(60 s spot, 600 s USD-M). A connection lives at most `max_lifetime_s` (24 h).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from core.clock import Clock
from sim.funding import SimFunding
from sim.market import SimTick
from sim.venue_server import Conn, Query, VenueSimServer, dumps, first, fmt_fixed8

BinanceMarket = Literal["spot", "usdm"]

DEFAULT_PING_INTERVAL_S: dict[BinanceMarket, float] = {"spot": 20.0, "usdm": 180.0}
DEFAULT_PONG_TIMEOUT_S: dict[BinanceMarket, float] = {"spot": 60.0, "usdm": 600.0}
STREAM_PREFIX: dict[BinanceMarket, str] = {"spot": "", "usdm": "/public"}
REST_PREFIX: dict[BinanceMarket, str] = {"spot": "/api/v3", "usdm": "/fapi/v1"}

_SYMBOL_RE = re.compile(r"^[A-Z0-9-_.]{1,20}$")
_STR_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")
_INT64 = 2**63
_U_STEPS = (1, 2, 4, 3)
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def stream_name(symbol: str) -> str:
    """The bookTicker stream of a symbol: lowercase symbol, `@bookTicker`."""
    return f"{symbol.lower()}@bookTicker"


@dataclass(slots=True)
class _Book:
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    ts_ms: int
    update_id: int


class _BinanceConn(Conn):
    def __init__(self, ws: ServerConnection, *, max_queue: int, streams: list[str], combined: bool) -> None:
        super().__init__(ws, max_queue=max_queue)
        self.streams: dict[str, None] = dict.fromkeys(streams)
        self.combined = combined


class BinanceSimServer(VenueSimServer[_BinanceConn]):
    """Binance spot or USD-M `bookTicker` streams and REST book ticker on loopback, one port."""

    venue_name = "binance"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        symbols: Iterable[str],
        market: BinanceMarket = "spot",
        clock: Clock | None = None,
        ping_interval_s: float | None = None,
        pong_timeout_s: float | None = None,
        max_lifetime_s: float | None = 24 * 3600.0,
        close_timeout_s: float = 2.0,
        max_streams: int = 1024,
        max_queue: int = 10_000,
    ) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', not {market!r}")
        super().__init__(
            host,
            port,
            clock=clock,
            close_timeout_s=close_timeout_s,
            max_lifetime_s=max_lifetime_s,
            max_queue=max_queue,
        )
        self.market: BinanceMarket = market
        self.funding = SimFunding(since_ms=self.clock.time_ms())  # USD-M perpetual funding
        self.ping_interval_s = DEFAULT_PING_INTERVAL_S[market] if ping_interval_s is None else ping_interval_s
        self.pong_timeout_s = DEFAULT_PONG_TIMEOUT_S[market] if pong_timeout_s is None else pong_timeout_s
        if self.ping_interval_s <= 0 or self.pong_timeout_s <= 0:
            raise ValueError("ping_interval_s and pong_timeout_s must be > 0")
        self.max_streams = max_streams
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(symbols))
        self._symbol_set = frozenset(self.symbols)
        self._stream_symbol: dict[str, str] = {stream_name(s): s for s in self.symbols}
        self._books: dict[str, _Book] = {}
        self._update_ids: dict[str, int] = {s: 400_900_000 + 10_000_000 * i for i, s in enumerate(self.symbols)}
        self._turn: dict[str, int] = dict.fromkeys(self.symbols, 0)

    # ------------------------------------------------------------------ URLs

    @property
    def stream_prefix(self) -> str:
        """Empty for spot, "/public" for USD-M: what goes between the base URL and /ws or /stream."""
        return STREAM_PREFIX[self.market]

    @property
    def ws_url(self) -> str:
        """Base URL of the streams, e.g. ws://127.0.0.1:PORT (append /ws/... or /public/ws/...)."""
        return self.ws_base_url

    @property
    def rest_url(self) -> str:
        return self.http_base_url

    # ------------------------------------------------------------------ market input

    def publish(self, tick: SimTick) -> None:
        """Take one top-of-book update and push it to every connection on its stream."""
        sym = tick.symbol
        if sym not in self._symbol_set:
            raise ValueError(f"binance simulator does not list {sym!r}")
        prev = self._books.get(sym)
        if prev is not None and (prev.bid, prev.ask, prev.bid_size, prev.ask_size) == (
            tick.bid,
            tick.ask,
            tick.bid_size,
            tick.ask_size,
        ):
            return  # bookTicker pushes changes of the best bid/ask only
        turn = self._turn[sym]
        self._update_ids[sym] += _U_STEPS[turn % len(_U_STEPS)]
        self._turn[sym] = turn + 1
        book = _Book(tick.bid, tick.ask, tick.bid_size, tick.ask_size, tick.ts_ms, self._update_ids[sym])
        self._books[sym] = book
        if not self._conns:
            return
        stream = stream_name(sym)
        event_ms = max(self.clock.time_ms(), book.ts_ms)
        raw: str | None = None
        for conn in self._conns:
            if stream not in conn.streams:
                continue
            if raw is None:
                raw = dumps(self._payload(sym, book, event_ms))
            text = _wrap(stream, raw) if conn.combined else raw
            self._data(conn, text, self._crossed_renderer(sym, book, event_ms, conn.combined))

    def _payload(self, sym: str, book: _Book, event_ms: int, crossed: bool = False) -> dict[str, Any]:
        bid, ask = (book.ask, book.bid) if crossed else (book.bid, book.ask)
        if self.market == "spot":
            return {
                "u": book.update_id,
                "s": sym,
                "b": fmt_fixed8(bid),
                "B": fmt_fixed8(book.bid_size),
                "a": fmt_fixed8(ask),
                "A": fmt_fixed8(book.ask_size),
            }
        return {
            "e": "bookTicker",
            "u": book.update_id,
            "s": sym,
            "b": fmt_fixed8(bid),
            "B": fmt_fixed8(book.bid_size),
            "a": fmt_fixed8(ask),
            "A": fmt_fixed8(book.ask_size),
            "T": book.ts_ms,
            "E": event_ms,
            # Seen in real USD-M frames (UNCONFIRMED in the docs): clients must ignore them.
            "st": 1,
            "ps": sym,
        }

    def _crossed_renderer(self, sym: str, book: _Book, event_ms: int, combined: bool) -> Callable[[], str]:
        def render() -> str:
            raw = dumps(self._payload(sym, book, event_ms, crossed=True))
            return _wrap(stream_name(sym), raw) if combined else raw

        return render

    # ------------------------------------------------------------------ fault injection

    def send_error(
        self, code: int = -1001, msg: str = "Internal error; unable to process your request. Please try again."
    ) -> int:
        """Push an error-shaped message `{"error":{"code","msg"},"id":null}` to every connection."""
        return self._broadcast_control(dumps({"error": {"code": code, "msg": msg}, "id": None}))

    def send_server_shutdown(self, close_after_s: float | None = None) -> int:
        """Send `{"e":"serverShutdown","E":ms}` to every connection; close them (1001) later if asked."""
        conns = list(self._conns)
        self._broadcast_control(dumps({"e": "serverShutdown", "E": self.clock.time_ms()}))
        if close_after_s is not None and conns:
            self._close_later(conns, close_after_s, 1001, "server shutdown")
        return len(conns)

    # ------------------------------------------------------------------ server hooks

    def _route(self, path: str, query: Query) -> tuple[list[str], bool] | None:
        """(streams, combined) for a stream path of this market, None for any other path."""
        prefix = self.stream_prefix
        if prefix and not path.startswith(prefix + "/"):
            return None
        rest = path[len(prefix) :]
        if rest in ("/ws", "/ws/"):
            return [], False
        if rest.startswith("/ws/"):
            name = rest[len("/ws/") :]
            if "/" in name:
                return None
            return [name], False
        if rest in ("/stream", "/stream/"):
            raw = first(query, "streams") or ""
            return [s for s in raw.split("/") if s], True
        return None

    def _ws_route(self, path: str, query: Query) -> tuple[int, object] | None:
        route = self._route(path, query)
        if route is None:
            if self.market == "usdm" and (path.startswith(("/ws", "/stream"))):
                return 404, {"code": 404, "msg": "Legacy USD-M stream URL retired; use /public/ws or /public/stream."}
            return 404, {"code": 404, "msg": "Not Found"}
        if len(route[0]) > self.max_streams:
            return 400, {"code": 2, "msg": f"Invalid request: more than {self.max_streams} streams"}
        return None

    def _new_conn(self, ws: ServerConnection) -> _BinanceConn:
        request = ws.request
        url = urlsplit(request.path if request is not None else "")
        route = self._route(url.path, parse_qs(url.query, keep_blank_values=True)) or ([], False)
        streams, combined = route
        return _BinanceConn(ws, max_queue=self._max_queue, streams=streams, combined=combined)

    def _subscription_count(self, conn: _BinanceConn) -> int:
        return len(conn.streams)

    def _watchdog_interval(self) -> float:
        if self.max_lifetime_s is None:
            return 0.25
        return min(0.25, max(0.01, self.max_lifetime_s / 5.0))

    def _keepalive_task(self, conn: _BinanceConn) -> Coroutine[Any, Any, None] | None:
        return self._ping_loop(conn, self.ping_interval_s, self.pong_timeout_s)

    def rest(self, path: str, query: Query) -> tuple[int, object]:
        """Answer a public REST GET (for a front that owns the port: see `sim.binance_venue`)."""
        self.rest_requests += 1
        return self._rest(path, query)

    def _rest(self, path: str, query: Query) -> tuple[int, object]:
        prefix = REST_PREFIX[self.market]
        if path == f"{prefix}/ping":
            return 200, {}
        if path == f"{prefix}/time":
            return 200, {"serverTime": self.clock.time_ms()}
        if self.market == "usdm" and path in (f"{prefix}/premiumIndex", f"{prefix}/fundingRate"):
            return self._funding(path, query)
        if path != f"{prefix}/ticker/bookTicker":
            return 404, {"code": 404, "msg": "Not Found"}
        symbol = first(query, "symbol")
        symbols_raw = first(query, "symbols") if self.market == "spot" else None
        if symbol is not None and symbols_raw is not None:
            return 400, {"code": -1128, "msg": "Combination of optional parameters invalid."}
        if symbol is not None:
            if not _SYMBOL_RE.match(symbol):
                return 400, {
                    "code": -1100,
                    "msg": "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
                }
            if symbol not in self._symbol_set:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            return 200, self._rest_ticker(symbol)
        if symbols_raw is not None:
            try:
                wanted = json.loads(symbols_raw)
            except ValueError:
                wanted = None
            if not isinstance(wanted, list) or not wanted or not all(isinstance(s, str) for s in wanted):
                return 400, {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbols' was not sent, was empty/null, or malformed.",
                }
            if any(s not in self._symbol_set for s in wanted):
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            return 200, [self._rest_ticker(s) for s in wanted]
        return 200, [self._rest_ticker(s) for s in self.symbols]

    def _funding(self, path: str, query: Query) -> tuple[int, object]:
        """USD-M `GET /fapi/v1/premiumIndex` (mark price, last funding rate, next funding time)
        and `GET /fapi/v1/fundingRate` (settlements oldest first, `startTime`/`endTime`,
        `limit` <= 1000, default 100), one symbol each."""
        symbol = first(query, "symbol")
        if symbol is None or symbol not in self._books:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        book = self._books[symbol]
        mark = fmt_fixed8((book.bid + book.ask) / 2)
        now = self.clock.time_ms()
        rate = f"{self.funding.rate(symbol):.8f}"
        if path.endswith("/premiumIndex"):
            return 200, {"symbol": symbol, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                         "lastFundingRate": rate, "interestRate": "0.00010000",
                         "nextFundingTime": self.funding.next_funding_ms(now), "time": now}
        try:
            start = int(first(query, "startTime") or -1)
            end = int(first(query, "endTime") or -1)
            limit = int(first(query, "limit") or 100)
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= 1000:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}
        times = self.funding.settlements(now, start if start >= 0 else None, end if end >= 0 else None)
        return 200, [{"symbol": symbol, "fundingRate": rate, "fundingTime": t, "markPrice": mark}
                     for t in times[:limit]]

    def _rest_ticker(self, symbol: str) -> dict[str, object]:
        book = self._books.get(symbol)
        zero = fmt_fixed8(0.0)
        body: dict[str, object] = {}
        if self.market == "usdm":
            body["lastUpdateId"] = book.update_id if book is not None else 0
        body.update(
            {
                "symbol": symbol,
                "bidPrice": fmt_fixed8(book.bid) if book else zero,
                "bidQty": fmt_fixed8(book.bid_size) if book else zero,
                "askPrice": fmt_fixed8(book.ask) if book else zero,
                "askQty": fmt_fixed8(book.ask_size) if book else zero,
            }
        )
        if self.market == "usdm":
            body["time"] = book.ts_ms if book is not None else self.clock.time_ms()
        return body

    def _on_message(self, conn: _BinanceConn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as exc:
            line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
            self._error(conn, None, 3, f"Invalid JSON: expected value at line {line} column {col}")
            return
        if not isinstance(msg, dict):
            self._error(conn, None, 2, "Invalid request: expected an object")
            return
        if "id" not in msg or not _valid_id(msg["id"]):
            self._error(conn, None, 2, "Invalid request: request ID must be an unsigned integer")
            return
        req_id = msg["id"]
        method = msg.get("method")
        if method is None:
            self._error(conn, req_id, 2, "Invalid request: missing field `method`")
            return
        if method not in _METHODS:
            variants = ", ".join(f"`{m}`" for m in _METHODS)
            self._error(conn, req_id, 2, f"Invalid request: unknown variant `{method}`, expected one of {variants}")
            return
        params = msg.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                self._error(conn, req_id, 2, "Invalid request: params must be a list of stream names")
                return
            if method == "SUBSCRIBE":
                if len(conn.streams) + len([p for p in params if p not in conn.streams]) > self.max_streams:
                    self._error(conn, req_id, 2, f"Invalid request: more than {self.max_streams} streams")
                    return
                for name in params:
                    conn.streams[name] = None
            else:
                for name in params:
                    conn.streams.pop(name, None)
            self._result(conn, req_id, None)
        elif method == "LIST_SUBSCRIPTIONS":
            self._result(conn, req_id, list(conn.streams))
        else:
            if not isinstance(params, list) or not params or not isinstance(params[0], str):
                self._error(conn, req_id, 2, "Invalid request: property name must be a string")
                return
            if params[0] != "combined":
                self._control(conn, dumps({"error": {"code": 0, "msg": "Unknown property"}, "id": req_id}))
                return
            if method == "GET_PROPERTY":
                self._result(conn, req_id, conn.combined)
                return
            if len(params) != 2 or not isinstance(params[1], bool):
                self._error(conn, req_id, 1, "Invalid value type: expected Boolean")
                return
            conn.combined = params[1]
            self._result(conn, req_id, None)

    def _result(self, conn: _BinanceConn, req_id: object, result: object) -> None:
        self._control(conn, dumps({"result": result, "id": req_id}))

    def _error(self, conn: _BinanceConn, req_id: object, code: int, msg: str) -> None:
        self._control(conn, dumps({"error": {"code": code, "msg": msg}, "id": req_id}))


def _valid_id(value: object) -> bool:
    """A request id: an int64, an alphanumeric string of at most 36 characters, or null."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and bool(_STR_ID_RE.match(value))


def _wrap(stream: str, raw: str) -> str:
    return f'{{"stream":{json.dumps(stream)},"data":{raw}}}'


__all__ = ["BinanceMarket", "BinanceSimServer", "stream_name"]
