"""Hedge groups pane: groups in flight first, then the most recent closed ones.

Each row shows the legs with their fill progress, so a leg that is stuck or partly filled
is visible without opening the group (Enter opens its timeline).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from engine.snapshot import GroupRow, LegRow, RuntimeSnapshot
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.synced_table import Row, SyncedTable, set_subtitle

COLUMNS = [
    ("pair", "Pair", 4),
    ("route", "Buy>Sell", 11),
    ("state", "State", 12),
    ("pnl", "PnL", 8),  # before the legs: an 80-column terminal still shows it
    ("legs", "Legs (filled/qty)", 38),
    ("age", "Age", 7),
    ("edge", "Exp bp", 6),
    ("group", "Group", 12),
    ("opened", "Opened", 8),
]


def legs_text(group: GroupRow) -> Text:
    """Entry legs as `B mt5 0.01/0.01`, colored by their order state; extra orders as `+N`."""
    entries = [leg for leg in group.legs if leg.purpose == "entry"]
    if not entries:
        return Text("pending", style="dim")
    text = Text()
    for i, leg in enumerate(entries):
        if i:
            text.append("  ")
        text.append(_leg(leg), style=fmt.ORDER_STYLES.get(leg.state, "cyan"))
    extra = len(group.legs) - len(entries)
    if extra:
        text.append(f" +{extra}", style="bold yellow")
    return text


def _leg(leg: LegRow) -> str:
    return f"{leg.side[:1].upper()} {leg.venue} {fmt.qty(leg.filled)}/{fmt.qty(leg.qty)}"


class GroupsPane(Vertical):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pair_filter: str = ""

    def compose(self) -> ComposeResult:
        yield SyncedTable(COLUMNS, id="groups-table")

    def on_mount(self) -> None:
        self.border_title = "Hedge groups (in flight first)"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        by_state = "  ".join(f"{k} {v}" for k, v in sorted((str(k), v) for k, v in snap.groups_by_state.items()))
        set_subtitle(self, f"in flight {snap.open_groups}  {by_state}" if by_state else "none yet")
        rows: list[Row] = []
        for g in snap.groups:
            if not fmt.pair_matches(g.pair, self.pair_filter):
                continue
            in_flight = g.state in fmt.OPEN_GROUP_STATES
            if in_flight:
                age = Text(fmt.duration(max(0, snap.ts_ms - g.opened_ms)), style="bold cyan", justify="right")
            else:
                age = Text(fmt.duration(max(0, g.closed_ms - g.opened_ms)), style="dim", justify="right")
            rows.append((
                g.key,
                (
                    g.pair,
                    f"{g.buy_venue}>{g.sell_venue}",
                    fmt.group_state(g.state),
                    fmt.money(g.realized_pnl) if g.realized_pnl else Text("-", style="dim", justify="right"),
                    legs_text(g),
                    age,
                    Text(f"{g.expected_edge_bps:.1f}", justify="right"),
                    g.key,
                    fmt.clock(g.opened_ms),
                ),
            ))
        self.query_one(SyncedTable).sync(rows)
