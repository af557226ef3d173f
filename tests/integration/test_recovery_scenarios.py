"""Restart recovery, one precise crash point at a time, on real SQLite ledger files.

Why these tests exist: the only crash test (test_crash_recovery.py) SIGKILLs `quantarb
headless` at random moments. It never knows whether a group was open at the kill, and never
checks that one was recovered, so recovery of open groups and orphan orders had no test that
could fail for a precise reason.

Each scenario here runs the real HedgeOrchestrator against a real `Ledger` and stops it at
one chosen point of a group's life: a venue whose `place` never answers, a write-ahead after
which nothing is sent, an MT5 command waiting for the EA. The "crash" cancels the engine's
work there and closes the ledger (the write-ahead rows and every flushed fill are durable
either way; close also commits the few state rows still queued). The test then checks that
the ledger really holds an open group (or a non-terminal orphan order) in that state, and
restarts: the ledger is opened again, `Ledger.recover()` gives the open groups and orders
back, and they are finished by `HedgeOrchestrator.resume` / `resolve_orphan`, either called
directly or through `Runtime.start()` with the demo config. The venues outlive the engine:
they remember every order by client order id, and the MT5 side is the real command queue
(persisted in the ledger), bridge, gateway and EA simulator on a simulated broker, talking
over an in-process ASGI transport (no socket, no timer: the test steps the EA).

Checked after each restart: the group's final state; the ledger rows (group state, every
order terminal, fills once each, compensation outcomes, `ledger check` passing, nothing left
for a next recovery); that every unfinished order was asked about by client order id before
anything new was placed, and never re-sent under its id (MT5: the gateway's idempotent
place only waits for the queued command, which is never enqueued twice); that no client
order id was ever sent for two different orders; and, through Runtime, that trading was
paused for recovery while the venues were asked, and released (or halted) afterwards.

Two recovery bugs these tests found are fixed: the outcome of a compensation action in flight
at the crash is recorded when its order is resolved, and a deal the EA reports for an MT5 leg
that recovery left `unknown` is asked about when its group closes, booked, and halts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from starlette.types import ASGIApp

from core.clock import ManualClock
from core.commands import CommandState, Mt5Command
from core.config import RiskConfig, demo_config
from core.hedge import HedgeGroup, client_order_id
from core.instruments import Instrument
from core.models import (
    ExecutionIntent,
    ExecutionLeg,
    Fill,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    Quote,
    TradingState,
    Venue,
)
from core.orders import is_terminal
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.mt5_side import StoreSlot
from engine.orchestrator import HedgeOrchestrator
from engine.recovery import RECOVERING
from engine.runtime import Runtime
from ledger import queries
from ledger.ledger import Ledger, RecoveredState
from mt5_bridge.app import create_app
from mt5_bridge.auth import SignatureVerifier
from mt5_bridge.bridge import Mt5Bridge
from mt5_bridge.gateway import MT5Gateway, command_id_for
from mt5_bridge.queue import CommandQueue
from sim.ea_sim import EaSimulator, Mt5Tick
from sim.mt5_broker import SimBroker, spec_from_instrument
from tests.waiting import until

PAIRS = demo_config().build_pairs()
INSTRUMENTS: dict[tuple[Venue, str], Instrument] = {i.key: i for p in PAIRS for i in p.instruments}
ASSET_OF: dict[tuple[Venue, str], str] = {i.key: p.name for p in PAIRS for i in p.instruments}
MT5_BTC = INSTRUMENTS[("mt5", "BTCUSD")]
BINANCE_BTC = INSTRUMENTS[("binance", "BTCUSDT")]
OKX_BTC = INSTRUMENTS[("okx", "BTC-USDT-SWAP")]
BASE_QTY = Decimal("0.05")  # 3000 USD a leg: inside the demo's max_leg_notional
BUY_PRICE = Decimal("60000")
SELL_PRICE = Decimal("60100")
TOUCH: dict[tuple[Venue, str], tuple[float, float]] = {
    ("mt5", "BTCUSD"): (59990.0, 60000.0),
    ("binance", "BTCUSDT"): (60100.0, 60110.0),
    ("okx", "BTC-USDT-SWAP"): (60050.0, 60060.0),
}
DOWNTIME_MS = 60_000  # how long the engine stays down between the crash and the restart
BOUND_S = 10.0  # bound on every wait for the code under test
TERMINAL = "T1"
SECRET = b"recovery-scenarios-secret-of-T1"
MAGIC = 7701


# -- the venues: they outlive the engine --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    """One request the engine made to a venue, with what the trading gate said at that moment."""

    op: str  # place | query | cancel
    venue: Venue
    coid: str
    order: tuple[str, str, str, str]  # (symbol, side, qty, price) of the order as sent
    gate: str  # "<trading state>:<reason>" when the call was made


class CrashPoints:
    """Where the engine stops: each `stop_here` hangs until the crash cancels it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.expected = 1
        self.reached = asyncio.Event()

    def expect(self, n: int) -> None:
        self.hits.clear()
        self.expected = n
        self.reached.clear()

    async def stop_here(self, label: str) -> NoReturn:
        self.hits.append(label)
        if len(self.hits) >= self.expected:
            self.reached.set()
        await asyncio.get_running_loop().create_future()  # never resolves: the crash cancels it
        raise AssertionError("unreachable")


@dataclass(slots=True)
class _Held:
    """What a venue knows about one client order id."""

    state: OrderState
    venue_order_id: str
    fills: list[Fill] = field(default_factory=list)
    hang_queries: int = 0  # queries the venue does not answer (the engine dies waiting)


class Exchange:
    """A venue that remembers every order it received, by client order id, across restarts.

    Each new order takes the next step of the script; unscripted orders are rejected:

    - `fill` / `reject` / `expire`: answered at once (an IOC limit fills in full at its price);
    - `hang_fill` / `hang_expire`: the venue fills (expires) it, the answer never comes;
    - `hang_lost`: the request never reaches the venue, the engine waits for an answer;
    - `partial_hang`: half fills and the rest rests on the book; the next query is never
      answered (`finish` fills the rest later, while the engine is down).

    Every `hang_*` step, and an unanswered query, is a crash point. Queries report the truth
    about orders the venue saw and "order not found" (rejected) for the others; a re-sent
    client order id is answered, never executed twice.
    """

    def __init__(self, venue: Venue, clock: ManualClock, calls: list[Call], crash: CrashPoints,
                 script: Iterable[str] = ()) -> None:
        self._venue: Venue = venue
        self.clock = clock
        self.calls = calls
        self.crash = crash
        self.script = list(script)
        self.orders: dict[str, _Held] = {}
        self.sent_qty: dict[str, Decimal] = {}
        self.probe: Callable[[], str] = lambda: ""
        self._trades = 0
        self._ids = 0

    @property
    def venue(self) -> Venue:
        return self._venue

    def _log(self, op: str, order: Order) -> None:
        self.calls.append(Call(op, self._venue, order.client_order_id,
                               (order.symbol, order.side, str(order.qty), str(order.price)), self.probe()))

    def _fill(self, order: Order, qty: Decimal) -> Fill:
        self._trades += 1
        inst = INSTRUMENTS[(self._venue, order.symbol)]
        fee = (inst.to_base_qty(qty) * order.price * Decimal(repr(inst.taker_fee_bps)) / Decimal(10_000))
        return Fill(self._venue, f"{self._venue}-t{self._trades}", order.client_order_id, qty, order.price,
                    fee, "USDT", self.clock.time_ms())

    def _update(self, coid: str, held: _Held) -> OrderUpdate:
        return OrderUpdate(coid, held.state, held.venue_order_id, list(held.fills))

    def finish(self, coid: str) -> None:
        """The resting rest of a partly filled order fills (while the engine is down)."""
        held = self.orders[coid]
        rest = self.sent_qty[coid] - sum((f.qty for f in held.fills), Decimal(0))
        self._trades += 1
        first = held.fills[0]
        held.fills.append(Fill(self._venue, f"{self._venue}-t{self._trades}", coid, rest, first.price,
                               first.fee * rest / first.qty, first.fee_ccy, self.clock.time_ms()))
        held.state = OrderState.FILLED

    async def place(self, order: Order) -> OrderUpdate:
        self._log("place", order)
        coid = order.client_order_id
        held = self.orders.get(coid)
        if held is not None:
            return self._update(coid, held)
        step = self.script.pop(0) if self.script else "reject"
        outcome = step.removeprefix("hang_")
        self._ids += 1
        vid = f"{self._venue}-o{self._ids}"
        self.sent_qty[coid] = order.qty
        held = None
        if outcome == "fill":
            held = _Held(OrderState.FILLED, vid, [self._fill(order, order.qty)])
        elif outcome == "reject":
            held = _Held(OrderState.REJECTED, vid)
        elif outcome == "expire":
            held = _Held(OrderState.EXPIRED, vid)
        elif outcome == "partial_hang":
            inst = INSTRUMENTS[(self._venue, order.symbol)]
            half = (order.qty / 2).quantize(inst.lot_step)
            held = _Held(OrderState.PARTIALLY_FILLED, vid, [self._fill(order, half)], hang_queries=1)
        elif outcome != "lost":
            raise AssertionError(f"unknown script step {step!r}")
        if held is not None:
            self.orders[coid] = held
        if step.startswith("hang_"):
            await self.crash.stop_here(f"{self._venue} place {coid}")
        assert held is not None
        return self._update(coid, held)

    async def query(self, order: Order) -> OrderUpdate:
        self._log("query", order)
        coid = order.client_order_id
        held = self.orders.get(coid)
        if held is None:
            return OrderUpdate(coid, OrderState.REJECTED, reason="order not found")
        if held.hang_queries > 0:
            held.hang_queries -= 1
            await self.crash.stop_here(f"{self._venue} query {coid}")
        return self._update(coid, held)

    async def cancel(self, order: Order) -> OrderUpdate:
        self._log("cancel", order)
        coid = order.client_order_id
        held = self.orders.get(coid)
        if held is None:
            return OrderUpdate(coid, OrderState.REJECTED, reason="unknown order")
        if not is_terminal(held.state):
            held.state = OrderState.CANCELLED
        return self._update(coid, held)


class Recorded:
    """A real gateway (the MT5 one), with its calls logged like the Exchange's."""

    def __init__(self, inner: ExecutionGateway, calls: list[Call]) -> None:
        self.inner = inner
        self.calls = calls
        self.probe: Callable[[], str] = lambda: ""

    @property
    def venue(self) -> Venue:
        return self.inner.venue

    def _log(self, op: str, order: Order) -> None:
        self.calls.append(Call(op, self.venue, order.client_order_id,
                               (order.symbol, order.side, str(order.qty), str(order.price)), self.probe()))

    async def place(self, order: Order) -> OrderUpdate:
        self._log("place", order)
        return await self.inner.place(order)

    async def query(self, order: Order) -> OrderUpdate:
        self._log("query", order)
        return await self.inner.query(order)

    async def cancel(self, order: Order) -> OrderUpdate:
        self._log("cancel", order)
        return await self.inner.cancel(order)


# -- the engine, before and after the crash ----------------------------------------------------
def make_intent(buy: Venue = "mt5", sell: Venue = "binance", now_ms: int = 0) -> ExecutionIntent:
    bi = next(i for i in INSTRUMENTS.values() if i.venue == buy and i.pair == "BTC")
    si = next(i for i in INSTRUMENTS.values() if i.venue == sell and i.pair == "BTC")
    return ExecutionIntent(
        pair="BTC",
        buy=ExecutionLeg(buy, bi.symbol, "buy", bi.to_venue_qty(BASE_QTY), BUY_PRICE, BASE_QTY),
        sell=ExecutionLeg(sell, si.symbol, "sell", si.to_venue_qty(BASE_QTY), SELL_PRICE, BASE_QTY),
        base_qty=BASE_QTY,
        expected_edge_bps=6.7,
        buy_price=float(BUY_PRICE),
        sell_price=float(SELL_PRICE),
        created_ms=now_ms,
    )


def wide_gate(clock: ManualClock) -> RiskGate:
    # Limits far away: these scenarios are about recovery, not risk.
    return RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6),
                                                  max_gross_exposure=Decimal(10**7)))


def orchestrator(gateways: Mapping[Venue, ExecutionGateway], ledger: Ledger, clock: ManualClock,
                 gate: RiskGate, *, leg_policy: str = "concurrent") -> HedgeOrchestrator:
    return HedgeOrchestrator(
        gateways, INSTRUMENTS, gate, clock, EventLog(), leg_policy=leg_policy, journal=ledger,
        poll_interval_s=0.0, touch=lambda v, s: TOUCH.get((v, s)), asset_of=ASSET_OF,
    )


@dataclass
class World:
    """What survives a crash: the ledger file, the clock, the venues and their call log."""

    path: Path
    clock: ManualClock
    calls: list[Call] = field(default_factory=list)
    crash: CrashPoints = field(default_factory=CrashPoints)
    exchanges: dict[Venue, Exchange] = field(default_factory=dict)
    restart_at: int = 0  # index in `calls` of the first call after the restart

    def exchange(self, venue: Venue, *script: str) -> Exchange:
        ex = self.exchanges[venue] = Exchange(venue, self.clock, self.calls, self.crash, script)
        return ex

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.path)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def group_state(self, group_id: str) -> str:
        [(state,)] = self.rows("SELECT state FROM hedge_groups WHERE group_id = ?", group_id)
        return str(state)

    def orders(self, group_id: str) -> list[tuple[str, str, str, str]]:
        """(client order id, venue, purpose, state) of a group's orders, oldest first."""
        return [(str(c), str(v), str(p), str(s)) for c, v, p, s in self.rows(
            "SELECT client_order_id, venue, purpose, state FROM orders WHERE group_id = ? "
            "ORDER BY created_at_ms, order_id", group_id)]

    def fills(self, coid: str) -> list[tuple[str, str]]:
        return [(str(t), str(q)) for t, q in self.rows(
            "SELECT venue_trade_id, qty FROM fills WHERE order_id = ? ORDER BY fill_id", coid)]

    def actions(self, group_id: str) -> list[tuple[str, str]]:
        return [(str(k), str(o)) for k, o in self.rows(
            "SELECT kind, outcome FROM compensation_actions WHERE group_id = ? ORDER BY action_id", group_id)]

    @property
    def after_restart(self) -> list[Call]:
        return self.calls[self.restart_at:]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "ledger.db", ManualClock())


async def crash(world: World, ledger: Ledger, work: asyncio.Future[Any], reached: Awaitable[object]) -> None:
    """Wait until the engine's `work` reached its crash point(s), then kill it there: the
    work is cancelled where it stands and the ledger closed. The engine stays down a minute."""
    waiter = asyncio.ensure_future(reached)
    done, _ = await asyncio.wait({work, waiter}, timeout=BOUND_S, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        raise AssertionError(f"the crash point was not reached (work done: {work.done()}; "
                             f"hits: {world.crash.hits})")
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    await ledger.close()
    world.clock.advance(ms=DOWNTIME_MS)


async def run_group_until_crash(world: World, *, leg_policy: str = "concurrent", crash_points: int = 1,
                                buy: Venue = "mt5", sell: Venue = "binance") -> HedgeGroup:
    """A fresh engine submits one group and runs it until it hangs at `crash_points` points."""
    ledger = await Ledger.open(world.path, clock=world.clock)
    orch = orchestrator(dict(world.exchanges), ledger, world.clock, wide_gate(world.clock), leg_policy=leg_policy)
    world.crash.expect(crash_points)
    group = orch.submit(make_intent(buy, sell, world.clock.time_ms()))
    await crash(world, ledger, asyncio.ensure_future(orch.execute(group)), world.crash.reached.wait())
    return group


@dataclass
class Recovery:
    """What `Ledger.recover()` gave back (as it was then) and how recovery left it."""

    state: RecoveredState
    orchestrator: HedgeOrchestrator
    gate: RiskGate
    groups: list[HedgeGroup]  # the recovered groups, finished by now
    open_at_restart: list[tuple[str, GroupState]]  # (group id, state) as recovered
    unfinished: list[str]  # client ids of the orders recovered non-terminal
    orphans: list[str]  # those of them in no open group


async def restart(world: World, gateways: Mapping[Venue, ExecutionGateway] | None = None,
                  ledger: Ledger | None = None, *, on_start: Callable[[HedgeOrchestrator], None] | None = None,
                  background: list[asyncio.Future[Any]] | None = None) -> Recovery:
    """Open the ledger again and finish what it holds open, as Runtime._recover/_resume do.

    `on_start` sees the new orchestrator before recovery starts; work it puts in `background`
    is awaited before the ledger closes."""
    ledger = ledger or await Ledger.open(world.path, clock=world.clock)
    try:
        state = await ledger.recover()
        gate = wide_gate(world.clock)
        orch = orchestrator(gateways or dict(world.exchanges), ledger, world.clock, gate)
        if on_start is not None:
            on_start(orch)
        for ex in world.exchanges.values():
            ex.probe = lambda: f"{gate.state}:{gate.reason}"
        world.restart_at = len(world.calls)
        open_at_restart = [(g.group_id, g.state) for g in state.open_groups]
        in_groups = {id(o) for g in state.open_groups for o in g.orders}
        orphans = [o for o in state.open_orders if id(o) not in in_groups]
        for group in state.open_groups:
            await orch.resume(group)
        for order in orphans:
            await orch.resolve_orphan(order)
        while background and not all(t.done() for t in background):
            await asyncio.gather(*background)
        await orch.drain()
        await ledger.flush()
    finally:
        await ledger.close()
    return Recovery(state, orch, gate, list(state.open_groups), open_at_restart,
                    [o.client_order_id for o in state.open_orders], [o.client_order_id for o in orphans])


# -- assertions shared by every scenario ------------------------------------------------------
def assert_one_order_per_client_id(world: World) -> None:
    """No client order id was ever sent (or asked about) for two different orders."""
    seen: dict[str, tuple[Venue, tuple[str, str, str, str]]] = {}
    for call in world.calls:
        first = seen.setdefault(call.coid, (call.venue, call.order))
        assert first == (call.venue, call.order), f"{call.coid} used for two orders: {first} / {call}"


def assert_asked_before_sending(world: World, unfinished: Iterable[str], *, mt5_waits: Iterable[str] = ()) -> None:
    """After the restart every unfinished order was queried by client order id before any
    order was placed, and none of them was placed again (except MT5 orders in `mt5_waits`,
    whose idempotent place waits for the command already queued)."""
    unfinished = set(unfinished)
    calls = world.after_restart
    first_place = next((i for i, c in enumerate(calls) if c.op == "place"), len(calls))
    asked = {c.coid for c in calls[:first_place] if c.op == "query"}
    assert unfinished <= asked, f"not asked before the first place: {unfinished - asked}"
    resent = {c.coid for c in calls if c.op == "place"} & (unfinished - set(mt5_waits))
    assert not resent, f"re-sent after the restart: {resent}"


async def assert_nothing_left_open(world: World) -> None:
    """A next restart would find nothing to recover, and `ledger check` passes."""
    ledger = await Ledger.open(world.path, clock=world.clock)
    try:
        again = await ledger.recover()
        assert [g.group_id for g in again.open_groups] == []
        assert [o.client_order_id for o in again.open_orders] == []
        report = await ledger.read(queries.check)
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    finally:
        await ledger.close()
    duplicate_fills = world.rows(
        "SELECT venue, venue_trade_id, count(*) FROM fills GROUP BY venue, venue_trade_id HAVING count(*) > 1")
    assert duplicate_fills == []


def assert_group_row(world: World, group: HedgeGroup) -> None:
    """The group's ledger row: its final state and closing time, and a realized PnL and fees
    that are those of the fills in the ledger (each counted once, those found by query too):
    the cash flow of the hedged quantity after fees, a residual excluded at its side's average
    price (docs/ledger.md, Money)."""
    [(state, pnl, fees, closed_ms)] = world.rows(
        "SELECT state, realized_pnl, fees, closed_at_ms FROM hedge_groups WHERE group_id = ?", group.group_id)
    cash = paid = Decimal(0)
    base = {"buy": Decimal(0), "sell": Decimal(0)}
    spent = {"buy": Decimal(0), "sell": Decimal(0)}
    for side, venue, symbol, qty, price, fee in world.rows(
            "SELECT o.side, o.venue, o.symbol, f.qty, f.price, f.fee FROM fills f "
            "JOIN orders o ON o.order_id = f.order_id WHERE o.group_id = ?", group.group_id):
        inst = INSTRUMENTS[(venue, symbol)]
        notional = Decimal(qty) * Decimal(price) * inst.qty_per_unit * inst.price_scale
        cash += notional if side == "sell" else -notional
        paid += Decimal(fee)
        base[side] += Decimal(qty) * inst.qty_per_unit
        spent[side] += notional
    residual = base["buy"] - base["sell"]
    held = "buy" if residual > 0 else "sell"
    realized = cash - paid + (residual * spent[held] / base[held] if residual else Decimal(0))
    assert group.terminal and closed_ms == group.closed_ms > 0
    assert (state, Decimal(pnl), Decimal(fees)) == (str(group.state), realized, paid)
    assert (group.realized_pnl, group.fees) == (realized, paid)


def coid(group: HedgeGroup, leg: int, attempt: int = 0) -> str:
    return client_order_id(group.group_id, leg, attempt)


def flat(gate: RiskGate) -> bool:
    return all(q == 0 for q in gate.exposure.positions.values()) and not gate.exposure.reservations


# == 1. entries written ahead, never sent ========================================================
@pytest.mark.parametrize("leg_policy", ["concurrent", "mt5_first"])
async def test_entries_written_ahead_but_never_sent_close_rejected(world: World, leg_policy: str) -> None:
    """The crash falls between the write-ahead of the entry orders and their send: the venues
    never saw them. Recovery asks both venues, hears "not found", and rejects the group."""
    world.exchange("mt5", "fill")
    world.exchange("binance", "fill")
    ledger = await Ledger.open(world.path, clock=world.clock)
    orch = orchestrator(dict(world.exchanges), ledger, world.clock, wide_gate(world.clock), leg_policy=leg_policy)
    write_ahead = ledger.order_created
    expected = 2 if leg_policy == "concurrent" else 1

    async def then_crash(order: Order) -> int:
        await write_ahead(order)
        await world.crash.stop_here(f"written {order.client_order_id}")

    ledger.order_created = then_crash  # type: ignore[method-assign]
    world.crash.expect(expected)
    group = orch.submit(make_intent(now_ms=world.clock.time_ms()))
    await crash(world, ledger, asyncio.ensure_future(orch.execute(group)), world.crash.reached.wait())

    written = [coid(group, 0), coid(group, 1)][:expected]
    assert world.calls == []  # nothing left the process
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id) == [(c, v, "entry", "new") for c, v in zip(written, ["mt5", "binance"],
                                                                                   strict=False)]

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], written)
    [recovered] = rec.groups
    assert recovered.state is GroupState.REJECTED
    assert_group_row(world, recovered)
    assert [(c, s) for c, _v, _p, s in world.orders(group.group_id)] == [(c, "rejected") for c in written]
    assert [(c.op, c.coid) for c in world.after_restart] == [("query", c) for c in written]
    assert world.rows("SELECT count(*) FROM fills") == [(0,)]
    assert flat(rec.gate) and rec.gate.state is TradingState.ACTIVE
    assert rec.orchestrator.open == {} and rec.orchestrator.closed_by_state == {"rejected": 1}
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


async def test_group_planned_without_orders_closes_rejected(world: World) -> None:
    """The crash falls between the intent (group opened) and its first order: nothing to ask."""
    world.exchange("mt5", "fill")
    world.exchange("binance", "fill")
    ledger = await Ledger.open(world.path, clock=world.clock)
    orch = orchestrator(dict(world.exchanges), ledger, world.clock, wide_gate(world.clock))
    group = orch.submit(make_intent(now_ms=world.clock.time_ms()))
    await ledger.close()  # the group's task never ran
    world.clock.advance(ms=DOWNTIME_MS)
    assert world.group_state(group.group_id) == "planned"
    assert world.orders(group.group_id) == []

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.PLANNED)], [])
    assert [g.state for g in rec.groups] == [GroupState.REJECTED]
    assert_group_row(world, rec.groups[0])
    assert world.calls == []
    await assert_nothing_left_open(world)


# == 2. both entries sent, both filled while the engine was down ==================================
async def test_both_entries_filled_while_down_are_hedged(world: World) -> None:
    world.exchange("mt5", "hang_fill")
    world.exchange("binance", "hang_fill")
    group = await run_group_until_crash(world, crash_points=2)
    buy, sell = coid(group, 0), coid(group, 1)
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "submitted"), (sell, "binance", "entry", "submitted")]
    assert world.rows("SELECT count(*) FROM fills") == [(0,)]

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [buy, sell])
    [recovered] = rec.groups
    assert recovered.state is GroupState.HEDGED
    assert_group_row(world, recovered)
    assert [s for _c, _v, _p, s in world.orders(group.group_id)] == ["filled", "filled"]
    assert world.fills(buy) == [("mt5-t1", "0.05")] and world.fills(sell) == [("binance-t1", "0.050")]
    assert [(c.op, c.coid) for c in world.after_restart] == [("query", buy), ("query", sell)]
    assert rec.gate.exposure.position("mt5", "BTC") == BASE_QTY
    assert rec.gate.exposure.position("binance", "BTC") == -BASE_QTY
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


async def test_partly_filled_entry_is_completed_and_its_first_fill_counted_once(world: World) -> None:
    """The binance leg had filled half (journaled) and rested; the engine died asking about it;
    the rest filled while it was down. The query reports both fills: the first is not counted
    again, so the group is hedged, not over-filled and compensated."""
    world.exchange("mt5", "fill")
    bn = world.exchange("binance", "partial_hang")
    group = await run_group_until_crash(world, leg_policy="mt5_first")
    buy, sell = coid(group, 0), coid(group, 1)
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "filled"),
                                            (sell, "binance", "entry", "partially_filled")]
    assert world.fills(sell) == [("binance-t1", "0.025")]
    bn.finish(sell)

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [sell])
    assert [g.state for g in rec.groups] == [GroupState.HEDGED]
    assert_group_row(world, rec.groups[0])
    [order] = [o for o in rec.groups[0].orders if o.client_order_id == sell]
    assert order.filled_qty == Decimal("0.050") and len(order.fills) == 2
    assert world.fills(sell) == [("binance-t1", "0.025"), ("binance-t2", "0.025")]
    assert world.orders(group.group_id)[1][3] == "filled"
    assert [(c.op, c.coid) for c in world.after_restart] == [("query", sell)]
    assert world.actions(group.group_id) == []
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


# == 3. one leg filled, the other unknown =========================================================
async def test_unknown_leg_found_filled_is_hedged(world: World) -> None:
    world.exchange("mt5", "fill")
    world.exchange("binance", "hang_fill")
    group = await run_group_until_crash(world, leg_policy="mt5_first")
    buy, sell = coid(group, 0), coid(group, 1)
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "filled"), (sell, "binance", "entry", "submitted")]
    assert world.fills(buy) == [("mt5-t1", "0.05")] and world.fills(sell) == []

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [sell])
    assert [g.state for g in rec.groups] == [GroupState.HEDGED]
    assert_group_row(world, rec.groups[0])
    assert world.fills(buy) == [("mt5-t1", "0.05")]  # journaled before the crash, once
    assert world.fills(sell) == [("binance-t1", "0.050")]
    assert [(c.op, c.coid) for c in world.after_restart] == [("query", sell)]
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


@pytest.mark.parametrize(
    ("retries", "final", "actions"),
    [
        (["fill"], "repaired", [("retry_hedge", "filled")]),
        (["reject", "reject"], "unwound", [("retry_hedge", "rejected"), ("retry_hedge", "rejected"),
                                           ("unwind", "filled")]),
    ],
    ids=["retry-fills", "retries-fail-unwind"],
)
async def test_unknown_leg_found_expired_is_compensated(
    world: World, retries: list[str], final: str, actions: list[tuple[str, str]]
) -> None:
    world.exchange("mt5", "fill", "fill")  # the entry, then the unwind if it comes to that
    world.exchange("binance", "hang_expire", *retries)
    group = await run_group_until_crash(world, leg_policy="mt5_first")
    buy, sell = coid(group, 0), coid(group, 1)
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "filled"), (sell, "binance", "entry", "submitted")]

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [sell])
    [recovered] = rec.groups
    assert recovered.state == GroupState(final)
    assert_group_row(world, recovered)
    assert world.actions(group.group_id) == actions
    placed = [c.coid for c in world.after_restart if c.op == "place"]
    retry_ids = [coid(group, 1, n) for n in range(1, len(retries) + 1)]
    assert placed == retry_ids + ([coid(group, 2, 1)] if final == "unwound" else [])
    assert_asked_before_sending(world, [sell])
    assert abs(recovered.residual()) < recovered.step
    assert all(is_terminal(OrderState(s)) for _c, _v, _p, s in world.orders(group.group_id))
    assert rec.gate.state is TradingState.ACTIVE
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


async def test_second_leg_never_written_is_compensated(world: World) -> None:
    """Sequential legs: the first filled, the crash came before the second's write-ahead.
    Nothing is unfinished; the group is broken and the missing leg is sent as a retry."""
    world.exchange("mt5", "fill")
    world.exchange("binance", "fill")
    ledger = await Ledger.open(world.path, clock=world.clock)
    orch = orchestrator(dict(world.exchanges), ledger, world.clock, wide_gate(world.clock), leg_policy="mt5_first")
    write_ahead = ledger.order_created

    async def crash_before_binance(order: Order) -> int:
        if order.venue == "binance":
            await world.crash.stop_here(f"before writing {order.client_order_id}")
        return await write_ahead(order)

    ledger.order_created = crash_before_binance  # type: ignore[method-assign]
    world.crash.expect(1)
    group = orch.submit(make_intent(now_ms=world.clock.time_ms()))
    await crash(world, ledger, asyncio.ensure_future(orch.execute(group)), world.crash.reached.wait())
    assert world.orders(group.group_id) == [(coid(group, 0), "mt5", "entry", "filled")]
    assert world.group_state(group.group_id) == "working"

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [])
    assert [g.state for g in rec.groups] == [GroupState.REPAIRED]
    assert_group_row(world, rec.groups[0])
    assert world.actions(group.group_id) == [("retry_hedge", "filled")]
    [(op, placed)] = [(c.op, c.coid) for c in world.after_restart]
    assert op == "place" and world.orders(group.group_id)[1] == (placed, "binance", "retry_hedge", "filled")
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


# == 4. a compensation order in flight at the crash ===============================================
@dataclass(frozen=True)
class InFlight:
    mt5: tuple[str, ...]
    binance: tuple[str, ...]
    in_flight: tuple[int, int]  # (leg, attempt) of the compensation order in flight at the crash
    final: str
    placed_after: tuple[tuple[int, int], ...]  # (leg, attempt) of the orders placed after the restart
    actions: tuple[tuple[str, str], ...]  # every compensation action and its outcome, in the end


IN_FLIGHT = {
    # The retry filled while the engine was down: repaired, nothing placed.
    "retry-filled-while-down": InFlight(
        ("fill",), ("expire", "hang_fill"), (1, 1), "repaired", (), (("retry_hedge", "filled"),)),
    # The retry never reached the venue: "not found", so the next attempt (a new id) goes out.
    "retry-lost-next-attempt": InFlight(
        ("fill",), ("expire", "hang_lost", "fill"), (1, 1), "repaired", ((1, 2),),
        (("retry_hedge", "rejected"), ("retry_hedge", "filled"))),
    # Both retries were rejected; the unwind filled while the engine was down: unwound.
    "unwind-filled-while-down": InFlight(
        ("fill", "hang_fill"), ("expire", "reject", "reject"), (2, 1), "unwound", (),
        (("retry_hedge", "rejected"), ("retry_hedge", "rejected"), ("unwind", "filled"))),
    # The same, but the unwind never reached the venue: the attempts made before the crash
    # count, so nothing is retried again: the group fails and trading halts.
    "unwind-lost-escalates": InFlight(
        ("fill", "hang_lost"), ("expire", "reject", "reject"), (2, 1), "failed", (),
        (("retry_hedge", "rejected"), ("retry_hedge", "rejected"), ("unwind", "rejected"), ("escalate", "halted"))),
}


async def _crash_with_compensation_in_flight(world: World, case: InFlight) -> tuple[HedgeGroup, str, int]:
    """Run a group into compensation and crash while its compensation order is in flight.
    Returns the group, that order's client id and the index of its action."""
    world.exchange("mt5", *case.mt5)
    world.exchange("binance", *case.binance)
    group = await run_group_until_crash(world, leg_policy="mt5_first")
    in_flight = coid(group, *case.in_flight)
    unwind = case.in_flight[0] == 2
    assert world.group_state(group.group_id) == "compensating"
    assert world.orders(group.group_id)[-1] == (
        in_flight, "mt5" if unwind else "binance", "unwind" if unwind else "retry_hedge", "submitted")
    assert world.fills(in_flight) == []
    actions = world.actions(group.group_id)
    assert actions[-1] == ("unwind" if unwind else "retry_hedge", "pending")  # its action: no outcome yet
    assert actions[:-1] == list(case.actions[:len(actions) - 1])
    return group, in_flight, len(actions) - 1


@pytest.mark.parametrize("case", list(IN_FLIGHT.values()), ids=list(IN_FLIGHT))
async def test_compensation_in_flight_is_finished(world: World, case: InFlight) -> None:
    group, in_flight, index = await _crash_with_compensation_in_flight(world, case)

    rec = await restart(world)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.COMPENSATING)], [in_flight])
    [recovered] = rec.groups
    assert recovered.state == GroupState(case.final)
    assert_group_row(world, recovered)
    assert_asked_before_sending(world, [in_flight])
    assert [c.coid for c in world.after_restart if c.op == "place"] == [coid(group, *p) for p in case.placed_after]
    # Nothing placed that the venues answered was re-sent: the order filled while we were
    # down is booked from the query, with its fill.
    assert all(is_terminal(OrderState(s)) for _c, _v, _p, s in world.orders(group.group_id))
    filled = [c for c, _v, p, s in world.orders(group.group_id) if s == "filled" and p != "entry"]
    assert all(len(world.fills(c)) == 1 for c in filled)
    # The actions: same kinds, every outcome as it should be except the in-flight one's
    # (see test_in_flight_compensation_action_gets_its_outcome, a known bug).
    actions = world.actions(group.group_id)
    assert [k for k, _o in actions] == [k for k, _o in case.actions]
    assert [a for i, a in enumerate(actions) if i != index] == [a for i, a in enumerate(case.actions) if i != index]
    if case.final == "failed":  # the residual stays; trading halted, durably
        assert recovered.residual() == BASE_QTY
        assert rec.gate.state is TradingState.HALTED
        assert world.rows("SELECT kind, trading_state FROM risk_events") == [("breaker", "halted")]
    else:
        assert abs(recovered.residual()) < recovered.step
        assert rec.gate.state is TradingState.ACTIVE
        assert world.rows("SELECT count(*) FROM risk_events") == [(0,)]
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


@pytest.mark.parametrize("case", list(IN_FLIGHT.values()), ids=list(IN_FLIGHT))
async def test_in_flight_compensation_action_gets_its_outcome(world: World, case: InFlight) -> None:
    group, _in_flight, _index = await _crash_with_compensation_in_flight(world, case)
    await restart(world)
    assert world.actions(group.group_id) == list(case.actions)


# == 5. through Runtime.start(): an open group and an orphan flatten order ========================
@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))


def _quote(venue: Venue, symbol: str, bid: float, ask: float, clock: ManualClock) -> Quote:
    return Quote(venue, symbol, bid, ask, 10.0, 10.0, clock.time_ms(), clock.monotonic_ns())


@asynccontextmanager
async def started_runtime(world: World) -> AsyncIterator[tuple[Runtime, asyncio.Task[Any]]]:
    """The demo runtime on the crashed ledger, its venues the ones that outlived the crash.

    Yields it started, with the recovery task it started (not awaited yet); stops it after."""
    rt = Runtime(demo_config(), is_demo=True, clock=world.clock, ledger_path=str(world.path), mt5_in_process=True)
    rt.gateways.update(world.exchanges)  # the orchestrator routes through this very mapping
    for ex in world.exchanges.values():
        ex.probe = lambda: f"{rt.gate.state}:{rt.gate.reason}"
    world.restart_at = len(world.calls)
    await rt.start()
    try:
        [recovery] = [t for t in asyncio.all_tasks() if t.get_name() == "recovery"]
        yield rt, recovery
    finally:
        await rt.stop()


@dataclass(frozen=True)
class RuntimeCase:
    binance: tuple[str, ...]  # the binance leg (in flight at the crash), then any retry
    orphan: str  # the flatten order (in flight at the crash)
    final: str
    trading: TradingState  # after recovery


RUNTIME_CASES = {
    # The binance leg filled while down: hedged. The flatten order expired: trading resumes.
    "hedged-orphan-expired": RuntimeCase(("hang_fill",), "hang_expire", "hedged", TradingState.ACTIVE),
    # The flatten order filled while down: a late fill nothing hedges, booked; trading halts.
    "hedged-orphan-filled-late": RuntimeCase(("hang_fill",), "hang_fill", "hedged", TradingState.HALTED),
    # The binance leg expired: the retry goes out during recovery, though trading is paused.
    "repaired-orphan-expired": RuntimeCase(("hang_expire", "fill"), "hang_expire", "repaired", TradingState.ACTIVE),
}


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("case", list(RUNTIME_CASES.values()), ids=list(RUNTIME_CASES))
async def test_runtime_start_recovers_a_group_and_an_orphan_with_trading_paused(
    world: World, case: RuntimeCase
) -> None:
    """Runtime.start() on a ledger left with a working group (mt5 filled, binance in flight)
    and a flatten order in flight (an orphan: in no open group). Trading is paused while
    recovery asks both venues (and compensates, if it must); the group finishes; the orphan is
    resolved by query. Then trading is released, or, if the orphan filled after the crash (a
    late fill nothing hedges), the fill is booked and trading halts, durably."""
    world.exchange("mt5", "fill")
    world.exchange("binance", *case.binance)
    world.exchange("okx", case.orphan)
    ledger = await Ledger.open(world.path, clock=world.clock)
    gate = wide_gate(world.clock)
    gate.exposure.set_position("okx", "BTC", BASE_QTY)  # held from before: the flatten sells it
    orch = orchestrator(dict(world.exchanges), ledger, world.clock, gate, leg_policy="mt5_first")
    world.crash.expect(2)
    group = orch.submit(make_intent(now_ms=world.clock.time_ms()))
    batch = "FLcrash1"
    flatten = Order(client_order_id=f"{batch}0", group_id=batch, venue="okx", symbol=OKX_BTC.symbol, side="sell",
                    qty=OKX_BTC.to_venue_qty(BASE_QTY), price=Decimal("60050"), purpose=OrderPurpose.FLATTEN,
                    created_ms=world.clock.time_ms())
    work = asyncio.gather(orch.execute(group), orch.send_flatten(flatten))
    await crash(world, ledger, work, world.crash.reached.wait())
    sell, retry, orphan = coid(group, 1), coid(group, 1, 1), flatten.client_order_id
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id)[1] == (sell, "binance", "entry", "submitted")
    assert world.orders(batch) == [(orphan, "okx", "flatten", "submitted")]
    assert world.rows("SELECT count(*) FROM hedge_groups WHERE group_id = ?", batch) == [(0,)]

    async with started_runtime(world) as (rt, recovery):
        assert rt.recovery.recovered_groups == 1
        assert (rt.gate.state, rt.gate.reason) == (TradingState.PAUSED, RECOVERING)
        # Quotes for the group's venues (recovery waits, bounded, for them); no edge in them.
        for venue, symbol in (("mt5", "BTCUSD"), ("binance", "BTCUSDT")):
            rt.ingest(_quote(venue, symbol, 59990.0, 60000.0, world.clock))  # type: ignore[arg-type]
        await asyncio.wait_for(recovery, BOUND_S)
        repaired = case.final == "repaired"
        expected = [("query", sell), ("query", orphan)] + ([("query", sell), ("place", retry)] if repaired else [])
        assert sorted((c.op, c.coid) for c in world.after_restart) == sorted(expected)
        assert_asked_before_sending(world, [sell, orphan])
        assert {c.gate for c in world.after_restart} == {f"paused:{RECOVERING}"}  # every request while paused
        assert rt.orchestrator.open == {} and rt.orchestrator.loose_orders.keys() == {orphan}
        [closed] = rt.orchestrator.closed
        assert (closed.group_id, closed.state) == (group.group_id, GroupState(case.final))
        assert any(e.kind == "recover" and "recovery done: 1 group(s) finished" in e.text for e in rt.events.recent(50))
        assert rt.gate.state is case.trading
        if case.trading is TradingState.HALTED:
            assert rt.gate.reason == f"late fill on closed group {batch}"
        assert rt.pipeline.intents == 0

    assert_group_row(world, closed)
    if repaired:
        assert world.fills(sell) == [] and world.fills(retry) == [("binance-t1", "0.050")]
        assert world.actions(group.group_id) == [("retry_hedge", "filled")]
    else:
        assert world.fills(sell) == [("binance-t1", "0.050")]
    if case.trading is TradingState.HALTED:
        assert world.orders(batch) == [(orphan, "okx", "flatten", "filled")]
        assert world.fills(orphan) == [("okx-t1", "5")]
        assert world.rows("SELECT kind, reason, trading_state FROM risk_events") == [
            ("breaker", f"late fill on closed group {batch}", "halted")]
    else:
        assert world.orders(batch) == [(orphan, "okx", "flatten", "expired")]
        assert world.fills(orphan) == []
        assert world.rows("SELECT count(*) FROM risk_events") == [(0,)]
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


# == 6. the MT5 leg: a command in the ledger-backed queue at the crash ============================
class Wire(httpx.AsyncBaseTransport):
    """The network between the EA and quantarb's listener, in process: ASGI calls into the
    current listener app, no socket. `app` None: the engine is down and nothing connects;
    `reports_fail`: the EA's acks and fills fail to connect (the engine dies as it reports)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.reports_fail = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.app is None or (self.reports_fail and request.url.path in ("/mt5/ack", "/mt5/fill")):
            raise httpx.ConnectError("the listener is down", request=request)
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


def _no_ticks() -> list[Mt5Tick]:
    return []


@dataclass
class Terminal:
    """The MT5 terminal: the EA simulator trading a simulated broker. It outlives the engine
    and runs one timer event at a time, when the test calls `ea.step()`."""

    clock: ManualClock
    wire: Wire
    broker: SimBroker
    eas: list[EaSimulator] = field(default_factory=list)

    @property
    def ea(self) -> EaSimulator:
        return self.eas[-1]

    def start_ea(self) -> EaSimulator:
        """A new EA session on the same terminal and account (the previous one, if any, died)."""
        self.eas.append(EaSimulator("http://listener.test", TERMINAL, SECRET, [MT5_BTC.symbol], self.broker,
                                    _no_ticks, self.clock, magic=MAGIC, transport=self.wire))
        return self.ea


@pytest.fixture
async def terminal(world: World) -> AsyncIterator[Terminal]:
    broker = SimBroker(lambda symbol: TOUCH.get(("mt5", symbol)), clock=world.clock, seed=1,
                       specs={MT5_BTC.symbol: spec_from_instrument(MT5_BTC)})
    term = Terminal(world.clock, Wire(), broker)
    term.start_ea()
    try:
        yield term
    finally:
        for ea in term.eas:
            await ea.aclose()


@dataclass
class Listener:
    """quantarb's MT5 side for one run: the command queue on the ledger and its gateway."""

    queue: CommandQueue
    gateway: Recorded

    def command(self, coid: str) -> CommandState | None:
        cmd = self.queue.get(command_id_for(coid))
        return None if cmd is None else cmd.state


async def start_listener(world: World, ledger: Ledger, wire: Wire, ttl_ms: int) -> Listener:
    """What Runtime/Mt5Side build: the queue on the ledger's CommandStore, restored; the bridge
    and app the EA talks to; the gateway the orchestrator places MT5 legs through."""
    store = StoreSlot()
    store.target = ledger
    queue = CommandQueue(store, world.clock)
    await queue.restore()
    bridge = Mt5Bridge(verifier=SignatureVerifier({TERMINAL: SECRET}, world.clock), queue=queue, clock=world.clock,
                       symbols={TERMINAL: [MT5_BTC.symbol]}, quote_sink=lambda _q: None, magic=MAGIC)
    gateway = MT5Gateway(queue, TERMINAL, {MT5_BTC.symbol: MT5_BTC}, world.clock, magic=MAGIC, deviation_points=20,
                         filling="IOC", command_ttl_ms=ttl_ms, grace_ms=500)
    wire.app = create_app(bridge)
    return Listener(queue, Recorded(gateway, world.calls))


async def run_mt5_group_until_crash(
    world: World, terminal: Terminal, ttl_ms: int, crash_point: Callable[[Listener, HedgeGroup], Awaitable[object]],
    ledger_hook: Callable[[Ledger], None] | None = None,
) -> HedgeGroup:
    """Buy on MT5, sell on binance (binance first, so its fill is journaled before the MT5
    leg leaves); crash at `crash_point`, then the listener goes down with the engine."""
    world.exchange("binance", "fill")
    ledger = await Ledger.open(world.path, clock=world.clock)
    if ledger_hook is not None:
        ledger_hook(ledger)
    listener = await start_listener(world, ledger, terminal.wire, ttl_ms)
    orch = orchestrator({"mt5": listener.gateway, "binance": world.exchanges["binance"]}, ledger, world.clock,
                        wide_gate(world.clock), leg_policy="exchange_first")
    group = orch.submit(make_intent(now_ms=world.clock.time_ms()))
    await crash(world, ledger, asyncio.ensure_future(orch.execute(group)), crash_point(listener, group))
    terminal.wire.app = None
    return group


def _commands(world: World) -> list[tuple[str, str, int, str]]:
    return [(str(c), str(s), int(d), str(v)) for c, s, d, v in world.rows(
        "SELECT command_id, state, deliveries, filled_volume FROM mt5_commands ORDER BY created_ms, command_id")]


async def _restart_with_mt5(world: World, terminal: Terminal, ttl_ms: int,
                            ea_acts: Callable[[Listener], Awaitable[None]]) -> tuple[Recovery, list[str]]:
    """Restart: the ledger, then the MT5 listener on it (the queue restored), then recovery;
    `ea_acts` runs beside recovery, as the EA would. Also returns the ids of the commands the
    queue held open once restored, before recovery asked anything."""
    ledger = await Ledger.open(world.path, clock=world.clock)
    listener = await start_listener(world, ledger, terminal.wire, ttl_ms)
    restored = [c.command_id for c in listener.queue.open_commands(TERMINAL)]
    world.restart_at = len(world.calls)
    gateways: dict[Venue, ExecutionGateway] = {"mt5": listener.gateway, "binance": world.exchanges["binance"]}
    background: list[asyncio.Future[Any]] = []

    def fills_to_the_engine(orch: HedgeOrchestrator) -> None:
        def on_fill(command: Mt5Command) -> None:  # what Runtime._mt5_fill does with every new deal
            work = orch.late_fill(command.group_id, command.client_order_id)
            if work is not None:
                background.append(asyncio.ensure_future(work))

        listener.queue.fill_listeners.append(on_fill)

    recovering = asyncio.ensure_future(restart(world, gateways, ledger, on_start=fills_to_the_engine,
                                               background=background))
    try:
        await ea_acts(listener)
        return await asyncio.wait_for(recovering, BOUND_S), restored
    finally:
        recovering.cancel()
        terminal.wire.app = None


async def test_mt5_command_pending_at_the_crash_is_executed_by_the_ea_after_restart(
    world: World, terminal: Terminal
) -> None:
    """The MT5 leg's command was queued (saved in the ledger), never served, when the engine
    died. After the restart the queue is restored from the ledger; recovery asks about the
    order, then waits on the same command; the EA's next poll executes it once."""
    ttl = 120_000  # still valid after the downtime

    async def queued(listener: Listener, group: HedgeGroup) -> None:
        await until(lambda: listener.command(coid(group, 0)) is CommandState.PENDING, "command queued")

    group = await run_mt5_group_until_crash(world, terminal, ttl, queued)
    buy, sell = coid(group, 0), coid(group, 1)
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "submitted"), (sell, "binance", "entry", "filled")]
    assert _commands(world) == [(command_id_for(buy), "pending", 0, "0")]
    assert terminal.broker.requests == 0

    async def ea_polls(listener: Listener) -> None:
        await until(lambda: [(c.op, c.coid) for c in world.after_restart] == [("query", buy), ("place", buy)],
                    "recovery asked, then waits on the command")
        await terminal.ea.step()

    rec, restored = await _restart_with_mt5(world, terminal, ttl, ea_polls)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [buy])
    assert restored == [c.command_id for c in rec.state.open_commands] == [command_id_for(buy)]
    assert [g.state for g in rec.groups] == [GroupState.HEDGED]
    assert_group_row(world, rec.groups[0])
    [deal] = terminal.broker.deals_with_comment(command_id_for(buy))
    assert terminal.broker.requests == 1 and terminal.ea.executed == 1
    assert world.orders(group.group_id)[0] == (buy, "mt5", "entry", "filled")
    assert world.fills(buy) == [(str(deal.ticket), "0.05")]
    assert _commands(world) == [(command_id_for(buy), "accepted", 1, "0.05")]  # never enqueued twice
    assert [(c.op, c.coid) for c in world.after_restart] == [("query", buy), ("place", buy)]
    assert_asked_before_sending(world, [buy], mt5_waits=[buy])
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


@pytest.mark.parametrize("ea_restarts", [False, True], ids=["same-ea-session", "ea-restarted-too"])
async def test_mt5_deal_done_before_the_crash_is_reported_after_restart_not_executed_again(
    world: World, terminal: Terminal, ea_restarts: bool
) -> None:
    """The EA took the command and executed it, but the engine died before its ack and fill
    arrived. After the restart the EA delivers its pending reports (or, restarted too, re-reports
    its recent deals): the order is filled with that deal, and the broker saw one request."""
    ttl = 120_000

    async def executed_unreported(listener: Listener, group: HedgeGroup) -> None:
        await until(lambda: listener.command(coid(group, 0)) is CommandState.PENDING, "command queued")
        terminal.wire.reports_fail = True
        await terminal.ea.step()  # served (saved as delivered), executed; its reports fail

    group = await run_mt5_group_until_crash(world, terminal, ttl, executed_unreported)
    buy = coid(group, 0)
    [deal] = terminal.broker.deals_with_comment(command_id_for(buy))
    assert terminal.ea.pending_reports == 2  # the ack and the fill
    assert world.group_state(group.group_id) == "working"
    assert world.orders(group.group_id)[0] == (buy, "mt5", "entry", "submitted")
    assert _commands(world) == [(command_id_for(buy), "delivered", 1, "0")]
    assert world.fills(buy) == []
    terminal.wire.reports_fail = False
    first_ea = terminal.ea
    if ea_restarts:
        terminal.start_ea()  # its outbox died with the old session

    async def ea_reports(listener: Listener) -> None:
        await until(lambda: ("place", buy) in [(c.op, c.coid) for c in world.after_restart], "waiting on the command")
        await terminal.ea.step()  # the reports first (pending, or re-sent from the deal history)

    rec, restored = await _restart_with_mt5(world, terminal, ttl, ea_reports)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [buy])
    assert restored == [command_id_for(buy)]
    assert [g.state for g in rec.groups] == [GroupState.HEDGED]
    assert_group_row(world, rec.groups[0])
    assert terminal.broker.requests == 1 and first_ea.executed == 1 and terminal.ea.pending_reports == 0
    assert terminal.ea.executed == (0 if ea_restarts else 1)
    assert world.fills(buy) == [(str(deal.ticket), "0.05")]
    assert world.orders(group.group_id)[0] == (buy, "mt5", "entry", "filled")
    assert _commands(world) == [(command_id_for(buy), "accepted", 1, "0.05")]
    assert_asked_before_sending(world, [buy], mt5_waits=[buy])
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


@pytest.mark.parametrize("how", ["expired-while-down", "never-enqueued"])
async def test_mt5_leg_that_never_reached_the_ea_is_retried_with_a_new_command(
    world: World, terminal: Terminal, how: str
) -> None:
    """The MT5 leg never reached the EA: its command expired unserved while the engine was
    down, or the engine died before the command was saved (the order row was written ahead).
    After the restart the leg resolves as expired / not sent, without the old command being
    served; the group is broken and the retry, a new command, is executed by the EA."""
    ttl = 2_000  # the demo's command_ttl_ms: long gone after the downtime

    async def queued(listener: Listener, group: HedgeGroup) -> None:
        await until(lambda: listener.command(coid(group, 0)) is CommandState.PENDING, "command queued")

    async def before_save(_listener: Listener, _group: HedgeGroup) -> None:
        await world.crash.reached.wait()

    def crash_in_command_save(ledger: Ledger) -> None:
        async def save_never_lands(_command: object) -> None:
            await world.crash.stop_here("saving the command")

        ledger.save = save_never_lands  # type: ignore[method-assign,assignment]

    expired = how == "expired-while-down"
    world.crash.expect(1)
    group = await run_mt5_group_until_crash(world, terminal, ttl, queued if expired else before_save,
                                            None if expired else crash_in_command_save)
    buy, retry = coid(group, 0), coid(group, 0, 1)
    assert world.orders(group.group_id)[0] == (buy, "mt5", "entry", "submitted")
    assert _commands(world) == ([(command_id_for(buy), "pending", 0, "0")] if expired else [])

    async def ea_takes_the_retry(listener: Listener) -> None:
        await until(lambda: listener.command(retry) is CommandState.PENDING, "the retry queued")
        await terminal.ea.step()

    rec, restored = await _restart_with_mt5(world, terminal, ttl, ea_takes_the_retry)
    assert (rec.open_at_restart, rec.unfinished) == ([(group.group_id, GroupState.WORKING)], [buy])
    assert restored == [c.command_id for c in rec.state.open_commands] == ([command_id_for(buy)] if expired else [])
    assert [g.state for g in rec.groups] == [GroupState.REPAIRED]
    assert_group_row(world, rec.groups[0])
    assert terminal.broker.deals_with_comment(command_id_for(buy)) == []  # the old command never executed
    [deal] = terminal.broker.deals_with_comment(command_id_for(retry))
    assert terminal.broker.requests == 1
    assert world.orders(group.group_id) == [(buy, "mt5", "entry", "expired" if expired else "rejected"),
                                            (coid(group, 1), "binance", "entry", "filled"),
                                            (retry, "mt5", "retry_hedge", "filled")]
    assert world.fills(retry) == [(str(deal.ticket), "0.05")] and world.fills(buy) == []
    assert world.actions(group.group_id) == [("retry_hedge", "filled")]
    assert _commands(world) == ([(command_id_for(buy), "expired", 0, "0")] if expired else []) + [
        (command_id_for(retry), "accepted", 1, "0.05")]
    placed = [c.coid for c in world.after_restart if c.op == "place"]
    assert placed == ([buy, retry] if expired else [retry])  # `buy` only waits on its queued command
    assert_asked_before_sending(world, [buy], mt5_waits=[buy] if expired else [])
    assert_one_order_per_client_id(world)
    await assert_nothing_left_open(world)


def _mt5_net(world: World) -> Decimal:
    """The MT5 position our ledger knows of: its MT5 fills, signed."""
    return sum((Decimal(q) * (1 if side == "buy" else -1) for side, q in world.rows(
        "SELECT o.side, f.qty FROM fills f JOIN orders o ON o.order_id = f.order_id WHERE f.venue = 'mt5'")),
        Decimal(0))


async def test_mt5_deal_reported_after_recovery_gave_up_on_its_expired_command(
    world: World, terminal: Terminal
) -> None:
    """The EA executed the MT5 leg before the crash; its ack and fill were lost with the
    engine, and the command's TTL ran out during the downtime. Recovery finds the command
    delivered and expired unacknowledged (the leg is unknown), gives up on it and sends a
    retry; the EA, reconnecting, then reports the first deal and executes the retry. The first
    deal must reach the ledger (and the exposure) while the engine runs."""
    ttl = 2_000  # the demo's command_ttl_ms: it runs out during the downtime

    async def executed_unreported(listener: Listener, group: HedgeGroup) -> None:
        await until(lambda: listener.command(coid(group, 0)) is CommandState.PENDING, "command queued")
        terminal.wire.reports_fail = True
        await terminal.ea.step()

    group = await run_mt5_group_until_crash(world, terminal, ttl, executed_unreported)
    buy, retry = coid(group, 0), coid(group, 0, 1)
    [deal] = terminal.broker.deals_with_comment(command_id_for(buy))
    assert _commands(world) == [(command_id_for(buy), "delivered", 1, "0")]
    terminal.wire.reports_fail = False

    async def ea_reconnects(listener: Listener) -> None:
        await until(lambda: listener.command(retry) is CommandState.PENDING, "the retry queued")
        await terminal.ea.step()  # reports the first deal, then takes the retry

    await _restart_with_mt5(world, terminal, ttl, ea_reconnects)
    broker_net = sum((Decimal(repr(p.volume)) for p in terminal.broker.positions(MAGIC)), Decimal(0))
    assert world.fills(buy) == [(str(deal.ticket), "0.05")]
    assert _mt5_net(world) == broker_net
