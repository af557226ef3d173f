"""The signed Binance REST client: one request, its weight, its signature, its failure class.

`BinanceRest.call(route, params)` returns the body of a 200 answer or raises `VenueError`
(classified by `errors.classify`). What it guarantees:

- **Nothing is sent while the venue told us to wait.** `RateGate` remembers the `Retry-After`
  of a 429 (and of a 418 ban) and the request weight the venue reports in
  `X-MBX-USED-WEIGHT-1M`; a request that would wait, or push the minute's weight past
  `safety` of the limit, is refused locally (`rate_limited`, or `halt` while banned) without
  reaching the venue, unless the wait is at most `max_wait_s`, in which case it waits.
- **A transport failure is classed by what may have happened.** Connecting failed: nothing was
  sent (`retryable`). Timed out or lost after sending: `unknown`.
- **Clock skew heals itself once.** On -1021 the server time is read again (`ClockOffset`)
  and the request is signed and sent once more; the venue refused the first one before it
  reached the engine, so this cannot execute twice.

Signed requests carry `recvWindow` and a timestamp on the venue's clock (our clock plus the
measured offset). No secret, signature or key appears in an exception or log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import httpx

from core.clock import Clock
from exchanges.binance import errors
from exchanges.binance.auth import Credentials, encode_params, signed_query
from exchanges.binance.endpoints import Endpoints, Route
from exchanges.binance.parsers import ParseError, parse_error_body, parse_server_time
from exchanges.venue import ClockOffset, ErrorKind, VenueError

log = logging.getLogger(__name__)

Params = Sequence[tuple[str, str]]


class RateGate:
    """What the venue said about our request rate, and whether a request may go now."""

    def __init__(self, clock: Clock, weight_limit: int, *, safety: float = 0.9) -> None:
        if not 0 < safety <= 1:
            raise ValueError("safety must be in (0, 1]")
        self._clock = clock
        self.weight_limit = weight_limit
        self.safety = safety
        self.used = 0
        self._used_minute = -1
        self.blocked_until_ms = 0
        self.banned = False
        self.refused = 0

    def wait_s(self, weight: int) -> tuple[float, bool]:
        """(seconds before a request of `weight` may go, banned?); 0 when it may go now."""
        now = self._clock.time_ms()
        if now < self.blocked_until_ms:
            return (self.blocked_until_ms - now) / 1000, self.banned
        self.banned = False
        if now // 60_000 == self._used_minute and self.used + weight > self.weight_limit * self.safety:
            return ((self._used_minute + 1) * 60_000 - now) / 1000, False
        return 0.0, False

    def observe(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Read the weight and wait headers of one answer; the Retry-After (s) if it had one."""
        now = self._clock.time_ms()
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and (used.isascii() and used.isdigit()):
            self.used = int(used)
            self._used_minute = now // 60_000
        retry_after: float | None = None
        raw = headers.get("retry-after")
        if raw is not None:
            try:
                retry_after = max(0.0, float(raw))
            except ValueError:
                retry_after = None
        if status in (418, 429):
            wait = retry_after if retry_after is not None else 60.0
            self.blocked_until_ms = max(self.blocked_until_ms, now + int(wait * 1000))
            self.banned = status == 418
            return wait
        return retry_after

    def block_until(self, until_ms: int, *, banned: bool) -> None:
        """A WebSocket API answer's `retryAfter` (a timestamp) counts for REST too: one IP."""
        self.blocked_until_ms = max(self.blocked_until_ms, until_ms)
        self.banned = self.banned or banned


class BinanceRest:
    """Signed requests to one market's REST API."""

    def __init__(
        self,
        endpoints: Endpoints,
        credentials: Credentials,
        clock: Clock,
        *,
        offset: ClockOffset | None = None,
        gate: RateGate | None = None,
        recv_window_ms: int = 5000,
        timeout_s: float = 5.0,
        max_wait_s: float = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not 0 < recv_window_ms <= 60_000:
            raise ValueError("recv_window_ms must be in (0, 60000]")
        self.endpoints = endpoints
        self._credentials = credentials
        self._clock = clock
        self.offset = offset or ClockOffset()
        self.gate = gate or RateGate(clock, endpoints.api.weight_limit)
        self.recv_window_ms = recv_window_ms
        self.max_wait_s = max_wait_s
        self._client = httpx.AsyncClient(base_url=endpoints.rest_url, timeout=timeout_s, transport=transport,
                                         headers={"User-Agent": "quantarb"})
        self.requests_sent = 0
        self.resyncs = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def sync_time(self) -> int:
        """Measure the venue clock's offset from ours; the server time (ms)."""
        sent = self._clock.time_ms()
        body = await self._send(self.endpoints.api.time, [], signed=False)
        received = self._clock.time_ms()
        try:
            server = parse_server_time(body)
        except ParseError as exc:
            raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "parse", str(exc)) from None
        self.offset.update(server, sent, received)
        return server

    def venue_ms(self) -> int:
        return self.offset.venue_ms(self._clock.time_ms())

    async def call(self, route: Route, params: Params = ()) -> bytes:
        """The body of a 200 answer; VenueError otherwise (see the module doc)."""
        try:
            return await self._send(route, params, signed=route.signed)
        except VenueError as exc:
            if exc.kind is not ErrorKind.CLOCK_SKEW:
                raise
        self.resyncs += 1
        log.warning("binance: timestamp refused (-1021); resyncing the venue clock")
        await self.sync_time()
        return await self._send(route, params, signed=route.signed)

    async def _send(self, route: Route, params: Params, *, signed: bool) -> bytes:
        await self._gate(route.weight)
        headers = {"X-MBX-APIKEY": self._credentials.api_key} if route.keyed else {}
        if signed:
            query = signed_query(params, self._credentials.secret, timestamp_ms=self.venue_ms(),
                                 recv_window_ms=self.recv_window_ms)
        else:
            query = encode_params(params)
        url = route.path
        content: bytes | None = None
        if route.method in ("POST", "PUT") and query:
            content = query.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif query:
            url = f"{route.path}?{query}"
        self.requests_sent += 1
        try:
            response = await self._client.request(route.method, url, content=content, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise VenueError(errors.VENUE, ErrorKind.RETRYABLE, "connect",
                             f"{route.method} {route.path}: could not connect ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "transport",
                             f"{route.method} {route.path}: no answer ({type(exc).__name__})") from None
        retry_after = self.gate.observe(response.status_code, response.headers)
        if response.status_code == 200:
            return response.content
        code, msg = parse_error_body(response.content)
        raise errors.classify(http_status=response.status_code, code=code, msg=msg, retry_after_s=retry_after)

    async def _gate(self, weight: int) -> None:
        wait, banned = self.gate.wait_s(weight)
        if wait <= 0:
            return
        if wait <= self.max_wait_s:
            await asyncio.sleep(wait)
            return
        self.gate.refused += 1
        kind = ErrorKind.HALT if banned else ErrorKind.RATE_LIMITED
        raise VenueError(errors.VENUE, kind, "local-rate-gate",
                         f"not sent: the venue asked us to wait {wait:.1f} s" if not banned
                         else f"not sent: IP banned for {wait:.0f} s more", retry_after_s=wait)


__all__ = ["BinanceRest", "Params", "RateGate"]
