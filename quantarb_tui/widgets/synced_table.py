"""A DataTable that follows keyed rows and touches only the cells that changed.

Every `update_cell` invalidates the table's render cache, and `clear()` loses the operator's
cursor and scroll; so a refresh diffs the new rows against what is shown, updates changed
cells only (no width recompute), adds new keys, removes vanished ones, and reorders only
when the order of the keys changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


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

    def sync(self, rows: Sequence[Row]) -> None:
        """Show exactly `rows` (keyed, in this order), changing as few cells as possible."""
        keys = [key for key, _label, _width in self._columns]
        wanted = {row_key: tuple(cells) for row_key, cells in rows}
        for gone in [k for k in self._shown if k not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
        for row_key, cells in wanted.items():
            shown = self._shown.get(row_key)
            if shown is None:
                self.add_row(*cells, key=row_key)
                self._shown[row_key] = cells
                continue
            if shown == cells:
                continue
            for col, old, new in zip(keys, shown, cells, strict=True):
                if old != new:
                    self.update_cell(row_key, col, new, update_width=False)
                    self.cells_updated += 1
            self._shown[row_key] = cells
        order = list(wanted)
        if order != self._order:
            self._order = order
            self._reorder(order)

    def _reorder(self, order: list[str]) -> None:
        # DataTable.sort() only sees cell values; ordering by row key needs its row map.
        if [row.key.value for row in self.ordered_rows] == order:
            return
        self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(order)})
        self._update_count += 1
        self.refresh()
