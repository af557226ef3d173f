"""Flatten: bring every venue back to flat, and say exactly what could not be closed.

Net exposure per venue and asset comes from the ledger (every fill ever journaled, restored
into the RiskGate's ExposureBook at start and kept current by every fill since) and, where a
venue reports its own positions, from that report: the EA's account positions with our
magic are closed one `close` command per ticket. Reducing orders go out concurrently on
every venue, each through the gate (a flatten order must shrink a position), write-ahead
and tracked to a final state like any other order. What is left is reported as residual.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.clock import Clock
from core.hedge import base36
from core.instruments import Instrument, floor_to
from core.models import Order, OrderPurpose, OrderState, Side, Venue, opposite
from core.ports import OrderUpdate
from core.risk import RiskGate
from engine.orchestrator import HedgeOrchestrator
from mt5_bridge.bridge import PositionState

TouchSource = Callable[[Venue, str], tuple[float, float] | None]
REDUCE_ATTEMPTS = 5  # an IOC the book left is tried again at the new touch, up to four times
RETRY_PAUSE_S = 0.2  # before each retry: the touch an IOC took is shown again after the book moves
# MT5 `close` commands in flight at once. The EA runs the commands of one poll one after
# another (an OrderSend each), so with every ticket's close queued at once those behind the
# first few expired (`command_ttl_ms`, 2 s) before it reached them: in the accelerated soak,
# 52 of some 1,500 closes over eight flattens filled and the tickets piled up from flatten to
# flatten (docs/performance.md, session 10). A close is made, with its expiry, when its turn
# comes.
MT5_CLOSES_IN_FLIGHT = 4


def closing_price(touch: tuple[float, float] | None, inst: Instrument, side: Side, slippage: Decimal) -> Decimal | None:
    """A closing IOC's limit: the touch it takes, `slippage` (a fraction) worse, on the tick grid
    (flatten and the close of one group price alike); None without a touch."""
    if touch is None:
        return None
    bid, ask = touch
    raw = Decimal(repr(ask)) * (1 + slippage) if side == "buy" else Decimal(repr(bid)) * (1 - slippage)
    return inst.limit_price(float(raw), side)


@dataclass(slots=True)
class FlattenLine:
    venue: Venue
    asset: str
    symbol: str
    before: Decimal  # base units, signed
    sent: list[str] = field(default_factory=list)
    after: Decimal = Decimal(0)
    note: str = ""

    def to_json(self, step: Decimal) -> dict[str, Any]:
        return {"venue": self.venue, "asset": self.asset, "symbol": self.symbol, "before": str(self.before),
                "after": str(self.after), "orders": self.sent, "flat": abs(self.after) < step, "note": self.note}


def zeroed_assets(report: Mapping[str, Any]) -> list[str]:
    """The assets a flatten pass left at exactly zero on every venue it covered, with nothing in
    doubt on any of them (no note: a close refused, unknown, left partly filled, unpriced or
    below the minimum, an MT5 terminal silent after its closes, all say so). Their dust
    (`core.compensation.DustBook`) was the remainder of positions that are gone now; an asset
    with a venue left non-zero (even under a lot step: that may be the dust itself) keeps it."""
    lines: dict[str, bool] = {}
    for line in report.get("lines", []):
        zero = Decimal(str(line["after"])) == 0 and not line.get("note")
        lines[str(line["asset"])] = lines.get(str(line["asset"]), True) and zero
    return sorted(asset for asset, zero in lines.items() if zero)


class Flattener:
    def __init__(
        self,
        orchestrator: HedgeOrchestrator,
        gate: RiskGate,
        instruments: Mapping[tuple[Venue, str], Instrument],
        clock: Clock,
        touch: TouchSource,
        *,
        max_slippage_bps: float,
        mt5_positions: Callable[[int | None], Awaitable[list[PositionState] | None]] | None = None,
        mt5_close: Callable[[int, str, Side, Decimal, str, str], Awaitable[OrderUpdate]] | None = None,
        retry_pause_s: float = RETRY_PAUSE_S,
        on_done: Callable[[dict[str, Any]], None] | None = None,
        mt5_closes_in_flight: int = MT5_CLOSES_IN_FLIGHT,
    ) -> None:
        if mt5_closes_in_flight < 1:
            raise ValueError(f"mt5_closes_in_flight {mt5_closes_in_flight}: must be >= 1")
        self._retry_pause_s = retry_pause_s
        self._mt5_closes_in_flight = mt5_closes_in_flight
        self._on_done = on_done  # the report, once a pass ends (the groups it closed are settled)
        self._orch = orchestrator
        self._gate = gate
        self._instruments = instruments
        self._clock = clock
        self._touch = touch
        self._slippage = Decimal(repr(max_slippage_bps)) / Decimal(10_000)
        self._mt5_positions = mt5_positions
        self._mt5_close = mt5_close
        self._seq = itertools.count(1)

    async def run(self, assets: set[str] | None = None) -> dict[str, Any]:
        """One flatten pass over every venue (only `assets`' instruments when given: a hedge held
        too long is closed alone); returns the per venue/asset report."""
        started_ms = self._clock.time_ms()
        batch = f"FL{base36(started_ms)}{next(self._seq)}"
        # A report made after flatten began: every fill before it is in the positions.
        reports = await self._mt5_report(after_ms=started_ms)
        lines: list[FlattenLine] = []
        jobs: list[Awaitable[None]] = []
        counter = itertools.count()
        mt5_turns = asyncio.Semaphore(self._mt5_closes_in_flight)
        for (venue, symbol), inst in sorted(self._instruments.items()):
            asset = self._orch.asset_of(venue, symbol)
            if assets is not None and asset not in assets:
                continue
            line = FlattenLine(venue, asset, symbol, self._gate.exposure.position(venue, asset))
            lines.append(line)
            if venue == "mt5" and reports is not None:
                mine = [p for p in reports if p.symbol == symbol]
                # The terminal's report is the truth for what is open there.
                line.before = sum((inst.to_base_qty(p.volume) * (1 if p.side == "buy" else -1) for p in mine),
                                  Decimal(0))
                self._gate.exposure.set_position(venue, asset, line.before)
                for p in mine:
                    jobs.append(self._close_ticket(batch, next(counter), line, inst, p, mt5_turns))
                continue
            if abs(line.before) < inst.base_step:
                continue
            jobs.append(self._reduce(batch, next(counter), line, inst))
        await asyncio.gather(*jobs)
        await self._orch.durable()
        if reports is not None:
            fresh = await self._mt5_report(after_ms=self._clock.time_ms())
            for line in (ln for ln in lines if ln.venue == "mt5"):
                if fresh is None:
                    # No report since the closes: what is left is not known, so nothing is
                    # called flat; the book (every close's fills applied) is the best guess.
                    line.after = self._gate.exposure.position("mt5", line.asset)
                    line.note = "; ".join(n for n in (line.note, "no report from the terminal after the closes") if n)
                    continue
                inst = self._instruments[(line.venue, line.symbol)]
                line.after = sum((inst.to_base_qty(p.volume) * (1 if p.side == "buy" else -1)
                                  for p in fresh if p.symbol == line.symbol), Decimal(0))
                self._gate.exposure.set_position("mt5", line.asset, line.after)
        for line in lines:
            if not (line.venue == "mt5" and reports is not None):
                line.after = self._gate.exposure.position(line.venue, line.asset)
        out = [ln.to_json(self._instruments[(ln.venue, ln.symbol)].base_step) for ln in lines]
        report = {"batch": batch, "flat": all(r["flat"] for r in out),
                  "residual": [r for r in out if not r["flat"]], "lines": out}
        if self._on_done is not None:
            self._on_done(report)
        return report

    async def _mt5_report(self, after_ms: int | None = None) -> list[PositionState] | None:
        """The EA's positions (ours, by magic); with `after_ms`, from a report made after it."""
        if self._mt5_positions is None:
            return None
        return await self._mt5_positions(after_ms)

    def _order(self, cid: str, batch: str, venue: str, symbol: str, side: Side, qty: Decimal, price: Decimal) -> Order:
        return Order(
            client_order_id=cid[:32],
            group_id=batch,
            venue=venue,  # type: ignore[arg-type]
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            purpose=OrderPurpose.FLATTEN,
            created_ms=self._clock.time_ms(),
            reduce_only=True,  # trading is killed first: nothing else moves the account meanwhile
        )

    def _price(self, inst: Instrument, side: Side) -> Decimal | None:
        return closing_price(self._touch(inst.venue, inst.symbol), inst, side, self._slippage)

    async def _reduce(self, batch: str, n: int, line: FlattenLine, inst: Instrument) -> None:
        """Close the venue's position with marketable IOC orders: one, and up to
        REDUCE_ATTEMPTS - 1 more, each after RETRY_PAUSE_S at the new touch, for what an IOC
        left (a book shows only so much at its touch, and moves). Each attempt has its own
        client order id."""
        remaining = line.before
        for attempt in range(REDUCE_ATTEMPTS):
            if attempt and self._retry_pause_s > 0:
                await asyncio.sleep(self._retry_pause_s)
            side: Side = "sell" if remaining > 0 else "buy"
            qty = inst.to_venue_qty(floor_to(abs(remaining), inst.base_step))
            if inst.to_base_qty(qty) < inst.base_min_qty:
                if attempt == 0:
                    line.note = f"below the venue minimum ({inst.base_min_qty})"
                return
            price = self._price(inst, side)
            if price is None:
                line.note = "no quote to price the order"
                return
            cid = f"{batch}{n}" + (chr(ord("a") + attempt - 1) if attempt else "")
            order = self._order(cid, batch, inst.venue, inst.symbol, side, qty, price)
            line.sent.append(order.client_order_id)
            await self._orch.send_flatten(order)
            if order.state is OrderState.FILLED:
                line.note = ""
                return
            line.note = f"{order.client_order_id} {order.state} {order.reject_reason}".strip()
            if order.state not in (OrderState.EXPIRED, OrderState.CANCELLED):
                # Refused, unknown, or partly filled with trades still to come (a venue's trade
                # list can lag its order): what is left is not known, so never send again.
                return
            remaining = self._gate.exposure.position(line.venue, line.asset)

    async def _close_ticket(self, batch: str, n: int, line: FlattenLine, inst: Instrument, p: PositionState,
                            turns: asyncio.Semaphore) -> None:
        assert self._mt5_close is not None
        close = self._mt5_close
        async with turns:  # made when its turn comes (MT5_CLOSES_IN_FLIGHT)
            side = opposite(p.side)
            price = self._price(inst, side) or Decimal(0)
            order = self._order(f"{batch}{n}", batch, "mt5", p.symbol, side, p.volume, price)
            line.sent.append(order.client_order_id)
            await self._orch.send_flatten(
                order, lambda: close(p.ticket, p.symbol, side, p.volume, batch, order.client_order_id)
            )
        if order.state is not OrderState.FILLED:
            line.note = f"ticket {p.ticket}: {order.client_order_id} {order.state} {order.reject_reason}".strip()
