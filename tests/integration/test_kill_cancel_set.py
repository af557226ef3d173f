"""Which orders a kill cancels, deterministically.

The kill bench (`quantarb bench kill`) only measures how fast cancels leave, against real
time; whether the *right* orders are cancelled was covered by nothing. Here several groups
are held in flight at known points (venues that keep orders open until the test lets go,
a real MT5 command queue nobody pulls from, a manual clock that never moves) and the kill
lands in the middle of them:

- group A, both entries acked and resting, nothing filled: both cancelled;
- group B, one leg filled, the other resting: left alone; it goes on to compensate (a
  retry_hedge, which a halted gate still lets through because it shrinks the group);
- group C, an MT5 entry whose command is still queued (not yet pulled by the EA) and an
  acked exchange entry: the command is withdrawn (a pull after the kill returns nothing),
  the other leg cancelled, and the group ends with nothing filled;
- group D, submitted just before the kill, not yet started: its entries never leave.

The kill's `ControlResult.detail["cancelled"]` must be exactly A's and C's entries, and the
only order any venue sees after the kill is B's retry. A command the EA has already pulled
cannot be withdrawn: the kill lists its order under `not_cancelled`, never as cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.commands import CommandFill, CommandState
from core.config import QuantarbConfig, demo_config
from core.hedge import HedgeGroup, client_order_id
from core.instruments import Instrument
from core.models import (
    ExecutionIntent,
    ExecutionLeg,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    TradingState,
    Venue,
)
from engine.runtime import Runtime
from mt5_bridge.gateway import MT5Gateway, command_id_for
from mt5_bridge.queue import CommandQueue, InMemoryCommandStore
from tests.holding_gateway import HoldingGateway, Placement, Step, until

TERMINAL = "T1"
ZERO = Decimal(0)
PRICES: dict[str, tuple[Decimal, Decimal]] = {  # (buy limit, sell limit) per pair
    "BTC": (Decimal(60000), Decimal(60100)),
    "ETH": (Decimal(3000), Decimal(3003)),
    "XAU": (Decimal(2650), Decimal(2652)),
}
BASE_QTY: dict[str, Decimal] = {"BTC": Decimal("0.01"), "ETH": Decimal("0.1"), "XAU": Decimal(1)}


def _config() -> QuantarbConfig:
    cfg = demo_config().model_dump(mode="python")
    # No quote ever makes an intent (the groups here are submitted by the test), and no
    # engine timeout can fire while the test holds an order: only the test moves things.
    # (max_edge_bps, the price guard's ceiling, must stay above the threshold.)
    cfg["strategy"].update({"threshold_bps": 10_000, "max_edge_bps": 20_000, "order_timeout_ms": 600_000,
                            "group_deadline_ms": 600_000})
    return QuantarbConfig.model_validate(cfg)


@dataclass
class Rig:
    rt: Runtime
    okx: HoldingGateway
    binance: HoldingGateway
    queue: CommandQueue
    placements: list[Placement]
    steps: dict[str, Step]  # what the venue does with each client order id (else: reject)

    def instrument(self, venue: Venue, pair: str) -> Instrument:
        return next(i for p in self.rt.pairs if p.name == pair for i in p.instruments if i.venue == venue)

    def intent(self, pair: str, buy: Venue, sell: Venue) -> ExecutionIntent:
        bi, si = self.instrument(buy, pair), self.instrument(sell, pair)
        buy_price, sell_price = PRICES[pair]
        qty = BASE_QTY[pair]
        return ExecutionIntent(
            pair=pair,
            buy=ExecutionLeg(buy, bi.symbol, "buy", bi.to_venue_qty(qty), buy_price, qty),
            sell=ExecutionLeg(sell, si.symbol, "sell", si.to_venue_qty(qty), sell_price, qty),
            base_qty=qty,
            expected_edge_bps=10.0,
            buy_price=float(buy_price),
            sell_price=float(sell_price),
            created_ms=self.rt.clock.time_ms(),
        )


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("HOME", str(tmp_path))
    clock = ManualClock()
    rt = Runtime(_config(), is_demo=True, clock=clock, ledger_path="", mt5_in_process=True)
    placements: list[Placement] = []
    steps: dict[str, Step] = {}

    def decide(order: Order) -> Step:
        return steps.get(order.client_order_id, "reject")

    okx = HoldingGateway("okx", clock, decide, placements)
    binance = HoldingGateway("binance", clock, decide, placements)
    queue = CommandQueue(InMemoryCommandStore(), clock)
    mt5 = MT5Gateway(queue, TERMINAL, {i.symbol: i for (v, _), i in rt.instruments.items() if v == "mt5"}, clock,
                     magic=7701, deviation_points=20, filling="IOC", command_ttl_ms=600_000)
    # The orchestrator routes through this same mapping.
    rt.gateways.update({"okx": okx, "binance": binance, "mt5": mt5})
    run = asyncio.create_task(rt.orchestrator.run(), name="orchestrator")
    try:
        yield Rig(rt, okx, binance, queue, placements, steps)
    finally:
        await rt.orchestrator.shutdown(timeout_s=1.0)  # a failed test may leave groups held
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def _entry(group: HedgeGroup, leg: int) -> str:
    return client_order_id(group.group_id, leg, 0)


def _order(group: HedgeGroup, coid: str) -> Order:
    return next(o for o in group.orders if o.client_order_id == coid)


async def test_kill_cancels_exactly_the_entries_of_groups_with_nothing_filled(rig: Rig) -> None:
    rt, orch, okx, binance, queue = rig.rt, rig.rt.orchestrator, rig.okx, rig.binance, rig.queue
    a = orch.submit(rig.intent("BTC", buy="okx", sell="binance"))
    b = orch.submit(rig.intent("ETH", buy="okx", sell="binance"))
    c = orch.submit(rig.intent("XAU", buy="mt5", sell="binance"))
    a_buy, a_sell, b_buy, b_sell, c_mt5, c_sell = (
        _entry(a, 0), _entry(a, 1), _entry(b, 0), _entry(b, 1), _entry(c, 0), _entry(c, 1))
    b_retry = client_order_id(b.group_id, 1, 1)
    # C's MT5 leg goes to the command queue, where nobody pulls it.
    rig.steps.update({a_buy: "rest", a_sell: "rest", b_buy: "fill", b_sell: "rest", b_retry: "fill",
                      c_sell: "rest"})
    c_command = command_id_for(c_mt5)

    def in_flight() -> bool:
        cmd = queue.get(c_command)
        return (okx.parked == {a_buy} and binance.parked == {a_sell, b_sell, c_sell}
                and cmd is not None and cmd.state is CommandState.PENDING
                and all(o.state is OrderState.ACKED for o in a.orders)
                and _order(b, b_buy).state is OrderState.FILLED
                and _order(c, c_mt5).state is OrderState.SUBMITTED)

    # (C's command still `pending`: the EA has not pulled it.)
    await until(in_flight, "A acked and resting, B one leg filled, C's MT5 command queued")

    d = orch.submit(rig.intent("BTC", buy="binance", sell="okx"))  # not started when the kill lands
    sent_before_kill = len(rig.placements)
    result = await rt.control.kill("test kill")

    assert (result.action, result.trading_state, result.changed) == ("kill", "halted", True)
    assert sorted(result.detail["cancelled"]) == sorted([a_buy, a_sell, c_mt5, c_sell])
    # Cancel requests went to exactly those orders; B's working leg was left alone.
    assert okx.cancels == [a_buy]
    assert sorted(binance.cancels) == sorted([a_sell, c_sell])
    # The kill returns with the venues' answers applied.
    assert [o.state for o in (*a.orders, *c.orders)] == [
        OrderState.CANCELLED, OrderState.CANCELLED, OrderState.REJECTED, OrderState.CANCELLED]
    assert _order(b, b_sell).state is OrderState.ACKED
    # C's command was withdrawn before the EA saw it: a pull now returns nothing.
    cmd = queue.get(c_command)
    assert cmd is not None and (cmd.state, cmd.deliveries) == (CommandState.WITHDRAWN, 0)
    assert queue.pending(TERMINAL) == []

    binance.finish(b_sell, "expire")  # B's working leg ends unfilled: B is broken, and compensates
    assert await orch.settle_open(timeout_s=10.0), f"still open: {sorted(orch.open)}"

    assert a.state is GroupState.REJECTED
    assert [(o.client_order_id, o.state, o.filled_qty) for o in a.orders] == [
        (a_buy, OrderState.CANCELLED, ZERO), (a_sell, OrderState.CANCELLED, ZERO)]
    assert c.state is GroupState.REJECTED
    assert [(o.client_order_id, o.state, o.filled_qty) for o in c.orders] == [
        (c_mt5, OrderState.REJECTED, ZERO), (c_sell, OrderState.CANCELLED, ZERO)]
    assert _order(c, c_mt5).reject_reason == "withdrawn"
    assert b.state is GroupState.REPAIRED
    assert [(o.client_order_id, o.purpose, o.state) for o in b.orders] == [
        (b_buy, OrderPurpose.ENTRY, OrderState.FILLED),
        (b_sell, OrderPurpose.ENTRY, OrderState.EXPIRED),
        (b_retry, OrderPurpose.RETRY_HEDGE, OrderState.FILLED),
    ]
    assert d.state is GroupState.REJECTED
    assert {o.reject_reason for o in d.orders} == {"risk:halted", "paired leg refused: risk:halted"}
    # After the kill, the only order any venue saw is B's retry; no entry, and no second MT5 command.
    assert [(p.venue, p.client_order_id, p.purpose) for p in rig.placements[sent_before_kill:]] == [
        ("binance", b_retry, OrderPurpose.RETRY_HEDGE)]
    assert (okx.cancels, sorted(binance.cancels)) == ([a_buy], sorted([a_sell, c_sell]))  # each once, none later
    assert [command.command_id for command in queue.commands()] == [c_command]
    assert queue.pending(TERMINAL) == []  # the EA's next pull: still nothing
    assert rt.gate.state is TradingState.HALTED


async def test_an_mt5_command_the_ea_already_pulled_is_not_reported_cancelled(rig: Rig) -> None:
    rt, orch, queue = rig.rt, rig.rt.orchestrator, rig.queue
    c = orch.submit(rig.intent("XAU", buy="mt5", sell="binance"))
    c_mt5, c_sell = _entry(c, 0), _entry(c, 1)
    c_retry = client_order_id(c.group_id, 1, 1)
    rig.steps.update({c_sell: "rest", c_retry: "fill"})
    c_command = command_id_for(c_mt5)
    await until(lambda: queue.get(c_command) is not None and rig.binance.parked == {c_sell},
                "C's MT5 command queued and its binance leg resting")
    assert [cmd.command_id for cmd in queue.pending(TERMINAL)] == [c_command]  # the EA pulls it

    result = await rt.control.kill("test kill")
    cmd = queue.get(c_command)
    assert cmd is not None and cmd.state is CommandState.DELIVERED  # too late to withdraw
    assert _order(c, c_sell).state is OrderState.CANCELLED
    assert _order(c, c_mt5).state is OrderState.SUBMITTED  # still working on the terminal
    await queue.ack(TERMINAL, c_command, "accepted", 10009, "")
    await queue.fill(TERMINAL, c_command, CommandFill(deal=1, order=2, position=3, volume=Decimal("0.01"),
                                                      price=Decimal(2650), commission=ZERO, time_msc=1))
    assert await orch.settle_open(timeout_s=10.0), f"still open: {sorted(orch.open)}"
    assert _order(c, c_mt5).state is OrderState.FILLED
    assert c.state is GroupState.REPAIRED  # hedged by the retry a halted gate lets through

    assert result.detail["cancelled"] == [c_sell]
    assert result.detail["not_cancelled"] == {c_mt5: "submitted"}
