"""Risk events pane: kills, flattens, rearms, pauses, breaker trips and runtime setting changes,
newest first."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable

COLUMNS = [
    ("time", "Time", 8),
    ("kind", "Event", 8),
    ("state", "State after", 11),
    ("reason", "Reason", 60),
]

KIND_STYLES = {"kill": "bold red", "flatten": "bold red", "breaker": "bold yellow", "rearm": "green",
               "pause": "yellow", "resume": "green", "setting": "cyan"}


class RiskEventsPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="risk-events-table")

    def on_mount(self) -> None:
        self.border_title = "Recent risk events"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        rows: list[Row] = [
            (
                e.key,
                (
                    fmt.clock(e.ts_ms),
                    Text(e.kind, style=KIND_STYLES.get(e.kind, "")),
                    Text(e.trading_state, style=fmt.STATE_STYLES.get(e.trading_state, "")),
                    e.reason,
                ),
            )
            for e in snap.risk_events
        ]
        self.query_one(SyncedTable).sync(rows)
