"""The live venues: OKX and Binance gateways built from the config and the secrets, started
before trading, and read alike by reconciliation.

`build_okx` / `build_binance` construct the gateways of `exchanges/` (nothing is sent until
`LiveVenues.start`). `start` syncs each venue's clock, loads its instrument specs and checks
the config's typed-in sizes against them: a mismatch refuses the start with every difference
named, because an order sized from a wrong lot step is a real trade of the wrong size.

`VenueAccount` is what reconciliation needs of a venue, the same for every venue: its open
orders (client order ids), its recent fills (with our client order id and the venue's trade
id as the ledger stores it), and its positions in venue units (None where a venue has no
positions to compare: a spot account holds balances, and inventory that predates quantarb is
not a difference).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from core.clock import Clock
from core.config import BinanceVenueConfig, OkxVenueConfig, QuantarbConfig
from core.instruments import Instrument
from core.models import Fill, Order, OrderPurpose, OrderState, Venue
from core.ports import OrderUpdate
from engine.errors import RuntimeFailure
from engine.settings import Secrets
from exchanges.binance import endpoints as bn_endpoints
from exchanges.binance.auth import Credentials
from exchanges.binance.gateway import BinanceGateway, trade_id
from exchanges.binance.parsers import TradeReport
from exchanges.binance.rest import BinanceRest
from exchanges.binance.wsapi import WsApi
from exchanges.okx import endpoints as okx_endpoints
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import ConfigMismatch, OkxGateway, OkxGatewayConfig
from exchanges.okx.parsers import parse_orders
from exchanges.venue import VenueError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 10.0
FILL_LOOKBACK_MS = 24 * 3600 * 1000  # Binance myTrades: at most 24 h per request
MAX_TRADE_PAGES = 10  # of 1000 trades per symbol and pass (Binance weight 5 - 10 each)
MAX_REMEMBERED_ORDERS = 10_000


class IncompleteRead(Exception):
    """More fills than one pass reads: the venue is not reconciled this pass (said, not guessed)."""


class MissingCredentials(RuntimeFailure):
    """Live mode without a venue's keys: named by variable, never by value."""


def _secret(value: object, name: str) -> str:
    if value is None:
        raise MissingCredentials(f"live trading on this venue needs {name} (or {name}_FILE)")
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter is not None else value)


def build_okx(venue: OkxVenueConfig, secrets: Secrets, clock: Clock) -> OkxGateway:
    creds = OkxCredentials(
        _secret(secrets.okx_api_key, "QUANTARB_OKX_API_KEY"),
        _secret(secrets.okx_api_secret, "QUANTARB_OKX_API_SECRET"),
        _secret(secrets.okx_api_passphrase, "QUANTARB_OKX_API_PASSPHRASE"),
    )
    private = venue.private_ws_url or (
        okx_endpoints.WS_PRIVATE_DEMO_URL if venue.demo_trading else okx_endpoints.WS_PRIVATE_URL
    )
    config = OkxGatewayConfig(rest_url=venue.rest_url, ws_private_url=private, demo=venue.demo_trading,
                              td_mode=venue.td_mode, ws_orders=venue.ws_orders,
                              request_timeout_s=min(venue.connect_timeout_s, 10.0))
    return OkxGateway(creds, clock, config)


def binance_endpoints(venue: BinanceVenueConfig) -> bn_endpoints.Endpoints:
    base = bn_endpoints.testnet(venue.market) if venue.testnet else bn_endpoints.production(venue.market)
    return bn_endpoints.Endpoints(
        base.api,
        venue.trade_rest_url or base.rest_url,
        venue.ws_api_url or base.ws_api_url,
        venue.user_stream_url or base.user_stream_url,
    )


def build_binance(venue: BinanceVenueConfig, secrets: Secrets, clock: Clock) -> BinanceGateway:
    ed25519 = secrets.binance_ed25519_key
    creds = Credentials(
        _secret(secrets.binance_api_key, "QUANTARB_BINANCE_API_KEY"),
        _secret(secrets.binance_api_secret, "QUANTARB_BINANCE_API_SECRET"),
        ed25519_private_pem=ed25519.get_secret_value().encode() if ed25519 is not None else None,
    )
    endpoints = binance_endpoints(venue)
    rest = BinanceRest(endpoints, creds, clock, timeout_s=min(venue.connect_timeout_s, 10.0),
                       recv_window_ms=venue.recv_window_ms)
    ws_api = (WsApi(endpoints.ws_api_url, creds, clock, offset=rest.offset, gate=rest.gate,
                    timeout_s=min(venue.connect_timeout_s, 10.0), logon=ed25519 is not None,
                    recv_window_ms=venue.recv_window_ms)
              if venue.ws_orders else None)
    return BinanceGateway(endpoints, creds, clock, rest=rest, ws_api=ws_api)


# -- what reconciliation reads ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpenOrder:
    client_order_id: str
    venue_order_id: str
    symbol: str  # "" when the venue's answer does not say


def foreign_order(venue: Venue, client_order_id: str, symbol: str) -> Order:
    """An order this engine did not send, as the gateways' cancel and query take it: only its
    client order id and symbol mean anything (nothing is ever placed from it)."""
    return Order(client_order_id=client_order_id, group_id="", venue=venue, symbol=symbol, side="buy",
                 qty=Decimal(0), price=Decimal(0), purpose=OrderPurpose.ENTRY, created_ms=0)


class VenueAccount(Protocol):
    @property
    def venue(self) -> Venue: ...

    async def open_orders(self) -> list[OpenOrder]: ...

    async def fills_since(self, since_ms: int, known: Callable[[list[str]], Awaitable[set[str]]] | None = None
                          ) -> list[Fill]:
        """Fills since `since_ms`; `known` (the trade ids the ledger has) lets a venue skip
        looking up what is booked. A fill the ledger has may come with no client order id."""
        ...

    async def positions(self) -> dict[str, Decimal] | None:
        """Signed net position per symbol in venue units; None: nothing to compare (spot)."""
        ...

    async def free_margin(self) -> Decimal:
        """What the risk gate may still commit on the venue (its free-margin breaker)."""
        ...


class OkxAccount:
    def __init__(self, gateway: OkxGateway, symbols: Sequence[str]) -> None:
        self._gw = gateway
        self._symbols = list(symbols)

    @property
    def venue(self) -> Venue:
        return "okx"

    async def open_orders(self) -> list[OpenOrder]:
        return [OpenOrder(u.client_order_id, u.venue_order_id, "") for u in await self._gw.open_orders()]

    async def fills_since(self, since_ms: int, known: Callable[[list[str]], Awaitable[set[str]]] | None = None
                          ) -> list[Fill]:
        types = sorted({okx_endpoints.inst_type_of(s) for s in self._symbols})
        out: list[Fill] = []
        for inst_type in types:
            fills, complete = await self._gw.fills_since(inst_type, since_ms)
            if not complete:
                raise IncompleteRead(f"more {inst_type} fills since the last pass than one pass reads "
                                     f"({len(fills)}): not reconciled; check the account's fills on the venue")
            out += fills
        return out

    async def positions(self) -> dict[str, Decimal] | None:
        out: dict[str, Decimal] = {}
        for p in await self._gw.positions():
            out[p.inst_id] = out.get(p.inst_id, Decimal(0)) + p.qty
        return out

    async def free_margin(self) -> Decimal:
        return (await self._gw.balance()).available_equity

    async def cancel_open(self, order: OpenOrder) -> OrderUpdate:
        """Cancel an open order that is not the ledger's (orphan cleanup), by client order id.
        OKX's open-order list is read once more for its instrument when it was not known."""
        symbol = order.symbol
        if not symbol:
            pending = parse_orders(await self._gw.rest.call("GET", okx_endpoints.ORDERS_PENDING, {}))
            symbol = next((d.instId for d in pending if d.clOrdId == order.client_order_id), "")
            if not symbol:
                return OrderUpdate(order.client_order_id, OrderState.UNKNOWN, reason="no longer open on the venue")
        return await self._gw.cancel(foreign_order("okx", order.client_order_id, symbol))


class BinanceAccount:
    def __init__(self, gateway: BinanceGateway, symbols: Sequence[str]) -> None:
        self._gw = gateway
        self._symbols = list(symbols)
        self._cids: dict[str, str] = {}  # venue order id -> client order id (bounded)

    @property
    def venue(self) -> Venue:
        return "binance"

    async def open_orders(self) -> list[OpenOrder]:
        return [OpenOrder(r.client_order_id, r.venue_order_id, r.symbol) for r in await self._gw.open_orders()]

    async def fills_since(self, since_ms: int, known: Callable[[list[str]], Awaitable[set[str]]] | None = None
                          ) -> list[Fill]:
        """Every trade since `since_ms` (paged by trade id); the client order id of a trade is
        looked up (one order query per order, remembered) only for trades `known` says the
        ledger lacks, so a busy account costs no order queries for what is already booked."""
        now = self._gw._clock.time_ms()
        since = max(since_ms, now - FILL_LOOKBACK_MS + 60_000)
        out: list[Fill] = []
        for symbol in self._symbols:
            trades: list[TradeReport] = []
            page = await self._gw.recent_trades(symbol, since_ms=since)
            for _ in range(MAX_TRADE_PAGES):
                trades += page
                if len(page) < 1000:
                    break
                page = await self._gw.recent_trades(symbol, from_id=str(int(page[-1].trade_id) + 1))
            else:
                raise IncompleteRead(f"more {symbol} trades since the last pass than one pass reads "
                                     f"({len(trades)}): not reconciled; check the account's trades on the venue")
            ids = {trade_id(self._gw.market, t): t for t in trades}
            wanted = set(ids) - (await known(list(ids)) if known is not None else set())
            for tid, t in ids.items():
                if tid not in wanted:
                    out.append(Fill("binance", tid, "", t.qty, t.price, t.fee, t.fee_ccy, t.ts_ms))
                    continue
                cid = self._cids.get(t.order_id)
                if cid is None:
                    report = await self._gw.order_report(symbol, venue_order_id=t.order_id)
                    cid = self._cids[t.order_id] = report.client_order_id
                    if len(self._cids) > MAX_REMEMBERED_ORDERS:
                        self._cids.pop(next(iter(self._cids)))
                out.append(Fill("binance", tid, cid, t.qty, t.price, t.fee, t.fee_ccy, t.ts_ms))
        return out

    async def positions(self) -> dict[str, Decimal] | None:
        if self._gw.market == "spot":
            return None
        return {s: p.qty for s, p in (await self._gw.positions()).items()}

    async def free_margin(self) -> Decimal:
        return await self._gw.free_margin()

    async def cancel_open(self, order: OpenOrder) -> OrderUpdate:
        """Cancel an open order that is not the ledger's (orphan cleanup), by client order id."""
        return await self._gw.cancel(foreign_order("binance", order.client_order_id, order.symbol))


class LiveVenues:
    """The live OKX/Binance gateways of one engine, their start and stop."""

    def __init__(self, config: QuantarbConfig, secrets: Secrets, clock: Clock,
                 instruments: Iterable[Instrument]) -> None:
        self._instruments = list(instruments)
        self.okx: OkxGateway | None = None
        self.binance: BinanceGateway | None = None
        venues = {i.venue for i in self._instruments}
        if "okx" in venues and config.venues.okx is not None:
            self.okx = build_okx(config.venues.okx, secrets, clock)
        if "binance" in venues and config.venues.binance is not None:
            self.binance = build_binance(config.venues.binance, secrets, clock)

    def symbols(self, venue: Venue) -> list[str]:
        return sorted({i.symbol for i in self._instruments if i.venue == venue})

    @property
    def gateways(self) -> dict[Venue, OkxGateway | BinanceGateway]:
        out: dict[Venue, OkxGateway | BinanceGateway] = {}
        if self.okx is not None:
            out["okx"] = self.okx
        if self.binance is not None:
            out["binance"] = self.binance
        return out

    def accounts(self) -> list[VenueAccount]:
        out: list[VenueAccount] = []
        if self.okx is not None:
            out.append(OkxAccount(self.okx, self.symbols("okx")))
        if self.binance is not None:
            out.append(BinanceAccount(self.binance, self.symbols("binance")))
        return out

    async def start(self) -> None:
        """Connect, load specs, check the config against them; RuntimeFailure names what failed."""
        try:
            if self.okx is not None:
                await asyncio.wait_for(self.okx.start(self.symbols("okx")), START_TIMEOUT_S)
                try:
                    self.okx.verify_config(self._instruments)
                except ConfigMismatch as exc:
                    raise RuntimeFailure(f"okx: the config's instruments differ from the venue's: {exc}") from None
                if self.okx.config.stream:
                    await self.okx.stream.wait_ready(START_TIMEOUT_S)
            if self.binance is not None:
                await asyncio.wait_for(self.binance.start(), START_TIMEOUT_S)
                problems = self.binance.check_instruments(self._instruments)
                if problems:
                    raise RuntimeFailure("binance: the config's instruments differ from the venue's: "
                                         + "; ".join(problems))
        except KeyError as exc:
            await self.stop()
            raise RuntimeFailure(f"live venues: {exc.args[0] if exc.args else exc}") from None
        except (VenueError, TimeoutError, OSError) as exc:
            await self.stop()
            raise RuntimeFailure(f"live venues: cannot start: {_said(exc)}") from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.okx is not None:
            try:
                await self.okx.stop()
            except Exception as exc:  # stopping must reach the other venue
                log.warning("okx gateway stop: %s", _said(exc))
        if self.binance is not None:
            try:
                await self.binance.close()
            except Exception as exc:
                log.warning("binance gateway stop: %s", _said(exc))


def _said(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]
