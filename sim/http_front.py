"""One loopback port for a simulated venue: HTTP/1.1 REST with bodies, WebSocket by splicing.

The market-data simulators run on `websockets`, whose HTTP side answers only requests without
a body; a trading API needs POST, PUT and DELETE with form or JSON bodies. `HttpFront` owns the
venue's public port: a plain request (any method, `Content-Length` body, keep-alive) goes to an
async handler; a WebSocket upgrade is spliced byte for byte to an internal `websockets` server
chosen by path, so the existing stream servers keep their exact behaviour (pings, drops,
silence) behind the one port a client is given. Chunked request bodies are refused (501), as
no venue client sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_MAX_BODY = 1 << 20


@dataclass(slots=True)
class HttpRequest:
    """One parsed request. `raw_query` and `body` are exactly as received (signatures cover them)."""

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    peer: str = ""

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Close the TCP connection without answering (a lost answer), after the handler ran.
    drop: bool = False


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# (host, port) of the internal WebSocket server for an upgrade path, None to refuse it (404).
UpgradeRoute = Callable[[str], tuple[str, int] | None]


class HttpFront:
    """The listening port: REST to `handler`, WebSocket upgrades spliced to `upgrade_route`."""

    def __init__(self, host: str, port: int, handler: Handler, upgrade_route: UpgradeRoute) -> None:
        self.host = host
        self._port = port
        self._handler = handler
        self._upgrade_route = upgrade_route
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests = 0
        self.upgrades = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=_MAX_HEAD * 4)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def drop_all(self) -> int:
        """Close every client connection abruptly (REST keep-alive and spliced WebSockets)."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    # ------------------------------------------------------------------ connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                parsed = _parse_head(head)
                if parsed is None:
                    await _answer(writer, HttpResponse(400, b'{"code":-1,"msg":"Bad request"}'), close=True)
                    return
                method, target, headers = parsed
                url = urlsplit(target)
                if "websocket" in headers.get("upgrade", "").lower():
                    await self._splice(url.path, head, reader, writer)
                    return
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await _answer(writer, HttpResponse(501, b'{"code":-1,"msg":"Chunked bodies unsupported"}'),
                                  close=True)
                    return
                try:
                    length = int(headers.get("content-length", "0") or "0")
                except ValueError:
                    length = -1
                if not 0 <= length <= _MAX_BODY:
                    await _answer(writer, HttpResponse(400, b'{"code":-1,"msg":"Bad Content-Length"}'), close=True)
                    return
                body = await reader.readexactly(length) if length else b""
                request = HttpRequest(method, url.path, url.query, headers, body, str(peer))
                self.requests += 1
                try:
                    response = await self._handler(request)
                except Exception:  # a simulator bug must not look like a venue answer
                    log.exception("http front: handler failed for %s %s", method, target)
                    response = HttpResponse(500, b"Internal Server Error\n", "text/plain; charset=utf-8")
                if response.drop:
                    writer.transport.abort()
                    return
                close = headers.get("connection", "").lower() == "close"
                await _answer(writer, response, close=close)
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            # stop(): end quietly. Python 3.11's stream protocol calls task.exception() on this
            # task when it ends, which raises (and logs) for a task that ends cancelled.
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # see above: end quietly
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _splice(self, path: str, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self._upgrade_route(path)
        if target is None:
            await _answer(writer, HttpResponse(404, b'{"code":404,"msg":"Not Found"}'), close=True)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            await _answer(writer, HttpResponse(503, b"Service Unavailable\n", "text/plain"), close=True)
            return
        self.upgrades += 1
        self._writers.add(up_writer)
        up_writer.write(head)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then end the other side too (abruptly, like the source)."""
    try:
        while True:
            data = await src.read(65536)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    if len(head) > _MAX_HEAD:
        return None
    return head


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


async def _answer(writer: asyncio.StreamWriter, response: HttpResponse, *, close: bool) -> None:
    reason = http.HTTPStatus(response.status).phrase if response.status in http.HTTPStatus._value2member_map_ else ""
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'close' if close else 'keep-alive'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()


__all__ = ["Handler", "HttpFront", "HttpRequest", "HttpResponse", "UpgradeRoute"]
