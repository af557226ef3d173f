"""Runtime: the composition root. Builds the engine from a config and runs it as asyncio tasks.

Data flow (DESIGN.md section 3): quote sources call `ingest()` synchronously; the pipeline
judges each quote; an intent is handed to the HedgeOrchestrator, which runs the group as its
own task. Views pull `snapshot()`; nothing is pushed per quote. `stop()` ends every task it
started and lets groups in flight finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from core.breakers import BreakerChange
from core.clock import Clock, RealClock
from core.commands import Mt5Command
from core.compare import CompareEngine
from core.config import Mt5VenueConfig, QuantarbConfig
from core.hedge import HedgeGroup
from core.instruments import Instrument
from core.models import Decision, GroupState, Order, Quote, TradingState, Venue
from core.pipeline import OpportunityPipeline
from core.ports import ExecutionGateway
from core.risk import RearmRefused, RiskGate, StateChange
from engine.admin_token import AdminTokenError, engine_admin_token, listener_file_path
from engine.control import Action, ControlRefused, ControlResult, HealthStatus
from engine.events import EngineEvent, EventLog, Level
from engine.flatten import Flattener, ledger_cash_flows, ledger_positions
from engine.mt5_side import Mt5Side
from engine.operator_api import create_operator_app, operator_routes
from engine.orchestrator import HedgeOrchestrator
from engine.risk_monitor import RiskMonitor, VenueLink
from engine.settings import Secrets, mt5_secret_env_var
from engine.snapshot import (
    BreakerRow,
    CompensationRow,
    EdgeRow,
    FeedRow,
    GroupRow,
    LegRow,
    LimitRow,
    PairRow,
    QuoteRow,
    RiskEventRow,
    RuntimeSnapshot,
)
from engine.sources import build_feeds, build_world
from exchanges.paper import PaperBehaviour, PaperGateway
from feeds.base import WsFeed
from feeds.health import FeedHealth, FeedState
from ledger import queries
from ledger.errors import LedgerError, LedgerTooNewError, NotALedgerError
from ledger.events import RiskKind
from ledger.ledger import Ledger
from mt5_bridge.bridge import PositionState
from mt5_bridge.server import EmbeddedServer
from sim.market import SimTick

RECOVERING = "recovering"


class RuntimeFailure(Exception):
    """The engine cannot run with this configuration (exit code 3)."""


class LedgerRefused(Exception):
    """The ledger file is not a quantarb ledger or is newer than this code (exit code 2)."""


class Runtime:
    """Everything one quantarb process runs, built from one config."""

    def __init__(
        self,
        config: QuantarbConfig,
        *,
        is_demo: bool,
        clock: Clock | None = None,
        ledger_path: str | None = None,
        secrets: Secrets | None = None,
        mt5_in_process: bool = False,
        serve_operator_api: bool = True,
    ) -> None:
        """`mt5_in_process` keeps the simulated MT5 venue inside the process (no listener, no
        EA simulator, paper fills): what `drive()` needs for deterministic tests."""
        self.config = config
        self.is_demo = is_demo
        self._secrets = secrets
        # Without MT5 the listener serves only the operator API; deterministic tests skip it.
        self.serve_operator_api = serve_operator_api and not mt5_in_process
        self.operator_server: EmbeddedServer | None = None
        self.admin_token: str | None = None
        self.clock: Clock = clock or RealClock()
        # None: no ledger (deterministic tests drive the engine without one).
        self.ledger_path: str | None = ledger_path if ledger_path is not None else config.engine.ledger
        if self.ledger_path == "":
            self.ledger_path = None
        elif self.ledger_path is not None:
            self.ledger_path = os.path.expanduser(self.ledger_path)
        self.events = EventLog()
        self.pairs = config.build_pairs()
        self.instruments: dict[tuple[Venue, str], Instrument] = {
            inst.key: inst for pair in self.pairs for inst in pair.instruments
        }
        self.compare = CompareEngine(self.pairs)
        self.gate = RiskGate.from_config(self.clock, config.risk)
        self.pipeline = OpportunityPipeline(
            self.compare, config.strategy, config.risk, self.gate, self.clock
        )
        simulated = is_demo or config.demo.enabled
        if config.engine.execution == "live" and not is_demo:
            raise RuntimeFailure(
                "execution = 'live' needs the venue order gateways, which are not in this release; "
                "use execution = 'paper' (fills simulated against the live book)"
            )
        self.mode = "demo" if is_demo else "sim" if simulated else config.engine.execution
        self.gateways: dict[Venue, ExecutionGateway] = self._paper_gateways()
        self.mt5: Mt5Side | None = None
        if config.venues.mt5 is not None and not (mt5_in_process and simulated):
            self.mt5 = self._mt5_side(config.venues.mt5, secrets, simulated)
            if simulated:
                # The EA simulator executes on its simulated broker through the real handshake;
                # with a real EA, MT5 legs stay paper until live execution is enabled.
                self.gateways["mt5"] = self.mt5.gateway
        self.orchestrator = HedgeOrchestrator(
            self.gateways,
            self.instruments,
            self.gate,
            self.clock,
            self.events,
            leg_policy=config.strategy.leg_policy,
            on_closed=self._group_closed,
            group_deadline_ms=config.strategy.group_deadline_ms,
            order_timeout_ms=config.strategy.order_timeout_ms,
            max_slippage_bps=config.strategy.max_slippage_bps,
            max_retries=config.strategy.max_retries,
            touch=self._touch,
            asset_of={key: pair.name for pair in self.pairs for key in (i.key for i in pair.instruments)},
        )
        self.flattener = Flattener(
            self.orchestrator, self.gate, self.instruments, self.clock, self._touch,
            max_slippage_bps=config.strategy.max_slippage_bps,
            mt5_positions=self._mt5_positions if self.mt5 is not None else None,
            mt5_close=self.mt5.gateway.close_position if self.mt5 is not None else None,
        )
        self.risk_monitor = RiskMonitor(
            self.gate, self.compare, self.clock,
            venues={inst.venue for inst in self.instruments.values()},
            links=self._venue_links,
            balances=self._balances,
            hold_timeout_s=config.risk.hold_timeout_s,
        )
        self.risk_log: deque[RiskEventRow] = deque(maxlen=50)
        self._risk_seq = itertools.count(1)
        self._flatten_lock = asyncio.Lock()
        self.last_flatten: dict[str, Any] | None = None
        self._dust_journaled: dict[str, Decimal] = {}
        self._recovering = False
        if self.mt5 is not None:
            self.mt5.queue.fill_listeners.append(self._mt5_fill)
        on_mt5 = self.mt5.on_sim_tick if self.mt5 is not None else self._on_mt5_tick
        self.world = build_world(config, self.clock, is_demo=is_demo, on_mt5_tick=on_mt5)
        # The MT5 side is simulated in process until the MT5 bridge lands.
        self.mt5_health = FeedHealth(name="mt5-sim", venue="mt5", transport="in-process")
        self._drive_health: dict[Venue, FeedHealth] = {}
        self.feeds: list[WsFeed] = []
        self.ledger: Ledger | None = None
        self.recovered_groups = 0
        self._orphans: list[Order] = []
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._orchestrator_task: asyncio.Task[None] | None = None
        self._running = False

    # -- composition -----------------------------------------------------------------
    def _paper_gateways(self) -> dict[Venue, ExecutionGateway]:
        by_venue: dict[Venue, dict[str, Instrument]] = {}
        for (venue, symbol), inst in self.instruments.items():
            by_venue.setdefault(venue, {})[symbol] = inst
        paper = self.config.paper
        # One behaviour for all venues; each gateway seeds its own draws with (seed, venue).
        behaviour = PaperBehaviour(
            latency_ms=(paper.latency_ms_min, paper.latency_ms_max),
            slippage_bps=paper.slippage_bps,
            partial_prob=paper.partial_rate,
            partial_min_fraction=paper.partial_min_fraction,
            reject_prob=paper.reject_rate,
            timeout_prob=paper.timeout_rate,
            lost_ack_prob=paper.lost_ack_rate,
            seed=paper.seed,
        )
        return {
            venue: PaperGateway(
                venue, insts, self._touch, self.clock,
                fee_ccy="USD" if venue == "mt5" else "USDT", behaviour=behaviour,
            )
            for venue, insts in by_venue.items()
        }

    def _mt5_side(self, venue: Mt5VenueConfig, secrets: Secrets | None, simulated: bool) -> Mt5Side:
        terminal_secrets: dict[str, bytes] = {}
        for terminal in venue.terminals:
            secret = secrets.mt5_secret(terminal) if secrets is not None else None
            if secret is not None:
                terminal_secrets[terminal] = secret.get_secret_value().encode()
            elif simulated:
                terminal_secrets[terminal] = Mt5Side.demo_secret()
            else:
                raise RuntimeFailure(
                    f"MT5 terminal {terminal} has no secret: set {mt5_secret_env_var(terminal)} "
                    f"(or {mt5_secret_env_var(terminal)}_FILE)"
                )
        mt5_instruments = [i for i in self.instruments.values() if i.venue == "mt5"]
        try:
            return Mt5Side(
                venue,
                self.config.listener,
                terminal_secrets,
                mt5_instruments,
                self.clock,
                self.ingest,
                status=self._health_status,
                simulate_ea=simulated,
                seed=self.config.demo.seed,
                # The simulated broker outlives the engine, as a real one does.
                broker_state=Path(f"{self.ledger_path}.mt5-broker.json")
                if simulated and self.ledger_path else None,
            )
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None

    def _health_status(self) -> str:
        state = self.gate.state
        if state is TradingState.HALTED:
            return "halted"
        return "ok" if state is TradingState.ACTIVE else "degraded"

    def _touch(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        book = self.compare.book(venue, symbol)
        if book is None or not book.has_quote:
            return None
        return (book.raw_bid, book.raw_ask)

    # -- hot path ----------------------------------------------------------------------
    def ingest(self, quote: Quote) -> Decision | None:
        """One quote in: judged synchronously; an intent becomes a hedge group."""
        if self._stopping:
            return None  # shutting down: groups in flight settle, no new ones start
        decision = self.pipeline.on_quote(quote)
        if decision is None:
            return None
        self.orchestrator.record_decision(decision)  # edge percentiles and trigger rate per pair
        ledger = self.ledger
        if decision.intent is not None:
            group = self.orchestrator.submit(decision.intent)
            if ledger is not None:
                ledger.decision(decision, group_id=group.group_id)
        elif ledger is not None:
            ledger.decision(decision)  # sampled: the signal log stays bounded
        return decision

    def _group_closed(self, group: HedgeGroup) -> None:
        self.pipeline.release(group.pair)
        if group.state is GroupState.REJECTED:
            return
        changes = self.gate.breakers.on_group_closed(
            failed=group.state is GroupState.FAILED,
            compensated=group.state in (GroupState.REPAIRED, GroupState.UNWOUND),
            pnl=group.realized_pnl,
            now_ms=self.clock.time_ms(),
        )
        if changes:
            self._apply_breakers(changes)
        if self.ledger is not None:
            dust = self.orchestrator.compensation.dust.get(group.pair)
            if dust != self._dust_journaled.get(group.pair, Decimal(0)):
                self._dust_journaled[group.pair] = dust
                self.ledger.dust(group.pair, dust)

    def _mt5_fill(self, command: Mt5Command) -> None:
        """Every new MT5 deal: one for an order whose group already closed is caught now,
        not at the next restart."""
        work = self.orchestrator.late_fill(command.group_id, command.client_order_id)
        if work is None:
            return
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- breakers --------------------------------------------------------------------
    def _apply_breakers(self, changes: list[BreakerChange]) -> None:
        """Apply breaker trips/releases to the gate; each is a durable `breaker` risk event."""
        for change, state in self.gate.apply(changes):
            level: Level = "error" if change.tripped and change.effect == "halt" else "warn"
            self.events.emit(EngineEvent(self.clock.time_ms(), "breaker", f"breaker {change.reason}", level,
                                         {"breaker": change.name, "tripped": change.tripped}))
            ts_ms = state.ts_ms if state is not None else self.clock.time_ms()
            self._record_risk("breaker", StateChange(ts_ms, self.gate.state, change.reason))
        if self._recovering and self.gate.state is TradingState.ACTIVE:
            self.gate.pause(RECOVERING)  # a pause that ended must not end recovery
    def _venue_links(self) -> list[VenueLink]:
        links = [VenueLink(f.venue, f.health.state in (FeedState.LIVE, FeedState.REST)) for f in self.feeds]
        if self.mt5 is not None:
            links += [VenueLink("mt5", row.state == "live") for row in self.mt5.health_rows()]
        elif self.world is not None:
            links.append(VenueLink("mt5", self.mt5_health.state is FeedState.LIVE))
        if not self.feeds:
            links += [VenueLink(v, h.state is FeedState.LIVE) for v, h in self._drive_health.items()]
        return links

    def _balances(self) -> dict[str, Decimal]:
        """Free margin per venue: the EA's account report for MT5; for a paper venue, its
        paper account: `paper.balance` plus the cash flows of every fill in the ledger and the
        marked value of its positions, less the margin they hold at `paper.leverage`."""
        out: dict[str, Decimal] = {}
        paper = self.config.paper
        exposure = self.gate.exposure
        for venue, gateway in self.gateways.items():
            if isinstance(gateway, PaperGateway):
                held = sum((q * exposure.marks.get(a, Decimal(0))
                            for (v, a), q in exposure.positions.items() if v == venue), Decimal(0))
                equity = paper.balance + self.orchestrator.cash.get(venue, Decimal(0)) + held
                out[venue] = equity - exposure.venue_gross(venue) / paper.leverage
        if self.mt5 is not None:
            for terminal in self.mt5.terminals[:1]:
                account = self.mt5.bridge.account(terminal)
                if account is not None:
                    out["mt5"] = Decimal(repr(account.margin_free))
        return out

    async def _mt5_positions(self, after_ms: int | None) -> list[PositionState] | None:
        """The EA's positions with our magic; with `after_ms`, waits (bounded) for a report
        made after it. None when the terminal has never reported."""
        assert self.mt5 is not None
        terminal = self.mt5.terminals[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8.0
        while True:
            account = self.mt5.bridge.account(terminal)
            if account is not None and (after_ms is None or account.ts_ms >= after_ms):
                return list(account.positions)
            if loop.time() > deadline:
                return list(account.positions) if account is not None else None
            await asyncio.sleep(0.1)

    async def _risk_loop(self, interval_s: float = 1.0) -> None:
        """Feed the breakers once a second (venue health, balances, pause expiry, hold timeout)."""
        self.risk_monitor.restart()
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.risk_step()
            except Exception as exc:  # the breakers must keep running
                self.events.emit(EngineEvent(self.clock.time_ms(), "error", f"risk check failed: {exc!r}", "error"))

    def risk_step(self) -> None:
        exposure = self.gate.exposure
        for book in self.compare.books():  # marks for the exposure limits, once a second
            if book.has_quote:
                inst = book.inst
                exposure.mark(self.orchestrator.asset_of(inst.venue, inst.symbol),
                              Decimal(repr((book.bid + book.ask) / 2)))
        changes, held = self.risk_monitor.step(list(self.orchestrator.open.values()))
        for group in held:
            self.orchestrator.hold_expired(group)
        if changes:
            self._apply_breakers(changes)

    def _driven(self, venue: Venue, now_ns: int) -> None:
        health = self._drive_health.get(venue)
        if health is None:
            health = self._drive_health[venue] = FeedHealth(name=f"{venue}-sim", venue=venue, transport="in-process")
        _one_frame(health, now_ns)

    def _on_mt5_tick(self, tick: SimTick) -> None:
        now = self.clock.monotonic_ns()
        _one_frame(self.mt5_health, now)
        self.ingest(Quote(tick.venue, tick.symbol, tick.bid, tick.ask, tick.bid_size, tick.ask_size,
                          tick.ts_ms, now))

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._stopping = False
        if self.ledger_path is not None:
            await self._open_ledger(self.ledger_path)
        if self.world is not None:
            await self.world.start()
        try:
            await self._start_listener()
        except (OSError, RuntimeFailure) as exc:
            self._running = False
            if self.world is not None:
                await self.world.stop()
            if self.ledger is not None:
                await self.ledger.close()
                self.ledger = None
            if isinstance(exc, RuntimeFailure):
                raise
            raise RuntimeFailure(
                f"listener cannot bind {self.config.listener.host}:{self.config.listener.port}: "
                f"{exc.strerror or exc}"
            ) from None
        recovered = await self._recover()
        self.feeds = build_feeds(self.config, self.ingest, self.clock, self.world)
        self.events.emit(
            EngineEvent(
                self.clock.time_ms(),
                "start",
                f"engine started: mode={self.mode} pairs={','.join(p.name for p in self.pairs)} "
                f"feeds={','.join(f.name for f in self.feeds) or 'none'} "
                f"listener={self.listener_url or 'none'} "
                f"threshold={self.config.strategy.threshold_bps}bps",
            )
        )
        self._orchestrator_task = asyncio.create_task(self.orchestrator.run(), name="orchestrator")
        self._tasks.append(asyncio.create_task(self._risk_loop(), name="risk"))
        self._tasks += [asyncio.create_task(feed.run(), name=f"feed-{feed.name}") for feed in self.feeds]
        if recovered or self._orphans:
            self._tasks.append(asyncio.create_task(self._resume(recovered), name="recovery"))

    async def _start_listener(self) -> None:
        """One listener for the EA, the operator API and /metrics (DESIGN 5.3). The admin
        token is made here, not in __init__, so building a Runtime writes no file."""
        try:
            self.admin_token = engine_admin_token(
                self.ledger_path, self._secrets.admin_token if self._secrets is not None else None
            )
        except AdminTokenError as exc:
            raise RuntimeFailure(str(exc)) from None
        snapshot = partial(self.snapshot, groups=0, log=0)
        if self.mt5 is not None:
            await self.mt5.start(operator_routes(self, self.admin_token, snapshot))
        elif self.serve_operator_api:
            listener = self.config.listener
            self.operator_server = EmbeddedServer(
                create_operator_app(self, self.admin_token, snapshot, self.health_status),
                listener.host, listener.port, tls_cert=listener.tls_cert, tls_key=listener.tls_key,
            )
            await self.operator_server.start()
        self._write_listener_file()

    def _write_listener_file(self) -> None:
        """Where this engine listens, next to its ledger, for `quantarb kill` and friends."""
        url = self.listener_url
        if url is None or self.ledger_path is None:
            return
        path = listener_file_path(self.ledger_path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(url + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            self.events.emit(EngineEvent(self.clock.time_ms(), "error", f"cannot write {path}: {exc}", "warn"))

    def _remove_listener_file(self) -> None:
        if self.ledger_path is None:
            return
        with contextlib.suppress(OSError):
            listener_file_path(self.ledger_path).unlink()

    @property
    def listener_url(self) -> str | None:
        if self.mt5 is not None:
            return self.mt5.url
        return self.operator_server.url if self.operator_server is not None else None

    async def _open_ledger(self, path: str) -> None:
        try:
            self.ledger = await Ledger.open(path, clock=self.clock)
        except (NotALedgerError, LedgerTooNewError) as exc:
            self._running = False
            raise LedgerRefused(str(exc)) from None
        except (LedgerError, OSError) as exc:
            self._running = False
            raise RuntimeFailure(f"ledger {path}: {exc}") from None
        self.orchestrator.ledger = self.ledger
        if self.mt5 is not None:
            self.mt5.store.target = self.ledger

    async def _recover(self) -> list[HedgeGroup]:
        """Restore the trading state; returns the open groups to finish once quotes flow.

        Until they are finished no new intent is allowed: the gate is paused for recovery
        (a halted engine simply stays halted).
        """
        if self.ledger is None:
            return []
        rec = await self.ledger.recover()
        now_ms = self.clock.time_ms()
        self.gate.breakers.restore(rec.breakers, daily_pnl=await self._daily_pnl(), now_ms=now_ms)
        # Today's losses as the ledger has them: past the limit, the breaker trips now.
        tripped_now = self.gate.breakers.check_daily_loss(now_ms)
        for (venue, symbol), qty in (await self.ledger.read(ledger_positions)).items():
            inst = self.instruments.get((venue, symbol))  # type: ignore[arg-type]
            if inst is not None:
                self.gate.exposure.set_position(venue, self.orchestrator.asset_of(*inst.key), inst.to_base_qty(qty))
        for (venue, symbol), (flow, fees) in (await self.ledger.read(ledger_cash_flows)).items():
            inst = self.instruments.get((venue, symbol))  # type: ignore[arg-type]
            if inst is not None:  # the paper accounts carry on where the ledger left them
                cash = flow * inst.qty_per_unit * inst.price_scale - fees
                self.orchestrator.cash[inst.venue] = self.orchestrator.cash.get(inst.venue, Decimal(0)) + cash
        for pair, qty in rec.dust.items():
            self.orchestrator.compensation.dust.add(pair, qty)
            self._dust_journaled[pair] = qty
        if rec.halted:
            self.gate.kill(rec.trading_reason or "halted before restart")
            self.events.emit(EngineEvent(self.clock.time_ms(), "state",
                                         f"HALTED (restored): {self.gate.reason}", "warn"))
        else:
            pausing = [b for b in self.gate.breakers.blocking_rearm() if b.effect == "pause"]
            if pausing:  # the failure pause goes on, and still ends by itself
                self.gate.pause(f"breaker {pausing[0].name}: {pausing[0].detail}")
        for b in self.gate.breakers.tripped():
            self.events.emit(EngineEvent(now_ms, "breaker", f"breaker {b.name} still tripped (restored): {b.detail}",
                                         "warn"))
        if tripped_now:
            self._apply_breakers(tripped_now)
        self.recovered_groups = len(rec.open_groups)
        in_open_groups = {id(o) for g in rec.open_groups for o in g.orders}
        self._orphans = [o for o in rec.open_orders if id(o) not in in_open_groups]
        for order in self._orphans:  # a fill reported for one before it is resolved is caught
            self.orchestrator.loose_orders[order.client_order_id] = order
        if rec.open_groups or self._orphans:
            for group in rec.open_groups:
                self.pipeline.in_flight.add(group.pair)
                self.orchestrator.open[group.group_id] = group  # an EA fill for it is its own
            self._recovering = True
            self.gate.pause(RECOVERING)
        return rec.open_groups

    async def _resume(self, groups: list[HedgeGroup], quotes_timeout_s: float = 10.0) -> None:
        """Finish recovered groups: their venues are asked by client order id, and any
        compensation trades against live quotes (so wait, bounded, until both legs have one)."""
        needed = {(venue, inst.symbol) for g in groups for venue, inst in g.instruments.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + quotes_timeout_s
        while loop.time() < deadline:
            books = [self.compare.book(v, s) for v, s in needed]
            if all(b is not None and b.has_quote for b in books):
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(
            *(self.orchestrator.resume(g) for g in groups),
            *(self.orchestrator.resolve_orphan(o) for o in self._orphans),
        )
        self._recovering = False
        if self.gate.reason == RECOVERING:
            self.gate.resume("recovered")
        self.events.emit(EngineEvent(self.clock.time_ms(), "recover",
                                     f"recovery done: {len(groups)} group(s) finished"))

    async def stop(self) -> None:
        """Stop quote sources first, let groups in flight settle, then end every task."""
        if not self._running:
            return
        self._running = False
        self._stopping = True
        await self._cancel_tasks(self._tasks)
        self._tasks = []
        now_ns = self.clock.monotonic_ns()
        for feed in self.feeds:
            row = self._feed_row(feed.health, feed.dropped(), now_ns, feed.seq_resets())
            self.events.emit(EngineEvent(
                self.clock.time_ms(), "feed",
                f"feed {row.name} transport={row.transport} frames={row.frames} quotes={row.quotes} "
                f"reconnects={row.reconnects} rest_polls={row.rest_polls} dropped={row.dropped}",
                data={"feed": row.name, "frames": row.frames, "quotes": row.quotes,
                      "reconnects": row.reconnects, "dropped": row.dropped_by_reason},
            ))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        # Groups in flight settle while the venues (and the EA) are still there.
        await self.orchestrator.shutdown()
        if self._orchestrator_task is not None:
            self._orchestrator_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._orchestrator_task
            self._orchestrator_task = None
        self._remove_listener_file()
        if self.mt5 is not None:
            await self.mt5.stop()
        if self.operator_server is not None:
            await self.operator_server.stop()
            self.operator_server = None
        for pair_row in self._pair_rows():
            self.events.emit(_pair_event(self.clock.time_ms(), pair_row))
        if self.world is not None:
            await self.world.stop()
        if self.ledger is not None:
            await self.ledger.close()
            self.ledger = None
        self.events.emit(EngineEvent(self.clock.time_ms(), "stop", "engine stopped"))

    async def _cancel_tasks(self, tasks: list[asyncio.Task[None]], grace_s: float = 2.0) -> None:
        """Cancel and await the engine's tasks. A cancellation lost inside a library (asyncio's
        timeout and a socket read racing on Python 3.11) is repeated, so stop() never hangs."""
        for task in tasks:
            task.cancel()
        for attempt in range(3):
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            _done, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                             f"task {task.get_name()} ignored a cancel; cancelling again "
                                             f"({attempt + 1})", "warn"))
                task.cancel()
        for task in tasks:
            if not task.done():
                continue
            if not task.cancelled() and task.exception() is not None:
                # A dead task must not stop the rest of the shutdown.
                self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                             f"task {task.get_name()} had failed: {task.exception()!r}", "error"))

    async def drive(self, steps: int, dt_ms: float = 20.0) -> None:
        """Step a manually clocked simulated world deterministically (tests and snapshots).

        Quotes go straight from the synthetic market to `ingest()` (no sockets, no timing),
        and groups are executed inline, in order. Needs a clock with `advance(ms=...)`.
        """
        for _ in range(steps):
            self.step_market(dt_ms)
            await self.orchestrator.drain()

    def step_market(self, dt_ms: float = 20.0) -> None:
        """One step of the simulated market on the manual clock, without running the groups
        it creates (they stay in flight until `orchestrator.drain()`)."""
        advance = getattr(self.clock, "advance", None)
        if advance is None or self.world is None:
            raise TypeError("drive() needs a manual clock and a simulated world")
        advance(ms=dt_ms)
        now_ns = self.clock.monotonic_ns()
        for tick in self.world.market.advance(dt_ms / 1000.0):
            if tick.venue == "mt5":
                self._on_mt5_tick(tick)
            else:
                self._driven(tick.venue, now_ns)
                self.ingest(Quote(tick.venue, tick.symbol, tick.bid, tick.ask, tick.bid_size,
                                  tick.ask_size, tick.ts_ms, now_ns))

    # -- operator actions (OperatorControl) ---------------------------------------------
    def _record_risk(self, kind: RiskKind, change: StateChange) -> asyncio.Task[int] | None:
        """Journal a trading-state change with every breaker's state (durably, so a restart
        restores both) without delaying the caller; also kept for the risk screen."""
        self.risk_log.appendleft(RiskEventRow(f"r{next(self._risk_seq)}", change.ts_ms, kind, change.reason,
                                              str(change.state)))
        if self.ledger is None:
            return None
        task = asyncio.get_running_loop().create_task(
            self.ledger.risk_event(kind, change, breakers=self.gate.breakers.to_json())
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._journal_failed)
        return task

    def _journal_failed(self, task: asyncio.Task[int]) -> None:
        """A risk event that did not reach the ledger: said loudly (a restart would not know)."""
        if task.cancelled() or task.exception() is None:
            return
        self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                     f"risk event NOT journaled: {task.exception()!r}", "error"))

    async def _journal_state(self, kind: RiskKind, change: StateChange, text: str, level: Level) -> None:
        """An operator's state change: on the log now, durable in the ledger before we answer."""
        self.events.emit(EngineEvent(change.ts_ms, "state", text, level))
        task = self._record_risk(kind, change)
        if task is not None:
            await task

    def _result(self, action: Action, changed: bool, message: str, **detail: Any) -> ControlResult:
        return ControlResult(action, str(self.gate.state), self.gate.reason, changed, message, dict(detail))

    def kill_now(self, reason: str) -> StateChange:
        """The synchronous half of a kill: the gate refuses the very next decision."""
        change = self.gate.kill(reason)
        self.events.emit(EngineEvent(change.ts_ms, "state", f"HALTED: {reason}", "warn"))
        return change

    async def kill(self, reason: str = "operator kill", *, on_cancels_sent: Callable[[int], None] | None = None
                   ) -> ControlResult:
        """Halt now; then cancel the entry orders of groups with nothing filled (MT5 commands
        withdrawn). Groups with a filled leg finish their hedge or compensation."""
        reason = reason.strip() or "operator kill"
        change = self.kill_now(reason)
        task = self._record_risk("kill", change)
        cancelled = await self.orchestrator.cancel_entries(on_cancels_sent)
        if task is not None:
            await task
        return self._result("kill", True, f"halted: {reason}",
                            cancelled=[o.client_order_id for o in cancelled])

    async def flatten(self, reason: str = "operator flatten") -> ControlResult:
        """Halt, cancel unfilled entries, let groups in flight settle, then close the net
        exposure on every venue concurrently and report any residual. Ends halted."""
        reason = reason.strip() or "operator flatten"
        if not self._running:
            raise ControlRefused("the engine is not running")
        async with self._flatten_lock:
            change = self.gate.kill(f"flatten: {reason}")
            self.orchestrator.flattening = True  # from now on only flatten orders leave
            self.events.emit(EngineEvent(change.ts_ms, "state", f"HALTED: flatten: {reason}", "warn"))
            start = self._record_risk("flatten", change)
            await self.orchestrator.cancel_entries()
            await self.orchestrator.settle_open(timeout_s=2 * self.config.strategy.group_deadline_ms / 1000 + 5)
            still_open = sorted(self.orchestrator.open)
            report = await self.flattener.run()
            report["groups_still_open"] = still_open
            if self.gate.state is not TradingState.HALTED:  # nothing may have re-armed it meanwhile
                self.gate.kill(f"flatten: {reason}")
            self.last_flatten = report
            result = "flat" if report["flat"] else "residual " + ", ".join(
                f"{r['venue']}:{r['asset']} {r['after']}" for r in report["residual"]
            )
            self.events.emit(EngineEvent(self.clock.time_ms(), "flatten", f"flatten done: {result}",
                                         "info" if report["flat"] else "error"))
            done = StateChange(self.clock.time_ms(), self.gate.state, f"flatten done: {result}"[:500])
            end = self._record_risk("flatten", done)
            for task in (start, end):
                if task is not None:
                    await task
            return self._result("flatten", True, f"flatten done: {result}", **report)

    def _refuse_during_flatten(self, action: str) -> None:
        if self._flatten_lock.locked():
            raise ControlRefused(f"{action} refused: a flatten is running (it ends halted)")

    async def rearm(self, reason: str) -> ControlResult:
        if not reason.strip():
            raise ControlRefused("rearm needs a reason")
        self._refuse_during_flatten("rearm")
        try:
            change = self.gate.rearm(reason.strip())
        except RearmRefused as exc:
            for released in self.gate.last_released:
                self._record_risk("breaker", StateChange(self.clock.time_ms(), self.gate.state, released.reason))
            raise ControlRefused(str(exc)) from None
        for released in self.gate.last_released:
            self._record_risk("breaker", StateChange(change.ts_ms, self.gate.state, released.reason))
        self.orchestrator.flattening = False
        await self._journal_state("rearm", change, f"ACTIVE (rearmed): {reason}", "info")
        return self._result("rearm", True, f"active: {reason}")

    async def pause(self, reason: str = "operator pause") -> ControlResult:
        reason = reason.strip() or "operator pause"
        self._refuse_during_flatten("pause")
        change = self.gate.pause(reason)
        if change is None:
            return self._result("pause", False, f"not paused: trading is {self.gate.state}")
        await self._journal_state("pause", change, f"PAUSED: {reason}", "warn")
        return self._result("pause", True, f"paused: {reason}")

    async def resume(self, reason: str = "operator resume") -> ControlResult:
        reason = reason.strip() or "operator resume"
        self._refuse_during_flatten("resume")
        change = self.gate.resume(reason)
        if change is None:
            why = ("a breaker holds the pause" if self.gate.state is TradingState.PAUSED
                   else f"trading is {self.gate.state}")
            return self._result("resume", False, f"not resumed: {why}")
        await self._journal_state("resume", change, f"ACTIVE (resumed): {reason}", "info")
        return self._result("resume", True, f"active: {reason}")

    def positions(self) -> dict[str, dict[str, str]]:
        """Net position per venue and asset (base units) as the RiskGate's book holds it."""
        out: dict[str, dict[str, str]] = {}
        for (venue, asset), qty in sorted(self.gate.exposure.positions.items()):
            out.setdefault(venue, {})[asset] = str(qty)
        return out

    def health_status(self) -> HealthStatus:
        state = self.gate.state
        if state is TradingState.HALTED:
            return "halted"
        if state is not TradingState.ACTIVE or self.gate.breakers.blocked_venues():
            return "degraded"  # paused/reducing, or a venue blocked (stale, down, low balance)
        return "ok"

    def status(self) -> dict[str, Any]:
        snap = self.snapshot(groups=20, log=0)
        return {
            "trading_state": snap.trading_state,
            "reason": snap.state_reason,
            "mode": snap.mode,
            "health": self.health_status(),
            "ts_ms": snap.ts_ms,
            "open_groups": snap.open_groups,
            "groups_by_state": snap.groups_by_state,
            "realized_pnl": snap.realized_pnl,
            "daily_pnl": snap.daily_pnl,
            "quotes": snap.quotes_total,
            "intents": snap.intents_total,
            "limits": [asdict(r) for r in snap.limits],
            "breakers": [asdict(r) for r in snap.breakers],
            "blocked_venues": list(snap.blocked_venues),
            "positions": self.positions(),
            "last_flatten": self.last_flatten,
            "feeds": [
                {"name": f.name, "venue": f.venue, "state": f.state, "last_frame_age_ms": f.last_frame_age_ms}
                for f in snap.feeds
            ],
        }

    async def group_detail(self, group_id: str) -> dict[str, Any] | None:
        """One group's story from the ledger (`ledger show`); None without a ledger or group."""
        if self.ledger is None:
            return None
        await self.ledger.flush()
        return await self.ledger.read(queries.show, group_id)

    async def history(
        self, *, pair: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Groups from the ledger, newest first (the history screen); [] without a ledger."""
        if self.ledger is None:
            return []
        await self.ledger.flush()
        return await self.ledger.read(queries.groups, pair=pair, state=state, limit=limit)

    # -- views -----------------------------------------------------------------------
    def snapshot(self, *, groups: int = 50, log: int = 200) -> RuntimeSnapshot:
        now_ns = self.clock.monotonic_ns()
        quotes = []
        for pair in self.pairs:
            for inst in pair.instruments:
                book = self.compare.book(inst.venue, inst.symbol)
                assert book is not None
                quotes.append(
                    QuoteRow(
                        key=f"{inst.venue}:{inst.symbol}",
                        pair=pair.name,
                        venue=inst.venue,
                        symbol=inst.symbol,
                        bid=book.raw_bid,
                        ask=book.raw_ask,
                        bid_qty=book.bid_qty,
                        ask_qty=book.ask_qty,
                        age_ms=(now_ns - book.recv_ns) / 1e6 if book.has_quote else None,
                        count=book.quotes,
                    )
                )
        edges = [
            EdgeRow(
                key=f"{e.pair}:{e.buy.venue}>{e.sell.venue}",
                pair=e.pair,
                buy_venue=e.buy.venue,
                sell_venue=e.sell.venue,
                buy_price=e.buy.ask,
                sell_price=e.sell.bid,
                edge_bps=e.edge_bps if e.valid else None,
                last_reason=e.last_reason,
            )
            for e in self.compare.edges()
        ]
        feeds = [self._feed_row(f.health, f.dropped(), now_ns, f.seq_resets()) for f in self.feeds]
        if not self.feeds:  # drive(): the simulated venues' quotes come in process
            feeds += [self._feed_row(h, None, now_ns) for _, h in sorted(self._drive_health.items())]
        if self.mt5 is not None:
            feeds[:0] = self.mt5.health_rows()
        elif self.world is not None:
            feeds.insert(0, self._feed_row(self.mt5_health, None, now_ns))
        orch = self.orchestrator
        recent: list[HedgeGroup] = list(orch.open.values())[::-1] + list(orch.closed)
        group_rows = tuple(_group_row(g) for g in recent[:groups])
        by_state: dict[str, int] = dict(orch.closed_by_state)
        for g in orch.open.values():
            by_state[g.state] = by_state.get(g.state, 0) + 1
        return RuntimeSnapshot(
            ts_ms=self.clock.time_ms(),
            mode=self.mode,
            trading_state=str(self.gate.state),
            state_reason=self.gate.reason,
            threshold_bps=self.config.strategy.threshold_bps,
            quotes_total=self.pipeline.quotes,
            decisions_total=self.pipeline.decisions,
            intents_total=self.pipeline.intents,
            open_groups=len(orch.open),
            groups_by_state=by_state,
            realized_pnl=_money(orch.realized_pnl),
            quotes=tuple(quotes),
            feeds=tuple(feeds),
            edges=tuple(edges),
            groups=group_rows,
            log=self.events.recent(log),
            log_total=self.events.total,
            pairs=self._pair_rows(),
            compensation=_compensation_rows(recent, 30),
            daily_pnl=_money(self.gate.breakers.daily_pnl),
            limits=self._limit_rows(len(orch.open)),
            breakers=tuple(
                BreakerRow(key=b.name, name=b.name, state="tripped" if b.tripped else "ok", effect=b.effect,
                           detail=b.detail, since_ms=b.since_ms, until_ms=b.until_ms)
                for b in sorted(self.gate.breakers.all.values(), key=lambda b: (not b.tripped, b.name))
            ),
            risk_events=tuple(self.risk_log),
            blocked_venues=tuple(sorted(self.gate.breakers.blocked_venues())),
        )

    def _limit_rows(self, open_groups: int) -> tuple[LimitRow, ...]:
        rows = []
        for rule, scope, limit, used in self.gate.limit_use(open_groups):
            rows.append(LimitRow(
                key=f"{rule}:{scope}", rule=rule, scope=scope, limit=_num(limit), used=_num(used),
                utilization=float(used / limit) if limit > 0 else None,
            ))
        return tuple(rows)

    async def _daily_pnl(self) -> Decimal:
        """Realized PnL of groups closed today (UTC), from the ledger: the daily loss breaker
        keeps counting across a restart."""
        if self.ledger is None:
            return Decimal(0)
        return await self.ledger.read(queries.realized_pnl, since_ms=queries.day_start_ms(self.clock.time_ms()))

    def _pair_rows(self) -> tuple[PairRow, ...]:
        rows = []
        for name, s in sorted(self.orchestrator.stats().items()):
            edges = s.edge_percentiles() or {}
            rows.append(PairRow(
                key=name,
                groups=s.groups,
                hit_rate=s.hit_rate,
                total_pnl=_money(s.total_pnl),
                mean_slippage_bps=s.mean_slippage_bps,
                trigger_rate=s.trigger_rate,
                edge_p50=edges.get("p50"),
                edge_p75=edges.get("p75"),
                edge_p90=edges.get("p90"),
            ))
        return tuple(rows)

    @staticmethod
    def _feed_row(
        health: FeedHealth, dropped: Mapping[str, int] | None, now_ns: int, seq_resets: int = 0
    ) -> FeedRow:
        drops = dict(dropped) if dropped is not None else {}
        return FeedRow(
            key=health.name,
            name=health.name,
            venue=health.venue,
            transport=health.transport,
            state=str(health.state),
            last_frame_age_ms=health.frame_age_ms(now_ns),
            frames_per_s=health.frames_per_s(now_ns),
            frames=health.frames,
            quotes=health.quotes,
            reconnects=health.reconnects,
            rest_polls=health.rest_polls,
            dropped=sum(drops.values()),
            dropped_by_reason=drops,
            seq_resets=seq_resets,
            last_error=health.last_error,
        )

    def summary(self) -> Mapping[str, object]:
        snap = self.snapshot(groups=0, log=0)
        return {
            "quotes": snap.quotes_total,
            "decisions": snap.decisions_total,
            "intents": snap.intents_total,
            "groups": snap.groups_by_state,
            "realized_pnl": snap.realized_pnl,
            "trading_state": snap.trading_state,
        }


def _one_frame(health: FeedHealth, now_ns: int) -> None:
    """An in-process quote source delivered one quote (drive() and the in-process MT5)."""
    health.state = FeedState.LIVE
    health.frames += 1
    health.quotes += 1
    health.last_frame_ns = now_ns


def _pair_event(ts_ms: int, row: PairRow) -> EngineEvent:
    """One line per pair at stop: execution aggregates and monitor statistics."""
    slip = "-" if row.mean_slippage_bps is None else f"{row.mean_slippage_bps:.1f}"
    edge = "-" if row.edge_p50 is None else f"{row.edge_p50:.1f}/{row.edge_p75 or 0:.1f}/{row.edge_p90 or 0:.1f}"
    return EngineEvent(
        ts_ms,
        "pair",
        f"pair {row.key} groups={row.groups} hit_rate={row.hit_rate:.2f} pnl={row.total_pnl} "
        f"slippage_bps={slip} edge_p50/p75/p90={edge} trigger_rate={row.trigger_rate:.4f}",
        data={"pair": row.key, "groups": row.groups, "hit_rate": row.hit_rate, "pnl": row.total_pnl,
              "trigger_rate": row.trigger_rate},
    )


def _num(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}" if value == value.to_integral_value() or abs(value) >= 1 else str(value)


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def _group_row(g: HedgeGroup) -> GroupRow:
    return GroupRow(
        key=g.group_id,
        pair=g.pair,
        buy_venue=g.buy_venue,
        sell_venue=g.sell_venue,
        state=str(g.state),
        base_qty=str(g.intent.base_qty),
        expected_edge_bps=g.intent.expected_edge_bps,
        realized_pnl=_money(g.realized_pnl) if g.terminal else "",
        opened_ms=g.opened_ms,
        closed_ms=g.closed_ms,
        legs=tuple(
            LegRow(
                client_order_id=o.client_order_id,
                venue=o.venue,
                side=o.side,
                purpose=str(o.purpose),
                qty=str(o.qty),
                filled=str(o.filled_qty),
                state=str(o.state),
            )
            for o in g.orders
        ),
    )


def _compensation_rows(groups: list[HedgeGroup], limit: int) -> tuple[CompensationRow, ...]:
    """The most recent compensation actions over the given groups, newest first."""
    rows = [
        CompensationRow(
            key=a.action_id,
            group_id=g.group_id,
            pair=g.pair,
            kind=str(a.kind),
            reason=a.reason,
            outcome=a.outcome,
            ts_ms=a.created_ms,
            failed=a.kind == "escalate" or a.outcome in ("rejected", "expired", "unknown", "failed"),
        )
        for g in groups
        for a in g.actions
    ]
    rows.sort(key=lambda r: r.ts_ms, reverse=True)
    return tuple(rows[:limit])
