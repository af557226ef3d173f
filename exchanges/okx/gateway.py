"""The OKX execution gateway: `core.ports.ExecutionGateway` over OKX v5 REST and private WebSocket.

Orders are marketable IOC limits with our client order id (`clOrdId`, 1-32 alphanumerics). Before
one leaves it is checked against the venue's own instrument definition (tickSz, lotSz, minSz,
maxLmtSz, ctVal from `public/instruments`): the price is rounded to the tick, never worse than
asked; a quantity off the lot grid, below the minimum or above the maximum is refused locally,
naming the filter, and nothing is sent. `verify_config` compares the config's typed-in sizes
with the venue's at start: a mismatch is an error, not a trade at the wrong size.

Sending: over the private WebSocket (`order` op) when the stream is logged in, else REST
`POST /api/v5/trade/order`. Each client order id is sent at most once by this gateway: a second
`place` of the same id asks the venue instead. What the venue says is classed by `errors.py`:

- accepted: the outcome comes from the stream's push (or a REST query) within `outcome_wait_s`;
- refused (sCode 51xxx, a local filter): `rejected`, final;
- timeout, lost connection, 5xx, 51149, a duplicate id (51016): `unknown`; the caller asks by
  client order id (`query`), and an id the venue does not know yet stays `unknown` for
  `not_found_grace_s` before it is reported as never arrived (`rejected`, "order not found");
- 50011 / HTTP 429: the request was not processed; the gateway waits the rate-limit window
  before any further request (the venue bans those who do not) and sends again, same id;
- 50102 (timestamp expired): the server time offset is resynced and the request signed again;
- key, signature, passphrase, permission, a blocked account: `rejected` with the reason, and
  `halted` is set (with `on_halt` called) so that the engine stops trading here.

Fills come from the stream's pushes and from REST (`trade/fills` by ordId), deduplicated by
trade id in one `OrderStates`, so the stream and REST always agree. After a reconnect the
stream runs `catch_up`: recent fills and every order not yet final are asked for over REST.

Memory: what the gateway remembers of an order (its id, instrument and send time; its latest
state and fills) is forgotten `order_memory_s` (10 minutes) after it was sent, once it is final
(filled, cancelled, rejected, expired: as this gateway answered it, or as the stream or a query
heard it); checked as orders are placed. An order not final (`unknown` included) is kept for as
long as it takes: it may still fill, and it is asked about after a reconnect. The engine never
places an OKX order id twice (it asks instead), and a forgotten order is still on the venue and
in the ledger: a query by its id reads it back from the venue with all its fills, and a late
fill of it reaches the engine through reconciliation (`engine/reconcile.py`), which reads the
venue's fills, not this memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from core.clock import Clock
from core.instruments import Instrument
from core.models import Fill, Order, OrderState, Venue
from core.orders import is_terminal
from core.ports import OrderUpdate
from exchanges.okx import endpoints as ep
from exchanges.okx.auth import OkxCredentials, iso_timestamp, rest_headers
from exchanges.okx.errors import ORDER_NOT_FOUND, VENUE, okx_error
from exchanges.okx.parsers import (
    AccountBalance,
    FillRow,
    OkxParseError,
    OrderAck,
    OrderDetail,
    Position,
    account_balance,
    decimal,
    fill_from_row,
    instrument_spec,
    parse_acks,
    parse_balances,
    parse_envelope,
    parse_fills,
    parse_instruments,
    parse_orders,
    parse_positions,
    parse_server_time,
    position,
)
from exchanges.okx.stream import OkxPrivateStream, OrderStates, StreamTiming
from exchanges.venue import ClockOffset, ErrorKind, FilterRefusal, InstrumentSpec, VenueError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OkxGatewayConfig:
    """Where and how to talk to OKX. `demo` adds `x-simulated-trading: 1` (OKX demo trading)."""

    rest_url: str = ep.REST_URL
    ws_private_url: str = ep.WS_PRIVATE_URL
    demo: bool = False
    td_mode: str = "cross"  # swaps and futures; spot orders always go as "cash"
    request_timeout_s: float = 5.0
    ws_orders: bool = True  # order entry over the private WebSocket when it is up
    stream: bool = True
    outcome_wait_s: float = 1.0  # how long an accepted order's push is awaited before a REST query
    not_found_grace_s: float = 5.0
    rate_limit_wait_s: float = 2.0  # OKX windows are 2 s; a 429 carries no Retry-After
    rate_limit_retries: int = 3
    read_retries: int = 2
    tag: str = ""
    order_memory_s: float = 600.0  # a final order is forgotten this long after it was sent

    def __post_init__(self) -> None:
        if self.demo and self.ws_private_url == ep.WS_PRIVATE_URL:
            # Demo trading keys log in only on the demo host (REST takes the header instead).
            object.__setattr__(self, "ws_private_url", ep.WS_PRIVATE_DEMO_URL)
        if self.td_mode not in ("cross", "isolated"):
            raise ValueError("okx td_mode must be 'cross' or 'isolated'")
        if (self.request_timeout_s <= 0 or self.outcome_wait_s < 0 or self.not_found_grace_s < 0
                or self.order_memory_s < 0):
            raise ValueError("okx timeouts must be positive")
        if len(self.tag) > 16 or (not self.tag.isalnum() and self.tag):
            raise ValueError("okx tag: at most 16 letters or digits")


class ConfigMismatch(ValueError):
    """The config's instrument sizes differ from the venue's: refuse to start."""


class OkxRest:
    """Signed REST calls with the venue's clock offset, rate-limit pacing and error classes."""

    def __init__(self, creds: OkxCredentials, clock: Clock, config: OkxGatewayConfig,
                 client: httpx.AsyncClient | None = None) -> None:
        self._creds = creds
        self._clock = clock
        self.config = config
        self.offset = ClockOffset()
        self._client = client or httpx.AsyncClient(base_url=config.rest_url, timeout=config.request_timeout_s)
        self._owns_client = client is None
        self._blocked_until = 0.0  # monotonic: no request before this (rate limit honoured)
        self.requests = 0
        self.rate_limited = 0
        self.resyncs = 0

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def sync_time(self) -> None:
        sent = self._clock.time_ms()
        data = await self._send("GET", ep.TIME, {}, None, signed=False, order_entry=False)
        self.offset.update(parse_server_time(data), sent, self._clock.time_ms())

    async def call(self, method: str, path: str, params: Mapping[str, str] | None = None, body: Any = None, *,
                   order_entry: bool = False, signed: bool = True) -> Any:
        """The `data` of a successful answer; VenueError (classed) otherwise. Handles rate
        limits (wait, send again), clock skew (resync, sign again) and, for reads, transient
        failures (try again)."""
        rate_tries = skew_tries = read_tries = 0
        while True:
            try:
                return await self._send(method, path, params or {}, body, signed=signed, order_entry=order_entry)
            except VenueError as exc:
                if exc.kind is ErrorKind.RATE_LIMITED and rate_tries < self.config.rate_limit_retries:
                    rate_tries += 1
                    continue  # _send waits until the window has passed
                if exc.kind is ErrorKind.CLOCK_SKEW and skew_tries < 1:
                    skew_tries += 1
                    self.resyncs += 1
                    await self.sync_time()
                    continue
                if exc.kind is ErrorKind.RETRYABLE and not order_entry and read_tries < self.config.read_retries:
                    read_tries += 1
                    await asyncio.sleep(0.05 * read_tries)
                    continue
                raise

    async def _send(self, method: str, path: str, params: Mapping[str, str], body: Any, *, signed: bool,
                    order_entry: bool) -> Any:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        target = ep.with_query(path, dict(params))
        text = ep.dumps(body) if body is not None else ""
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if signed:
            stamp = iso_timestamp(self.offset.venue_ms(self._clock.time_ms()))
            headers = rest_headers(self._creds, stamp, method, target, text, demo=self.config.demo)
        elif self.config.demo:
            headers["x-simulated-trading"] = "1"
        self.requests += 1
        try:
            response = await self._client.request(method, target, content=text.encode() if text else None,
                                                   headers=headers)
        except httpx.TimeoutException as exc:
            kind = ErrorKind.UNKNOWN if order_entry else ErrorKind.RETRYABLE
            raise VenueError(VENUE, kind, "timeout", f"no answer within {self.config.request_timeout_s} s "
                             f"({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            kind = ErrorKind.UNKNOWN if order_entry else ErrorKind.RETRYABLE
            raise VenueError(VENUE, kind, "transport", f"{type(exc).__name__}") from None
        status = response.status_code
        retry_after = _retry_after(response.headers.get("Retry-After"))
        try:
            env = parse_envelope(response.content, path)
        except OkxParseError as exc:
            if status == 429:
                env = None
            else:
                kind = ErrorKind.UNKNOWN if order_entry else ErrorKind.RETRYABLE
                raise VenueError(VENUE, kind, f"http{status}", str(exc), http_status=status) from None
        if status == 429 or (env is not None and env.code_text in ("50011", "50061")):
            self.rate_limited += 1
            wait_s = retry_after if retry_after is not None else self.config.rate_limit_wait_s
            self._blocked_until = max(self._blocked_until, time.monotonic() + wait_s)
            code = env.code_text if env is not None else "429"
            raise okx_error(code, env.msg if env is not None else "Too Many Requests", order_entry=order_entry,
                            http_status=status, retry_after_s=wait_s)
        assert env is not None
        if status >= 500:
            raise okx_error(env.code_text, env.msg or f"HTTP {status}", order_entry=order_entry, http_status=status)
        if env.ok or (order_entry and env.code_text in ("1", "2") and isinstance(env.data, list) and env.data):
            return env.data  # per-item sCode decides for order entry
        raise okx_error(env.code_text, env.msg, order_entry=order_entry, http_status=status)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


@dataclass(slots=True)
class _Sent:
    """One order this gateway sent: where, when (monotonic s), and whether it is known final."""

    inst_id: str
    at: float
    final: bool = False


class OkxGateway:
    """ExecutionGateway for OKX (swaps, futures and spot), REST with WebSocket order entry."""

    def __init__(
        self,
        creds: OkxCredentials,
        clock: Clock,
        config: OkxGatewayConfig | None = None,
        *,
        specs: Mapping[str, InstrumentSpec] | None = None,
        client: httpx.AsyncClient | None = None,
        stream_timing: StreamTiming | None = None,
        on_halt: Callable[[VenueError], None] | None = None,
    ) -> None:
        self.config = config or OkxGatewayConfig()
        self._clock = clock
        self.rest = OkxRest(creds, clock, self.config, client)
        self.specs: dict[str, InstrumentSpec] = dict(specs or {})
        self.states = OrderStates()
        self.stream = OkxPrivateStream(creds, self.config.ws_private_url, clock, self.rest.offset, self.states,
                                       timing=stream_timing)
        self.stream.catch_up = self.catch_up
        self.stream.resync_clock = self.rest.sync_time
        self._sent: dict[str, _Sent] = {}  # cid -> what was sent, oldest first
        self._inflight: dict[str, asyncio.Event] = {}
        self.on_halt = on_halt
        self.halted: VenueError | None = None
        self.sent_over_ws = 0
        self.sent_over_rest = 0

    @property
    def venue(self) -> Venue:
        return "okx"

    # -------------------------------------------------------------- lifecycle

    async def start(self, symbols: Iterable[str] = ()) -> None:
        """Sync the clock, load the venue's specs of `symbols`, start the private stream."""
        await self.rest.sync_time()
        wanted = list(symbols)
        if wanted:
            await self.load_specs(wanted)
        if self.config.stream:
            await self.stream.start()

    async def stop(self) -> None:
        await self.stream.stop()
        await self.rest.aclose()

    async def load_specs(self, symbols: Iterable[str]) -> dict[str, InstrumentSpec]:
        """The venue's definitions of `symbols`; KeyError names any the venue does not list."""
        wanted = set(symbols)
        by_type: dict[str, list[str]] = {}
        for sym in wanted:
            by_type.setdefault(ep.inst_type_of(sym), []).append(sym)
        for inst_type in sorted(by_type):
            data = await self.rest.call("GET", ep.INSTRUMENTS, {"instType": inst_type}, signed=False)
            for row in parse_instruments(data):
                if row.instId in wanted:
                    self.specs[row.instId] = instrument_spec(row)
        missing = sorted(wanted - set(self.specs))
        if missing:
            raise KeyError(f"okx does not list {', '.join(missing)}")
        return {s: self.specs[s] for s in wanted}

    def verify_config(self, instruments: Iterable[Instrument]) -> None:
        """ConfigMismatch listing every difference between the config and the venue."""
        problems: list[str] = []
        for inst in instruments:
            if inst.venue != "okx":
                continue
            spec = self.specs.get(inst.symbol)
            if spec is None:
                problems.append(f"okx {inst.symbol}: the venue's definition was not loaded")
                continue
            problems.extend(spec.mismatches(inst))
        if problems:
            raise ConfigMismatch("; ".join(problems))

    # -------------------------------------------------------------- orders

    async def place(self, order: Order) -> OrderUpdate:
        return self._answered(await self._place(order))

    async def _place(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        pending = self._inflight.get(cid)
        if pending is not None:
            await pending.wait()
        if cid in self._sent:
            return await self._query(order)  # sent once already: ask, never send again
        refusal = self._refuse(order)
        if refusal is not None:
            return refusal
        spec = self.specs[order.symbol]
        qty, price = spec.round_order(order.side, order.qty, order.price)
        td_mode: ep.TdMode = "cash" if ep.inst_type_of(order.symbol) == "SPOT" else self.config.td_mode  # type: ignore[assignment]
        args = ep.order_args(order.symbol, cid, order.side, qty, price, td_mode, tag=self.config.tag)
        self.forget_old_orders()
        self._sent[cid] = _Sent(order.symbol, time.monotonic())
        landed = self._inflight[cid] = asyncio.Event()
        try:
            ack = await self._send_order(args)
        except VenueError as exc:
            return self._entry_failure(order, exc)
        except OkxParseError as exc:  # an answer we cannot read: it may have happened
            return OrderUpdate(cid, OrderState.UNKNOWN, reason=f"unreadable answer: {exc}")
        finally:
            del self._inflight[cid]
            landed.set()
        if ack.sCode != "0":
            return self._entry_failure(order, okx_error(ack.sCode, ack.sMsg, order_entry=True))
        return await self._outcome(order, ack.ordId)

    def _refuse(self, order: Order) -> OrderUpdate | None:
        """A local refusal (nothing sent) naming the filter, or None."""
        cid = order.client_order_id
        if self.halted is not None:
            return OrderUpdate(cid, OrderState.REJECTED, reason=f"okx halted: {self.halted.code} {self.halted.message}")
        try:
            ep.check_cl_ord_id(cid)
        except ValueError as exc:
            return OrderUpdate(cid, OrderState.REJECTED, reason=str(exc))
        spec = self.specs.get(order.symbol)
        if spec is None:
            return OrderUpdate(cid, OrderState.REJECTED, reason=f"okx {order.symbol}: no venue definition loaded")
        try:
            qty, _ = spec.round_order(order.side, order.qty, order.price)
        except FilterRefusal as exc:
            return OrderUpdate(cid, OrderState.REJECTED, reason=f"refused locally: {exc}")
        if qty != order.qty:
            detail = f"{order.qty} is not a multiple of {spec.lot_size}"
            return OrderUpdate(cid, OrderState.REJECTED, reason=f"refused locally: {order.symbol}: lot_size: {detail}")
        return None

    async def _send_order(self, args: dict[str, str]) -> OrderAck:
        """One order to the venue, over the WebSocket when it is up, else REST."""
        timeout = self.config.request_timeout_s
        if self.config.ws_orders and self.stream.connected:
            self.sent_over_ws += 1
            try:
                answer = await self.stream.order_op("order", args, timeout)
            except TimeoutError:
                raise VenueError(VENUE, ErrorKind.UNKNOWN, "timeout", f"no answer within {timeout} s") from None
            except ConnectionError as exc:
                raise VenueError(VENUE, ErrorKind.UNKNOWN, "disconnected", str(exc)) from None
            if answer.code not in ("0", "1", "2"):
                raise okx_error(answer.code, answer.msg, order_entry=True)
            acks = parse_acks(answer.data)
        else:
            self.sent_over_rest += 1
            acks = parse_acks(await self.rest.call("POST", ep.PLACE_ORDER, body=args, order_entry=True))
        if len(acks) != 1:
            raise VenueError(VENUE, ErrorKind.UNKNOWN, "ack", f"expected one ack, got {len(acks)}")
        return acks[0]

    def _entry_failure(self, order: Order, exc: VenueError) -> OrderUpdate:
        cid = order.client_order_id
        reason = f"{exc.code} {exc.message}".strip()
        if exc.kind is ErrorKind.UNKNOWN:
            return OrderUpdate(cid, OrderState.UNKNOWN, reason=reason)
        if exc.kind in (ErrorKind.AUTH, ErrorKind.HALT):
            self._halt(exc)
        return OrderUpdate(cid, OrderState.REJECTED, reason=f"{exc.kind}: {reason}")

    def _halt(self, exc: VenueError) -> None:
        if self.halted is None:
            self.halted = exc
            log.error("okx: trading stopped on this venue: %s", exc)
            if self.on_halt is not None:
                self.on_halt(exc)

    async def _outcome(self, order: Order, ord_id: str) -> OrderUpdate:
        """An accepted order's result: the stream's push if it comes in time, else a query."""
        cid = order.client_order_id
        if self.stream.connected and self.config.outcome_wait_s > 0:
            heard = await self.states.wait_terminal(cid, self.config.outcome_wait_s)
            if heard is not None:
                return OrderUpdate(cid, heard.state, heard.venue_order_id or ord_id, self.states.fills.fills(cid),
                                   heard.reason)
        try:
            return await self._query(order)
        except VenueError as exc:
            return OrderUpdate(cid, OrderState.UNKNOWN, ord_id, self.states.fills.fills(cid),
                               f"accepted, outcome not known: {exc.code}")

    async def cancel(self, order: Order) -> OrderUpdate:
        return self._answered(await self._cancel(order))

    async def _cancel(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        try:
            args = ep.cancel_args(order.symbol, cid)
        except ValueError as exc:
            return OrderUpdate(cid, OrderState.REJECTED, reason=str(exc))
        try:
            if self.config.ws_orders and self.stream.connected:
                answer = await self.stream.order_op("cancel-order", args, self.config.request_timeout_s)
                acks = parse_acks(answer.data) if answer.code in ("0", "1", "2") else []
            else:
                acks = parse_acks(await self.rest.call("POST", ep.CANCEL_ORDER, body=args, order_entry=True))
        except (VenueError, TimeoutError, ConnectionError, OkxParseError) as exc:
            log.warning("okx cancel %s: %s; asking the venue", cid, exc)
        else:
            if acks and acks[0].sCode == "0" and self.stream.connected:
                # Accepted is not done: OKX confirms on the channel (or a query).
                await self.states.wait_terminal(cid, self.config.outcome_wait_s)
        return await self._query(order)

    async def query(self, order: Order) -> OrderUpdate:
        """The venue's word on an order, by client order id, with every fill it reports."""
        return self._answered(await self._query(order))

    async def _query(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        try:
            data = await self.rest.call("GET", ep.ORDER, {"instId": order.symbol, "clOrdId": cid})
        except VenueError as exc:
            if exc.code == ORDER_NOT_FOUND:
                return self._not_found(order)
            if exc.kind in (ErrorKind.AUTH, ErrorKind.HALT):
                self._halt(exc)
            raise
        details = parse_orders(data)
        if len(details) != 1:
            raise VenueError(VENUE, ErrorKind.UNKNOWN, "shape", f"order query returned {len(details)} orders")
        detail = details[0]
        fills = await self._fills_of(detail) if decimal(detail.accFillSz, "accFillSz", allow_empty=True) else []
        self.states.ingest(detail, fills)
        all_fills = self.states.fills.fills(cid)
        latest = self.states.latest(cid)
        state = latest.state if latest is not None else OrderState.UNKNOWN
        reason = latest.reason if latest is not None else ""
        got = sum((f.qty for f in all_fills), Decimal(0))
        if got < decimal(detail.accFillSz, "accFillSz", allow_empty=True):
            state, reason = OrderState.UNKNOWN, f"fills incomplete ({got} of {detail.accFillSz})"
        return OrderUpdate(cid, state, detail.ordId, all_fills, reason)

    def _not_found(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        sent = self._sent.get(cid)
        if sent is not None and time.monotonic() - sent.at < self.config.not_found_grace_s:
            return OrderUpdate(cid, OrderState.UNKNOWN, reason="not found yet")
        return OrderUpdate(cid, OrderState.REJECTED, reason="order not found")

    async def _fills_of(self, detail: OrderDetail) -> list[Fill]:
        params = {"instType": ep.inst_type_of(detail.instId), "instId": detail.instId, "ordId": detail.ordId}
        return [fill_from_row(r) for r in parse_fills(await self.rest.call("GET", ep.FILLS, params))]

    # -------------------------------------------------------------- memory

    def _answered(self, update: OrderUpdate) -> OrderUpdate:
        """What the caller is told; a final answer lets the order be forgotten in time."""
        sent = self._sent.get(update.client_order_id)
        if sent is not None and is_terminal(update.state):
            sent.final = True
        return update

    def forget_old_orders(self) -> int:
        """Forget the orders sent more than `order_memory_s` ago that are final (see the module
        docstring); those not final are kept, moved behind the others. How many were forgotten."""
        cutoff = time.monotonic() - self.config.order_memory_s
        for cid in self.states.prune(cutoff):
            sent = self._sent.get(cid)
            if sent is not None:
                sent.final = True  # the states forget only final orders
        forgotten = 0
        for _ in range(len(self._sent)):
            cid, sent = next(iter(self._sent.items()))
            if sent.at > cutoff:
                break  # oldest first: the rest are younger
            del self._sent[cid]
            latest = self.states.latest(cid)
            heard_open = latest is not None and not is_terminal(latest.state)
            if (sent.final or latest is not None) and not heard_open and cid not in self._inflight:
                self.states.forget(cid)
                forgotten += 1
            else:
                self._sent[cid] = sent  # not final: it may still fill; kept, behind the young ones
        return forgotten

    def remembered(self) -> tuple[int, int]:
        """(orders sent and remembered, orders whose state is remembered): what memory holds."""
        return len(self._sent), len(self.states)

    # -------------------------------------------------------------- reads for risk and recovery

    async def open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        params = {"instId": symbol} if symbol else {}
        details = parse_orders(await self.rest.call("GET", ep.ORDERS_PENDING, params))
        return [self.states.ingest(d) for d in details]

    async def recent_fills(self, inst_type: str = "SWAP", symbol: str | None = None) -> list[Fill]:
        """The venue's latest fills (at most 100), newest first; recorded, so none is counted twice."""
        params = {"instType": inst_type, **({"instId": symbol} if symbol else {})}
        fills = [fill_from_row(r) for r in parse_fills(await self.rest.call("GET", ep.FILLS, params))]
        return fills

    async def fills_since(self, inst_type: str, since_ms: int, *, max_pages: int = 20) -> tuple[list[Fill], bool]:
        """Every fill of `inst_type` since `since_ms`, newest first, paged back by bill id (100 a
        page, at most `max_pages`); (fills, complete): complete is False when the pages ran out
        before reaching `since_ms` (the caller must not assume it saw everything)."""
        out: list[Fill] = []
        after = ""
        for _ in range(max_pages):
            params = {"instType": inst_type, "limit": "100", **({"after": after} if after else {})}
            rows = parse_fills(await self.rest.call("GET", ep.FILLS, params))
            fills = [fill_from_row(r) for r in rows]
            out += [f for f in fills if f.ts_ms >= since_ms]
            if len(rows) < 100 or not rows or any(f.ts_ms < since_ms for f in fills) or not rows[-1].billId:
                return out, True
            after = rows[-1].billId
        return out, False

    async def balance(self) -> AccountBalance:
        balances = parse_balances(await self.rest.call("GET", ep.BALANCE))
        if len(balances) != 1:
            raise OkxParseError(f"okx balance: expected one account, got {len(balances)}")
        return account_balance(balances[0])

    async def positions(self) -> list[Position]:
        return [position(r) for r in parse_positions(await self.rest.call("GET", ep.POSITIONS))]

    async def trade_fee(self, inst_type: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) rates charged, positive (OKX reports them negative)."""
        data = await self.rest.call("GET", ep.TRADE_FEE, {"instType": inst_type})
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise OkxParseError("okx trade-fee: expected one row")
        row = data[0]
        maker_key, taker_key = ("makerU", "takerU") if row.get("makerU") else ("maker", "taker")
        return (-decimal(row.get(maker_key), "maker", signed=True), -decimal(row.get(taker_key), "taker", signed=True))

    async def catch_up(self) -> None:
        """After the stream was down: the fills made meanwhile and every order not yet final."""
        symbols = {sent.inst_id for sent in self._sent.values()} | set(self.specs)
        types = sorted({ep.inst_type_of(sym) for sym in symbols})
        rows_by_order: dict[str, list[FillRow]] = {}
        for inst_type in types:
            for row in parse_fills(await self.rest.call("GET", ep.FILLS, {"instType": inst_type})):
                rows_by_order.setdefault(row.ordId, []).append(row)
        targets: dict[str, str] = {}  # client order id -> instId
        for cid in self.states.open_ids():
            sent = self._sent.get(cid)
            if sent is not None:
                targets[cid] = sent.inst_id
        for rows in rows_by_order.values():
            cid = rows[0].clOrdId
            known = {f.venue_trade_id for f in self.states.fills.fills(cid)}
            if cid and any(r.tradeId not in known for r in rows):
                targets[cid] = rows[0].instId
        for cid, inst_id in sorted(targets.items()):
            try:
                data = await self.rest.call("GET", ep.ORDER, {"instId": inst_id, "clOrdId": cid})
                for detail in parse_orders(data):
                    found = rows_by_order.get(detail.ordId)
                    fills = [fill_from_row(r) for r in found] if found else await self._fills_of(detail)
                    self.states.ingest(detail, fills)
            except (VenueError, OkxParseError) as exc:
                log.warning("okx catch-up of %s: %s", cid, exc)


__all__ = ["ConfigMismatch", "OkxGateway", "OkxGatewayConfig", "OkxRest"]
