"""Runtime: the composition root. Builds the engine from a config, starts it, stops it.

Data flow (docs/architecture.md): quote sources call `ingest()` synchronously; the pipeline
judges each quote; an intent is handed to the HedgeOrchestrator, which runs the group as its
own task. Everything else has its own module and is reached through the runtime's parts:
`view` (what every face shows), `control` (what an operator may do), `recovery` (a restart
carrying on from the ledger), `risk_loop` (the breakers once a second) and, in deterministic
demo runs, `driver`. `stop()` ends every task it started and lets groups in flight settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.attribution import GroupMoney, Net
from core.clock import Clock, RealClock
from core.commands import Mt5Command
from core.compare import CompareEngine
from core.config import Mt5VenueConfig, QuantarbConfig, listener_warning
from core.currency import RateInForce
from core.hedge import CLOSABLE, HedgeGroup
from core.hold import HoldLimits
from core.instruments import Instrument
from core.models import Decision, Fill, GroupState, Order, Quote, TradingState, Venue
from core.orders import is_terminal
from core.pipeline import OpportunityPipeline
from core.ports import ExecutionGateway
from core.risk import RiskGate
from engine import demo
from engine.accounts import Accounts
from engine.admin_token import AdminTokenError, engine_admin_token
from engine.alerts import Alerts
from engine.equity import RunningEquity
from engine.errors import LedgerRefused, RuntimeFailure
from engine.events import EngineEvent, EventLog
from engine.feed_log import FeedErrorLog
from engine.flatten import Flattener, zeroed_assets
from engine.funding import Booked, FundingAccrual, Perpetual
from engine.group_close import GroupCloser
from engine.journal import GuardedJournal
from engine.listener_file import remove_listener_file, write_listener_file
from engine.live_recording import LiveRecording
from engine.live_venues import LiveVenues, MissingCredentials
from engine.memory_trim import MemoryTrim, tune_malloc
from engine.mt5_late import Mt5LateDeals
from engine.mt5_side import MissingTerminalSecret, Mt5Side, listener_server
from engine.mt5_side import terminal_secrets as mt5_terminal_secrets
from engine.operator import Operator
from engine.operator_api import create_operator_app, operator_routes
from engine.operator_audit import OperatorAudit
from engine.orchestrator import HedgeOrchestrator
from engine.orphans import OrphanCleaner
from engine.rates import RateFeed, RateLog
from engine.reconcile import RECONCILING, Reconciler
from engine.recovery import Recovery, Restored
from engine.risk_journal import RiskJournal
from engine.risk_monitor import RiskLoop, RiskMonitor
from engine.settings import Secrets
from engine.snapshot import BalanceRow
from engine.sources import build_feeds, perpetual_sources, rate_sources
from engine.steering import Steering
from engine.tasks import cancel_and_wait
from engine.venue_health import VenueHealth
from engine.view_model import ViewModel, pair_event
from exchanges.paper import PaperBehaviour, PaperGateway
from feeds.base import WsFeed
from ledger import money, queries
from ledger.errors import LedgerError
from ledger.group_read import load_group
from ledger.ledger import Ledger
from mt5_bridge.server import EmbeddedServer

__all__ = ["LedgerRefused", "Runtime", "RuntimeFailure"]

_CLOSABLE_STATES = frozenset(s.value for s in CLOSABLE)  # ledger rows a close may take to `closed`


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
        warnings: Sequence[str] | None = None,
    ) -> None:
        """`mt5_in_process` keeps the simulated MT5 venue inside the process (no listener, no
        EA simulator, paper fills): what `driver` needs for deterministic tests. `warnings`:
        what the loader found (`LoadedConfig.warnings`), logged at start; None: those the
        config alone shows (a listener off loopback without TLS)."""
        self.config = config
        if warnings is None:
            listener = listener_warning(config.listener)
            warnings = () if listener is None else (f"listener.host: {listener}",)
        self._warnings = tuple(warnings)
        self.is_demo = is_demo
        self._secrets = secrets
        # Without MT5 the listener serves only the operator API; deterministic tests skip it.
        self._serve_operator_api = serve_operator_api and not mt5_in_process
        self._operator_server: EmbeddedServer | None = None
        self.admin_token: str | None = None
        self.clock: Clock = clock or RealClock()
        # None: no ledger (deterministic tests drive the engine without one).
        path = ledger_path if ledger_path is not None else config.engine.ledger
        self.ledger_path: str | None = os.path.expanduser(path) if path else None
        self.ledger: Ledger | None = None
        self.journal: GuardedJournal | None = None  # what execution writes through (never raises)
        self.ledger_failures = 0  # times the ledger stopped writing this run (headless exits 3)
        self.events = EventLog()
        self.memory_trim = MemoryTrim(config.engine.memory_trim_s)  # run from `start` (issue 19)
        # glibc's arenas and mmap threshold, before `start` makes the ledger's threads (issue 19)
        self.malloc_tuned = tune_malloc() if config.engine.malloc_tuning else {}
        self.pairs = config.build_pairs()
        self.instruments: dict[tuple[Venue, str], Instrument] = {
            inst.key: inst for pair in self.pairs for inst in pair.instruments
        }
        self.compare = CompareEngine(self.pairs)
        self.gate = RiskGate.from_config(self.clock, config.risk)
        self.pipeline = OpportunityPipeline(self.compare, config.strategy, config.risk, self.gate, self.clock,
                                            disabled_pairs=frozenset(p.name for p in config.pairs if not p.enabled))
        simulated = demo.is_simulated(config, is_demo=is_demo)
        live = config.engine.execution == "live" and not simulated
        self.mode = "demo" if is_demo else "sim" if simulated else config.engine.execution
        self.gateways: dict[Venue, ExecutionGateway] = self._paper_gateways()
        # Live: OKX and Binance legs through the venues' gateways (started in `start`). Paper:
        # every leg is filled by simulation and nothing real is ever sent, flatten included.
        self.live: LiveVenues | None = None
        if live:
            try:
                self.live = LiveVenues(config, secrets or Secrets(), self.clock, self.instruments.values())
            except MissingCredentials:
                raise
            except ValueError as exc:  # e.g. a key with whitespace: named, never shown
                raise RuntimeFailure(f"live venues: {exc}") from None
            self.gateways.update(self.live.gateways)
        self.demo_ea: demo.DemoEa | None = None
        self.mt5: Mt5Side | None = None
        mt5_real_legs = False
        if config.venues.mt5 is not None and not (mt5_in_process and simulated):
            self.mt5 = self._mt5_side(config.venues.mt5, secrets, simulated)
            if simulated or live:
                # MT5 legs go to the EA: the simulated one on its simulated broker, or the
                # real EA in live mode. In paper mode a real EA only streams quotes.
                self.gateways["mt5"] = self.mt5.gateway
                mt5_real_legs = True
        self.equity = RunningEquity(self.instruments.values(), config.money, self._touch, self._mt5_swaps,
                                    now_ms=self.clock.time_ms)
        self.orchestrator = HedgeOrchestrator(
            self.gateways,
            self.instruments,
            self.gate,
            self.clock,
            self.events,
            leg_policy=config.strategy.leg_policy,
            on_closed=self._group_closed,
            on_fill=self._money_fill,
            group_deadline_ms=config.strategy.group_deadline_ms,
            order_timeout_ms=config.strategy.order_timeout_ms,
            max_slippage_bps=config.strategy.max_slippage_bps,
            max_retries=config.strategy.max_retries,
            touch=self._touch,
            asset_of={key: pair.name for pair in self.pairs for key in (i.key for i in pair.instruments)},
        )
        self.orchestrator.after_group_closed(self._settle)
        self._closing_by_hand: set[str] = set()  # groups a close by hand is working on (no net meanwhile)
        self.risk = RiskJournal(self.gate, self.clock, self.events)
        mt5 = self.mt5
        flattener = Flattener(
            self.orchestrator, self.gate, self.instruments, self.clock, self._touch,
            max_slippage_bps=config.strategy.max_slippage_bps,
            mt5_positions=mt5.positions_after if mt5 is not None and mt5_real_legs else None,
            mt5_close=mt5.gateway.close_position if mt5 is not None and mt5_real_legs else None,
            on_done=self._after_flatten,
        )
        audit = OperatorAudit(lambda: self.journal, self.events, self.clock,
                              ledger_configured=self.ledger_path is not None)
        closer = GroupCloser(self.orchestrator, self.gate, self.clock, self._touch, audit, load=self._load_group,
                             max_slippage_bps=config.strategy.max_slippage_bps,
                             quote_age_ms=self._quote_age_ms, max_quote_age_ms=config.strategy.max_quote_age_ms,
                             known=self._ledger_owns, held=self._group_held, closing=self._group_closing)
        orphans = OrphanCleaner(lambda: self.reconciler, self._ledger_owns, audit, self.clock)
        self.control = Operator(
            self.gate, self.orchestrator, flattener, self.risk, self.clock, self.events,
            settle_timeout_s=2 * config.strategy.group_deadline_ms / 1000 + 5,
            running=lambda: self._running,
            ledger_error=lambda: self.journal.error if self.journal is not None else None,
            close_group=closer.close, cancel_orphans=orphans.cancel,
        )
        # Runtime settings (`quantarb set`, /api/set, the settings screen): journaled, then applied.
        self.steering = Steering(config, self.pipeline, self.gate, self.risk, self.clock, self.events,
                                 journal=lambda: self.journal, ledger_configured=self.ledger_path is not None)
        self.recovery = Recovery(self.gate, self.orchestrator, self.pipeline, self.compare, self.instruments,
                                 self.risk, self.clock, self.events, day_equity=self.equity.day_change)
        self._dust_journaled: dict[str, Decimal] = {}
        # A deal on the command of an order forgotten from memory reaches the ledger's fills.
        self.mt5_late = (Mt5LateDeals(self.orchestrator, mt5.gateway.fills, self.events, self.clock,
                                      ledger=lambda: self.ledger, journal=lambda: self.journal,
                                      reconciler=lambda: self.reconciler)
                         if mt5 is not None else None)
        if mt5 is not None:
            mt5.queue.fill_listeners.append(self._mt5_fill)
        self.health = VenueHealth(mt5_rows=mt5.health_rows if mt5 is not None else None,
                                  mt5_in_process=simulated and mt5 is None)
        on_mt5 = (self.demo_ea.on_tick if self.demo_ea is not None
                  else demo.in_process_mt5(self.clock, self.ingest, self.health.delivered))
        # The real-time demo trades through the live gateways against its simulated venues.
        self._trading_accounts = (demo.trading_accounts()
                                  if simulated and not mt5_in_process and demo.trades_through_gateways(config.paper)
                                  else None)
        self.world = demo.build_world(config, self.clock, is_demo=is_demo, on_mt5_tick=on_mt5,
                                      accounts=self._trading_accounts)
        self.accounts = Accounts(self.gateways, config.paper, self.gate,
                                 lambda: self.equity.venue_equity(self.clock.time_ms()), mt5)
        self.risk_monitor = RiskMonitor(
            self.gate, self.compare, self.clock,
            venues={inst.venue for inst in self.instruments.values()},
            links=self.health.links,
            balances=self._free_margin,
            hold_timeout_s=config.risk.hold_timeout_s,
            day_equity=self.equity.day_change,
            holdings=self.equity.holdings,
            hold=HoldLimits(config.risk.hold_alert_s, config.risk.hold_close_s, config.risk.hold_action),
        )
        self.risk_loop = RiskLoop(self.risk_monitor, self.orchestrator, self.risk, self.events,
                                  close_asset=self.control.close_asset_soon)
        self.view = ViewModel(
            config, self.mode, self.pairs, self.clock,
            pipeline=self.pipeline, compare=self.compare, gate=self.gate, orchestrator=self.orchestrator,
            events=self.events, risk=self.risk, health=self.health, ledger=lambda: self.ledger,
            journal=lambda: self.journal,
            last_flatten=lambda: self.control.last_flatten,
            reconcile=lambda: self.reconciler.status() if self.reconciler is not None else None,
            equity=self.equity.equity,
            holdings=self.equity.holdings,
            day_equity=self.equity.day_change,
            balances=self._balance_rows,
        )
        self.reconciler: Reconciler | None = None
        if self.live is not None:
            self.reconciler = self._new_reconciler(self.live)
        self.alerts = Alerts(config.alerts, self.events, self.clock, mode=self.mode,
                             daily_pnl=lambda: (self.gate.breakers.day, self.gate.breakers.daily_pnl))
        self.feeds: list[WsFeed] = []
        self._feed_log = FeedErrorLog(self.events, self.clock)  # why a feed fails, in the log
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.funding: FundingAccrual | None = None  # perpetual funding, once the feeds are known
        self.rates: RateFeed | None = None  # `[money] rate_books`, once the venues' URLs are known
        self._orchestrator_task: asyncio.Task[None] | None = None
        self._running = False
        self._driver: demo.DemoDriver | None = None
        self._recording: LiveRecording | None = None

    def record_to(self, recording: LiveRecording) -> None:
        """Record this run (`quantarb headless --record`): frames, MT5 ticks, our orders, fills
        and events. Call before `start`; the caller closes the recorder after `stop`."""
        self._recording = recording
        self.orchestrator.tap_execution(recording.on_order, recording.on_fill)
        recording.attach_events(self.events)
        if self.mt5 is not None:
            recording.attach_mt5(self.mt5.bridge)

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
        binance = self.config.venues.binance
        spot: set[Venue] = {"binance"} if binance is not None and binance.market == "spot" else set()
        return {
            venue: PaperGateway(
                venue, insts, self._touch, self.clock,
                fee_ccy="USD" if venue == "mt5" else "USDT", behaviour=behaviour,
                spot_inventory=dict(paper.spot_inventory) if venue in spot else None,
            )
            for venue, insts in by_venue.items()
        }

    def _mt5_side(self, venue: Mt5VenueConfig, secrets: Secrets | None, simulated: bool) -> Mt5Side:
        try:
            terminal_secrets = mt5_terminal_secrets(venue, secrets, simulated)
        except MissingTerminalSecret as exc:
            raise RuntimeFailure(str(exc)) from None
        mt5_instruments = [i for i in self.instruments.values() if i.venue == "mt5"]
        if simulated and venue.terminals:
            first = venue.terminals[0]
            self.demo_ea = demo.DemoEa(
                first, terminal_secrets[first], mt5_instruments, self.clock,
                seed=self.config.demo.seed, magic=venue.magic,
                state_file=Path(f"{self.ledger_path}.mt5-broker.json") if self.ledger_path else None,
            )
        try:
            return Mt5Side(
                venue,
                self.config.listener,
                terminal_secrets,
                mt5_instruments,
                self.clock,
                self.ingest,
                status=self._mt5_health_status,
                terminal=self.demo_ea,
            )
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None

    def _new_reconciler(self, live: LiveVenues) -> Reconciler:
        return Reconciler(
            live.accounts(), self.instruments.values(), self.gate, self.risk, self.orchestrator,
            self.events, self.clock, ledger=lambda: self.ledger, journal=lambda: self.journal,
            mt5_accounts=self._mt5_accounts if self.mt5 is not None else None,
            interval_s=self.config.engine.reconcile_interval_s,
        )

    async def _load_group(self, group_id: str) -> HedgeGroup | None:
        """A group from the ledger (one closed before the recent ones kept in memory)."""
        return await self.ledger.read(load_group, group_id) if self.ledger is not None else None

    async def _ledger_owns(self, client_order_ids: list[str]) -> set[str]:
        """Which of these orders the ledger has (orphan cleanup never cancels those); what the
        journal holds is committed first, so an order written ahead a moment ago counts."""
        if self.ledger is None:
            return set()
        if self.journal is not None:
            await self.journal.flush()
        return set(await self.ledger.read(queries.known_orders, client_order_ids))

    def _free_margin(self) -> dict[str, Decimal]:
        """Paper venues' paper accounts and MT5's EA report; live venues as reconciliation last
        read them."""
        out = self.accounts.free_margin()
        if self.reconciler is not None:
            out.update(self.reconciler.free_margin())
        return out

    def _balance_rows(self) -> list[BalanceRow]:
        """Each venue's account for the risk screen: paper accounts and the MT5 terminal's
        report (`Accounts.balances`), and live venues' free margin as reconciliation read it."""
        def text(d: Decimal | None) -> str:
            return "" if d is None else format(d, "f")

        rows = [BalanceRow(b.venue, b.venue, b.source, text(b.balance), text(b.equity), text(b.margin), text(b.free))
                for b in self.accounts.balances()]
        if self.reconciler is not None:
            seen = {r.venue for r in rows}
            rows += [BalanceRow(v, v, "venue", "", "", "", text(free))
                     for v, free in sorted(self.reconciler.free_margin().items()) if v not in seen]
        seen = {r.venue for r in rows}
        rows += [BalanceRow(v, v, "not reported", "", "", "", "")
                 for v in sorted({i.venue for i in self.instruments.values()}) if v not in seen]
        return sorted(rows, key=lambda r: r.venue)

    def _mt5_accounts(self) -> dict[str, Any]:
        """Every configured terminal's last account report (None: never reported)."""
        mt5 = self.mt5
        if mt5 is None:
            return {}
        return {t: mt5.bridge.account(t) for t in mt5.terminals}

    def _mt5_health_status(self) -> str:
        """What the EA's `/healthz` says: only a halt or a pause, not a blocked venue."""
        state = self.gate.state
        if state is TradingState.HALTED:
            return "halted"
        return "ok" if state is TradingState.ACTIVE else "degraded"

    def _touch(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        book = self.compare.book(venue, symbol)
        if book is None or not book.has_quote:
            return None
        return (book.raw_bid, book.raw_ask)

    def _quote_age_ms(self, venue: Venue, symbol: str) -> float | None:
        """How old the venue's latest quote is (local receive time), for a group's close."""
        book = self.compare.book(venue, symbol)
        if book is None or not book.has_quote:
            return None
        return (self.clock.monotonic_ns() - book.recv_ns) / 1_000_000

    @property
    def driver(self) -> demo.DemoDriver:
        """Steps the simulated market on a manual clock (deterministic tests and snapshots)."""
        if self._driver is None:
            if self.world is None:
                raise TypeError("the demo driver needs a simulated world")
            self._driver = demo.DemoDriver(self.world.market, self.clock, self.ingest, self.orchestrator.drain,
                                           self.health.delivered)
        return self._driver

    # -- hot path ----------------------------------------------------------------------
    def ingest(self, quote: Quote) -> Decision | None:
        """One quote in: judged synchronously; an intent becomes a hedge group.

        Never raises: it runs inside the feeds' read loops, and an exception there would end
        a feed for good. An unexpected error halts trading instead (`engine: <error>`)."""
        if self._stopping:
            return None  # shutting down: groups in flight settle, no new ones start
        try:
            decision = self.pipeline.on_quote(quote)
            if decision is None:
                return None
            self.orchestrator.record_decision(decision)  # edge percentiles and trigger rate per pair
            journal = self.journal
            if decision.intent is not None:
                group = self.orchestrator.submit(decision.intent)
                if journal is not None:
                    journal.decision(decision, group_id=group.group_id)
            elif journal is not None:
                journal.decision(decision)  # sampled: the signal log stays bounded
            return decision
        except Exception as exc:
            self._fault("engine", exc)
            return None

    def _fault(self, source: str, exc: BaseException) -> None:
        """Halt on an error nothing else handles; said once per distinct error."""
        reason = f"{source}: {exc!r}"[:300]
        if self.gate.state is not TradingState.HALTED or self.gate.reason != reason:
            self.events.emit(EngineEvent(self.clock.time_ms(), "error", f"halting: {reason}", "error"))
            self.control.halt(reason)

    def _journal_down(self, error: str) -> None:
        """The ledger cannot write: halt now; what it could not write is kept and retried."""
        self.ledger_failures += 1
        self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                     f"ledger cannot write, trading halted: {error}", "error"))
        self.control.halt(f"ledger: {error}")

    def _journal_back(self, committed_seq: int) -> None:
        self.events.emit(EngineEvent(self.clock.time_ms(), "ledger",
                                     f"ledger writes again (journal at seq {committed_seq}); "
                                     "trading stays halted until an operator rearms", "warn"))
        # MT5 deals of forgotten orders heard meanwhile: compared with the ledger now (its
        # backlog, their commands' rows included, is written by now).
        work = self.mt5_late.recovered() if self.mt5_late is not None else None
        if work is not None:
            self._in_background(work)

    def _spot_accounts(self) -> None:
        """Paper spot accounts hold the configured inventory moved by every fill the ledger has
        (the exposure book, restored by now); the gate refuses a sell beyond what they hold."""
        inventory = self.config.paper.spot_inventory
        for venue, gateway in self.gateways.items():
            if isinstance(gateway, PaperGateway) and gateway.spot:
                self.gate.spot_account(venue, inventory)
                for asset in {i.pair for i in self.instruments.values() if i.venue == venue}:
                    moved = self.gate.exposure.position(venue, asset)
                    if moved:
                        gateway.add_inventory(asset, moved)

    async def _start_funding(self) -> None:
        """Perpetual funding for the perpetuals the feeds serve, resumed after the last funding
        time the ledger holds (`engine.funding`); none without a ledger to journal it in."""
        perps = [Perpetual(v, s, url) for v, s, url in perpetual_sources(self.feeds)  # type: ignore[arg-type]
                 if (v, s) in self.instruments]
        if not perps or self.ledger is None:
            return
        self.funding = FundingAccrual(perps, self.equity.accrue_funding, self._journal_funding, self.clock,
                                      self._held_at)
        self.funding.restore(await self.ledger.read(money.funding_resume))

    async def _held_at(self, venue: Venue, symbol: str, at_ms: int) -> Decimal | None:
        """Our position of a perpetual at a funding time: the ledger's fills up to it, once what
        is queued is committed (`money.position_at`); None while the journal cannot write (the
        fills it holds are not in the file)."""
        journal, ledger = self.journal, self.ledger
        if journal is None or ledger is None:
            return None
        await journal.flush()
        if journal.error is not None or journal.unwritten:
            return None
        return await ledger.position_at(venue, symbol, at_ms)

    def _start_rates(self) -> None:
        """The currency books of `[money] rate_books` feed the equity's rates (`engine.rates`)."""
        sources = rate_sources(self.config, self.world)
        if not sources:
            return
        money_cfg = self.config.money
        self.rates = RateFeed(sources, money_cfg.account_currency, money_cfg.rates, self.clock,
                              max_age_s=money_cfg.rate_max_age_s, poll_s=money_cfg.rate_poll_s,
                              mt5_top=self._mt5_rate_top)
        self.equity.use_rates(self.rates)

    async def _journal_rates(self, ledger: Ledger) -> None:
        """The rates the equity converts with are journaled when they change (`engine.rates.RateLog`),
        resuming from the ledger's last ones."""
        account = self.config.money.account_currency
        last = self.equity.journaled_rates  # read by the equity's restore, unless it failed
        if last is None or self.equity.restore_error is not None:
            try:
                last = await ledger.read(money.last_rates, account)
            except LedgerError as exc:
                self.events.emit(EngineEvent(self.clock.time_ms(), "ledger",
                                             f"journaled rates unreadable, journaling them afresh: {exc}", "error"))
                last = {}
        tolerance = Decimal(repr(self.config.money.rate_tolerance_bps)) / 10_000
        self.equity.journal_rates(RateLog(account, last, self._journal_rate, tolerance,
                                          max_age_ms=self.config.money.rate_max_age_s * 1000))

    def _journal_rate(self, r: RateInForce) -> None:
        if self.journal is not None:
            self.journal.rate(r)

    def _mt5_rate_top(self, symbol: str) -> tuple[float, float, float] | None:
        """An MT5 rate book: the EA's latest tick of it (bid, ask, age in ms)."""
        book = self.compare.book("mt5", symbol)
        if book is None or not book.has_quote:
            return None
        return (book.raw_bid, book.raw_ask, (self.clock.monotonic_ns() - book.recv_ns) / 1_000_000)

    def _journal_funding(self, b: Booked) -> None:
        self.events.emit(EngineEvent(self.clock.time_ms(), "funding",
                                     f"funding {b.venue}:{b.symbol} rate {b.rate:f} on {b.position:f}: "
                                     f"{b.amount:+f} {b.ccy}"))
        if self.journal is not None:
            self.journal.funding(b.venue, b.symbol, b.funding_ms, b.rate, b.mark_price, b.position, b.amount, b.ccy)

    def _money_fill(self, order: Order, fill: Fill) -> None:
        """Every booked fill into the running money; a closing fill (a flatten's, a close of one
        group) that took groups to flat closes them, with that cost in their PnL."""
        self.equity.on_fill(order, fill)
        if money.closing_purpose(order.purpose):
            self.close_flat_groups()

    def _after_flatten(self, report: dict[str, Any]) -> None:
        """A flatten pass ended: on every book it left flat, groups still holding against each
        other (a later group's opposite leg offset them, so the flatten traded nothing for them)
        are closed against each other at the mark; then every flat group is closed. An asset it
        left at zero on every venue loses its dust (`engine.flatten.zeroed_assets`)."""
        now_ms = self.clock.time_ms()
        for line in report.get("lines", []):
            if line.get("flat"):
                self.equity.net_off(line["venue"], line["symbol"], str(report.get("batch", "")), now_ms)
        for asset in zeroed_assets(report):
            self._clear_dust(asset, str(report.get("batch", "")))
        self.close_flat_groups()

    def _clear_dust(self, pair: str, batch: str) -> None:
        """The pair's dust is stale (the positions it was the remainder of are closed): out of
        the book, so no later repair folds it, and journaled as 0, so a restart does not bring
        it back (also when a repair in flight took it from the book before it was journaled)."""
        dust = self.orchestrator.compensation.dust.take(pair)
        if dust:
            self.events.emit(EngineEvent(self.clock.time_ms(), "dust", f"{pair}: dust {dust:f} cleared: flatten "
                                         f"{batch} left it at zero on every venue", "info", {"pair": pair}))
        if self.journal is not None and self._dust_journaled.get(pair, Decimal(0)) != 0:
            self._dust_journaled[pair] = Decimal(0)
            self.journal.dust(pair, Decimal(0))

    def close_flat_groups(self) -> list[str]:
        """Groups closing fills left flat become `closed` (journaled) with their whole cash flow
        after every fee (`core.attribution`): what a flatten cost lands on the groups it closed."""
        done: list[str] = []
        older: list[GroupMoney] = []
        for gm in self.equity.take_closed():
            if gm.closed_by == [gm.group_id]:
                continue  # closed by its own close orders: engine.group_close marks it closed
            group = self.orchestrator.find_group(gm.group_id)
            if group is None:
                older.append(gm)  # older than the groups kept in memory: closed from its ledger row
                continue
            own_fees = sum((o.fees for o in group.orders), Decimal(0))
            closing_cash = gm.cash + gm.residual_cost() - group.cash_flow()
            if self.orchestrator.close_group(group, closing_cash, gm.fees - own_fees, ", ".join(gm.closed_by)):
                done.append(group.group_id)
        if older and self.ledger is not None and self.journal is not None:
            task = asyncio.ensure_future(self._close_in_ledger(older))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return done

    async def _close_in_ledger(self, groups: list[GroupMoney]) -> None:
        """Close groups the orchestrator no longer remembers, from their ledger rows: only one
        in a state `HedgeGroup.close` leaves for closed (`CLOSABLE`: an unwound group that lot
        sizes left holding too, or a net that took it flat would move its partner's row alone)."""
        assert self.ledger is not None
        try:
            rows = await self.ledger.read(money.group_rows, [g.group_id for g in groups])
        except LedgerError as exc:
            self.events.emit(EngineEvent(self.clock.time_ms(), "group", f"closing groups: ledger: {exc}", "warn"))
            return
        for gm in groups:
            row = rows.get(gm.group_id)
            if row is None or row.state not in _CLOSABLE_STATES or self.journal is None:
                continue
            by = ", ".join(gm.closed_by)
            note = "; ".join(n for n in (row.note, f"{row.state} until closed{' by ' + by if by else ''}") if n)
            self.journal.group_closed(gm.group_id, row.state, row.closed_at_ms, gm.realized, gm.fees, note)
            # The running totals (the groups' PnL on every surface) follow the ledger's row.
            self.orchestrator.closed_from_ledger(row.pair, GroupState(row.state), gm.realized - row.realized_pnl,
                                                 row.closed_at_ms)
            self.events.emit(EngineEvent(self.clock.time_ms(), "group",
                                         f"group {gm.group_id} {row.state} -> closed, pnl {gm.realized:f}"))

    def running_background(self) -> int:
        """Background work still running (closes of groups from their ledger rows, ...)."""
        return sum(1 for t in self._background if not t.done())

    def _settle(self, group: HedgeGroup) -> None:
        """A group's execution ended and none of its orders is pending: it nets against the
        settled groups holding its books the other way (`core.attribution`), each transfer
        journaled (`net`) before the groups it left flat are closed. What bounds the running
        attribution by the net positions instead of by every group that ever traded."""
        if group.group_id in self._closing_by_hand:
            return  # its close orders are out: it nets when the close ends
        if group.state not in CLOSABLE or not all(is_terminal(o.state) for o in group.orders):
            return
        self._journal_nets(self.equity.settle(group.group_id, self.clock.time_ms()))

    def _group_held(self, group_id: str) -> dict[Venue, Decimal] | None:
        """What the running attribution says the group holds per venue (engine.group_close);
        None when it cannot say (the restore failed)."""
        return None if self.equity.restore_error is not None else self.equity.group_held(group_id)

    def _group_closing(self, group: HedgeGroup, begins: bool) -> None:
        """A close of the group by hand begins: it nets no more until it ends (its close fills
        must find its money whole); then, if it still holds, it nets again."""
        if begins:
            self._closing_by_hand.add(group.group_id)
            self.equity.unsettle(group.group_id)
        else:
            self._closing_by_hand.discard(group.group_id)
            self._settle(group)

    def _journal_nets(self, nets: list[Net]) -> None:
        if not nets:
            return
        if self.journal is not None:
            for n in nets:
                self.journal.net(n)
        self.close_flat_groups()

    def _group_closed(self, group: HedgeGroup) -> None:
        self.pipeline.release(group.pair)
        if group.state is GroupState.REJECTED:
            return
        changes = self.gate.breakers.on_group_closed(
            failed=group.state is GroupState.FAILED,
            compensated=group.state in (GroupState.REPAIRED, GroupState.UNWOUND),
            now_ms=self.clock.time_ms(),
        )
        if changes:
            self.risk.apply_breakers(changes)
        if self.journal is not None:
            dust = self.orchestrator.compensation.dust.get(group.pair)
            if dust != self._dust_journaled.get(group.pair, Decimal(0)):
                self._dust_journaled[group.pair] = dust
                self.journal.dust(group.pair, dust)

    def _mt5_swaps(self) -> tuple[dict[str, Decimal], str, int] | None:
        """POSITION_SWAP per symbol from the first terminal's last account report (our magic)."""
        mt5 = self.mt5
        if mt5 is None or not mt5.terminals:
            return None
        account = mt5.bridge.account(mt5.terminals[0])
        if account is None:
            return None
        per: dict[str, Decimal] = {}
        for p in account.positions:
            per[p.symbol] = per.get(p.symbol, Decimal(0)) + p.swap
        return per, mt5.gateway.fee_ccy, account.ts_ms

    def _mt5_fill(self, command: Mt5Command) -> None:
        """Every new MT5 deal: one for an order whose group already closed is caught now,
        not at the next restart; one for an order forgotten from memory is journaled and
        applied to the running books once (engine.mt5_late), and halts."""
        if self.mt5 is not None:  # swap booked on the deals, as the ledger replays it
            for f in command.fills:
                if f.swap:
                    self.equity.book_swap(command.symbol, str(f.deal), f.swap, self.mt5.gateway.fee_ccy)
        work = (self.mt5_late.heard(command) if self.mt5_late is not None
                else self.orchestrator.late_fill(command.group_id, command.client_order_id))
        if work is not None:
            self._in_background(work)

    def _in_background(self, work: Awaitable[Any]) -> None:
        """Run `work` as background work (`running_background`; `stop` waits for it)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._stopping = False
        if self.ledger_path is not None:
            await self._open_ledger(self.ledger_path)
        try:
            if self.ledger is not None:  # the journaled runtime settings, before anything can quote
                await self.steering.restore(self.ledger, say=False)
            if self.world is not None:
                await self.world.start()
                if self._trading_accounts is not None:
                    await self._demo_gateways(self._trading_accounts)
            if self.live is not None:
                await self.live.start()  # specs checked against the config before anything trades
            await self._start_listener()
            restored = await self.recovery.restore(self.ledger) if self.ledger is not None else Restored()
            self._spot_accounts()
        except (OSError, RuntimeFailure, LedgerError) as exc:
            await self._abort_start()
            if isinstance(exc, RuntimeFailure):
                raise
            if isinstance(exc, LedgerError):
                if exc.exit_code == 2:  # the file itself (e.g. a record quick_check cannot see)
                    raise LedgerRefused(str(exc)) from None
                raise RuntimeFailure(f"ledger {self.ledger_path}: cannot recover: {exc}") from None
            raise RuntimeFailure(
                f"listener cannot bind {self.config.listener.host}:{self.config.listener.port}: "
                f"{exc.strerror or exc}"
            ) from None
        self._dust_journaled = dict(restored.dust)
        self.feeds = build_feeds(self.config, self.ingest, self.clock, self.world)
        if self._recording is not None:
            self._recording.attach_feeds(self.feeds)  # before any feed runs: no frame is missed
        await self._start_funding()
        self._start_rates()
        self.health.use_feeds(self.feeds)
        self._feed_log.watch(self.feeds)
        self.events.emit(
            EngineEvent(
                self.clock.time_ms(),
                "start",
                f"engine started: mode={self.mode} pairs={','.join(p.name for p in self.pairs)} "
                f"feeds={','.join(f.name for f in self.feeds) or 'none'} "
                f"listener={self.listener_url or 'none'} "
                f"threshold={self.pipeline.threshold_bps:g}bps",  # in force: steering may have re-applied one
            )
        )
        self.steering.say_restored()  # what a restart did with the journaled runtime settings
        for warning in self._warnings:  # loud, and logged where the operator looks
            self.events.emit(EngineEvent(self.clock.time_ms(), "config", f"warning: {warning}", "warn"))
        self._orchestrator_task = asyncio.create_task(self.orchestrator.run(), name="orchestrator")
        self._tasks.append(asyncio.create_task(self.risk_loop.run(), name="risk"))
        self._tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))
        if self.memory_trim.active:
            self._tasks.append(asyncio.create_task(self.memory_trim.run(), name="memory-trim"))
        self._tasks += [asyncio.create_task(feed.run(), name=f"feed-{feed.name}") for feed in self.feeds]
        if self.funding is not None:
            self._tasks.append(asyncio.create_task(self.funding.run(), name="funding"))
        if self.rates is not None:
            self._tasks.append(asyncio.create_task(self.rates.run(), name="rates"))
        if self.reconciler is not None:
            if not restored.pending:
                self.risk.hold(RECONCILING)  # now: no quote may trade before the first pass
            self._tasks.append(asyncio.create_task(self._live_passes(restored), name="reconcile"))
        elif restored.pending:
            self._tasks.append(asyncio.create_task(self.recovery.finish(restored), name="recovery"))

    async def _live_passes(self, restored: Restored) -> None:
        """Live: recovery first (it asks the venues about unfinished orders), then the first
        reconciliation with trading held, then one pass every `reconcile_interval_s`."""
        assert self.reconciler is not None
        if restored.pending:
            await self.recovery.finish(restored)
        await self.reconciler.first_pass()
        self.events.emit(EngineEvent(self.clock.time_ms(), "reconcile",
                                     f"reconciled with {', '.join(sorted(self.reconciler.venues)) or 'no venue'}; "
                                     f"next pass in {self.reconciler.interval_s:g} s"))
        await self.reconciler.run()

    async def _demo_gateways(self, accounts: demo.TradingAccounts) -> None:
        """The demo's OKX/Binance legs through the live gateways, against the started world,
        with the positions the ledger says the last run left seeded on its venues."""
        assert self.world is not None
        if self.ledger is not None:
            for line in demo.seed_positions(self.world, await self.ledger.net_positions()):
                self.events.emit(EngineEvent(self.clock.time_ms(), "demo",
                                             f"simulated venue holds what the ledger left: {line}"))
        self.live = LiveVenues(demo.world_venues(self.config, self.world),
                               demo.trading_secrets(accounts, self._secrets), self.clock, self.instruments.values())
        self.gateways.update(self.live.gateways)  # the orchestrator's own map
        self.reconciler = self._new_reconciler(self.live)

    async def _abort_start(self) -> None:
        """Undo a start that failed half-way: nothing keeps running, no file says we listen."""
        self._running = False
        if self.ledger_path is not None:
            remove_listener_file(self.ledger_path)
        if self.mt5 is not None:
            with contextlib.suppress(Exception):
                await self.mt5.stop()
        if self._operator_server is not None:
            with contextlib.suppress(Exception):
                await self._operator_server.stop()
            self._operator_server = None
        if self.live is not None:
            await self.live.stop()
        if self.world is not None:
            with contextlib.suppress(Exception):
                await self.world.stop()
        await self.close_ledger()

    async def _start_listener(self) -> None:
        """One listener for the EA, the operator API and /metrics. The admin token is made
        here, not in __init__, so building a Runtime writes no file."""
        try:
            self.admin_token = engine_admin_token(
                self.ledger_path, self._secrets.admin_token if self._secrets is not None else None
            )
        except AdminTokenError as exc:
            raise RuntimeFailure(str(exc)) from None
        if self.mt5 is not None:
            await self.mt5.start(operator_routes(self.control, self.view, self.admin_token, settings=self.steering))
        elif self._serve_operator_api:
            self._operator_server = listener_server(
                create_operator_app(self.control, self.view, self.admin_token, settings=self.steering),
                self.config.listener
            )
            await self._operator_server.start()
        url = self.listener_url
        if url is not None and self.ledger_path is not None:
            error = write_listener_file(self.ledger_path, url)
            if error is not None:
                self.events.emit(EngineEvent(self.clock.time_ms(), "error", error, "warn"))

    @property
    def listener_url(self) -> str | None:
        if self.mt5 is not None:
            return self.mt5.url
        return self._operator_server.url if self._operator_server is not None else None

    async def open_ledger(self, path: str | None = None) -> None:
        """Attach the ledger (`path`, else the configured one) without starting anything else:
        what `start()` does first, for deterministic runs driven by `driver` and the benches."""
        path = path if path is not None else self.ledger_path
        if self.ledger is None and path is not None:
            await self._open_ledger(path)

    async def close_ledger(self) -> None:
        """Detach and close the ledger (what `stop()` does last). A journal that could not
        write gets one last try; what is still unwritten then is said, loudly."""
        journal, self.journal = self.journal, None
        if journal is not None:
            if journal.error is not None and not await journal.retry():
                self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                             f"ledger: {journal.unwritten} event(s) could not be written: "
                                             f"{journal.error}", "error"))
            await journal.close()
        ledger, self.ledger = self.ledger, None
        self.orchestrator.attach_journal(None)
        self.risk.attach(None)
        if self.mt5 is not None:
            self.mt5.store.target = None
        if ledger is not None:
            await ledger.close()

    async def _open_ledger(self, path: str) -> None:
        try:
            self.ledger = await Ledger.open(path, clock=self.clock)
        except LedgerError as exc:
            self._running = False
            if exc.exit_code == 2:  # not a ledger, newer, damaged: the file, not the run
                raise LedgerRefused(str(exc)) from None
            raise RuntimeFailure(f"ledger {path}: {exc}") from None
        except OSError as exc:
            self._running = False
            raise RuntimeFailure(f"ledger {path}: {exc}") from None
        for notice in self.ledger.notices:
            self.events.emit(EngineEvent(self.clock.time_ms(), "ledger", notice, "warn"))
        self.journal = GuardedJournal(self.ledger, on_failure=self._journal_down, on_recovered=self._journal_back,
                                      write_ahead=self.config.engine.write_ahead)
        self.orchestrator.attach_journal(self.journal)
        self.risk.attach(self.journal)
        if self.mt5 is not None:
            self.mt5.store.target = self.journal
        if self.mt5_late is not None:  # before the replay below: it reads what this books
            try:
                await self.mt5_late.at_start()
            except Exception as exc:  # a row it cannot read: not compared, so not trusted
                self.events.emit(EngineEvent(self.clock.time_ms(), "error",
                                             f"mt5: the ledger's MT5 deals could not be compared with its fills: "
                                             f"{exc}", "error"))
                await self.orchestrator.halt("MT5 deals not compared with the ledger at start")
        try:
            # The money so far (the ledger's own replay) and when today began.
            await self.equity.restore(self.ledger, now_ms=self.clock.time_ms())
        except LedgerError as exc:
            self.events.emit(EngineEvent(self.clock.time_ms(), "ledger",
                                         f"equity could not be restored from the ledger: {exc}", "error"))
        else:
            unclosed = self.equity.take_unclosed()
            if unclosed:  # a crash between the net (or closing fill) and the close it called for
                task = asyncio.ensure_future(self._close_in_ledger(unclosed))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            self._journal_nets(self.equity.settle_restored(self.clock.time_ms()))
        await self._journal_rates(self.ledger)

    async def stop(self) -> None:
        """Stop quote sources first, let groups in flight settle, then end every task."""
        if not self._running:
            return
        self._running = False
        self._stopping = True
        await cancel_and_wait(self._tasks, self.events, self.clock)
        self._tasks = []
        for row in self.health.feed_rows(self.clock.monotonic_ns()):
            self.events.emit(EngineEvent(
                self.clock.time_ms(), "feed",
                f"feed {row.name} transport={row.transport} frames={row.frames} quotes={row.quotes} "
                f"reconnects={row.reconnects} rest_polls={row.rest_polls} dropped={row.dropped}",
                data={"feed": row.name, "frames": row.frames, "quotes": row.quotes,
                      "reconnects": row.reconnects, "dropped": row.dropped_by_reason},
            ))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.control.drain()
        await self.risk.drain()
        # Groups in flight settle while the venues (and the EA) are still there.
        await self.orchestrator.shutdown()
        if self._orchestrator_task is not None:
            self._orchestrator_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._orchestrator_task
            self._orchestrator_task = None
        if self.ledger_path is not None:
            remove_listener_file(self.ledger_path)
        if self.mt5 is not None:
            await self.mt5.stop()
        if self._operator_server is not None:
            await self._operator_server.stop()
            self._operator_server = None
        for pair_row in self.view.pair_rows():
            self.events.emit(pair_event(self.clock.time_ms(), pair_row))
        if self.live is not None:  # before the (demo) venues themselves go away
            await self.live.stop()
        if self.world is not None:
            await self.world.stop()
        await self.close_ledger()
        self.events.emit(EngineEvent(self.clock.time_ms(), "stop", "engine stopped"))
        await self.alerts.close()  # the stop alert goes out (bounded by the alert timeout)
