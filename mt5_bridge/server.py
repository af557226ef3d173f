"""The embedded listener: uvicorn serving the app inside the application's own event loop.

`uvicorn.Server.serve()` would install its own SIGINT/SIGTERM handlers while it runs, so a
SIGTERM to the TUI or the headless runner would stop only the listener. `EmbeddedServer`
keeps signals with the application (`capture_signals` does nothing); the application stops
the listener with `await server.stop()`.

The socket is bound here, before uvicorn starts, so a port in use raises `OSError` from
`start()` (uvicorn itself would call `sys.exit` inside the serving task). Port 0 picks a
free port; `port` holds the real one once `start()` returns.

Connections are bounded and slow requests time out (`ListenerLimits`, `mt5_bridge.guard`);
uvicorn's own log lines are rate limited, since a peer can provoke them. No WebSocket
upgrades: the listener has no WebSocket route, and an upgraded connection would escape the
connection bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from mt5_bridge.guard import ListenerLimits, guarded_protocol
from mt5_bridge.ratelog import RateLimitFilter

__all__ = ["EmbeddedServer", "ListenerLimits"]

_START_TIMEOUT_S = 10.0


class EmbeddedServer(uvicorn.Server):
    """uvicorn in the current loop: no signal handlers, no logging config, no lifespan, no
    access log, no WebSocket. Optional TLS from PEM `tls_cert` / `tls_key` files; `limits`
    bound the connections and the time a request may take to arrive."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        graceful_timeout_s: int = 5,
        limits: ListenerLimits | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.limits = limits if limits is not None else ListenerLimits()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=guarded_protocol(self.limits),
            ws="none",
            log_config=None,
            lifespan="off",
            access_log=False,
            server_header=False,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            timeout_graceful_shutdown=graceful_timeout_s,
            timeout_keep_alive=self.limits.keep_alive_s,
        )
        _rate_limit_uvicorn_log()
        super().__init__(config)
        self.host = host
        self.port = port
        self.tls = tls_cert is not None
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Signals stay with the application: install nothing."""
        yield

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind, serve as a task, and return once the server accepts connections."""
        if self._task is not None:
            raise RuntimeError("server already started")
        if not self.config.loaded:
            self.config.load()  # TLS files are read here: errors surface now, not in the task
        sock = self._bind()
        self.port = sock.getsockname()[1]
        self.should_exit = False
        self._task = asyncio.create_task(self.serve(sockets=[sock]), name=f"listener:{self.port}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while not self.started:
            if self._task.done():
                task, self._task = self._task, None
                sock.close()
                exc = task.exception()
                raise RuntimeError("listener failed to start") from exc
            if loop.time() > deadline:
                await self.stop()
                raise TimeoutError("listener did not start in time")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), and wait for the task."""
        task, self._task = self._task, None
        if task is None:
            return
        self.should_exit = True
        try:
            await task
        finally:
            self.started = False

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, socktype, proto, _, addr = infos[0]
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


def _rate_limit_uvicorn_log() -> None:
    """uvicorn logs each malformed request (and each app error, with its traceback) on
    `uvicorn.error`: the same line at most once per 10 s, with a count of the rest."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter())
