"""History screen: groups from the ledger, filtered by pair and state, with totals.

Read with `EngineReader.history()` in a worker, on open, when a filter changes, and when the
snapshot shows that more groups have closed since the last read, at most every RELOAD_S
(`ReloadPacer`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Select, Static

from engine.control import EngineReader, ReadFailed
from engine.snapshot import RuntimeSnapshot
from quantarb_tui.screens.messages import OpenGroup, RefreshNow
from quantarb_tui.screens.reload_pacer import ReloadPacer, groups_token
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.status_bar import StatusBar
from quantarb_tui.widgets.synced_table import Row, SyncedTable

LIMIT = 500
RELOAD_S = 2.0  # 500 rows from the ledger: at most this often while groups close
STATES = ("hedged", "repaired", "unwound", "rejected", "failed", "closed", "open")
PNL_STATES = ("hedged", "repaired", "unwound", "failed", "closed")

COLUMNS = [
    ("opened", "Opened (UTC)", 19),
    ("group", "Group", 12),
    ("pair", "Pair", 4),
    ("route", "Buy>Sell", 11),
    ("qty", "Qty", 7),
    ("state", "State", 12),
    ("held", "Held", 7),
    ("edge", "Exp bp", 6),
    ("pnl", "PnL", 9),
    ("fees", "Fees", 8),
]


def totals(rows: list[dict[str, Any]]) -> Text:
    """Count by state, realized PnL and fees (exact decimals), hit rate and mean expected edge."""
    by_state: dict[str, int] = {}
    pnl = Decimal(0)
    fees = Decimal(0)
    for r in rows:
        state = str(r["state"])
        by_state[state] = by_state.get(state, 0) + 1
        if state in PNL_STATES:
            pnl += fmt.decimal(r.get("realized_pnl")) or Decimal(0)
            fees += fmt.decimal(r.get("fees")) or Decimal(0)
    hits = by_state.get("hedged", 0) + by_state.get("repaired", 0)
    edge = sum(float(r.get("expected_edge_bps") or 0.0) for r in rows) / len(rows) if rows else 0.0
    text = Text(f" {len(rows)} groups", style="bold")
    if len(rows) >= LIMIT:
        text.append(f" (newest {LIMIT})", style="dim")
    text.append("   PnL ", style="dim")
    text.append_text(fmt.money(pnl, signed=True, cell=False))
    text.append("   fees ", style="dim")
    text.append(f"{fees.quantize(Decimal('0.01'), ROUND_HALF_EVEN):,}")
    text.append("   hit rate ", style="dim")
    text.append(f"{hits / len(rows) * 100:.0f}%" if rows else "-")
    text.append("   mean exp edge ", style="dim")
    text.append(f"{edge:.1f} bps" if rows else "-")
    text.append("\n ")
    text.append("  ".join(f"{k} {v}" for k, v in sorted(by_state.items())), style="dim")
    return text


class HistoryScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, pairs: list[str], reader: EngineReader) -> None:
        super().__init__()
        self._reader = reader
        self._pairs = pairs
        self.rows: list[dict[str, Any]] = []
        self.loads = 0
        self._pacer = ReloadPacer(RELOAD_S)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="history-filters"):
            yield Select([(p, p) for p in self._pairs], prompt="all pairs", id="history-pair")
            yield Select([(s, s) for s in STATES], prompt="all states", id="history-state")
            yield Static("", id="history-totals")
        with Vertical(id="history", classes="pane"):
            yield SyncedTable(COLUMNS, id="history-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#history").border_title = "Hedge groups (ledger), newest first"
        self.query_one("#history-table", SyncedTable).focus()
        self.load()
        self.post_message(RefreshNow())  # show the engine state at once, not at the next tick

    def action_back(self) -> None:
        self.dismiss(None)

    @property
    def pair(self) -> str | None:
        value = self.query_one("#history-pair", Select).value
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        value = self.query_one("#history-state", Select).value
        return value if isinstance(value, str) else None

    @on(Select.Changed)
    def _filter_changed(self, _event: Select.Changed) -> None:
        self.load()

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        if self._pacer.should_reload(groups_token(snap.groups_by_state, snap.realized_pnl)):
            self.load()

    @work(exclusive=True, group="history")
    async def load(self) -> None:
        self._pacer.loaded()
        try:
            rows = await self._reader.history(pair=self.pair, state=self.state, limit=LIMIT)
        except ReadFailed as exc:  # shown, and read again later: the workstation stays up
            self._pacer.failed()
            self.query_one("#history-totals", Static).update(Text(f" {exc}", style="bold red"))
            return
        self.loads += 1
        self.rows = rows
        self.query_one("#history-totals", Static).update(totals(rows))
        table_rows: list[Row] = []
        for r in rows:
            closed = r.get("closed_at_ms")
            held = fmt.duration(closed - r["opened_at_ms"]) if closed else "-"
            table_rows.append((
                str(r["group_id"]),
                (
                    fmt.timestamp(r["opened_at_ms"])[:19],
                    str(r["group_id"]),
                    str(r["pair"]),
                    f"{r['buy_venue']}>{r['sell_venue']}",
                    fmt.qty(str(r["target_qty"])),
                    fmt.group_state(str(r["state"])),
                    held,
                    Text(f"{float(r.get('expected_edge_bps') or 0):.1f}", justify="right"),
                    fmt.money(r.get("realized_pnl")),
                    Text(fmt.qty(str(r.get("fees") or "0"))[:8], justify="right"),
                ),
            ))
        self.query_one("#history-table", SyncedTable).sync(table_rows)

    @on(DataTable.RowSelected, "#history-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(OpenGroup(event.row_key.value))

