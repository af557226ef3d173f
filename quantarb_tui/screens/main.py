"""The main screen: status, quotes, edges, hedge groups and the log on one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer

from quantarb_tui.snapshot import RuntimeSnapshot
from quantarb_tui.widgets.edges_pane import EdgesPane
from quantarb_tui.widgets.groups_pane import GroupsPane
from quantarb_tui.widgets.log_pane import LogPane
from quantarb_tui.widgets.quotes_pane import QuotesPane
from quantarb_tui.widgets.status_bar import StatusBar
from quantarb_tui.widgets.venues_pane import VenuesPane


class MainScreen(Screen[None]):
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="market"):
            with Vertical(id="left"):
                yield QuotesPane(id="quotes")
                yield VenuesPane(id="venues")
            yield EdgesPane(id="edges")
        yield GroupsPane(id="groups")
        yield LogPane(id="log")
        yield Footer()

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        self.query_one(QuotesPane).update_from(snap)
        self.query_one(VenuesPane).update_from(snap)
        self.query_one(EdgesPane).update_from(snap)
        self.query_one(GroupsPane).update_from(snap)
        self.query_one(LogPane).update_from(snap)
