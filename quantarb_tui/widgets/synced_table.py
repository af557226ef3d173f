"""A DataTable that follows keyed rows and touches only the cells that changed.

Every `update_cell` invalidates the table's render cache, and `clear()` loses the operator's
cursor and scroll; so a refresh diffs the new rows against what is shown, updates changed
cells only (no width recompute), adds new keys and removes vanished ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


class SyncedTable(DataTable[Cell]):
    """DataTable with fixed columns and `sync(rows)` that applies a minimal diff."""

    def __init__(
        self,
        columns: Sequence[tuple[str, str, int]],
        *,
        order: Callable[[Any], Any] | None = None,
        order_column: str | None = None,
        reverse: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._columns = list(columns)
        self._shown: dict[str, tuple[Cell, ...]] = {}
        self._order = order
        self._order_column = order_column
        self._reverse = reverse
        self.cells_updated = 0

    def on_mount(self) -> None:
        for key, label, width in self._columns:
            self.add_column(label, width=width, key=key)

    def sync(self, rows: Sequence[Row]) -> None:
        """Show exactly `rows` (keyed), changing as few cells as possible."""
        keys = [key for key, _label, _width in self._columns]
        wanted = {row_key: tuple(cells) for row_key, cells in rows}
        for gone in [k for k in self._shown if k not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
        added = False
        for row_key, cells in wanted.items():
            shown = self._shown.get(row_key)
            if shown is None:
                self.add_row(*cells, key=row_key)
                self._shown[row_key] = cells
                added = True
                continue
            if shown == cells:
                continue
            for col, old, new in zip(keys, shown, cells, strict=True):
                if old != new:
                    self.update_cell(row_key, col, new, update_width=False)
                    self.cells_updated += 1
            self._shown[row_key] = cells
        if added and self._order is not None and self._order_column is not None:
            self.sort(self._order_column, key=self._order, reverse=self._reverse)
