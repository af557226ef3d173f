"""Modals for operator actions: confirm (kill, quit), typed confirm (flatten), reason (rearm), help.

The modals hold no engine logic: a confirm returns a bool; an input modal hands its value to
an async `submit` given by the app (the same runtime call the API and CLI make) and shows a
refusal's message in place, so the operator can correct it or press Escape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt

Submit = Callable[[str], Awaitable[str | None]]


class ConfirmModal(ModalScreen[bool]):
    """`y` or Enter confirms, `n` or Escape cancels. Buttons are for the mouse only (never
    focused), so Enter always means confirm, as the key list in README.md (Over SSH) promises."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Confirm"),
        Binding("enter", "confirm", "Confirm", show=False),
        Binding("n", "cancel", "Cancel"),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, kind: str, title: str, body: str, *, confirm_label: str = "Confirm") -> None:
        super().__init__(classes=f"modal-{kind}")
        self.kind = kind
        self._title = title
        self._body = body
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body")
            yield Static(Text.assemble(("y", "bold"), "/", ("Enter", "bold"), " confirm    ",
                                       ("n", "bold"), "/", ("Esc", "bold"), " cancel"), id="dialog-keys")
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self._confirm_label} (y)", id="confirm", variant="error")
                yield Button("Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")


def quit_question(snap: RuntimeSnapshot) -> str | None:
    """What quitting would leave behind, as the quit dialog's body; None: nothing, quit at once.

    Groups in flight settle before the engine stops; positions stay open on the venues."""
    parts: list[str] = []
    if snap.open_groups:
        parts.append(f"{snap.open_groups} hedge group(s) in flight: the engine stops taking new groups "
                     "and lets these settle before it exits.")
    if snap.positions:
        held = ", ".join(f"{p.venue} {p.asset} {fmt.qty(p.qty)}" for p in snap.positions)
        parts.append(f"Open positions: {held}.\nQuitting leaves them open (flatten first with f).")
    if not parts:
        return None
    return "\n".join(parts) + " Quit anyway?"


class SubmitModal(ModalScreen[bool]):
    """A modal whose `submit` (the app's runtime call) runs as a worker, so the UI and the refresh
    timer never wait on it: None dismisses the modal, a refusal is shown in `#dialog-error`."""

    def __init__(self, submit: Submit, *, classes: str) -> None:
        super().__init__(classes=classes)
        self._submit = submit
        self.busy = False
        self.error = ""

    def show_error(self, message: str) -> None:
        self.error = message
        self.query_one("#dialog-error", Static).update(message)

    @work(exclusive=True, group="modal-submit")
    async def _run(self, value: str) -> None:
        self.busy = True
        self.show_error("…")
        try:
            refusal = await self._submit(value)
        finally:
            self.busy = False
        if refusal is None:
            self.dismiss(True)
        else:
            self.show_error(refusal)


class InputModal(SubmitModal):
    """One input line; Enter submits it to `submit`, which returns None (done) or a refusal.

    With `word`, the value must be exactly that word (typed confirmation, e.g. FLATTEN)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        kind: str,
        title: str,
        body: str,
        submit: Submit,
        *,
        placeholder: str = "",
        word: str | None = None,
    ) -> None:
        super().__init__(submit, classes=f"modal-{kind}")
        self.kind = kind
        self._title = title
        self._body = body
        self._placeholder = placeholder
        self._word = word

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body")
            yield Input(placeholder=self._placeholder, id="dialog-input")
            yield Static("", id="dialog-error")
            yield Static(Text.assemble(("Enter", "bold"), " submit    ", ("Esc", "bold"), " cancel"),
                         id="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if self._word is not None and value != self._word:
            self.show_error(f"type {self._word} (capitals) and Enter to confirm, or Esc to cancel")
            return
        if not self.busy:
            self._run(value)

    def action_cancel(self) -> None:
        self.dismiss(False)


HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("k", "kill now (y/Enter confirms): every screen, the filter too"),
    ("ctrl+k", "kill too, even while typing in a dialog (k types there)"),
    ("f", "flatten: halt and close every exposure (type FLATTEN)"),
    ("p", "pause / resume new groups (nothing in flight is cancelled)"),
    ("r", "rearm after a halt (asks for a reason)"),
    ("enter", "details of the selected group: its timeline from the ledger"),
    ("c", "on a group's details: close its legs at market (type its id)"),
    ("/", "filter the panes by pair (Enter keeps, Esc clears)"),
    ("g", "hedge groups: focus the groups table"),
    ("l", "risk: limits, breakers, risk events"),
    ("o", "on the risk screen: cancel the quarantined orders (listed first)"),
    ("h", "history: closed groups with filters and totals"),
    ("a", "analytics: the equity curve and trade statistics"),
    ("s", "settings: threshold, cooldown, leg size, pairs (checked, diffed, confirmed)"),
    ("esc", "back to the main screen"),
    ("ctrl+p", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit; asks while groups are in flight or positions open"),
)


class HelpModal(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        text = Text()
        for i, (key, what) in enumerate(HELP_KEYS):
            if i:
                text.append("\n")
            text.append(f"{key:>7}  ", style="bold")
            text.append(what)
        with Vertical(id="dialog"):
            yield Static("Keys", id="dialog-title")
            yield Static(text, id="help-keys")
            yield Static(Text.assemble(("Esc", "bold"), " or ", ("?", "bold"), " closes"), id="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)
