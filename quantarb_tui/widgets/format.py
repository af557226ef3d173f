"""Cell formatting shared by the panes: prices, ages, edges and states, colored for a glance."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text

STATE_STYLES: dict[str, str] = {
    "active": "bold black on green",
    "paused": "bold black on yellow",
    "reducing": "bold black on dark_orange",
    "halted": "bold white on red",
}

GROUP_STYLES: dict[str, str] = {
    "planned": "cyan",
    "working": "bold cyan",
    "hedged": "green",
    "repaired": "green",
    "unwound": "yellow",
    "broken": "bold red",
    "compensating": "bold yellow",
    "rejected": "dim",
    "failed": "bold white on red",
}


def price(value: float) -> str:
    if value <= 0:
        return "-"
    if value >= 1000:
        return f"{value:,.2f}"
    if value >= 1:
        return f"{value:,.4f}"
    return f"{value:.6f}"


def age(age_ms: float | None) -> Text:
    if age_ms is None:
        return Text("-", style="dim")
    text = f"{age_ms:,.0f}" if age_ms < 100_000 else ">100s"
    style = "red" if age_ms > 1500 else "yellow" if age_ms > 500 else ""
    return Text(text, style=style, justify="right")


def edge(bps: float | None, threshold: float) -> Text:
    """An edge in bps: green bold over threshold, yellow when positive, red when negative."""
    if bps is None:
        return Text("-", style="dim", justify="right")
    if bps >= threshold:
        style = "bold green"
    elif bps > 0:
        style = "yellow"
    else:
        style = "red"
    return Text(f"{bps:+.1f}", style=style, justify="right")


def group_state(state: str) -> Text:
    return Text(state, style=GROUP_STYLES.get(state, ""))


def clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S")
