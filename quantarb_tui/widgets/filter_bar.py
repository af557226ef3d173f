"""The pair filter (`/`): an input that appears above the panes and narrows them by pair.

It is not a dialog's text field: `k` stays the kill key while it has the focus (README.md,
Over SSH). Matching is case-blind, so `K` still types a k into a pattern.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

KILL_KEY = "k"  # the app's kill binding: it must win in the filter box too


class FilterBar(Input):
    """Hidden until `/`; Enter keeps the filter and hides the bar, Escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter", show=True)]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(placeholder="filter pairs (e.g. BTC or 'btc eth'), Enter keeps, Esc clears",
                         **kwargs)  # type: ignore[arg-type]

    def action_clear(self) -> None:
        self.value = ""
        self.post_message(self.Submitted(self, ""))

    def check_consume_key(self, key: str, character: str | None) -> bool:
        """Every printable key is text except the kill key, left to the app's binding."""
        return key != KILL_KEY and super().check_consume_key(key, character)
