"""Ledger v3: per-pair statistics in `ledger summary` (the runtime's core.pnl definitions), the
decision_stats journal, breaker and dust persistence, and the upgrade from version 2. Real
SQLite files throughout."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.clock import ManualClock
from core.hedge import HedgeGroup
from core.models import Decision, Fill, GroupState, Order, OrderPurpose, OrderState, TradingState
from core.pnl import PairStats, group_pnl, percentile
from core.risk import StateChange
from ledger import SCHEMA_VERSION, Ledger, LedgerError, queries, schema
from ledger import events as ev
from quantarb_tui.ledger_cmd import ledger_app
from tests.unit.test_ledger_support import T0, apply_fill, make_decision, make_group, make_order

DAY_MS = 86_400_000
BREAKERS: dict[str, dict[str, Any]] = {
    "feed_stale:okx": {"state": "tripped", "since_ms": T0, "until_ms": None, "detail": "no quote for 5 s",
                       "effect": "block venue"},
    "daily_loss": {"state": "ok", "since_ms": None, "until_ms": None, "detail": ""},
}


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


async def query(path: Path, fn: Any, **kwargs: Any) -> Any:
    async with queries.open_reader(path) as db:
        return await fn(db, **kwargs)


def fill(order: Order, trade_id: str, price: Decimal, qty: Decimal | None = None, ts_ms: int = T0) -> Fill:
    return Fill(venue=order.venue, venue_trade_id=trade_id, client_order_id=order.client_order_id,
                qty=order.qty if qty is None else qty, price=price, fee=Decimal("0.03"),
                fee_ccy="USD" if order.venue == "mt5" else "USDT", ts_ms=ts_ms)


class Journal(Protocol):
    """What `trade` writes through: a Ledger, or a stand-in that captures the events."""

    def group_opened(self, group: HedgeGroup) -> object: ...
    async def order_created(self, order: Order) -> object: ...
    async def append_durable(self, event: ev.LedgerEvent) -> object: ...
    def fill(self, order: Order, fill: Fill) -> object: ...
    def order_state(self, order: Order) -> object: ...
    def group_state(self, group: HedgeGroup) -> object: ...


async def trade(led: Journal, stats: PairStats, gid: str, pair: str, ts: int, outcome: str,
                *, old_payload: bool = False) -> HedgeGroup:
    """One group through a real Ledger as the orchestrator journals it; `stats` sees it close.

    outcome: hedged, repaired (retry hedge), unwound, failed, rejected. `old_payload` writes the
    order_created events as before touch prices were journaled.
    """
    g = make_group(gid, ts, pair)
    led.group_opened(g)
    buy, sell = make_order(g, 0, ts_ms=ts), make_order(g, 1, ts_ms=ts)
    buy.touch_price, sell.touch_price = buy.price + Decimal("0.2"), sell.price - Decimal("0.7")
    for order in (buy, sell):
        if old_payload:
            order.touch_price = Decimal(0)
            event = ev.order_created(order, ts)
            del event.payload["touch_price"]
            await led.append_durable(event)
        else:
            await led.order_created(order)

    async def execute(order: Order, price: Decimal, n: int) -> None:
        f = fill(order, f"t-{order.client_order_id}-{n}", price, qty=order.qty / 2, ts_ms=ts + n)
        apply_fill(order, f)
        led.fill(order, f)
        f = fill(order, f"t-{order.client_order_id}-{n + 1}", price + Decimal("0.1"), qty=order.qty / 2,
                 ts_ms=ts + n + 1)
        apply_fill(order, f)
        led.fill(order, f)
        led.order_state(order)

    if outcome != "rejected":
        await execute(buy, buy.price + Decimal("0.5"), 1)
    if outcome == "hedged":
        await execute(sell, sell.price - Decimal("1.5"), 3)
    elif outcome != "rejected":
        sell.state = OrderState.REJECTED
        led.order_state(sell)
    if outcome == "repaired":
        retry = make_order(g, 3, attempt=1, purpose=OrderPurpose.RETRY_HEDGE, ts_ms=ts + 10)
        await led.order_created(retry)
        await execute(retry, retry.price - Decimal("9"), 5)
    elif outcome == "unwound":
        unwind = make_order(g, 2, attempt=1, purpose=OrderPurpose.UNWIND, ts_ms=ts + 10)
        unwind.side = "sell"
        await led.order_created(unwind)
        await execute(unwind, unwind.price - Decimal("20"), 5)
    g.state = {"hedged": GroupState.HEDGED, "repaired": GroupState.REPAIRED, "unwound": GroupState.UNWOUND,
               "failed": GroupState.FAILED, "rejected": GroupState.REJECTED}[outcome]
    g.closed_ms = ts + 50
    led.group_state(g)
    stats.record_group(group_pnl(g))
    return g


def decisions(seed: int, n: int) -> list[Decision]:
    """A decision stream like the pipeline's: mostly blocked, a few intents, some without a counter quote."""
    rnd = random.Random(seed)
    out: list[Decision] = []
    for i in range(n):
        pair = ("BTC", "ETH")[i % 2]
        ts = T0 + i * 150  # several 60 s intervals
        if rnd.random() < 0.05:
            out.append(make_decision(ts, pair, "no_counter_quote", buy=None, sell=None))
            continue
        d = make_decision(ts, pair, rnd.choice(["below_threshold", "cooldown"]), intent=rnd.random() < 0.08)
        d.edge_bps = rnd.gauss(-6.0, 4.0) if pair == "BTC" else rnd.uniform(-20.0, 12.0)
        out.append(d)
    return out


# -- the summary agrees with the runtime's PairStats ------------------------------------------------
async def test_summary_per_pair_matches_core_pair_stats(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock(wall_ms=T0)
    live = PairStats()
    led = await Ledger.open(path, clock=clock)
    try:
        await trade(led, live, "gy1", "BTC", T0 - DAY_MS, "hedged")  # closed yesterday
        plan = [("BTC", "hedged"), ("BTC", "repaired"), ("BTC", "failed"), ("BTC", "rejected"),
                ("ETH", "hedged"), ("ETH", "unwound"), ("ETH", "hedged"), ("ETH", "rejected")]
        for i, (pair, outcome) in enumerate(plan):
            await trade(led, live, f"g{i}", pair, T0 + i * 1000, outcome)
        await trade(led, live, "gold", "ETH", T0 + 20_000, "hedged", old_payload=True)
        for d in decisions(7, 1600):
            led.decision(d)
            if d.buy_venue is not None:  # what Orchestrator.record_decision feeds PairStats
                live.record_decision(d.pair, d.edge_bps, intent=d.intent is not None)
        led.dust("BTC", Decimal("0.0004"))
    finally:
        await led.close()

    doc = await query(path, queries.summary, now_ms=T0 + 3_600_000)
    json.dumps(doc)
    pairs = doc["all_time"]["pairs"]
    assert set(pairs) == {"BTC", "ETH"}
    for pair, got in pairs.items():
        want = live.get(pair)
        assert want is not None
        assert (got["groups"], got["hits"], got["hit_rate"]) == (want.groups, want.hits, want.hit_rate)
        assert Decimal(got["total_pnl"]) == want.total_pnl
        assert got["mean_slippage_bps"] == pytest.approx(want.mean_slippage_bps, rel=1e-12)
        assert got["slippage_groups"] == want.slippage_n
        assert (got["decisions"], got["intents"], got["trigger_rate"]) == (
            want.decisions, want.intents, want.trigger_rate)
        want_edges = want.edge_percentiles()
        assert want_edges is not None and got["edge_bps"] is not None
        for q in ("p50", "p75", "p90"):
            assert abs(got["edge_bps"][q] - want_edges[q]) <= ev.EDGE_BUCKET_BPS, (pair, q)
    # Rejected groups are not groups for the hit rate; the old order rows count no slippage.
    assert pairs["BTC"]["groups"] == 4 and pairs["BTC"]["hits"] == 3
    assert pairs["ETH"]["groups"] == 4 and pairs["ETH"]["slippage_groups"] == 3
    # 0.03 per fill; BTC: gy1 and g0 hedged (4 fills each), g1 repaired (2 entry + 2 retry),
    # g2 failed (2), g3 rejected (none): 14 fills. Today (all but gy1): 10.
    assert Decimal(pairs["BTC"]["fees"]) == Decimal("0.42")
    assert Decimal(doc["today"]["pairs"]["BTC"]["fees"]) == Decimal("0.30")
    today = doc["today"]["pairs"]["BTC"]
    assert today["groups"] == 3 and today["decisions"] == pairs["BTC"]["decisions"]
    assert doc["dust"] == {"BTC": "0.0004"}
    report = await query(path, queries.check)
    assert report["ok"], report


# -- decision_stats --------------------------------------------------------------------------------
async def test_every_decision_is_counted_per_pair_and_interval(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(tmp_path / "l.db", clock=clock, decision_stats_interval_ms=1000)
    start = T0 - T0 % 1000
    try:
        for ms in range(0, 2500, 10):  # 250 decisions per pair over three intervals
            for pair in ("BTC", "ETH"):
                d = make_decision(start + ms, pair, intent=ms % 500 == 0)
                d.edge_bps = -3.1 if pair == "BTC" else 2.6
                led.decision(d)
        led.decision(make_decision(start + 100, "SOL", "no_counter_quote", buy=None, sell=None))
        late = make_decision(start + 5, "BTC")  # behind the clock: counts in the current interval
        late.edge_bps = -3.1
        led.decision(late)
        await led.flush()
        # Two intervals are journaled; the third is still in memory.
        assert rows(led.path, "SELECT pair, start_ms, decisions, intents FROM decision_stats ORDER BY 2, 1") == [
            ("BTC", start, 100, 2), ("ETH", start, 100, 2),
            ("BTC", start + 1000, 100, 2), ("ETH", start + 1000, 100, 2)]
        assert led.decision_stats.counts("BTC")[:2] == (51, 1)
        assert led.sampler.suppressed > 0  # the log is sampled, the counts are not
    finally:
        await led.close()  # flushes the current interval
    got = rows(led.path, "SELECT pair, start_ms, decisions, intents, edge_bucket_bps, edge_histogram "
                         f"FROM decision_stats WHERE start_ms = {start + 2000} ORDER BY pair")
    assert got == [("BTC", start + 2000, 51, 1, 0.25, "[[-13,51]]"), ("ETH", start + 2000, 50, 1, 0.25, "[[10,50]]")]
    doc = await query(led.path, queries.summary, now_ms=T0)
    assert doc["all_time"]["pairs"]["BTC"]["decisions"] == 251
    assert doc["all_time"]["pairs"]["BTC"]["edge_bps"]["p50"] == pytest.approx(-3.125, abs=0.125)
    assert "SOL" not in doc["all_time"]["pairs"]  # no counter quote: no edge, not a decision here


async def test_edges_outside_the_histogram_are_clipped_and_nan_is_counted_unbinned(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        for edge in (-1e9, 1e9, math.inf, -math.inf, math.nan, 0.0):
            d = make_decision(T0, "BTC")
            d.edge_bps = edge
            led.decision(d)
        decisions_, intents, hist = led.decision_stats.counts("BTC")
        assert (decisions_, intents) == (6, 0)
        assert (hist[0], hist[-1], sum(hist)) == (2, 2, 5)
        [event] = led.decision_stats.drain(T0)
        assert event.payload["edge_histogram"] == [[-2000, 2], [0, 1], [1999, 2]]
        assert event.payload["decisions"] == 6
    finally:
        await led.close()


# -- breakers --------------------------------------------------------------------------------------
async def test_breakers_survive_a_restart_until_a_risk_event_carries_a_new_map(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(path, clock=clock)
    try:
        assert (await led.recover()).breakers == {}
        await led.risk_event("breaker", StateChange(T0, TradingState.HALTED, "feed stale: okx"), breakers=BREAKERS)
        await led.risk_event("pause", StateChange(T0 + 5, TradingState.PAUSED, "lunch"))  # no map: keeps the last
    finally:
        await led.close()
    led = await Ledger.open(path, clock=clock)
    try:
        state = await led.recover()
        assert state.trading_state is TradingState.PAUSED and str(state.trading_state) == "paused"
        assert state.breakers == BREAKERS
        doc = await led.read(queries.summary, now_ms=T0)
        assert doc["trading_state"]["breakers"] == BREAKERS
        await led.risk_event("rearm", StateChange(T0 + 9, TradingState.ACTIVE, "operator"), breakers={})
        assert (await led.recover()).breakers == {}
        assert rows(path, "SELECT kind, trading_state FROM risk_events") == [
            ("breaker", "halted"), ("pause", "paused"), ("rearm", "active")]  # contract columns unchanged
    finally:
        await led.close()
    assert (await query(path, queries.check))["ok"]


@pytest.mark.parametrize(
    ("breakers", "message"),
    [
        ({"": {"state": "ok"}}, "non-empty string"),
        ({"x": "tripped"}, "expected a mapping"),
        ({"x": {"detail": "no state"}}, "'state'"),
        ({"x": {"state": "ok", "since_ms": "yesterday"}}, "since_ms"),
        ({"x": {"state": "ok", "until_ms": True}}, "until_ms"),
        ({"x": {"state": "ok", "detail": 3}}, "'detail'"),
        ({"x": {"state": "ok", "extra": [1]}}, "JSON scalar"),
    ],
)
async def test_a_bad_breaker_map_is_refused_before_anything_is_queued(
    tmp_path: Path, breakers: Any, message: str
) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        before = led.writer.last_seq
        with pytest.raises(ValueError, match=message):
            await led.risk_event("breaker", StateChange(T0, TradingState.HALTED, "x"), breakers=breakers)
        assert led.writer.last_seq == before
    finally:
        await led.close()


async def test_an_unreadable_breaker_map_in_the_journal_stops_recovery_loudly(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        event = ev.risk_event("breaker", StateChange(T0, TradingState.HALTED, "x"), T0)
        event.payload["breakers"] = {"x": {"state": 7}}  # hand-edited, say
        await led.append_durable(event)
        with pytest.raises(LedgerError, match="unreadable breaker map"):
            await led.recover()
    finally:
        await led.close()


# -- dust ------------------------------------------------------------------------------------------
async def test_dust_recovers_the_latest_total_per_pair(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(path, clock=clock)
    try:
        for pair, qty in (("BTC", "0.001"), ("ETH", "-0.002"), ("BTC", "0.00000003"), ("ETH", "0"),
                          ("SOL", "1E-8")):
            led.dust(pair, Decimal(qty))
        with pytest.raises(ValueError, match="finite"):
            led.dust("BTC", Decimal("NaN"))
        await led.flush()
    finally:
        await led.close()
    led = await Ledger.open(path, clock=clock)
    try:
        state = await led.recover()
        assert state.dust == {"BTC": Decimal("0.00000003"), "SOL": Decimal("0.00000001")}
        assert rows(path, "SELECT pair, qty FROM dust ORDER BY pair") == [
            ("BTC", "0.00000003"), ("ETH", "0"), ("SOL", "0.00000001")]
        assert (await led.read(queries.summary, now_ms=T0))["dust"] == {"BTC": "0.00000003", "SOL": "0.00000001"}
    finally:
        await led.close()
    assert (await query(path, queries.check))["ok"]


# -- upgrade from version 2 ------------------------------------------------------------------------
def write_v2_file(path: Path) -> None:
    """A ledger as the version-2 engine left it: its schema, and its journal (no touch prices)."""
    schema.prepare(path, target=2)
    live = PairStats()

    async def history() -> list[ev.LedgerEvent]:
        out: list[ev.LedgerEvent] = []

        class Capture:
            """Stands in for the Ledger: keeps each event, in order, as the v2 writer would."""

            def group_opened(self, group: HedgeGroup) -> None:
                out.append(ev.group_opened(group, T0))

            async def order_created(self, order: Order) -> None:
                e = ev.order_created(order, T0)
                del e.payload["touch_price"]
                out.append(e)

            async def append_durable(self, event: ev.LedgerEvent) -> None:
                out.append(event)

            def fill(self, order: Order, fill: Fill) -> None:
                out.append(ev.fill(fill, T0, order.group_id))

            def order_state(self, order: Order) -> None:
                out.append(ev.order_state(order, T0))

            def group_state(self, group: HedgeGroup) -> None:
                e = ev.group_state(group, T0)
                e.payload.pop("pnl", None)  # not journaled before version 3
                out.append(e)

        await trade(Capture(), live, "gv2", "BTC", T0, "hedged", old_payload=True)
        out.append(ev.risk_event("kill", StateChange(T0 + 70, TradingState.HALTED, "old kill"), T0 + 70))
        return out

    conn = sqlite3.connect(path)
    with conn:
        for seq, e in enumerate(asyncio.run(history()), start=1):
            conn.execute("INSERT INTO events (seq, ts_ms, kind, group_id, payload) VALUES (?, ?, ?, ?, ?)",
                         (seq, e.ts_ms, e.kind, e.group_id, ev.encode_payload(e.payload)))
    conn.close()


def test_a_version_2_file_is_readable_as_is_and_upgrades_on_open(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    write_v2_file(path)
    # Readers never migrate: summary, check and export work on the old file as it is.
    doc = queries.run(path, queries.summary, now_ms=T0)
    assert doc["schema_version"] == 2 and doc["dust"] == {}
    btc = doc["all_time"]["pairs"]["BTC"]
    assert (btc["groups"], btc["hits"], btc["mean_slippage_bps"], btc["decisions"], btc["edge_bps"]) == (
        1, 1, None, 0, None)
    report = queries.run(path, queries.check)
    assert report["ok"], report
    assert rows(path, "PRAGMA user_version") == [(2,)]

    async def upgrade() -> None:
        clock = ManualClock(wall_ms=T0 + 100)
        led = await Ledger.open(path, clock=clock)
        try:
            assert led.migrated_from == 2
            state = await led.recover()
            assert (state.trading_state, state.breakers, state.dust) == (TradingState.HALTED, {}, {})
            led.dust("BTC", Decimal("0.001"))
            led.decision(make_decision(T0 + 100, "BTC"))
            await led.risk_event("rearm", StateChange(T0 + 200, TradingState.ACTIVE, "ok"), breakers=BREAKERS)
        finally:
            await led.close()

    asyncio.run(upgrade())
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT pair, decisions FROM decision_stats") == [("BTC", 1)]
    report = queries.run(path, queries.check)
    assert report["ok"], report
    doc = queries.run(path, queries.summary, now_ms=T0)
    assert doc["dust"] == {"BTC": "0.001"} and doc["all_time"]["pairs"]["BTC"]["decisions"] == 1


# -- the command line ------------------------------------------------------------------------------
async def test_ledger_summary_cli_prints_one_json_document_or_a_table(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await trade(led, PairStats(), "g1", "BTC", T0, "hedged")
        for d in decisions(3, 200):
            led.decision(d)
        led.dust("ETH", Decimal("-0.002"))
        await led.risk_event("breaker", StateChange(T0, TradingState.HALTED, "stale"), breakers=BREAKERS)
    finally:
        await led.close()
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, ledger_app, ["summary", "--ledger", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one document
    assert doc["all_time"]["pairs"]["BTC"]["groups"] == 1
    result = await asyncio.to_thread(runner.invoke, ledger_app, ["summary", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "breaker feed_stale:okx" in out and "tripped" in out
    assert "dust ETH -0.002" in out
    btc_rows = [line for line in out.splitlines() if line.strip().startswith("BTC ")]
    assert btc_rows and "100.0%" in btc_rows[-1]  # all time (T0 is not today)


# -- parsers (property) ----------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), json_values.map(lambda v: msgspec.json.encode(v).decode())))
def test_histogram_parser_accepts_only_bucket_count_pairs(text: str) -> None:
    try:
        hist = ev.histogram_from_json(text)
    except ValueError:
        return
    assert all(isinstance(k, int) and isinstance(c, int) and c >= 0 for k, c in hist.items())


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_breaker_map_parser_refuses_or_round_trips(value: Any) -> None:
    try:
        parsed = ev.breakers_from_payload(value)
    except ValueError:
        return
    again = ev.breakers_from_payload(msgspec.json.decode(msgspec.json.encode(parsed)))
    assert again == parsed
    assert all(set(ev.BREAKER_FIELDS) <= set(b) for b in parsed.values())


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.fixed_dictionaries(
        {"state": st.sampled_from(["ok", "tripped"])},
        optional={"since_ms": st.none() | st.integers(0, 2**53), "until_ms": st.none() | st.integers(0, 2**53),
                  "detail": st.text(max_size=10), "effect": st.text(max_size=5)},
    ),
    max_size=4,
))
def test_every_well_formed_breaker_map_round_trips(value: dict[str, dict[str, Any]]) -> None:
    payload = ev.breakers_payload(value)
    assert ev.breakers_from_payload(msgspec.json.decode(msgspec.json.encode(payload))) == payload
    for name, b in value.items():
        assert {k: payload[name][k] for k in b} == b


@settings(max_examples=150, deadline=None)
@given(edges=st.lists(st.floats(-499.0, 499.0), min_size=1, max_size=300))
def test_histogram_percentiles_are_within_one_bucket_of_the_exact_ones(edges: list[float]) -> None:
    async def scenario() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            led = await Ledger.open(Path(tmp) / "l.db", clock=ManualClock(wall_ms=T0))
            try:
                for edge in edges:
                    d = make_decision(T0, "BTC")
                    d.edge_bps = edge
                    led.decision(d)
                [event] = led.decision_stats.drain(T0)
                return event.payload
            finally:
                await led.close()

    payload = asyncio.run(scenario())
    hist = ev.histogram_from_json(msgspec.json.encode(payload["edge_histogram"]).decode())
    got = queries.edge_percentiles({(k, payload["edge_bucket_bps"]): c for k, c in hist.items()})
    assert got is not None and payload["decisions"] == len(edges)
    for q in (50, 75, 90):
        assert abs(got[f"p{q}"] - percentile(edges, q)) <= ev.EDGE_BUCKET_BPS + 1e-9



# -- a closed group's PnL figures in its group_state event --------------------------------------
def test_a_closed_groups_state_event_carries_core_pnl_figures() -> None:
    g = make_group("g1")
    buy, sell = make_order(g, 0), make_order(g, 1)
    buy.touch_price, sell.touch_price = buy.price + 1, sell.price - 1
    for order in (buy, sell):
        apply_fill(order, fill(order, f"t-{order.client_order_id}", order.price))
    assert "pnl" not in ev.group_state(g, T0).payload  # still open
    g.state = GroupState.HEDGED
    want = group_pnl(g)
    assert ev.group_state(g, T0).payload["pnl"] == {
        "expected_edge_bps": want.expected_edge_bps, "realized_edge_bps": want.realized_edge_bps,
        "latency_slippage_bps": want.latency_slippage_bps, "impact_slippage_bps": want.impact_slippage_bps}
    zero = make_group("g2")
    order = make_order(zero, 0)
    apply_fill(order, fill(order, "t0", Decimal(0)))
    apply_fill(other := make_order(zero, 1), fill(other, "t1", other.price))
    zero.state = GroupState.HEDGED
    with pytest.raises(ArithmeticError):
        group_pnl(zero)
    assert "pnl" not in ev.group_state(zero, T0).payload  # statistics never stop the journal


async def test_realized_pnl_is_the_summarys_figure_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await trade(led, PairStats(), "gy", "BTC", T0 - DAY_MS, "hedged")
        await trade(led, PairStats(), "g1", "BTC", T0, "unwound")
        await trade(led, PairStats(), "g2", "ETH", T0, "rejected")
        await led.flush()
        doc = await led.read(queries.summary, now_ms=T0)
        for period, since in (("today", queries.day_start_ms(T0)), ("all_time", 0)):
            assert await led.read(queries.realized_pnl, since_ms=since) == Decimal(doc[period]["realized_pnl"])
    finally:
        await led.close()
