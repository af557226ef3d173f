"""Compensation pane: recent repair actions with their outcome; failures stand out in red."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("time", "Time", 8),
    ("pair", "Pair", 4),
    ("kind", "Action", 11),
    ("outcome", "Outcome", 9),
    ("group", "Group", 12),
    ("reason", "Reason", 24),
]


class CompensationPane(Vertical):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pair_filter: str = ""

    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="compensation-table")

    def on_mount(self) -> None:
        self.border_title = "Compensation"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        failed = sum(1 for c in snap.compensation if c.failed)
        set_subtitle(self, f"{failed} failed" if failed else "")
        self.set_class(failed > 0, "-has-failures")
        rows: list[Row] = []
        for c in snap.compensation:
            if not fmt.pair_matches(c.pair, self.pair_filter):
                continue
            style = "bold red" if c.failed else ""
            rows.append((
                c.key,
                (
                    Text(fmt.clock(c.ts_ms), style=style),
                    Text(c.pair, style=style),
                    Text(c.kind, style=style or ("yellow" if c.kind == "unwind" else "")),
                    Text(c.outcome or "-", style=style or ("green" if c.outcome == "filled" else "")),
                    Text(c.group_id, style=style),
                    Text(c.reason, style=style),
                ),
            ))
        self.query_one(SyncedTable).sync(rows)
