"""Recovery: a restarted engine carries on from what its ledger says, before anything new is sent.

`restore()` runs at start, before the feeds: the breakers (a halt or a daily loss survives a
restart), the exposure book and the paper accounts from every fill ever journaled, the dust
book, and the groups and orders that were still open. Until those are finished the gate is
held paused (a halted engine simply stays halted). `finish()` runs once quotes flow: every
unfinished order is asked about by client order id, and each group is completed
(compensated if a leg is missing) against live quotes; then the hold is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from core.clock import Clock
from core.compare import CompareEngine
from core.hedge import HedgeGroup
from core.instruments import Instrument
from core.models import Order, Venue
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate
from engine.events import EngineEvent, EventLog
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RiskJournal
from ledger import queries
from ledger.ledger import Ledger

RECOVERING = "recovering"


@dataclass(slots=True)
class Restored:
    """What the ledger handed back that still needs work once quotes flow."""

    groups: list[HedgeGroup] = field(default_factory=list)
    orphans: list[Order] = field(default_factory=list)  # open orders outside any open group
    dust: dict[str, Decimal] = field(default_factory=dict)  # per pair, as journaled

    @property
    def pending(self) -> bool:
        return bool(self.groups or self.orphans)


class Recovery:
    def __init__(
        self,
        gate: RiskGate,
        orchestrator: HedgeOrchestrator,
        pipeline: OpportunityPipeline,
        compare: CompareEngine,
        instruments: Mapping[tuple[Venue, str], Instrument],
        risk: RiskJournal,
        clock: Clock,
        events: EventLog,
        day_equity: Callable[[int], Decimal | None] = lambda _now_ms: None,
    ) -> None:
        self._gate = gate
        self._orch = orchestrator
        self._pipeline = pipeline
        self._compare = compare
        self._instruments = instruments
        self._risk = risk
        self._clock = clock
        self._events = events
        self._day_equity = day_equity
        self.recovered_groups = 0

    def _instrument(self, venue: str, symbol: str) -> Instrument | None:
        return self._instruments.get((venue, symbol))  # type: ignore[arg-type]

    async def restore(self, ledger: Ledger) -> Restored:
        """Restore the trading state from the ledger; returns the work left for `finish()`."""
        rec = await ledger.recover()
        now_ms = self._clock.time_ms()
        # The day's equity as the ledger has it (the running equity, restored with the ledger,
        # marked at the last fills until quotes come): past the limit, the breaker trips now.
        self._gate.breakers.restore(rec.breakers, daily_pnl=self._day_equity(now_ms), now_ms=now_ms)
        tripped_now = self._gate.breakers.check_daily_loss(now_ms)
        for (venue, symbol), qty in (await ledger.net_positions()).items():
            inst = self._instrument(venue, symbol)
            if inst is not None:
                self._gate.exposure.set_position(inst.venue, self._orch.asset_of(*inst.key), inst.to_base_qty(qty))
        for (venue, symbol), (flow, fees) in (await ledger.read(queries.cash_flows)).items():
            inst = self._instrument(venue, symbol)
            if inst is not None:  # the paper accounts carry on where the ledger left them
                self._orch.restore_cash(inst.venue, flow * inst.qty_per_unit * inst.price_scale - fees)
        for pair, qty in rec.dust.items():
            self._orch.compensation.dust.add(pair, qty)
        if rec.halted:
            self._gate.kill(rec.trading_reason or "halted before restart")
            self._events.emit(EngineEvent(self._clock.time_ms(), "state",
                                          f"HALTED (restored): {self._gate.reason}", "warn"))
        else:
            pausing = [b for b in self._gate.breakers.blocking_rearm() if b.effect == "pause"]
            if pausing:  # the failure pause goes on, and still ends by itself
                self._gate.pause(f"breaker {pausing[0].name}: {pausing[0].detail}")
        for b in self._gate.breakers.tripped():
            self._events.emit(EngineEvent(now_ms, "breaker", f"breaker {b.name} still tripped (restored): {b.detail}",
                                          "warn"))
        if tripped_now:
            self._risk.apply_breakers(tripped_now)
        self.recovered_groups = len(rec.open_groups)
        in_open_groups = {id(o) for g in rec.open_groups for o in g.orders}
        restored = Restored(list(rec.open_groups), [o for o in rec.open_orders if id(o) not in in_open_groups],
                            dict(rec.dust))
        for order in restored.orphans:  # a fill reported for one before it is resolved is caught
            self._orch.adopt_orphan(order)
        if restored.pending:
            for group in restored.groups:
                self._pipeline.in_flight.add(group.pair)
                self._orch.adopt(group)  # an EA fill for it is its own
            self._risk.hold(RECOVERING)
        return restored

    async def finish(self, restored: Restored, quotes_timeout_s: float = 10.0) -> None:
        """Finish recovered groups and orphans: their venues are asked by client order id, and
        any compensation trades against live quotes (so wait, bounded, until both legs have one)."""
        groups = restored.groups
        needed = {(venue, inst.symbol) for g in groups for venue, inst in g.instruments.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + quotes_timeout_s
        while loop.time() < deadline:
            books = [self._compare.book(v, s) for v, s in needed]
            if all(b is not None and b.has_quote for b in books):
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(
            *(self._orch.resume(g) for g in groups),
            *(self._orch.resolve_orphan(o) for o in restored.orphans),
        )
        self._risk.release(RECOVERING, "recovered")
        self._events.emit(EngineEvent(self._clock.time_ms(), "recover",
                                      f"recovery done: {len(groups)} group(s) finished"))
