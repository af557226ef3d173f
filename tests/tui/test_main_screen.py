"""The main screen under Pilot and as a snapshot (deterministic: manual clock, fixed seed)."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable

from quantarb_tui.app import QuantArbApp
from quantarb_tui.runtime import Runtime
from quantarb_tui.widgets.synced_table import SyncedTable


def _app(runtime: Runtime) -> QuantArbApp:
    app = QuantArbApp(runtime, autostart=False, refresh_hz=None)
    app.animation_level = "none"
    return app


def test_main_screen_snapshot(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def drive(pilot: Pilot[Any]) -> None:
        await demo_runtime.drive(1500, 20.0)  # 30 simulated seconds of the demo market
        assert isinstance(pilot.app, QuantArbApp)
        pilot.app.refresh_view()
        await pilot.pause()

    assert snap_compare(_app(demo_runtime), terminal_size=(120, 40), run_before=drive)


async def test_q_quits_and_stops_the_engine(demo_runtime: Runtime) -> None:
    app = QuantArbApp(demo_runtime, autostart=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert demo_runtime._running
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == 0
    assert not demo_runtime._running


async def test_tables_show_demo_rows_and_update_only_changed_cells(demo_runtime: Runtime) -> None:
    app = _app(demo_runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await demo_runtime.drive(1500, 20.0)
        app.refresh_view()
        await pilot.pause()
        quotes = app.screen.query_one("#quotes-table", DataTable)
        edges = app.screen.query_one("#edges-table", DataTable)
        groups = app.screen.query_one("#groups-table", DataTable)
        assert quotes.row_count == 9  # 3 pairs x 3 venues
        assert edges.row_count == 18  # 6 directed edges per pair
        assert groups.row_count > 0
        # A refresh with nothing changed updates no cell.
        table = app.screen.query_one("#quotes-table", SyncedTable)
        before = table.cells_updated
        app.refresh_view()
        assert table.cells_updated == before
        # One more market step changes some cells, not all of them.
        await demo_runtime.drive(1, 20.0)
        app.refresh_view()
        changed = table.cells_updated - before
        assert 0 < changed < 9 * 6
