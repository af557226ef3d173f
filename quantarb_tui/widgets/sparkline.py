"""Edge sparklines: a small ring buffer per edge key, fed from successive snapshots.

The engine keeps no history for the views; each refresh appends the edge it shows when it
changed, so the sparkline is the recent path of that edge without any engine change.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text

from quantarb_tui.widgets import format as fmt

BLOCKS = "▁▂▃▄▅▆▇█"


class EdgeHistory:
    """The last `width` distinct values of every edge key."""

    def __init__(self, width: int = 8) -> None:
        self.width = width
        self._values: dict[str, deque[float]] = {}

    def push(self, key: str, value: float | None) -> None:
        if value is None:
            return
        values = self._values.get(key)
        if values is None:
            values = self._values[key] = deque(maxlen=self.width)
        if not values or values[-1] != value:
            values.append(value)

    def values(self, key: str) -> tuple[float, ...]:
        return tuple(self._values.get(key, ()))

    def render(self, key: str, threshold: float) -> Text:
        """Blocks scaled to the buffer's range; the last block colored against the threshold."""
        values = self.values(key)
        if not values:
            return Text("")
        low, high = min(values), max(values)
        span = high - low
        text = Text()
        for i, value in enumerate(values):
            level = 0 if span <= 0 else round((value - low) / span * (len(BLOCKS) - 1))
            style = fmt.edge_style(value, threshold)
            if i < len(values) - 1:
                style = style.replace("bold ", "")
            text.append(BLOCKS[level], style=style)
        return text
