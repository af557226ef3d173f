"""A DataTable that follows keyed rows and touches only the cells that changed.

`clear()` loses the operator's cursor and scroll; so a refresh diffs the new rows against
what is shown, updates changed cells only (no width recompute), adds new keys, removes
vanished ones, and reorders only when the order of the keys changed.

Once the operator has moved the cursor, it follows the row it is on (by key), not its index:
rows inserted above the operator's choice (new groups) must not slide another row under
Enter. Until then it stays on the top row, so a table nobody has touched keeps showing its
newest rows (the groups in flight) instead of scrolling after the first row it ever had.

DataTable keys its cell render cache on a table-wide update counter, so one changed cell
re-renders every visible cell (the UI's main cost under a fast market). SyncedTable keeps a
second cache keyed on each cell's own version: only the cells that changed are rendered
again. And where `DataTable.update_cell` repaints the whole table, a refresh that only
changed cells repaints only the rows that hold them: the compositor redraws those lines and
leaves the rest of the screen as it was. These overrides (`_render_cell`, `_row_locations`,
the cell store `_data`) lean on DataTable internals of the Textual version pinned in
pyproject.toml; the snapshot and pilot tests cover them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual._types import SegmentLines
from textual.coordinate import Coordinate
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


def set_subtitle(pane: Widget, text: str) -> None:
    """A pane's border subtitle, assigned only when it changed: every assignment repaints the
    whole pane, which would undo the row-by-row repaint of its table on every refresh."""
    if pane.border_subtitle != text:
        pane.border_subtitle = text


class SyncedTable(DataTable[Cell]):
    """DataTable with fixed columns and `sync(rows)` that applies a minimal diff.

    Rows are shown in the order given (the snapshot's order), whatever order they arrived in.
    """

    def __init__(self, columns: Sequence[tuple[str, str, int]], **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        super().__init__(zebra_stripes=False, **kwargs)
        self._columns = list(columns)
        self._shown: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []
        self.cells_updated = 0
        self._versions: dict[tuple[str, str], int] = {}
        self._version_seq = 0
        self._cells: dict[tuple[Any, ...], SegmentLines] = {}
        self.cells_rendered = 0
        self.follows_row = False  # True once the operator has moved the cursor
        self._syncing = False
        # DataTable's own caches are keyed on its update counter, so under a moving market
        # they hold mostly dead entries (tens of thousands of segments for the collector to
        # walk). The cell cache above does the reuse; theirs only need the visible screen.
        self._cell_render_cache.maxsize = 256
        self._row_render_cache.maxsize = 200
        self._line_cache.maxsize = 200
        self._row_renderable_cache.maxsize = 200

    def on_mount(self) -> None:
        for key, label, width in self._columns:
            self.add_column(label, width=width, key=key)

    @property
    def row_keys(self) -> list[str]:
        """The keys of the rows shown, top to bottom."""
        return list(self._order)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor (None when the table is empty)."""
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except CellDoesNotExist:
            return None

    def watch_cursor_coordinate(self, old_coordinate: Coordinate, new_coordinate: Coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        if not self._syncing and old_coordinate != new_coordinate:
            self.follows_row = True  # a key, a click or the app moved it: that row is the choice

    def sync(self, rows: Sequence[Row]) -> None:
        """Show exactly `rows` (keyed, in this order), changing as few cells as possible.

        A chosen row keeps the cursor wherever it moves; if it is gone, the cursor stays at
        its index (clamped to the table)."""
        selected = self.selected_key if self.follows_row else None
        self._syncing = True
        try:
            self._apply(rows)
            if selected is not None:
                index = self._row_locations.get(RowKey(selected))
                if index is not None and index != self.cursor_row:
                    self.move_cursor(row=index, animate=False)
        finally:
            self._syncing = False

    def _apply(self, rows: Sequence[Row]) -> None:
        keys = [key for key, _label, _width in self._columns]
        wanted = {row_key: tuple(cells) for row_key, cells in rows}
        changed_rows: list[str] = []
        for gone in [k for k in self._shown if k not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
            for col in keys:
                self._versions.pop((gone, col), None)
        for row_key, cells in wanted.items():
            shown = self._shown.get(row_key)
            if shown is None:
                self.add_row(*cells, key=row_key)
                self._shown[row_key] = cells
                for col in keys:
                    self._bump(row_key, col)
                continue
            if shown == cells:
                continue
            data = self._data[RowKey(row_key)]
            for col, old, new in zip(keys, shown, cells, strict=True):
                if old != new:
                    data[ColumnKey(col)] = new  # what update_cell does, without its full repaint
                    self._bump(row_key, col)
                    self.cells_updated += 1
            self._shown[row_key] = cells
            changed_rows.append(row_key)
        if changed_rows:
            self._update_count += 1  # DataTable's line caches: these rows' lines are new
            for row_key in changed_rows:
                index = self._row_locations.get(RowKey(row_key))
                if index is not None:
                    self.refresh_row(index)
        order = list(wanted)
        if order != self._order:
            self._order = order
            self._reorder(order)

    def _bump(self, row_key: str, column_key: str) -> None:
        self._version_seq += 1
        self._versions[(row_key, column_key)] = self._version_seq

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        """DataTable's cell rendering, cached per cell version instead of per table update."""
        if row_index < 0 or column_index < 0:  # header and labels: DataTable's own cache
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        version = self._versions.get((str(row_key.value), str(column_key.value)))
        if version is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (row_index, column_index, version, base_style, width, cursor, hover, self.show_cursor,
               self._show_hover_cursor, self._pseudo_class_state)
        lines = self._cells.get(key)
        if lines is None:
            if len(self._cells) > 1024:  # a few screens' worth; bounded for memory and the collector
                self._cells.clear()
            lines = self._cells[key] = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
            self.cells_rendered += 1
        return lines

    def _reorder(self, order: list[str]) -> None:
        # DataTable.sort() only sees cell values; ordering by row key needs its row map.
        if [row.key.value for row in self.ordered_rows] == order:
            return
        self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(order)})
        self._update_count += 1
        self.refresh()
