"""Every collection that grows with activity keeps a bounded size or age (issue 19), and what it
forgets is still where it is needed: in the ledger, or in the store the MT5 queue looks up.

Real parts throughout: the orchestrator with paper venues and a real SQLite ledger, the demo
runtime with its ledger, the MT5 bridge and queue, the simulated broker.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.commands import CommandFill, CommandState
from core.config import RiskConfig, demo_config
from core.models import GroupState, Order, OrderPurpose, OrderState, Venue
from core.ports import ExecutionGateway
from core.risk import STATE_HISTORY_KEPT, RiskGate
from core.tracker import REFUSALS_KEPT, InFlightOrderTracker
from engine.events import EVENTS_KEPT, EngineEvent, EventLog
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RISK_LOG_ROWS
from engine.runtime import Runtime
from exchanges.paper import PAPER_ORDER_HORIZON_MS, PaperGateway
from ledger.ledger import Ledger
from mt5_bridge.queue import RETAIN_WITH_LOOKUP_MS, CommandQueue
from sim.ea_journal import JOURNAL_KEEP_MS, Journal, JournalEntry, JournalState
from sim.mt5_broker import HISTORY_KEPT, HISTORY_KEPT_MS, SimBroker, TradeRequest
from tests.execution_support import BY_VENUE, INSTRUMENTS, make_intent
from tests.mt5_support import make_command, make_order, make_rig

GROUPS = 7
KEPT_GROUPS = 3
KEPT_ORDERS = 4  # per paper venue


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[Ledger, Path, ManualClock]]:
    clock = ManualClock()
    path = tmp_path / "bounded.db"
    led = await Ledger.open(path, clock=clock)
    try:
        yield led, path, clock
    finally:
        await led.close()


async def test_closed_groups_and_paper_orders_drop_their_oldest_while_the_ledger_keeps_every_row(
    ledger: tuple[Ledger, Path, ManualClock],
) -> None:
    led, path, clock = ledger
    touch = {("mt5", "BTCUSD"): (59990.0, 60000.0), ("binance", "BTCUSDT"): (60100.0, 60110.0)}
    paper: dict[Venue, PaperGateway] = {
        venue: PaperGateway(venue, {BY_VENUE[venue].symbol: BY_VENUE[venue]}, lambda v, s: touch.get((v, s)),
                            clock, orders_kept=KEPT_ORDERS)
        for venue in ("mt5", "binance")
    }
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6),
                                                  max_gross_exposure=Decimal(10**8)))
    gateways: dict[Venue, ExecutionGateway] = dict(paper)
    orch = HedgeOrchestrator(gateways, INSTRUMENTS, gate, clock, EventLog(), journal=led,
                             recent=KEPT_GROUPS, poll_interval_s=0.0)
    groups = []
    for _ in range(GROUPS):
        groups.append(orch.submit(make_intent(now_ms=clock.time_ms())))
        await orch.drain()
        clock.advance(ms=1000)
    await led.flush()

    assert [g.state for g in groups] == [GroupState.HEDGED] * GROUPS
    # Memory: the newest closed groups only, newest first.
    assert [g.group_id for g in orch.closed] == [g.group_id for g in reversed(groups)][:KEPT_GROUPS]
    assert orch.closed_by_state == {GroupState.HEDGED: GROUPS}  # the counts still cover every group
    # The paper venues answer about their newest orders only: the first is forgotten.
    first, last = groups[0].orders[0], groups[-1].orders[0]
    venue = paper[first.venue]
    assert venue.orders_remembered == KEPT_ORDERS
    assert (await venue.query(first)).reason == "order not found"
    assert (await paper[last.venue].query(last)).state is OrderState.FILLED
    # The ledger has every group, order and fill.
    assert _rows(path, "SELECT count(*), count(DISTINCT state) FROM hedge_groups") == [(GROUPS, 1)]
    orders = _rows(path, "SELECT client_order_id, state FROM orders ORDER BY client_order_id")
    assert sorted((o.client_order_id, str(o.state)) for g in groups for o in g.orders) == orders
    assert len(orders) == 2 * GROUPS
    assert _rows(path, "SELECT count(*) FROM fills") == [(2 * GROUPS,)]


def _paper_orchestrator(clock: ManualClock, **kw: int) -> HedgeOrchestrator:
    """An orchestrator on two paper venues at a fixed touch, with a one-minute age bound."""
    touch = {("mt5", "BTCUSD"): (59990.0, 60000.0), ("binance", "BTCUSDT"): (60100.0, 60110.0)}
    gateways: dict[Venue, ExecutionGateway] = {
        venue: PaperGateway(venue, {BY_VENUE[venue].symbol: BY_VENUE[venue]}, lambda v, s: touch.get((v, s)), clock)
        for venue in ("mt5", "binance")}
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**8)))
    return HedgeOrchestrator(gateways, INSTRUMENTS, gate, clock, EventLog(), recent_max_age_ms=60_000,
                             poll_interval_s=0.0, **kw)  # type: ignore[arg-type]


async def test_beyond_the_groups_shown_closed_groups_older_than_the_age_bound_are_forgotten() -> None:
    """At a slow rate the count bound would take hours to fill: beyond the newest `recent_shown`,
    a closed group goes once its execution ended `recent_max_age_ms` ago."""
    clock = ManualClock()
    orch = _paper_orchestrator(clock, recent=10, recent_shown=2)
    groups = []
    for _ in range(6):
        groups.append(orch.submit(make_intent(now_ms=clock.time_ms())))
        await orch.drain()
        clock.advance(ms=25_000)
    # Ended at 0, 25, 50, 75, 100, 125 s; the last closed at 125 s: the horizon was 65 s then.
    newest_first = [g.group_id for g in reversed(groups)]
    assert [g.group_id for g in orch.closed] == newest_first[:3]
    clock.advance(ms=60_000)
    groups.append(orch.submit(make_intent(now_ms=clock.time_ms())))
    await orch.drain()
    # At 210 s the horizon is 150 s: the newest two are kept (the floor), the one of 125 s though past it.
    assert [g.group_id for g in orch.closed] == [groups[-1].group_id, newest_first[0]]
    assert orch.closed_by_state == {GroupState.HEDGED: 7}


async def test_final_flatten_orders_are_forgotten_once_unchanged_for_the_age_bound() -> None:
    """A flatten sends an order per MT5 ticket: a count bound of 1,000 took most of an hour to
    fill in the accelerated soak. Beyond the newest `recent_shown`, a final loose order goes
    `recent_max_age_ms` after its last change (the count bound stays); one still pending stays,
    and does not shelter the final ones after it."""
    clock = ManualClock()
    orch = _paper_orchestrator(clock, recent_shown=1)
    group = orch.submit(make_intent(now_ms=clock.time_ms()))  # 0.1 BTC long on mt5, short on binance
    await orch.drain()
    assert group.state is GroupState.HEDGED

    def flatten_order(n: int) -> Order:  # each reduces the mt5 long by 0.01
        return Order(client_order_id=f"fl{n}", group_id="", venue="mt5", symbol="BTCUSD", side="sell",
                     qty=Decimal("0.01"), price=Decimal("59000"), purpose=OrderPurpose.FLATTEN,
                     created_ms=clock.time_ms())

    for n in range(4):  # at 0, 25, 50, 75 s
        order = flatten_order(n)
        await orch.send_flatten(order)
        assert order.state is OrderState.FILLED
        if n == 0:  # a restart's orphan, still open: never forgotten by age
            orphan = Order(client_order_id="orphan", group_id="", venue="binance", symbol="BTCUSDT", side="buy",
                           qty=Decimal("0.001"), price=Decimal("60000"), purpose=OrderPurpose.FLATTEN,
                           created_ms=clock.time_ms(), state=OrderState.UNKNOWN)
            orch.adopt_orphan(orphan)
        clock.advance(ms=25_000)
    # At 75 s the horizon was 15 s: the order of 0 s went as the one of 75 s came.
    assert list(orch.loose_orders) == ["orphan", "fl1", "fl2", "fl3"]
    clock.advance(ms=60_000)  # 160 s: horizon 100 s; fl3 is the newest (kept whatever its age)
    await orch.send_flatten(flatten_order(4))
    assert list(orch.loose_orders) == ["orphan", "fl3", "fl4"]


async def test_state_changes_beyond_the_gate_history_are_risk_events_in_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    clock = ManualClock()
    path = tmp_path / "risk.db"
    rt = Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)
    await rt.open_ledger()
    cycles = STATE_HISTORY_KEPT // 2 + 10
    try:
        for i in range(cycles):
            assert (await rt.control.pause(f"p{i}")).changed
            clock.advance(ms=10)
            assert (await rt.control.resume(f"r{i}")).changed
            clock.advance(ms=10)
    finally:
        await rt.close_ledger()
    history = list(rt.gate.history)
    assert len(history) == STATE_HISTORY_KEPT
    assert history[-1].reason == f"r{cycles - 1}"  # the newest kept, the oldest dropped
    assert history[0].reason == f"p{cycles - STATE_HISTORY_KEPT // 2}"
    assert len(rt.risk.rows()) == RISK_LOG_ROWS
    rows = _rows(path, "SELECT kind, reason FROM risk_events WHERE kind IN ('pause', 'resume') ORDER BY event_id")
    assert len(rows) == 2 * cycles
    assert rows[0] == ("pause", "p0") and rows[-1] == ("resume", f"r{cycles - 1}")


async def test_finished_mt5_commands_leave_memory_and_a_late_ack_or_fill_finds_them_in_the_store() -> None:
    clock = ManualClock()
    rig = make_rig(clock)
    queue = rig.queue
    far = clock.time_ms() + 10 * RETAIN_WITH_LOOKUP_MS
    await queue.enqueue(make_command("c-1", expires_msc=far))
    assert await queue.ack("T1", "c-1", "accepted", 10009, "")
    fill = CommandFill(deal=77, order=456, position=789, volume=Decimal("0.10"), price=Decimal("2650.35"),
                       commission=Decimal("-0.35"), time_msc=clock.time_ms())
    assert await queue.fill("T1", "c-1", fill)

    clock.advance(ms=RETAIN_WITH_LOOKUP_MS - 1000)
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is not None  # within the retention: kept
    clock.advance(ms=61_000)
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is None and not queue.has_deal("T1", 77)  # forgotten by the queue
    assert [c.command_id for c in rig.store.all()] == ["c-1"]  # not by the store

    # The EA repeats its ack: found in the store, answered as a duplicate (not "unknown").
    reply = await rig.bridge.ack("T1", json.dumps({"command_id": "c-1", "status": "accepted", "retcode": 10009,
                                                   "reason": ""}).encode())
    assert (reply.status, json.loads(reply.body)) == (200, {"ok": True, "duplicate": True})
    held = queue.get("c-1")
    assert held is not None and held.state is CommandState.ACCEPTED and queue.has_deal("T1", 77)


async def test_without_a_store_to_ask_finished_commands_stay_a_day() -> None:
    clock = ManualClock()
    queue = CommandQueue(None, clock)
    await queue.enqueue(make_command("c-1", expires_msc=clock.time_ms() + 10 * RETAIN_WITH_LOOKUP_MS))
    assert await queue.ack("T1", "c-1", "rejected", 10006, "no")
    clock.advance(ms=2 * RETAIN_WITH_LOOKUP_MS)
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is not None  # nothing could bring it back: kept
    clock.advance(ms=86_400_000)
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is None


def test_event_log_and_refusals_keep_the_newest() -> None:
    log = EventLog()
    for i in range(EVENTS_KEPT + 25):
        log.emit(EngineEvent(i, "intent", f"e{i}"))
    recent = log.recent()
    assert len(recent) == EVENTS_KEPT and recent[0].text == "e25" and log.total == EVENTS_KEPT + 25

    tracker = InFlightOrderTracker(ManualClock())
    filled = make_order("o-1")
    tracker.track(filled)
    assert tracker.transition(filled, OrderState.SUBMITTED) is None
    assert tracker.transition(filled, OrderState.FILLED) is None
    for _ in range(REFUSALS_KEPT + 5):
        assert tracker.transition(filled, OrderState.SUBMITTED) is not None  # filled is final
    assert len(tracker.refusals) == REFUSALS_KEPT


def _deal(broker: SimBroker, comment: str) -> None:
    assert broker.execute(TradeRequest(symbol="XAUUSD", volume=0.01, type="buy", price=2650.3,
                                       comment=comment, magic=1)).deal


def test_simulated_broker_keeps_its_newest_history() -> None:
    clock = ManualClock()
    broker = SimBroker(lambda s: (2650.1, 2650.3), clock=clock)
    for i in range(HISTORY_KEPT + 2):
        _deal(broker, f"c{i}")
    deals = broker.history_deals()
    assert len(deals) == len(broker.history_orders()) == HISTORY_KEPT
    assert (deals[0].comment, deals[-1].comment) == ("c2", f"c{HISTORY_KEPT + 1}")
    assert broker.deals_with_comment("c0") == []
    restored = SimBroker(lambda s: (2650.1, 2650.3), clock=clock)
    restored.load_state(json.loads(json.dumps(broker.to_state())))
    assert [d.ticket for d in restored.history_deals()] == [d.ticket for d in deals]


def test_simulated_broker_history_reaches_back_its_horizon() -> None:
    clock = ManualClock()
    broker = SimBroker(lambda s: (2650.1, 2650.3), clock=clock)
    _deal(broker, "old")
    clock.advance(ms=HISTORY_KEPT_MS)
    _deal(broker, "edge")  # exactly the horizon after the first: both kept
    assert [d.comment for d in broker.history_deals()] == ["old", "edge"]
    clock.advance(ms=1)
    _deal(broker, "new")
    assert [d.comment for d in broker.history_deals()] == ["edge", "new"]
    assert [o.comment for o in broker.history_orders()] == ["edge", "new"]
    assert len(broker.positions()) == 3  # open positions are the account, never dropped


async def test_paper_venue_forgets_orders_past_its_horizon() -> None:
    clock = ManualClock()
    inst = BY_VENUE["binance"]
    venue = PaperGateway("binance", {inst.symbol: inst}, lambda v, s: (60100.0, 60110.0), clock)
    orders = [dataclasses.replace(make_order(f"o{i}", symbol=inst.symbol, side="sell"), venue="binance")
              for i in range(3)]
    await venue.place(orders[0])
    clock.advance(ms=PAPER_ORDER_HORIZON_MS)
    await venue.place(orders[1])
    assert venue.orders_remembered == 2
    clock.advance(ms=1)
    await venue.place(orders[2])
    assert venue.orders_remembered == 2
    assert (await venue.query(orders[0])).reason == "order not found"
    assert (await venue.query(orders[1])).state is OrderState.FILLED
    # A re-send of a remembered id is answered, never executed twice.
    assert (await venue.place(orders[2])).reason == "duplicate"


def test_ea_journal_forgets_entries_past_its_keep_in_memory_and_keeps_its_file(tmp_path: Path) -> None:
    def entry(cid: str, send_ms: int, state: JournalState = "sent") -> JournalEntry:
        return JournalEntry(cid, state, send_ms, "XAUUSD", "buy", 0.01)

    path = tmp_path / "T1.journal"
    journal = Journal(path, now_ms=0, keep_ms=1000)
    journal.write(entry("c-0", 0))
    journal.write(entry("c-1", 500))
    journal.write(entry("c-0", 0, "done"))  # an update does not make it younger
    journal.write(entry("c-2", 1500))  # c-0 is now older than the keep: forgotten
    assert [e.command_id for e in journal.entries()] == ["c-1", "c-2"]
    assert journal.get("c-0") is None
    # The file still has every line (it is compacted when opened, as the EA does).
    assert [line.split("\t")[1] for line in path.read_text().splitlines()] == ["c-0", "c-1", "c-0", "c-2"]
    memory: dict[str, JournalEntry] = {}
    in_memory = Journal(None, now_ms=0, keep_ms=JOURNAL_KEEP_MS, entries=memory)
    in_memory.write(entry("a", 0))
    in_memory.write(entry("b", JOURNAL_KEEP_MS + 1))
    assert list(memory) == ["b"]  # the memory shared with a restarted EA is bounded too
