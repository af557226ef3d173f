"""A loopback OKX v5 public market-data server, written from the OKX documentation.

One port serves the public WebSocket at `/ws/v5/public` and the REST market endpoints
`GET /api/v5/market/ticker?instId=...` and `GET /api/v5/public/time`.

WebSocket protocol (OKX docs-v5, "WebSocket" and the tickers / order-book channels):

- `{"op":"subscribe"|"unsubscribe","args":[{"channel":..,"instId":..}],"id":".."}`; one
  event per arg: `{"id":..,"event":"subscribe","arg":{..},"connId":".."}`, or
  `{"id":..,"event":"error","code":"60018","msg":..,"connId":..}` for an unknown channel or
  instId; a frame that is not a valid request gets code 60012. `id` is echoed when given.
- The text frame `ping` is answered with the text `pong`.
- `tickers`: `{"arg":{..},"data":[{"instType":..,"instId":..,"last":..,...,"ts":".."}]}`, every
  value a string, at most one push per `tickers_throttle_s` per instId per connection (the
  latest state is sent when the window ends) and only when the top of book changed. The
  current ticker is pushed right after the subscribe ack.
- `bbo-tbt`: `{"arg":{..},"data":[{"asks":[[px,sz,"0",n]],"bids":[[..]],"ts":"..","seqId":int}]}`
  (instId only in `arg`). The first push after the ack is a snapshot of the current book;
  then one push per top-of-book change, with an increasing `seqId` (it moves in steps of 1-3,
  as the real one skips numbers). After `bbo_resend_s` without a change the latest snapshot is
  sent again with the same `seqId`.
- A connection with no subscription, or to which nothing was sent, for `idle_timeout_s` is
  closed (code 4004).
- `send_notice()` pushes the 64008 service-upgrade notice and closes the connections later.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from core.clock import Clock
from sim.funding import SimFunding
from sim.http_body import BodyServerConnection, request_body
from sim.market import SimTick
from sim.okx_accounts import SimInstrumentSpec, default_spec
from sim.okx_private import PRIVATE_WS_PATH, OkxPrivateVenue, PrivateSession
from sim.venue_server import Conn, Query, VenueSimServer, dumps, first, fmt_trim, json_response

WS_PATH = "/ws/v5/public"
TICKER_PATH = "/api/v5/market/ticker"
TIME_PATH = "/api/v5/public/time"
FUNDING_RATE_PATH = "/api/v5/public/funding-rate"
FUNDING_HISTORY_PATH = "/api/v5/public/funding-rate-history"
CHANNELS = ("tickers", "bbo-tbt")
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FUTURES_RE = re.compile(r"-\d{6}$")
_SEQ_STEPS = (1, 3, 2)
_TICKER_VALUES = (
    "last", "lastSz", "askPx", "askSz", "bidPx", "bidSz", "open24h", "high24h", "low24h",
    "volCcy24h", "vol24h", "sodUtc0", "sodUtc8",
)  # fmt: skip

NOTICE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."


def inst_type(inst_id: str) -> str:
    """SWAP, FUTURES or SPOT, from the shape of an OKX instrument id."""
    if inst_id.endswith("-SWAP"):
        return "SWAP"
    if _FUTURES_RE.search(inst_id):
        return "FUTURES"
    return "SPOT"


@dataclass(slots=True)
class _Stats:
    """The 24 h fields of a ticker, kept simply: the session started when the server did."""

    open: float
    high: float
    low: float
    last: float
    last_size: float = 1.0
    volume: float = 0.0
    volume_ccy: float = 0.0


class _OkxConn(Conn):
    def __init__(self, ws: ServerConnection, *, max_queue: int) -> None:
        super().__init__(ws, max_queue=max_queue)
        self.subs: dict[tuple[str, str], None] = {}
        self.no_sub_since: float | None = self.opened_at
        self.ticker_last: dict[str, float] = {}
        self.ticker_timers: dict[str, asyncio.TimerHandle] = {}
        self.bbo_last: dict[str, float] = {}
        self.session: PrivateSession | None = None  # set on a private connection


class OkxSimServer(VenueSimServer[_OkxConn]):
    """OKX public market data on loopback: WebSocket `/ws/v5/public` and REST, one port."""

    venue_name = "okx"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        symbols: Iterable[str],
        clock: Clock | None = None,
        idle_timeout_s: float = 30.0,
        tickers_throttle_s: float = 0.1,
        bbo_resend_s: float | None = 60.0,
        notice_close_delay_s: float = 60.0,
        close_timeout_s: float = 2.0,
        max_queue: int = 10_000,
        specs: Iterable[SimInstrumentSpec] | None = None,
    ) -> None:
        super().__init__(
            host, port, clock=clock, close_timeout_s=close_timeout_s, max_lifetime_s=None, max_queue=max_queue
        )
        if idle_timeout_s <= 0 or tickers_throttle_s < 0 or notice_close_delay_s < 0:
            raise ValueError("idle_timeout_s must be > 0, throttle and notice delay >= 0")
        if bbo_resend_s is not None and bbo_resend_s <= 0:
            raise ValueError("bbo_resend_s must be > 0 or None")
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(symbols))
        self._symbol_set = frozenset(self.symbols)
        self.idle_timeout_s = idle_timeout_s
        self.tickers_throttle_s = tickers_throttle_s
        self.bbo_resend_s = bbo_resend_s
        self.notice_close_delay_s = notice_close_delay_s
        self._books: dict[str, SimTick] = {}
        self._stats: dict[str, _Stats] = {}
        self._seq: dict[str, int] = {s: 1_000_000 * (i + 1) for i, s in enumerate(self.symbols)}
        self._seq_turn: dict[str, int] = dict.fromkeys(self.symbols, 0)
        # Rendered pushes, per instId: (book version, text, crossed text) built on demand.
        self._version: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self._ticker_cache: dict[str, tuple[int, dict[str, str], str]] = {}
        self._bbo_cache: dict[str, tuple[int, str]] = {}
        # Perpetual funding (SWAP instruments): settled from the server's start on.
        self.funding = SimFunding(since_ms=self.clock.time_ms())
        # The private side: accounts, orders and matching against the books published here.
        given = {spec.inst_id: spec for spec in specs or ()}
        self.private = OkxPrivateVenue(
            self.clock, self._books.get, [given.get(s) or default_spec(s) for s in self.symbols]
        )

    # ------------------------------------------------------------------ URLs

    @property
    def ws_url(self) -> str:
        return f"{self.ws_base_url}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        return self.http_base_url

    @property
    def private_ws_url(self) -> str:
        return f"{self.ws_base_url}{PRIVATE_WS_PATH}"

    # ------------------------------------------------------------------ market input

    def publish(self, tick: SimTick) -> None:
        """Take one top-of-book update of an OKX instrument and push it to subscribers."""
        sym = tick.symbol
        if sym not in self._symbol_set:
            raise ValueError(f"okx simulator does not list {sym!r}")
        prev = self._books.get(sym)
        book = tick  # the latest top of book of the symbol, as the market sent it
        changed = prev is None or (prev.bid, prev.ask, prev.bid_size, prev.ask_size) != (
            book.bid,
            book.ask,
            book.bid_size,
            book.ask_size,
        )
        self._books[sym] = book
        if not changed:
            return
        self.private.on_book(sym)
        self._update_stats(sym, prev, book)
        turn = self._seq_turn[sym]
        self._seq[sym] += _SEQ_STEPS[turn % len(_SEQ_STEPS)]
        self._seq_turn[sym] = turn + 1
        self._version[sym] += 1
        if not self._conns:
            return
        for conn in self._conns:
            if ("bbo-tbt", sym) in conn.subs:
                self._push_bbo(conn, sym)
            if ("tickers", sym) in conn.subs:
                self._push_ticker(conn, sym)

    def _update_stats(self, sym: str, prev: SimTick | None, book: SimTick) -> None:
        mid = (book.bid + book.ask) / 2.0
        stats = self._stats.get(sym)
        # The "last trade": at the ask when the mid went up, at the bid when it went down.
        last = book.bid if prev is not None and mid < (prev.bid + prev.ask) / 2.0 else book.ask
        if stats is None:
            self._stats[sym] = _Stats(open=last, high=last, low=last, last=last)
            return
        stats.last = last
        stats.high = max(stats.high, last)
        stats.low = min(stats.low, last)
        stats.volume += stats.last_size
        stats.volume_ccy += stats.last_size * last

    # ------------------------------------------------------------------ messages

    def ticker_fields(self, sym: str) -> dict[str, str]:
        """The fields of one ticker (WebSocket `data[0]` and REST `data[0]`), all strings."""
        book = self._books.get(sym)
        stats = self._stats.get(sym)
        if book is None or stats is None:
            empty = dict.fromkeys(_TICKER_VALUES, "")
            return {"instType": inst_type(sym), "instId": sym, **empty, "ts": str(self.clock.time_ms())}
        return {
            "instType": inst_type(sym),
            "instId": sym,
            "last": fmt_trim(stats.last),
            "lastSz": fmt_trim(stats.last_size),
            "askPx": fmt_trim(book.ask),
            "askSz": fmt_trim(book.ask_size),
            "bidPx": fmt_trim(book.bid),
            "bidSz": fmt_trim(book.bid_size),
            "open24h": fmt_trim(stats.open),
            "high24h": fmt_trim(stats.high),
            "low24h": fmt_trim(stats.low),
            "volCcy24h": fmt_trim(stats.volume_ccy),
            "vol24h": fmt_trim(stats.volume),
            "sodUtc0": fmt_trim(stats.open),
            "sodUtc8": fmt_trim(stats.open),
            "ts": str(book.ts_ms),
        }

    def _ticker_render(self, sym: str) -> tuple[dict[str, str], str]:
        version = self._version[sym]
        cached = self._ticker_cache.get(sym)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        fields = self.ticker_fields(sym)
        text = dumps({"arg": {"channel": "tickers", "instId": sym}, "data": [fields]})
        self._ticker_cache[sym] = (version, fields, text)
        return fields, text

    def _bbo_text(self, sym: str, book: SimTick, seq: int, crossed: bool = False) -> str:
        bid, ask = (book.ask, book.bid) if crossed else (book.bid, book.ask)
        return dumps(
            {
                "arg": {"channel": "bbo-tbt", "instId": sym},
                "data": [
                    {
                        "asks": [[fmt_trim(ask), fmt_trim(book.ask_size), "0", _orders(book.ask_size)]],
                        "bids": [[fmt_trim(bid), fmt_trim(book.bid_size), "0", _orders(book.bid_size)]],
                        "ts": str(book.ts_ms),
                        "seqId": seq,
                    }
                ],
            }
        )

    def _push_bbo(self, conn: _OkxConn, sym: str) -> None:
        book = self._books.get(sym)
        if book is None:
            return
        seq = self._seq[sym]
        version = self._version[sym]
        cached = self._bbo_cache.get(sym)
        if cached is not None and cached[0] == version:
            text = cached[1]
        else:
            text = self._bbo_text(sym, book, seq)
            self._bbo_cache[sym] = (version, text)
        conn.bbo_last[sym] = time.monotonic()
        self._data(conn, text, lambda: self._bbo_text(sym, book, seq, crossed=True))

    def _push_ticker(self, conn: _OkxConn, sym: str) -> None:
        if sym not in self._books or sym in conn.ticker_timers:
            return  # nothing to send yet, or a throttled push is already due
        now = time.monotonic()
        last = conn.ticker_last.get(sym)
        if last is None or now - last >= self.tickers_throttle_s:
            self._send_ticker(conn, sym)
            return
        delay = last + self.tickers_throttle_s - now
        conn.ticker_timers[sym] = asyncio.get_running_loop().call_later(delay, self._flush_ticker, conn, sym)

    def _flush_ticker(self, conn: _OkxConn, sym: str) -> None:
        conn.ticker_timers.pop(sym, None)
        if conn in self._conns and ("tickers", sym) in conn.subs:
            self._send_ticker(conn, sym)

    def _send_ticker(self, conn: _OkxConn, sym: str) -> None:
        conn.ticker_last[sym] = time.monotonic()
        fields, text = self._ticker_render(sym)

        def crossed() -> str:
            swapped = {**fields, "bidPx": fields["askPx"], "askPx": fields["bidPx"]}
            return dumps({"arg": {"channel": "tickers", "instId": sym}, "data": [swapped]})

        self._data(conn, text, crossed)

    # ------------------------------------------------------------------ fault injection

    def send_error(self, code: str = "60012", msg: str = "Invalid request: simulated server error") -> int:
        """Push an unsolicited error event to every connection; returns how many."""
        sent = 0
        for conn in list(self._conns):
            self._control(conn, dumps({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}))
            sent += 1
        return sent

    def send_notice(self, close_after_s: float | None = None) -> int:
        """Push the 64008 upgrade notice to every connection, then close them (1001) later.

        `close_after_s` defaults to `notice_close_delay_s` (60 s, as the docs announce).
        Returns the number of connections notified.
        """
        delay = self.notice_close_delay_s if close_after_s is None else close_after_s
        conns = list(self._conns)
        for conn in conns:
            notice = {"event": "notice", "code": "64008", "msg": NOTICE_MSG, "connId": conn.conn_id}
            self._control(conn, dumps(notice))
        if conns:
            self._close_later(conns, delay, 1001, "service upgrade")
        return len(conns)

    def drop_private_streams(self) -> int:
        """Close every private WebSocket connection abruptly (no close frame); returns how many."""
        dropped = 0
        for conn in list(self._conns):
            if conn.session is not None and not conn.closing:
                self._drop(conn)
                dropped += 1
        return dropped

    # ------------------------------------------------------------------ server hooks

    def _serve_options(self) -> dict[str, Any]:
        # POST bodies for the private REST API; answers held by a fault stay within open_timeout.
        return {"create_connection": BodyServerConnection, "open_timeout": 120}

    def _process_request(self, connection: Any, request: Request) -> Response | Awaitable[Response] | None:
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            path = request.path.split("?", 1)[0]
            if path == TIME_PATH:
                self.rest_requests += 1
                now = self.private.now_ms()
                return json_response(200, {"code": "0", "msg": "", "data": [{"ts": str(now)}]})
            if self.private.is_private_rest(request.method, path):
                self.rest_requests += 1
                return self._private_rest(request)
        return super()._process_request(connection, request)

    async def _private_rest(self, request: Request) -> Response:
        status, body, extra = await self.private.rest(request.method, request.path, request.headers,
                                                      request_body(request))
        response = json_response(status, body)
        for name, value in extra.items():
            response.headers[name] = value
        return response

    def _has_subs(self, conn: _OkxConn) -> bool:
        return bool(conn.subs) or (conn.session is not None and bool(conn.session.subs))

    def _on_open(self, conn: _OkxConn) -> None:
        if conn.path.split("?", 1)[0] == PRIVATE_WS_PATH:
            conn.session = self.private.open_session(
                conn.conn_id, lambda text: self._control(conn, text), lambda text: self._data(conn, text)
            )

    def _new_conn(self, ws: ServerConnection) -> _OkxConn:
        return _OkxConn(ws, max_queue=self._max_queue)

    def _subscription_count(self, conn: _OkxConn) -> int:
        return len(conn.subs) + (len(conn.session.subs) if conn.session is not None else 0)

    def _on_closed(self, conn: _OkxConn) -> None:
        if conn.session is not None:
            self.private.close_session(conn.session)
        for handle in conn.ticker_timers.values():
            handle.cancel()
        conn.ticker_timers.clear()

    def _ws_route(self, path: str, query: Query) -> tuple[int, object] | None:
        if path in (WS_PATH, PRIVATE_WS_PATH):
            return None
        return 404, _not_found()

    def _rest(self, path: str, query: Query) -> tuple[int, object]:
        if path == TICKER_PATH:
            inst_id = first(query, "instId")
            if not inst_id:
                return 400, {"code": "50014", "msg": "Parameter instId can not be empty.", "data": []}
            if inst_id not in self._symbol_set:
                return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
            return 200, {"code": "0", "msg": "", "data": [self.ticker_fields(inst_id)]}
        if path == TIME_PATH:
            return 200, {"code": "0", "msg": "", "data": [{"ts": str(self.clock.time_ms())}]}
        if path in (FUNDING_RATE_PATH, FUNDING_HISTORY_PATH):
            return self._funding(path, query)
        return 404, _not_found()

    def _funding(self, path: str, query: Query) -> tuple[int, object]:
        """`GET /api/v5/public/funding-rate` (the current period) and `.../funding-rate-history`
        (settled periods, newest first; `after`/`before` page by fundingTime, `limit` <= 400)."""
        inst_id = first(query, "instId")
        if not inst_id:
            return 400, {"code": "50014", "msg": "Parameter instId can not be empty.", "data": []}
        if inst_id not in self._symbol_set or inst_type(inst_id) != "SWAP":
            return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        now = self.clock.time_ms()
        rate = format(self.funding.rate(inst_id), "f")
        if path == FUNDING_RATE_PATH:
            nxt = self.funding.next_funding_ms(now)
            return 200, {"code": "0", "msg": "", "data": [{
                "instType": "SWAP", "instId": inst_id, "method": "current_period", "formulaType": "noRate",
                "fundingRate": rate, "nextFundingRate": "", "fundingTime": str(nxt),
                "nextFundingTime": str(nxt + self.funding.interval_ms), "ts": str(now)}]}
        try:
            after = int(first(query, "after") or 0) or None
            before = int(first(query, "before") or 0) or None
            limit = int(first(query, "limit") or 100)
        except ValueError:
            return 400, {"code": "50014", "msg": "Parameter after, before or limit error", "data": []}
        if not 1 <= limit <= 400:
            return 400, {"code": "51000", "msg": "Parameter limit error", "data": []}
        times = self.funding.settlements(now, (before + 1) if before else None, (after - 1) if after else None)
        rows = [{"instType": "SWAP", "instId": inst_id, "formulaType": "noRate", "fundingRate": rate,
                 "realizedRate": rate, "fundingTime": str(t), "method": "current_period"}
                for t in reversed(times)]
        return 200, {"code": "0", "msg": "", "data": rows[:limit]}

    def _watchdog_interval(self) -> float:
        shortest = self.idle_timeout_s
        if self.bbo_resend_s is not None:
            shortest = min(shortest, self.bbo_resend_s)
        return min(0.25, max(0.01, shortest / 5.0))

    def _on_silent_tick(self, conn: _OkxConn, now: float) -> None:
        if not self._has_subs(conn):
            conn.no_sub_since = now

    def _check_conn(self, conn: _OkxConn, now: float) -> tuple[int, str] | None:
        if self._has_subs(conn):
            conn.no_sub_since = None
        elif conn.no_sub_since is None:
            conn.no_sub_since = now
        if conn.no_sub_since is not None and now - conn.no_sub_since >= self.idle_timeout_s:
            return 4004, "No subscription in time."
        if now - conn.last_sent_at >= self.idle_timeout_s:
            return 4004, "No data received in time."
        if self.bbo_resend_s is not None:
            for channel, sym in conn.subs:
                idle = now - conn.bbo_last.get(sym, now) >= self.bbo_resend_s
                if channel == "bbo-tbt" and sym in self._books and idle:
                    self._push_bbo(conn, sym)  # idle book: the same snapshot, the same seqId
        return None

    def _on_message(self, conn: _OkxConn, text: str) -> None:
        if text == "ping":
            self._control(conn, "pong")
            return
        if conn.session is not None:
            try:
                request = json.loads(text)
            except ValueError:
                request = None
            if isinstance(request, dict):
                self.private.on_ws(conn.session, request, text)
            else:
                self._error(conn, None, "60012", f"Invalid request: {text[:200]}")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            self._error(conn, None, "60012", f"Invalid request: {text}")
            return
        if not isinstance(msg, dict):
            self._error(conn, None, "60012", f"Invalid request: {text}")
            return
        raw_id = msg.get("id")
        if raw_id is not None and not (isinstance(raw_id, str) and _ID_RE.match(raw_id)):
            self._error(conn, None, "60012", f"Invalid request: {text}")
            return
        req_id: str | None = raw_id
        op = msg.get("op")
        args = msg.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            self._error(conn, req_id, "60012", f"Invalid request: {text}")
            return
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst_id = arg.get("instId") if isinstance(arg, dict) else None
            if not isinstance(channel, str) or not isinstance(inst_id, str):
                self._error(conn, req_id, "60012", f"Invalid request: {text}")
                continue
            if channel not in CHANNELS or inst_id not in self._symbol_set:
                self._error(
                    conn,
                    req_id,
                    "60018",
                    f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                    "Please use the correct URL, channel and parameters referring to API document.",
                )
                continue
            key = (channel, inst_id)
            ack: dict[str, object] = {}
            if req_id is not None:
                ack["id"] = req_id
            ack.update({"event": op, "arg": {"channel": channel, "instId": inst_id}, "connId": conn.conn_id})
            if op == "subscribe":
                fresh = key not in conn.subs
                conn.subs[key] = None
                conn.no_sub_since = None
                self._control(conn, dumps(ack))
                if fresh and inst_id in self._books:
                    if channel == "bbo-tbt":
                        self._push_bbo(conn, inst_id)  # the snapshot
                    else:
                        self._send_ticker(conn, inst_id)
            else:
                conn.subs.pop(key, None)
                if channel == "tickers":
                    handle = conn.ticker_timers.pop(inst_id, None)
                    if handle is not None:
                        handle.cancel()
                if not conn.subs:
                    conn.no_sub_since = time.monotonic()
                self._control(conn, dumps(ack))

    def _error(self, conn: _OkxConn, req_id: str | None, code: str, msg: str) -> None:
        body: dict[str, object] = {}
        if req_id is not None:
            body["id"] = req_id
        body.update({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id})
        self._control(conn, dumps(body))


def _orders(size: float) -> str:
    """A plausible number of orders at a level, derived from its size (deterministic)."""
    return str(1 + int(size) % 7)


def _not_found() -> dict[str, object]:
    # The shape OKX answers an unknown path with: HTTP 404 and a numeric `code`.
    return {
        "code": 404,
        "data": {},
        "detailMsg": "",
        "error_code": "404",
        "error_message": "Not Found",
        "msg": "Not Found",
    }


__all__ = ["CHANNELS", "TICKER_PATH", "WS_PATH", "OkxSimServer", "inst_type"]
