"""Execution scenarios end to end: HedgeOrchestrator + scripted venues + a real SQLite ledger.

Each scenario ends in the expected terminal group state, and the ledger tables (the public
surface documented in docs/ledger.md) hold the expected rows.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import RiskConfig
from core.hedge import HedgeGroup
from core.models import GroupState, Order, OrderPurpose, OrderState, TradingState, Venue
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.orchestrator import HedgeOrchestrator
from ledger.ledger import Ledger
from tests.execution_support import BY_VENUE, INSTRUMENTS, ScriptedGateway, make_intent

TERMINAL = {"hedged", "repaired", "unwound", "rejected", "failed"}


@dataclass
class World:
    clock: ManualClock
    gate: RiskGate
    events: EventLog
    gateways: dict[Venue, ScriptedGateway]
    orch: HedgeOrchestrator
    ledger: Ledger | None
    path: Path | None

    async def run(self) -> HedgeGroup:
        group = self.orch.submit(make_intent())
        await self.orch.drain()
        if self.ledger is not None:
            await self.ledger.flush()
        return group

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        assert self.path is not None
        con = sqlite3.connect(self.path)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


def _world(mt5: list[str], binance: list[str], ledger: Ledger | None, path: Path | None,
           clock: ManualClock, *, leg_policy: str = "concurrent", max_retries: int = 2) -> World:
    # Limits far away: these scenarios are about execution, not risk (tests/unit/test_risk*.py).
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    events = EventLog()
    gateways: dict[Venue, ScriptedGateway] = {
        "mt5": ScriptedGateway("mt5", mt5, clock),
        "binance": ScriptedGateway("binance", binance, clock),
    }
    ports: dict[Venue, ExecutionGateway] = dict(gateways)
    touch = {("mt5", "BTCUSD"): (59990.0, 60000.0), ("binance", "BTCUSDT"): (60100.0, 60110.0)}
    orch = HedgeOrchestrator(
        ports, INSTRUMENTS, gate, clock, events, leg_policy=leg_policy, journal=ledger,
        max_retries=max_retries, poll_interval_s=0.0, touch=lambda v, s: touch.get((v, s)),
    )
    return World(clock, gate, events, gateways, orch, ledger, path)


@pytest.fixture
async def ledger_path(tmp_path: Path) -> AsyncIterator[tuple[Ledger, Path, ManualClock]]:
    clock = ManualClock()
    path = tmp_path / "ledger.db"
    ledger = await Ledger.open(path, clock=clock)
    try:
        yield ledger, path, clock
    finally:
        await ledger.close()


async def _scenario(ledger_path: tuple[Ledger, Path, ManualClock], mt5: list[str], binance: list[str],
                    *, leg_policy: str = "concurrent") -> tuple[World, HedgeGroup]:
    ledger, path, clock = ledger_path
    world = _world(mt5, binance, ledger, path, clock, leg_policy=leg_policy)
    group = await world.run()
    return world, group


def _state(gate: RiskGate) -> TradingState:
    """The gate's state, read afresh (mypy narrows `gate.state` across calls otherwise)."""
    return gate.state


def _ledger(world: World) -> Ledger:
    assert world.ledger is not None
    return world.ledger


def _orders(world: World) -> list[tuple[object, ...]]:
    return world.rows(
        "SELECT client_order_id, venue, purpose, state FROM orders ORDER BY created_at_ms, client_order_id"
    )


def _actions(world: World) -> list[tuple[object, ...]]:
    return world.rows("SELECT kind, outcome FROM compensation_actions ORDER BY action_id")


def _group_state(world: World, group: HedgeGroup) -> object:
    return world.rows("SELECT state FROM hedge_groups WHERE group_id = ?", group.group_id)[0][0]


async def test_both_legs_fill_hedged(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["fill"])
    assert group.state is GroupState.HEDGED
    assert _group_state(world, group) == "hedged"
    assert sorted((p, s) for _c, _v, p, s in _orders(world)) == [("entry", "filled"), ("entry", "filled")]
    assert len(world.rows("SELECT * FROM fills")) == 2
    assert _actions(world) == []
    assert world.orch.closed_by_state == {"hedged": 1}


async def test_reject_then_retry_repairs(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["reject", "fill"])
    assert group.state is GroupState.REPAIRED
    assert _group_state(world, group) == "repaired"
    orders = _orders(world)
    assert ("binance", "retry_hedge", "filled") in [(v, p, s) for _c, v, p, s in orders]
    assert ("binance", "entry", "rejected") in [(v, p, s) for _c, v, p, s in orders]
    assert _actions(world) == [("retry_hedge", "filled")]
    assert len(world.rows("SELECT * FROM fills")) == 2
    # The retry is a new order with attempt + 1 on the same leg.
    retry = next(o for o in group.orders if o.purpose == "retry_hedge")
    assert retry.client_order_id.endswith("l1a1")
    # Within max_slippage_bps (15) of the binance bid 60100.
    assert Decimal("60009.8") <= retry.price <= Decimal("60100")


async def test_retry_fails_then_unwind(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill", "fill"], ["reject", "reject", "reject"])
    assert group.state is GroupState.UNWOUND
    assert _group_state(world, group) == "unwound"
    assert _actions(world) == [("retry_hedge", "rejected"), ("retry_hedge", "rejected"), ("unwind", "filled")]
    purposes = [(v, p, s) for _c, v, p, s in _orders(world)]
    assert purposes.count(("binance", "retry_hedge", "rejected")) == 2
    assert ("mt5", "unwind", "filled") in purposes
    assert abs(group.residual()) < group.step
    assert world.gate.state is TradingState.ACTIVE


async def test_unwind_fails_escalates(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill", "reject"], ["reject", "reject", "reject"])
    assert group.state is GroupState.FAILED
    assert _group_state(world, group) == "failed"
    assert world.gate.state is TradingState.HALTED
    assert _actions(world) == [("retry_hedge", "rejected"), ("retry_hedge", "rejected"),
                               ("unwind", "rejected"), ("escalate", "halted")]
    events = world.rows("SELECT kind, trading_state FROM risk_events")
    assert ("breaker", "halted") in events
    assert any(e.kind == "alert" and e.level == "error" for e in world.events._events)


async def test_partial_fill_residual_compensated(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["partial:0.5", "fill"])
    assert group.state is GroupState.REPAIRED
    retry = next(o for o in group.orders if o.purpose == "retry_hedge")
    assert retry.qty == Decimal("0.050")
    assert len(world.rows("SELECT * FROM fills")) == 3
    assert _actions(world) == [("retry_hedge", "filled")]
    assert abs(group.residual()) < group.step


async def test_timeout_then_late_fill(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["timeout_late"])
    binance = world.gateways["binance"]
    entry = group.orders[1]
    assert binance.places == [(entry.client_order_id, id(entry))]  # resolved by query, never re-sent
    # Asked twice: the first answer is "expired, nothing filled", the second brings the late fill.
    assert binance.queries == [entry.client_order_id] * 2
    assert group.state is GroupState.HEDGED
    states = {(v, p, s) for _c, v, p, s in _orders(world)}
    assert ("binance", "entry", "expired") in states  # the late fill does not revive the order
    assert len(world.rows("SELECT * FROM fills WHERE venue = 'binance'")) == 1
    assert any(e.kind == "late_fill" for e in world.events._events)
    assert _actions(world) == []


async def test_late_fill_after_expiry(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["late_fill"])
    assert group.state is GroupState.HEDGED
    assert len(world.gateways["binance"].places) == 1
    assert len(world.rows("SELECT * FROM fills")) == 2


async def test_ack_lost_resolved_by_query(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["ack_lost"])
    binance = world.gateways["binance"]
    assert group.state is GroupState.HEDGED
    assert binance.places == [(group.orders[1].client_order_id, id(group.orders[1]))]
    assert binance.queries == [group.orders[1].client_order_id]
    assert ("binance", "entry", "filled") in {(v, p, s) for _c, v, p, s in _orders(world)}
    # The order passed through `unknown` before the query resolved it.
    unknown = world.rows("SELECT COUNT(*) FROM events WHERE kind = 'order_state' AND payload LIKE '%unknown%'")
    assert unknown[0][0] == 1


async def test_timeout_unfilled_then_retry(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["fill"], ["timeout_expired", "fill"])
    assert group.state is GroupState.REPAIRED
    assert _actions(world) == [("retry_hedge", "filled")]


async def test_nothing_fills_rejected(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["reject"], ["expire"])
    assert group.state is GroupState.REJECTED
    assert _group_state(world, group) == "rejected"
    assert _actions(world) == []


async def test_sequential_policy_first_leg_rejected(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, group = await _scenario(ledger_path, ["reject"], ["fill"], leg_policy="mt5_first")
    assert group.state is GroupState.REJECTED
    assert world.gateways["binance"].places == []


async def test_sequential_policy_sizes_second_leg(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    _, group = await _scenario(ledger_path, ["partial:0.5"], ["fill"], leg_policy="mt5_first")
    assert group.state is GroupState.HEDGED
    assert group.orders[1].qty == Decimal("0.050")


async def test_stats_after_groups(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    world, _group = await _scenario(ledger_path, ["fill"], ["fill"])
    summary = world.orch.stats()["BTC"]
    assert summary.groups == 1
    assert summary.hit_rate == 1.0
    assert summary.total_pnl == world.orch.realized_pnl


# -- property: random venue behaviour ----------------------------------------------------------
STEPS = ["fill", "reject", "partial:0.5", "partial:0.3", "expire", "timeout", "timeout_expired",
         "ack_lost", "late_fill", "timeout_late"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mt5=st.lists(st.sampled_from(STEPS), min_size=0, max_size=6),
    binance=st.lists(st.sampled_from(STEPS), min_size=0, max_size=6),
    groups=st.integers(min_value=1, max_value=3),
    retries=st.integers(min_value=0, max_value=3),
)
async def test_random_venue_behaviour(mt5: list[str], binance: list[str], groups: int, retries: int) -> None:
    clock = ManualClock()
    world = _world(mt5, binance, None, None, clock, max_retries=retries)
    submitted = [world.orch.submit(make_intent()) for _ in range(groups)]
    await world.orch.drain()
    for group in submitted:
        assert group.terminal, group.state
        if group.state is not GroupState.FAILED:
            assert abs(group.own_residual()) < group.step
        else:
            assert world.gate.state is TradingState.HALTED
    # Across the asset: what the surviving groups hold is exactly the booked dust.
    held = sum((g.residual() for g in submitted if g.state is not GroupState.FAILED), Decimal(0))
    if all(g.state is not GroupState.FAILED for g in submitted):
        assert held == world.orch.compensation.dust.get("BTC")
    for gw in world.gateways.values():
        owner: dict[str, int] = {}
        for coid, ident in gw.places:
            assert owner.setdefault(coid, ident) == ident, f"{coid} sent for two orders"
    assert not world.orch.open


async def test_open_order_past_deadline_is_cancelled_not_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    """An order the venue keeps open is queried, then cancelled once the group deadline passed."""
    clock = ManualClock()
    world = _world(["fill", "fill"], ["fill"], None, None, clock)
    binance = world.gateways["binance"]
    original = binance.place

    async def acked(order: Order) -> OrderUpdate:
        await original(order)
        placed = binance.orders[order.client_order_id]
        placed.fills.clear()
        placed.state = OrderState.ACKED
        clock.advance(ms=10_000)  # the group deadline passes while the order rests
        return OrderUpdate(order.client_order_id, OrderState.ACKED, "v1")

    monkeypatch.setattr(binance, "place", acked)
    group = world.orch.submit(make_intent())
    await world.orch.drain()
    entry = group.orders[1]
    # Every binance order (entry, then both retries) rested: each was cancelled, none re-sent.
    placed = [c for c, _ in binance.places]
    assert binance.cancels == placed and len(set(placed)) == len(placed) == 3
    assert entry.state is OrderState.CANCELLED
    assert group.state is GroupState.UNWOUND


async def test_sub_step_imbalance_is_hedged_and_booked_as_dust() -> None:
    clock = ManualClock()
    world = _world(["fill"], ["partial:0.95"], None, None, clock)
    group = world.orch.submit(make_intent())
    await world.orch.drain()
    assert group.state is GroupState.HEDGED  # 0.1 vs 0.095: within one lot step (0.01)
    assert world.orch.compensation.dust.get("BTC") == Decimal("0.005")


async def test_order_of_a_closed_group_is_resolved_after_restart(
    ledger_path: tuple[Ledger, Path, ManualClock],
) -> None:
    """Review finding: an order left open in the ledger whose group had already closed is asked
    about by client order id on restart; a fill it got after the group closed is journaled and
    halts trading (that exposure is not hedged by anything)."""
    ledger, _path, clock = ledger_path
    world = _world(["fill"], ["fill"], ledger, _path, clock)
    group = await world.run()
    assert group.state is GroupState.HEDGED
    # An extra order of that group, still open as far as the ledger knows, that the venue
    # filled meanwhile (e.g. the process died before its answer was journaled).
    spec = group.intent.buy
    orphan = Order(client_order_id="qaorphan1", group_id=group.group_id, venue=spec.venue, symbol=spec.symbol,
                   side="buy", qty=spec.quantity, price=spec.limit_price, purpose=group.orders[0].purpose,
                   created_ms=clock.time_ms())
    await ledger.order_created(orphan)
    orphan.state = OrderState.SUBMITTED
    world.gateways[spec.venue].script.append("fill")
    await world.gateways[spec.venue].place(orphan)  # the venue executed it; we never heard
    await world.orch.resolve_orphan(orphan)
    await ledger.flush()
    assert orphan.state is OrderState.FILLED
    assert world.gateways[spec.venue].queries == ["qaorphan1"]  # asked, not re-sent
    assert world.rows("SELECT state FROM orders WHERE client_order_id = 'qaorphan1'") == [("filled",)]
    assert len(world.rows("SELECT * FROM fills WHERE order_id = 'qaorphan1'")) == 1
    assert world.gate.state is TradingState.HALTED
    assert world.rows("SELECT kind, trading_state FROM risk_events") == [("breaker", "halted")]


async def test_late_fill_on_a_closed_group_is_caught_live_and_halts(
    ledger_path: tuple[Ledger, Path, ManualClock],
) -> None:
    """The group unwound and closed; then the venue reports a fill of its expired entry leg.
    Caught live (not at the next restart): journaled, counted as exposure, trading halted."""
    world, group = await _scenario(ledger_path, ["fill", "fill"], ["expire", "expire", "expire"])
    assert group.state is GroupState.UNWOUND and world.gate.state is TradingState.ACTIVE
    entry = group.orders[1]
    assert (entry.venue, entry.purpose, entry.state) == ("binance", OrderPurpose.ENTRY, OrderState.EXPIRED)
    untracked = world.orch.late_fill("other-group", "nope")  # an order this engine does not know: halts
    assert untracked is not None
    await untracked
    assert _state(world.gate) is TradingState.HALTED
    world.gate.rearm("test")
    placed = world.gateways["binance"].orders[entry.client_order_id]
    placed.pending_fills.append(world.gateways["binance"]._fill(entry, entry.qty))
    asset = world.orch.asset_of("binance", entry.symbol)
    before = world.gate.exposure.position("binance", asset)
    work = world.orch.late_fill(group.group_id, entry.client_order_id)
    assert work is not None
    await work
    await _ledger(world).flush()
    assert _state(world.gate) is TradingState.HALTED
    assert "late fill on closed group" in world.gate.reason
    assert entry.filled_qty == entry.qty
    base = BY_VENUE["binance"].to_base_qty(entry.qty)
    assert world.gate.exposure.position("binance", asset) == before + (base if entry.side == "buy" else -base)
    fills = world.rows("SELECT o.client_order_id FROM fills f JOIN orders o ON o.order_id = f.order_id "
                       "WHERE o.client_order_id = ?", entry.client_order_id)
    assert len(fills) == 1
    kinds = [e.kind for e in world.events.recent(50)]
    assert "late_fill" in kinds


async def test_entry_legs_pass_the_gate_together_or_not_at_all(
    ledger_path: tuple[Ledger, Path, ManualClock],
) -> None:
    ledger, path, clock = ledger_path
    world = _world(["fill"], ["fill"], ledger, path, clock)
    # Room for one leg's notional on binance, but not for the other leg on mt5.
    world.gate.limits = dataclasses.replace(world.gate.limits, max_venue_exposure=Decimal(1))
    group = await world.run()
    assert group.state is GroupState.REJECTED
    assert world.gateways["mt5"].places == [] and world.gateways["binance"].places == []
    assert {o.reject_reason.split(":")[0] for o in group.orders} <= {"risk", "paired leg refused"}
    assert world.rows("SELECT count(*) FROM orders")[0][0] == 0  # never sent, never journaled as created
    assert world.gate.exposure.reservations == {}


async def test_a_kill_during_the_write_ahead_withholds_the_entry(
    ledger_path: tuple[Ledger, Path, ManualClock], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger, path, clock = ledger_path
    world = _world(["fill"], ["fill"], ledger, path, clock)
    original = ledger.order_created

    async def racing(order: Order) -> int:
        world.gate.kill("kill during the write-ahead")
        return await original(order)

    monkeypatch.setattr(ledger, "order_created", racing)
    group = await world.run()
    assert group.state is GroupState.REJECTED
    assert world.gateways["mt5"].places == [] and world.gateways["binance"].places == []
    rows = world.rows("SELECT state FROM orders")
    assert rows and all(r[0] == "rejected" for r in rows)  # created before the kill, never sent
    assert all(o.reject_reason == "risk:halted" for o in group.orders)


async def test_a_fill_reported_while_the_group_settles_is_asked_about_again_after_it_closes(
    ledger_path: tuple[Ledger, Path, ManualClock],
) -> None:
    """The EA reports a deal for an expired leg while its group is still compensating: the
    group's flow asks again, and once more after the group closed (the fill may land in
    between) — it is journaled and, being unhedged, halts."""
    world, group = await _scenario(ledger_path, ["fill", "fill"], ["expire", "expire", "expire"])
    assert group.state is GroupState.UNWOUND
    entry = group.orders[1]
    world.orch.adopt(group)  # as seen while the group was still settling
    assert world.orch.late_fill(group.group_id, entry.client_order_id) is None  # its flow's business
    placed = world.gateways["binance"].orders[entry.client_order_id]
    placed.pending_fills.append(world.gateways["binance"]._fill(entry, entry.qty))
    world.orch._close(group)  # the group closes: the order is asked about once more
    await world.orch.drain()
    await _ledger(world).flush()
    assert entry.filled_qty == entry.qty
    assert world.gate.state is TradingState.HALTED
    fills = world.rows("SELECT count(*) FROM fills f JOIN orders o ON o.order_id = f.order_id "
                       "WHERE o.client_order_id = ?", entry.client_order_id)
    assert fills == [(1,)]


async def test_while_flattening_only_flatten_orders_leave(ledger_path: tuple[Ledger, Path, ManualClock]) -> None:
    ledger, path, clock = ledger_path
    world = _world(["fill"], ["fill"], ledger, path, clock)
    world.orch.begin_flatten()
    group = await world.run()
    assert group.state is GroupState.REJECTED
    assert world.gateways["mt5"].places == [] and world.gateways["binance"].places == []
    assert {o.reject_reason for o in group.orders} <= {"risk:flattening", "paired leg refused: risk:flattening"}
