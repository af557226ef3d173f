"""A full-size group's repair is sent, not refused by the leg limit its entry was sized to.

The demo's sizer (core.pipeline, rule 8) sizes both legs to `max_leg_notional` at the touch
(the higher of the two prices): 1.883 oz of XAU at 2654.0 USD is 4,997.5 USD. When one leg
misses, its retry is a marketable limit up to `max_slippage_bps` (15) through the touch, and
the unwind too: buying the 1.883 oz back at 2658.08 is 5,005.2 USD. The RiskGate refused
both for `risk:max_leg_notional` whenever they did not also shrink their venue's position
(a venue holding the other way from earlier groups), so the group ended `failed` and
trading halted on an ordinary missed leg: the demo soaks' "residual -1.888 left after 2
retries and 1 unwinds", the residual being one whole leg (5000 / 2648).

These run the real pipeline on the demo's own instruments and limits, the real RiskGate,
the HedgeOrchestrator and a real SQLite ledger; the venues are scripted
(tests.execution_support).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.compare import CompareEngine
from core.config import demo_config
from core.hedge import HedgeGroup
from core.instruments import Instrument
from core.models import GroupState, Order, OrderPurpose, Quote, TradingState, Venue
from core.pipeline import OpportunityPipeline
from core.ports import ExecutionGateway
from core.risk import RiskGate
from engine.events import EventLog
from engine.orchestrator import HedgeOrchestrator
from ledger.ledger import Ledger
from tests.execution_support import ScriptedGateway

D = Decimal
OKX: tuple[Venue, str] = ("okx", "XAUT-USDT-SWAP")
BINANCE: tuple[Venue, str] = ("binance", "PAXGUSDT")
# What the pipeline sees: okx asks 2641.0 (buy there), binance bids 2654.0 (sell there), an
# edge over the demo's 8 bps threshold after fees. The leg limit at the higher price, 2654.0,
# sizes both legs: 1.883 oz (4,997.5 USD).
QUOTES: dict[tuple[Venue, str], tuple[float, float]] = {OKX: (2640.9, 2641.0), BINANCE: (2654.0, 2654.1)}


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[Ledger, Path, ManualClock]]:
    clock = ManualClock()
    path = tmp_path / "ledger.db"
    led = await Ledger.open(path, clock=clock)
    try:
        yield led, path, clock
    finally:
        await led.close()


async def _full_size_group(
    ledger: tuple[Ledger, Path, ManualClock], okx: list[str], binance: list[str], *,
    binance_held: Decimal, touch: dict[tuple[Venue, str], tuple[float, float]] | None = None,
    dust: Decimal = Decimal(0),
) -> tuple[HedgeGroup, RiskGate, Path]:
    """One XAU group sized by the demo's pipeline (buy okx, sell binance) run to its end, with
    `binance_held` oz already long on binance (what earlier hedged groups leave there), the
    touch `touch` while it executes (default: the pipeline's quotes) and `dust` XAU booked."""
    led, path, clock = ledger
    cfg = demo_config()
    pairs = [p for p in cfg.build_pairs() if p.name == "XAU"]
    instruments: dict[tuple[Venue, str], Instrument] = {i.key: i for p in pairs for i in p.instruments}
    gate = RiskGate.from_config(clock, cfg.risk)
    gate.exposure.set_position("binance", "XAU", binance_held, D("2654"))
    pipe = OpportunityPipeline(CompareEngine(pairs), cfg.strategy, cfg.risk, gate, clock)
    intent = None
    for (venue, symbol), (bid, ask) in QUOTES.items():
        decision = pipe.on_quote(Quote(venue, symbol, bid, ask, 10_000.0, 10_000.0,
                                       venue_ts_ms=clock.time_ms(), recv_ns=clock.monotonic_ns()))
        if decision is not None and decision.intent is not None:
            intent = decision.intent
    assert intent is not None and (intent.buy.venue, intent.sell.venue) == ("okx", "binance")
    # Sized to the leg limit, as every demo group is when the books are deep.
    assert intent.base_qty == D("1.883")
    assert cfg.risk.max_leg_notional - D(3) < intent.base_qty * D("2654.0") <= cfg.risk.max_leg_notional
    gateways: dict[Venue, ExecutionGateway] = {
        "okx": ScriptedGateway("okx", okx, clock), "binance": ScriptedGateway("binance", binance, clock),
    }
    now = touch or QUOTES
    orch = HedgeOrchestrator(gateways, instruments, gate, clock, EventLog(), journal=led, poll_interval_s=0.0,
                             touch=lambda v, s: now.get((v, s)), asset_of={k: "XAU" for k in instruments})
    if dust:
        orch.compensation.dust.add("XAU", dust)
    group = orch.submit(intent)
    await orch.drain()
    await led.flush()
    return group, gate, path


def _actions(path: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT kind, outcome FROM compensation_actions ORDER BY action_id").fetchall()
    finally:
        con.close()


def _over_the_leg_limit(group: HedgeGroup, order: Order) -> bool:
    return group.instruments[order.venue].to_base_qty(order.qty) * order.price > D(5000)


async def test_the_unwind_of_a_full_size_short_leg_is_sent_though_priced_over_the_leg_limit(
    ledger: tuple[Ledger, Path, ManualClock],
) -> None:
    """The soaks' failure: okx misses the entry and both retries; the unwind buys binance's
    leg back through binance's ask (1.883 oz at 2658.08: 5,005.2 USD), which takes binance
    further long than the 4.153 oz it holds after the group's sale."""
    group, gate, path = await _full_size_group(
        ledger, ["reject", "reject", "reject"], ["fill", "fill"], binance_held=D("6.036"))
    assert _actions(path) == [("retry_hedge", "rejected"), ("retry_hedge", "rejected"), ("unwind", "filled")]
    unwind = next(o for o in group.orders if o.purpose is OrderPurpose.UNWIND)
    assert (unwind.venue, unwind.side, unwind.qty) == ("binance", "buy", D("1.883"))
    assert _over_the_leg_limit(group, unwind)
    assert group.state is GroupState.UNWOUND
    assert group.residual() == 0
    assert gate.state is TradingState.ACTIVE


async def test_the_retry_of_a_full_size_leg_is_sent_though_the_market_moved_it_over_the_leg_limit(
    ledger: tuple[Ledger, Path, ManualClock],
) -> None:
    """okx's ask jumped to 2653.0 as the entry left (the edge closed, so the entry missed): the
    retry buys the whole leg 15 bps through the new ask (1.883 oz at 2656.9: 5,002.9 USD)."""
    moved: dict[tuple[Venue, str], tuple[float, float]] = {OKX: (2652.9, 2653.0), BINANCE: QUOTES[BINANCE]}
    group, gate, path = await _full_size_group(ledger, ["expire", "fill"], ["fill"], binance_held=D("6.036"),
                                               touch=moved)
    retry = next(o for o in group.orders if o.purpose is OrderPurpose.RETRY_HEDGE)
    assert (retry.venue, retry.side, retry.qty) == ("okx", "buy", D("1883"))
    assert _over_the_leg_limit(group, retry)
    assert _actions(path) == [("retry_hedge", "filled")]
    assert group.state is GroupState.REPAIRED
    assert group.residual() == 0
    assert gate.state is TradingState.ACTIVE


async def test_a_full_size_repair_with_dust_folded_in_is_sent(ledger: tuple[Ledger, Path, ManualClock]) -> None:
    """0.064 oz of short dust from earlier groups is folded into the retry (1.947 oz: over the
    leg limit at any price near the touch) and, when the retries miss, into the unwind."""
    group, gate, path = await _full_size_group(
        ledger, ["reject", "reject", "reject"], ["fill", "fill"], binance_held=D("6.036"), dust=D("-0.064"))
    assert _actions(path) == [("retry_hedge", "rejected"), ("retry_hedge", "rejected"), ("unwind", "filled")]
    retry = next(o for o in group.orders if o.purpose is OrderPurpose.RETRY_HEDGE)
    assert (retry.venue, retry.qty) == ("okx", D("1947"))
    unwind = next(o for o in group.orders if o.purpose is OrderPurpose.UNWIND)
    assert (unwind.venue, unwind.side, unwind.qty) == ("binance", "buy", D("1.947"))
    assert group.state is GroupState.UNWOUND
    assert group.own_residual() == 0
    assert gate.state is TradingState.ACTIVE


async def test_a_repair_carrying_more_than_a_lot_step_of_dust_is_judged_against_the_leg_limit(
    ledger: tuple[Ledger, Path, ManualClock],
) -> None:
    """Dust piles up without a bound (only a flatten that leaves the asset at zero clears it),
    so a repair is credited at most the asset's coarsest lot step of it (1 oz, MT5's): 2.5 oz
    folded into the retry (4.383 oz, about 11,600 USD) is new exposure, judged against the leg
    limit and refused; the group fails and trading halts, and no order over the limit is sent."""
    group, gate, path = await _full_size_group(
        ledger, ["reject", "reject", "reject"], ["fill", "fill"], binance_held=D("6.036"), dust=D("-2.5"))
    # Each repair refused by the gate (so none placed: an order the venue rejected would read
    # `rejected`), as 4.383 oz: the group's 1.883 and all of the dust.
    refused = ("retry_hedge", "refused risk:max_leg_notional"), ("unwind", "refused risk:max_leg_notional")
    assert _actions(path) == [refused[0], refused[0], refused[1], ("escalate", "halted")]
    repairs = [o for o in group.orders if o.purpose in (OrderPurpose.RETRY_HEDGE, OrderPurpose.UNWIND)]
    assert all(group.instruments[o.venue].to_base_qty(o.qty) == D("4.383") for o in repairs), repairs
    assert group.state is GroupState.FAILED
    assert gate.state is TradingState.HALTED
