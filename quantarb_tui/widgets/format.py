"""Cell formatting shared by the panes: prices, ages, edges and states, colored for a glance.

Only named ANSI colors (which degrade cleanly to 256 and 16 colors) are used, so an operator on
an SSH session without truecolor sees the same meaning.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from rich.console import JustifyMethod
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
    "closed": "blue",
}

ORDER_STYLES: dict[str, str] = {
    "filled": "green",
    "partially_filled": "yellow",
    "rejected": "red",
    "expired": "red",
    "unknown": "bold red",
    "cancelled": "dim",
}

OPEN_GROUP_STATES = frozenset({"planned", "working", "broken", "compensating"})


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


def refused() -> Text:
    """The age cell of a quote the price guard refused as an outlier."""
    return Text("bad px", style="bold red", justify="right")


def duration(ms: float) -> str:
    """A short duration: `850ms`, `12.3s`, `4m05s`, `2h10m`."""
    if ms < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def edge(bps: float | None, threshold: float) -> Text:
    """An edge in bps: green bold over threshold, yellow when positive, red when negative."""
    if bps is None:
        return Text("-", style="dim", justify="right")
    return Text(f"{bps:+.1f}", style=edge_style(bps, threshold), justify="right")


def edge_style(bps: float, threshold: float) -> str:
    if bps >= threshold:
        return "bold green"
    if bps > 0:
        return "yellow"
    return "red"


def group_state(state: str) -> Text:
    return Text(state, style=GROUP_STYLES.get(state, ""))


def order_state(state: str) -> Text:
    return Text(state, style=ORDER_STYLES.get(state, ""))


def clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S")


def timestamp(ts_ms: int | None) -> str:
    """Date and time (UTC) for records that may be from another day."""
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def decimal(value: str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def money(value: str | Decimal | None, *, signed: bool = False, cell: bool = True) -> Text:
    """An amount to cents, green when positive and red when negative ('-' when unknown).

    `cell`: right-justified for a table column; False for inline text."""
    justify: JustifyMethod | None = "right" if cell else None
    amount = value if isinstance(value, Decimal) else decimal(value)
    if amount is None:
        return Text("-", style="dim", justify=justify)
    amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    style = "red" if amount < 0 else "green" if amount > 0 else ""
    text = f"{amount:+,}" if signed else f"{amount:,}"
    return Text(text, style=style, justify=justify)


def qty(value: str) -> str:
    """A decimal quantity without trailing zeros."""
    amount = decimal(value)
    if amount is None:
        return value
    text = f"{amount.normalize():f}"
    return text


def utilization(fraction: float | None, width: int = 10) -> Text:
    """A bar for a limit's use: green, yellow from 70%, red from 90%."""
    if fraction is None:
        return Text("-", style="dim")
    filled = max(0, min(width, round(fraction * width)))
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def pair_matches(pair: str, pattern: str) -> bool:
    """The pair filter: any of the space or comma separated words, as a case-blind substring."""
    words = pattern.replace(",", " ").split()
    if not words:
        return True
    name = pair.lower()
    return any(w.lower() in name for w in words)
