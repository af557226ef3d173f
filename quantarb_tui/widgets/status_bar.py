"""The status bar: trading state big and colored (with its reason), mode, PnL, groups, clock.

Two children: the state badge (a colored block, three rows tall on a tall terminal, one row
on a short one) and the info lines. The first info line holds what matters at 80x24 (mode,
blocked venues, open groups, today's PnL, clock, reason); the others only show when there is
room. An active engine whose every venue is blocked trades nothing: its badge reads BLOCKED in
the warning color, not a green ACTIVE.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.widgets import Static

from engine.snapshot import RuntimeSnapshot
from quantarb_tui.widgets import format as fmt

LOOKS = ("active", "reducing", "paused", "halted", "blocked")  # the badge's classes: state-<look>


def all_venues_blocked(snap: RuntimeSnapshot) -> bool:
    return bool(snap.venues) and set(snap.venues) <= set(snap.blocked_venues)


def badge_of(snap: RuntimeSnapshot) -> tuple[str, str]:
    """The badge's text and look: the trading state, or BLOCKED for an active engine that has
    no venue left to trade on (the other states already say that nothing new trades)."""
    state = snap.trading_state
    if state == "active" and all_venues_blocked(snap):
        return "BLOCKED", "blocked"
    return state.upper(), state


def blocked_text(snap: RuntimeSnapshot) -> Text:
    """`ACTIVE · ALL VENUES BLOCKED`, `ACTIVE · 2 blocked: mt5, okx`, or nothing."""
    blocked = snap.blocked_venues
    if not blocked:
        return Text()
    state = snap.trading_state.upper()
    if all_venues_blocked(snap):
        return Text(f"  {state} · ALL VENUES BLOCKED", style="bold red")
    return Text(f"  {state} · {len(blocked)} blocked: {', '.join(blocked)}", style="bold yellow")


class StatusBar(Horizontal):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._shown: tuple[str, str, Text] | None = None
        self.shown_state = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="state-badge")
        yield Static("", id="status-info")

    def update_from(self, snap: RuntimeSnapshot) -> None:
        label, look = badge_of(snap)
        info = self._info(snap)
        if self._shown is not None and self._shown == (label, look, info):
            return
        try:
            badge = self.query_one("#state-badge", Static)
            text = self.query_one("#status-info", Static)
        except NoMatches:
            return  # not composed yet (a key pressed while the screen mounts)
        self._shown = (label, look, info)
        # Fixed-size children: a repaint of the bar alone, not a layout of the whole screen
        # (which at 160x48 costs a full frame and delayed a key's visible effect).
        badge.update(label, layout=False)
        for name in LOOKS:
            badge.set_class(name == look, f"state-{name}")
        text.update(info, layout=False)
        self.shown_state = snap.trading_state

    @staticmethod
    def _info(snap: RuntimeSnapshot) -> Text:
        state = snap.trading_state
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {snap.mode.upper()}", style="bold magenta")
        text.append_text(blocked_text(snap))
        open_style = "bold cyan" if snap.open_groups else "bold"
        text.append(f"  open {snap.open_groups}", style=open_style)
        text.append("  day ", style="dim")
        text.append_text(fmt.money(snap.daily_pnl, signed=True, cell=False))
        text.append(f"  {fmt.clock(snap.ts_ms)} UTC", style="bold")
        if snap.state_reason and state != "active":
            text.append(f"  {snap.state_reason}", style="bold red" if state == "halted" else "bold yellow")
        # Second and third lines: shown only when the bar is three rows tall.
        text.append("\n equity ", style="dim")  # realized + unrealized - fees + carry (docs/ledger.md)
        if snap.equity and snap.equity != "n/a":
            text.append_text(fmt.money(snap.equity, signed=True, cell=False))
            text.append(f" {snap.account_ccy}", style="dim")
        elif snap.equity == "n/a":
            text.append("n/a (a rate or mark is missing)", style="yellow")
        else:
            text.append_text(fmt.money(snap.realized_pnl, signed=True, cell=False))
        text.append(f"  quotes {snap.quotes_total:,}  decisions {snap.decisions_total:,}"
                    f"  intents {snap.intents_total:,}  threshold {snap.threshold_bps:g} bps", style="dim")
        text.append("\n groups ", style="dim")
        by_state = "  ".join(f"{k} {v}" for k, v in sorted((str(k), v) for k, v in snap.groups_by_state.items()))
        text.append(by_state or "none yet", style="dim")
        return text
