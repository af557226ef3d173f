"""Hedge groups pane: the most recent groups, newest first, with state and PnL."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from quantarb_tui.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable

COLUMNS = [
    ("opened", "Opened", 8),
    ("group", "Group", 13),
    ("pair", "Pair", 5),
    ("route", "Buy>Sell", 11),
    ("qty", "Qty", 8),
    ("state", "State", 12),
    ("edge", "Exp bps", 7),
    ("pnl", "PnL", 9),
]


class GroupsPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="groups-table", order=lambda v: v, order_column="group", reverse=True)

    def on_mount(self) -> None:
        self.border_title = "Hedge groups"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        by_state = "  ".join(f"{k} {v}" for k, v in sorted(snap.groups_by_state.items()))
        self.border_subtitle = by_state or "none yet"
        rows: list[Row] = [
            (
                g.key,
                (
                    fmt.clock(g.opened_ms),
                    g.key,
                    g.pair,
                    f"{g.buy_venue}>{g.sell_venue}",
                    g.base_qty,
                    fmt.group_state(g.state),
                    f"{g.expected_edge_bps:.1f}",
                    g.realized_pnl,
                ),
            )
            for g in snap.groups
        ]
        self.query_one(SyncedTable).sync(rows)
