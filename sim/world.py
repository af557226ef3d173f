"""The simulated world: one synthetic market priced on loopback OKX and Binance servers.

With `accounts`, the venues also trade: OKX with its private REST and WebSocket and an account
for the given key, Binance as a whole venue (`BinanceVenueSim`: private REST, WebSocket API,
user data) for the given key, both listing the pairs' instruments with the config's sizes, so
the engine's live gateways trade against them exactly as against the real venues (the demo).
`seed_position` gives a venue a position it held before this run (a real venue outlives the
engine; these simulators start empty).

`SimWorld` owns a `SyntheticMarket` and steps it in real time (by the elapsed time of the
injected clock); each quote goes to the venue that lists it: OKX and Binance quotes to their
loopback servers, MT5 quotes to a callback (the MT5 side, EA simulator and listener, lives
elsewhere). Feeds connect to `okx_ws_url` / `binance_ws_url` exactly as to the real venues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Self

from core.clock import Clock
from core.currency import rate_pair
from core.instruments import Instrument, Pair
from core.models import Venue
from sim.binance_exchange import Position as BinancePosition
from sim.binance_exchange import SimSymbol
from sim.binance_private import SimCredentials
from sim.binance_server import BinanceMarket, BinanceSimServer
from sim.binance_venue import BinanceVenueSim
from sim.market import SimTick, SyntheticMarket
from sim.okx_accounts import SimInstrumentSpec, SimPosition, spec_from_instrument
from sim.okx_server import OkxSimServer


@dataclass(frozen=True, slots=True)
class TradingAccounts:
    """The keys the world's venues accept (made up per run; loopback only) and each account's
    quote balance."""

    okx_key: str
    okx_secret: str
    okx_passphrase: str
    binance_key: str
    binance_secret: str
    balance: Decimal = Decimal(10_000_000)


def binance_symbol(inst: Instrument, pair: str) -> SimSymbol:
    """The Binance listing of a configured instrument, with the config's filters."""
    return SimSymbol(inst.symbol, pair, "USDT", Decimal(inst.tick_size), Decimal(inst.lot_step),
                     Decimal(inst.min_qty), Decimal(inst.min_notional or 5))

def _currency_symbol(symbol: str) -> SimSymbol:
    """A Binance listing of a currency book (`USDCUSDT`): base and quote from its name."""
    pair = rate_pair("binance", symbol)
    if pair is None:
        raise ValueError(f"binance {symbol}: not a currency book")
    return SimSymbol(symbol, pair[0], pair[1], Decimal("0.0001"), Decimal("0.01"), Decimal(1), Decimal(5))


log = logging.getLogger(__name__)

# Every currency book the world lists (`[money] rate_books` on OKX or Binance) is quoted here,
# fixed: the simulated market prices USD, USDT and USDC alike, so the mid is exactly 1 (unless
# `[demo] currency_book_mid` says otherwise, to see a USDT that is not worth a dollar).
CURRENCY_BOOK_TOP = (0.9999, 1.0001)
CURRENCY_BOOK_HALF_SPREAD = 0.0001
_CURRENCY_BOOK_SIZE = 1_000_000.0


class SimWorld:
    """A seeded market with loopback OKX and Binance servers on ephemeral ports."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        seed: int,
        clock: Clock,
        tick_ms: float = 50.0,
        dislocation_every_s: float = 3.0,
        binance_market: BinanceMarket = "usdm",
        on_mt5_tick: Callable[[SimTick], None] | None = None,
        step_interval_s: float = 0.02,
        host: str = "127.0.0.1",
        accounts: TradingAccounts | None = None,
        currency_books: Sequence[tuple[Venue, str]] = (),
        currency_book_mid: float = 1.0,
    ) -> None:
        """`currency_books`: OKX and Binance books listed besides the pairs' and quoted at
        `CURRENCY_BOOK_TOP` (the rate books a config reads; MT5 ones are pairs' symbols), or
        around `currency_book_mid` when it is not 1."""
        if step_interval_s <= 0:
            raise ValueError("step_interval_s must be > 0")
        if not (math.isfinite(currency_book_mid) and currency_book_mid > 2 * CURRENCY_BOOK_HALF_SPREAD):
            raise ValueError(f"currency_book_mid {currency_book_mid}: must be > {2 * CURRENCY_BOOK_HALF_SPREAD}")
        self._clock = clock
        self._on_mt5_tick = on_mt5_tick
        self._step_interval_s = step_interval_s
        self.market = SyntheticMarket(
            pairs,
            seed=seed,
            tick_ms=tick_ms,
            dislocation_every_s=dislocation_every_s,
            start_ms=clock.time_ms(),
        )
        symbols: dict[Venue, list[str]] = {"mt5": [], "okx": [], "binance": []}
        for pair in pairs:
            for inst in pair.instruments:
                symbols[inst.venue].append(inst.symbol)
        books = [(v, sym) for v, sym in dict.fromkeys(currency_books)
                 if v in ("okx", "binance") and sym not in symbols[v]]
        for venue, sym in books:
            symbols[venue].append(sym)
        # Created now (so tests can set faults before start), listening after start().
        self.accounts = accounts
        self.binance_venue: BinanceVenueSim | None = None
        if accounts is None:
            self.okx = OkxSimServer(host, 0, symbols=symbols["okx"], clock=clock)
            self.binance: BinanceSimServer = BinanceSimServer(host, 0, symbols=symbols["binance"],
                                                              market=binance_market, clock=clock)
        else:
            okx_insts = [i for p in pairs for i in p.instruments if i.venue == "okx"]
            book_specs = [SimInstrumentSpec(sym, Decimal("0.0001"), Decimal("0.0001"), Decimal(1))
                          for v, sym in books if v == "okx"]
            self.okx = OkxSimServer(host, 0, symbols=symbols["okx"], clock=clock,
                                    specs=[spec_from_instrument(i) for i in okx_insts] + book_specs)
            self.okx.private.add_account(accounts.okx_key, accounts.okx_secret, accounts.okx_passphrase,
                                         balances={"USDT": accounts.balance})
            listed = [binance_symbol(i, p.name) for p in pairs for i in p.instruments if i.venue == "binance"]
            listed += [_currency_symbol(sym) for v, sym in books if v == "binance"]
            balances: dict[str, Decimal | str] = {"USDT": accounts.balance}
            if binance_market == "spot":  # spot legs sell what the account holds
                balances.update({s.base: accounts.balance / 1000 for s in listed})
            self.binance_venue = BinanceVenueSim(
                market=binance_market, credentials=SimCredentials(accounts.binance_key, accounts.binance_secret),
                host=host, clock=clock, symbols=listed, balances=balances)
            self.binance = self.binance_venue.public
        self._last: dict[tuple[Venue, str], SimTick] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks_routed = 0
        for tick in self.market.quote_all():
            self._last[(tick.venue, tick.symbol)] = tick
        half = CURRENCY_BOOK_HALF_SPREAD
        bid, ask = CURRENCY_BOOK_TOP if currency_book_mid == 1.0 else (
            round(currency_book_mid - half, 10), round(currency_book_mid + half, 10))
        for venue, sym in books:  # routed at start; the market never moves them
            self._last[(venue, sym)] = SimTick(venue, sym, bid, ask, _CURRENCY_BOOK_SIZE, _CURRENCY_BOOK_SIZE,
                                               clock.time_ms())

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Start both servers and the stepping task; every venue is quoted from the start."""
        if self._task is not None:
            raise RuntimeError("SimWorld already started")
        for tick in list(self._last.values()):
            self._route(tick)
        await self.okx.start()
        try:
            await (self.binance_venue or self.binance).start()
        except BaseException:
            await self.okx.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="sim-world-step")

    async def stop(self) -> None:
        """Stop stepping, close every connection and both listening sockets."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(self.okx.stop(), (self.binance_venue or self.binance).stop())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ URLs

    def _require_running(self) -> None:
        if self._task is None:
            raise RuntimeError("SimWorld is not started")

    @property
    def okx_ws_url(self) -> str:
        """ws://127.0.0.1:PORT/ws/v5/public (the full public WebSocket URL, as in the config)."""
        self._require_running()
        return self.okx.ws_url

    @property
    def okx_rest_url(self) -> str:
        """http://127.0.0.1:PORT (the REST base URL)."""
        self._require_running()
        return self.okx.rest_url

    @property
    def binance_ws_url(self) -> str:
        """ws://127.0.0.1:PORT, the base: append /ws/<stream> (spot) or /public/ws/<stream> (USD-M)."""
        self._require_running()
        return self.binance_venue.ws_base_url if self.binance_venue is not None else self.binance.ws_url

    @property
    def binance_rest_url(self) -> str:
        """http://127.0.0.1:PORT (the REST base URL)."""
        self._require_running()
        return self.binance_venue.base_url if self.binance_venue is not None else self.binance.rest_url

    # ------------------------------------------------------------------ market

    def touch(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        """The current simulated (bid, ask) of an instrument in venue units, None if unknown."""
        tick = self._last.get((venue, symbol))
        return None if tick is None else (tick.bid, tick.ask)

    def seed_position(self, venue: Venue, symbol: str, qty: Decimal, price: Decimal) -> None:
        """Give the trading account a position it held before this run (venue units, signed)."""
        if self.accounts is None:
            raise RuntimeError("the world has no trading accounts")
        now = self._clock.time_ms()
        if venue == "okx":
            account = self.okx.private.accounts[self.accounts.okx_key]
            account.positions[symbol] = SimPosition(pos=qty, avg_px=price, c_time=now, u_time=now)
        elif venue == "binance" and self.binance_venue is not None and self.binance_venue.market == "usdm":
            self.binance_venue.exchange.positions[symbol] = BinancePosition(amount=qty, entry_price=price,
                                                                            update_ms=now)

    def step(self, dt_s: float) -> list[SimTick]:
        """Advance the market by `dt_s` seconds now and route the quotes that came due."""
        ticks = self.market.advance(dt_s)
        for tick in ticks:
            self._route(tick)
        return ticks

    def _route(self, tick: SimTick) -> None:
        self._last[(tick.venue, tick.symbol)] = tick
        self.ticks_routed += 1
        if tick.venue == "okx":
            self.okx.publish(tick)
        elif tick.venue == "binance":
            (self.binance_venue or self.binance).publish(tick)
        elif self._on_mt5_tick is not None:
            try:
                self._on_mt5_tick(tick)
            except Exception:
                log.exception("on_mt5_tick failed for %s", tick.symbol)

    async def _run(self) -> None:
        last_ns = self._clock.monotonic_ns()
        while True:
            await asyncio.sleep(self._step_interval_s)
            now_ns = self._clock.monotonic_ns()
            dt_s = max(0, now_ns - last_ns) / 1e9
            last_ns = now_ns
            try:
                self.step(dt_s)
            except Exception:
                log.exception("sim world step failed")


__all__ = ["SimWorld"]
