"""The analytics screen (`a`): its figures are the ledger's, recomputed here from the file with
plain SQL; the key opens it from the main screen, not from the pair filter; and its pictures
at 160x48 and 80x24."""

from __future__ import annotations

import sqlite3
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input
from textual_plotext import PlotextPlot

from engine.runtime import Runtime
from ledger import money
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.analytics import AnalyticsScreen, timing_title
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.screens.modals import HELP_KEYS
from quantarb_tui.widgets.synced_table import SyncedTable
from tests.tui.conftest import close_ledger, make_app, warm


def _app_of(pilot: Pilot[Any]) -> QuantArbApp:
    assert isinstance(pilot.app, QuantArbApp)
    return pilot.app


async def _open_analytics(pilot: Pilot[Any]) -> AnalyticsScreen:
    app = _app_of(pilot)
    await pilot.press("a")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, AnalyticsScreen) and screen.doc is not None
    return screen


async def test_the_statistics_are_the_ledgers_groups(demo_runtime: Runtime, tmp_path: Path) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
        screen = await _open_analytics(pilot)
        assert demo_runtime.ledger is not None
        equity = await demo_runtime.ledger.read(money.equity, now_ms=demo_runtime.clock.time_ms(),
                                                instruments=demo_runtime.instruments,
                                                rates={"USDT": Decimal(1)})
        await close_ledger(demo_runtime)
        doc = screen.doc
        assert doc is not None
        table = screen.query_one("#analytics-table", SyncedTable)
        assert table.row_keys == ["all", *sorted(doc["pairs"])]
        groups_cell = str(getattr(table.get_row("all")[1], "plain", ""))
    con = sqlite3.connect(tmp_path / "t.db")
    try:
        pnls = [Decimal(r[0]) for r in con.execute(
            "SELECT realized_pnl FROM hedge_groups "
            "WHERE state IN ('hedged', 'repaired', 'unwound', 'failed', 'closed')")]
    finally:
        con.close()
    stats = doc["stats"]
    assert stats["groups"] == len(pnls) > 0
    assert stats["wins"] == sum(1 for p in pnls if p > 0)
    tenth_cent = Decimal("0.0001")
    assert Decimal(stats["total_pnl"]) == sum(pnls, Decimal(0)).quantize(tenth_cent, ROUND_HALF_EVEN)
    assert Decimal(stats["expectancy"]) == (sum(pnls, Decimal(0)) / len(pnls)).quantize(tenth_cent, ROUND_HALF_EVEN)
    assert sum(p["groups"] for p in doc["pairs"].values()) == len(pnls)
    # The curve ends where the ledger's equity is (both marked at the last fill prices).
    assert doc["series"]["points"][-1]["total"] == equity["total"]
    assert groups_cell == str(len(pnls))


async def test_a_opens_analytics_but_types_in_the_filter(demo_runtime: Runtime) -> None:
    assert any(key == "a" and "analytics" in what for key, what in HELP_KEYS)
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("slash", "a")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert app.screen.query_one("#filter", Input).value == "a"
        await pilot.press("enter")
        await pilot.press("a")
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert isinstance(app.screen, AnalyticsScreen)
        assert app.screen.doc is None  # no ledger in this run: nothing to chart, said so
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_edge_lifetimes_next_to_reaction_times_live(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
        screen = await _open_analytics(pilot)
        app.refresh_view()
        await pilot.pause()
        timings = demo_runtime.view.snapshot().timings
        assert timings is not None
        groups = sum(n for state, n in demo_runtime.orchestrator.closed_by_state.items() if state != "rejected")
        # Every group sent both entry legs, each measured once; the manual clock does not move
        # while a group executes, so each reaction is 0 (the first bucket).
        assert sum(timings.reactions) == groups > 0 and timings.reactions[0] == groups
        assert timings.lifetimes == demo_runtime.pipeline.lifetimes.counts() and sum(timings.lifetimes) > 0
        chart = screen.query_one("#analytics-timing", PlotextPlot)
        title = timing_title(timings, chart.size.width)
        assert title.startswith("edge life p50<=") and "reaction p50<=0ms" in title
        await close_ledger(demo_runtime)


def _snapshot_before(demo_runtime: Runtime) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await _open_analytics(pilot)
        await close_ledger(demo_runtime)
        app.refresh_view()
        await pilot.pause()

    return run_before


def test_analytics_160x48(snap_compare: Any, demo_runtime: Runtime) -> None:
    assert snap_compare(make_app(demo_runtime), terminal_size=(160, 48), run_before=_snapshot_before(demo_runtime))


def test_analytics_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=_snapshot_before(demo_runtime))
