"""OKX public market data: `tickers` and `bbo-tbt` over one WebSocket, REST ticker fallback.

Protocol (venue-protocols.md section A): one `subscribe` request per instrument with its own
`id`, so an `error` event names the subscription it refuses; the text `ping` keepalive after
`silence_s` without a frame (OKX drops a connection idle for 30 s); the `notice` event (64008)
moves us to a new connection before the old one is closed; `seqId` resets are counted, not
errors. Frames of both channels share the connection and are routed by channel name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import httpx
from websockets.asyncio.client import ClientConnection

from core.clock import Clock
from feeds.base import Control, FeedProtocolError, FeedTiming, QuoteSink, WsFeed
from feeds.normalizers import OkxBboNormalizer, OkxTickerNormalizer
from feeds.rest_parsers import parse_okx_ticker_response

TICKERS = "tickers"
BBO = "bbo-tbt"


class OkxFeed(WsFeed):
    venue = "okx"
    ping_text = "ping"

    def __init__(
        self,
        *,
        ws_url: str,
        rest_url: str,
        instruments: Sequence[tuple[str, str]],
        sink: QuoteSink,
        clock: Clock,
        transport: str = "ws",
        timing: FeedTiming | None = None,
    ) -> None:
        super().__init__(name="okx", rest_url=rest_url, sink=sink, clock=clock, transport=transport, timing=timing)
        for symbol, channel in instruments:
            if channel not in (TICKERS, BBO):
                raise ValueError(f"okx {symbol}: channel must be {TICKERS!r} or {BBO!r}")
        self.ws_url = ws_url
        self.instruments = list(instruments)
        self.tickers = OkxTickerNormalizer([s for s, c in instruments if c == TICKERS])
        self.bbo = OkxBboNormalizer([s for s, c in instruments if c == BBO])
        self._has_bbo = bool(self.bbo.symbols)

    def stream_url(self) -> str:
        return self.ws_url

    def dropped(self) -> Counter[str]:
        return self.tickers.dropped + self.bbo.dropped

    def seq_resets(self) -> int:
        return self.bbo.seq_resets

    async def subscribe(self, ws: ClientConnection) -> None:
        pending: dict[str, tuple[str, str]] = {}
        for i, (symbol, channel) in enumerate(self.instruments):
            req_id = f"s{i}"
            pending[req_id] = (channel, symbol)
            await ws.send(json.dumps({"id": req_id, "op": "subscribe",
                                      "args": [{"channel": channel, "instId": symbol}]}))
        refused: list[str] = []
        while pending:
            self.last_control = None
            self.receive(await ws.recv())
            control = self.last_control
            if control is None:
                continue
            req_id = str(control.raw.get("id", ""))
            if control.kind == "subscribe" and req_id in pending:
                del pending[req_id]
            elif control.is_error and req_id in pending:
                channel, symbol = pending.pop(req_id)
                refused.append(f"{channel}:{symbol} ({control.code} {control.msg})")
        if refused:
            self.health.last_error = "subscription refused: " + ", ".join(refused)
            if len(refused) == len(self.instruments):
                raise FeedProtocolError(self.health.last_error)

    def on_frame(self, frame: str | bytes, recv_ns: int) -> Control:
        # Both channels share the connection; the channel name sits in `arg`, near the start.
        normalizer: OkxTickerNormalizer | OkxBboNormalizer = self.tickers
        if self._has_bbo:
            head = frame[:64]
            if (b'"bbo-tbt"' in head) if isinstance(head, bytes) else ('"bbo-tbt"' in head):
                normalizer = self.bbo
        return self.deliver(normalizer.normalize(frame, recv_ns), normalizer)

    async def poll_rest(self, client: httpx.AsyncClient) -> None:
        for symbol, _channel in self.instruments:
            response = await client.get("/api/v5/market/ticker", params={"instId": symbol})
            recv_ns = self.clock.monotonic_ns()
            for quote in parse_okx_ticker_response(response.content, recv_ns, symbols=(symbol,)):
                self.sink(quote)
                self.health.quotes += 1
