"""Group detail (Enter on a group): the group's story from the ledger.

Decision, intent, orders with their fills and slippage, compensation, PnL, expected versus
realized edge, and the journal timeline. The ledger is read in a worker (never on the UI's
path); while the group is in flight the screen reloads whenever its state changes.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.control import EngineReader, ReadFailed
from engine.snapshot import GroupRow, RuntimeSnapshot
from quantarb_tui.screens.messages import CloseGroupAsked, RefreshNow
from quantarb_tui.screens.reload_pacer import ReloadPacer
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.groups_pane import legs_text
from quantarb_tui.widgets.status_bar import StatusBar
from quantarb_tui.widgets.synced_table import Row, SyncedTable

RETRY_S = 2.0  # a read that failed (ReadFailed) is tried again on the first snapshot after this

ORDER_COLUMNS = [
    ("purpose", "Purpose", 11),
    ("venue", "Venue", 7),
    ("side", "Side", 4),
    ("qty", "Qty", 9),
    ("price", "Limit", 10),
    ("filled", "Filled", 9),
    ("avg", "Avg fill", 10),
    ("slip", "Slip bp", 7),
    ("state", "State", 16),
    ("fills", "Fills", 5),
    ("cid", "Client order id", 20),
]

COMP_COLUMNS = [
    ("time", "Time", 12),
    ("kind", "Action", 11),
    ("outcome", "Outcome", 9),
    ("reason", "Reason", 40),
]

TIMELINE_COLUMNS = [
    ("time", "Time", 12),
    ("kind", "Event", 13),
    ("text", "What happened", 110),
]

_LONG_FLOAT = re.compile(r"(\d+\.\d{2})\d{3,}")


def _short(text: str) -> str:
    """Round the journal's full-precision floats for reading (the ledger keeps them)."""
    return _LONG_FLOAT.sub(r"\1", text)


def _avg_fill(order: dict[str, Any]) -> Decimal | None:
    qty = Decimal(0)
    value = Decimal(0)
    for fill in order.get("fills", []):
        q = Decimal(fill["qty"])
        qty += q
        value += q * Decimal(fill["price"])
    return value / qty if qty else None


def slippage_bps(side: str, limit: Decimal, avg: Decimal | None) -> float | None:
    """Adverse slippage of a fill against its limit, in bps (positive = paid more / got less)."""
    if avg is None or limit <= 0:
        return None
    diff = (avg - limit) if side == "buy" else (limit - avg)
    return float(diff / limit * 10_000)


def realized_edge_bps(detail: dict[str, Any]) -> float | None:
    """Net PnL over the bought notional: comparable to the expected edge (also net of fees)."""
    group = detail["group"]
    intent = detail.get("intent") or {}
    pnl = fmt.decimal(group.get("realized_pnl"))
    qty = fmt.decimal(group.get("target_qty"))
    buy_price = intent.get("buy_price")
    if not detail["pnl"].get("closed") or pnl is None or not qty or not buy_price:
        return None
    return float(pnl / (qty * Decimal(str(buy_price))) * 10_000)


class GroupDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
        Binding("c", "close_group", "Close group"),
    ]

    def __init__(self, group_id: str, reader: EngineReader) -> None:
        super().__init__()
        self._reader = reader
        self.group_id = group_id
        self.detail: dict[str, Any] | None = None
        self.loads = 0
        self._loaded_state: str | None = None
        self._row: GroupRow | None = None
        self._retry = ReloadPacer(RETRY_S)  # a failed read is tried again, at most this often
        self._loading = False  # a read is running (in a thread: never two at once)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Vertical(id="detail"):
            yield Static(f"Group {self.group_id}", id="detail-title")
            with Horizontal(id="detail-top"):
                yield Static("loading…", id="detail-summary")
                yield Static("", id="detail-pnl")
            with Vertical(id="detail-orders", classes="pane"):
                yield SyncedTable(ORDER_COLUMNS, id="orders-table")
            with Vertical(id="detail-compensation", classes="pane"):
                yield SyncedTable(COMP_COLUMNS, id="detail-compensation-table")
            with Vertical(id="detail-timeline", classes="pane"):
                yield SyncedTable(TIMELINE_COLUMNS, id="timeline-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-orders").border_title = "Orders and fills"
        self.query_one("#detail-compensation").border_title = "Compensation"
        self.query_one("#detail-timeline").border_title = "Timeline (ledger journal)"
        self.query_one("#timeline-table", SyncedTable).focus()
        self.load()
        self.post_message(RefreshNow())  # show the engine state at once, not at the next tick

    def action_back(self) -> None:
        self.dismiss(None)

    def action_close_group(self) -> None:
        """Both legs back at market, after a typed confirmation (the app asks and acts)."""
        self.post_message(CloseGroupAsked(self.group_id, self.detail))

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        row = next((g for g in snap.groups if g.key == self.group_id), None)
        if row is not None:
            self._row = row
        if self._loading:
            # One read at a time: it runs in a thread (ViewModel.group_detail), which a newer
            # one cannot cancel; the state it reads is compared when it is done.
            return
        if row is not None and self._loaded_state is not None and row.state != self._loaded_state:
            self.load()  # the group moved on: read its story again
        elif self._retry.should_reload(None):
            self.load()  # the last read failed: try again (the ledger may be readable now)

    @work(exclusive=True, group="group-detail")
    async def load(self) -> None:
        """Read the group from the ledger (in a worker) and show it."""
        self._retry.loaded()
        self._loading = True
        try:
            detail = await self._reader.group_detail(self.group_id)
        except ReadFailed as exc:  # shown, and read again later: the workstation stays up
            self._retry.failed()
            self.query_one("#detail-summary", Static).update(Text(str(exc), style="bold red"))
            return
        finally:
            self._loading = False
        self.loads += 1
        self.detail = detail
        if detail is None:
            self._show_missing()
            return
        self._loaded_state = str(detail["group"]["state"])
        self._show(detail)

    def _show_missing(self) -> None:
        row = self._row
        summary = Text("The ledger has no record of this group (yet).", style="yellow")
        if row is not None:
            summary.append(f"\n{row.pair} buy {row.buy_venue} sell {row.sell_venue}  state ")
            summary.append_text(fmt.group_state(row.state))
            summary.append("\nlegs ")
            summary.append_text(legs_text(row))
            self._loaded_state = row.state
        self.query_one("#detail-summary", Static).update(summary)

    def _show(self, detail: dict[str, Any]) -> None:
        group = detail["group"]
        decision = detail.get("decision") or {}
        state = str(group["state"])
        title = Text(f"Group {group['group_id']}  ", style="bold")
        title.append(f"{group['pair']}  buy {group['buy_venue']} > sell {group['sell_venue']}  ")
        title.append_text(fmt.group_state(state))
        self.query_one("#detail-title", Static).update(title)

        summary = Text()
        summary.append("decision   ", style="dim")
        if decision:
            summary.append(f"{decision.get('outcome')} ({decision.get('reason')}) at "
                           f"{fmt.timestamp(decision.get('ts_ms'))}, edge {float(decision.get('edge_bps', 0)):.2f} bps")
        else:
            summary.append("-")
        summary.append("\nopened     ", style="dim")
        summary.append(fmt.timestamp(group.get("opened_at_ms")))
        summary.append("\nclosed     ", style="dim")
        closed = group.get("closed_at_ms")
        summary.append(fmt.timestamp(closed) if closed else "in flight")
        if closed:
            summary.append(f" (held {fmt.duration(closed - group['opened_at_ms'])})", style="dim")
        summary.append("\nquantity   ", style="dim")
        summary.append(f"{fmt.qty(str(group.get('target_qty')))} (base units)")
        self.query_one("#detail-summary", Static).update(summary)

        expected = float(group.get("expected_edge_bps") or 0.0)
        realized = realized_edge_bps(detail)
        pnl = Text()
        pnl.append("expected edge  ", style="dim")
        pnl.append(f"{expected:+.2f} bps")
        pnl.append("\nrealized edge  ", style="dim")
        if realized is None:
            pnl.append("-", style="dim")
        else:
            pnl.append(f"{realized:+.2f} bps", style="green" if realized >= 0 else "red")
            pnl.append("\nslippage       ", style="dim")
            slip = expected - realized
            pnl.append(f"{slip:+.2f} bps", style="red" if slip > 0.5 else "")
        pnl.append("\nrealized PnL   ", style="dim")
        pnl.append_text(fmt.money(detail["pnl"].get("realized_pnl"), signed=True, cell=False))
        pnl.append("\nfees           ", style="dim")
        fees = detail["pnl"].get("fees_by_ccy") or {}
        pnl.append("  ".join(f"{fmt.qty(v)} {ccy}" for ccy, v in fees.items()) or "-")
        self.query_one("#detail-pnl", Static).update(pnl)

        orders: list[Row] = []
        for o in detail["orders"]:
            avg = _avg_fill(o)
            slip_bps = slippage_bps(o["side"], Decimal(o["price"]), avg)
            orders.append((
                o["order_id"],
                (
                    o["purpose"],
                    o["venue"],
                    o["side"],
                    fmt.qty(o["qty"]),
                    fmt.qty(o["price"]),
                    fmt.qty(o["filled_qty"]),
                    "-" if avg is None else fmt.price(float(avg)),
                    Text("-" if slip_bps is None else f"{slip_bps:+.1f}", justify="right",
                         style="red" if slip_bps is not None and slip_bps > 0.5 else ""),
                    fmt.order_state(o["state"]),
                    str(len(o.get("fills", []))),
                    o["client_order_id"],
                ),
            ))
        self.query_one("#orders-table", SyncedTable).sync(orders)

        actions: list[Row] = []
        for a in detail["compensation"]:
            failed = a["kind"] == "escalate" or a.get("outcome") in ("rejected", "expired", "unknown", "failed")
            style = "bold red" if failed else ""
            actions.append((
                a["action_id"],
                (fmt.timestamp(a["created_at_ms"])[11:], Text(a["kind"], style=style),
                 Text(a.get("outcome") or "-", style=style), Text(a.get("reason") or "", style=style)),
            ))
        self.query_one("#detail-compensation", Vertical).set_class(not actions, "-empty")
        self.query_one("#detail-compensation-table", SyncedTable).sync(actions)

        timeline: list[Row] = []
        for event in detail["timeline"]:
            kind = str(event["kind"])
            style = "bold yellow" if kind == "compensation" else "cyan" if kind == "fill" else ""
            timeline.append((
                str(event["seq"]),
                (fmt.timestamp(event["ts_ms"])[11:], Text(kind, style=style), _short(str(event["text"]))),
            ))
        self.query_one("#timeline-table", SyncedTable).sync(timeline)

