"""Balances pane (risk screen): each venue's account and the margin its positions hold.

A paper venue's balance is the configured paper account, its equity that plus the venue's own
equity change (realized + unrealized - fees + carry of its books, docs/ledger.md, Money), its
margin the gross notional over the leverage (a spot account's in full); MT5's figures are the
terminal's last account report; a live venue shows the free margin reconciliation last read.
Free margin is what the min-free-balance breaker judges; red when negative.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

# Free margin first after the venue: a narrow terminal keeps what the breaker judges.
COLUMNS = [
    ("venue", "Venue", 8),
    ("free", "Free margin", 13),
    ("margin", "Margin", 12),
    ("equity", "Equity", 13),
    ("balance", "Balance", 13),
    ("source", "Source", 16),
]


def amount(value: str) -> Text:
    return fmt.money(value) if value else Text("-", style="dim", justify="right")


class BalancesPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="balances-table", cursor_type="none")

    def on_mount(self) -> None:
        self.border_title = "Balances and margin"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        short = [b.venue for b in snap.balances if (fmt.decimal(b.free) or 0) < 0]
        set_subtitle(self, f"negative free margin: {', '.join(short)}" if short
                     else snap.account_ccy if snap.balances else "no account reported")
        rows: list[Row] = [
            (b.key, (b.venue, amount(b.free), amount(b.margin), amount(b.equity), amount(b.balance),
                     Text(b.source, style="dim")))
            for b in snap.balances
        ]
        self.query_one(SyncedTable).sync(rows)
