"""The Binance private order stream, kept alive and caught up after every gap.

Where the events come from:

- spot: the WebSocket API, `userDataStream.subscribe.signature` (HMAC-signed; the listenKey
  endpoints of spot were retired on 2026-02-20); events arrive as
  `{"subscriptionId": n, "event": {...executionReport...}}`;
- USD-M: a listenKey (`POST /fapi/v1/listenKey`, kept alive by `PUT` every `keepalive_s`)
  and its stream on the `/private` route (`<base>/private/ws/<listenKey>`), raw
  `ORDER_TRADE_UPDATE` events.

Each order event becomes an `OrderUpdate` for `on_update`, carrying only fills never
delivered before (deduplicated by venue trade id, across the stream and the catch-up alike;
an event repeating a state with no new fill is not delivered again). After every
(re)connection, once the subscription is live, a REST catch-up reads the trades of every
watched symbol since the last event (less `lookback_ms`) and the state of every tracked open
order, and delivers what the stream missed while it was down: nothing is lost, nothing is
delivered twice. A lost connection is retried with a growing delay (`reconnect_delay_s`).
A frame that cannot be parsed is counted in `dropped`, never raised.

Memory (the stream lives for weeks; issue 19): a fill id is remembered until no catch-up can
read its trade again (older than the next catch-up's `since` by `SEEN_MARGIN_MS`, the trade's
own time against the venue's event times: the same clock), at most `seen_limit`; a final
order's state `FINAL_AGE_MS` on our clock (a REST read racing the stream is seconds old), at
most `final_limit`. A count alone took tens of hours of the demo to fill. Whatever is
forgotten is in the ledger, and an order the engine still follows is deduplicated by its
tracker as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from core.bounded import forget_oldest
from core.clock import Clock
from core.models import OrderState
from core.ports import OrderUpdate
from exchanges.binance.auth import Credentials
from exchanges.binance.gateway import BinanceGateway, to_fill, trade_id
from exchanges.binance.parsers import (
    AccountEvent,
    Balance,
    OrderEvent,
    OrderReport,
    ParseError,
    PositionReport,
    StreamEnded,
    TradeReport,
    UserEvent,
    parse_listen_key,
    parse_user_event,
)
from exchanges.binance.wsapi import WsApi
from exchanges.venue import VenueError

log = logging.getLogger(__name__)

UpdateHandler = Callable[[OrderUpdate], None]
_TERMINAL = (OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED)
SEEN_MARGIN_MS = 10 * 60_000  # beyond the catch-up's lookback: the venue's trade and event clocks
# An event stamped further ahead of the venue's clock (as our offset to it says) than this does
# not move `last_event_ms` past it: one misdated event would otherwise skip the next catch-up
# past fills it must read, and age every fill id out of `_seen`.
EVENT_AHEAD_MS = 60_000
FINAL_AGE_MS = 10 * 60_000


class UserDataStream:
    """Order updates of one Binance market for `on_update`, with reconnect and catch-up."""

    def __init__(
        self,
        gateway: BinanceGateway,
        credentials: Credentials,
        clock: Clock,
        *,
        on_update: UpdateHandler,
        symbols: Iterable[str] = (),
        reconnect_delay_s: tuple[float, float] = (0.2, 10.0),
        keepalive_s: float = 1800.0,
        lookback_ms: int = 5000,
        seen_limit: int = 200_000,
        final_limit: int = 10_000,
        seen_margin_ms: int = SEEN_MARGIN_MS,
        final_age_ms: int = FINAL_AGE_MS,
        timeout_s: float = 5.0,
    ) -> None:
        self.gateway = gateway
        self.market = gateway.market
        self._credentials = credentials
        self._clock = clock
        self.on_update = on_update
        self.symbols: set[str] = set(symbols)
        self.reconnect_delay_s = reconnect_delay_s
        self.keepalive_s = keepalive_s
        self.lookback_ms = lookback_ms
        self.timeout_s = timeout_s
        # Fill ids delivered (trade id -> the trade's time), oldest first: at most `seen_limit`,
        # and none that no catch-up can read again (module docstring, "Memory").
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._seen_limit = seen_limit
        self._seen_margin_ms = seen_margin_ms
        self._tracked: dict[str, str] = {}  # open orders to ask about after a gap: cid -> symbol
        # The last state of each order: open ones all, final ones the latest `final_limit`
        # (enough to keep an older REST read from reopening a final order; its fills are
        # deduplicated by trade id in `_seen` either way).
        self._open_state: dict[str, OrderState] = {}
        # cid -> (final state, when it became final on our clock), oldest first.
        self._final_state: OrderedDict[str, tuple[OrderState, int]] = OrderedDict()
        self._final_limit = final_limit
        self._final_age_ms = final_age_ms
        self.last_event_ms = 0
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws_api: WsApi | None = None
        self._ws: ClientConnection | None = None
        self._listen_key: str | None = None
        self._lost = asyncio.Event()
        self.balances: dict[str, Balance] = {}
        self.positions: dict[str, PositionReport] = {}
        self._started_ms = 0
        # counters
        self.connections = 0
        self.events = 0
        self.dropped = 0
        self.duplicate_fills = 0
        self.caught_up_fills = 0
        self.delivered_fills = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._started_ms = self.gateway.rest.venue_ms()
            self._task = asyncio.create_task(self._run(), name=f"binance-{self.market}-user-stream")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    def track(self, client_order_id: str, symbol: str) -> None:
        """Ask about this order after a gap until the stream says it is final."""
        self._tracked[client_order_id] = symbol
        self.symbols.add(symbol)

    async def wait_connected(self, timeout_s: float) -> None:
        """Until subscribed and caught up; TimeoutError (with a message) otherwise."""
        try:
            await asyncio.wait_for(self.connected.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"binance {self.market} user data stream not connected within {timeout_s} s") from None

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        delay, longest = self.reconnect_delay_s
        while True:
            self._lost.clear()
            try:
                await self._connect()
                self.connections += 1
                await self._catch_up()
                self.connected.set()
                delay = self.reconnect_delay_s[0]
                await self._until_lost()
            except (VenueError, OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError,
                    ParseError) as exc:
                log.warning("binance %s user data stream: %s", self.market, exc)
            except Exception:  # the stream must outlive any one failure
                log.exception("binance %s user data stream failed; reconnecting", self.market)
            finally:
                self.connected.clear()
                await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(longest, delay * 2)

    async def _connect(self) -> None:
        if self.market == "spot":
            ws_api = WsApi(self.gateway.endpoints.ws_api_url, self._credentials, self._clock,
                           offset=self.gateway.rest.offset, gate=self.gateway.rest.gate, timeout_s=self.timeout_s,
                           on_event=self._on_event, on_close=self._lost.set)
            self._ws_api = ws_api
            await ws_api.connect()
            await ws_api.request("userDataStream.subscribe.signature", {}, signed=True)
            return
        route = self.gateway.endpoints.api.listen_key_new
        assert route is not None
        self._listen_key = parse_listen_key(await self.gateway.rest.call(route))
        url = self.gateway.endpoints.user_stream(self._listen_key)
        self._ws = await asyncio.wait_for(connect(url, max_size=1 << 22, ping_interval=None), self.timeout_s)

    async def _until_lost(self) -> None:
        if self._ws_api is not None:
            await self._lost.wait()
            return
        ws = self._ws
        assert ws is not None
        keepalive = asyncio.create_task(self._keepalive())
        try:
            async for message in ws:
                self._on_frame(message)
                if self._lost.is_set():
                    return
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _keepalive(self) -> None:
        route = self.gateway.endpoints.api.listen_key_keepalive
        assert route is not None
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.gateway.rest.call(route, [("listenKey", self._listen_key or "")])
            except VenueError as exc:
                log.warning("binance usdm listenKey keepalive failed (%s); reconnecting", exc.code)
                self._lost.set()
                if self._ws is not None:
                    await self._ws.close()
                return

    async def _disconnect(self) -> None:
        ws_api, self._ws_api = self._ws_api, None
        if ws_api is not None:
            ws_api.on_close = None
            await ws_api.close()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    # ------------------------------------------------------------------ events

    def _on_frame(self, message: str | bytes) -> None:
        try:
            event = parse_user_event(message)
        except ParseError as exc:
            self.dropped += 1
            log.warning("binance %s user data: unreadable frame dropped (%s)", self.market, exc)
            return
        self._on_event(event)

    def _on_event(self, event: UserEvent) -> None:
        self.events += 1
        if isinstance(event, OrderEvent):
            ahead = self.gateway.rest.venue_ms() + EVENT_AHEAD_MS
            self.last_event_ms = max(self.last_event_ms, min(event.event_ms, ahead))
            self._deliver(event.report, event.report.trades)
        elif isinstance(event, AccountEvent):
            self.balances.update(event.balances)
            self.positions.update(event.positions)
        elif isinstance(event, StreamEnded):
            log.warning("binance %s user data stream ended by the venue (%s); resubscribing", self.market,
                        event.reason)
            self._lost.set()
            if self._ws is not None:
                asyncio.get_running_loop().create_task(self._ws.close())

    def _deliver(self, report: OrderReport, trades: Iterable[TradeReport], *, caught_up: bool = False) -> None:
        cid = report.client_order_id
        fills = []
        for trade in trades:
            key = trade_id(self.market, trade)
            if key in self._seen:
                self.duplicate_fills += 1
                continue
            self._remember(key, trade.ts_ms)
            fills.append(to_fill(self.market, cid, trade))
        state = report.state
        final = self._final_state.get(cid)
        last = final[0] if final is not None else self._open_state.get(cid)
        if last in _TERMINAL and state not in _TERMINAL:
            state = last  # an older REST read racing a newer event: the order stays final
        if not fills and last is state:
            return
        if state in _TERMINAL:
            self._tracked.pop(cid, None)
            self._open_state.pop(cid, None)
            self._final_state[cid] = (state, self._clock.time_ms())
            self._final_state.move_to_end(cid)
            forget_oldest(self._final_state, self._final_limit, self._clock.time_ms() - self._final_age_ms,
                          lambda v: v[1])
        else:
            self._open_state[cid] = state
            self._tracked.setdefault(cid, report.symbol)
        self.symbols.add(report.symbol)
        self.delivered_fills += len(fills)
        if caught_up:
            self.caught_up_fills += len(fills)
        update = OrderUpdate(cid, state, report.venue_order_id, fills)
        try:
            self.on_update(update)
        except Exception:
            log.exception("binance %s user data: update handler failed", self.market)

    def remembered(self) -> tuple[int, int]:
        """(order states, fill ids) held."""
        return len(self._open_state) + len(self._final_state), len(self._seen)

    def _remember(self, key: str, trade_ms: int) -> None:
        self._seen[key] = trade_ms
        # The next catch-up reads trades from `since` on (`_catch_up`): an id older than that,
        # less a margin for the venue's clocks, cannot come back from it.
        forget_oldest(self._seen, self._seen_limit, self._seen_horizon(), int)

    def _seen_horizon(self) -> int:
        """Trades before this are forgotten, and not read again by a catch-up (its `since`
        less `seen_margin_ms`)."""
        return (self.last_event_ms or self._started_ms) - self.lookback_ms - self._seen_margin_ms


    # ------------------------------------------------------------------ catch-up

    async def _catch_up(self) -> None:
        """What happened while the stream was down, from REST (the subscription is already live)."""
        since = (self.last_event_ms or self._started_ms) - self.lookback_ms
        touched: set[str] = set()
        for symbol in sorted(self.symbols):
            trades = await self.gateway.recent_trades(symbol, since_ms=since)
            missed: dict[str, list[TradeReport]] = {}
            for trade in trades:
                if trade_id(self.market, trade) not in self._seen:
                    missed.setdefault(trade.order_id, []).append(trade)
            for order_id, order_trades in missed.items():
                report = await self.gateway.order_report(symbol, venue_order_id=order_id)
                touched.add(report.client_order_id)
                self._deliver(report, order_trades, caught_up=True)
        for cid, symbol in list(self._tracked.items()):
            if cid in touched:
                continue
            try:
                report = await self.gateway.order_report(symbol, client_order_id=cid)
            except VenueError as exc:
                log.warning("binance %s catch-up: %s not readable (%s)", self.market, cid, exc.code)
                continue
            held = await self.gateway.trades_of(report) if report.executed_qty > Decimal(0) else ()
            # All of the order's trades, however old: those before the horizon were delivered
            # when they happened (the stream was up then, or an earlier catch-up read them) and
            # their ids may be forgotten since.
            horizon = self._seen_horizon()
            self._deliver(report, [t for t in held if t.ts_ms >= horizon], caught_up=True)


__all__ = ["EVENT_AHEAD_MS", "FINAL_AGE_MS", "SEEN_MARGIN_MS", "UpdateHandler", "UserDataStream"]
