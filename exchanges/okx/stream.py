"""The OKX private WebSocket: login, the `orders` channel, and order entry over the socket.

`OkxPrivateStream` keeps one connection to `/ws/v5/private` up: it logs in (signature over
`ts + "GET" + "/users/self/verify"`), subscribes to `orders`, and turns every push into an
`OrderUpdate` whose fills are new (deduplicated by OKX `tradeId` in a `FillBook` that the REST
queries share, so the stream and REST agree and nothing is counted twice). When the connection
drops it reconnects with backoff, logs in and subscribes again, then runs the gateway's REST
catch-up so that fills made while it was down are not lost.

`order_op` sends `order` / `cancel-order` over the same socket (the latency that matters) and
returns the venue's answer; a lost connection or no answer raises, and the caller reports the
order `unknown` (it asks by client order id, it never sends again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.clock import Clock
from core.models import Fill
from core.orders import is_terminal
from core.ports import OrderUpdate
from exchanges.okx.auth import OkxCredentials, ws_login_args
from exchanges.okx.endpoints import dumps
from exchanges.okx.errors import okx_error
from exchanges.okx.parsers import (
    OkxParseError,
    OrderDetail,
    WsMessage,
    order_update,
    parse_orders,
    parse_ws,
    push_fill,
)
from exchanges.venue import ClockOffset, ErrorKind, VenueError
from exchanges.ws_frame import send_text_now

log = logging.getLogger(__name__)


class FillBook:
    """Fills known per client order id, by venue trade id: the one place duplicates die."""

    def __init__(self) -> None:
        self._by_cid: dict[str, dict[str, Fill]] = {}

    def add(self, cid: str, fills: Iterable[Fill]) -> list[Fill]:
        """Record fills; return only those not seen before."""
        known = self._by_cid.setdefault(cid, {})
        new = []
        for fill in fills:
            if fill.venue_trade_id not in known:
                known[fill.venue_trade_id] = fill
                new.append(fill)
        return new

    def fills(self, cid: str) -> list[Fill]:
        return list(self._by_cid.get(cid, {}).values())

    def count(self) -> int:
        return sum(len(v) for v in self._by_cid.values())

    def forget(self, cid: str) -> None:
        self._by_cid.pop(cid, None)

    def __len__(self) -> int:
        return len(self._by_cid)


class OrderStates:
    """The latest state heard of each order and its fills, from pushes and REST alike.

    `ingest` records one order state with the fills that came with it and calls `on_update`
    with only the fills never seen before, so a fill reported by both the stream and a REST
    query (or twice by the stream, as OKX may resend) is counted once.

    Memory is bounded by `prune`: an order final for longer than the gateway's
    `order_memory_s` is forgotten (its state and fills; they are in the ledger). An order
    not final is never forgotten: it may still fill, and the catch-up asks about it. A
    message about a forgotten order (OKX resending an old push) is recorded as new: its
    fills reach `on_update` again, and the ledger, which deduplicates fills by venue trade
    id, counts them once."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.fills = FillBook()
        self.on_update: Callable[[OrderUpdate], None] | None = None
        self._latest: dict[str, OrderUpdate] = {}
        self._final_at: dict[str, float] = {}  # cid -> when it was first heard final, oldest first
        self._monotonic = monotonic
        self._changed = asyncio.Condition()

    def ingest(self, detail: OrderDetail, fills: Iterable[Fill] = ()) -> OrderUpdate:
        """Record one order state; the update it makes (its fills: the new ones only)."""
        given = list(fills)
        fill = push_fill(detail)
        if fill is not None:
            given.append(fill)
        cid = detail.clOrdId
        update = order_update(detail, given)  # checks every field before anything is recorded
        new = self.fills.add(cid, update.fills)
        update.fills = new
        prev = self._latest.get(cid)
        stale = prev is not None and is_terminal(prev.state) and not is_terminal(update.state)
        if stale:
            # An older message after the final one (OKX may resend): its fills count, its state not.
            update.state = prev.state if prev is not None else update.state
        else:
            self._latest[cid] = OrderUpdate(cid, update.state, update.venue_order_id, [], update.reason)
            if is_terminal(update.state) and cid not in self._final_at:
                self._final_at[cid] = self._monotonic()
        if new or prev is None or (prev.state is not update.state and not stale):
            callback = self.on_update
            if callback is not None:
                callback(update)
        self._notify()
        return update

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(wake())

    def latest(self, cid: str) -> OrderUpdate | None:
        return self._latest.get(cid)

    def prune(self, final_before: float) -> list[str]:
        """Forget the orders heard final before `final_before` (monotonic seconds); their ids."""
        gone: list[str] = []
        for cid, at in self._final_at.items():  # oldest first: stop at the first one kept
            if at >= final_before:
                break
            gone.append(cid)
        for cid in gone:
            del self._final_at[cid]
            self._latest.pop(cid, None)
            self.fills.forget(cid)
        return gone

    def forget(self, cid: str) -> None:
        """Forget one order (final: the gateway's memory rule)."""
        self._latest.pop(cid, None)
        self._final_at.pop(cid, None)
        self.fills.forget(cid)

    def __len__(self) -> int:
        """Orders remembered (their latest state)."""
        return len(self._latest)

    def open_ids(self) -> list[str]:
        """Client order ids whose last known state is not final."""
        return [cid for cid, u in self._latest.items() if not is_terminal(u.state)]

    async def wait_terminal(self, cid: str, timeout_s: float) -> OrderUpdate | None:
        """The order's final state as heard, or None within `timeout_s`."""

        def final() -> bool:
            seen = self._latest.get(cid)
            return seen is not None and is_terminal(seen.state)

        with contextlib.suppress(TimeoutError):
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(final), timeout_s)
        seen = self._latest.get(cid)
        return seen if seen is not None and is_terminal(seen.state) else None


@dataclass(slots=True)
class StreamTiming:
    """Keepalive and reconnection: OKX drops a connection silent for 30 s."""

    ping_after_s: float = 20.0
    pong_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    login_timeout_s: float = 10.0
    backoff_initial_s: float = 0.2
    backoff_cap_s: float = 10.0


@dataclass(slots=True)
class StreamStats:
    connects: int = 0
    logins: int = 0
    pushes: int = 0
    bad_frames: int = 0
    catch_ups: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class OkxPrivateStream:
    """One private connection, kept up; orders pushes in, order operations out."""

    def __init__(
        self,
        creds: OkxCredentials,
        url: str,
        clock: Clock,
        offset: ClockOffset,
        states: OrderStates,
        *,
        inst_types: Iterable[str] = ("ANY",),
        timing: StreamTiming | None = None,
    ) -> None:
        self._creds = creds
        self.url = url
        self._clock = clock
        self._offset = offset
        self.states = states
        self.inst_types = tuple(inst_types)
        self.timing = timing or StreamTiming()
        self.stats = StreamStats()
        self.ready = asyncio.Event()  # logged in and subscribed
        self.catch_up: Callable[[], Awaitable[None]] | None = None
        self.resync_clock: Callable[[], Awaitable[None]] | None = None
        self._pending: dict[str, asyncio.Future[WsMessage]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._login: asyncio.Future[WsMessage] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._stopping = False
        self.fatal: VenueError | None = None  # a login the venue refused: no retry helps

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="okx-private-stream")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.ready.clear()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until logged in and subscribed; TimeoutError (with the reason) if not."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"okx private stream not ready: {self.stats.last_error or 'no answer'}") from None

    async def _run(self) -> None:
        delay = self.timing.backoff_initial_s
        first = True
        while not self._stopping:
            try:
                await self._session(first)
                delay = self.timing.backoff_initial_s
            except asyncio.CancelledError:
                raise
            except VenueError as exc:
                self._note(f"login refused: {exc}")
                if exc.kind is ErrorKind.AUTH:
                    self.fatal = exc
                    return  # a wrong key stays wrong: do not hammer the venue
                if exc.kind is ErrorKind.CLOCK_SKEW and self.resync_clock is not None:
                    with contextlib.suppress(Exception):
                        await self.resync_clock()
            except Exception as exc:  # refused handshake, reset, timeout, bad frame: reconnect
                if self._stopping:
                    return
                self._note(f"{type(exc).__name__}: {exc}")
            finally:
                self.ready.clear()
                self._ws = None
                self._fail_pending(ConnectionError("okx private stream disconnected"))
            first = False
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.backoff_cap_s)

    def _note(self, text: str) -> None:
        self.stats.last_error = text
        self.stats.errors.append(text)
        del self.stats.errors[:-20]
        log.warning("okx private stream: %s", text)

    async def _session(self, first: bool) -> None:
        async with asyncio.timeout(self.timing.connect_timeout_s):
            # No permessage-deflate: orders go over this socket; compressing each costs ~20 us.
            ws = await connect(self.url, ping_interval=None, max_size=1 << 20, compression=None)
        self.stats.connects += 1
        self._ws = ws
        reader = asyncio.create_task(self._read(ws), name="okx-private-read")
        try:
            await self._handshake(ws)
            self.ready.set()
            if not first and self.catch_up is not None:
                self.stats.catch_ups += 1
                await self.catch_up()
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await ws.close()

    async def _handshake(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        self._login = loop.create_future()
        seconds = self._offset.venue_ms(self._clock.time_ms()) // 1000
        await ws.send(dumps({"op": "login", "args": [ws_login_args(self._creds, seconds)]}))
        answer = await asyncio.wait_for(self._login, self.timing.login_timeout_s)
        if answer.code != "0":
            raise okx_error(answer.code, answer.msg, order_entry=False)
        self.stats.logins += 1
        self._subscribed = loop.create_future()
        args = [{"channel": "orders", "instType": t} for t in self.inst_types]
        await ws.send(dumps({"id": "sub1", "op": "subscribe", "args": args}))
        await asyncio.wait_for(self._subscribed, self.timing.login_timeout_s)

    async def _read(self, ws: ClientConnection) -> None:
        timing = self.timing
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), timing.ping_after_s)
            except TimeoutError:
                await ws.send("ping")
                frame = await asyncio.wait_for(ws.recv(), timing.pong_timeout_s)
            self.on_frame(frame)

    # -------------------------------------------------------------- frames

    def on_frame(self, frame: str | bytes) -> None:
        """Handle one frame; a bad one is counted and skipped, never raised."""
        if frame in ("pong", b"pong"):
            return
        try:
            msg = parse_ws(frame)
        except OkxParseError as exc:
            self.stats.bad_frames += 1
            self._note(str(exc))
            return
        if msg.event:
            self._on_event(msg)
        elif msg.op:
            future = self._pending.pop(msg.id, None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif msg.arg is not None and msg.arg.channel == "orders":
            try:
                details = parse_orders(msg.data)
                for detail in details:
                    self.states.ingest(detail)
            except OkxParseError as exc:
                self.stats.bad_frames += 1
                self._note(str(exc))
            else:
                self.stats.pushes += 1
        else:
            self.stats.bad_frames += 1

    def _on_event(self, msg: WsMessage) -> None:
        login = self._login
        if msg.event == "login" and login is not None and not login.done():
            login.set_result(msg)
        elif msg.event == "error":
            if login is not None and not login.done():
                login.set_result(msg)  # a refused login answers with an error event
                return
            sub = self._subscribed
            if msg.id == "sub1" and sub is not None and not sub.done():
                sub.set_exception(okx_error(msg.code, msg.msg, order_entry=False))
                return
            self._note(f"error event {msg.code} {msg.msg}")
        elif msg.event == "subscribe":
            sub = self._subscribed
            if sub is not None and not sub.done():
                sub.set_result(None)
        elif msg.event == "notice":
            self._note(f"notice {msg.code}: reconnecting")
            ws = self._ws
            if ws is not None:
                asyncio.get_running_loop().create_task(ws.close())

    # -------------------------------------------------------------- order entry

    async def order_op(self, op: str, args: dict[str, str], timeout_s: float) -> WsMessage:
        """Send `order` or `cancel-order`; the answer, or ConnectionError / TimeoutError."""
        ws = self._ws
        if ws is None or not self.ready.is_set():
            raise ConnectionError("okx private stream is not connected")
        req_id = f"o{next(self._ids)}"
        future: asyncio.Future[WsMessage] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            try:
                frame = msgspec.json.encode({"id": req_id, "op": op, "args": [args]})
                if not send_text_now(ws, frame):
                    await ws.send(frame, text=True)
            except ConnectionClosed as exc:
                raise ConnectionError(f"okx private stream closed while sending: {exc}") from None
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(req_id, None)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)
        for fut in (self._login, self._subscribed):
            if fut is not None and not fut.done():
                fut.cancel()

    @property
    def connected(self) -> bool:
        return self.ready.is_set()


__all__ = ["FillBook", "OkxPrivateStream", "OrderStates", "StreamStats", "StreamTiming"]
