"""Log pane: notable engine events, bounded so a long session never grows memory."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from quantarb_tui.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt

LEVEL_STYLES = {"info": "", "warn": "yellow", "error": "bold red"}


class LogPane(RichLog):
    def __init__(self, max_lines: int = 200, **kwargs: object) -> None:
        super().__init__(max_lines=max_lines, wrap=False, markup=False, **kwargs)  # type: ignore[arg-type]
        self._seen = 0

    def on_mount(self) -> None:
        self.border_title = "Log"

    def update_from(self, snap: RuntimeSnapshot) -> None:
        new = snap.log_total - self._seen
        if new <= 0:
            return
        for event in snap.log[-new:]:
            line = Text(f"{fmt.clock(event.ts_ms)} ", style="dim")
            line.append(event.text, style=LEVEL_STYLES.get(event.level, ""))
            self.write(line)
        self._seen = snap.log_total
