"""Risk on the money's truth, in a real Runtime with a real SQLite ledger on a manual clock:
the daily loss judges the day's equity (unrealized included, and across a restart), a hedge
held too long is alerted on and then closed at market (or only alerted), legs that drift apart
are alerted once, and the paper accounts' free margin is the running equity."""

from __future__ import annotations

import sqlite3
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from core.breakers import DAY_MS
from core.clock import ManualClock
from core.config import QuantarbConfig, demo_config
from core.models import Fill, Order, OrderPurpose, OrderState, Side, TradingState
from engine.runtime import Runtime
from tests.tui.conftest import step_market

D = Decimal


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")


def _config(**risk: Any) -> QuantarbConfig:
    cfg = demo_config().model_dump(mode="python")
    cfg["risk"].update(risk)
    return QuantarbConfig.model_validate(cfg)


def _runtime(path: Path, clock: ManualClock, **risk: Any) -> Runtime:
    return Runtime(_config(**risk), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)


async def trade(rt: Runtime, cid: str, side: Side, qty: str, price: str, symbol: str = "XAUUSD") -> None:
    """One filled order outside any group (as a failed group's lone leg leaves), journaled
    write-ahead in the ledger and booked into the running portfolio, as the orchestrator does."""
    assert rt.ledger is not None
    now = rt.clock.time_ms()
    order = Order(client_order_id=cid, group_id=f"g{cid}", venue="mt5", symbol=symbol, side=side, qty=D(qty),
                  price=D(price), purpose=OrderPurpose.ENTRY, created_ms=now)
    await rt.ledger.order_created(order)
    fill = Fill("mt5", f"t-{cid}", cid, D(qty), D(price), D(0), "USD", now)
    order.state, order.filled_qty, order.notional, order.updated_ms = OrderState.FILLED, D(qty), D(qty) * D(price), now
    rt.ledger.order_state(order)
    rt.ledger.fill(order, fill)
    await rt.ledger.flush()
    rt.equity.on_fill(order, fill)


def _alerts(rt: Runtime, kind: str = "alert") -> list[str]:
    return [e.text for e in rt.events.recent(500) if e.kind == kind]


async def test_an_unrealized_loss_trips_the_daily_loss_though_every_group_made_money(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "loss.db", clock, daily_loss_limit=D(300))
    await rt.open_ledger()
    try:
        await rt.driver.drive(300, 20.0)  # hedges that made money, and quotes on every venue
        assert rt.orchestrator.realized_pnl > 0
        rt.risk_loop.check()
        assert rt.gate.state is TradingState.ACTIVE
        # 2 oz bought at 3,000 with the market near 2,650: about -700 at the mark, nothing realized
        await trade(rt, "loss1", "buy", "0.02", "3000")
        rt.risk_loop.check()
        state: TradingState = rt.gate.state  # read afresh (mypy narrowed it above)
        now = clock.time_ms()
        total = rt.equity.total(now)
        assert total is not None and total < -300
        # The ledger began today: the day's equity is all the equity there is.
        assert rt.gate.breakers.daily_pnl == total
        assert state is TradingState.HALTED
        cents = total.quantize(D("0.01"), ROUND_HALF_EVEN)
        assert rt.gate.breakers.all["daily_loss"].detail == f"equity today {cents} <= -300"
        assert rt.view.snapshot().daily_pnl == f"{cents}"
    finally:
        await rt.close_ledger()


async def test_the_days_equity_is_rebuilt_from_the_ledger_after_a_restart(tmp_path: Path) -> None:
    """Bought yesterday at 2,650, sold today at 2,500: today lost 300 (yesterday's position is
    valued at its last price before midnight); the restarted engine halts before any quote."""
    day = 1_732_150_000_000 // DAY_MS
    clock = ManualClock(wall_ms=day * DAY_MS - 3_600_000)  # 23:00 UTC the day before
    path = tmp_path / "restart.db"
    first = _runtime(path, clock, daily_loss_limit=D(200))
    await first.open_ledger()
    try:
        await trade(first, "y1", "buy", "0.02", "2650")
        clock.advance(ms=2 * 3_600_000)  # 01:00 UTC today
        await trade(first, "t1", "sell", "0.02", "2500")
    finally:
        await first.close_ledger()
    again = _runtime(path, clock, daily_loss_limit=D(200))
    await again.start()
    try:
        assert again.gate.breakers.daily_pnl == D(-300)
        assert again.gate.state is TradingState.HALTED
        assert again.gate.breakers.all["daily_loss"].tripped
        assert again.view.snapshot().daily_pnl == "-300.00"
    finally:
        await again.stop()
    con = sqlite3.connect(path)
    try:
        reasons = [r[0] for r in con.execute("SELECT reason FROM risk_events ORDER BY event_id")]
    finally:
        con.close()
    assert any(r.startswith("trip daily_loss: equity today -300.00") for r in reasons)


async def _held_hedges(tmp_path: Path, action: str) -> tuple[Runtime, ManualClock]:
    """A demo that made hedges, then paused: nothing new opens; quotes keep flowing."""
    clock = ManualClock()
    rt = _runtime(tmp_path / f"hold-{action}.db", clock, hold_alert_s=10, hold_close_s=20, hold_action=action)
    await rt.open_ledger()
    await rt.driver.drive(1500, 20.0)  # 30 s: hedges on every pair
    await rt.control.pause("hold test")
    await rt.orchestrator.drain()
    return rt, clock


def _held_assets(rt: Runtime) -> set[str]:
    return {h.asset for h in rt.equity.holdings(rt.clock.time_ms()) if h.held}


async def test_a_hedge_held_too_long_is_alerted_then_closed_at_market(tmp_path: Path) -> None:
    rt, clock = await _held_hedges(tmp_path, "close")
    try:
        held = _held_assets(rt)
        assert len(held) >= 2, "the demo holds hedges"
        step_market(rt, 600)  # 12 s of quotes: past hold_alert_s for every held asset
        rt.risk_loop.check()
        alerts = _alerts(rt)
        assert {a.split()[0] for a in alerts if "hold_alert_s" in a} == held
        rt.risk_loop.check()
        assert len(_alerts(rt)) == len(alerts)  # once
        step_market(rt, 500)  # past hold_close_s
        rt.risk_loop.check()
        closing = [a for a in _alerts(rt) if "hold_close_s" in a]
        assert {a.split()[0] for a in closing} == held
        await rt.control.drain()  # the closing passes ran in the background
        assert _held_assets(rt) == set()
        assert {h.asset for h in rt.equity.holdings(clock.time_ms())} == set()  # every leg closed
        assert sorted(e.text.split()[0] for e in rt.events.recent(500) if e.kind == "hold" and "closed" in e.text) \
            == sorted(held)
        assert all(e.text.endswith("closed: flat") for e in rt.events.recent(500) if e.kind == "hold"
                   and "closed" in e.text)
        assert rt.gate.state is TradingState.PAUSED  # closing a hedge halts nothing
        breakers = {b.name for b in rt.gate.breakers.all.values()}
        assert {f"hold:{a}" for a in held} <= breakers
    finally:
        await rt.close_ledger()


async def test_the_alert_action_only_alerts(tmp_path: Path) -> None:
    rt, _clock = await _held_hedges(tmp_path, "alert")
    try:
        held = _held_assets(rt)
        step_market(rt, 1100)  # 22 s: past both
        rt.risk_loop.check()
        await rt.control.drain()
        assert [a for a in _alerts(rt) if "hold_action is alert: not closed" in a]
        assert _held_assets(rt) == held  # nothing sent
        assert [e for e in rt.events.recent(500) if e.kind == "hold"] == []
    finally:
        await rt.close_ledger()


async def test_closing_one_asset_leaves_the_others(tmp_path: Path) -> None:
    rt, _clock = await _held_hedges(tmp_path, "alert")
    try:
        held = _held_assets(rt)
        assert len(held) >= 2
        asset = sorted(held)[0]
        report = await rt.control.close_asset(asset, "test")
        assert report is not None and report["flat"]
        assert {line["asset"] for line in report["lines"]} == {asset}
        assert _held_assets(rt) == held - {asset}
    finally:
        await rt.close_ledger()


async def test_legs_drifting_apart_are_alerted_once_and_their_return_is_said(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "drift.db", clock)
    await rt.open_ledger()
    try:
        await rt.driver.drive(300, 20.0)
        await rt.control.pause("drift test")
        await rt.orchestrator.drain()
        rt.risk_loop.check()
        assert not [a for a in _alerts(rt) if "legs apart" in a]
        await trade(rt, "d1", "buy", "0.02", "2650")  # 2 oz on MT5 with nothing against it
        rt.risk_loop.check()
        rt.risk_loop.check()
        drift = [a for a in _alerts(rt) if "legs apart" in a]
        assert len(drift) == 1 and drift[0].startswith("XAU legs apart: net ")
        assert "drift:XAU" in rt.gate.breakers.all
        await trade(rt, "d2", "sell", "0.02", "2650")
        rt.risk_loop.check()
        assert _alerts(rt, "drift") == ["XAU legs back together"]
    finally:
        await rt.close_ledger()


async def test_the_day_starts_again_at_utc_midnight_from_the_equity_then(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "roll.db", clock)
    await rt.open_ledger()
    try:
        await rt.driver.drive(300, 20.0)
        now = clock.time_ms()
        before = rt.equity.total(now)
        assert before is not None and before != 0
        assert rt.equity.day_change(now) == before  # the ledger began today
        clock.advance(ms=((now // DAY_MS + 1) * DAY_MS - now))  # midnight UTC
        midnight = clock.time_ms()
        start = rt.equity.total(midnight)
        assert start is not None
        assert rt.equity.day_change(midnight) == 0  # recorded when the day rolled
        await trade(rt, "n1", "buy", "0.01", "2700")  # 1 oz above the market: a loss today
        later = clock.time_ms()
        total = rt.equity.total(later)
        assert total is not None and total < start
        assert rt.equity.day_change(later) == total - start
    finally:
        await rt.close_ledger()
