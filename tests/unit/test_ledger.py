"""The ledger on real SQLite files: writer, group commit, projections, recovery, queries, check."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.commands import CommandFill, CommandState
from core.hedge import HedgeGroup
from core.models import GroupState, Order, OrderPurpose, OrderState, TradingState, Venue
from core.ports import RiskKind
from core.risk import StateChange
from ledger import (
    SCHEMA_VERSION,
    EventRejectedError,
    Ledger,
    LedgerBackpressureError,
    LedgerBusyError,
    LedgerClosedError,
    LedgerEvent,
    LedgerWriteError,
    queries,
)
from ledger import events as ev
from ledger.schema import APPLICATION_ID
from tests.unit.test_ledger_support import (
    T0,
    apply_fill,
    make_action,
    make_command,
    make_decision,
    make_fill,
    make_group,
    make_order,
)

# DESIGN.md 5.5, the contract: these tables with exactly these columns.
CONTRACT = {
    "hedge_groups": ["group_id", "pair", "buy_venue", "sell_venue", "state", "opened_at_ms", "closed_at_ms",
                     "target_qty", "expected_edge_bps", "realized_pnl", "fees"],
    "orders": ["order_id", "client_order_id", "group_id", "venue", "symbol", "side", "qty", "price", "purpose",
               "state", "venue_order_id", "created_at_ms", "updated_at_ms"],
    "fills": ["fill_id", "order_id", "venue", "venue_trade_id", "qty", "price", "fee", "fee_ccy", "ts_ms"],
    "compensation_actions": ["action_id", "group_id", "kind", "reason", "created_at_ms", "outcome"],
    "risk_events": ["event_id", "ts_ms", "kind", "reason", "trading_state"],
    "decisions": ["ts_ms", "pair", "buy_venue", "sell_venue", "edge_bps", "outcome", "reason"],
    "events": ["seq", "ts_ms", "kind", "group_id", "payload"],
}


def raw(path: Path) -> sqlite3.Connection:
    """A separate stdlib connection: what another process or the sqlite3 CLI would see."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def count(path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    conn = raw(path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_ms=T0)


@pytest.fixture
async def ledger(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Ledger]:
    led = await Ledger.open(tmp_path / "ledger.db", clock=clock)
    yield led
    await led.close()


# -- schema and events ---------------------------------------------------------------------
async def test_new_file_has_the_contract_tables_header_and_wal(ledger: Ledger) -> None:
    conn = raw(ledger.path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for table, columns in CONTRACT.items():
            assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == columns, table
    finally:
        conn.close()
    assert ledger.migrated_from == 0


def test_open_order_condition_matches_the_order_state_machine() -> None:
    from core.orders import TERMINAL
    from ledger.schema import INDEXES_V2, OPEN_ORDERS_WHERE

    listed = {part.strip(" '") for part in OPEN_ORDERS_WHERE.split("(")[1].rstrip(")").split(",")}
    assert listed == {s.value for s in TERMINAL}
    assert any(OPEN_ORDERS_WHERE in statement for statement in INDEXES_V2)


def test_payloads_are_plain_json_with_decimal_strings() -> None:
    group = make_group("g1")
    order = make_order(group, 0)
    order.qty = Decimal("0.00000001")
    fill = make_fill(order, "t1", qty=Decimal("1E+2"))
    for event in (ev.group_opened(group, T0), ev.order_created(order, T0), ev.fill(fill, T0, "g1")):
        text = ev.encode_payload(event.payload)
        assert ev.decode_payload(text) == event.payload  # JSON round trip is exact
    assert ev.order_created(order, T0).payload["qty"] == "0.00000001"
    assert ev.fill(fill, T0).payload["qty"] == "100"
    assert ev.group_opened(group, T0).payload["instruments"]["okx"]["qty_per_unit"] == "0.01"
    with pytest.raises(ValueError, match="unknown risk event kind"):
        ev.risk_event("panic", StateChange(T0, TradingState.HALTED, "x"), T0)


def test_recovery_decoders_invert_the_builders() -> None:
    group = make_group("g1")
    payload = ev.group_opened(group, T0).payload
    assert ev.intent_from_payload(payload["intent"]) == group.intent
    assert {v: ev.instrument_from_payload(i) for v, i in payload["instruments"].items()} == group.instruments
    cmd = make_command("c1", fills=2)
    assert ev.command_from_payload(ev.mt5_command(cmd, T0).payload) == cmd


# -- durability and group commit -----------------------------------------------------------
async def test_append_durable_is_visible_to_a_separate_reader_when_it_returns(tmp_path: Path) -> None:
    # A writer that would gather fire-and-forget events for a minute: only durability flushes.
    led = await Ledger.open(tmp_path / "l.db", max_delay_s=60.0)
    try:
        group = make_group("g1")
        seq1 = led.group_opened(group)
        await asyncio.sleep(0.05)
        assert count(led.path, "SELECT count(*) FROM events") == 0  # still queued
        seq2 = await led.order_created(make_order(group, 0))
        assert (seq1, seq2) == (1, 2)
        # Returned: both are committed (events commit in seq order) and visible to another connection.
        assert count(led.path, "SELECT count(*) FROM events") == 2
        assert count(led.path, "SELECT count(*) FROM orders WHERE client_order_id = 'qag1l0a0'") == 1
        led.compensation(make_action(group, 1))
        await led.flush()
        assert count(led.path, "SELECT count(*) FROM compensation_actions") == 1
    finally:
        await led.close()


async def test_write_ahead_order_row_exists_before_the_send(ledger: Ledger) -> None:
    """The orchestrator's sequence: write-ahead, then send. The fake venue looks at the file."""
    seen: list[sqlite3.Row] = []

    async def send(order: Order) -> None:  # a gateway would put the request on the wire here
        conn = raw(ledger.path)
        try:
            seen.extend(conn.execute("SELECT * FROM orders WHERE client_order_id = ?", (order.client_order_id,)))
        finally:
            conn.close()

    group = make_group("g1")
    ledger.group_opened(group)
    for leg in (0, 1):
        order = make_order(group, leg)
        await ledger.order_created(order)
        await send(order)
    assert [(r["client_order_id"], r["state"], r["group_id"]) for r in seen] == [
        ("qag1l0a0", "new", "g1"), ("qag1l1a0", "new", "g1")]


async def test_group_commit_puts_many_durable_events_in_few_transactions(ledger: Ledger) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    orders = [make_order(group, 0, attempt=i) for i in range(1000)]
    before = ledger.writer.commits
    seqs = await asyncio.gather(*(ledger.order_created(o) for o in orders))
    commits = ledger.writer.commits - before
    assert sorted(seqs) == list(range(2, 1002))
    assert commits <= 10, commits  # 1000 concurrent producers share a handful of commits
    assert count(ledger.path, "SELECT count(*) FROM orders") == 1000


async def test_fire_and_forget_events_are_batched_and_bounded_by_max_batch(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", max_batch=100, max_delay_s=0.002)
    try:
        for i in range(5000):
            led.decision(make_decision(T0 + i * 1000, reason=f"r{i % 3}"))
        await led.flush()
        assert led.writer.largest_batch <= 100
        assert 50 <= led.writer.commits <= 60  # 5000 / 100, plus the odd partial batch
        assert count(led.path, "SELECT count(*) FROM decisions") == 5000
    finally:
        await led.close()


async def test_flush_waits_for_a_given_seq(ledger: Ledger) -> None:
    group = make_group("g1")
    first = ledger.group_opened(group)
    ledger.group_state(group)
    await ledger.flush(first)
    assert ledger.writer.committed_seq >= first
    await ledger.flush()
    assert ledger.writer.committed_seq == 2
    with pytest.raises(ValueError, match="never appended"):
        await ledger.flush(3)


async def test_close_commits_what_is_queued_and_refuses_later_appends(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", max_delay_s=60.0)
    group = make_group("g1")
    led.group_opened(group)
    led.group_state(group)
    await led.close()
    assert count(tmp_path / "l.db", "SELECT count(*) FROM events") == 2
    with pytest.raises(LedgerClosedError):
        led.group_state(group)
    await led.close()  # idempotent


async def test_one_engine_per_ledger_file(ledger: Ledger) -> None:
    with pytest.raises(LedgerBusyError, match="in use by another ledger of this quantarb process"):
        await Ledger.open(ledger.path)


async def test_a_bad_event_is_refused_alone(ledger: Ledger) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    bad = LedgerEvent(ev.FILL, T0, "g1", {"client_order_id": "x"})  # NOT NULL columns missing
    results = await asyncio.gather(
        ledger.order_created(make_order(group, 0)),
        ledger.append_durable(bad),
        ledger.order_created(make_order(group, 1)),
        return_exceptions=True,
    )
    assert isinstance(results[1], EventRejectedError)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert ledger.writer.rejected == 1
    assert await ledger.order_created(make_order(group, 2, attempt=1)) > 0  # the writer goes on
    assert count(ledger.path, "SELECT count(*) FROM orders") == 3
    assert count(ledger.path, "SELECT count(*) FROM events WHERE kind = 'fill'") == 0


async def test_a_failed_transaction_stops_the_writer_loudly(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    async def disk_error(*_args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledger.writer._conn, "execute", disk_error)  # what apply_many calls
    group = make_group("g1")
    with pytest.raises(LedgerWriteError, match="disk I/O error"):
        await ledger.order_created(make_order(group, 0))
    with pytest.raises(LedgerWriteError):
        ledger.group_opened(group)
    assert ledger.stats()["failed"] is True


async def test_back_pressure(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", max_batch=1000, max_delay_s=60.0, max_queue=10, hard_queue=20)
    try:
        group = make_group("g1")
        for _ in range(20):
            led.group_state(group)
        with pytest.raises(LedgerBackpressureError, match="cannot keep up"):
            led.group_state(group)
        # A durable caller waits for room (the writer flushes at once), then goes through.
        await led.order_created(make_order(group, 0))
        assert led.writer.queued == 0
        assert count(led.path, "SELECT count(*) FROM events") == 21
    finally:
        await led.close()


async def test_checkpoints_when_idle_and_restarts_a_wal_that_grows_under_load(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", checkpoint_idle_s=0.01, wal_max_bytes=64 * 1024,
                            wal_check_interval_s=0.0)
    try:
        group = make_group("g1")
        led.group_opened(group)
        for i in range(60):  # sustained: one durable batch after the other, never idle
            await asyncio.gather(*(led.order_created(make_order(group, 0, attempt=i * 10 + k)) for k in range(10)))
        assert led.writer.wal_restarts >= 1
        for _ in range(250):  # idle: a background checkpoint soon
            if led.writer.checkpoints:
                break
            await asyncio.sleep(0.02)
        assert led.writer.checkpoints >= 1
        # A reader inside a long read transaction: the restart gives up within 10 ms instead of
        # stalling the writes (busy_timeout would otherwise make it wait 5 s per attempt).
        reader = sqlite3.connect(led.path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        for i in range(30):
            await asyncio.wait_for(
                asyncio.gather(*(led.order_created(make_order(group, 1, attempt=i * 10 + k)) for k in range(10))),
                timeout=2.0,
            )
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 601  # its snapshot held
        reader.execute("COMMIT")
        reader.close()
        assert led.stats()["last_error"] == ""
    finally:
        await led.close()
    assert count(tmp_path / "l.db", "SELECT count(*) FROM orders") == 900


# -- projections ---------------------------------------------------------------------------
async def test_duplicate_fill_is_ignored_not_an_error(ledger: Ledger) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    order = make_order(group, 0)
    await ledger.order_created(order)
    half = order.qty / 2  # two partial fills that together fill the order
    fill = make_fill(order, "t-1", qty=half)
    ledger.fill(order, fill)
    ledger.fill(order, fill)  # the venue reported it twice
    ledger.fill(order, make_fill(order, "t-2", qty=order.qty - half))
    await ledger.flush()
    assert count(ledger.path, "SELECT count(*) FROM events WHERE kind = 'fill'") == 3  # the journal keeps all
    assert count(ledger.path, "SELECT count(*) FROM fills") == 2
    assert count(ledger.path, "SELECT count(*) FROM fills WHERE venue_trade_id = 't-1'") == 1
    report = await ledger.read(queries.check)
    assert report["ok"], report


async def test_projected_rows_follow_the_domain_objects(ledger: Ledger, clock: ManualClock) -> None:
    group = make_group("g1")
    ledger.decision(make_decision(T0, intent=True), group_id="g1")
    ledger.group_opened(group)
    buy, sell = make_order(group, 0), make_order(group, 1)
    for order in (buy, sell):
        await ledger.order_created(order)
        order.state, order.updated_ms, order.venue_order_id = OrderState.SUBMITTED, T0 + 1, "v-" + order.venue
        ledger.order_state(order)
        fill = make_fill(order, "t-" + order.client_order_id, ts_ms=T0 + 5)
        apply_fill(order, fill)
        order.updated_ms = T0 + 5
        ledger.fill(order, fill)
        ledger.order_state(order)
    group.transition(GroupState.WORKING, T0 + 1)
    group.transition(GroupState.HEDGED, T0 + 6)
    ledger.group_state(group)
    await ledger.flush()
    conn = raw(ledger.path)
    try:
        g = dict(conn.execute("SELECT * FROM hedge_groups").fetchone())
        assert g == {
            "group_id": "g1", "pair": "BTC", "buy_venue": "okx", "sell_venue": "mt5", "state": "hedged",
            "opened_at_ms": T0, "closed_at_ms": T0 + 6, "target_qty": "0.1", "expected_edge_bps": 9.25,
            "realized_pnl": ev.dec(group.realized_pnl), "fees": "0.0650",
        }
        # sell 0.1 BTC @ 65090.55 - buy 10 contracts x 0.01 @ 65000.1 - fees
        assert group.realized_pnl == Decimal("9.045") - Decimal("0.0650")
        o = dict(conn.execute("SELECT * FROM orders WHERE order_id = 'qag1l0a0'").fetchone())
        assert o == {
            "order_id": "qag1l0a0", "client_order_id": "qag1l0a0", "group_id": "g1", "venue": "okx",
            "symbol": "BTC-USDT-SWAP", "side": "buy", "qty": "10", "price": "65000.1", "purpose": "entry",
            "state": "filled", "venue_order_id": "v-okx", "created_at_ms": T0, "updated_at_ms": T0 + 5,
        }
        f = dict(conn.execute("SELECT * FROM fills WHERE order_id = 'qag1l1a0'").fetchone())
        assert {k: f[k] for k in ("venue", "venue_trade_id", "qty", "price", "fee", "fee_ccy", "ts_ms")} == {
            "venue": "mt5", "venue_trade_id": "t-qag1l1a0", "qty": "0.10", "price": "65090.55", "fee": "0.0325",
            "fee_ccy": "USD", "ts_ms": T0 + 5}
        d = dict(conn.execute("SELECT * FROM decisions").fetchone())
        assert d == {"ts_ms": T0, "pair": "BTC", "buy_venue": "okx", "sell_venue": "mt5", "edge_bps": 1.5,
                     "outcome": "intent", "reason": "ok"}
    finally:
        conn.close()


async def test_the_journal_holds_each_payload_exactly_as_encoded(ledger: Ledger) -> None:
    group = make_group("g1")
    group.note = 'unicode \u00e9\u20ac "quoted" \\ back\nslash'
    events = [ev.group_opened(group, T0), ev.group_state(group, T0),
              ev.decision(make_decision(T0, reason="risk:max_open_groups"), T0),
              ev.mt5_command(make_command("c1", fills=2), T0),
              LedgerEvent("custom", T0, None, {"f": 1e-300, "big": 2**62, "nested": [{"a": None}], "nan": 0.1})]
    seqs = [ledger.append(e) for e in events]
    await ledger.flush()
    conn = raw(ledger.path)
    try:
        stored = {r[0]: r[1] for r in conn.execute("SELECT seq, payload FROM events")}
    finally:
        conn.close()
    for seq, event in zip(seqs, events, strict=True):
        assert stored[seq] == ev.encode_payload(event.payload)
        assert ev.decode_payload(stored[seq]) == event.payload


async def test_compensation_and_risk_events(ledger: Ledger, clock: ManualClock) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    action = make_action(group, 1)
    ledger.compensation(action)
    action.outcome = "filled"
    ledger.compensation(action)  # same action, new outcome: one row
    kill_seq = await ledger.risk_event("kill", StateChange(T0 + 7, TradingState.HALTED, "operator"))
    await ledger.flush()
    conn = raw(ledger.path)
    try:
        assert [tuple(r) for r in conn.execute("SELECT action_id, kind, outcome FROM compensation_actions")] == [
            ("g1c1", "unwind", "filled")]
        assert [tuple(r) for r in conn.execute("SELECT * FROM risk_events")] == [
            (kill_seq, T0 + 7, "kill", "operator", "halted")]
    finally:
        conn.close()


# -- decisions sampling --------------------------------------------------------------------
async def test_blocked_decisions_are_sampled_and_every_intent_is_kept(ledger: Ledger) -> None:
    pairs, reasons, seconds = ("BTC", "ETH"), ("below_threshold", "cooldown", "stale_quote"), 5
    directions: tuple[tuple[Venue, Venue], ...] = (("okx", "mt5"), ("mt5", "okx"))
    offered = 0
    for ms in range(0, seconds * 1000, 10):  # 100 decisions per second per key
        for pair in pairs:
            for reason in reasons:
                for buy, sell in directions:
                    ledger.decision(make_decision(T0 + ms, pair, reason, buy=buy, sell=sell))
                    offered += 1
    for i in range(50):
        assert ledger.decision(make_decision(T0 + i, intent=True)) is not None
    await ledger.flush()
    keys = len(pairs) * len(reasons) * 2
    assert count(ledger.path, "SELECT count(*) FROM decisions WHERE outcome = 'blocked'") == keys * seconds
    assert count(ledger.path, "SELECT count(*) FROM decisions WHERE outcome = 'intent'") == 50
    # At most one per key per second, by the decision's own time.
    assert count(ledger.path, "SELECT count(*) FROM (SELECT pair, buy_venue, sell_venue, reason, ts_ms / 1000 AS s, "
                              "count(*) AS n FROM decisions WHERE outcome = 'blocked' GROUP BY 1, 2, 3, 4, 5 "
                              "HAVING n > 1)") == 0
    assert ledger.sampler.suppressed == offered - keys * seconds


async def test_decision_without_counter_quote_is_logged(ledger: Ledger) -> None:
    ledger.decision(make_decision(T0, reason="no_counter_quote", buy=None, sell=None))
    await ledger.flush()
    assert count(ledger.path, "SELECT count(*) FROM decisions WHERE buy_venue IS NULL") == 1


# -- recovery ------------------------------------------------------------------------------
async def _scenario(led: Ledger) -> dict[str, Any]:
    """A closed group, a working group, a compensating group, a flatten order, MT5 commands, a kill."""
    closed = make_group("gclosed", T0)
    led.group_opened(closed)
    for leg in (0, 1):
        o = make_order(closed, leg)
        await led.order_created(o)
        f = make_fill(o, f"t-{o.client_order_id}")
        apply_fill(o, f)
        led.fill(o, f)
        led.order_state(o)
    closed.transition(GroupState.WORKING, T0)
    closed.transition(GroupState.HEDGED, T0 + 10)
    led.group_state(closed)

    working = make_group("gworking", T0 + 100)
    led.group_opened(working)
    w_buy, w_sell = make_order(working, 0, ts_ms=T0 + 100), make_order(working, 1, ts_ms=T0 + 100)
    await led.order_created(w_buy)
    await led.order_created(w_sell)
    f = make_fill(w_buy, "t-wb", qty=Decimal("4"))
    apply_fill(w_buy, f)
    led.fill(w_buy, f)
    led.order_state(w_buy)
    w_sell.state, w_sell.venue_order_id, w_sell.updated_ms = OrderState.ACKED, "mt5-77", T0 + 101
    led.order_state(w_sell)
    working.transition(GroupState.WORKING, T0 + 100)
    led.group_state(working)

    broken = make_group("gbroken", T0 + 200)
    led.group_opened(broken)
    b_buy, b_sell = make_order(broken, 0, ts_ms=T0 + 200), make_order(broken, 1, ts_ms=T0 + 200)
    for o in (b_buy, b_sell):
        await led.order_created(o)
    f = make_fill(b_buy, "t-bb")
    apply_fill(b_buy, f)
    led.fill(b_buy, f)
    led.order_state(b_buy)
    b_sell.state = OrderState.REJECTED
    led.order_state(b_sell)
    broken.transition(GroupState.WORKING, T0 + 200)
    broken.transition(GroupState.BROKEN, T0 + 201)
    broken.transition(GroupState.COMPENSATING, T0 + 202)
    led.group_state(broken)
    action = make_action(broken, 1, T0 + 202)
    broken.actions.append(action)
    led.compensation(action)
    unwind = make_order(broken, 2, attempt=1, purpose=OrderPurpose.UNWIND, ts_ms=T0 + 203)
    await led.order_created(unwind)

    flatten = make_order(None, 3, purpose=OrderPurpose.FLATTEN, ts_ms=T0 + 300)
    await led.order_created(flatten)

    commands = {
        "pending": make_command("c-pending"),
        "delivered": make_command("c-delivered", state=CommandState.DELIVERED),
        "partial": make_command("c-partial", state=CommandState.ACCEPTED, fills=1),
        "done": make_command("c-done", state=CommandState.ACCEPTED, fills=2),
        "rejected": make_command("c-rejected", state=CommandState.REJECTED),
        "expired": make_command("c-expired", state=CommandState.EXPIRED),
    }
    for cmd in commands.values():
        await led.save(cmd)
    commands["pending"].deliveries = 1
    commands["pending"].state = CommandState.DELIVERED
    await led.save(commands["pending"])  # upsert: still one row

    await led.risk_event("pause", StateChange(T0 + 400, TradingState.PAUSED, "lunch"))
    await led.risk_event("kill", StateChange(T0 + 500, TradingState.HALTED, "group gbroken failed"))
    return {"working": working, "broken": broken, "flatten": flatten, "commands": commands,
            "open_orders": [w_buy, w_sell, unwind, flatten]}


async def test_recovery_returns_exactly_what_is_open(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "ledger.db"
    led = await Ledger.open(path, clock=clock)
    expected = await _scenario(led)
    await led.close()

    led = await Ledger.open(path, clock=clock)  # a restart
    try:
        state = await led.recover()
        assert state.halted and state.trading_state is TradingState.HALTED
        assert (state.trading_reason, state.trading_since_ms) == ("group gbroken failed", T0 + 500)
        assert [g.group_id for g in state.open_groups] == ["gworking", "gbroken"]
        for got in state.open_groups:
            want: HedgeGroup = expected[got.group_id[1:]]
            assert got.intent == want.intent
            assert got.instruments == want.instruments
            assert (got.state, got.opened_ms) == (want.state, want.opened_ms)
            assert [(o.client_order_id, o.state, o.filled_qty, o.notional, o.fees, o.fills) for o in got.orders] == [
                (o.client_order_id, o.state, o.filled_qty, o.notional, o.fees, o.fills) for o in want.orders]
            assert got.actions == want.actions
            assert got.residual() == want.residual()
            assert got.realized_pnl == want.realized_pnl
        assert [o.client_order_id for o in state.open_orders] == [o.client_order_id for o in expected["open_orders"]]
        by_id = {o.client_order_id: o for g in state.open_groups for o in g.orders}
        assert all(by_id[o.client_order_id] is o for o in state.open_orders if o.group_id)  # same objects
        assert state.open_orders[-1].purpose is OrderPurpose.FLATTEN and state.open_orders[-1].group_id == ""
        assert state.open_orders[0].state is OrderState.PARTIALLY_FILLED
        assert state.open_orders[1].venue_order_id == "mt5-77"
        cmds = expected["commands"]
        assert state.open_commands == [cmds["delivered"], cmds["partial"], cmds["pending"]]  # created_ms, id
        assert state.last_seq == led.writer.last_seq
    finally:
        await led.close()


async def test_command_store_forgets_accepted_commands_after_the_fill_wait(tmp_path: Path, clock: ManualClock) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=clock, command_fill_wait_ms=60_000)
    try:
        partial = make_command("c1", state=CommandState.ACCEPTED, fills=1)
        await led.save(partial)
        assert await led.load_open() == [partial]
        partial.fills.append(CommandFill(deal=9, order=9, position=9, volume=Decimal("0.05"), price=Decimal("1"),
                                         commission=Decimal(0), time_msc=T0))
        await led.save(partial)
        assert await led.load_open() == []  # fully filled
        other = make_command("c2", state=CommandState.ACCEPTED)
        await led.save(other)
        clock.advance(ms=61_000)
        assert await led.load_open() == []  # waited long enough for fills that never came
        assert count(led.path, "SELECT count(*) FROM mt5_commands") == 2
    finally:
        await led.close()


async def test_a_fresh_ledger_recovers_active_and_empty(ledger: Ledger) -> None:
    state = await ledger.recover()
    assert (state.trading_state, state.open_groups, state.open_orders, state.open_commands, state.last_seq) == (
        TradingState.ACTIVE, [], [], [], 0)
    await ledger.risk_event("kill", StateChange(T0, TradingState.HALTED, "k"))
    await ledger.risk_event("rearm", StateChange(T0 + 1, TradingState.ACTIVE, "fixed"))
    state = await ledger.recover()
    assert (state.trading_state, state.trading_reason) == (TradingState.ACTIVE, "fixed")


# -- queries -------------------------------------------------------------------------------
async def test_summary_groups_show_export(ledger: Ledger, clock: ManualClock) -> None:
    yesterday = T0 - 86_400_000
    old = make_group("gold", yesterday)
    ledger.group_opened(old)
    o = make_order(old, 0, ts_ms=yesterday)
    await ledger.order_created(o)
    f = make_fill(o, "t-old", ts_ms=yesterday, fee=Decimal("1.5"))
    apply_fill(o, f)
    ledger.fill(o, f)
    ledger.order_state(o)
    old.transition(GroupState.WORKING, yesterday)
    old.transition(GroupState.BROKEN, yesterday)
    old.transition(GroupState.COMPENSATING, yesterday)
    old.transition(GroupState.FAILED, yesterday + 5)
    ledger.group_state(old)
    await _scenario(ledger)
    await ledger.flush()

    s = await ledger.read(queries.summary, now_ms=T0 + 1000)
    json.dumps(s)
    assert s["trading_state"]["state"] == "halted"
    assert s["open_groups"] == 2 and s["open_orders"] == 4
    assert s["all_time"]["groups_by_state"] == {"compensating": 1, "failed": 1, "hedged": 1, "working": 1}
    assert s["today"]["groups_by_state"] == {"compensating": 1, "hedged": 1, "working": 1}
    assert s["all_time"]["fills"] == 5 and s["today"]["fills"] == 4
    assert s["all_time"]["fees"] == {"USD": "0.0325", "USDT": "1.5975"}
    assert s["today"]["fees"] == {"USD": "0.0325", "USDT": "0.0975"}
    realized_old = Decimal(ledger_row(ledger.path, "gold")["realized_pnl"])
    realized_closed = Decimal(ledger_row(ledger.path, "gclosed")["realized_pnl"])
    assert Decimal(s["all_time"]["realized_pnl"]) == realized_old + realized_closed
    assert Decimal(s["today"]["realized_pnl"]) == realized_closed
    assert s["today"]["groups_closed"] == 1

    rows = await ledger.read(queries.groups, state="open")
    assert [r["group_id"] for r in rows] == ["gbroken", "gworking"]
    assert [r["group_id"] for r in await ledger.read(queries.groups, since_ms=T0)] == ["gbroken", "gworking",
                                                                                     "gclosed"]
    assert [r["group_id"] for r in await ledger.read(queries.groups, state="failed", pair="BTC")] == ["gold"]
    assert await ledger.read(queries.groups, pair="ETH") == []

    shown = await ledger.read(queries.show, "gbroken")
    assert shown is not None
    json.dumps(shown)
    assert [o["order_id"] for o in shown["orders"]] == ["qagbrokenl0a0", "qagbrokenl1a0", "qagbrokenl2a1"]
    assert shown["orders"][0]["filled_qty"] == "10" and len(shown["orders"][0]["fills"]) == 1
    assert [a["action_id"] for a in shown["compensation"]] == ["gbrokenc1"]
    assert shown["intent"]["buy"]["venue"] == "okx"
    kinds = [t["kind"] for t in shown["timeline"]]
    assert kinds[0] == "group_opened" and "fill" in kinds and "compensation" in kinds
    assert [t["seq"] for t in shown["timeline"]] == sorted(t["seq"] for t in shown["timeline"])
    assert await ledger.read(queries.show, "nope") is None

    buf = io.StringIO()
    n = await ledger.read(queries.export, buf, "json")
    doc = json.loads(buf.getvalue())
    assert set(doc["tables"]) == {*CONTRACT, "decision_stats", "dust"} and doc["schema_version"] == SCHEMA_VERSION
    assert n == sum(len(v) for v in doc["tables"].values())
    assert doc["tables"]["events"][0]["payload"]["group_id"] == "gold"
    buf = io.StringIO()
    n = await ledger.read(queries.export, buf, "csv", table="fills")
    lines = buf.getvalue().splitlines()
    assert lines[0] == ",".join(CONTRACT["fills"]) and len(lines) == n + 1 == 6


def ledger_row(path: Path, group_id: str) -> dict[str, Any]:
    conn = raw(path)
    try:
        return dict(conn.execute("SELECT * FROM hedge_groups WHERE group_id = ?", (group_id,)).fetchone())
    finally:
        conn.close()


async def test_check_passes_on_a_healthy_ledger_and_names_each_broken_invariant(ledger: Ledger) -> None:
    await _scenario(ledger)
    await ledger.flush()
    report = await ledger.read(queries.check)
    assert report["ok"], report
    assert {c["name"] for c in report["checks"]} == {
        "integrity", "fills_have_orders", "orders_have_group_or_flatten", "unique_client_order_ids",
        "fills_match_orders", "projections_match_journal"}

    # A projection edited by hand (not through the journal).
    conn = raw(ledger.path)
    conn.execute("UPDATE orders SET state = 'filled' WHERE order_id = 'qagworkingl1a0'")
    conn.commit()
    conn.close()
    report = await ledger.read(queries.check)
    assert not report["ok"]
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    # The edit shows twice: the row no longer matches its journal, and a "filled" order with
    # no fills is a lost fill as far as the ledger can tell.
    assert set(failed) == {"projections_match_journal", "fills_match_orders"}
    assert failed["fills_match_orders"]["examples"][0][0] == "qagworkingl1a0"
    [orders] = failed["projections_match_journal"]["examples"]
    assert orders["table"] == "orders"
    assert orders["only_in_ledger"][0][0] == "qagworkingl1a0" and "filled" in orders["only_in_ledger"][0]
    assert orders["only_in_rebuild"][0][0] == "qagworkingl1a0" and "acked" in orders["only_in_rebuild"][0]


async def test_check_finds_orphans_and_duplicate_client_ids(ledger: Ledger) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    order = make_order(group, 0)
    await ledger.order_created(order)
    await ledger.order_created(order)  # created twice: the journal shows it, the table keeps one row
    stray = make_order(None, 1, coid="qastray")
    stray.group_id = "gmissing"
    await ledger.order_created(stray)  # an entry order whose group was never recorded
    ghost = make_order(group, 1)
    group.orders.remove(ghost)
    ledger.fill(ghost, make_fill(ghost, "t-ghost"))  # a fill for an order never written
    await ledger.flush()
    report = await ledger.read(queries.check)
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert set(failed) == {"fills_have_orders", "orders_have_group_or_flatten", "unique_client_order_ids"}
    assert failed["fills_have_orders"]["examples"][0][1] == "qag1l1a0"
    assert failed["orders_have_group_or_flatten"]["examples"][0][0] == "qastray"
    assert failed["unique_client_order_ids"]["examples"][0] == ["qag1l0a0", 2]


# -- rebuild from the journal equals the live projections (property) -----------------------
ORDER_STATES = list(OrderState)
GROUP_STATES = list(GroupState)


async def _random_history(path: Path, data: st.DataObject) -> dict[str, Any]:
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(
        path, clock=clock,
        decision_stats_interval_ms=data.draw(st.sampled_from([1000, 60_000]), label="stats_interval"),
        max_batch=data.draw(st.integers(1, 40), label="max_batch"),
        max_delay_s=data.draw(st.sampled_from([0.0, 0.001, 0.01]), label="max_delay_s"),
    )
    model: dict[str, Any] = {"orders": {}, "fills": set(), "groups": {}, "actions": {}, "risk": 0, "commands": {},
                             "dust": {}, "decisions_counted": 0}
    groups: list[HedgeGroup] = []
    orders: list[Order] = []
    try:
        steps = data.draw(st.integers(1, 60), label="steps")
        for step in range(steps):
            clock.advance(ms=data.draw(st.integers(0, 1500)))
            now = clock.time_ms()
            op = data.draw(st.sampled_from(
                ["group", "order", "state", "fill", "group_state", "action", "risk", "command", "decision", "flush",
                 "dust"]))
            if op == "group" or (op in ("order", "group_state", "action") and not groups):
                g = make_group(f"g{step}", now, data.draw(st.sampled_from(["BTC", "ETH"])))
                groups.append(g)
                led.group_opened(g)
                model["groups"][g.group_id] = "planned"
            elif op == "order":
                owner: HedgeGroup | None = data.draw(st.sampled_from([*groups, None]))
                o = make_order(owner, data.draw(st.integers(0, 2)), attempt=step, ts_ms=now,
                               purpose=OrderPurpose.ENTRY if owner else OrderPurpose.FLATTEN)
                orders.append(o)
                if data.draw(st.booleans()):
                    await led.order_created(o)
                else:
                    led.append(ev.order_created(o, now))
                model["orders"][o.client_order_id] = "new"
            elif op == "state" and orders:
                o = data.draw(st.sampled_from(orders))
                o.state, o.updated_ms = data.draw(st.sampled_from(ORDER_STATES)), now
                led.order_state(o)
                model["orders"][o.client_order_id] = o.state.value
            elif op == "fill" and orders:
                o = data.draw(st.sampled_from(orders))
                trade = f"t{data.draw(st.integers(0, 8))}"  # collisions: duplicate fills
                led.fill(o, make_fill(o, trade, qty=Decimal(data.draw(st.integers(1, 5))), ts_ms=now))
                model["fills"].add((o.venue, trade))
            elif op == "group_state":
                g = data.draw(st.sampled_from(groups))
                g.state = data.draw(st.sampled_from(GROUP_STATES))
                g.closed_ms = now if g.terminal else 0
                led.group_state(g)
                model["groups"][g.group_id] = g.state.value
            elif op == "action":
                g = data.draw(st.sampled_from(groups))
                a = make_action(g, data.draw(st.integers(1, 3)), now, data.draw(st.sampled_from(["pending", "filled"])))
                led.compensation(a)
                model["actions"][a.action_id] = a.outcome
            elif op == "risk":
                kinds: list[RiskKind] = ["kill", "flatten", "rearm", "pause", "resume", "breaker"]
                kind = data.draw(st.sampled_from(kinds))
                breaker = st.fixed_dictionaries({"state": st.sampled_from(["ok", "tripped"])})
                names = st.sampled_from(["feed", "loss"])
                breakers = data.draw(st.none() | st.dictionaries(names, breaker, max_size=2))
                await led.risk_event(kind, StateChange(now, data.draw(st.sampled_from(list(TradingState))), kind),
                                     breakers=breakers)
                model["risk"] += 1
            elif op == "command":
                cmd = make_command(f"c{data.draw(st.integers(0, 3))}", ts_ms=now, fills=data.draw(st.integers(0, 2)),
                                   state=data.draw(st.sampled_from(list(CommandState))))
                await led.save(cmd)
                model["commands"][cmd.command_id] = cmd.state.value
            elif op == "decision":
                led.decision(make_decision(now, reason=data.draw(st.sampled_from(["cooldown", "stale_quote"])),
                                           intent=data.draw(st.booleans())))
                model["decisions_counted"] += 1
            elif op == "dust":
                pair = data.draw(st.sampled_from(["BTC", "ETH"]))
                qty = Decimal(data.draw(st.integers(-5, 5))).scaleb(-8)
                led.dust(pair, qty)
                model["dust"][pair] = ev.dec(qty)
            elif op == "flush":
                await led.flush()
        model["decisions"] = led.sampler.kept
    finally:
        await led.close()
    return model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rebuilding_from_the_journal_gives_the_live_projections(data: st.DataObject) -> None:
    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ledger.db"
            model = await _random_history(path, data)
            async with queries.open_reader(path) as db:
                report = await queries.rebuild_projections_and_compare(db)
                assert report["ok"], report
                assert report["events_replayed"] == await queries._one(db, "SELECT count(*) FROM events")
                # ... and the projections say what the domain did (the journal is not just replayed blindly).
                orders = {r[0]: r[1] for r in await queries._all(db, "SELECT order_id, state FROM orders")}
                assert orders == model["orders"]
                fills = {(r[0], r[1]) for r in await queries._all(db, "SELECT venue, venue_trade_id FROM fills")}
                assert fills == model["fills"]
                groups = {r[0]: r[1] for r in await queries._all(db, "SELECT group_id, state FROM hedge_groups")}
                assert groups == model["groups"]
                actions = {r[0]: r[1] for r in await queries._all(
                    db, "SELECT action_id, outcome FROM compensation_actions")}
                assert actions == model["actions"]
                commands = {r[0]: r[1] for r in await queries._all(db, "SELECT command_id, state FROM mt5_commands")}
                assert commands == model["commands"]
                assert await queries._one(db, "SELECT count(*) FROM risk_events") == model["risk"]
                assert await queries._one(db, "SELECT count(*) FROM decisions") == model["decisions"]
                assert (await queries._one(db, "SELECT coalesce(sum(decisions), 0) FROM decision_stats")
                        == model["decisions_counted"])
                dust = {r[0]: r[1] for r in await queries._all(db, "SELECT pair, qty FROM dust")}
                assert dust == model["dust"]

    asyncio.run(scenario())
