"""The main screen: status, venues, positions, quotes, edges, groups, compensation and the log.

Responsive through the app's breakpoint classes on the screen (`-narrow`/`-wide`,
`-short`/`-tall`, see quantarb.tcss): at 80x24 the quotes, compensation and log panes fold
away, the venues pane narrows beside the positions, and the status bar is one row; at 160x48
everything shows.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.screens.messages import OpenGroup, RefreshNow
from quantarb_tui.widgets.compensation_pane import CompensationPane
from quantarb_tui.widgets.edges_pane import EdgesPane
from quantarb_tui.widgets.filter_bar import FilterBar
from quantarb_tui.widgets.groups_pane import GroupsPane
from quantarb_tui.widgets.log_pane import LogPane
from quantarb_tui.widgets.positions_pane import PositionsPane
from quantarb_tui.widgets.quotes_pane import QuotesPane
from quantarb_tui.widgets.status_bar import StatusBar
from quantarb_tui.widgets.synced_table import SyncedTable
from quantarb_tui.widgets.venues_pane import VenuesPane


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("slash", "filter", "Filter")]

    def __init__(self) -> None:
        super().__init__()
        self.pair_filter = ""
        self._group_of_action: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield FilterBar(id="filter")
        with Horizontal(id="top"):
            yield VenuesPane(id="venues")
            yield PositionsPane(id="positions")
        with Horizontal(id="market"):
            yield QuotesPane(id="quotes")
            yield EdgesPane(id="edges")
        yield GroupsPane(id="groups")
        with Horizontal(id="bottom"):
            yield CompensationPane(id="compensation")
            yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#groups-table", SyncedTable).focus()

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        self.query_one(VenuesPane).update_from(snap)
        self.query_one(PositionsPane).update_from(snap)
        self.query_one(QuotesPane).update_from(snap)
        self.query_one(EdgesPane).update_from(snap)
        self.query_one(GroupsPane).update_from(snap)
        self.query_one(CompensationPane).update_from(snap)
        self.query_one(LogPane).update_from(snap)
        self._group_of_action = {c.key: c.group_id for c in snap.compensation}

    # -- filter ----------------------------------------------------------------------
    def action_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one(FilterBar).focus()

    def set_pair_filter(self, pattern: str) -> None:
        self.pair_filter = pattern.strip()
        for pane in (self.query_one(QuotesPane), self.query_one(EdgesPane), self.query_one(GroupsPane),
                     self.query_one(CompensationPane)):
            pane.pair_filter = self.pair_filter
        self.post_message(RefreshNow())

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_pair_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.set_pair_filter(event.value)
        self.remove_class("-filtering")
        self.focus_groups()

    # -- groups ----------------------------------------------------------------------
    def focus_groups(self) -> None:
        self.query_one("#groups-table", SyncedTable).focus()

    def selected_group(self) -> str | None:
        return self.query_one("#groups-table", SyncedTable).selected_key

    @on(DataTable.RowSelected, "#groups-table")
    def _group_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(OpenGroup(event.row_key.value))

    @on(DataTable.RowSelected, "#compensation-table")
    def _action_selected(self, event: DataTable.RowSelected) -> None:
        group_id = self._group_of_action.get(event.row_key.value or "")
        if group_id is not None:
            self.post_message(OpenGroup(group_id))

