"""RiskMonitor: feeds the breakers what the engine sees, once a second.

Venue health (is a feed connected, how old is its newest quote), the price guard's verdicts
on each venue's quotes (outliers in a row), free balance/margin (the EA's account reports,
the paper accounts on the running equity), the day's equity change (the daily loss: equity
now less equity when the UTC day began, unrealized and carry included), the UTC day and
pause expiry, groups held open too long, and hedges held too long or whose legs drifted apart
(`core.hold`). The breakers themselves are pure (`core.breakers`); this module only gathers
their inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.breakers import BreakerChange
from core.clock import Clock
from core.compare import CompareEngine
from core.hedge import HedgeGroup
from core.hold import HoldLimits, HoldVerdict, HoldWatch
from core.holdings import Holding
from core.risk import RiskGate
from engine.events import EngineEvent, EventLog, Level
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RiskJournal


@dataclass(slots=True, frozen=True)
class VenueLink:
    """Whether a venue's market data is connected right now (any of its sources)."""

    venue: str
    connected: bool


class RiskMonitor:
    def __init__(
        self,
        gate: RiskGate,
        compare: CompareEngine,
        clock: Clock,
        *,
        venues: Iterable[str],
        links: Callable[[], list[VenueLink]],
        balances: Callable[[], dict[str, Decimal]],
        hold_timeout_s: float,
        day_equity: Callable[[int], Decimal | None] | None = None,
        holdings: Callable[[int], list[Holding]] | None = None,
        hold: HoldLimits | None = None,
    ) -> None:
        self.gate = gate
        self.compare = compare
        self.clock = clock
        self.venues = sorted(set(venues))
        self._links = links
        self._balances = balances
        self.hold_timeout_s = hold_timeout_s
        self._day_equity = day_equity
        self._holdings = holdings
        self.hold_watch = HoldWatch(hold) if hold is not None else None
        self.verdicts: list[HoldVerdict] = []  # the last step's hold and drift verdicts
        self.started_ns = clock.monotonic_ns()
        self._last_up_ns: dict[str, int] = {v: self.started_ns for v in self.venues}
        self._held: set[str] = set()
        for venue in self.venues:
            gate.breakers.watch_venue(venue)

    def restart(self) -> None:
        """(Re)start the clocks: time before the engine ran does not count as 'down'."""
        self.started_ns = self.clock.monotonic_ns()
        self._last_up_ns = {v: self.started_ns for v in self.venues}

    def _quote_age_s(self, venue: str, now_ns: int) -> float | None:
        """Age of the freshest quote of any of the venue's instruments (None: never quoted).

        Refused outliers count: this measures whether the feed is alive; whether its prices
        are sane is the price guard's breaker."""
        ages = [
            (now_ns - b.seen_ns) / 1e9
            for b in self.compare.books()
            if b.inst.venue == venue and b.quotes
        ]
        return min(ages) if ages else None

    def _price_checks(self, venue: str) -> tuple[int, bool]:
        """(longest run of outliers in a row over the venue's instruments, whether any of its
        quotes agreed with another venue since start)."""
        run = 0
        agreed = False
        for b in self.compare.books():
            if b.inst.venue == venue:
                run = max(run, b.outlier_run)
                agreed = agreed or b.agreed
        return run, agreed

    def step(self, open_groups: Iterable[HedgeGroup]) -> tuple[list[BreakerChange], list[HedgeGroup]]:
        """One check; returns the breaker changes and the groups held past `hold_timeout_s`
        (each reported once, to be unwound by the caller)."""
        now_ns = self.clock.monotonic_ns()
        now_ms = self.clock.time_ms()
        breakers = self.gate.breakers
        changes = breakers.tick(now_ms)
        connected: dict[str, bool] = {}
        for link in self._links():
            connected[link.venue] = connected.get(link.venue, False) or link.connected
        for venue in self.venues:
            up = connected.get(venue, False)
            if up:
                self._last_up_ns[venue] = now_ns
            down_for = (now_ns - self._last_up_ns.get(venue, self.started_ns)) / 1e9
            since_start = (now_ns - self.started_ns) / 1e9
            age = self._quote_age_s(venue, now_ns)
            changes += breakers.on_venue_health(
                venue, connected=up, quote_age_s=age if age is not None else since_start,
                down_for_s=down_for, now_ms=now_ms,
            )
            run, agreed = self._price_checks(venue)
            changes += breakers.on_price_check(venue, outlier_run=run, agreed=agreed, now_ms=now_ms)
        for venue, free in self._balances().items():
            changes += self.gate.set_free_balance(venue, free)
        if self._day_equity is not None:
            changes += breakers.on_day_equity(self._day_equity(now_ms), now_ms)
        groups = list(open_groups)
        self.verdicts = []
        if self.hold_watch is not None and self._holdings is not None:
            self.verdicts = self.hold_watch.check(self._holdings(now_ms), {g.pair for g in groups}, now_ms)
            for v in self.verdicts:
                if v.kind != "drift_end":
                    changes += breakers.alert(f"{'drift' if v.kind == 'drift' else 'hold'}:{v.asset}", v.detail,
                                              now_ms)
        held: list[HedgeGroup] = []
        for g in groups:
            age_s = (now_ms - g.opened_ms) / 1000
            if age_s > self.hold_timeout_s and g.group_id not in self._held:
                self._held.add(g.group_id)
                changes += breakers.on_hold_timeout(g.group_id, age_s, now_ms)
                held.append(g)
        return changes, held


class RiskLoop:
    """Runs the RiskMonitor once a second: marks the exposure book from the books, applies
    breaker changes (journaled), unwinds groups held past the hold timeout, says which hedges
    are held too long or drifted apart, and closes a hedge held past `hold_close_s` when
    `hold_action` is `close` (`close_asset`: the operator's closing pass for one asset)."""

    def __init__(
        self,
        monitor: RiskMonitor,
        orchestrator: HedgeOrchestrator,
        risk: RiskJournal,
        events: EventLog,
        close_asset: Callable[[str, str], None] | None = None,
    ) -> None:
        self._monitor = monitor
        self._orch = orchestrator
        self._risk = risk
        self._events = events
        self._close_asset = close_asset

    async def run(self, interval_s: float = 1.0) -> None:
        self._monitor.restart()
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.check()
            except Exception as exc:  # the breakers must keep running
                self._events.emit(EngineEvent(self._monitor.clock.time_ms(), "error",
                                              f"risk check failed: {exc!r}", "error"))

    def check(self) -> None:
        """One pass (the loop's body; tests call it directly on a manual clock)."""
        exposure = self._monitor.gate.exposure
        for book in self._monitor.compare.books():  # marks for the exposure limits, once a second
            if book.has_quote:
                inst = book.inst
                exposure.mark(self._orch.asset_of(inst.venue, inst.symbol), Decimal(repr((book.bid + book.ask) / 2)))
        changes, held = self._monitor.step(list(self._orch.open.values()))
        for group in held:
            self._orch.hold_expired(group)
        if changes:
            self._risk.apply_breakers(changes)
        now_ms = self._monitor.clock.time_ms()
        for v in self._monitor.verdicts:
            if v.kind == "drift_end":
                self._events.emit(EngineEvent(now_ms, "drift", v.detail, "info", {"asset": v.asset}))
                continue
            level: Level = "error" if v.kind in ("drift", "close") else "warn"
            self._events.emit(EngineEvent(now_ms, "alert", v.detail, level, {"asset": v.asset, "rule": v.kind}))
            if v.kind == "close" and v.action == "close" and self._close_asset is not None:
                self._close_asset(v.asset, v.detail)
