"""Edges pane: every directed edge, net of fees, colored against the threshold, with its
recent path (a sparkline kept by the pane from successive snapshots) and the last decision."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.sparkline import EdgeHistory
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

SPARK_WIDTH = 8

COLUMNS = [
    ("pair", "Pair", 4),
    ("route", "Buy>Sell", 11),
    ("buy", "Buy@", 9),
    ("sell", "Sell@", 9),
    ("edge", "Edge bp", 7),
    ("trend", "Recent", SPARK_WIDTH),
    ("reason", "Last decision", 15),
]


class EdgesPane(Vertical):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history = EdgeHistory(SPARK_WIDTH)
        self.pair_filter: str = ""

    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="edges-table")

    def on_mount(self) -> None:
        self.border_title = "Edges (net of fees)"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        threshold = snap.threshold_bps
        subtitle = f"threshold {threshold:g} bps"
        if self.pair_filter:
            subtitle = f"filter '{self.pair_filter}'  {subtitle}"
        set_subtitle(self, subtitle)
        rows: list[Row] = []
        for e in snap.edges:
            self.history.push(e.key, e.edge_bps)  # every edge keeps its path, shown or not
            if not fmt.pair_matches(e.pair, self.pair_filter):
                continue
            rows.append((
                e.key,
                (
                    e.pair,
                    f"{e.buy_venue}>{e.sell_venue}",
                    fmt.price(e.buy_price),
                    fmt.price(e.sell_price),
                    fmt.edge(e.edge_bps, threshold),
                    self.history.render(e.key, threshold),
                    e.last_reason or "-",
                ),
            ))
        self.query_one(SyncedTable).sync(rows)

