"""A Binance WebSocket API session: requests matched to answers by id, and user data events.

Order entry goes here first because it is the latency that matters (one frame on an open
connection instead of a new HTTPS request). One `WsApi` is one connection:

- `request(method, params, signed=True)` signs the params (HMAC over the sorted params, see
  `auth.sign_ws_params`) unless the session logged on with an Ed25519 key, sends one frame and
  waits for the answer with the same id. Not connected, or the frame could not be written:
  `retryable` (nothing was sent; the caller may use REST). Sent, then no answer within the
  timeout or the connection dropped: `unknown` (never re-send; query by client order id).
  An error answer is classed like a REST one; a 429/418 `retryAfter` also blocks the shared
  REST `RateGate` (one IP, one budget).
- user data events (spot `userDataStream.subscribe.signature`) go to `on_event`; a frame that
  cannot be parsed is counted in `dropped`, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.clock import Clock
from exchanges.binance import errors
from exchanges.binance.auth import Credentials, logon_params, sign_ws_params
from exchanges.binance.parsers import ParseError, UserEvent, WsResponse, parse_ws_frame
from exchanges.binance.rest import RateGate
from exchanges.venue import ClockOffset, ErrorKind, VenueError
from exchanges.ws_frame import send_text_now

log = logging.getLogger(__name__)

EventHandler = Callable[[UserEvent], None]


class WsApi:
    """One WebSocket API connection."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        clock: Clock,
        *,
        offset: ClockOffset,
        gate: RateGate | None = None,
        recv_window_ms: int = 5000,
        timeout_s: float = 5.0,
        on_event: EventHandler | None = None,
        on_close: Callable[[], Awaitable[None] | None] | None = None,
        logon: bool = False,
    ) -> None:
        self.url = url
        self._credentials = credentials
        self._clock = clock
        self.offset = offset
        self.gate = gate
        self.recv_window_ms = recv_window_ms
        self.timeout_s = timeout_s
        self.on_event = on_event
        self.on_close = on_close
        self.logon = logon
        self.logged_on = False
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[WsResponse]] = {}
        self._ids = itertools.count(1)
        self.dropped = 0
        self.events = 0
        self.closed = asyncio.Event()
        self.closed.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self.closed.is_set()

    async def connect(self) -> None:
        """Open the connection (and log on with the Ed25519 key when asked)."""
        if self.connected:
            return
        try:
            # No permessage-deflate on the order path: compressing each small request costs ~20 us.
            ws = await asyncio.wait_for(connect(self.url, max_size=1 << 22, ping_interval=None, compression=None),
                                        self.timeout_s)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise VenueError(errors.VENUE, ErrorKind.RETRYABLE, "ws-connect",
                             f"WebSocket API connection failed ({type(exc).__name__})") from None
        self._ws = ws
        self.closed.clear()
        self._reader = asyncio.create_task(self._read(ws), name="binance-wsapi-reader")
        if self.logon:
            try:
                params = logon_params(self._credentials, timestamp_ms=self._venue_ms(),
                                      recv_window_ms=self.recv_window_ms)
                await self.request("session.logon", params, signed=False)
            except BaseException:
                await self.close()  # a session that did not log on is not used half-way
                raise
            self.logged_on = True

    async def close(self) -> None:
        ws = self._ws
        if ws is not None:
            await ws.close()
        reader = self._reader
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._finish()

    async def request(self, method: str, params: dict[str, Any] | None = None, *, signed: bool = True) -> bytes:
        """The raw `result` of the answer; VenueError as the module doc says."""
        ws = self._ws
        if ws is None or self.closed.is_set():
            raise VenueError(errors.VENUE, ErrorKind.RETRYABLE, "ws-not-connected", f"{method}: not connected")
        if self.gate is not None:
            wait, banned = self.gate.wait_s(1)
            if wait > 0:  # told to wait (over REST or here): the same IP budget, nothing is sent
                self.gate.refused += 1
                raise VenueError(errors.VENUE, ErrorKind.HALT if banned else ErrorKind.RATE_LIMITED,
                                 "local-rate-gate", f"{method}: not sent, the venue asked us to wait {wait:.1f} s",
                                 retry_after_s=wait)
        body = dict(params or {})
        if signed and not self.logged_on:
            body = sign_ws_params(body, self._credentials, timestamp_ms=self._venue_ms(),
                                  recv_window_ms=self.recv_window_ms)
        elif signed:
            body.setdefault("timestamp", self._venue_ms())
            body.setdefault("recvWindow", self.recv_window_ms)
        req_id = f"q{next(self._ids)}"
        future: asyncio.Future[WsResponse] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            try:
                frame = msgspec.json.encode({"id": req_id, "method": method, "params": body})
                if not send_text_now(ws, frame):
                    await ws.send(frame, text=True)
            except ConnectionClosed:
                raise VenueError(errors.VENUE, ErrorKind.RETRYABLE, "ws-not-connected",
                                 f"{method}: connection closed before sending") from None
            try:
                answer = await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError:
                raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "ws-timeout",
                                 f"{method}: no answer within {self.timeout_s:g} s") from None
            except ConnectionError:
                raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "ws-lost",
                                 f"{method}: connection lost before the answer") from None
        finally:
            self._pending.pop(req_id, None)
        if answer.result is not None:
            return answer.result
        retry_s = None
        if answer.retry_after_ms is not None:
            retry_s = max(0.0, (answer.retry_after_ms - self._venue_ms()) / 1000)
            if self.gate is not None and answer.status in (418, 429):
                self.gate.block_until(self._clock.time_ms() + int(retry_s * 1000), banned=answer.status == 418)
        raise errors.classify(http_status=answer.status, code=answer.error_code, msg=answer.error_msg,
                              retry_after_s=retry_s)

    def _venue_ms(self) -> int:
        return self.offset.venue_ms(self._clock.time_ms())

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._on_frame(message)
        except ConnectionClosed:
            pass
        finally:
            self._finish()
            callback = self.on_close
            if callback is not None:
                result = callback()
                if result is not None:
                    await result

    def _on_frame(self, message: str | bytes) -> None:
        try:
            frame = parse_ws_frame(message)
        except ParseError as exc:
            self.dropped += 1
            log.warning("binance ws api: unreadable frame dropped (%s)", exc)
            return
        if isinstance(frame, WsResponse):
            future = self._pending.get(frame.request_id)
            if future is not None and not future.done():
                future.set_result(frame)
            return
        self.events += 1
        if self.on_event is not None:
            try:
                self.on_event(frame)
            except Exception:
                log.exception("binance ws api: event handler failed")

    def _finish(self) -> None:
        self.closed.set()
        self._ws = None
        self.logged_on = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))
        self._pending.clear()


__all__ = ["EventHandler", "WsApi"]
