"""Breakers inside the running engine: they trip on what the engine sees, they are journaled,
and they survive a restart (a real Runtime, a real SQLite ledger, a manual clock)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import QuantarbConfig, demo_config
from core.models import Quote, TradingState, Venue
from engine.control import ControlRefused
from engine.runtime import Runtime


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")


def _runtime(path: Path, clock: ManualClock) -> Runtime:
    return Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path, ManualClock]]:
    clock = ManualClock()
    path = tmp_path / "risk.db"
    rt = _runtime(path, clock)
    await rt.start()
    try:
        yield rt, path, clock
    finally:
        await rt.stop()


def _risk_rows(path: Path) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT kind, reason, trading_state FROM risk_events ORDER BY event_id").fetchall()
    finally:
        con.close()


def _state(rt: Runtime) -> TradingState:
    """The gate's state, read afresh (mypy narrows `gate.state` across calls otherwise)."""
    return rt.gate.state


async def _settle(rt: Runtime) -> None:
    for task in list(rt._background):
        await task


async def test_daily_loss_halts_survives_restart_and_blocks_rearm(
    started: tuple[Runtime, Path, ManualClock],
) -> None:
    rt, path, clock = started
    changes = rt.gate.breakers.on_day_equity(Decimal(-250), clock.time_ms())
    rt.risk.apply_breakers(changes)
    assert rt.gate.state is TradingState.HALTED
    await _settle(rt)
    await rt.stop()
    assert _risk_rows(path)[-1][0] == "breaker" and "daily_loss" in _risk_rows(path)[-1][1]

    again = _runtime(path, clock)
    await again.start()
    try:
        assert again.gate.state is TradingState.HALTED
        assert again.gate.breakers.all["daily_loss"].tripped
        # The day's equity is re-read from the ledger, which holds no fill (the -250 above was
        # never traded): 0. The halt comes back from the journaled breaker map alone.
        assert again.gate.breakers.daily_pnl == Decimal(0)
        with pytest.raises(ControlRefused, match="daily_loss"):
            await again.control.rearm("operator says so")
        snap = again.view.snapshot()
        assert any(b.key == "daily_loss" and b.state == "tripped" for b in snap.breakers)
        assert snap.trading_state == "halted"
    finally:
        await again.stop()


async def test_failure_pause_survives_restart_then_releases_by_itself(
    started: tuple[Runtime, Path, ManualClock],
) -> None:
    rt, path, clock = started
    for _ in range(rt.config.risk.max_consecutive_failures):
        rt.risk.apply_breakers(rt.gate.breakers.on_group_closed(failed=False, compensated=True,
                                                            now_ms=clock.time_ms()))
    assert rt.gate.state is TradingState.PAUSED
    result = await rt.control.resume("too early")
    assert not result.changed and "breaker" in result.message
    await _settle(rt)
    await rt.stop()

    again = _runtime(path, clock)
    await again.start()
    try:
        assert again.gate.state is TradingState.PAUSED
        assert again.gate.breakers.all["consecutive_failures"].tripped
        clock.advance(ms=again.config.risk.failure_pause_s * 1000 + 1)
        # Only the time-based release (no feed runs on this manual clock, so a full
        # risk_step would also, rightly, find every venue silent for minutes).
        again.risk.apply_breakers(again.gate.breakers.tick(clock.time_ms()))
        assert _state(again) is TradingState.ACTIVE
        await _settle(again)
    finally:
        await again.stop()
    rows = _risk_rows(path)
    assert "release consecutive_failures" in rows[-1][1] and rows[-1][2] == "active"


async def test_a_venue_without_quotes_gets_no_new_intents(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "stale.db", clock)
    await rt.open_ledger(str(tmp_path / "stale.db"))
    try:
        await rt.driver.drive(200, 20.0)  # quotes on every venue
        rt.risk_loop.check()
        assert rt.view.snapshot().blocked_venues == ()
        clock.advance(ms=rt.config.risk.venue_block_s * 1000 + 500)  # then silence
        rt.risk_loop.check()
        assert set(rt.view.snapshot().blocked_venues) == {"mt5", "okx", "binance"}
        assert rt.gate.state is TradingState.ACTIVE  # blocked, not halted (yet)
        intents = rt.pipeline.intents
        refused = rt.pipeline.reasons["risk:venue_blocked"]
        # Quotes arrive again, but the breakers have not looked yet: the block still holds. An
        # edge over threshold is judged and refused for the block, and no intent is made.
        rt.driver.step_market(20.0)
        await rt.orchestrator.drain()
        assert rt.pipeline.reasons["risk:venue_blocked"] > refused
        assert rt.pipeline.intents == intents
        assert rt.orchestrator.open == {}
        rt.risk_loop.check()  # quotes flow again: released
        assert rt.view.snapshot().blocked_venues == ()
        await rt.driver.drive(1, 20.0)
        assert rt.pipeline.intents > intents  # the very next edge trades again
        clock.advance(ms=rt.config.risk.feed_stale_halt_s * 1000 + 500)
        rt.risk_loop.check()
        # No quote for feed_stale_halt_s (and, without feed tasks in drive(), no connection
        # either): halted by a venue breaker.
        assert _state(rt) is TradingState.HALTED
        assert rt.gate.reason.startswith(("breaker stale_halt:", "breaker down:"))
        await _settle(rt)
    finally:
        await rt.close_ledger()
    kinds = [(k, r.split(":")[0]) for k, r, _s in _risk_rows(tmp_path / "stale.db")]
    assert ("breaker", "trip stale") in kinds and ("breaker", "release stale") in kinds


async def test_a_group_held_past_hold_timeout_is_alerted_and_set_to_unwind(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "hold.db", clock)
    await rt.driver.drive(400, 20.0)
    assert rt.orchestrator.closed, "the demo made groups"
    group = rt.orchestrator.closed[0]
    rt.orchestrator.adopt(group)  # as if it were stuck in flight
    clock.advance(ms=rt.config.risk.hold_timeout_s * 1000 + 1000)
    rt.risk_loop.check()
    # No retry left: its next compensation step is the unwind.
    assert rt.orchestrator.compensation.retries_used(group) == rt.config.strategy.max_retries
    assert any(e.kind == "alert" and group.group_id in e.text for e in rt.events.recent(50))
    assert any(e.kind == "breaker" and "hold_timeout" in e.text for e in rt.events.recent(50))
    rt.risk_loop.check()  # reported once
    assert sum(1 for e in rt.events.recent(100) if e.kind == "alert" and group.group_id in e.text) == 1


async def test_paper_accounts_feed_the_free_balance_breaker(tmp_path: Path) -> None:
    """Each paper venue keeps an account (balance, the venue's equity change from the running
    portfolio, margin at `paper.leverage`); below `min_free_balance` the venue gets no new intents."""
    cfg = demo_config().model_dump(mode="python")
    cfg["paper"].update({"balance": Decimal(100_000), "leverage": Decimal(2)})
    cfg["risk"]["min_free_balance"] = Decimal(99_000)  # any real margin use is too much
    clock = ManualClock()
    rt = Runtime(QuantarbConfig.model_validate(cfg), is_demo=True, clock=clock, ledger_path="",
                 mt5_in_process=True)
    rt.risk_loop.check()
    assert rt.view.snapshot().blocked_venues == ()  # flat accounts: all free
    await rt.driver.drive(1500, 20.0)
    rt.risk_loop.check()  # marks from the books, then the accounts
    balances = rt.accounts.free_margin()
    assert set(balances) == {"mt5", "okx", "binance"}
    blocked = set(rt.view.snapshot().blocked_venues)
    low = {v for v, free in balances.items() if free < Decimal(99_000)}
    assert low and blocked == low
    exposure = rt.gate.exposure
    venues: tuple[Venue, ...] = ("mt5", "okx", "binance")
    now = clock.time_ms()
    equity = rt.equity.venue_equity(now)
    # The venues' own figures add up to the account's equity (one definition of the money).
    assert sum((equity[v] or Decimal(0) for v in venues), Decimal(0)) == rt.equity.total(now)
    for venue in venues:
        free = balances[venue]
        # By hand from the portfolio: each book's cash + position x mark, less fees (USDT at 1).
        own = Decimal(0)
        for p in rt.equity.positions(now):
            if p.venue == venue:
                assert p.unrealized is not None
                own += p.realized + p.unrealized - sum(p.fees.values(), Decimal(0)) + sum(p.carry.values(), Decimal(0))
        assert equity[venue] == own
        assert free == Decimal(100_000) + own - exposure.venue_gross(venue) / 2
    breakers = {b.key: b.state for b in rt.view.snapshot().breakers}
    assert all(breakers[f"balance:{v}"] == "tripped" for v in low)
    await rt.driver.drive(1500, 20.0)  # edges keep coming: those through a blocked venue are refused
    assert rt.pipeline.reasons["risk:min_free_balance"] > 0


async def test_a_venue_whose_quotes_keep_failing_the_price_guard_is_blocked_then_released(tmp_path: Path) -> None:
    """Issue 13: MT5 ticks far from OKX and Binance are refused one by one; after
    `outlier_block_count` in a row the venue is blocked (journaled, shown), and the first MT5
    quote that agrees again releases it at the next risk check."""
    clock = ManualClock()
    path = tmp_path / "outlier.db"
    rt = _runtime(path, clock)
    await rt.open_ledger(str(path))
    try:
        await rt.driver.drive(100, 20.0)  # every venue quoting
        rt.risk_loop.check()
        assert rt.view.snapshot().blocked_venues == ()
        okx = rt.compare.book("okx", "XAUT-USDT-SWAP")
        assert okx is not None and okx.has_quote
        count = rt.config.risk.outlier_block_count
        before = rt.pipeline.reasons["price_outlier"]

        def mt5_tick(bid: float, ask: float) -> None:
            now = clock.monotonic_ns()
            rt.health.delivered("mt5", now)
            decision = rt.ingest(Quote("mt5", "XAUUSD", bid, ask, 1.0, 1.0, clock.time_ms(), now))
            assert decision is not None

        for n in range(1, count + 1):
            okx_mid = okx.mid
            rt.ingest(Quote("okx", "XAUT-USDT-SWAP", okx.raw_bid, okx.raw_ask, 1000.0, 1000.0, clock.time_ms(),
                            clock.monotonic_ns()))  # the others stay fresh
            mt5_tick(okx_mid / 26.5, okx_mid / 26.5 + 0.1)
            rt.risk_loop.check()
            assert ("mt5" in rt.view.snapshot().blocked_venues) is (n == count), n
        assert rt.pipeline.reasons["price_outlier"] - before == count
        snap = rt.view.snapshot()
        assert snap.price_outliers == {"mt5": count}
        [row] = [b for b in snap.breakers if b.key == "outlier:mt5"]
        assert (row.state, row.effect) == ("tripped", "block_venue")
        assert rt.gate.state is TradingState.ACTIVE  # blocked, not halted
        status = rt.view.status()
        assert status["blocked_venues"] == ["mt5"] and status["price_outliers"] == {"mt5": count}
        assert rt.view.health_status() == "degraded"

        mt5_tick(okx.mid - 0.2, okx.mid + 0.2)  # agrees again
        rt.risk_loop.check()
        assert rt.view.snapshot().blocked_venues == ()
        await _settle(rt)
    finally:
        await rt.close_ledger()
    rows = [r for _k, r, _s in _risk_rows(path) if "outlier:mt5" in r]
    assert [r.split(" ")[0] for r in rows] == ["trip", "release"], rows
