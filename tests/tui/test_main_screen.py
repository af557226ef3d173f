"""The main screen under Pilot: rows, minimal diffs, responsive layout, 256 colors, quit."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import textual.constants
from textual.widgets import DataTable, Static

from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from quantarb_tui.widgets.synced_table import SyncedTable
from tests.tui.conftest import close_ledger, make_app, warm


async def test_q_quits_and_stops_the_engine(demo_runtime: Runtime) -> None:
    app = QuantArbApp(demo_runtime, autostart=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert demo_runtime._running
        await pilot.press("q")
        await pilot.pause()
        if app.is_running:  # a group happened to be in flight: the quit dialog asks first
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
    assert app.return_value == 0
    assert not demo_runtime._running


async def test_tables_show_demo_rows_and_update_only_changed_cells(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
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
        await demo_runtime.driver.drive(1, 20.0)
        app.refresh_view()
        changed = table.cells_updated - before
        assert 0 < changed < 9 * 6
        await close_ledger(demo_runtime)


async def test_edge_sparklines_follow_successive_snapshots(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
        await pilot.pause()
        from quantarb_tui.widgets.edges_pane import EdgesPane

        pane = app.screen.query_one(EdgesPane)
        key = demo_runtime.view.snapshot().edges[0].key
        assert 2 <= len(pane.history.values(key)) <= 8  # a bounded ring buffer per edge
        await close_ledger(demo_runtime)


@pytest.mark.parametrize(("size", "folded"), [((80, 24), True), ((160, 48), False)])
async def test_layout_folds_panes_at_80x24(demo_runtime: Runtime, size: tuple[int, int], folded: bool) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=size) as pilot:
        await demo_runtime.driver.drive(50, 20.0)
        app.refresh_view()
        await pilot.pause()
        screen = app.screen
        assert screen.has_class("-narrow") is folded
        for pane in ("#quotes", "#compensation", "#bottom"):
            assert screen.query_one(pane).display is not folded
        for pane in ("#status", "#venues", "#edges", "#groups"):
            assert screen.query_one(pane).display


async def test_renders_on_a_256_color_terminal(demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over SSH: TERM=xterm-256color, no COLORTERM. The escape sequences sent must be 256-color
    ones (38;5;n), never truecolor (38;2;r;g;b)."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "256")
    app = make_app(demo_runtime)
    frames: list[str] = []
    display = app._display

    def capture(screen: Any, renderable: Any) -> None:
        if renderable is not None and hasattr(renderable, "render_segments"):
            frames.append(renderable.render_segments(app.console))
        display(screen, renderable)

    monkeypatch.setattr(app, "_display", capture)
    async with app.run_test(size=(120, 40)) as pilot:
        await demo_runtime.driver.drive(200, 20.0)
        app.refresh_view()
        await pilot.pause()
        assert app.console.color_system == "256"
    output = "".join(frames)
    assert "ACTIVE" in output
    assert "38;5;" in output or "48;5;" in output
    assert "38;2;" not in output and "48;2;" not in output



class ShutdownProbe(Static):
    """Refreshes the view from inside the shutdown, as the refresh timer may: the app's timers
    stop only after its screens' widgets have been removed."""

    errors: ClassVar[list[BaseException]] = []
    calls: ClassVar[int] = 0

    def on_unmount(self) -> None:
        app = self.app
        assert isinstance(app, QuantArbApp)
        ShutdownProbe.calls += 1
        try:
            app.refresh_view()
            app.refresh_status()
        except Exception as exc:  # what the timer would raise, ending the app with a traceback
            ShutdownProbe.errors.append(exc)


async def test_a_refresh_while_the_app_shuts_down_touches_no_widget(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    ShutdownProbe.errors.clear()
    ShutdownProbe.calls = 0
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        venues = app.screen.query_one("#venues")
        await venues.mount(ShutdownProbe())
        refreshes = app.refreshes
    assert ShutdownProbe.calls == 1
    assert ShutdownProbe.errors == []
    assert app.refreshes == refreshes  # skipped, not half-applied
