"""The WebSocket feed lifecycle shared by the OKX and Binance feeds.

One task per feed. It connects, subscribes, reads frames and hands each to the venue's
normalizer, which calls the quote sink synchronously (no queue per quote). Around that:

- silence detection: no frame for `silence_s` -> the venue's keepalive (OKX: text `ping`,
  expect anything back within `pong_timeout_s`) or, without one, a reconnect;
- reconnects with exponential backoff, jitter and a cap; resubscription on every connect;
- make-before-break when the venue announces a shutdown (OKX `notice`, Binance
  `serverShutdown`) or the connection reaches its maximum lifetime: the new connection is
  opened and subscribed while the old one is still read, then the old one is closed;
- REST fallback: while the socket is down, or always with `transport = "rest"`, quotes are
  polled over HTTP; the socket takes over again as soon as it is subscribed.

Every receive is stamped with the clock's monotonic time; that stamp is the quote's age for
the pipeline's stale guard.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from core.clock import Clock
from core.models import Quote
from feeds.health import Backoff, FeedHealth, FeedState
from feeds.normalizers import ControlFrame, FrameNormalizer
from feeds.rest_parsers import VenueError

# Called synchronously for every quote; its return value is ignored.
QuoteSink = Callable[[Quote], object]
# Called with (feed name, raw frame, recv_ns) for every frame received, before it is
# normalized: the recorder's hook. None costs one comparison per frame.
FrameTap = Callable[[str, str | bytes, int], None]


class FeedObserver(Protocol):
    """Told when a feed fails and why, and when it is live again: the engine logs both (the
    health row alone shows only the latest error, and only on a screen)."""

    def feed_failed(self, feed: str, venue: str, error: str) -> None: ...

    def feed_live(self, feed: str, venue: str) -> None: ...


class Control(Enum):
    """What a frame asks of the lifecycle besides its quotes."""

    NONE = 0
    RECONNECT = 1  # make-before-break: the venue will close this connection soon


@dataclass(slots=True, frozen=True)
class FeedTiming:
    """Timing of a feed's lifecycle; the defaults suit the real venues.

    OKX drops a connection that has been idle for 30 s, so `silence_s` stays below that.
    """

    silence_s: float = 20.0
    pong_timeout_s: float = 10.0
    rest_interval_s: float = 1.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_cap_s: float = 30.0

    def backoff(self) -> Backoff:
        return Backoff(initial_s=self.backoff_initial_s, cap_s=self.backoff_cap_s)


class FeedSilent(Exception):
    """No frame (and no keepalive answer) within the silence bound."""


class FeedProtocolError(Exception):
    """The venue refused what we asked (e.g. every subscription failed)."""


_RECOVERABLE = (OSError, TimeoutError, WebSocketException, FeedSilent, FeedProtocolError, EOFError)


class WsFeed(ABC):
    """A market-data feed over one WebSocket with REST fallback."""

    venue: str = ""
    ping_text: str | None = None  # a text keepalive (OKX); None: silence means reconnect

    def __init__(
        self,
        *,
        name: str,
        rest_url: str,
        sink: QuoteSink,
        clock: Clock,
        transport: str = "ws",
        timing: FeedTiming | None = None,
        max_lifetime_s: float | None = None,
    ) -> None:
        if transport not in ("ws", "rest"):
            raise ValueError(f"transport must be 'ws' or 'rest', not {transport!r}")
        self.name = name
        self.rest_url = rest_url
        self.sink = sink
        self.clock = clock
        self.transport = transport
        timing = timing or FeedTiming()
        self.silence_s = timing.silence_s
        self.pong_timeout_s = timing.pong_timeout_s
        self.rest_interval_s = timing.rest_interval_s
        self.connect_timeout_s = timing.connect_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.backoff = timing.backoff()
        self.health = FeedHealth(name=name, venue=self.venue, transport=transport)
        self._rest_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.tap: FrameTap | None = None
        # The control frame (ack, error, notice) of the latest frame that carried no quote.
        self.last_control: ControlFrame | None = None
        self.observer: FeedObserver | None = None

    # -- venue hooks -------------------------------------------------------------------
    @abstractmethod
    def stream_url(self) -> str:
        """The URL to connect to (with any stream names in it)."""

    @abstractmethod
    async def subscribe(self, ws: ClientConnection) -> None:
        """Send the subscriptions and wait for their acknowledgements (frames may arrive)."""

    @abstractmethod
    def on_frame(self, frame: str | bytes, recv_ns: int) -> Control:
        """Normalize one frame: quotes go to the sink; returns what the lifecycle must do."""

    @abstractmethod
    async def poll_rest(self, client: httpx.AsyncClient) -> None:
        """Fetch every instrument's ticker once over REST and hand the quotes to the sink."""

    @abstractmethod
    def dropped(self) -> Counter[str]:
        """Frames that produced no quote, per reason."""

    def seq_resets(self) -> int:
        """Sequence resets seen (venues with sequence numbers override this)."""
        return 0

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled; never raises for a venue failure, only counts and retries."""
        # Built up front: creating the client builds an SSL context (~20-30 ms of blocked
        # loop), which must not happen in the middle of an outage.
        self._http = httpx.AsyncClient(base_url=self.rest_url, timeout=self.connect_timeout_s)
        try:
            if self.transport == "rest":
                self.health.state = FeedState.REST
                await self._rest_loop()
                return
            await self._ws_loop()
        finally:
            await self._stop_rest()
            if self._http is not None:
                await self._http.aclose()
                self._http = None
            self.health.state = FeedState.STOPPED

    async def _ws_loop(self) -> None:
        ws: ClientConnection | None = None
        while True:
            try:
                ws = await self._open()
                while True:
                    await self._read(ws)
                    # The venue asked us to move: open the next connection first.
                    ws = await self._replace(ws)
            except asyncio.CancelledError:
                raise
            except _RECOVERABLE as exc:
                self.health.reconnects += 1
                self._failed(_describe(exc))
                self._start_rest_fallback()
                # Quotes keep flowing over REST while we wait: that is what the operator sees.
                self.health.state = FeedState.REST
                if ws is not None:
                    # Let go of the failed connection now, not after the backoff. A silent
                    # peer will not answer a closing handshake either: abort it rather than
                    # wait close_timeout for nothing.
                    failed, ws = ws, None
                    if isinstance(exc, FeedSilent):
                        _abort(failed)
                    else:
                        await _close(failed)
                delay = self.backoff.next_delay()
                await asyncio.sleep(delay)
            finally:
                if ws is not None:
                    await _close(ws)
                    ws = None

    async def _open(self) -> ClientConnection:
        self.health.state = FeedState.CONNECTING if self._rest_task is None else FeedState.REST
        ws = await connect(
            self.stream_url(),
            open_timeout=self.connect_timeout_s,
            ping_interval=None,  # venues ping us (Binance) or want a text ping (OKX)
            close_timeout=2.0,
            max_size=2**22,
        )
        try:
            await asyncio.wait_for(self.subscribe(ws), timeout=self.connect_timeout_s)
        except TimeoutError:
            _abort(ws)  # no acknowledgement: the peer would not answer a closing handshake either
            raise
        except BaseException:
            await _close(ws)
            raise
        await self._stop_rest()  # the socket is back: it takes over from REST
        self.backoff.reset()
        self.health.state = FeedState.LIVE
        if self.observer is not None:
            self.observer.feed_live(self.name, self.venue)
        return ws

    async def _replace(self, old: ClientConnection) -> ClientConnection:
        """Make-before-break: keep reading `old` until the new connection is subscribed."""
        drain = asyncio.create_task(self._drain(old), name=f"{self.name}-drain")
        try:
            new = await self._open()
        finally:
            drain.cancel()
            try:
                await drain
            except asyncio.CancelledError:
                # The drain's own cancellation is expected; ours (the feed being stopped while
                # it waited here) must go on, or stop() would wait for this task forever.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    await _close(old)
                    raise
            except _RECOVERABLE:
                pass
            await _close(old)
        self.health.reconnects += 1
        return new

    def deliver(self, quotes: list[Quote], normalizer: FrameNormalizer) -> Control:
        """Hand a frame's quotes to the sink, or act on its control frame (shared by venues)."""
        if quotes:
            sink = self.sink
            for quote in quotes:
                sink(quote)
            self.health.quotes += len(quotes)
            return Control.NONE
        control = self.last_control = normalizer.last_control
        if control is not None:
            if control.wants_reconnect:
                return Control.RECONNECT
            if control.is_error:
                self._failed(f"{self.venue} error {control.code}: {control.msg}"[:500])
        return Control.NONE

    def receive(self, frame: str | bytes) -> Control:
        """Stamp, count, record and normalize one received frame."""
        recv_ns = self.clock.monotonic_ns()
        health = self.health
        health.frames += 1
        health.last_frame_ns = recv_ns
        if self.tap is not None:
            self.tap(self.name, frame, recv_ns)
        return self.on_frame(frame, recv_ns)

    async def _drain(self, ws: ClientConnection) -> None:
        async for frame in ws:
            self.receive(frame)

    async def _read(self, ws: ClientConnection) -> None:
        """Read frames until the venue asks for a reconnect; raises on failure or silence."""
        loop = asyncio.get_running_loop()
        receive = self.receive
        opened = loop.time()
        lifetime = self.max_lifetime_s
        while True:
            try:
                async with asyncio.timeout(self.silence_s) as deadline:
                    async for frame in ws:
                        if receive(frame) is Control.RECONNECT:
                            return
                        now = loop.time()
                        if lifetime is not None and now - opened >= lifetime:
                            return
                        deadline.reschedule(now + self.silence_s)
                    raise EOFError("connection closed by the venue")
            except TimeoutError:
                # The answer may be the venue's notice: move as for any other frame.
                if await self._keepalive(ws) is Control.RECONNECT:
                    return

    async def _keepalive(self, ws: ClientConnection) -> Control:
        if self.ping_text is None:
            raise FeedSilent(f"no frame for {self.silence_s:g}s")
        await ws.send(self.ping_text)
        try:
            async with asyncio.timeout(self.pong_timeout_s):
                frame = await ws.recv()
        except TimeoutError:
            raise FeedSilent(f"no answer to ping within {self.pong_timeout_s:g}s") from None
        return self.receive(frame)

    # -- REST fallback -------------------------------------------------------------------
    def _start_rest_fallback(self) -> None:
        if self._rest_task is None or self._rest_task.done():
            self._rest_task = asyncio.create_task(self._rest_loop(), name=f"{self.name}-rest")

    async def _stop_rest(self) -> None:
        task, self._rest_task = self._rest_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _rest_loop(self) -> None:
        client = self._http
        if client is None:
            raise RuntimeError("the REST client exists only while run() is running")
        while True:
            try:
                await self.poll_rest(client)
                self.health.rest_polls += 1
                if self.transport == "rest" and self.observer is not None:
                    self.observer.feed_live(self.name, self.venue)  # REST is this feed's only way
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ValueError, VenueError) as exc:
                self._failed(_describe(exc))
            await asyncio.sleep(self.rest_interval_s)

    def _failed(self, error: str) -> None:
        """Record why the feed failed (the health row) and tell the observer (the log)."""
        self.health.last_error = error
        if self.observer is not None:
            self.observer.feed_failed(self.name, self.venue, error)


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


def _abort(ws: ClientConnection) -> None:
    """Drop an unresponsive connection at once (no closing handshake)."""
    ws.transport.abort()


def _describe(exc: BaseException) -> str:
    """A short error text for health and logs; never includes request headers or bodies."""
    if isinstance(exc, InvalidURI):
        return "invalid URL"
    if isinstance(exc, InvalidHandshake):
        return f"handshake refused: {type(exc).__name__}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if not text and isinstance(exc, TimeoutError):
        text = "timed out"
    return f"{type(exc).__name__}: {text}"[:500]
