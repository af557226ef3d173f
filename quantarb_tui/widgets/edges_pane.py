"""Edges pane: every directed edge, net of fees, colored against the threshold."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from quantarb_tui.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable

COLUMNS = [
    ("pair", "Pair", 4),
    ("route", "Buy>Sell", 11),
    ("buy", "Buy@", 9),
    ("sell", "Sell@", 9),
    ("edge", "Edge bp", 7),
    ("reason", "Last decision", 15),
]


class EdgesPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="edges-table")

    def on_mount(self) -> None:
        self.border_title = "Edges (net of fees)"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.border_subtitle = f"threshold {snap.threshold_bps:g} bps"
        rows: list[Row] = [
            (
                e.key,
                (
                    e.pair,
                    f"{e.buy_venue}>{e.sell_venue}",
                    fmt.price(e.buy_price),
                    fmt.price(e.sell_price),
                    fmt.edge(e.edge_bps, snap.threshold_bps),
                    e.last_reason or "-",
                ),
            )
            for e in snap.edges
        ]
        self.query_one(SyncedTable).sync(rows)
