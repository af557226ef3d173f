"""What a screen asks of the app, as Textual Messages: screens never import or call the App.

The app owns the engine and the screen stack; a screen says what it needs (a group opened,
the view refreshed now rather than at the next tick) and the app decides how.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class OpenGroup(Message):
    """The operator chose a hedge group (a row of the groups, compensation or history table)."""

    def __init__(self, group_id: str) -> None:
        super().__init__()
        self.group_id = group_id


class RefreshNow(Message):
    """Show the engine's state at once (a screen just opened, a filter changed)."""


class CloseGroupAsked(Message):
    """The operator asked to close a group's legs (the detail screen's `c`); `detail` is its
    ledger story as shown, for the confirmation's list of legs."""

    def __init__(self, group_id: str, detail: dict[str, Any] | None) -> None:
        super().__init__()
        self.group_id = group_id
        self.detail = detail


class CancelOrphansAsked(Message):
    """The operator asked to cancel the quarantined orders (the risk screen's `o`)."""
