"""The status bar: trading state big and colored (with its reason), mode, PnL, groups, clock.

Two children: the state badge (a colored block, three rows tall on a tall terminal, one row
on a short one) and the info lines. The first info line holds what matters at 80x24 (mode,
open groups, today's PnL, clock, reason); the others only show when there is room.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.widgets import Static

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt

STATES = ("active", "reducing", "paused", "halted")


class StatusBar(Horizontal):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._shown: tuple[str, Text] | None = None
        self.shown_state = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="state-badge")
        yield Static("", id="status-info")

    def update_from(self, snap: RuntimeSnapshot) -> None:
        state = snap.trading_state
        info = self._info(snap)
        if self._shown is not None and self._shown == (state, info):
            return
        try:
            badge = self.query_one("#state-badge", Static)
            text = self.query_one("#status-info", Static)
        except NoMatches:
            return  # not composed yet (a key pressed while the screen mounts)
        self._shown = (state, info)
        # Fixed-size children: a repaint of the bar alone, not a layout of the whole screen
        # (which at 160x48 costs a full frame and delayed a key's visible effect).
        badge.update(state.upper(), layout=False)
        for name in STATES:
            badge.set_class(name == state, f"state-{name}")
        text.update(info, layout=False)
        self.shown_state = state

    @staticmethod
    def _info(snap: RuntimeSnapshot) -> Text:
        state = snap.trading_state
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {snap.mode.upper()}", style="bold magenta")
        open_style = "bold cyan" if snap.open_groups else "bold"
        text.append(f"  open {snap.open_groups}", style=open_style)
        text.append("  day ", style="dim")
        text.append_text(fmt.money(snap.daily_pnl, signed=True, cell=False))
        text.append(f"  {fmt.clock(snap.ts_ms)} UTC", style="bold")
        if snap.state_reason and state != "active":
            text.append(f"  {snap.state_reason}", style="bold red" if state == "halted" else "bold yellow")
        # Second and third lines: shown only when the bar is three rows tall.
        text.append("\n total pnl ", style="dim")
        text.append_text(fmt.money(snap.realized_pnl, signed=True, cell=False))
        text.append(f"  quotes {snap.quotes_total:,}  decisions {snap.decisions_total:,}"
                    f"  intents {snap.intents_total:,}  threshold {snap.threshold_bps:g} bps", style="dim")
        text.append("\n groups ", style="dim")
        by_state = "  ".join(f"{k} {v}" for k, v in sorted((str(k), v) for k, v in snap.groups_by_state.items()))
        text.append(by_state or "none yet", style="dim")
        if snap.blocked_venues:
            text.append(f"  blocked: {', '.join(snap.blocked_venues)}", style="bold red")
        return text
