"""The demo wiring: the only part of the engine that knows the simulated world (`sim/`).

With no configuration (or `[demo] enabled`) quantarb trades against simulated venues on
loopback: OKX and Binance servers that speak the real protocols, and an MT5 broker whose EA
simulator is a real HTTP client of the real listener. The OKX and Binance legs go through the
live gateways (`engine.live_venues`) with keys made up for the run, and reconciliation runs
as in live mode, so the live code paths run every time anyone starts the demo. Two exceptions
keep paper gateways: the deterministic driver (no sockets) and `[paper]` faults, which are a
paper gateway's feature. Everything else in the engine sees only URLs, quotes and gateways.

`DemoDriver` steps that world on a manual clock for deterministic tests and snapshots: quotes go
from the synthetic market straight into the engine (no sockets, no timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from core.clock import Clock
from core.config import PaperConfig, QuantarbConfig
from core.instruments import Instrument
from core.models import Decision, Quote, Venue
from engine.settings import Secrets
from sim.ea_sim import SIM_RESYNC_FILLS_MS, EaSimulator, TickBoard
from sim.market import SimTick, SyntheticMarket
from sim.mt5_broker import BrokerBehaviour, SimBroker, spec_from_instrument
from sim.world import SimWorld, TradingAccounts

EA_TIMER_MS = 50
EA_FILL_LATENCY_MS = (5.0, 40.0)


def is_simulated(config: QuantarbConfig, *, is_demo: bool) -> bool:
    return is_demo or config.demo.enabled


def trades_through_gateways(paper: PaperConfig) -> bool:
    """The demo's OKX/Binance legs go through the live gateways unless paper faults are asked
    for (they are the paper gateway's feature: `QUANTARB_PAPER__REJECT_RATE=0.2 quantarb tui`)."""
    return not (paper.reject_rate or paper.timeout_rate or paper.lost_ack_rate or paper.partial_rate)


def trading_accounts() -> TradingAccounts:
    """Keys for this run's simulated venues: random, loopback only, never written anywhere."""
    return TradingAccounts(okx_key=secrets.token_hex(16), okx_secret=secrets.token_hex(16).upper(),
                           okx_passphrase=f"Demo-{secrets.token_hex(6)}", binance_key=secrets.token_hex(32),
                           binance_secret=secrets.token_hex(32))


def trading_secrets(accounts: TradingAccounts, base: Secrets | None) -> Secrets:
    """The demo's venue keys, with the rest (the admin token, MT5 secrets) as configured."""
    base = base or Secrets()
    return Secrets(okx_api_key=SecretStr(accounts.okx_key), okx_api_secret=SecretStr(accounts.okx_secret),
                   okx_api_passphrase=SecretStr(accounts.okx_passphrase),
                   binance_api_key=SecretStr(accounts.binance_key),
                   binance_api_secret=SecretStr(accounts.binance_secret),
                   admin_token=base.admin_token, mt5_terminals=base.mt5_terminals)


def world_venues(config: QuantarbConfig, world: SimWorld) -> QuantarbConfig:
    """`config` with its OKX and Binance sections pointing at the started world."""
    venues = config.venues
    okx = venues.okx.model_copy(update={
        "rest_url": world.okx_rest_url, "ws_url": world.okx_ws_url,
        "private_ws_url": world.okx.private_ws_url}) if venues.okx is not None else None
    binance = None
    if venues.binance is not None:
        base = world.binance_rest_url
        ws = world.binance_ws_url
        route = "/ws-api/v3" if venues.binance.market == "spot" else "/ws-fapi/v1"
        binance = venues.binance.model_copy(update={
            "rest_url": base, "ws_url": ws, "trade_rest_url": base, "ws_api_url": f"{ws}{route}",
            "user_stream_url": f"{ws}/private" if venues.binance.market == "usdm" else None})
    return config.model_copy(update={"venues": venues.model_copy(update={"okx": okx, "binance": binance})})


def seed_positions(world: SimWorld, held: Mapping[tuple[str, str], Decimal]) -> list[str]:
    """What the last run left on the simulated venues, as the ledger has it (a real venue keeps
    positions across an engine's restarts; these simulators start empty). Returns what it did."""
    done: list[str] = []
    for (venue, symbol), qty in sorted(held.items()):
        if venue not in ("okx", "binance") or qty == 0:
            continue
        touch = world.touch(venue, symbol)  # type: ignore[arg-type]
        price = Decimal(repr((touch[0] + touch[1]) / 2)) if touch is not None else Decimal(0)
        world.seed_position(venue, symbol, qty, price)  # type: ignore[arg-type]
        done.append(f"{venue} {symbol} {qty}")
    return done


def build_world(
    config: QuantarbConfig,
    clock: Clock,
    *,
    is_demo: bool,
    on_mt5_tick: Callable[[SimTick], None] | None = None,
    accounts: TradingAccounts | None = None,
) -> SimWorld | None:
    """The simulated venues when the demo runs (or `[demo] enabled`), else None."""
    if not is_simulated(config, is_demo=is_demo):
        return None
    binance = config.venues.binance
    return SimWorld(
        config.build_pairs(),
        seed=config.demo.seed,
        clock=clock,
        tick_ms=config.demo.tick_ms,
        dislocation_every_s=config.demo.dislocation_every_s,
        binance_market=binance.market if binance is not None else "usdm",
        on_mt5_tick=on_mt5_tick,
        accounts=accounts,
        currency_books=config.money.rate_book_keys(),  # served, so `[money] rate_books` can be read
        currency_book_mid=config.demo.currency_book_mid,
    )


def tick_quote(tick: SimTick, now_ns: int) -> Quote:
    return Quote(tick.venue, tick.symbol, tick.bid, tick.ask, tick.bid_size, tick.ask_size, tick.ts_ms, now_ns)


class Ingest(Protocol):
    def __call__(self, quote: Quote) -> Decision | None: ...


class Drain(Protocol):
    async def __call__(self) -> None: ...


def in_process_mt5(clock: Clock, ingest: Ingest, delivered: Callable[[Venue, int], None]) -> Callable[[SimTick], None]:
    """Without an MT5 side (no listener), the simulated MT5 venue's ticks go straight in."""

    def on_tick(tick: SimTick) -> None:
        now_ns = clock.monotonic_ns()
        delivered("mt5", now_ns)
        ingest(tick_quote(tick, now_ns))

    return on_tick


class DemoEa:
    """The MT5 terminal of the demo: a simulated broker and the EA simulator that serves it,
    started against the engine's listener once that listens."""

    def __init__(
        self,
        terminal: str,
        secret: bytes,
        instruments: Sequence[Instrument],
        clock: Clock,
        *,
        seed: int,
        magic: int,
        state_file: Path | None,
    ) -> None:
        self._terminal = terminal
        self._secret = secret
        self._symbols = [i.symbol for i in instruments]
        self._clock = clock
        self._seed = seed
        self._magic = magic
        self.board = TickBoard(self._symbols)
        self.broker = SimBroker(
            self.board.touch,
            clock=clock,
            seed=seed,
            specs={i.symbol: spec_from_instrument(i) for i in instruments},
            behaviour=BrokerBehaviour(),
            state_file=state_file,  # the simulated broker outlives the engine, as a real one does
        )
        self.ea: EaSimulator | None = None
        self._task: asyncio.Task[None] | None = None

    def on_tick(self, tick: SimTick) -> None:
        """The simulated world's MT5 quotes, as the EA's terminal sees them."""
        self.board.on_tick(tick)

    async def start(self, url: str) -> None:
        self.ea = EaSimulator(
            url, self._terminal, self._secret, self._symbols, self.broker, self.board, self._clock,
            timer_ms=EA_TIMER_MS, fill_latency_ms=EA_FILL_LATENCY_MS, seed=self._seed, magic=self._magic,
            resync_fills_ms=SIM_RESYNC_FILLS_MS,
        )
        self._task = asyncio.create_task(self.ea.run(), name="ea-sim")

    async def stop(self) -> None:
        if self.ea is not None:
            await self.ea.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class DemoDriver:
    """Steps a manually clocked simulated world deterministically (tests and snapshots)."""

    def __init__(
        self,
        market: SyntheticMarket,
        clock: Clock,
        ingest: Ingest,
        drain: Drain,
        delivered: Callable[[Venue, int], None],
    ) -> None:
        advance = getattr(clock, "advance", None)
        if advance is None:
            raise TypeError("the demo driver needs a manual clock")
        self._advance: Callable[..., object] = advance
        self._market = market
        self._clock = clock
        self._ingest = ingest
        self._drain = drain
        self._delivered = delivered

    async def drive(self, steps: int, dt_ms: float = 20.0) -> None:
        """`steps` market steps; the groups each creates are executed inline, in order."""
        for _ in range(steps):
            self.step_market(dt_ms)
            await self._drain()

    def step_market(self, dt_ms: float = 20.0) -> None:
        """One step of the simulated market on the manual clock, without running the groups
        it creates (they stay in flight until the orchestrator drains)."""
        self._advance(ms=dt_ms)
        now_ns = self._clock.monotonic_ns()
        for tick in self._market.advance(dt_ms / 1000.0):
            self._delivered(tick.venue, now_ns)
            self._ingest(tick_quote(tick, now_ns))


__all__ = [
    "DemoDriver", "DemoEa", "TradingAccounts", "build_world", "in_process_mt5", "is_simulated", "seed_positions",
    "trades_through_gateways", "trading_accounts", "trading_secrets", "world_venues",
]
