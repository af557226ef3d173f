"""The pair filter (`/`): an input that appears above the panes and narrows them by pair."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input


class FilterBar(Input):
    """Hidden until `/`; Enter keeps the filter and hides the bar, Escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter", show=True)]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(placeholder="filter pairs (e.g. BTC or 'btc eth'), Enter keeps, Esc clears",
                         **kwargs)  # type: ignore[arg-type]

    def action_clear(self) -> None:
        self.value = ""
        self.post_message(self.Submitted(self, ""))
