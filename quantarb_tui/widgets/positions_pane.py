"""Positions pane: what is held, per asset, from the running portfolio (docs/ledger.md, Money).

One row per asset: the net delta across venues (red with `!` when the legs have drifted apart
by a lot step or more and no group of the asset is in flight to explain it; yellow while one
is), unrealized PnL and carry in the account currency, the mark, how long the asset has been
held, and each venue's position in base units with the venue's own units (`mt5 +1 (0.01 lot)`,
`okx -1 (1,000 ct)`: the sign is the base quantity's). The most important columns come first,
so a narrow terminal keeps the net delta and the money.
"""

from __future__ import annotations

from decimal import Decimal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import HoldingLegRow, HoldingRow, RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("asset", "Asset", 5),
    ("net", "Net Δ", 9),
    ("upnl", "uPnL", 9),
    ("carry", "Carry", 7),
    ("mark", "Mark", 9),
    ("held", "Held", 6),
    ("legs", "By venue: base (venue units)", 48),
]


def signed_qty(value: str) -> str:
    """A signed decimal quantity with thousands separators and no trailing zeros."""
    amount = fmt.decimal(value)
    if amount is None:
        return value or "-"
    return f"{amount.normalize():+,f}" if amount else "0"


def leg_text(leg: HoldingLegRow) -> Text:
    """`mt5 +1 (0.01 lot)`; the venue's units only when they are not base units."""
    text = Text(f"{leg.venue} ", style="dim")
    amount = fmt.decimal(leg.qty) or Decimal(0)
    text.append(signed_qty(leg.qty), style="green" if amount > 0 else "red" if amount < 0 else "dim")
    if leg.unit:
        venue_qty = fmt.decimal(leg.venue_qty)
        shown = f"{abs(venue_qty).normalize():,f}" if venue_qty else leg.venue_qty
        text.append(f" ({shown} {leg.unit})", style="dim")
    return text


def legs_text(row: HoldingRow) -> Text:
    text = Text()
    for i, leg in enumerate(row.legs):
        if i:
            text.append("  ")
        text.append_text(leg_text(leg))
    return text


def net_text(row: HoldingRow) -> Text:
    """The net delta: dim when hedged, red and marked `!` when the legs drifted apart (yellow
    while a group of the asset is in flight)."""
    if row.drift and not row.in_flight:
        return Text(f"{signed_qty(row.net)}!", style="bold red", justify="right")
    return Text(signed_qty(row.net), style="dim" if fmt.decimal(row.net) == 0 else "yellow", justify="right")


def account_money(value: str) -> Text:
    if value == "n/a":
        return Text("n/a", style="yellow", justify="right")
    return fmt.money(value)


class PositionsPane(Vertical):
    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="positions-table", cursor_type="none")

    def on_mount(self) -> None:
        self.border_title = "Positions"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        drifting = [h.asset for h in snap.holdings if h.drift and not h.in_flight]
        if drifting:
            set_subtitle(self, f"drift: {', '.join(drifting)}")
        elif snap.holdings:
            set_subtitle(self, snap.account_ccy)
        else:
            set_subtitle(self, "flat")
        self.set_class(bool(drifting), "-drift")
        rows: list[Row] = []
        for h in snap.holdings:
            mark = fmt.decimal(h.mark)
            held = fmt.duration(max(0, snap.ts_ms - h.held_since_ms)) if h.held_since_ms is not None else "-"
            rows.append((
                h.key,
                (
                    h.asset,
                    net_text(h),
                    account_money(h.unrealized),
                    account_money(h.carry),
                    Text(fmt.price(float(mark)) if mark is not None else "-", justify="right"),
                    Text(held, justify="right"),
                    legs_text(h),
                ),
            ))
        self.query_one(SyncedTable).sync(rows)
