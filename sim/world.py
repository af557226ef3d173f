"""The simulated world: one synthetic market priced on loopback OKX and Binance servers.

`SimWorld` owns a `SyntheticMarket` and steps it in real time (by the elapsed time of the
injected clock); each quote goes to the venue that lists it: OKX and Binance quotes to their
loopback servers, MT5 quotes to a callback (the MT5 side, EA simulator and listener, lives
elsewhere). Feeds connect to `okx_ws_url` / `binance_ws_url` exactly as to the real venues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from core.clock import Clock
from core.instruments import Pair
from core.models import Venue
from sim.binance_server import BinanceMarket, BinanceSimServer
from sim.market import SimTick, SyntheticMarket
from sim.okx_server import OkxSimServer

log = logging.getLogger(__name__)


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
    ) -> None:
        if step_interval_s <= 0:
            raise ValueError("step_interval_s must be > 0")
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
        # Created now (so tests can set faults before start), listening after start().
        self.okx = OkxSimServer(host, 0, symbols=symbols["okx"], clock=clock)
        self.binance = BinanceSimServer(host, 0, symbols=symbols["binance"], market=binance_market, clock=clock)
        self._last: dict[tuple[Venue, str], SimTick] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks_routed = 0
        for tick in self.market.quote_all():
            self._last[(tick.venue, tick.symbol)] = tick

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
            await self.binance.start()
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
        await asyncio.gather(self.okx.stop(), self.binance.stop())

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
        return self.binance.ws_url

    @property
    def binance_rest_url(self) -> str:
        """http://127.0.0.1:PORT (the REST base URL)."""
        self._require_running()
        return self.binance.rest_url

    # ------------------------------------------------------------------ market

    def touch(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        """The current simulated (bid, ask) of an instrument in venue units, None if unknown."""
        tick = self._last.get((venue, symbol))
        return None if tick is None else (tick.bid, tick.ask)

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
            self.binance.publish(tick)
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
