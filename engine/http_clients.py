"""One HTTP client per venue URL, kept for a poller's life (funding, rate books).

A client per poll built a fresh SSL context each time (certifi loaded: hundreds of KB of
OpenSSL allocations made and freed in glibc's main arena, fragmenting it over weeks of running,
issue 19; some 45 ms of blocked event loop, measured). httpx still drops a connection idle for
5 s, so pollers a minute apart connect as before; polls closer together reuse the connection.
"""

from __future__ import annotations

import asyncio

import httpx


class ClientsByUrl:
    """The client of each base URL, made on first use; a closed one is replaced, never reused.
    A request error leaves a client usable (httpx drops the failed connection), so it is kept."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._clients: dict[str, httpx.AsyncClient] = {}

    def get(self, url: str) -> httpx.AsyncClient:
        client = self._clients.get(url)
        if client is None or client.is_closed:
            client = self._clients[url] = httpx.AsyncClient(base_url=url, timeout=self._timeout_s)
        return client

    def open_count(self) -> int:
        """Clients made and not closed (what a stop must leave at 0)."""
        return sum(not c.is_closed for c in self._clients.values())

    async def aclose(self) -> None:
        """Close every client (their connections); a later `get` makes a new one. All at once:
        a second cancel of the stopping task (`engine.tasks`) must not leave the rest open."""
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
