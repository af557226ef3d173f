"""The status bar: trading state big and colored, mode, counters, PnL and the clock."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from quantarb_tui.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt


class StatusBar(Static):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self._shown: Text | None = None

    def update_from(self, snap: RuntimeSnapshot) -> None:
        state = snap.trading_state
        text = Text()
        text.append(" quantarb ", style="bold reverse")
        text.append(" ")
        text.append(f" {state.upper()} ", style=fmt.STATE_STYLES.get(state, "bold"))
        if snap.state_reason and state != "active":
            text.append(f" {snap.state_reason}", style="bold red" if state == "halted" else "yellow")
        text.append(f"  {snap.mode.upper()}", style="bold magenta")
        text.append(f"  open {snap.open_groups}", style="bold")
        pnl_style = "bold red" if snap.realized_pnl.startswith("-") else "bold green"
        text.append(f"  pnl {snap.realized_pnl}", style=pnl_style)
        text.append(f"  quotes {snap.quotes_total:,}  intents {snap.intents_total:,}", style="dim")
        text.append(f"  {fmt.clock(snap.ts_ms)} UTC", style="bold")
        if text != self._shown:
            self._shown = text
            self.update(text)
