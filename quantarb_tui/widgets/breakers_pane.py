"""Breakers pane: every automatic breaker, ok or tripped, and what a trip does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("name", "Breaker", 22),
    ("state", "State", 8),
    ("effect", "Effect", 12),
    ("since", "Since", 8),
    ("until", "Until", 8),
    ("detail", "Detail", 40),
]


class BreakersPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="breakers-table")

    def on_mount(self) -> None:
        self.border_title = "Breakers"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        tripped = [b for b in snap.breakers if b.state != "ok"]
        set_subtitle(self, f"{len(tripped)} tripped" if tripped else f"{len(snap.breakers)} ok")
        self.set_class(bool(tripped), "-tripped")
        rows: list[Row] = []
        for b in snap.breakers:
            style = "bold red" if b.state != "ok" else "green"
            rows.append((
                b.key,
                (
                    b.name,
                    Text(b.state, style=style),
                    b.effect,
                    fmt.clock(b.since_ms) if b.since_ms else "-",
                    fmt.clock(b.until_ms) if b.until_ms else "-",
                    b.detail,
                ),
            ))
        self.query_one(SyncedTable).sync(rows)
