"""QuantArbApp: the Textual workstation over a Runtime.

The app owns no engine state: it starts the runtime, pulls a snapshot on a timer (<= 10 Hz)
and hands it to the screen, which updates only changed cells in one batch. Quitting stops
the engine first (groups in flight settle), then exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from quantarb_tui.runtime import LedgerRefused, Runtime, RuntimeFailure
from quantarb_tui.screens.main import MainScreen

MAX_REFRESH_HZ = 10.0


class QuantArbApp(App[int]):
    CSS_PATH = Path(__file__).with_name("quantarb.tcss")
    TITLE = "quantarb"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self, runtime: Runtime, *, autostart: bool = True, refresh_hz: float | None = 5.0
    ) -> None:
        """`refresh_hz=None` turns the timer off: deterministic tests call `refresh_view()`."""
        super().__init__()
        self.runtime = runtime
        self._autostart = autostart
        self._refresh_s = None if refresh_hz is None else 1.0 / min(refresh_hz, MAX_REFRESH_HZ)
        self.refreshes = 0

    def on_mount(self) -> None:
        self.push_screen(MainScreen())

    async def on_ready(self) -> None:
        self.refresh_view()
        if self._refresh_s is not None:
            self.set_interval(self._refresh_s, self.refresh_view, name="snapshot-refresh")
        if self._autostart:
            try:
                await self.runtime.start()
            except LedgerRefused as exc:
                self.exit(2, return_code=2, message=f"quantarb: {exc}")
            except RuntimeFailure as exc:
                self.exit(3, return_code=3, message=f"quantarb: {exc}")

    def refresh_view(self) -> None:
        """Pull one snapshot and apply it to the visible screen in a single batch."""
        screen = self.screen
        if not isinstance(screen, MainScreen):
            return
        snap = self.runtime.snapshot()
        with self.batch_update():
            screen.update_from(snap)
        self.refreshes += 1

    async def action_quit(self) -> None:
        await self.runtime.stop()
        self.exit(0)
