"""Quotes pane: the latest top of book of every instrument, with its age (`bad px` while
the instrument's latest quote is refused by the price guard)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable

COLUMNS = [
    ("pair", "Pair", 4),
    ("venue", "Venue", 7),
    ("bid", "Bid", 9),
    ("ask", "Ask", 9),
    ("age", "Age ms", 6),
]


class QuotesPane(Vertical):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pair_filter: str = ""

    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="quotes-table")

    def on_mount(self) -> None:
        self.border_title = "Quotes"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        rows: list[Row] = []
        for q in snap.quotes:
            if not fmt.pair_matches(q.pair, self.pair_filter):
                continue
            # A quote the price guard refused: the venue has no tradable quote (docs/configuration.md).
            age = fmt.refused() if q.outlier else fmt.age(q.age_ms)
            rows.append((q.key, (q.pair, q.venue, fmt.price(q.bid), fmt.price(q.ask), age)))
        self.query_one(SyncedTable).sync(rows)
