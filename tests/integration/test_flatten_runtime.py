"""Runtime.flatten while it runs, and what it reports when it cannot finish the job.

The end-to-end tests (test_operator_e2e, test_operator_keys_e2e) show a flatten ending flat
on the demo; they cannot show what happens *during* one, because it is over before anyone
can act. Here a started Runtime (manual clock, no ledger, no exchange feeds: the only quotes
are the test's) trades through venue doubles that keep a flatten order in flight until the
test lets go (tests/holding_gateway.py), so:

- rearm, pause and resume are refused (ControlRefused) while the flatten runs, and change
  nothing (a rearm then would let groups trade against what flatten is closing);
- a trading state re-armed behind the flatten's back is halted again when it ends;
- a group still open when flatten finishes (a filled leg whose partner is still working)
  is listed in `groups_still_open`, and is not cancelled;
- a venue that refuses to close leaves a residual in the result, its message and
  `last_flatten`; the engine ends halted either way;
- with a ledger, a flatten that leaves an asset at zero on every venue clears its dust, in
  the DustBook and in the ledger (a restart agrees); an asset with a residual keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.hedge import HedgeGroup, client_order_id
from core.models import (
    ExecutionIntent,
    ExecutionLeg,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    Quote,
    TradingState,
    Venue,
)
from engine.control import ControlRefused, ControlResult
from engine.runtime import Runtime
from ledger.ledger import Ledger
from tests.holding_gateway import HoldingGateway, Placement, Step, held_config, until

ZERO = Decimal(0)
BTC: dict[Venue, str] = {"okx": "BTC-USDT-SWAP", "binance": "BTCUSDT"}


@dataclass
class Rig:
    rt: Runtime
    okx: HoldingGateway
    binance: HoldingGateway
    placements: list[Placement]
    steps: dict[str, Step] = field(default_factory=dict)  # by client order id
    by_purpose: dict[OrderPurpose, Step] = field(default_factory=dict)  # else by purpose, else reject
    refusing: set[Venue] = field(default_factory=set)  # venues that reject everything
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def hold(self, venue: Venue, qty: str) -> None:
        self.rt.gate.exposure.set_position(venue, "BTC", Decimal(qty))

    def spawn(self, work: Coroutine[Any, Any, ControlResult]) -> asyncio.Task[ControlResult]:
        task = asyncio.create_task(work)
        self.tasks.append(task)
        return task

    def flatten_orders(self, venue: Venue) -> list[Placement]:
        return [p for p in self.placements if p.venue == venue and p.purpose is OrderPurpose.FLATTEN]


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    async with _started(tmp_path, monkeypatch, "") as held:
        yield held


@asynccontextmanager
async def _started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_path: str) -> AsyncIterator[Rig]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    # No exchange feeds: the only quotes are the test's (and nothing runs on real time).
    monkeypatch.setattr("engine.runtime.build_feeds", lambda *args, **kwargs: [])
    clock = ManualClock()
    rt = Runtime(held_config(), is_demo=True, clock=clock, ledger_path=ledger_path, mt5_in_process=True)
    placements: list[Placement] = []
    steps: dict[str, Step] = {}
    by_purpose: dict[OrderPurpose, Step] = {}
    refusing: set[Venue] = set()

    def decide(order: Order) -> Step:
        if order.venue in refusing:
            return "reject"
        return steps.get(order.client_order_id) or by_purpose.get(order.purpose, "reject")

    okx, binance, mt5 = (HoldingGateway(v, clock, decide, placements) for v in ("okx", "binance", "mt5"))
    rt.gateways.update({"okx": okx, "binance": binance, "mt5": mt5})  # the orchestrator's routes too
    held = Rig(rt, okx, binance, placements, steps, by_purpose, refusing)
    await rt.start()
    now = clock.monotonic_ns()
    # Touches to price the flatten orders. Twice: the simulated MT5 venue quoted BTC near 97,000
    # at start, so the first 60,000 quote is refused by the price guard until the others agree.
    for _ in range(2):
        for venue, symbol in BTC.items():
            rt.ingest(Quote(venue, symbol, 60000.0, 60010.0, 5.0, 5.0, clock.time_ms(), now))
    try:
        yield held
    finally:
        for task in held.tasks:
            task.cancel()
        await asyncio.gather(*held.tasks, return_exceptions=True)
        await rt.orchestrator.shutdown(timeout_s=1.0)  # a failed test may leave a group held
        await rt.stop()


def _state(group: HedgeGroup) -> GroupState:
    """The group's state now (read through a call, so mypy does not keep an earlier narrowing)."""
    return group.state


def _intent(rt: Runtime, buy: Venue, sell: Venue) -> ExecutionIntent:
    qty = Decimal("0.01")
    bi, si = rt.instruments[(buy, BTC[buy])], rt.instruments[(sell, BTC[sell])]
    return ExecutionIntent(
        pair="BTC",
        buy=ExecutionLeg(buy, bi.symbol, "buy", bi.to_venue_qty(qty), Decimal(60000), qty),
        sell=ExecutionLeg(sell, si.symbol, "sell", si.to_venue_qty(qty), Decimal(60100), qty),
        base_qty=qty, expected_edge_bps=10.0, buy_price=60000.0, sell_price=60100.0,
        created_ms=rt.clock.time_ms(),
    )


def _line(result: ControlResult, venue: Venue) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [ln for ln in result.detail["lines"]
                                   if (ln["venue"], ln["asset"]) == (venue, "BTC")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("action", ["rearm", "pause", "resume"])
async def test_rearm_pause_resume_are_refused_while_flatten_runs(rig: Rig, action: str) -> None:
    rt = rig.rt
    rig.hold("okx", "0.05")
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"  # okx takes its time to answer
    flatten = rig.spawn(rt.control.flatten("test flatten"))
    await until(lambda: len(rig.okx.parked) == 1, "the flatten order held by okx")
    [held] = rig.okx.parked

    def seen() -> tuple[object, ...]:
        return (rt.gate.state, rt.gate.reason, len(rt.gate.history), rt.orchestrator.flattening,
                len(rt.risk.rows()), rt.events.total)

    before = seen()
    assert before[:2] == (TradingState.HALTED, "flatten: test flatten")
    with pytest.raises(ControlRefused, match=f"^{action} refused: a flatten is running"):
        await getattr(rt.control, action)("operator says so")
    assert seen() == before
    assert not flatten.done()

    rig.okx.finish(held, "fill")
    result = await asyncio.wait_for(flatten, 10)
    assert (result.action, result.trading_state, result.detail["flat"]) == ("flatten", "halted", True)
    assert rt.gate.state is TradingState.HALTED
    # The refusal ends with the flatten.
    after: ControlResult = await getattr(rt.control, action)("after the flatten")
    assert after.action == action
    rearmed = await rt.control.rearm("after the flatten")
    assert rearmed.trading_state == "active" and not rt.orchestrator.flattening


async def test_a_rearm_behind_the_flattens_back_still_ends_halted(rig: Rig) -> None:
    rt = rig.rt
    rig.hold("okx", "0.05")
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    flatten = rig.spawn(rt.control.flatten("test flatten"))
    await until(lambda: len(rig.okx.parked) == 1, "the flatten order held by okx")
    rt.gate.rearm("not through the Runtime")  # e.g. a future code path that forgets the refusal
    assert rt.gate.state is TradingState.ACTIVE

    rig.okx.finish(next(iter(rig.okx.parked)), "fill")
    result = await asyncio.wait_for(flatten, 10)
    assert result.trading_state == "halted"
    assert (rt.gate.state, rt.gate.reason) == (TradingState.HALTED, "flatten: test flatten")


async def test_a_group_still_open_when_flatten_finishes_is_reported(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, orch = rig.rt, rig.rt.orchestrator
    group = orch.submit(_intent(rt, buy="okx", sell="binance"))
    buy, sell = client_order_id(group.group_id, 0, 0), client_order_id(group.group_id, 1, 0)
    rig.steps.update({buy: "fill", sell: "rest"})  # one leg filled, its partner still working
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    await until(lambda: rig.binance.parked == {sell} and group.orders[0].state is OrderState.FILLED,
                "the group with one leg filled and the other resting")
    # Flatten waits (bounded) for groups to settle; this one cannot, so shorten the bound.
    asked: list[float] = []
    settle = orch.settle_open

    async def short_settle(timeout_s: float) -> bool:
        asked.append(timeout_s)
        return await settle(timeout_s=0.05)

    monkeypatch.setattr(orch, "settle_open", short_settle)
    result = await asyncio.wait_for(rt.control.flatten("test flatten"), 10)

    assert asked == [2 * 600_000 / 1000 + 5]  # the bound the engine asked for
    assert result.detail["groups_still_open"] == [group.group_id]
    assert group.group_id in orch.open and group.state is GroupState.WORKING
    assert rig.binance.cancels == []  # a group with a filled leg is not cancelled
    # The filled leg is closed on its venue like any position.
    okx = _line(result, "okx")
    assert (Decimal(okx["before"]), Decimal(okx["after"]), okx["flat"]) == (Decimal("0.01"), ZERO, True)
    assert [(p.side, p.qty) for p in rig.flatten_orders("okx")] == [("sell", Decimal(1))]
    assert result.detail["flat"] is True and result.trading_state == "halted"
    assert rt.control.last_flatten is not None and rt.control.last_flatten["groups_still_open"] == [group.group_id]

    rig.binance.finish(sell, "fill")  # the group settles later, on its own; the engine stays halted
    assert await orch.settle_open(timeout_s=10.0), f"still open: {sorted(orch.open)}"
    assert _state(group) is GroupState.HEDGED
    assert rt.gate.state is TradingState.HALTED and orch.flattening


async def test_a_venue_that_cannot_close_is_reported_as_residual(rig: Rig) -> None:
    rt = rig.rt
    rig.hold("okx", "0.05")
    rig.hold("binance", "-0.03")
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    rig.refusing.add("okx")  # okx rejects every order
    result = await asyncio.wait_for(rt.control.flatten("test flatten"), 10)

    assert result.message == "flatten done: residual okx:BTC 0.05"
    assert (result.changed, result.trading_state, result.detail["flat"]) == (True, "halted", False)
    okx = _line(result, "okx")
    [coid] = okx["orders"]
    assert result.detail["residual"] == [okx]
    assert (Decimal(okx["before"]), Decimal(okx["after"]), okx["flat"]) == (Decimal("0.05"), Decimal("0.05"), False)
    assert okx["note"] == f"{coid} rejected rejected by the test venue"
    binance = _line(result, "binance")
    assert (Decimal(binance["before"]), Decimal(binance["after"]), binance["flat"]) == (Decimal("-0.03"), ZERO, True)
    assert result.detail["groups_still_open"] == []
    assert rt.control.last_flatten == result.detail
    assert {v: Decimal(q["BTC"]) for v, q in rt.view.positions().items() if "BTC" in q} == {
        "okx": Decimal("0.05"), "binance": ZERO}
    assert any(e.kind == "flatten" and e.level == "error" and e.text == result.message
               for e in rt.events.recent(50))
    assert rt.gate.state is TradingState.HALTED


DUST = {"BTC": Decimal("0.0004"), "XAU": Decimal("-0.0005")}  # under every venue's lot step


async def _with_dust(tmp_path: Path) -> Path:
    """A ledger whose dust book holds DUST, as earlier groups' repairs left it."""
    path = tmp_path / "dust.db"
    ledger = await Ledger.open(path)
    try:
        for pair, qty in DUST.items():
            ledger.dust(pair, qty)
        await ledger.flush()
    finally:
        await ledger.close()
    return path


async def _dust_after_restart(path: Path) -> dict[str, Decimal]:
    """What a restart would load into the DustBook (`Recovery.restore`: `recover().dust`)."""
    ledger = await Ledger.open(path)
    try:
        return dict((await ledger.recover()).dust)
    finally:
        await ledger.close()


@pytest.mark.parametrize("okx_refuses", [False, True])
async def test_a_flatten_clears_the_dust_of_an_asset_it_left_at_zero_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, okx_refuses: bool,
) -> None:
    """Claim: dust is the remainder of positions; a flatten that found every venue's position
    of an asset flat or closed it fully makes that asset's dust stale, so it is cleared from
    the DustBook (no later repair folds it) and journaled as 0 (a restart does not bring it
    back). An asset a close failed for (okx refuses: BTC left at 0.05) keeps its dust, in
    memory and in the ledger; XAU, found flat everywhere, is cleared either way."""
    path = await _with_dust(tmp_path)
    async with _started(tmp_path, monkeypatch, str(path)) as rig:
        rt = rig.rt
        dust = rt.orchestrator.compensation.dust
        assert dust.items() == DUST  # restored from the ledger at start
        rig.hold("okx", "0.05")
        rig.hold("binance", "-0.05")
        rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
        if okx_refuses:
            rig.refusing.add("okx")
        result = await asyncio.wait_for(rt.control.flatten("test flatten"), 10)
        assert result.detail["flat"] is not okx_refuses
        kept = {"BTC": DUST["BTC"]} if okx_refuses else {}
        assert dust.items() == kept
        cleared = [e.text for e in rt.events.recent(100) if e.kind == "dust"]
        batch = result.detail["batch"]
        assert cleared == [f"{pair}: dust {DUST[pair]:f} cleared: flatten {batch} left it at zero on every venue"
                           for pair in (["XAU"] if okx_refuses else ["BTC", "XAU"])]
        await rt.stop()
    assert await _dust_after_restart(path) == kept
