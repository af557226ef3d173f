"""Runtime: the composition root. Builds the engine from a config and runs it as asyncio tasks.

Data flow (DESIGN.md section 3): quote sources call `ingest()` synchronously; the pipeline
judges each quote; an intent is handed to the HedgeOrchestrator, which runs the group as its
own task. Views pull `snapshot()`; nothing is pushed per quote. `stop()` ends every task it
started and lets groups in flight finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from decimal import Decimal

from core.clock import Clock, RealClock
from core.compare import CompareEngine
from core.config import QuantarbConfig
from core.hedge import HedgeGroup
from core.instruments import Instrument
from core.models import Decision, Quote, Venue
from core.pipeline import OpportunityPipeline
from core.ports import ExecutionGateway
from core.risk import RiskGate
from quantarb_tui.events import EngineEvent, EventLog
from quantarb_tui.orchestrator import HedgeOrchestrator
from quantarb_tui.snapshot import EdgeRow, GroupRow, QuoteRow, RuntimeSnapshot
from sim.market import SyntheticMarket
from sim.paper import PaperGateway


class RuntimeFailure(Exception):
    """The engine cannot run with this configuration (exit code 3)."""


class Runtime:
    """Everything one quantarb process runs, built from one config."""

    def __init__(
        self,
        config: QuantarbConfig,
        *,
        is_demo: bool,
        clock: Clock | None = None,
        ledger_path: str | None = None,
    ) -> None:
        self.config = config
        self.is_demo = is_demo
        self.clock: Clock = clock or RealClock()
        self.ledger_path = ledger_path or config.engine.ledger
        self.events = EventLog()
        self.pairs = config.build_pairs()
        self.instruments: dict[tuple[Venue, str], Instrument] = {
            inst.key: inst for pair in self.pairs for inst in pair.instruments
        }
        self.compare = CompareEngine(self.pairs)
        self.gate = RiskGate(self.clock, max_open_groups=config.risk.max_open_groups)
        self.pipeline = OpportunityPipeline(
            self.compare, config.strategy, config.risk, self.gate, self.clock
        )
        simulated = is_demo or config.demo.enabled
        if not simulated:
            raise RuntimeFailure(
                "live market data and order routing arrive with the feed, exchange and MT5 bridge "
                "adapters; set [demo] enabled = true to run the configured pairs on simulated venues"
            )
        if config.engine.execution == "live" and not is_demo:
            raise RuntimeFailure("execution = 'live' needs the venue gateways; use execution = 'paper'")
        self.mode = "demo" if is_demo else config.engine.execution
        self.gateways: dict[Venue, ExecutionGateway] = self._paper_gateways()
        self.orchestrator = HedgeOrchestrator(
            self.gateways,
            self.instruments,
            self.gate,
            self.clock,
            self.events,
            leg_policy=config.strategy.leg_policy,
            on_closed=self._group_closed,
        )
        self.market = SyntheticMarket(
            self.pairs,
            seed=config.demo.seed,
            tick_ms=config.demo.tick_ms,
            dislocation_every_s=config.demo.dislocation_every_s,
            start_ms=self.clock.time_ms(),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    # -- composition -----------------------------------------------------------------
    def _paper_gateways(self) -> dict[Venue, ExecutionGateway]:
        by_venue: dict[Venue, dict[str, Instrument]] = {}
        for (venue, symbol), inst in self.instruments.items():
            by_venue.setdefault(venue, {})[symbol] = inst
        return {
            venue: PaperGateway(venue, insts, self._touch, self.clock, fee_ccy="USD" if venue == "mt5" else "USDT")
            for venue, insts in by_venue.items()
        }

    def _touch(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        book = self.compare.book(venue, symbol)
        if book is None or not book.has_quote:
            return None
        return (book.raw_bid, book.raw_ask)

    # -- hot path ----------------------------------------------------------------------
    def ingest(self, quote: Quote) -> Decision | None:
        """One quote in: judged synchronously; an intent becomes a hedge group."""
        decision = self.pipeline.on_quote(quote)
        if decision is not None and decision.intent is not None:
            self.orchestrator.submit(decision.intent)
        return decision

    def _group_closed(self, group: HedgeGroup) -> None:
        self.pipeline.release(group.pair)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self.events.emit(
            EngineEvent(
                self.clock.time_ms(),
                "start",
                f"engine started: mode={self.mode} pairs={','.join(p.name for p in self.pairs)} "
                f"threshold={self.config.strategy.threshold_bps}bps",
            )
        )
        self._tasks = [
            asyncio.create_task(self.orchestrator.run(), name="orchestrator"),
            asyncio.create_task(self._market_loop(), name="sim-market"),
        ]

    async def stop(self) -> None:
        """Stop quote sources first, let groups in flight settle, then end every task."""
        if not self._running:
            return
        self._running = False
        market, orchestrator = self._tasks
        market.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await market
        await self.orchestrator.shutdown()
        orchestrator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await orchestrator
        self._tasks = []
        self.events.emit(EngineEvent(self.clock.time_ms(), "stop", "engine stopped"))

    async def _market_loop(self, interval_s: float = 0.02) -> None:
        clock = self.clock
        last = clock.monotonic_ns()
        while True:
            await asyncio.sleep(interval_s)
            now = clock.monotonic_ns()
            self._feed_market((now - last) / 1e9, now)
            last = now

    def _feed_market(self, dt_s: float, now_ns: int) -> None:
        for tick in self.market.advance(dt_s):
            self.ingest(
                Quote(tick.venue, tick.symbol, tick.bid, tick.ask, tick.bid_size, tick.ask_size,
                      tick.ts_ms, now_ns)
            )

    async def drive(self, steps: int, dt_ms: float = 20.0) -> None:
        """Step a manually clocked demo deterministically (tests and snapshots).

        Needs a clock with `advance(ms=...)`; groups are executed inline, in order.
        """
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise TypeError("drive() needs a manual clock")
        for _ in range(steps):
            advance(ms=dt_ms)
            self._feed_market(dt_ms / 1000.0, self.clock.monotonic_ns())
            await self.orchestrator.drain()

    # -- operator actions --------------------------------------------------------------
    def kill(self, reason: str = "operator kill") -> None:
        change = self.gate.kill(reason)
        self.events.emit(EngineEvent(change.ts_ms, "state", f"HALTED: {reason}", "warn"))

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
            edges=tuple(edges),
            groups=group_rows,
            log=self.events.recent(log),
            log_total=self.events.total,
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
    )
