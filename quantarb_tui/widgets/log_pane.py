"""Log pane: the tail of the engine's notable events, bounded so a long session never grows.

A fixed-size tail rather than a scrolling log: appending lines repaints this pane alone,
where a scrolling log changes its virtual size on every write and so re-lays out the whole
screen five times a second (the cost that delayed key presses at 160x48). The full history
is in the ledger (`quantarb ledger show`) and, unattended, in `quantarb headless`'s output.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widgets import Static

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt

LEVEL_STYLES = {"info": "", "warn": "yellow", "error": "bold red"}


class LogPane(Static):
    def __init__(self, max_lines: int = 200, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.lines: deque[Text] = deque(maxlen=max_lines)
        self._seen = 0
        self._shown_height = -1

    def on_mount(self) -> None:
        self.border_title = "Log"

    def on_resize(self) -> None:
        self._render_tail(force=True)

    def update_from(self, snap: RuntimeSnapshot) -> None:
        new = snap.log_total - self._seen
        if new <= 0:
            return
        for event in snap.log[-new:]:
            line = Text(f"{fmt.clock(event.ts_ms)} ", style="dim", no_wrap=True, overflow="ellipsis")
            line.append(event.text, style=LEVEL_STYLES.get(event.level, ""))
            self.lines.append(line)
        self._seen = snap.log_total
        self._render_tail()

    def _render_tail(self, force: bool = False) -> None:
        height = max(1, self.content_size.height)
        if not self.lines and not force:
            return
        tail = list(self.lines)[-height:]
        self._shown_height = height
        self.update(Text("\n").join(tail), layout=False)
