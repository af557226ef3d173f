"""Limits pane: every RiskGate limit with its bound and current use, as a bar."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("rule", "Limit", 24),
    ("scope", "Scope", 10),
    ("used", "Used", 12),
    ("limit", "Bound", 12),
    ("use", "Use", 15),
]


class LimitsPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="limits-table")

    def on_mount(self) -> None:
        self.border_title = "Limits"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        near = sum(1 for r in snap.limits if r.utilization is not None and r.utilization >= 0.9)
        set_subtitle(self, f"{near} near or at the bound" if near else f"{len(snap.limits)} limits")
        rows: list[Row] = [
            (r.key, (r.rule, r.scope or "-", r.used, r.limit, fmt.utilization(r.utilization)))
            for r in snap.limits
        ]
        self.query_one(SyncedTable).sync(rows)
