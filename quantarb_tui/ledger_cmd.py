"""`quantarb ledger ...`: read the SQLite ledger (read-only; safe while the engine runs).

Every command takes `--ledger PATH` (default: the configured ledger, or the demo's) and
`--json` for one JSON document on stdout. `check` exits 1 when an invariant is violated or the
file is damaged; every command exits 2, with a message and no traceback, for a file it cannot
read at all (missing, not a ledger, damaged beyond reading).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

ledger_app = typer.Typer(help="Inspect the ledger: summary, groups, one group's timeline, export, check.",
                         no_args_is_help=True)

LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger file (default: from the config).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Config file naming the ledger.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def _path(ledger: str | None, config: str | None) -> str:
    if ledger:
        return ledger
    from engine.settings import ConfigError, load_config

    try:
        return load_config(config).config.engine.ledger
    except ConfigError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(path: str, query: Any, *args: Any, **kwargs: Any) -> Any:
    from ledger.errors import LedgerError
    from ledger.queries import run

    try:
        return run(path, query, *args, **kwargs)
    except LedgerError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None


def _dump(doc: object) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


def _ts(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        typer.echo(f"quantarb: not an ISO date/time: {text!r}", err=True)
        raise typer.Exit(2) from None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _summary_lines(doc: dict[str, Any]) -> list[str]:
    """The human form of `ledger.queries.summary`: trading state, breakers, dust, then per period
    the totals and one row per pair."""
    trading = doc.get("trading_state", {})
    lines = [f"trading {trading.get('state')}"
             + (f" since {_ts(trading.get('since_ms'))} ({trading.get('last_event')}: {trading.get('reason')})"
                if trading.get("since_ms") else "")]
    for name, b in sorted((trading.get("breakers") or {}).items()):
        detail = f" {b.get('detail')}" if b.get("detail") else ""
        lines.append(f"  breaker {name:<20} {b.get('state')}{detail}")
    lines.append(f"open groups {doc.get('open_groups')}   open orders {doc.get('open_orders')}   "
                 f"events {doc.get('events')}")
    by_reason = doc.get("decisions_by_reason") or {}
    lines.append(f"decision log {doc.get('decisions')} rows (sampled) "
                 + ("  ".join(f"{reason}={n}" for reason, n in by_reason.items()) if by_reason else ""))
    dust = doc.get("dust") or {}
    lines.append("dust " + ("  ".join(f"{pair} {qty}" for pair, qty in dust.items()) if dust else "none"))
    for period in ("today", "all_time"):
        p = doc.get(period, {})
        lines.append(f"[{period.replace('_', ' ')}]")
        for key, value in p.items():
            if key != "pairs":
                lines.append(f"  {key:<16} {value}")
        pairs = p.get("pairs") or {}
        if not pairs:
            continue
        lines.append(f"  {'pair':<8} {'groups':>6} {'hit':>6} {'pnl':>14} {'fees':>12} {'slip bps':>8} "
                     f"{'decisions':>10} {'trigger':>8} {'edge p50/p75/p90 bps':>22}")
        for pair, s in pairs.items():
            edge = s.get("edge_bps")
            edges = "-" if not edge else "/".join(f"{edge[k]:.2f}" for k in ("p50", "p75", "p90"))
            lines.append(
                f"  {pair:<8} {s['groups']:>6} {s['hit_rate']:>6.1%} {s['total_pnl']:>14} {s['fees']:>12} "
                f"{_num(s['mean_slippage_bps'], '.2f'):>8} {s['decisions']:>10} {s['trigger_rate']:>8.2%} "
                f"{edges:>22}"
            )
    return lines


@ledger_app.command()
def summary(ledger: LedgerOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Trading state and breakers, dust, groups by state, fills, fees, realized PnL, and per pair
    groups, hit rate, PnL, slippage, edge percentiles and trigger rate: today and all time."""
    from ledger.queries import summary as q

    doc = _run(_path(ledger, config), q)
    if json_out:
        _dump(doc)
        return
    for line in _summary_lines(doc):
        typer.echo(line)


@ledger_app.command()
def groups(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    state: Annotated[str | None, typer.Option("--state", help="A group state, or 'open'.")] = None,
    pair: Annotated[str | None, typer.Option("--pair")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time (UTC), inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time (UTC), exclusive.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    json_out: JsonOpt = False,
) -> None:
    """Hedge groups, newest first."""
    from ledger.queries import groups as q

    rows = _run(_path(ledger, config), q, state=state, pair=pair, since_ms=_ms(since),
                until_ms=_ms(until), limit=limit)
    if json_out:
        _dump(rows)
        return
    typer.echo(f"{'opened':<19}  {'group':<14} {'pair':<5} {'buy>sell':<16} {'state':<12} {'qty':>10} "
               f"{'exp bps':>8} {'pnl':>10}")
    for r in rows:
        typer.echo(
            f"{_ts(r.get('opened_at_ms')):<19}  {r['group_id']:<14} {r['pair']:<5} "
            f"{r['buy_venue'] + '>' + r['sell_venue']:<16} {r['state']:<12} {r['target_qty']:>10} "
            f"{float(r['expected_edge_bps'] or 0):>8.1f} {r['realized_pnl'] or '':>10}"
        )


@ledger_app.command()
def show(
    group_id: Annotated[str, typer.Argument(help="The group's id.")],
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One group's timeline: decision, orders, fills, compensation, PnL."""
    from ledger.queries import show as q

    doc = _run(_path(ledger, config), q, group_id)
    if doc is None:
        typer.echo(f"quantarb: no group {group_id}", err=True)
        raise typer.Exit(2)
    if json_out:
        _dump(doc)
        return
    group = doc.get("group", {})
    typer.echo(f"group {group_id} {group.get('pair')} {group.get('state')} pnl={group.get('realized_pnl')} "
               f"fees={group.get('fees')} expected={group.get('expected_edge_bps')}bps")
    for item in doc.get("timeline", []):
        typer.echo(f"  {_ts(item.get('ts_ms'))}  {item.get('kind', ''):<14} {item.get('text', '')}")


@ledger_app.command("export")
def export_cmd(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (one table) or json (all tables).")] = "json",
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
) -> None:
    """Export the public tables to stdout."""
    from ledger.queries import export as q

    if fmt not in ("csv", "json"):
        typer.echo("quantarb: --format must be csv or json", err=True)
        raise typer.Exit(2)
    _run(_path(ledger, config), q, sys.stdout, fmt, table=table)


@ledger_app.command()
def check(ledger: LedgerOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Invariants: fills have orders, orders have groups, unique client ids, projections = journal."""
    from ledger.queries import check as q

    doc = _run(_path(ledger, config), q)
    if json_out:
        _dump(doc)
    else:
        for c in doc.get("checks", []):
            mark = "ok  " if c.get("ok") else "FAIL"
            typer.echo(f"{mark} {c.get('name')}: {c.get('description', '')}")
            for row in (c.get("examples") or [])[:10]:
                shown = row[0] if isinstance(row, list) and len(row) == 1 else row
                typer.echo(f"       {str(shown)[:200]}")
        if doc.get("damaged"):
            typer.echo("the file is damaged: do not trade on it; keep a copy (with its -wal and -shm) "
                       "and restore your last good backup")
        typer.echo("ledger check passed" if doc.get("ok") else "ledger check FAILED")
    if not doc.get("ok"):
        raise typer.Exit(1)
