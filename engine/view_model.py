"""ViewModel: what every face shows, built from the engine's state at one instant.

The TUI pulls `snapshot()` on a timer (<= 10 Hz); `/api/status`, `quantarb status`,
`/metrics` and headless read the same rows through `status()` and `summary()`, so a number
(PnL, positions, state) has one definition whatever shows it. Nothing here writes to the
engine. Group detail and history come from the ledger, after a flush so that what was just
done is in them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

from core.clock import Clock
from core.compare import CompareEngine
from core.config import QuantarbConfig
from core.hedge import HedgeGroup
from core.holdings import Holding
from core.instruments import Pair
from core.models import TradingState
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate
from engine.control import HealthStatus, ReadFailed
from engine.events import EngineEvent, EventLog
from engine.journal import GuardedJournal
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RiskJournal
from engine.snapshot import (
    BalanceRow,
    BreakerRow,
    CompensationRow,
    EdgeRow,
    GroupRow,
    HoldingLegRow,
    HoldingRow,
    LegRow,
    LimitRow,
    PairRow,
    PositionRow,
    QuoteRow,
    RuntimeSnapshot,
    TimingRow,
)
from engine.venue_health import VenueHealth
from ledger import analytics as ledger_analytics
from ledger import queries
from ledger.errors import LedgerError
from ledger.ledger import Ledger

T = TypeVar("T")


class ViewModel:
    """Implements `engine.control.EngineReader` for one engine."""

    def __init__(
        self,
        config: QuantarbConfig,
        mode: str,
        pairs: Sequence[Pair],
        clock: Clock,
        *,
        pipeline: OpportunityPipeline,
        compare: CompareEngine,
        gate: RiskGate,
        orchestrator: HedgeOrchestrator,
        events: EventLog,
        risk: RiskJournal,
        health: VenueHealth,
        ledger: Callable[[], Ledger | None],
        journal: Callable[[], GuardedJournal | None] = lambda: None,
        last_flatten: Callable[[], dict[str, Any] | None],
        reconcile: Callable[[], dict[str, Any] | None] = lambda: None,
        equity: Callable[[int], dict[str, Any]] | None = None,
        holdings: Callable[[int], list[Holding]] | None = None,
        day_equity: Callable[[int], Decimal | None] | None = None,
        balances: Callable[[], list[BalanceRow]] | None = None,
    ) -> None:
        self._config = config
        self._mode = mode
        self._pairs = pairs
        self._clock = clock
        self._pipeline = pipeline
        self._compare = compare
        self._gate = gate
        self._orch = orchestrator
        self._events = events
        self._risk = risk
        self._health = health
        self._ledger = ledger
        self._journal = journal
        self._last_flatten = last_flatten
        self._reconcile = reconcile
        self._equity = equity
        self._holdings = holdings
        self._day_equity = day_equity
        self._balances = balances
        self._venues = tuple(sorted({inst.venue for pair in pairs for inst in pair.instruments}))

    def pair_names(self) -> list[str]:
        return [p.name for p in self._pairs]

    def _threshold_bps(self) -> float:
        return self._pipeline.threshold_bps  # steerable at runtime (engine.steering)

    def positions(self) -> dict[str, dict[str, str]]:
        """Net position per venue and asset (base units) as the RiskGate's book holds it."""
        out: dict[str, dict[str, str]] = {}
        for (venue, asset), qty in sorted(self._gate.exposure.positions.items()):
            out.setdefault(venue, {})[asset] = str(qty)
        return out

    def health_status(self) -> HealthStatus:
        state = self._gate.state
        if state is TradingState.HALTED:
            return "halted"
        if state is not TradingState.ACTIVE or self._gate.breakers.blocked_venues():
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
            "equity": self.equity(),
            "quotes": snap.quotes_total,
            "intents": snap.intents_total,
            "limits": [asdict(r) for r in snap.limits],
            "breakers": [asdict(r) for r in snap.breakers],
            "blocked_venues": list(snap.blocked_venues),
            "ledger": {"ok": not snap.ledger_error, "error": snap.ledger_error, "unwritten": snap.ledger_unwritten},
            "reasons": snap.reasons,
            "price_outliers": snap.price_outliers,
            "positions": self.positions(),
            "last_flatten": self._last_flatten(),
            "reconcile": self._reconcile(),  # live mode: each venue against the ledger; null otherwise
            "feeds": [
                {"name": f.name, "venue": f.venue, "state": f.state, "last_frame_age_ms": f.last_frame_age_ms}
                for f in snap.feeds
            ],
            "mt5_terminals": [asdict(f.terminal) for f in snap.feeds if f.terminal is not None],
        }

    def _equity_fields(self) -> dict[str, str]:
        if self._equity is None:
            return {}
        doc = self._equity(self._clock.time_ms())
        total = doc.get("total")
        # To the cent for people (the status bar, heartbeat, headless, /metrics); `status()`
        # keeps the full figure.
        shown = _money(Decimal(total)) if isinstance(total, str) else "n/a"
        return {"equity": shown, "account_ccy": str(doc.get("currency", ""))}

    def equity(self) -> dict[str, Any] | None:
        """The equity document (`ledger summary --json`'s `equity`, marked at the books now)."""
        return None if self._equity is None else self._equity(self._clock.time_ms())

    def _quarantined(self) -> tuple[str, ...]:
        status = self._reconcile()
        if not status:
            return ()
        rows = status.get("quarantined", [])
        return tuple(f"{q['venue']} {q['client_order_id']}" for q in rows) if isinstance(rows, list) else ()

    async def group_detail(self, group_id: str) -> dict[str, Any] | None:
        """One group's story from the ledger (`ledger show`); None without a ledger or group.
        Computed in a worker thread on its own read-only connection, as the analytics are: the
        group's money is the whole ledger's group attribution (a flatten's share goes first in,
        first out over every holder), which on the engine's reader held the event loop for
        about 4 s per detail opened on a 65,000-fill ledger, quotes and orders waiting."""
        ledger = self._ledger()
        if ledger is None:
            return None
        with contextlib.suppress(LedgerError):  # a ledger that cannot write: what is committed
            await ledger.flush()
        return await _readable(asyncio.to_thread(queries.run, ledger.path, queries.show, group_id))

    async def history(
        self, *, pair: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Groups from the ledger, newest first (the history screen); [] without a ledger."""
        ledger = self._ledger()
        if ledger is None:
            return []
        with contextlib.suppress(LedgerError):  # a ledger that cannot write: what is committed
            await ledger.flush()
        return await _readable(ledger.read(queries.groups, pair=pair, state=state, limit=limit))

    async def analytics(self) -> dict[str, Any] | None:
        """The equity curve and trade statistics from the ledger (`ledger.analytics`), computed
        in a worker thread on its own read-only connection: a long ledger's replay never holds
        the event loop (the UI, the quotes). None without a ledger."""
        ledger = self._ledger()
        if ledger is None:
            return None
        with contextlib.suppress(LedgerError):  # a ledger that cannot write: what is committed
            await ledger.flush()
        money_cfg = self._config.money
        instruments = {inst.key: inst for pair in self._pairs for inst in pair.instruments}
        return await _readable(asyncio.to_thread(
            queries.run, ledger.path, ledger_analytics.analytics, now_ms=self._clock.time_ms(),
            account_ccy=money_cfg.account_currency, rates=money_cfg.rates, instruments=instruments,
        ))

    # -- views -----------------------------------------------------------------------
    def snapshot(self, *, groups: int = 50, log: int = 200) -> RuntimeSnapshot:
        journal = self._journal()
        now_ns = self._clock.monotonic_ns()
        quotes = []
        outliers: dict[str, int] = {}
        for pair in self._pairs:
            for inst in pair.instruments:
                book = self._compare.book(inst.venue, inst.symbol)
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
                        outlier=book.outlier,
                        outliers=book.outliers,
                    )
                )
                if book.outliers:
                    outliers[inst.venue] = outliers.get(inst.venue, 0) + book.outliers
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
            for e in self._compare.edges()
        ]
        feeds = self._health.rows(now_ns)
        orch = self._orch
        recent: list[HedgeGroup] = list(orch.open.values())[::-1] + list(orch.closed)
        group_rows = tuple(_group_row(g) for g in recent[:groups])
        by_state: dict[str, int] = dict(orch.closed_by_state)
        for g in orch.open.values():
            by_state[g.state] = by_state.get(g.state, 0) + 1
        return RuntimeSnapshot(
            ts_ms=self._clock.time_ms(),
            mode=self._mode,
            trading_state=str(self._gate.state),
            state_reason=self._gate.reason,
            threshold_bps=self._threshold_bps(),
            quotes_total=self._pipeline.quotes,
            decisions_total=self._pipeline.decisions,
            intents_total=self._pipeline.intents,
            open_groups=len(orch.open),
            groups_by_state=by_state,
            realized_pnl=_money(orch.realized_pnl),
            quotes=tuple(quotes),
            feeds=tuple(feeds),
            edges=tuple(edges),
            groups=group_rows,
            log=self._events.recent(log),
            log_total=self._events.total,
            pairs=self.pair_rows(),
            compensation=_compensation_rows(recent, 30),
            daily_pnl=self._daily(),
            limits=self._limit_rows(len(orch.open)),
            breakers=tuple(
                BreakerRow(key=b.name, name=b.name, state="tripped" if b.tripped else "ok", effect=b.effect,
                           detail=b.detail, since_ms=b.since_ms, until_ms=b.until_ms)
                for b in sorted(self._gate.breakers.all.values(), key=lambda b: (not b.tripped, b.name))
            ),
            risk_events=tuple(self._risk.rows()),
            blocked_venues=tuple(sorted(self._gate.breakers.blocked_venues())),
            quarantined=self._quarantined(),
            **self._equity_fields(),
            ledger_error=(journal.error or "") if journal is not None else "",
            ledger_unwritten=journal.unwritten if journal is not None else 0,
            reasons={str(k): v for k, v in self._pipeline.reasons.most_common()},
            price_outliers=dict(sorted(outliers.items())),
            venues=self._venues,
            positions=self._position_rows(),
            holdings=self._holding_rows(),
            balances=tuple(self._balances()) if self._balances is not None else (),
            timings=self._timings(),
        )

    def _timings(self) -> TimingRow:
        life = self._pipeline.lifetimes
        react = self._orch.reaction
        return TimingRow(bounds_ms=life.bounds_ms, lifetimes=life.counts(), reactions=react.counts(),
                         lifetime_p50_ms=life.quantile_ms(0.5), lifetime_p90_ms=life.quantile_ms(0.9),
                         reaction_p50_ms=react.quantile_ms(0.5), reaction_p90_ms=react.quantile_ms(0.9))

    def _daily(self) -> str:
        """The day's equity change (what the daily-loss breaker judges, read now); "n/a" when a
        rate or mark is missing."""
        if self._day_equity is None:
            return _money(self._gate.breakers.daily_pnl)
        change = self._day_equity(self._clock.time_ms())
        return "n/a" if change is None else _money(change)

    def _holding_rows(self) -> tuple[HoldingRow, ...]:
        if self._holdings is None:
            return ()
        in_flight = {g.pair for g in self._orch.open.values()}
        return tuple(_holding_row(h, h.asset in in_flight) for h in self._holdings(self._clock.time_ms()))

    def _position_rows(self) -> tuple[PositionRow, ...]:
        """The open positions (zero ones left out), by asset then venue: a few rows at most."""
        return tuple(
            PositionRow(key=f"{venue}:{asset}", venue=venue, asset=asset, qty=str(qty))
            for (venue, asset), qty in sorted(self._gate.exposure.positions.items(), key=lambda kv: kv[0][::-1])
            if qty
        )

    def _limit_rows(self, open_groups: int) -> tuple[LimitRow, ...]:
        rows = []
        for rule, scope, limit, used in self._gate.limit_use(open_groups):
            rows.append(LimitRow(
                key=f"{rule}:{scope}", rule=rule, scope=scope, limit=_num(limit), used=_num(used),
                utilization=float(used / limit) if limit > 0 else None,
            ))
        return tuple(rows)

    def pair_rows(self) -> tuple[PairRow, ...]:
        rows = []
        for name, s in sorted(self._orch.stats().items()):
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

    def summary(self) -> Mapping[str, object]:
        snap = self.snapshot(groups=0, log=0)
        return {
            "quotes": snap.quotes_total,
            "decisions": snap.decisions_total,
            "intents": snap.intents_total,
            "groups": snap.groups_by_state,
            "realized_pnl": snap.realized_pnl,
            "equity": snap.equity,
            "account_ccy": snap.account_ccy,
            "trading_state": snap.trading_state,
            "reasons": snap.reasons,
            "price_outliers": snap.price_outliers,
        }


def pair_event(ts_ms: int, row: PairRow) -> EngineEvent:
    """One line per pair at stop: execution aggregates and monitor statistics. `groups_pnl` is
    the sum of the pair's groups' PnL (their own cash flows, closing costs included), not the
    equity change the summary line's `pnl` states (that marks open positions at the books)."""
    slip = "-" if row.mean_slippage_bps is None else f"{round(row.mean_slippage_bps, 1) + 0.0:.1f}"  # no "-0.0"
    edge = "-" if row.edge_p50 is None else f"{row.edge_p50:.1f}/{row.edge_p75 or 0:.1f}/{row.edge_p90 or 0:.1f}"
    return EngineEvent(
        ts_ms,
        "pair",
        f"pair {row.key} groups={row.groups} hit_rate={row.hit_rate:.2f} groups_pnl={row.total_pnl} "
        f"slippage_bps={slip} edge_p50/p75/p90={edge} trigger_rate={row.trigger_rate:.4f}",
        data={"pair": row.key, "groups": row.groups, "hit_rate": row.hit_rate, "pnl": row.total_pnl,
              "trigger_rate": row.trigger_rate},
    )


def _num(value: Decimal) -> str:
    if value == value.to_integral_value() or abs(value) >= 1:
        return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"
    return str(value)


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"


def _dec(value: Decimal | None) -> str:
    """An exact decimal for a snapshot row: positional, no trailing zeros; "" when unknown."""
    if value is None:
        return ""
    return "0" if value == 0 else format(value.normalize(), "f")


def _holding_row(h: Holding, in_flight: bool) -> HoldingRow:
    return HoldingRow(
        key=h.asset, asset=h.asset, net=_dec(h.net), step=_dec(h.step), drift=h.drift, mark=_dec(h.mark),
        unrealized="n/a" if h.unrealized is None else _money(h.unrealized),
        carry="n/a" if h.carry is None else _money(h.carry),
        held_since_ms=h.held_since_ms, in_flight=in_flight,
        legs=tuple(HoldingLegRow(venue=leg.venue, qty=_dec(leg.qty), venue_qty=_dec(leg.venue_qty), unit=leg.unit,
                                 mark=_dec(leg.mark), unrealized=_dec(leg.unrealized), quote_ccy=leg.quote_ccy)
                   for leg in h.legs),
    )


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


async def _readable(read: Awaitable[T]) -> T:
    """A view's ledger read; a ledger that cannot be read is ReadFailed, which the screens show
    (an exception out of a screen's worker would end the workstation)."""
    try:
        return await read
    except (LedgerError, OSError) as exc:
        raise ReadFailed(f"the ledger could not be read: {exc}") from None
