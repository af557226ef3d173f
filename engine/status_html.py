"""The status page's HTML: one self-contained document (inline style, inline SVG, no script,
no external asset) built from `/api/status`, one snapshot and the ledger's closed groups.

Everything that comes from data (reasons, venue and symbol names, error texts) goes through
`html.escape`: a kill reason or a venue's error message is text, never markup. The page has
no form, no link that acts and no script: actions stay on the TUI, the CLI and the API.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core.hedge import GROUP_TERMINAL
from core.models import GroupState
from engine.snapshot import RuntimeSnapshot

__all__ = ["CURVE_GROUPS", "equity_points", "render_page", "svg_curve"]

CURVE_GROUPS = 500  # the curve covers the most recent closed groups (newest by opening)
_OPEN = frozenset(s.value for s in GroupState if s not in GROUP_TERMINAL)
_W, _H, _PAD = 640, 180, 28

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.2em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.2em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:.1em .6em;border-radius:.3em;font-weight:bold;color:#fff}
.state-active{background:#2e7d32}.state-paused,.state-reducing{background:#ef6c00}
.state-halted{background:#c62828}.bad{color:#c62828;font-weight:bold}.ok{color:#2e7d32}
.muted{color:#777}svg{background:#fff;border:1px solid #ddd}
""".strip()


def _e(value: object) -> str:
    """Text from data, escaped for an element or an attribute (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def _when(ts_ms: object) -> str:
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or ts_ms <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "-"


def _age(ms: object) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    return f"{ms / 1000:.1f} s"


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str,
           numeric: frozenset[int] = frozenset()) -> str:
    """A table whose cells are already escaped; `empty` when there is no row."""
    body = ["<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                             for i, c in enumerate(row)) + "</tr>" for row in rows]
    if not body:
        return f'<p id="{table_id}" class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- the equity curve ------------------------------------------------------------------------
def equity_points(groups: Iterable[Mapping[str, Any]]) -> list[tuple[int, Decimal]]:
    """(closed at, cumulative realized PnL) over the closed groups (rejected ones made no
    PnL), oldest first. Rows come from the ledger (`EngineReader.history`)."""
    closed: list[tuple[int, str, Decimal]] = []
    for g in groups:
        at, pnl, state = g.get("closed_at_ms"), g.get("realized_pnl"), g.get("state")
        if not isinstance(at, int) or state in _OPEN or state == GroupState.REJECTED.value:
            continue
        try:
            closed.append((at, str(g.get("group_id", "")), Decimal(str(pnl))))
        except (InvalidOperation, ValueError):
            continue
    closed.sort()
    total = Decimal(0)
    points = []
    for at, _, pnl in closed:
        total += pnl
        points.append((at, total))
    return points


def svg_curve(points: Sequence[tuple[int, Decimal]]) -> str:
    """A small line chart: time across, cumulative PnL up, the zero line dashed."""
    if len(points) < 2:
        return '<p id="equity" class="muted">fewer than two closed groups in the ledger: no curve yet</p>'
    t0, t1 = points[0][0], points[-1][0]
    values = [float(v) for _, v in points]
    lo, hi = min(0.0, *values), max(0.0, *values)
    span_t = max(t1 - t0, 1)
    span_v = (hi - lo) or 1.0

    def xy(ts: int, v: float) -> str:
        x = _PAD + (ts - t0) / span_t * (_W - 2 * _PAD)
        y = _H - _PAD - (v - lo) / span_v * (_H - 2 * _PAD)
        return f"{x:.1f},{y:.1f}"

    zero_y = _H - _PAD - (0 - lo) / span_v * (_H - 2 * _PAD)
    path = " ".join(xy(ts, v) for (ts, _), v in zip(points, values, strict=True))
    colour = "#2e7d32" if values[-1] >= 0 else "#c62828"
    return (
        f'<svg id="equity" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="cumulative realized PnL">'
        f'<line x1="{_PAD}" y1="{zero_y:.1f}" x2="{_W - _PAD}" y2="{zero_y:.1f}" stroke="#999" '
        'stroke-dasharray="4 3"/>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
        f'<text x="{_PAD}" y="14" font-size="11">{_e(f"{hi:.2f}")}</text>'
        f'<text x="{_PAD}" y="{_H - 6}" font-size="11">{_e(f"{lo:.2f}")}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 6}" font-size="11" text-anchor="end">{_e(_when(t1))}</text>'
        "</svg>"
    )


# -- the page --------------------------------------------------------------------------------
def render_page(status: Mapping[str, Any], snap: RuntimeSnapshot, curve: Sequence[tuple[int, Decimal]] | None,
                *, refresh_s: int) -> str:
    """The whole document. `curve` None: the ledger could not be read (said on the page)."""
    state = str(status.get("trading_state", "?"))
    reason = status.get("reason") or ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>quantarb: {_e(state.upper())}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>quantarb <span id="state" class="state state-{_e(state)}">{_e(state.upper())}</span></h1>',
        f'<p id="reason">{_e(reason) if reason else "<span class=muted>no reason given</span>"}</p>',
        _summary(status, snap),
        "<h2>Equity (cumulative realized PnL, ledger)</h2>",
        svg_curve(curve) if curve is not None
        else '<p id="equity" class="bad">the ledger could not be read for the curve</p>',
        "<h2>Venues</h2>", _venues(status),
        "<h2>Breakers tripped</h2>", _breakers(status),
        "<h2>Positions</h2>", _positions(snap),
        "<h2>Open groups</h2>", _open_groups(snap),
        "<h2>Recent compensation</h2>", _compensation(snap),
        "<h2>Recent risk events</h2>", _risk_events(snap),
        "<h2>Reconciliation</h2>", _reconcile(status.get("reconcile")),
        f'<p class="muted">Read-only. Refreshes every {int(refresh_s)} s. Actions: the TUI, '
        "<code>quantarb kill|flatten|rearm|pause|resume</code> or the operator API.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _summary(status: Mapping[str, Any], snap: RuntimeSnapshot) -> str:
    ledger = status.get("ledger") if isinstance(status.get("ledger"), Mapping) else {}
    assert isinstance(ledger, Mapping)
    ledger_text = ('<span class="ok">writing</span>' if ledger.get("ok", True)
                   else f'<span class="bad">cannot write: {_e(ledger.get("error"))} '
                        f'({_e(ledger.get("unwritten"))} event(s) held)</span>')
    rows = [
        ("mode", _e(status.get("mode"))),
        ("health", _e(status.get("health"))),
        ("as of (UTC)", _e(_when(status.get("ts_ms")))),
        ("realized PnL (this run)", _e(status.get("realized_pnl"))),
        ("realized PnL today (UTC)", _e(status.get("daily_pnl"))),
        ("open groups", _e(status.get("open_groups"))),
        ("quotes / intents", f"{_e(snap.quotes_total)} / {_e(snap.intents_total)}"),
        ("ledger", ledger_text),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="summary"><tbody>{body}</tbody></table>'


def _venues(status: Mapping[str, Any]) -> str:
    blocked = [str(v) for v in status.get("blocked_venues") or []]
    feeds = [f for f in status.get("feeds") or [] if isinstance(f, Mapping)]
    rows = [(_e(f.get("name")), _e(f.get("venue")),
             f'<span class="{"ok" if f.get("state") == "live" else "bad"}">{_e(f.get("state"))}</span>',
             _e(_age(f.get("last_frame_age_ms"))),
             '<span class="bad">blocked</span>' if f.get("venue") in blocked else "")
            for f in feeds]
    out = _table("venues", ("source", "venue", "state", "last frame", "new intents"), rows, "no market data source")
    terminals = [t for t in status.get("mt5_terminals") or [] if isinstance(t, Mapping)]
    if terminals:
        out += _table("mt5-terminals", ("MT5 terminal", "last seen (UTC)", "last tick (UTC)", "trade allowed"),
                      [(_e(t.get("terminal")), _e(_when(t.get("last_seen_ms"))), _e(_when(t.get("last_tick_ms"))),
                        _e(t.get("trade_allowed"))) for t in terminals], "")
    return out


def _breakers(status: Mapping[str, Any]) -> str:
    tripped = [b for b in status.get("breakers") or [] if isinstance(b, Mapping) and b.get("state") == "tripped"]
    return _table("breakers", ("breaker", "effect", "detail", "since (UTC)"),
                  [(_e(b.get("name")), _e(b.get("effect")), _e(b.get("detail")), _e(_when(b.get("since_ms"))))
                   for b in tripped], "none")


def _positions(snap: RuntimeSnapshot) -> str:
    return _table("positions", ("venue", "asset", "net qty"),
                  [(_e(p.venue), _e(p.asset), _e(p.qty)) for p in snap.positions], "flat", frozenset({2}))


def _open_groups(snap: RuntimeSnapshot) -> str:
    rows = [(_e(g.key), _e(g.pair), f"{_e(g.buy_venue)} / {_e(g.sell_venue)}", _e(g.state), _e(g.base_qty),
             _e(_when(g.opened_ms)))
            for g in snap.groups if g.state in _OPEN]
    return _table("open-groups", ("group", "pair", "buy / sell", "state", "qty", "opened (UTC)"), rows, "none",
                  frozenset({4}))


def _compensation(snap: RuntimeSnapshot) -> str:
    rows = [(_e(_when(c.ts_ms)), _e(c.group_id), _e(c.pair), _e(c.kind), _e(c.reason),
             f'<span class="bad">{_e(c.outcome)}</span>' if c.failed else _e(c.outcome))
            for c in snap.compensation[:10]]
    return _table("compensation", ("at (UTC)", "group", "pair", "action", "reason", "outcome"), rows,
                  "none this run")


def _risk_events(snap: RuntimeSnapshot) -> str:
    rows = [(_e(_when(r.ts_ms)), _e(r.kind), _e(r.reason), _e(r.trading_state)) for r in snap.risk_events[:15]]
    return _table("risk-events", ("at (UTC)", "kind", "reason", "trading state"), rows, "none this run")


def _reconcile(block: object) -> str:
    if not isinstance(block, Mapping):
        return '<p id="reconcile" class="muted">not reconciled in this mode (live mode compares each venue ' \
               "with the ledger)</p>"
    venues = block.get("venues") if isinstance(block.get("venues"), Mapping) else {}
    assert isinstance(venues, Mapping)
    rows = [(_e(name), '<span class="ok">ok</span>' if v.get("ok") else '<span class="bad">problem</span>',
             _e(_when(v.get("at_ms"))), _e(v.get("detail")), _e(v.get("fills_booked")))
            for name, v in sorted(venues.items()) if isinstance(v, Mapping)]
    out = (f'<div id="reconcile"><p>{_e(block.get("passes"))} pass(es), every '
           f'{_e(block.get("interval_s"))} s</p>')
    out += _table("reconcile-venues", ("venue", "verdict", "at (UTC)", "detail", "fills booked"), rows,
                  "no pass yet")
    quarantined = [q for q in block.get("quarantined") or [] if isinstance(q, Mapping)]
    if quarantined:
        out += _table("quarantined", ("venue", "client order id", "reason", "since (UTC)"),
                      [(_e(q.get("venue")), _e(q.get("client_order_id")), _e(q.get("reason")),
                        _e(_when(q.get("since_ms")))) for q in quarantined], "")
    return out + "</div>"
