"""Settings screen: the runtime settings (engine.steering) with validated inputs, a live diff of
what would change, and a confirmation before anything is sent.

Each steerable key has a row: its dotted name, the value in force and the config file's, an
input (a switch for a pair) checked as it is typed against the key's range, and that range.
`ctrl+s` (or the Review button) checks every row and the reason, then asks for confirmation
with the diff; confirmed, the screen posts `ApplySettings` and the app makes the same
`Steering.set` calls as `quantarb set` and `POST /api/set` (source `tui`). The screen never
changes the engine itself; the app tells it the outcome (`applied`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Footer, Input, Static, Switch

from core.runtime_settings import (
    InvalidSetting,
    SettingSpec,
    SettingValue,
    check_reason,
    diff,
    format_value,
)
from engine.snapshot import RuntimeSnapshot
from engine.steering import SettingsControl
from quantarb_tui.screens.messages import RefreshNow
from quantarb_tui.screens.modals import ConfirmModal
from quantarb_tui.widgets.status_bar import StatusBar


class ApplySettings(Message):
    """The operator confirmed these changes: (key, value text) in order, with one reason."""

    def __init__(self, changes: list[tuple[str, str]], reason: str) -> None:
        super().__init__()
        self.changes = changes
        self.reason = reason


class RangeValidator(Validator):
    """An input's text against its key's parser: the failure says the allowed range."""

    def __init__(self, spec: SettingSpec) -> None:
        super().__init__()
        self.spec = spec

    def validate(self, value: str) -> ValidationResult:
        try:
            self.spec.parse(value)
        except InvalidSetting as exc:
            return self.failure(exc.reason)
        return self.success()


def diff_text(changes: list[tuple[str, SettingValue, SettingValue]]) -> Text:
    """`key  old -> new`, one line each (the screen's diff and the confirmation's body)."""
    text = Text()
    width = max((len(k) for k, _, _ in changes), default=0)
    for i, (key, old, new) in enumerate(changes):
        if i:
            text.append("\n")
        text.append(f"{key:<{width}}  ", style="bold")
        text.append(format_value(old), style="red")
        text.append(" -> ")
        text.append(format_value(new), style="green")
    return text


class SettingsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "review", "Review & apply"),
    ]

    def __init__(self, settings: SettingsControl) -> None:
        super().__init__()
        self._settings = settings
        self._specs = settings.specs()
        self._keys = list(self._specs)
        self.errors: dict[str, str] = {}
        # The value in force each row was last filled with: a row still showing it is untouched,
        # and follows a change made elsewhere (CLI, API) instead of proposing to undo it.
        self._filled: dict[str, SettingValue] = settings.current()

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("Runtime settings: in force at the next decision, journaled in the ledger",
                     id="settings-title")
        current = self._settings.current()
        listed = {row["key"]: row for row in self._settings.settings()}
        with VerticalScroll(id="settings-rows"):
            for i, key in enumerate(self._keys):
                spec = self._specs[key]
                with Horizontal(classes="setting-row"):
                    yield Static(key, classes="setting-key")
                    yield Static(self._now_text(key, current, listed), id=f"setting-now-{i}",
                                 classes="setting-now")
                    if spec.kind == "bool":
                        value = current[key]
                        assert isinstance(value, bool)
                        yield Switch(value=value, id=f"setting-{i}", classes="setting-input")
                    else:
                        yield Input(format_value(current[key]), id=f"setting-{i}", classes="setting-input",
                                    validators=[RangeValidator(spec)], valid_empty=False)
                    yield Static(spec.range_text(), id=f"setting-range-{i}", classes="setting-range")
        with Vertical(id="settings-bottom"):
            yield Static("", id="settings-diff")
            yield Input(placeholder="reason (required, journaled with the change)", id="settings-reason")
            yield Static("", id="settings-error")
            with Horizontal(id="settings-buttons"):
                yield Button("Review & apply (ctrl+s)", id="settings-review", variant="warning")
                yield Button("Back (esc)", id="settings-back")
        yield Footer()

    def on_mount(self) -> None:
        self.query(".setting-input").first().focus()
        self._show_diff()
        self.post_message(RefreshNow())  # the status bar at once, not at the next tick

    def update_from(self, snap: RuntimeSnapshot) -> None:
        """The app's refresh: the status bar, and the values in force (a change made from the
        CLI or the API meanwhile shows here)."""
        self.query_one(StatusBar).update_from(snap)
        self._show_now()

    @staticmethod
    def _now_text(key: str, current: dict[str, SettingValue], listed: dict[str, dict[str, Any]]) -> str:
        return f"now {format_value(current[key])}  file {listed[key]['config']}"

    def _show_now(self) -> None:
        current = self._settings.current()
        listed = {row["key"]: row for row in self._settings.settings()}
        followed = False
        for i, key in enumerate(self._keys):
            text = self._now_text(key, current, listed)
            label = self.query_one(f"#setting-now-{i}", Static)
            if str(label.render()) != text:  # repaint only what changed
                label.update(text)
            if current[key] != self._filled[key]:
                followed |= self._follow(i, key, current[key])
        if followed:
            self._show_diff()

    def _follow(self, i: int, key: str, value: SettingValue) -> bool:
        """A row the operator has not edited takes the value now in force."""
        widget = self.query_one(f"#setting-{i}")
        untouched = (widget.value == self._filled[key] if isinstance(widget, Switch)
                     else isinstance(widget, Input) and widget.value == format_value(self._filled[key]))
        self._filled[key] = value
        if not untouched:
            return False
        with widget.prevent(Input.Changed, Switch.Changed):
            if isinstance(widget, Switch):
                assert isinstance(value, bool)
                widget.value = value
            elif isinstance(widget, Input):
                widget.value = format_value(value)
        return True

    # -- reading the rows --------------------------------------------------------------
    def proposed(self) -> dict[str, SettingValue]:
        """Every row's value that parses; rows that do not are in `errors`."""
        out: dict[str, SettingValue] = {}
        self.errors = {}
        for i, key in enumerate(self._keys):
            widget = self.query_one(f"#setting-{i}")
            if isinstance(widget, Switch):
                out[key] = widget.value
                continue
            assert isinstance(widget, Input)
            try:
                out[key] = self._specs[key].parse(widget.value)
            except InvalidSetting as exc:
                self.errors[key] = exc.reason
        return out

    def changes(self) -> list[tuple[str, SettingValue, SettingValue]]:
        return diff(self._settings.current(), self.proposed())

    def _show_diff(self) -> None:
        changes = self.changes()
        shown = Text("changes: ", style="dim")
        if changes:
            shown.append("\n")
            shown.append_text(diff_text(changes))
        else:
            shown.append("none")
        self.query_one("#settings-diff", Static).update(shown)
        for i, key in enumerate(self._keys):
            rng = self.query_one(f"#setting-range-{i}", Static)
            error = self.errors.get(key)
            rng.set_class(error is not None, "-invalid")
            rng.update(error if error is not None else self._specs[key].range_text())

    @on(Input.Changed, ".setting-input")
    @on(Switch.Changed)
    def _edited(self) -> None:
        self._show_diff()
        self.show_error("")

    def show_error(self, message: str, *, ok: bool = False) -> None:
        line = self.query_one("#settings-error", Static)
        line.set_class(ok, "-ok")
        line.update(message)

    # -- review, confirm, apply --------------------------------------------------------
    def action_review(self) -> None:
        changes = self.changes()
        if self.errors:
            self.show_error("fix first: " + "; ".join(f"{k}: {r}" for k, r in self.errors.items()))
            return
        if not changes:
            self.show_error("nothing to apply: no value differs from the one in force")
            return
        try:
            reason = check_reason(self.query_one("#settings-reason", Input).value)
        except InvalidSetting as exc:
            self.show_error(f"reason: {exc.reason}")
            self.query_one("#settings-reason", Input).focus()
            return
        body = diff_text(changes)
        body.append(f"\n\nreason: {reason}\nJournaled in the ledger, then in force at the next decision.")
        pending = [(key, format_value(new)) for key, _, new in changes]

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.show_error("applying…", ok=True)
                self.post_message(ApplySettings(pending, reason))

        self.app.push_screen(ConfirmModal("settings", "APPLY SETTINGS", body.plain, confirm_label="Apply"),
                             answered)

    @on(Input.Submitted, "#settings-reason")
    def _reason_done(self) -> None:
        self.action_review()

    @on(Button.Pressed, "#settings-review")
    def _review_pressed(self) -> None:
        self.action_review()

    @on(Button.Pressed, "#settings-back")
    def _back_pressed(self) -> None:
        self.action_back()

    def applied(self, done: list[str], refusal: str | None) -> None:
        """The app's word on an `ApplySettings`: what changed, and why it stopped (if it did).
        The rows show the values now in force; a refusal stays on screen."""
        self._show_now()
        if refusal is None:
            self.query_one("#settings-reason", Input).value = ""
        self._show_diff()
        if refusal is not None:
            self.show_error(refusal)
        else:
            self.show_error("applied: " + ", ".join(done), ok=True)

    def action_back(self) -> None:
        self.dismiss(None)
