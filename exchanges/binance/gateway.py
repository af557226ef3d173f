"""The Binance `ExecutionGateway` (spot or USD-M): place, cancel and query by client order id,
plus what the risk gate reads (balances, positions, fee rates) and the venue's specs.

Placing an order:

1. Refused locally, never sent, with the reason: a client order id outside Binance's legal
   range; a symbol the venue does not list or whose specs were not loaded (`start()`); a
   quantity off the venue's LOT_SIZE grid or outside its filters (`InstrumentSpec`, naming
   the filter). The price is rounded to the tick, never worse than the limit.
   A flatten order (`Order.reduce_only`) on USD-M is sent `reduceOnly=true`: it can only take
   the position toward flat (the venue refuses one that would open or flip it, -2022), and the
   venue exempts it from the minimum notional (-4164 "unless you choose reduce only"), so a
   position's last lots below that minimum (a partial fill's remainder) are closed rather than
   left as dust. A group's close by hand is not: trading goes on meanwhile, another group's
   entry may move the account's position first, and the close must still trade.
2. Sent once as a LIMIT IOC with our client order id, over the WebSocket API when a
   session is open (`ws_api`, opened by `start()` and reopened in the background after
   `ws_retry_s` when it is found closed), else over REST. A WebSocket frame that could not be
   written is sent over REST instead (nothing left); one that was written and got no answer
   is `unknown` and is never sent again by any path.
3. The answer: spot FULL carries the fills; USD-M RESULT carries none, so the order's trades
   are read (`userTrades?orderId=`) to get their trade ids and fees; if that read fails the
   order is reported `unknown` and the caller's query completes it.

Failures map onto the order's state, never guessed: `rejected` (the venue refused it, or it
was refused locally, or rate-limited before reaching the engine), `unknown` (timeout,
5xx, lost connection, a duplicate client order id: query it). A `retryable` failure (the
request never reached the engine) is sent again with the same client order id up to
`retries` times, then `rejected`.

Query by client order id: the order and, if it executed, its trades. An order the venue does
not know is `unknown` until its `recvWindow` (plus `not_found_grace_ms`) has passed since it
was sent; after that the venue can no longer accept it (it refuses any request older than
its recvWindow), so it never reached the venue: `rejected`.

Memory: the send time of each order is what the not-found rule above reads, and it says
nothing once its recvWindow plus the grace has passed (the order is then judged by that
deadline, and a query of an order the venue knows never reads it): each is forgotten then,
checked as orders are placed, so the gateway holds a few seconds of orders. An order's state and
fills are not kept here: a query reads them from the venue by client order id, and a late fill
reaches the engine through reconciliation (`engine/reconcile.py`).

Fills carry `venue_trade_id = "<market>:<symbol>:<tradeId>"`: Binance trade ids are unique
per symbol only, and the ledger deduplicates fills by (venue, trade id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TypeVar

from core.clock import Clock
from core.instruments import Instrument
from core.models import Fill, Order, OrderState, Venue
from core.ports import OrderUpdate
from exchanges.binance import errors
from exchanges.binance.auth import Credentials, SigningError
from exchanges.binance.endpoints import BinanceMarket, Endpoints
from exchanges.binance.parsers import (
    Balance,
    ExchangeInfo,
    OrderReport,
    ParseError,
    PositionReport,
    TradeReport,
    parse_commission,
    parse_exchange_info,
    parse_futures_account,
    parse_order,
    parse_orders,
    parse_position_risk,
    parse_spot_account,
    parse_trades,
)
from exchanges.binance.rest import BinanceRest
from exchanges.binance.wsapi import WsApi
from exchanges.venue import ErrorKind, FilterRefusal, InstrumentSpec, VenueError

log = logging.getLogger(__name__)

VENUE: Venue = "binance"
T = TypeVar("T")


def fmt(value: Decimal) -> str:
    """A decimal as Binance accepts it: plain notation, no exponent, no trailing zeros."""
    text = f"{value.normalize():f}"
    return text


def trade_id(market: BinanceMarket, trade: TradeReport) -> str:
    return f"{market}:{trade.symbol}:{trade.trade_id}"


def to_fill(market: BinanceMarket, client_order_id: str, trade: TradeReport) -> Fill:
    return Fill(venue=VENUE, venue_trade_id=trade_id(market, trade), client_order_id=client_order_id,
                qty=trade.qty, price=trade.price, fee=trade.fee, fee_ccy=trade.fee_ccy, ts_ms=trade.ts_ms)


def order_update(market: BinanceMarket, report: OrderReport, trades: Iterable[TradeReport] = (),
                 *, client_order_id: str | None = None, reason: str = "") -> OrderUpdate:
    cid = client_order_id or report.client_order_id
    fills = [to_fill(market, cid, t) for t in (*report.trades, *trades)]
    return OrderUpdate(cid, report.state, report.venue_order_id, fills, reason)


class BinanceGateway:
    """ExecutionGateway for one Binance market."""

    def __init__(
        self,
        endpoints: Endpoints,
        credentials: Credentials,
        clock: Clock,
        *,
        rest: BinanceRest | None = None,
        ws_api: WsApi | None = None,
        retries: int = 1,
        retry_delay_s: float = 0.2,
        not_found_grace_ms: int = 2000,
        ws_retry_s: float = 1.0,
    ) -> None:
        self.endpoints = endpoints
        self.market: BinanceMarket = endpoints.market
        self._clock = clock
        self.rest = rest or BinanceRest(endpoints, credentials, clock)
        self.ws_api = ws_api
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.not_found_grace_ms = not_found_grace_ms
        self.info: ExchangeInfo | None = None
        self._sent_ms: dict[str, int] = {}  # cid -> when last sent (venue-local ms), oldest first
        self.placed_over_ws = 0
        self.placed_over_rest = 0
        self.last_halt: VenueError | None = None
        self.ws_retry_s = ws_retry_s
        self._ws_reconnect: asyncio.Task[None] | None = None

    @property
    def venue(self) -> Venue:
        return VENUE

    @property
    def specs(self) -> dict[str, InstrumentSpec]:
        return self.info.specs if self.info is not None else {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> ExchangeInfo:
        """Sync the clock offset, load the venue's instrument specs, open the WebSocket API
        session (if one is configured; REST carries the orders until it is up)."""
        await self.rest.sync_time()
        info = await self.load_specs()
        if self.ws_api is not None:
            await self._connect_ws()
        return info

    async def close(self) -> None:
        task, self._ws_reconnect = self._ws_reconnect, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ws_api is not None:
            await self.ws_api.close()
        await self.rest.aclose()

    async def _connect_ws(self) -> bool:
        ws = self.ws_api
        if ws is None:
            return False
        try:
            await ws.connect()
        except (VenueError, SigningError) as exc:
            log.warning("binance: WebSocket API session not open (%s); orders go over REST", exc)
            return False
        return True

    def _reopen_ws_later(self) -> None:
        """One background attempt at a time to reopen the session, after `ws_retry_s`."""
        if self.ws_api is None or (self._ws_reconnect is not None and not self._ws_reconnect.done()):
            return

        async def reopen() -> None:
            await asyncio.sleep(self.ws_retry_s)
            await self._connect_ws()

        self._ws_reconnect = asyncio.get_running_loop().create_task(reopen(), name="binance-wsapi-reopen")

    async def load_specs(self) -> ExchangeInfo:
        body = await self.rest.call(self.endpoints.api.exchange_info)
        info = self._parsed(parse_exchange_info, body, self.market)
        self.info = info
        if info.weight_limit:
            self.rest.gate.weight_limit = info.weight_limit
        return info

    def check_instruments(self, instruments: Iterable[Instrument]) -> list[str]:
        """How the config's Binance instruments differ from the venue's (empty: they agree)."""
        problems: list[str] = []
        info = self.info
        if info is None:
            return ["binance: instrument specs not loaded (call start())"]
        for inst in instruments:
            if inst.venue != VENUE:
                continue
            spec = info.specs.get(inst.symbol)
            if spec is None:
                why = info.unusable.get(inst.symbol, "not listed")
                problems.append(f"binance {inst.symbol}: {why} on {self.market}")
                continue
            if inst.symbol not in info.trading:
                problems.append(f"binance {inst.symbol}: not TRADING on {self.market}")
            problems.extend(spec.mismatches(inst))
            if inst.min_notional and Decimal(inst.min_notional) < spec.min_notional:
                problems.append(f"binance {inst.symbol}: min_notional is {inst.min_notional} in the config, "
                                f"{spec.min_notional} on the venue")
        return problems

    # ------------------------------------------------------------------ ExecutionGateway

    async def place(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        refusal = self._local_refusal(order)
        if isinstance(refusal, str):
            return OrderUpdate(cid, OrderState.REJECTED, reason=f"refused locally: {refusal}")
        qty, price = refusal
        api = self.endpoints.api
        params = [("symbol", order.symbol), ("side", order.side.upper()), ("type", "LIMIT"),
                  ("timeInForce", "IOC"), ("quantity", fmt(qty)), ("price", fmt(price)),
                  ("newClientOrderId", cid), ("newOrderRespType", api.order_resp_type)]
        if self._reduce_only(order):
            params.append(("reduceOnly", "true"))
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay_s * attempt)
            self._note_sent(cid)
            try:
                body = await self._send_order(params)
            except VenueError as exc:
                if exc.kind is ErrorKind.RETRYABLE and attempt < self.retries:
                    log.warning("binance: %s not accepted (%s); sending again with the same id", cid, exc.code)
                    continue
                return self._failed_place(cid, exc)
            return await self._placed(cid, body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def cancel(self, order: Order) -> OrderUpdate:
        api = self.endpoints.api
        try:
            body = await self.rest.call(api.order_cancel, [("symbol", order.symbol),
                                                           ("origClientOrderId", order.client_order_id)])
        except VenueError as exc:
            if errors.is_not_open(exc) or errors.is_not_found(exc):
                return await self.query(order)  # already final (or never arrived): say which
            raise
        report = self._parsed(parse_order, body)
        trades = await self._trades_of(report) if report.executed_qty > 0 and not report.trades else ()
        return order_update(self.market, report, trades, client_order_id=order.client_order_id)

    async def query(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        try:
            body = await self.rest.call(self.endpoints.api.order_query,
                                        [("symbol", order.symbol), ("origClientOrderId", cid)])
        except VenueError as exc:
            if errors.is_not_found(exc):
                return self._not_found(order)
            raise
        report = self._parsed(parse_order, body)
        trades: tuple[TradeReport, ...] = ()
        if report.executed_qty > 0:
            trades = await self._trades_of(report)
            got = sum((t.qty for t in trades), Decimal(0))
            if got < report.executed_qty:
                # The trade list lags the order: report what is known, and that it is not final.
                update = order_update(self.market, report, trades, client_order_id=cid,
                                      reason=f"trades for {got} of {report.executed_qty} so far")
                update.state = OrderState.PARTIALLY_FILLED
                return update
        return order_update(self.market, report, trades, client_order_id=cid)

    # ------------------------------------------------------------------ account reads

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        params = [("symbol", symbol)] if symbol else []
        return self._parsed(parse_orders, await self.rest.call(self.endpoints.api.open_orders, params))

    async def recent_trades(self, symbol: str, *, since_ms: int | None = None,
                            order_id: str | None = None, from_id: str | None = None) -> list[TradeReport]:
        """A symbol's trades, oldest first, at most 1000: from `from_id` (a trade id), else from
        `since_ms`; page on with `from_id` = the last id + 1."""
        params = [("symbol", symbol)]
        if order_id is not None:
            params.append(("orderId", order_id))
        if from_id is not None:
            params.append(("fromId", from_id))
        elif since_ms is not None:
            params.append(("startTime", str(since_ms)))
        params.append(("limit", "1000"))
        return self._parsed(parse_trades, await self.rest.call(self.endpoints.api.trades, params))

    async def order_report(self, symbol: str, *, client_order_id: str | None = None,
                           venue_order_id: str | None = None) -> OrderReport:
        """One order as the venue has it now (by venue order id, else by client order id)."""
        ident = ("orderId", venue_order_id) if venue_order_id else ("origClientOrderId", client_order_id or "")
        body = await self.rest.call(self.endpoints.api.order_query, [("symbol", symbol), ident])
        return self._parsed(parse_order, body)

    async def trades_of(self, report: OrderReport) -> tuple[TradeReport, ...]:
        """The trades of one order (its venue order id)."""
        return await self._trades_of(report)

    async def balances(self) -> dict[str, Balance]:
        """Spot: free and locked per asset. USD-M: per margin asset, free = available balance."""
        body = await self.rest.call(self.endpoints.api.account)
        if self.market == "spot":
            return self._parsed(parse_spot_account, body).balances
        return self._parsed(parse_futures_account, body).balances

    async def positions(self) -> dict[str, PositionReport]:
        """USD-M open positions (signed base quantity); spot has none."""
        route = self.endpoints.api.positions
        if route is None:
            return {}
        rows = self._parsed(parse_position_risk, await self.rest.call(route))
        return {p.symbol: p for p in rows if p.qty != 0}

    async def free_margin(self, asset: str = "USDT") -> Decimal:
        """What the risk gate may commit: spot free quote balance, USD-M available balance."""
        body = await self.rest.call(self.endpoints.api.account)
        if self.market == "spot":
            bal = self._parsed(parse_spot_account, body).balances.get(asset)
            return bal.free if bal is not None else Decimal(0)
        return self._parsed(parse_futures_account, body).available_balance

    async def fee_rates(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) for a symbol, from the account's commission endpoint."""
        body = await self.rest.call(self.endpoints.api.commission, [("symbol", symbol)])
        return self._parsed(parse_commission, body)

    # ------------------------------------------------------------------ internals

    def _reduce_only(self, order: Order) -> bool:
        """A flatten order on USD-M: it closes the account's position on the symbol, so the venue
        may refuse it anything else (spot has no positions and no such flag)."""
        return self.market == "usdm" and order.reduce_only

    def _local_refusal(self, order: Order) -> str | tuple[Decimal, Decimal]:
        api = self.endpoints.api
        if not api.client_id_re.fullmatch(order.client_order_id):
            return f"client order id {order.client_order_id!r} is outside Binance's legal range"
        if self.info is None:
            return "instrument specs not loaded (call start())"
        spec = self.info.specs.get(order.symbol)
        if spec is None:
            return f"{order.symbol} is not listed on Binance {self.market}"
        try:
            qty, price = spec.round_order(order.side, order.qty, order.price, reduce_only=self._reduce_only(order))
        except FilterRefusal as exc:
            return str(exc)
        if qty != order.qty:
            return f"{order.symbol}: lot_size: quantity {order.qty} is not a multiple of {spec.lot_size}"
        return qty, price

    async def _send_order(self, params: list[tuple[str, str]]) -> bytes:
        ws = self.ws_api
        if ws is not None and ws.connected:
            try:
                body = await ws.request("order.place", dict(params))
            except VenueError as exc:
                if not (exc.kind is ErrorKind.RETRYABLE and exc.code == "ws-not-connected"):
                    raise
                log.warning("binance: WebSocket API unavailable; placing over REST")
                self._reopen_ws_later()
            else:
                self.placed_over_ws += 1
                return body
        elif ws is not None:
            self._reopen_ws_later()
        body = await self.rest.call(self.endpoints.api.order_place, params)
        self.placed_over_rest += 1
        return body

    async def _placed(self, cid: str, body: bytes) -> OrderUpdate:
        try:
            report = parse_order(body)
        except ParseError as exc:
            return OrderUpdate(cid, OrderState.UNKNOWN, reason=f"unreadable answer: {exc}")
        if report.executed_qty > 0 and not report.trades:
            try:
                trades = await self._trades_of(report)
            except VenueError as exc:
                return OrderUpdate(cid, OrderState.UNKNOWN, report.venue_order_id,
                                   reason=f"executed {report.executed_qty}; trades not read ({exc.code})")
            if sum((t.qty for t in trades), Decimal(0)) < report.executed_qty:
                return OrderUpdate(cid, OrderState.UNKNOWN, report.venue_order_id,
                                   reason=f"executed {report.executed_qty}; trades not all listed yet")
            return order_update(self.market, report, trades, client_order_id=cid)
        return order_update(self.market, report, client_order_id=cid)

    def _failed_place(self, cid: str, exc: VenueError) -> OrderUpdate:
        reason = f"{exc.kind}: {exc.code} {exc.message}"
        if exc.kind in (ErrorKind.HALT, ErrorKind.AUTH):
            self.last_halt = exc
        if exc.kind is ErrorKind.UNKNOWN:
            return OrderUpdate(cid, OrderState.UNKNOWN, reason=reason)
        # rejected, rate-limited, clock skew (after one resync), auth, halt, retryable spent:
        # none of them reached the matching engine.
        return OrderUpdate(cid, OrderState.REJECTED, reason=reason)

    def _note_sent(self, cid: str) -> None:
        """Remember when `cid` was sent (last), forgetting the send times past their deadline."""
        now = self._clock.time_ms()
        horizon = now - self.rest.recv_window_ms - self.not_found_grace_ms
        while self._sent_ms:
            oldest, at = next(iter(self._sent_ms.items()))
            if at >= horizon:
                break
            del self._sent_ms[oldest]
        self._sent_ms.pop(cid, None)  # re-inserted: the dict stays oldest first
        self._sent_ms[cid] = now

    def remembered(self) -> int:
        """Send times held (a few seconds of orders)."""
        return len(self._sent_ms)

    def _not_found(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        sent = max(self._sent_ms.get(cid, 0), order.created_ms, order.updated_ms)
        deadline = sent + self.rest.recv_window_ms + self.not_found_grace_ms
        if self._clock.time_ms() > deadline:
            return OrderUpdate(cid, OrderState.REJECTED,
                               reason="never reached the venue (not found after its recvWindow)")
        return OrderUpdate(cid, OrderState.UNKNOWN, reason="not found yet")

    async def _trades_of(self, report: OrderReport) -> tuple[TradeReport, ...]:
        rows = await self.recent_trades(report.symbol, order_id=report.venue_order_id)
        return tuple(t for t in rows if t.order_id == report.venue_order_id)

    @staticmethod
    def _parsed(parse: Callable[..., T], body: bytes, *args: object) -> T:
        """A parsed body; an unreadable one is an `unknown` VenueError (a read that told nothing)."""
        try:
            return parse(body, *args)
        except ParseError as exc:
            raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "parse", str(exc)) from None


__all__ = ["VENUE", "BinanceGateway", "fmt", "order_update", "to_fill", "trade_id"]
