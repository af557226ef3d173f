"""Machinery shared by the loopback venue servers: one port, WebSocket and REST, fault switches.

A venue server listens on one TCP port. A WebSocket upgrade on one of the venue's stream
paths becomes a connection; any other GET is answered as the venue's REST API with a JSON
body (websockets' `process_request` hook answers plain HTTP requests). Only GET is served:
the REST side here is market data only.

Every connection has an outbound queue drained by one writer task, so `publish()` stays
synchronous and a slow client never blocks the market. The writer applies the fault
switches of `Faults` frame by frame; they can be changed while the server runs.

Timers (throttles, idle and keepalive timeouts, connection lifetime) measure real elapsed
time on the monotonic clock, since they drive real sockets. The injected `Clock` gives the
wall-clock timestamps that go into messages (event times, server time).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.clock import Clock, RealClock

log = logging.getLogger(__name__)

# Query parameters as parsed from a request path: name -> values in order.
Query = dict[str, list[str]]


def dumps(obj: object) -> str:
    """Compact JSON, as the venues send it."""
    return json.dumps(obj, separators=(",", ":"))


def _check_count(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"faults.{name} must be None or an int >= {minimum}, not {value!r}")


@dataclass(eq=False)
class Faults:
    """Fault switches of one venue server; assign to them at any time, even while it runs.

    - `drop_after_frames`: close each connection abruptly (TCP close, no close frame) once it
      has sent this many data frames (market-data pushes; acks and pongs do not count). The
      count is per connection since it opened; 0 drops at the first data frame, unsent.
    - `silent`: send nothing at all (no data, no acks, no pongs, no server pings) and stop
      reading, so protocol-level pings go unanswered too; connections stay open and no
      timeout of the server closes them meanwhile. Frames due while silent are discarded.
    - `malformed_every`: every Nth data frame of a connection is truncated (invalid JSON).
    - `crossed_every`: every Nth data frame of a connection carries a crossed book (bid > ask).
      A frame that is both malformed and crossed is malformed.
    """

    drop_after_frames: int | None = None
    silent: bool = False
    malformed_every: int | None = None
    crossed_every: int | None = None
    _listener: Callable[[str], None] | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "drop_after_frames":
            _check_count(name, value, 0)
        elif name in ("malformed_every", "crossed_every"):
            _check_count(name, value, 1)
        elif name == "silent" and not isinstance(value, bool):
            raise ValueError(f"faults.silent must be a bool, not {value!r}")
        object.__setattr__(self, name, value)
        listener = self.__dict__.get("_listener")
        if listener is not None and not name.startswith("_"):
            listener(name)

    def clear(self) -> None:
        """Switch every fault off."""
        self.drop_after_frames = None
        self.silent = False
        self.malformed_every = None
        self.crossed_every = None


@dataclass(slots=True)
class Outbound:
    """One message waiting in a connection's queue.

    `data` marks a market-data push (the frames the fault switches count); `crossed`, when
    given, renders the same push with the book crossed.
    """

    text: str
    data: bool = False
    crossed: Callable[[], str] | None = None


class Conn:
    """Server-side state of one WebSocket connection."""

    def __init__(self, ws: ServerConnection, *, max_queue: int) -> None:
        self.ws = ws
        self.conn_id = uuid.uuid4().hex[:8]
        self.queue: asyncio.Queue[Outbound] = asyncio.Queue(max_queue)
        self.data_frames = 0
        self.closing = False
        now = time.monotonic()
        self.opened_at = now
        self.last_sent_at = now

    @property
    def path(self) -> str:
        request = self.ws.request
        return request.path if request is not None else ""


C = TypeVar("C", bound=Conn)


class VenueSimServer(Generic[C]):
    """Base of the OKX and Binance simulators; subclasses speak the protocol."""

    #: Name used in logs.
    venue_name = "venue"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        clock: Clock | None,
        close_timeout_s: float,
        max_lifetime_s: float | None,
        max_queue: int,
    ) -> None:
        if close_timeout_s <= 0:
            raise ValueError("close_timeout_s must be > 0")
        if max_lifetime_s is not None and max_lifetime_s <= 0:
            raise ValueError("max_lifetime_s must be > 0 or None")
        self.host = host
        self._port = port
        self.clock: Clock = clock if clock is not None else RealClock()
        self.close_timeout_s = close_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self._max_queue = max_queue
        self.faults = Faults()
        self.faults._listener = self._fault_changed
        # Counters for tests and diagnostics.
        self.connections_accepted = 0
        self.connections_refused = 0
        self.frames_sent = 0
        self.data_frames_sent = 0
        self.rest_requests = 0
        self.slow_consumer_drops = 0
        self.keepalive_timeouts = 0
        self._conns: set[C] = set()
        self._server: Server | None = None
        self._stopping = False
        self._refuse_until = 0.0
        self._silent_epoch = 0
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one once started with port=0)."""
        return self._port

    @property
    def ws_base_url(self) -> str:
        return f"ws://{self.host}:{self._port}"

    @property
    def http_base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.venue_name} simulator already started")
        self._stopping = False
        self._server = await serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._process_request,
            ping_interval=None,  # keepalive is the protocol's business, see subclasses
            ping_timeout=None,
            close_timeout=self.close_timeout_s,
            max_size=1 << 16,
            server_header=f"quantarb-sim-{self.venue_name}",
            **self._serve_options(),
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (code 1001) and the listening socket; leaves no task behind."""
        server = self._server
        if server is None:
            return
        self._stopping = True
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for conn in list(self._conns):
            # A silent connection stopped reading; it must read the closing handshake.
            self._set_reading(conn, True)
        server.close()
        await server.wait_closed()
        self._server = None
        self._stopping = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ counters

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    @property
    def subscriptions(self) -> int:
        """Subscriptions (OKX channel+instId, Binance streams) over all open connections."""
        return sum(self._subscription_count(c) for c in self._conns)

    # ------------------------------------------------------------------ faults

    def refuse_connections_for(self, seconds: float) -> None:
        """Reject new WebSocket handshakes with HTTP 503 for `seconds`; REST keeps working."""
        self._refuse_until = time.monotonic() + max(0.0, seconds)

    @property
    def refusing(self) -> bool:
        return time.monotonic() < self._refuse_until

    def _fault_changed(self, name: str) -> None:
        if name == "silent":
            self._silent_epoch += 1
            for conn in self._conns:
                self._set_reading(conn, not self.faults.silent)
                conn.last_sent_at = time.monotonic()

    @staticmethod
    def _set_reading(conn: Conn, reading: bool) -> None:
        transport = conn.ws.transport
        if transport.is_closing():
            return
        if reading:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # ------------------------------------------------------------------ subclass hooks

    def _ws_route(self, path: str, query: Query) -> tuple[int, object] | None:
        """None to accept a WebSocket handshake on this path, else (HTTP status, JSON body)."""
        raise NotImplementedError

    def _rest(self, path: str, query: Query) -> tuple[int, object]:
        """Answer a plain GET: (HTTP status, JSON body)."""
        raise NotImplementedError

    def _new_conn(self, ws: ServerConnection) -> C:
        raise NotImplementedError

    def _on_open(self, conn: C) -> None:
        """Called once the connection is registered, before its first message is read."""

    def _on_message(self, conn: C, text: str) -> None:
        raise NotImplementedError

    def _on_closed(self, conn: C) -> None:
        """Called once the connection is gone."""

    def _subscription_count(self, conn: C) -> int:
        raise NotImplementedError

    def _check_conn(self, conn: C, now: float) -> tuple[int, str] | None:
        """Housekeeping: return (close code, reason) to close the connection."""
        return None

    def _watchdog_interval(self) -> float:
        return 0.25

    def _on_silent_tick(self, conn: C, now: float) -> None:
        """Housekeeping while silent: restart the subclass's idle timers."""

    def _keepalive_task(self, conn: C) -> Coroutine[Any, Any, None] | None:
        return None

    def _serve_options(self) -> dict[str, Any]:
        """Extra keyword arguments for websockets' `serve` (a private API's POST parser)."""
        return {}

    # ------------------------------------------------------------------ HTTP side

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        url = urlsplit(request.path)
        query: Query = parse_qs(url.query, keep_blank_values=True)
        upgrade = request.headers.get("Upgrade", "")
        if "websocket" in upgrade.lower():
            refusal = self._ws_route(url.path, query)
            if refusal is not None:
                self.connections_refused += 1
                status, body = refusal
                return json_response(status, body)
            if self._stopping or self.refusing:
                self.connections_refused += 1
                return text_response(503, "Service Unavailable\n")
            return None
        self.rest_requests += 1
        try:
            status, body = self._rest(url.path, query)
        except Exception:  # a simulator bug must not look like a venue answer
            log.exception("%s simulator: REST handler failed for %s", self.venue_name, request.path)
            return text_response(500, "Internal Server Error\n")
        return json_response(status, body)

    # ------------------------------------------------------------------ WebSocket side

    async def _handle(self, ws: ServerConnection) -> None:
        conn = self._new_conn(ws)
        self.connections_accepted += 1
        self._conns.add(conn)
        if self.faults.silent:
            self._set_reading(conn, False)
        tasks = [
            asyncio.create_task(self._guard(self._writer(conn))),
            asyncio.create_task(self._guard(self._watchdog(conn))),
        ]
        keepalive = self._keepalive_task(conn)
        if keepalive is not None:
            tasks.append(asyncio.create_task(self._guard(keepalive)))
        try:
            self._on_open(conn)
            async for message in ws:
                text = message if isinstance(message, str) else bytes(message).decode("utf-8", "replace")
                if not conn.closing:
                    self._on_message(conn, text)
        except ConnectionClosed:
            pass
        finally:
            conn.closing = True
            self._conns.discard(conn)
            self._on_closed(conn)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ConnectionClosed:
            return
        except Exception:
            log.exception("%s simulator: connection task failed", self.venue_name)

    def _enqueue(self, conn: C, out: Outbound) -> None:
        if conn.closing or self.faults.silent:
            return
        try:
            conn.queue.put_nowait(out)
        except asyncio.QueueFull:
            # A client that does not read is dropped, as the venues drop slow consumers.
            self.slow_consumer_drops += 1
            self._drop(conn)

    def _control(self, conn: C, text: str) -> None:
        self._enqueue(conn, Outbound(text))

    def _data(self, conn: C, text: str, crossed: Callable[[], str] | None = None) -> None:
        self._enqueue(conn, Outbound(text, True, crossed))

    def _broadcast_control(self, text: str) -> int:
        conns = list(self._conns)
        for conn in conns:
            self._control(conn, text)
        return len(conns)

    def _drop(self, conn: Conn) -> None:
        """Close abruptly: the TCP connection ends without a WebSocket close frame."""
        conn.closing = True
        conn.ws.transport.close()

    async def _close(self, conn: Conn, code: int, reason: str) -> None:
        conn.closing = True
        await conn.ws.close(code, reason)

    def _close_later(self, conns: list[C], delay_s: float, code: int, reason: str) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            closing = [self._close(c, code, reason) for c in conns if c in self._conns]
            await asyncio.gather(*closing, return_exceptions=True)

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _writer(self, conn: C) -> None:
        faults = self.faults
        ws = conn.ws
        while True:
            out = await conn.queue.get()
            if conn.closing or self._stopping or faults.silent:
                continue
            text = out.text
            if out.data:
                limit = faults.drop_after_frames
                if limit is not None and conn.data_frames >= limit:
                    self._drop(conn)
                    return
                conn.data_frames += 1
                n = conn.data_frames
                malformed = faults.malformed_every
                crossed = faults.crossed_every
                if malformed is not None and n % malformed == 0:
                    text = garble(text)
                elif crossed is not None and n % crossed == 0 and out.crossed is not None:
                    text = out.crossed()
            await ws.send(text)
            self.frames_sent += 1
            conn.last_sent_at = time.monotonic()
            if out.data:
                self.data_frames_sent += 1
                limit = faults.drop_after_frames
                if limit is not None and conn.data_frames >= limit:
                    self._drop(conn)
                    return

    async def _watchdog(self, conn: C) -> None:
        interval = self._watchdog_interval()
        while not conn.closing:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.faults.silent or self._stopping:
                conn.last_sent_at = now  # idle timers restart when the silence ends
                self._on_silent_tick(conn, now)
                continue
            if self.max_lifetime_s is not None and now - conn.opened_at >= self.max_lifetime_s:
                await self._close(conn, 1000, "connection lifetime reached")
                return
            verdict = self._check_conn(conn, now)
            if verdict is not None:
                await self._close(conn, *verdict)
                return

    async def _ping_loop(self, conn: C, interval_s: float, pong_timeout_s: float) -> None:
        """Server pings at a fixed interval; a missing pong closes the connection (1011)."""
        ws = conn.ws
        while not conn.closing:
            await asyncio.sleep(interval_s)
            if self.faults.silent or self._stopping or conn.closing:
                continue
            epoch = self._silent_epoch
            pong = await ws.ping()
            try:
                async with asyncio.timeout(pong_timeout_s):
                    await pong
            except TimeoutError:
                if self.faults.silent or epoch != self._silent_epoch or self._stopping:
                    continue  # silence stopped our reading, not the client's pong
                self.keepalive_timeouts += 1
                await self._close(conn, 1011, "pong timeout")
                return


def garble(text: str) -> str:
    """A truncated frame: a strict prefix of a JSON object is never valid JSON."""
    return text[: max(1, len(text) // 2)]


def _headers(content_type: str, length: int) -> Headers:
    return Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(length)),
            ("Content-Type", content_type),
        ]
    )


def json_response(status: int, body: object) -> Response:
    data = dumps(body).encode()
    return Response(status, http.HTTPStatus(status).phrase, _headers("application/json", len(data)), data)


def text_response(status: int, text: str) -> Response:
    data = text.encode()
    return Response(status, http.HTTPStatus(status).phrase, _headers("text/plain; charset=utf-8", len(data)), data)


def first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def fmt_trim(value: float) -> str:
    """A decimal string without exponent or trailing zeros ("97000.1", "12")."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def fmt_fixed8(value: float) -> str:
    """Eight decimals, as Binance formats prices and quantities ("25.35190000")."""
    return f"{value:.8f}"


__all__ = [
    "Conn",
    "Faults",
    "Outbound",
    "Query",
    "VenueSimServer",
    "dumps",
    "first",
    "fmt_fixed8",
    "fmt_trim",
    "garble",
    "json_response",
    "text_response",
]
