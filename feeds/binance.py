"""Binance public market data: `bookTicker` streams (spot or USD-M), REST bookTicker fallback.

Protocol (venue-protocols.md section C): one combined-stream connection with lowercase
stream names in the URL (so every reconnect resubscribes by construction); USD-M on the
split `/public` route (the legacy routes were retired); the server's ping frames are
answered by the WebSocket layer; a connection lives at most 24 h, so we move to a new one
before that (make-before-break), and also on the `serverShutdown` event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import httpx
from websockets.asyncio.client import ClientConnection

from core.clock import Clock
from feeds.base import Control, FeedTiming, QuoteSink, WsFeed
from feeds.normalizers import BinanceBookTickerNormalizer
from feeds.rest_parsers import parse_binance_book_ticker

Market = Literal["spot", "usdm"]

DEFAULT_WS = {"spot": "wss://stream.binance.com:9443", "usdm": "wss://fstream.binance.com"}
DEFAULT_REST = {"spot": "https://api.binance.com", "usdm": "https://fapi.binance.com"}
REST_PATH = {"spot": "/api/v3/ticker/bookTicker", "usdm": "/fapi/v1/ticker/bookTicker"}
# Reconnect well before the venue's 24 h limit.
MAX_LIFETIME_S = 23.5 * 3600


class BinanceFeed(WsFeed):
    venue = "binance"
    ping_text = None

    def __init__(
        self,
        *,
        market: Market,
        symbols: Sequence[str],
        sink: QuoteSink,
        clock: Clock,
        ws_url: str | None = None,
        rest_url: str | None = None,
        transport: str = "ws",
        timing: FeedTiming | None = None,
        max_lifetime_s: float | None = MAX_LIFETIME_S,
    ) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"binance market must be 'spot' or 'usdm', not {market!r}")
        super().__init__(
            name=f"binance-{market}",
            rest_url=rest_url or DEFAULT_REST[market],
            sink=sink,
            clock=clock,
            transport=transport,
            timing=timing,
            max_lifetime_s=max_lifetime_s,
        )
        self.market: Market = market
        self.ws_base = (ws_url or DEFAULT_WS[market]).rstrip("/")
        self.symbols = list(symbols)
        self.normalizer = BinanceBookTickerNormalizer(self.symbols)

    def stream_url(self) -> str:
        route = "/public" if self.market == "usdm" else ""
        streams = "/".join(f"{s.lower()}@bookTicker" for s in self.symbols)
        return f"{self.ws_base}{route}/stream?streams={streams}"

    def dropped(self) -> Counter[str]:
        return self.normalizer.dropped

    async def subscribe(self, ws: ClientConnection) -> None:
        """Streams are named in the URL: the connection is subscribed once it is open."""

    def on_frame(self, frame: str | bytes, recv_ns: int) -> Control:
        return self.deliver(self.normalizer.normalize(frame, recv_ns), self.normalizer)

    async def poll_rest(self, client: httpx.AsyncClient) -> None:
        path = REST_PATH[self.market]
        for symbol in self.symbols:
            response = await client.get(path, params={"symbol": symbol})
            recv_ns = self.clock.monotonic_ns()
            ts_key = "time" if self.market == "usdm" else None
            for quote in parse_binance_book_ticker(response.content, ts_key, recv_ns, symbols=(symbol,)):
                self.sink(quote)
                self.health.quotes += 1
