"""Analytics screen (`a`): the equity curve and trade statistics, from the ledger.

The curve is the ledger's equity series (realized + unrealized - fees + carry, every position
marked at its last fill price at each point: docs/ledger.md, Money), drawn with plotext; the
statistics are `core.trade_stats` overall and per pair: hit rate against the realized edge
after costs, profit factor, expectancy per group, PnL, mean slippage, time held, carry per held
hour. Read through `EngineReader.analytics()` in a worker (the engine computes it in a thread):
on open, and again when more groups have closed, at most every RELOAD_S.

Next to the curve, live from the snapshot (not the ledger): the histogram of how long edges
stayed over the threshold against our reaction time (quote to both entry orders sent), the
engine's bounded fixed-bucket histograms (`core.durations`): an edge that lives shorter than
we react is one we cannot catch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from core.durations import bucket_label
from engine.control import EngineReader, ReadFailed
from engine.snapshot import RuntimeSnapshot, TimingRow
from quantarb_tui.screens.messages import RefreshNow
from quantarb_tui.screens.reload_pacer import ReloadPacer, groups_token
from quantarb_tui.widgets import format as fmt
from quantarb_tui.widgets.chart_ticks import spaced_ticks, tick_count
from quantarb_tui.widgets.status_bar import StatusBar
from quantarb_tui.widgets.synced_table import Row, SyncedTable

RELOAD_S = 5.0  # a long ledger's replay is not free: at most this often while groups close
XTICKS = 5

COLUMNS = [
    ("scope", "Scope", 5),
    ("groups", "Groups", 6),
    ("hit", "Hit %", 6),
    ("pf", "PF", 6),
    ("exp", "Expect.", 8),
    ("pnl", "PnL", 9),
    ("slip", "Slip bp", 7),
    ("held", "Held", 7),
    ("carry", "Carry/h", 7),
]


def _ratio(value: str | None) -> Text:
    if value is None:
        return Text("-", style="dim", justify="right")
    return Text(f"{Decimal(value):,.2f}", justify="right")


def stats_cells(stats: dict[str, Any], scope: str) -> tuple[Text | str, ...]:
    hit = stats.get("hit_rate")
    slip = stats.get("mean_slippage_bps")
    held = stats.get("held_ms")
    return (
        scope,
        Text(str(stats.get("groups", 0)), justify="right"),
        Text("-" if hit is None else f"{hit * 100:.1f}", justify="right"),
        _ratio(stats.get("profit_factor")),
        fmt.money(stats.get("expectancy")),
        fmt.money(stats.get("total_pnl")),
        Text("-" if slip is None else f"{round(slip, 2) + 0.0:+.2f}", justify="right"),  # + 0.0: no "-0.00"
        Text("-" if held is None else fmt.duration(held), justify="right"),
        fmt.money(stats.get("carry_per_held_hour")),
    )


def curve(series: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    """(seconds since the first point, equity, realized) for the points with a total."""
    xs: list[float] = []
    totals: list[float] = []
    realized: list[float] = []
    points = series.get("points", [])
    t0 = points[0]["ts_ms"] if points else 0
    for p in points:
        if p.get("total") is None or p.get("realized") is None:
            continue  # a missing rate: a gap, never a guess
        xs.append((p["ts_ms"] - t0) / 1000)
        totals.append(float(p["total"]))
        realized.append(float(p["realized"]))
    return xs, totals, realized


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:g}s" if value >= 1000 else f"{value:g}ms"


def timing_title(t: TimingRow, width: int = 80) -> str:
    """`edge life p50<=2s p90<=5s | reaction p50<=50ms` (the quantiles are bucket upper bounds),
    shorter when the chart is narrow (plotext drops a title that does not fit)."""
    if width < 50:
        return f"life p50<={_ms(t.lifetime_p50_ms)} react<={_ms(t.reaction_p50_ms)}"
    return (f"edge life p50<={_ms(t.lifetime_p50_ms)} p90<={_ms(t.lifetime_p90_ms)} | "
            f"reaction p50<={_ms(t.reaction_p50_ms)} p90<={_ms(t.reaction_p90_ms)}")


class AnalyticsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, reader: EngineReader) -> None:
        super().__init__()
        self._reader = reader
        self.doc: dict[str, Any] | None = None
        self.loads = 0
        self._pacer = ReloadPacer(RELOAD_S)
        self._timings: TimingRow | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("loading…", id="analytics-summary")
        with Horizontal(id="analytics-charts"):
            yield PlotextPlot(id="analytics-chart")
            yield PlotextPlot(id="analytics-timing")
        with Vertical(id="analytics-stats", classes="pane"):
            yield SyncedTable(COLUMNS, id="analytics-table", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#analytics-stats").border_title = "Trade statistics (closed groups, from the ledger)"
        self.load()
        self.post_message(RefreshNow())  # show the engine state at once, not at the next tick

    def action_back(self) -> None:
        self.dismiss(None)

    def update_from(self, snap: RuntimeSnapshot) -> None:
        self.query_one(StatusBar).update_from(snap)
        if snap.timings is not None and snap.timings != self._timings:
            self._timings = snap.timings
            self._plot_timings(snap.timings)
        if self._pacer.should_reload(groups_token(snap.groups_by_state, snap.realized_pnl)):
            self.load()

    @work(exclusive=True, group="analytics")
    async def load(self) -> None:
        self._pacer.loaded()
        try:
            doc = await self._reader.analytics()
        except ReadFailed as exc:  # shown, and read again later: the workstation stays up
            self._pacer.failed()
            self.query_one("#analytics-summary", Static).update(Text(f" {exc}", style="bold red"))
            return
        self.loads += 1
        self.doc = doc
        if doc is None:
            self.query_one("#analytics-summary", Static).update(Text(" no ledger: nothing to chart", style="yellow"))
            return
        self._show(doc)

    def _show(self, doc: dict[str, Any]) -> None:
        series = doc["series"]
        points = series.get("points", [])
        ccy = str(doc.get("currency", ""))
        summary = Text(" equity ", style="dim")
        last = points[-1] if points else None
        summary.append_text(fmt.money(last.get("total") if last else None, signed=True, cell=False))
        summary.append(f" {ccy}", style="dim")
        if last is not None:
            summary.append("   realized ", style="dim")
            summary.append_text(fmt.money(last.get("realized"), signed=True, cell=False))
            summary.append("   fees ", style="dim")
            summary.append_text(fmt.money(last.get("fees"), cell=False))
            summary.append("   carry ", style="dim")
            summary.append_text(fmt.money(last.get("carry"), signed=True, cell=False))
        summary.append(f"   {len(points)} points, marked at the last fill prices; as of "
                       f"{fmt.timestamp(doc.get('as_of_ms'))[:19]} UTC", style="dim")
        self.query_one("#analytics-summary", Static).update(summary)
        self._plot(series, ccy)
        rows: list[Row] = [("all", stats_cells(doc["stats"], "all"))]
        rows += [(pair, stats_cells(stats, pair)) for pair, stats in doc.get("pairs", {}).items()]
        self.query_one("#analytics-table", SyncedTable).sync(rows)

    def _plot_timings(self, t: TimingRow) -> None:
        chart = self.query_one("#analytics-timing", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(timing_title(t, chart.size.width))
        used = [i for i, (a, b) in enumerate(zip(t.lifetimes, t.reactions, strict=True)) if a or b]
        if used:
            lo, hi = used[0], used[-1]
            xs = list(range(hi - lo + 1))
            series = [list(t.lifetimes[lo:hi + 1]), list(t.reactions[lo:hi + 1])]
            # textual-plotext's stub lacks plotext's `labels=` (one per series) and colour lists.
            plt.multiple_bar(xs, series, labels=["edge lifetime", "reaction"],  # type: ignore[call-arg]
                             color=["cyan", "orange"])  # type: ignore[arg-type]
            shown = spaced_ticks(len(xs), chart.size.width)
            plt.xticks([float(i) for i in shown], [bucket_label(lo + i, t.bounds_ms) for i in shown])
        chart.refresh()

    def _plot(self, series: dict[str, Any], ccy: str) -> None:
        chart = self.query_one("#analytics-chart", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        xs, totals, realized = curve(series)
        if not xs:
            plt.title("no fills in the ledger yet")
            chart.refresh()
            return
        plt.title(f"Equity change ({ccy})")
        plt.plot(xs, totals, label="equity", marker="braille", color="green")
        plt.plot(xs, realized, label="realized", marker="braille", color="cyan")
        t0 = series["points"][0]["ts_ms"]
        span = xs[-1] - xs[0]
        count = tick_count(chart.size.width)
        ticks = [xs[0] + span * i / (count - 1) for i in range(count)] if span > 0 else [xs[0]]
        plt.xticks(ticks, [datetime.fromtimestamp((t0 + t * 1000) / 1000, tz=UTC).strftime("%H:%M:%S")
                           for t in ticks])
        chart.refresh()
