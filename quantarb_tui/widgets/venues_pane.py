"""Venues pane: health of every market-data source, so a stale or flapping feed is seen at once."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("feed", "Feed", 12),
    ("state", "State", 7),
    ("age", "Age ms", 6),
    ("rate", "Fr/s", 4),
    ("reconnects", "Rcn", 3),
    ("dropped", "Drop", 4),
]

STATE_STYLES = {"live": "green", "rest": "bold yellow", "connecting": "yellow", "stopped": "dim"}


class VenuesPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="venues-table")

    def on_mount(self) -> None:
        self.border_title = "Venues"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        rows: list[Row] = []
        errors = []
        for f in snap.feeds:
            rows.append(
                (
                    f.key,
                    (
                        f.name,
                        Text(f.state, style=STATE_STYLES.get(f.state, "")),
                        fmt.age(f.last_frame_age_ms),
                        f"{f.frames_per_s:.0f}",
                        Text(str(f.reconnects), style="yellow" if f.reconnects else ""),
                        Text(str(f.dropped), style="yellow" if f.dropped else ""),
                    ),
                )
            )
            if f.last_error and f.state != "live":
                errors.append(f"{f.name}: {f.last_error}")
        set_subtitle(self, errors[0][:60] if errors else "")
        self.query_one(SyncedTable).sync(rows)
