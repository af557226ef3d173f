"""The feed clients (OkxFeed, BinanceFeed) against the loopback venue simulators, over real sockets.

Every test runs one feed task against one simulator fed by a small publisher task, with short
lifecycle timings, and ends by cancelling the feed and checking that it stopped cleanly (state
`stopped`, no REST task or HTTP client left, the server back to zero connections). Every wait
is bounded; timing assertions use generous margins over the configured bounds, never tight
wall-clock values.

Quotes are tagged with their source by the task that delivered them: the REST fallback runs
in a task named `<feed>-rest`, everything else came from a WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from core.clock import RealClock
from core.models import Quote, Venue
from feeds.base import FeedTiming, WsFeed
from feeds.binance import BinanceFeed
from feeds.health import FeedHealth, FeedState
from feeds.okx import BBO, TICKERS, OkxFeed
from sim.binance_server import BinanceSimServer
from sim.market import SimTick
from sim.okx_server import OkxSimServer

CLOCK = RealClock()
T = 2.0  # the default bound of a single wait
PUBLISH_EVERY_S = 0.02
TIMING = FeedTiming(
    silence_s=0.4,
    pong_timeout_s=0.25,
    rest_interval_s=0.05,
    connect_timeout_s=0.5,
    backoff_initial_s=0.05,
    backoff_cap_s=0.3,
)
# Slack on top of a configured bound for scheduling, handshakes and a loaded CI machine.
MARGIN_S = 0.5

BTC_SWAP = "BTC-USDT-SWAP"
ETH_SWAP = "ETH-USDT-SWAP"
OKX_INSTRUMENTS = [(BTC_SWAP, TICKERS), (ETH_SWAP, BBO)]  # both channels on one connection
BN_SYMBOLS = ["BTCUSDT", "ETHUSDT"]


# ------------------------------------------------------------------------------ helpers


async def wait_until(predicate: Callable[[], object], within: float = T, what: str = "") -> float:
    """Poll every 10 ms until `predicate()` is true; return the elapsed seconds."""
    start = time.monotonic()
    deadline = start + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:g}s: {what or predicate}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@dataclass(slots=True)
class Event:
    kind: str  # "open" or "close"
    at: float  # time.monotonic()
    active: int  # server.active_connections right after the event


class RecordingOkx(OkxSimServer):
    """The OKX simulator, recording connection opens and closes through its subclass hooks."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.events: list[Event] = []
        self.pings = 0
        self.notice_on_next_ping = False  # answer the next `ping` with the notice, then the pong

    def _on_open(self, conn: Any) -> None:
        self.events.append(Event("open", time.monotonic(), self.active_connections))
        super()._on_open(conn)

    def _on_closed(self, conn: Any) -> None:
        self.events.append(Event("close", time.monotonic(), self.active_connections))
        super()._on_closed(conn)

    def _on_message(self, conn: Any, text: str) -> None:
        if text == "ping":
            self.pings += 1
            if self.notice_on_next_ping:
                self.notice_on_next_ping = False
                self.send_notice(close_after_s=5.0)
        super()._on_message(conn, text)


class RecordingBinance(BinanceSimServer):
    """The Binance simulator, recording connection opens/closes and counting its pings."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.events: list[Event] = []
        self.pings = 0

    def _on_open(self, conn: Any) -> None:
        self.events.append(Event("open", time.monotonic(), self.active_connections))
        ws: ServerConnection = conn.ws
        ping = ws.ping

        async def counting_ping(data: Any = None) -> Any:
            self.pings += 1
            return await ping(data)

        # Deliberately wraps this connection's own ping (the server's keepalive calls it) to count it.
        ws.ping = counting_ping  # type: ignore[method-assign]
        super()._on_open(conn)

    def _on_closed(self, conn: Any) -> None:
        self.events.append(Event("close", time.monotonic(), self.active_connections))
        super()._on_closed(conn)


Server = RecordingOkx | RecordingBinance


@dataclass(slots=True)
class Received:
    quote: Quote
    source: str  # "ws" or "rest"
    at_ns: int  # CLOCK.monotonic_ns() when the sink was called


@dataclass
class Sink:
    """A list-appending quote sink that records which task delivered each quote."""

    items: list[Received] = field(default_factory=list)

    def __call__(self, quote: Quote) -> None:
        task = asyncio.current_task()
        source = "rest" if task is not None and task.get_name().endswith("-rest") else "ws"
        self.items.append(Received(quote, source, CLOCK.monotonic_ns()))

    @property
    def quotes(self) -> list[Quote]:
        return [r.quote for r in self.items]

    def count(self, symbol: str | None = None, source: str | None = None, after_ns: int = 0) -> int:
        return sum(
            1
            for r in self.items
            if (symbol is None or r.quote.symbol == symbol)
            and (source is None or r.source == source)
            and r.at_ns > after_ns
        )

    def has_each(self, symbols: list[str], n: int = 1, source: str | None = None, after_ns: int = 0) -> bool:
        return all(self.count(s, source, after_ns) >= n for s in symbols)

    def max_gap_s(self, source: str, from_ns: int = 0, to_ns: int | None = None) -> float:
        """The longest time without a quote of `source` within [from_ns, to_ns]."""
        stamps = [r.quote.recv_ns for r in self.items if r.source == source]
        stamps = [s for s in stamps if s >= from_ns and (to_ns is None or s <= to_ns)]
        assert len(stamps) >= 2, "not enough quotes to measure a gap"
        return max(b - a for a, b in itertools.pairwise(stamps)) / 1e9


class Publisher:
    """Publishes one changed top of book per symbol every 20 ms and remembers what it sent."""

    def __init__(self, server: Server, venue: Venue, symbols: list[str]) -> None:
        self.server = server
        self.venue: Venue = venue
        self.symbols = symbols
        self.paused = False
        self.published: dict[str, dict[tuple[float, float, float, float], int]] = {s: {} for s in symbols}
        self._i = 0
        self._task: asyncio.Task[None] | None = None

    def publish_once(self) -> None:
        self._i += 1
        i = self._i
        for k, symbol in enumerate(self.symbols):
            # Decimal-exact values (one decimal), so venue formatting round-trips exactly;
            # the bid moves on every tick, so every tick is a change and a new book.
            bid = round(1000.0 * (k + 1) + 0.5 * i, 1)
            ask = round(bid + 0.1 * (1 + i % 3), 1)
            bid_size, ask_size = float(1 + i % 5), float(2 + i % 4)
            ts_ms = CLOCK.time_ms()
            self.published[symbol][(bid, ask, bid_size, ask_size)] = ts_ms
            self.server.publish(SimTick(self.venue, symbol, bid, ask, bid_size, ask_size, ts_ms))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            if not self.paused:
                self.publish_once()

    def start(self) -> None:
        self.publish_once()  # a book exists before the feed subscribes
        self._task = asyncio.create_task(self._run(), name="test-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check(self, quote: Quote, *, venue_ts: bool) -> None:
        """The quote carries exactly a book that was published (never a crossed or garbled one)."""
        assert quote.venue == self.venue
        assert 0 < quote.bid <= quote.ask
        book = (quote.bid, quote.ask, quote.bid_size, quote.ask_size)
        assert book in self.published[quote.symbol], f"{quote} was never published"
        expected_ts = self.published[quote.symbol][book] if venue_ts else 0
        assert quote.venue_ts_ms == expected_ts


@dataclass
class Rig:
    server: Server
    feed: WsFeed
    sink: Sink
    publisher: Publisher
    symbols: list[str]
    task: asyncio.Task[None]
    venue_ts: bool  # whether quotes carry the venue timestamp (not Binance spot)

    @property
    def health(self) -> FeedHealth:
        return self.feed.health

    def live(self) -> bool:
        return self.feed.health.state is FeedState.LIVE

    def check_quotes(self) -> None:
        assert self.sink.items
        for r in self.sink.items:
            self.publisher.check(r.quote, venue_ts=self.venue_ts)


def okx_server(**kw: Any) -> RecordingOkx:
    return RecordingOkx(symbols=[BTC_SWAP, ETH_SWAP], clock=CLOCK, **kw)


def binance_server(market: str = "usdm", **kw: Any) -> RecordingBinance:
    return RecordingBinance(symbols=BN_SYMBOLS, market=market, clock=CLOCK, **kw)


def make_feed(server: Server, sink: Sink, **kw: Any) -> WsFeed:
    kw.setdefault("timing", TIMING)
    if isinstance(server, OkxSimServer):
        kw.setdefault("instruments", OKX_INSTRUMENTS)
        return OkxFeed(ws_url=server.ws_url, rest_url=server.rest_url, sink=sink, clock=CLOCK, **kw)
    return BinanceFeed(
        market=server.market, symbols=BN_SYMBOLS, sink=sink, clock=CLOCK, ws_url=server.ws_url,
        rest_url=server.rest_url, **kw,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(server: Server, *, wait_live: bool = True, **feed_kw: Any) -> AsyncIterator[Rig]:
    """Start the server, a publisher and the feed; on exit, stop the feed and check it stopped cleanly."""
    async with server:
        okx = isinstance(server, OkxSimServer)
        symbols = [BTC_SWAP, ETH_SWAP] if okx else BN_SYMBOLS
        publisher = Publisher(server, "okx" if okx else "binance", symbols)
        publisher.start()
        sink = Sink()
        feed = make_feed(server, sink, **feed_kw)
        task = asyncio.create_task(feed.run(), name=f"{feed.name}-run")
        venue_ts = isinstance(server, OkxSimServer) or server.market == "usdm"
        rig = Rig(server, feed, sink, publisher, symbols, task, venue_ts)
        try:
            if wait_live:
                await wait_until(rig.live, what="feed live")
            yield rig
        except BaseException:
            await _stop(rig, check=False)
            raise
        await _stop(rig, check=True)


async def _stop(rig: Rig, *, check: bool) -> None:
    await rig.publisher.stop()
    rig.task.cancel()
    done, _ = await asyncio.wait({rig.task}, timeout=T)
    if not check:
        return
    assert rig.task in done, "the feed task did not stop within the bound"
    assert rig.task.cancelled(), "run() must end by cancellation, never by an error"
    feed = rig.feed
    assert feed.health.state is FeedState.STOPPED
    assert feed._rest_task is None and feed._http is None
    await wait_until(lambda: rig.server.active_connections == 0, what="server back to 0 connections")


def all_servers() -> list[Any]:
    return [
        pytest.param(okx_server, id="okx"),
        pytest.param(binance_server, id="binance-usdm"),
    ]


# ------------------------------------------------------------------------------ 1. normal flow


async def test_okx_normal_flow_tickers_and_bbo_on_one_connection() -> None:
    t0 = CLOCK.monotonic_ns()
    async with running(okx_server()) as rig:
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 5), what="quotes of both channels")
        feed = rig.feed
        assert isinstance(feed, OkxFeed)
        assert rig.health.state is FeedState.LIVE
        assert rig.server.connections_accepted == 1 and rig.server.active_connections == 1
        assert rig.server.subscriptions == 2  # tickers:BTC and bbo-tbt:ETH, one connection
        rig.check_quotes()
        assert {q.symbol for q in rig.sink.quotes} == {BTC_SWAP, ETH_SWAP}
        assert all(r.source == "ws" for r in rig.sink.items)
        # Routing: BTC frames went to the tickers normalizer, ETH frames to bbo-tbt.
        assert feed.tickers.quotes == rig.sink.count(BTC_SWAP) and feed.bbo.quotes == rig.sink.count(ETH_SWAP)
        # recv_ns is the local monotonic receive stamp, in order.
        stamps = [q.recv_ns for q in rig.sink.quotes]
        assert stamps == sorted(stamps)
        assert t0 < stamps[0] and stamps[-1] <= CLOCK.monotonic_ns()
        health = rig.health
        assert health.quotes == len(rig.sink.items)
        assert health.frames >= health.quotes + 2  # plus the two subscribe acks
        assert health.last_frame_ns >= stamps[-1]
        assert health.reconnects == 0 and health.rest_polls == 0 and health.last_error == ""
        assert not feed.dropped()
        assert feed.tickers.controls["subscribe"] + feed.bbo.controls["subscribe"] == 2
        assert rig.server.rest_requests == 0


@pytest.mark.parametrize("market", ["usdm", "spot"])
async def test_binance_normal_flow(market: str) -> None:
    t0 = CLOCK.monotonic_ns()
    async with running(binance_server(market)) as rig:
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 5), what="quotes of both symbols")
        feed = rig.feed
        assert isinstance(feed, BinanceFeed)
        assert rig.health.state is FeedState.LIVE
        assert rig.server.connections_accepted == 1 and rig.server.active_connections == 1
        assert rig.server.subscriptions == 2  # both streams named in the combined-stream URL
        rig.check_quotes()  # spot carries no venue timestamp: venue_ts_ms == 0
        assert {q.symbol for q in rig.sink.quotes} == set(BN_SYMBOLS)
        stamps = [q.recv_ns for q in rig.sink.quotes]
        assert stamps == sorted(stamps) and t0 < stamps[0] <= stamps[-1] <= CLOCK.monotonic_ns()
        health = rig.health
        assert health.quotes == len(rig.sink.items) and health.frames == health.quotes
        assert health.reconnects == 0 and health.rest_polls == 0 and health.last_error == ""
        assert not feed.dropped()
        assert rig.server.rest_requests == 0


# ------------------------------------------------------------------------------ 2. drop


@pytest.mark.parametrize("make_server", all_servers())
async def test_drop_mid_stream_reconnects_and_resubscribes(make_server: Callable[[], Server]) -> None:
    async with running(make_server()) as rig:
        server = rig.server
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 3))
        n_subs = server.subscriptions
        server.faults.drop_after_frames = 0  # the next data frame ends the TCP connection, unsent
        await wait_until(lambda: rig.health.reconnects >= 1, what="drop noticed")
        server.faults.drop_after_frames = None
        noticed_ns = CLOCK.monotonic_ns()
        await wait_until(
            lambda: rig.live() and rig.sink.has_each(rig.symbols, 2, source="ws", after_ns=noticed_ns),
            what="ws quotes after the reconnect",
        )
        assert server.connections_accepted >= 2 and server.active_connections == 1
        assert server.subscriptions == n_subs  # the new connection is subscribed again
        assert rig.health.reconnects == server.connections_accepted - 1
        assert "ConnectionClosed" in rig.health.last_error
        # Break-before-make here: the first connection was gone before the next one opened.
        first_close = next(e for e in server.events if e.kind == "close")
        second_open = [e for e in server.events if e.kind == "open"][1]
        assert first_close.at <= second_open.at and second_open.active == 1
        # The WebSocket gap (last quote before the drop to the first after) stays within the
        # backoff bound plus a margin; REST may have filled it meanwhile.
        assert rig.sink.max_gap_s("ws") < TIMING.backoff_cap_s + MARGIN_S
        assert rig.feed.backoff.attempt == 0  # reset by the successful connect
        rig.check_quotes()


# ------------------------------------------------------------------------------ 3. silence


async def test_okx_quiet_market_is_kept_alive_by_text_ping_pong() -> None:
    async with running(okx_server()) as rig:
        feed = rig.feed
        assert isinstance(feed, OkxFeed)
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        rig.publisher.paused = True  # nothing to push: only the keepalive talks
        await wait_until(lambda: feed.tickers.controls["pong"] >= 2, within=2 * TIMING.silence_s + MARGIN_S,
                         what="two pongs")  # fmt: skip
        assert isinstance(rig.server, RecordingOkx) and rig.server.pings >= 2  # text `ping` frames
        assert rig.server.connections_accepted == 1
        assert rig.health.reconnects == 0 and rig.live()
        rig.publisher.paused = False
        before = CLOCK.monotonic_ns()
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 1, after_ns=before))
        assert rig.server.connections_accepted == 1


async def test_okx_silence_ping_unanswered_reconnects_then_resumes() -> None:
    async with running(okx_server()) as rig:
        server = rig.server
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        silent_at = time.monotonic()
        server.faults.silent = True  # no data, no pong, no ack
        await wait_until(
            lambda: rig.health.reconnects >= 1,
            within=TIMING.silence_s + TIMING.pong_timeout_s + MARGIN_S,
            what="reconnect after the unanswered ping",
        )
        failed_at = time.monotonic()
        assert failed_at - silent_at >= TIMING.silence_s + TIMING.pong_timeout_s - 0.05
        assert "no answer to ping" in rig.health.last_error
        # Still silent: the dead connection is let go at once and the next attempt comes
        # within the backoff bound (not after a closing handshake the peer never answers).
        await wait_until(lambda: server.connections_accepted >= 2, within=TIMING.backoff_cap_s + MARGIN_S,
                         what="next attempt within the backoff bound")  # fmt: skip
        # Its subscription is not acknowledged either: the attempt times out and is retried.
        await wait_until(lambda: server.connections_accepted >= 3,
                         within=TIMING.connect_timeout_s + TIMING.backoff_cap_s + MARGIN_S,
                         what="retry after the unacknowledged subscription")  # fmt: skip
        assert rig.health.state is not FeedState.LIVE
        server.faults.silent = False
        cleared_ns = CLOCK.monotonic_ns()
        await wait_until(
            lambda: rig.live() and rig.sink.has_each(rig.symbols, 2, source="ws", after_ns=cleared_ns),
            what="ws quotes after the silence",
        )
        assert server.connections_accepted >= 2
        rig.check_quotes()


async def test_binance_silence_reconnects_then_resumes() -> None:
    async with running(binance_server()) as rig:
        server = rig.server
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        server.faults.silent = True
        await wait_until(lambda: rig.health.reconnects >= 1, within=TIMING.silence_s + MARGIN_S,
                         what="reconnect after silence")  # fmt: skip
        assert "FeedSilent" in rig.health.last_error
        # Still silent: the next connection comes within the backoff bound, and is given up
        # again after another silence.
        await wait_until(lambda: server.connections_accepted >= 2, within=TIMING.backoff_cap_s + MARGIN_S,
                         what="next attempt within the backoff bound")  # fmt: skip
        await wait_until(lambda: rig.health.reconnects >= 2, within=TIMING.silence_s + MARGIN_S,
                         what="second silence noticed")  # fmt: skip
        server.faults.silent = False
        cleared_ns = CLOCK.monotonic_ns()
        await wait_until(
            lambda: rig.live() and rig.sink.has_each(rig.symbols, 2, source="ws", after_ns=cleared_ns),
            what="ws quotes after the silence",
        )
        assert server.connections_accepted >= 2
        rig.check_quotes()


# ------------------------------------------------------------------------------ 4. bad frames


@pytest.mark.parametrize("make_server", all_servers())
async def test_malformed_crossed_and_error_frames_are_counted_not_emitted(make_server: Callable[[], Server]) -> None:
    async with running(make_server()) as rig:
        server, feed = rig.server, rig.feed
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        server.faults.malformed_every = 3
        server.faults.crossed_every = 4
        await wait_until(lambda: feed.dropped()["malformed"] >= 3 and feed.dropped()["crossed"] >= 3,
                         what="malformed and crossed frames")  # fmt: skip
        assert server.send_error() == 1
        await wait_until(lambda: "error" in rig.health.last_error, what="error event seen")
        code = "60012" if isinstance(server, OkxSimServer) else "-1001"
        assert f"error {code}" in rig.health.last_error
        server.faults.clear()
        before = CLOCK.monotonic_ns()
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2, after_ns=before))
        assert set(feed.dropped()) == {"malformed", "crossed"}
        assert rig.live() and rig.health.reconnects == 0 and not rig.task.done()
        assert server.connections_accepted == 1
        rig.check_quotes()  # every emitted quote is a published, uncrossed book
        # Every frame is exactly one of: a quote, a drop, a control (acks, the error).
        if isinstance(feed, OkxFeed):
            controls = feed.tickers.controls + feed.bbo.controls
        else:
            assert isinstance(feed, BinanceFeed)
            controls = feed.normalizer.controls
        assert controls["error"] == 1
        health = rig.health
        assert health.frames == health.quotes + feed.dropped().total() + controls.total()


# ------------------------------------------------------------------------------ 5. backoff


@pytest.mark.parametrize("make_server", all_servers())
async def test_refused_connections_back_off_up_to_the_cap_then_recover(
    make_server: Callable[[], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    timing = FeedTiming(
        silence_s=0.4, pong_timeout_s=0.25, rest_interval_s=0.05, connect_timeout_s=0.5,
        backoff_initial_s=0.04, backoff_cap_s=0.2,
    )  # fmt: skip
    refuse_s = 0.9
    server = make_server()
    failures: list[tuple[float, int, float]] = []  # (when, attempt before, delay chosen)
    # The feed task has not run yet when the body starts: the refusal precedes its first try.
    async with running(server, wait_live=False, timing=timing) as rig:
        server.refuse_connections_for(refuse_s)
        refused_until = time.monotonic() + refuse_s
        backoff = rig.feed.backoff
        next_delay = backoff.next_delay

        def recording_next_delay() -> float:
            attempt = backoff.attempt
            delay = next_delay()
            failures.append((time.monotonic(), attempt, delay))
            return delay

        monkeypatch.setattr(backoff, "next_delay", recording_next_delay)
        await wait_until(rig.live, within=refuse_s + timing.backoff_cap_s + MARGIN_S, what="live after refusal")
        live_at = time.monotonic()
        assert live_at >= refused_until
        assert live_at - refused_until < timing.backoff_cap_s + MARGIN_S
        assert backoff.attempt == 0  # reset once connected
        assert len(failures) >= 5
        assert server.connections_refused >= len(failures)
        assert rig.health.reconnects == len(failures)
        assert "handshake refused" in rig.health.last_error
        # The chosen delays: exponential ceiling, jitter below it, capped.
        for _, attempt, delay in failures:
            ceiling = min(timing.backoff_cap_s, timing.backoff_initial_s * 2**attempt)
            assert 0.7 * ceiling - 1e-9 <= delay <= ceiling
        assert [a for _, a, _ in failures] == list(range(len(failures)))
        # The observed gaps between failed attempts: each is the delay slept plus one refused
        # handshake; they grow from the first to the cap and never exceed it (plus slack).
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(failures)]
        for gap, (_, _, slept) in zip(gaps, failures, strict=False):
            assert slept - 0.005 <= gap < slept + 0.25
        assert gaps[0] < gaps[-1] and gaps[-1] >= 0.7 * timing.backoff_cap_s - 0.005
        assert max(gaps) < timing.backoff_cap_s + 0.25
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 1, source="ws"))
        rig.check_quotes()


# ------------------------------------------------------------------------------ 6. REST fallback


@pytest.mark.parametrize("make_server", all_servers())
async def test_rest_fallback_while_the_socket_is_down_then_socket_takes_over(
    make_server: Callable[[], Server],
) -> None:
    async with running(make_server()) as rig:
        server, health = rig.server, rig.health
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        assert server.rest_requests == 0
        server.refuse_connections_for(0.8)
        server.faults.drop_after_frames = 0
        await wait_until(lambda: health.reconnects >= 1, what="drop noticed")
        server.faults.drop_after_frames = None
        down_ns = CLOCK.monotonic_ns()
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 3, source="rest", after_ns=down_ns),
                         what="REST quotes while the socket is down")  # fmt: skip
        assert health.rest_polls >= 3 and server.rest_requests >= 3 * len(rig.symbols)
        assert health.state is FeedState.REST
        assert server.active_connections == 0
        await wait_until(rig.live, within=0.8 + TIMING.backoff_cap_s + MARGIN_S, what="socket back")
        assert rig.feed._rest_task is None
        await asyncio.sleep(0.05)  # a request already on the wire may still be counted
        requests = server.rest_requests
        polls = health.rest_polls
        live_ns = CLOCK.monotonic_ns()
        await asyncio.sleep(0.3)  # six REST intervals
        assert server.rest_requests == requests and health.rest_polls == polls
        assert rig.sink.count(source="rest", after_ns=live_ns) == 0
        assert rig.sink.has_each(rig.symbols, 2, source="ws", after_ns=live_ns)
        rig.check_quotes()


SPOT = pytest.param(lambda: binance_server("spot"), id="binance-spot")


@pytest.mark.parametrize("make_server", [*all_servers(), SPOT])
async def test_rest_transport_only_polls_and_never_opens_a_websocket(make_server: Callable[[], Server]) -> None:
    async with running(make_server(), wait_live=False, transport="rest") as rig:
        server, health = rig.server, rig.health
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 3), what="REST quotes")
        assert health.state is FeedState.REST
        assert health.rest_polls >= 3 and server.rest_requests >= 3 * len(rig.symbols)
        assert server.connections_accepted == 0 and server.connections_refused == 0
        assert health.frames == 0 and health.reconnects == 0
        assert health.quotes == len(rig.sink.items)
        rig.check_quotes()


# ------------------------------------------------------------------------------ 7. make-before-break


async def _assert_make_before_break(rig: Rig, announce: Callable[[], int]) -> None:
    server = rig.server
    await wait_until(lambda: rig.sink.has_each(rig.symbols, 3))
    start_ns = CLOCK.monotonic_ns()
    assert announce() == 1
    announced = time.monotonic()
    await wait_until(
        lambda: server.connections_accepted == 2 and server.active_connections == 1 and rig.live(),
        what="moved to a new connection",
    )
    moved_s = time.monotonic() - announced
    assert moved_s < 3.0  # well before the venue's own close (5 s): we closed the old one
    opens = [e for e in server.events if e.kind == "open"]
    closes = [e for e in server.events if e.kind == "close"]
    assert opens[1].active == 2  # the new connection opened while the old one was still up
    assert closes[0].at >= opens[1].at
    assert rig.health.reconnects == 1 and rig.feed.backoff.attempt == 0
    await asyncio.sleep(0.2)
    assert server.subscriptions == len(rig.symbols)
    assert rig.sink.max_gap_s("ws", from_ns=start_ns) < 1.0  # quotes kept flowing (order of events proves it)
    assert rig.sink.count(source="rest") == 0 and rig.health.rest_polls == 0
    rig.check_quotes()


async def test_okx_notice_moves_to_a_new_connection_before_closing_the_old() -> None:
    async with running(okx_server()) as rig:
        server = rig.server
        assert isinstance(server, OkxSimServer)
        await _assert_make_before_break(rig, lambda: server.send_notice(close_after_s=5.0))


async def test_okx_notice_answering_the_keepalive_ping_is_also_make_before_break() -> None:
    async with running(okx_server()) as rig:
        server = rig.server
        assert isinstance(server, RecordingOkx)
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2))
        rig.publisher.paused = True  # a quiet market: the feed will ping
        server.notice_on_next_ping = True  # and the notice is what it receives first
        await wait_until(
            lambda: server.connections_accepted == 2 and server.active_connections == 1 and rig.live(),
            within=TIMING.silence_s + MARGIN_S,
            what="moved to a new connection",
        )
        opens = [e for e in server.events if e.kind == "open"]
        assert opens[1].active == 2  # opened before the old connection was closed
        assert rig.health.reconnects == 1 and rig.health.last_error == ""
        assert rig.health.rest_polls == 0 and rig.feed.backoff.attempt == 0
        rig.publisher.paused = False
        resumed_ns = CLOCK.monotonic_ns()
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 2, after_ns=resumed_ns))
        assert server.subscriptions == 2
        rig.check_quotes()


async def test_binance_server_shutdown_moves_to_a_new_connection_before_closing_the_old() -> None:
    async with running(binance_server()) as rig:
        server = rig.server
        assert isinstance(server, BinanceSimServer)
        await _assert_make_before_break(rig, lambda: server.send_server_shutdown(close_after_s=5.0))


async def test_binance_max_lifetime_reconnects_proactively_make_before_break() -> None:
    async with running(binance_server(), max_lifetime_s=0.4) as rig:
        server = rig.server
        start_ns = CLOCK.monotonic_ns()
        await wait_until(lambda: server.connections_accepted >= 4, what="three proactive moves")
        await wait_until(lambda: server.active_connections == 1 and rig.live())
        opens = [e for e in server.events if e.kind == "open"]
        assert all(e.active == 2 for e in opens[1:])  # every move opened before closing
        assert rig.health.reconnects >= 3 and rig.health.last_error == ""
        assert rig.sink.max_gap_s("ws", from_ns=start_ns) < 1.0
        assert rig.health.rest_polls == 0
        rig.check_quotes()


# ------------------------------------------------------------------------------ 8. OKX refusals


async def test_okx_one_refused_subscription_leaves_the_others_working() -> None:
    instruments = [(BTC_SWAP, TICKERS), ("DOGE-USDT-SWAP", BBO), (ETH_SWAP, BBO)]
    async with running(okx_server(), instruments=instruments) as rig:
        await wait_until(lambda: rig.sink.has_each(rig.symbols, 3))
        error = rig.health.last_error
        assert error.startswith("subscription refused: ")
        assert "bbo-tbt:DOGE-USDT-SWAP" in error and "60018" in error
        assert BTC_SWAP not in error and ETH_SWAP not in error
        assert rig.server.subscriptions == 2 and rig.server.connections_accepted == 1
        assert rig.live() and rig.health.reconnects == 0
        rig.check_quotes()


async def test_okx_all_subscriptions_refused_backs_off_and_retries() -> None:
    instruments = [("DOGE-USDT-SWAP", TICKERS), ("XRP-USDT-SWAP", BBO)]
    timing = FeedTiming(
        silence_s=0.4, pong_timeout_s=0.25, rest_interval_s=10.0, connect_timeout_s=0.5,
        backoff_initial_s=0.05, backoff_cap_s=0.2,
    )  # fmt: skip
    async with running(okx_server(), wait_live=False, instruments=instruments, timing=timing) as rig:
        server, health = rig.server, rig.health
        await wait_until(lambda: server.connections_accepted >= 4, what="retries")
        assert health.state is FeedState.REST
        assert health.reconnects >= 3 and rig.feed.backoff.attempt >= 3
        assert server.connections_refused == 0  # the handshakes succeed; the subscriptions fail
        await wait_until(lambda: health.last_error.startswith("FeedProtocolError: subscription refused"))
        assert "DOGE-USDT-SWAP" in health.last_error
        assert not rig.sink.items
        # Each connection was closed by the feed after the refusal.
        await wait_until(lambda: server.active_connections <= 1)


# ------------------------------------------------------------------------------ 9. Binance pings


async def test_binance_server_pings_are_answered_and_the_connection_stays() -> None:
    async with running(binance_server(ping_interval_s=0.1, pong_timeout_s=0.15)) as rig:
        server = rig.server
        assert isinstance(server, RecordingBinance)
        await wait_until(lambda: server.pings >= 6, what="six server pings")
        assert server.keepalive_timeouts == 0
        assert server.connections_accepted == 1 and server.active_connections == 1
        assert rig.health.reconnects == 0 and rig.live()
        assert rig.sink.has_each(rig.symbols, 5)
        rig.check_quotes()
