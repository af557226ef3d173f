"""The listener's ASGI app: MT5 endpoints (docs/mt5-protocol.md), `/healthz`, operator routes (docs/operator.md).

    POST /mt5/tick       signed   {"ticks":[...]}            -> {"commands":[...]}
    GET  /mt5/commands   signed   ?wait_ms=N (capped 1000)   -> {"commands":[...]}
    POST /mt5/ack        signed   {command_id,status,...}    -> {"ok":true}
    POST /mt5/fill       signed   {command_id,deal,...}      -> {"ok":true}
    POST /mt5/account    signed   {balance,equity,...}       -> {"ok":true}

Tick, commands and account also take the terminal's lease for the EA instance named in the
optional `X-QA-Instance` header (409 when another instance holds it; `mt5_bridge.lease`).
    GET  /healthz        open                                -> {"status":"ok"|"degraded"|"halted"}

Order of checks for a signed request: the size (413: a declared Content-Length over 64 KiB
is refused before reading, and the streamed body is counted too), the signature over the
raw body (401, before anything parses it), the instance lease for tick, commands and account
(409), then decoding and validation (422), then the state change. Bad input never gets 5xx
and never changes state; 503 means the command store failed (retry). Every answer is compact
JSON, errors included (`{"error": ...}`).

`extra_routes` (the runtime's operator API and metrics) are mounted as given; the body
limit and the JSON error answers apply to them too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mt5_bridge import protocol
from mt5_bridge.auth import HEADER_SIGNATURE, HEADER_TERMINAL, HEADER_TIMESTAMP, AuthError
from mt5_bridge.bridge import Mt5Bridge, Reply, unauthorized
from mt5_bridge.lease import INSTANCE_HEADER
from mt5_bridge.ratelog import RateLimitedLog

__all__ = ["MAX_BODY_BYTES", "BodyLimitMiddleware", "create_app", "http_error", "request_target"]

MAX_BODY_BYTES = 64 * 1024
JSON = "application/json"
log = logging.getLogger(__name__)


def _json(reply: Reply, headers: dict[str, str] | None = None) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=headers)


def _error(status: int, error: str) -> Reply:
    return Reply(status, protocol.encode(protocol.ErrorBody(error=error)))


_TOO_LARGE = _error(413, "body too large")
_BAD_LENGTH = _error(400, "invalid content-length")


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: by the declared Content-Length before reading, and by
    counting the streamed body (chunked uploads, or a declared length that lies). A client
    that goes away before its body has arrived (or whose body timed out, `mt5_bridge.guard`)
    is one rate-limited log line, not a traceback per request."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.events = RateLimitedLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    await self._reply(_BAD_LENGTH, scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await self._reply(_TOO_LARGE, scope, receive, send)
                    return
        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._reply(_TOO_LARGE, scope, receive, send)
        except ClientDisconnect:
            client = scope.get("client")
            self.events.warning("disconnect", "listener: %s went away before its request body had arrived (%s %r)",
                           f"{client[0]}:{client[1]}" if client else "a client", scope.get("method", "?"),
                           str(scope.get("path", ""))[:100])

    @staticmethod
    async def _reply(reply: Reply, scope: Scope, receive: Receive, send: Send) -> None:
        await _json(reply, {"connection": "close"})(scope, receive, send)


def request_target(scope: Scope) -> bytes:
    """The raw request target as signed: path and, when there is one, `?query`."""
    raw = scope.get("raw_path")
    path: bytes = raw if isinstance(raw, bytes) and raw else str(scope.get("path", "")).encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


def _single(request: Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    return values[0] if len(values) == 1 else None


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405, ...) in the listener's JSON error shape."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    return _json(_error(exc.status_code, str(exc.detail).lower()), dict(exc.headers or {}))


Handler = Callable[[str, bytes, Request], Awaitable[Reply]]


def create_app(bridge: Mt5Bridge, *, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The listener app: the MT5 routes on `bridge`, `/healthz`, then `extra_routes`."""

    def signed(method: str, handler: Handler, *, leased: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if request.method != method:
                # Starlette adds HEAD to GET routes: it would serve commands without a body.
                return _json(_error(405, "method not allowed"), {"allow": method})
            body = await request.body()
            try:
                terminal = bridge.authenticate(
                    terminal=_single(request, HEADER_TERMINAL),
                    timestamp=_single(request, HEADER_TIMESTAMP),
                    signature=_single(request, HEADER_SIGNATURE),
                    method=request.method,
                    target=request_target(request.scope),
                    body=body,
                )
            except AuthError as exc:
                return _json(unauthorized(exc.reason))
            if leased:
                # One EA instance per terminal (mt5_bridge.lease): acks and fills are facts
                # about executions and are taken from any instance; commands, ticks and the
                # account only from the instance holding the terminal.
                refused = bridge.claim(terminal, request.headers.get(INSTANCE_HEADER))
                if refused is not None:
                    return _json(refused)
            return _json(await handler(terminal, body, request))

        return endpoint

    async def tick(terminal: str, body: bytes, request: Request) -> Reply:
        return await bridge.tick(terminal, body)

    async def commands(terminal: str, body: bytes, request: Request) -> Reply:
        return await bridge.commands(terminal, request.query_params.get("wait_ms"))

    async def ack(terminal: str, body: bytes, request: Request) -> Reply:
        return await bridge.ack(terminal, body)

    async def fill(terminal: str, body: bytes, request: Request) -> Reply:
        return await bridge.fill(terminal, body)

    async def account(terminal: str, body: bytes, request: Request) -> Reply:
        return await bridge.account_report(terminal, body)

    async def healthz(request: Request) -> Response:
        return _json(Reply(200, protocol.encode(protocol.HealthBody(status=bridge.health_status()))))

    routes: list[BaseRoute] = [
        Route("/mt5/tick", signed("POST", tick, leased=True), methods=["POST"]),
        Route("/mt5/commands", signed("GET", commands, leased=True), methods=["GET"]),
        Route("/mt5/ack", signed("POST", ack), methods=["POST"]),
        Route("/mt5/fill", signed("POST", fill), methods=["POST"]),
        Route("/mt5/account", signed("POST", account, leased=True), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)],
        exception_handlers={HTTPException: http_error},
    )
