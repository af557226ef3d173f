"""The replay's study (`quantarb replay --report DIR`), for reading: rich tables and a plotext
chart in the terminal, and a self-contained HTML file with inline SVG plots (no script, no
stylesheet or font fetched from anywhere: it opens offline and can be mailed).

Both render the JSON document `core.edge_study.StudyReport.as_dict` (also written as
`study.json`), so a saved study can be rendered again without replaying.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from core.durations import bucket_label
from quantarb_tui.widgets.chart_ticks import spaced_ticks

HTML_NAME = "report.html"
JSON_NAME = "study.json"
CHART_WIDTH = 100
CHART_HEIGHT = 16


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _money(value: str | None) -> str:
    return "-" if value is None else f"{Decimal(value):,.2f}"


def _name(row: dict[str, Any]) -> str:
    return f"{row['pair']} {row['buy_venue']}>{row['sell_venue']}"


def _get(d: dict[str, Any] | None, key: str) -> float | None:
    return None if d is None else d.get(key)


def direction_rows(study: dict[str, Any]) -> list[list[str]]:
    """One row of cells per direction (the terminal table and the HTML table alike)."""
    rows: list[list[str]] = []
    for r in study["directions"]:
        edge, life, react = r["edge_bps"], r["lifetime_ms"], r["reaction_ms"]
        rows.append([
            _name(r), str(r["opportunities"]), _pct(r["trigger_rate"]),
            "/".join(_f(_get(edge, q), ".1f") for q in ("p50", "p75", "p90", "p99")),
            f"{_f(_get(life, 'p50'), '.0f')}/{_f(_get(life, 'p90'), '.0f')}",
            _f(_get(react, "p50"), ".1f"), _pct(r["outlived"]),
            _f(r["capacity_base"], ".4g"), _f(r["capacity_notional"], ",.0f"),
            str(r["groups"]), _money(r["pnl"]), str(r["compensations"]), _money(r["compensation_cost"]),
        ])
    return rows


DIRECTION_HEADERS = ["Direction", "Opps", "Trig", "Edge bp p50/75/90/99", "Life ms p50/90", "React ms",
                     "Outlived", "Cap base", "Cap notional", "Groups", "PnL", "Comp", "Comp cost"]
PAIR_HEADERS = ["Pair", "Groups", "PnL after fees", "Carry", "Net", "Comp", "Comp cost"]


def pair_rows(study: dict[str, Any]) -> list[list[str]]:
    rows = [[p["pair"], str(p["groups"]), _money(p["pnl"]), _money(p["carry"]), _money(p["net"]),
             str(p["compensations"]), _money(p["compensation_cost"])] for p in study["pairs"]]
    rows.append(["all", str(sum(p["groups"] for p in study["pairs"])),
                 _money(str(sum((Decimal(p["pnl"]) for p in study["pairs"]), Decimal(0)))),
                 _money(str(sum((Decimal(p["carry"]) for p in study["pairs"]), Decimal(0)))),
                 _money(study["net"]), str(sum(p["compensations"] for p in study["pairs"])),
                 _money(str(sum((Decimal(p["compensation_cost"]) for p in study["pairs"]), Decimal(0))))])
    return rows


def totals(hist: dict[str, list[int]]) -> list[int]:
    """Bucket counts summed over every direction."""
    out: list[int] = []
    for counts in hist.values():
        if not out:
            out = [0] * len(counts)
        out = [a + b for a, b in zip(out, counts, strict=True)]
    return out


def terminal_chart(study: dict[str, Any], width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> Text:
    """Edge lifetimes against reaction times (every direction), as a plotext bar chart."""
    import plotext as plt  # type: ignore[import-untyped]  # no stubs; pure Python

    bounds = study["bounds_ms"]
    life, react = totals(study["lifetime_hist"]), totals(study["reaction_hist"])
    if not life:
        return Text("no edge reached the threshold", style="dim")
    used = [i for i in range(len(life)) if life[i] or (react and react[i])]
    lo, hi = min(used, default=0), max(used, default=0)
    xs = list(range(hi - lo + 1))
    plt.clear_figure()
    plt.theme("clear")
    plt.plotsize(width, height)
    series = [life[lo:hi + 1]]
    names = ["edge lifetime"]
    if react and any(react):
        series.append(react[lo:hi + 1])
        names.append("reaction time")
    plt.multiple_bar(xs, series, labels=names)
    shown = spaced_ticks(len(xs), width)
    plt.xticks(shown, [bucket_label(lo + i, bounds) for i in shown])
    plt.title("Edges over the threshold: how long they lasted, and how long we took")
    return Text.from_ansi(plt.build())


def render_terminal(study: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Per pair and direction (threshold {study['threshold_bps']:g} bps)", title_justify="left")
    for i, h in enumerate(DIRECTION_HEADERS):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row in direction_rows(study):
        table.add_row(*row)
    pairs = Table(title="Per pair: PnL after fees and carry", title_justify="left")
    for i, h in enumerate(PAIR_HEADERS):
        pairs.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row in pair_rows(study):
        pairs.add_row(*row)
    note = Text(f"{study['carry_note']}. Opps: episodes at or over the threshold; Trig: share of them that "
                "made an intent; Outlived: share of ended episodes at least the median reaction time long; "
                "Cap: size at the touch while over the threshold (p50).", style="dim")
    console.print(Group(table, pairs, note, terminal_chart(study, width=min(CHART_WIDTH, console.width))))


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
.note{color:#666;font-size:13px}
svg{font-family:inherit;font-size:11px;margin:.5em 0}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def svg_bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
             width: int = 720, height: int = 220) -> str:
    """Grouped bars: `series` is (name, colour, values per label). Inline SVG, no script."""
    left, right, top, bottom = 50, 10, 28, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for _, _, values in series for v in values), default=0.0) or 1.0
    n = max(1, len(labels))
    group_w = plot_w / n
    bar_w = group_w * 0.8 / max(1, len(series))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_esc(title)}">',
             f'<text x="{left}" y="16" font-weight="bold">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:g}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>']
    for i, label in enumerate(labels):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, colour, values) in enumerate(series):
            v = values[i]
            h = plot_h * v / peak
            parts.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{_esc(name)} {_esc(label)}: {v:g}</title></rect>')
        parts.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                     f'{_esc(label)}</text>')
    for j, (name, colour, _) in enumerate(series):
        x = left + j * 140
        parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{height - 7}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_edges(study: dict[str, Any], width: int = 720) -> str:
    """Per direction, the edge's p50..p99 as a range with ticks, and the threshold line."""
    rows = [r for r in study["directions"] if r["edge_bps"]]
    if not rows:
        return ""
    row_h, left, right, top = 22, 170, 20, 30
    height = top + row_h * len(rows) + 30
    values = [float(v) for r in rows for v in r["edge_bps"].values()] + [float(study["threshold_bps"])]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return left + (width - left - right) * (v - lo) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="edge distribution">',
             '<text x="10" y="16" font-weight="bold">Edge after fees (bps): p50, p75, p90, p99</text>']
    thr = x(study["threshold_bps"])
    parts.append(f'<line x1="{thr:.1f}" y1="{top - 6}" x2="{thr:.1f}" y2="{height - 24}" stroke="#c00" '
                 f'stroke-dasharray="4 3"/><text x="{thr:.1f}" y="{height - 10}" text-anchor="middle" '
                 f'fill="#c00">threshold {study["threshold_bps"]:g}</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        e = r["edge_bps"]
        parts.append(f'<text x="10" y="{y + 4:.1f}">{_esc(_name(r))}</text>')
        parts.append(f'<line x1="{x(e["p50"]):.1f}" y1="{y:.1f}" x2="{x(e["p99"]):.1f}" y2="{y:.1f}" '
                     'stroke="#36c" stroke-width="3"/>')
        for q in ("p50", "p75", "p90", "p99"):
            parts.append(f'<line x1="{x(e[q]):.1f}" y1="{y - 6:.1f}" x2="{x(e[q]):.1f}" y2="{y + 6:.1f}" '
                         f'stroke="#036"><title>{q} {e[q]:g} bps</title></line>')
    parts.append(f'<text x="{left}" y="{height - 10}">{lo:g}</text>'
                 f'<text x="{width - right}" y="{height - 10}" text-anchor="end">{hi:g}</text></svg>')
    return "".join(parts)


def render_html(study: dict[str, Any], replay: dict[str, Any] | None = None) -> str:
    bounds = study["bounds_ms"]
    labels = [bucket_label(i, bounds) for i in range(len(bounds) + 1)]
    charts: list[str] = []
    life_all, react_all = totals(study["lifetime_hist"]), totals(study["reaction_hist"])
    if life_all:
        charts.append(svg_bars("Edge lifetime against reaction time (all directions)", labels,
                               [("edge lifetime", "#36c", life_all), ("reaction time", "#e80", react_all)]))
    for name, counts in study["lifetime_hist"].items():
        if any(counts):
            charts.append(svg_bars(f"{name}: edge lifetime against reaction time", labels,
                                   [("edge lifetime", "#36c", counts),
                                    ("reaction time", "#e80", study["reaction_hist"].get(name, [0] * len(counts)))],
                                   height=180))
    pnl_rows = [r for r in study["directions"] if r["groups"]]
    if pnl_rows:
        charts.append(svg_bars("PnL after fees per direction", [_name(r) for r in pnl_rows],
                               [("PnL", "#393", [max(0.0, float(r["pnl"])) for r in pnl_rows]),
                                ("loss", "#c33", [max(0.0, -float(r["pnl"])) for r in pnl_rows])]))
    summary = ""
    if replay is not None:
        summary = (f"<p>{_esc(replay.get('frames', 0))} frames, {_esc(replay.get('quotes', 0))} quotes over "
                   f"{_esc(replay.get('span_s', 0))} recorded s; {_esc(replay.get('groups', 0))} groups; "
                   f"latency model {_esc(replay.get('settings', {}).get('latency_ms'))} ms; "
                   f"files: {_esc(', '.join(replay.get('files', [])))}</p>")
    return "".join([
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>quantarb replay report</title>",
        f"<style>{_CSS}</style></head><body><h1>quantarb replay report</h1>", summary,
        f"<h2>Per pair and direction (threshold {study['threshold_bps']:g} bps)</h2>",
        _table(DIRECTION_HEADERS, direction_rows(study)),
        "<p class=\"note\">Opps: episodes of the edge at or over the threshold. Trig: the share of them in which "
        "an intent was made. Life: how long ended episodes lasted. React: from the quote to both entry orders "
        "sent. Outlived: the share of ended episodes that lasted at least the median reaction time. Cap: size "
        "at the touch while over the threshold (p50, base units and notional). Comp cost: compensation "
        "orders' fees and price against the leg they stand in for.</p>",
        "<h2>Per pair: PnL after fees and carry</h2>", _table(PAIR_HEADERS, pair_rows(study)),
        f"<p class=\"note\">{_esc(study['carry_note'])}</p>",
        svg_edges(study), *charts, "</body></html>",
    ])


def write_report(directory: Path, report: dict[str, Any]) -> Path:
    """`report.html` and `study.json` (the study and the replay's figures) under `directory`."""
    study = report["study"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / JSON_NAME).write_text(json.dumps(report, indent=2), encoding="utf-8")
    path = directory / HTML_NAME
    path.write_text(render_html(study, report), encoding="utf-8")
    return path
