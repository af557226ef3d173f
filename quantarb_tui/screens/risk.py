"""Risk screen: each limit with its current use, each venue's balance and margin, each breaker with
its state, recent risk events."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.screens.messages import CancelOrphansAsked, RefreshNow
from quantarb_tui.widgets.balances_pane import BalancesPane
from quantarb_tui.widgets.breakers_pane import BreakersPane
from quantarb_tui.widgets.limits_pane import LimitsPane
from quantarb_tui.widgets.risk_events_pane import RiskEventsPane
from quantarb_tui.widgets.status_bar import StatusBar


class RiskScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("o", "cancel_orphans", "Cancel orphans"),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="risk-summary")
        yield LimitsPane(id="limits")
        yield BalancesPane(id="balances")
        yield BreakersPane(id="breakers")
        yield RiskEventsPane(id="risk-events")
        yield Footer()

    def on_mount(self) -> None:
        self.post_message(RefreshNow())  # show the engine state at once, not at the next tick

    def action_back(self) -> None:
        self.dismiss(None)

    def action_cancel_orphans(self) -> None:
        """Cancel the quarantined open orders, after a list and a confirmation (the app acts)."""
        self.post_message(CancelOrphansAsked())

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        summary = Text(" trading ", style="dim")
        summary.append(snap.trading_state.upper(), style="bold")
        if snap.state_reason:
            summary.append(f" ({snap.state_reason})")
        summary.append("   blocked venues ", style="dim")
        summary.append(", ".join(snap.blocked_venues) or "none", style="bold red" if snap.blocked_venues else "")
        if snap.quarantined:  # live: orders on a venue that quantarb does not own (never adopted)
            summary.append("   quarantined ", style="dim")
            summary.append(", ".join(snap.quarantined[:4]) + (" ..." if len(snap.quarantined) > 4 else ""),
                           style="bold yellow")
            summary.append(" (o cancels)", style="dim")
        summary.append("   k kill  f flatten  p pause/resume  r rearm", style="dim")
        self.query_one("#risk-summary", Static).update(summary, layout=False)
        self.query_one(LimitsPane).update_from(snap)
        self.query_one(BalancesPane).update_from(snap)
        self.query_one(BreakersPane).update_from(snap)
        self.query_one(RiskEventsPane).update_from(snap)
