"""The listener's defences against slow and excess connections (docs/configuration.md, `[listener]`).

uvicorn closes a connection that stays idle after an answer (`timeout_keep_alive`), but
before the first request, and while a request's head or body is still arriving, it waits
forever: idle, partial-head and partial-body connections stayed open indefinitely, and its
`limit_concurrency` only answers 503 once a whole request head has arrived. So the listener
runs uvicorn's httptools protocol with three additions:

- at most `max_connections` open connections: one more is answered 503 and closed at once
  (with the request unread, a client may see the connection reset instead);
- a deadline per request: its head and body must have arrived within `request_timeout_s`
  of its first byte (of the connection being opened, for the first request). Past it the
  client gets 408 and the connection is closed (a connection that sent nothing is just
  closed), and an app still waiting for the body sees a disconnect. The time the app takes
  to answer (a long poll, a flatten) is not counted; nor is time the server spent not
  reading because an earlier request on the connection was still being answered;
- a request head (request line and headers) over `MAX_HEAD_BYTES` is answered 431 and the
  connection closed (httptools itself sets no limit).

Refusals and timeouts are logged through `RateLimitedLog`, so a flood of them writes a few
lines, not one each; uvicorn's own log lines are rate limited by `RateLimitFilter`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mt5_bridge.ratelog import RateLimitedLog

__all__ = ["MAX_HEAD_BYTES", "GuardedHttpProtocol", "ListenerLimits", "guarded_protocol"]

log = logging.getLogger(__name__)
MAX_HEAD_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """`[listener]` limits: connections open at once, seconds for a request to arrive whole,
    seconds an idle connection is kept after an answer."""

    max_connections: int = 64
    request_timeout_s: float = 10.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not self.request_timeout_s > 0 or self.keep_alive_s < 1:
            raise ValueError("listener limits must be positive")


def _raw(status: bytes, error: bytes) -> bytes:
    body = b'{"error":"' + error + b'"}'
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


TOO_MANY_CONNECTIONS = _raw(b"503 Service Unavailable", b"too many connections")
REQUEST_TIMEOUT = _raw(b"408 Request Timeout", b"request timeout")
HEAD_TOO_LARGE = _raw(b"431 Request Header Fields Too Large", b"request head too large")


class _HeadTooLarge(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection bound, a request deadline and a head
    size limit (see the module). `limits` is set per server by `guarded_protocol`."""

    limits: ClassVar[ListenerLimits] = ListenerLimits()
    events: ClassVar[RateLimitedLog] = RateLimitedLog(log)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False  # between a request's first byte and its last
        self._head_done = False
        self._head_bytes = 0
        self._head_too_large = False

    # -- connections ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.events.warning("too_many", "listener: refused a connection from %s: %d open (max_connections %d)",
                           self._peer(), len(self.connections) - 1, self.limits.max_connections)
            self._answer_and_close(TOO_MANY_CONNECTIONS)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_request = True
        self._head_done = False
        self._head_bytes = 0
        if self._deadline is None:  # the first request keeps the deadline of the connection
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_request = False
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # the parser stopped because _count_head raised
            self.events.warning("head_too_large", "listener: request head from %s over %d bytes: answered 431",
                           self._peer(), MAX_HEAD_BYTES)
            self._answer_and_close(HEAD_TOO_LARGE)
            return
        super().send_400_response(msg)

    # -- the deadline -----------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout_s, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The server stopped reading (an earlier request on this connection is still
            # being answered, or its body not yet consumed): not the client's delay.
            self._arm()
            return
        if not self._in_request:
            self.transport.close()  # opened and never used: nothing to answer
            return
        cycle = self.cycle if self._head_done else None
        if cycle is not None and cycle.response_started:
            self.transport.close()  # answered already (a refusal before the body was read)
            return
        self.events.warning("timeout", "listener: request from %s not complete within %gs: answered 408",
                       self._peer(), self.limits.request_timeout_s)
        if cycle is not None:
            cycle.disconnected = True  # the app waiting for the body sees a disconnect, and answers nothing
            cycle.message_event.set()
        self._answer_and_close(REQUEST_TIMEOUT)

    # -- helpers ----------------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response

    def _answer_and_close(self, raw: bytes) -> None:
        self._disarm()
        self.transport.write(raw)
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


def guarded_protocol(limits: ListenerLimits) -> type[GuardedHttpProtocol]:
    """The protocol class for one server: its limits, and its own rate-limited log."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "events": RateLimitedLog(log)})
