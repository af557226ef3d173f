"""The cursor stays on the row the operator chose (by key) while rows come and go around it.

Without this, new groups inserted above the selection moved another group under the cursor
and Enter opened it. `SyncedTable` holds the groups, compensation and history tables, so the
table-level test covers all three; the Pilot test drives the real demo.
"""

from __future__ import annotations

from textual.app import App, ComposeResult

from engine.runtime import Runtime
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.widgets.synced_table import Row, SyncedTable
from tests.tui.conftest import close_ledger, make_app, warm

COLUMNS = [("name", "Name", 8)]


def rows(*keys: str) -> list[Row]:
    return [(key, (key,)) for key in keys]


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="t")


async def test_cursor_keeps_its_row_key_when_rows_are_inserted_removed_or_moved_above() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 20)) as pilot:
        table = app.query_one(SyncedTable)
        table.focus()
        table.sync(rows("c", "d", "e"))
        await pilot.press("down")  # the operator chooses "d"
        assert table.selected_key == "d"
        table.sync(rows("a", "b", "c", "d", "e"))  # two new rows above it
        assert (table.cursor_row, table.selected_key) == (3, "d")
        table.sync(rows("a", "d", "e"))  # rows above it gone
        assert (table.cursor_row, table.selected_key) == (1, "d")
        table.sync(rows("e", "a", "d"))  # reordered
        assert (table.cursor_row, table.selected_key) == (2, "d")
        table.sync(rows("x", "e", "a", "d"))  # inserted and reordered in one refresh
        assert (table.cursor_row, table.selected_key) == (3, "d")
        table.sync(rows("x", "e", "a"))  # the chosen row vanished: the cursor stays in the table
        assert table.cursor_row == 2 and table.selected_key == "a"


async def test_an_untouched_cursor_stays_on_the_top_row() -> None:
    """Before the operator moves it, the cursor marks the newest row, not the first row the
    table ever had (which would drag the view away from the groups in flight)."""
    app = TableApp()
    async with app.run_test(size=(40, 20)) as pilot:
        table = app.query_one(SyncedTable)
        table.focus()
        table.sync(rows("c", "d"))
        table.sync(rows("a", "b", "c", "d"))
        await pilot.pause()
        assert (table.cursor_row, table.selected_key, table.follows_row) == (0, "a", False)
        await pilot.press("down", "up")  # now chosen, even back on the top row
        table.sync(rows("z", "a", "b", "c", "d"))
        assert (table.cursor_row, table.selected_key, table.follows_row) == (1, "a", True)


async def test_enter_opens_the_chosen_group_while_new_groups_arrive_above_it(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await warm(app, demo_runtime, steps=600, chunks=3)
        await pilot.pause()
        main = app.screen
        assert isinstance(main, MainScreen)
        table = main.query_one("#groups-table", SyncedTable)
        assert app.focused is table
        await pilot.press("ctrl+home", "down", "down")  # the operator chooses the third group
        chosen = main.selected_group()
        assert chosen is not None and table.cursor_row == 2
        before = table.row_keys.index(chosen)
        for _ in range(200):  # the demo makes groups; each lands above the chosen one
            await demo_runtime.driver.drive(50, 20.0)
            app.refresh_view()
            if table.row_keys.index(chosen) >= before + 2:
                break
        moved = table.row_keys.index(chosen)
        assert moved >= before + 2, f"no new group arrived above {chosen} (index {moved})"
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        detail = app.screen
        assert isinstance(detail, GroupDetailScreen)
        assert detail.group_id == chosen
        await close_ledger(demo_runtime)
