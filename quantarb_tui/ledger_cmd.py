"""`quantarb ledger ...`: read the SQLite ledger (read-only; safe while the engine runs), and
`backup` it to another file (ledger.backup; docs/operations.md).

Every command takes `--ledger PATH` (default: the configured ledger, or the demo's) and
`--json` for one JSON document on stdout. `check` exits 1 when an invariant is violated or the
file is damaged; every command exits 2, with a message and no traceback, for a file it cannot
read at all (missing, not a ledger, damaged beyond reading).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from core.currency import RATE_MAX, RATE_MIN, rate_in_range
from quantarb_tui import plain

ledger_app = typer.Typer(
    help="Inspect the ledger: summary, positions, equity, groups, one group's timeline, export, check; "
         "back it up while the engine runs.",
    no_args_is_help=True,
)

LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger file (default: from the config).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Config file naming the ledger.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
CurrencyOpt = Annotated[str | None, typer.Option(
    "--currency", help="The account currency figures are converted to (default: the config's, else USD).")]
RateOpt = Annotated[list[str] | None, typer.Option(
    "--rate", help="CCY=VALUE: one CCY is VALUE of the account currency (e.g. USDT=0.9995). Repeatable; "
                   "a currency without one is shown as missing, never taken as 1.")]
MarkOpt = Annotated[list[str] | None, typer.Option(
    "--mark", help="VENUE:SYMBOL=PRICE: mark that symbol at PRICE (venue units) instead of its last fill price. "
                   "Repeatable.")]


def _path(ledger: str | None, config: str | None) -> str:
    if ledger:
        return ledger
    from engine.settings import ConfigError, load_config

    try:
        return load_config(config).config.engine.ledger
    except ConfigError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None


@dataclass(frozen=True)
class _Target:
    """The ledger to read, and what its config says about it (when the config applies)."""

    path: str
    instruments: dict[Any, Any]
    account_ccy: str | None = None  # the config's [money]: the defaults of --currency and --rate
    rates: dict[str, Decimal] = field(default_factory=dict)

    def money_args(self, currency: str | None, rate: list[str] | None) -> dict[str, Any]:
        """--currency and --rate, over the config's [money]: a rate given here wins over the
        engine's journaled rates, which win over the config's typed ones."""
        ccy = _currency(currency) if currency else (self.account_ccy or "USD")
        rates = dict(self.rates) if ccy == self.account_ccy else {}
        return {"account_ccy": ccy, "rates": rates, "rate_overrides": _rates(rate)}


def _target(ledger: str | None, config: str | None) -> _Target:
    """The ledger, and the config's instruments when the ledger is the config's (or --config is
    given): they place fills of symbols no group journaled (flatten orders). A ledger named on
    its own is valued with its own instruments only, never with a config it may not belong to;
    the same holds for the config's `[money]` rates."""
    if ledger and not config:
        return _Target(ledger, {})
    from engine.settings import ConfigError, load_config

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None
    instruments: dict[Any, Any] = {i.key: i for pair in loaded.config.build_pairs() for i in pair.instruments}
    money = loaded.config.money
    return _Target(ledger or loaded.config.engine.ledger, instruments, money.account_currency, dict(money.rates))


def _fail(message: str) -> NoReturn:
    typer.echo(f"quantarb: {message}", err=True)
    raise typer.Exit(2)


def _positive(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        _fail(f"{what}: {text!r} is not a number")
    if not value.is_finite() or value <= 0:
        _fail(f"{what}: {text!r} must be a positive number")
    return value


def _currency(text: str) -> str:
    ccy = text.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{2,10}", ccy):
        _fail(f"currency {text!r}: 2 to 10 letters or digits")
    return ccy


def _rates(items: list[str] | None) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in items or []:
        ccy, sep, value = item.partition("=")
        if not sep:
            _fail(f"--rate {item!r}: expected CCY=VALUE, e.g. USDT=0.9995")
        rate = _positive(value.strip(), f"--rate {item!r}")
        if not rate_in_range(rate):
            _fail(f"--rate {item!r}: must be within {RATE_MIN}..{RATE_MAX}")
        out[_currency(ccy)] = rate
    return out


def _marks(items: list[str] | None) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for item in items or []:
        where, sep, value = item.rpartition("=")
        venue, colon, symbol = where.partition(":")
        if not sep or not colon or venue not in ("mt5", "okx", "binance") or not symbol:
            _fail(f"--mark {item!r}: expected VENUE:SYMBOL=PRICE with VENUE mt5, okx or binance")
        out[(venue, symbol)] = _positive(value.strip(), f"--mark {item!r}")
    return out


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
    """The human form of `ledger.queries.summary`: trading state, breakers, dust, equity, then per
    period the totals and one row per pair."""
    trading = doc.get("trading_state", {})
    lines = [f"trading {trading.get('state')}"
             + (f" since {_ts(trading.get('since_ms'))} ({trading.get('last_event')}: {trading.get('reason')})"
                if trading.get("since_ms") else "")]
    for name, b in sorted((trading.get("breakers") or {}).items()):
        detail = f" {b.get('detail')}" if b.get("detail") else ""
        lines.append(f"  breaker {name:<20} {b.get('state')}{detail}")
    lines.append(f"open groups {doc.get('open_groups')}   open orders {doc.get('open_orders')}   "
                 f"events {plain.number(doc.get('events'), 0)}")
    by_reason = doc.get("decisions_by_reason") or {}
    lines.append(f"decision log {plain.number(doc.get('decisions'), 0)} rows (sampled) "
                 + ("  ".join(f"{reason}={n:,}" for reason, n in by_reason.items()) if by_reason else ""))
    dust = doc.get("dust") or {}
    lines.append("dust " + ("  ".join(f"{pair} {qty}" for pair, qty in dust.items()) if dust else "none"))
    if doc.get("equity"):
        lines += ["", *_equity_lines(doc["equity"])]
    line = doc.get("flatten") or {}
    if line.get("cash", "0") != "0" or line.get("fees", "0") != "0":
        lines.append(f"flatten line (closing fills no group held) {plain.number(line.get('realized'), 2, signed=True)}"
                     f" after {plain.number(line.get('fees'), 2)} fees")
    for period in ("today", "all_time"):
        p = doc.get(period, {})
        lines += ["", f"[{period.replace('_', ' ')}]"]
        states = ", ".join(f"{state} {n:,}" for state, n in (p.get("groups_by_state") or {}).items())
        lines.append(f"  groups opened {p.get('groups_opened', 0):,}" + (f" ({states})" if states else "")
                     + f"   closed {p.get('groups_closed', 0):,}   fills {p.get('fills', 0):,}")
        lines.append(f"  fees          {plain.money_map(p.get('fees'))}")
        lines.append(f"  group pnl     {plain.number(p.get('realized_pnl'), 2, signed=True)} (groups closed, "
                     f"in their quote currencies, after {plain.number(p.get('group_fees'), 2)} fees)")
        pairs = p.get("pairs") or {}
        if not pairs:
            continue
        rows = []
        for pair, ps in pairs.items():
            edge = ps.get("edge_bps")
            edges = "-" if not edge else "/".join(f"{edge[k]:.2f}" for k in ("p50", "p75", "p90"))
            rows.append([pair, f"{ps['groups']:,}", plain.percent(ps["hit_rate"]),
                         plain.number(ps["total_pnl"], 2, signed=True), plain.number(ps["fees"], 2),
                         _num(ps["mean_slippage_bps"], ".2f"), f"{ps['decisions']:,}",
                         plain.percent(ps["trigger_rate"], 2), edges])
        lines += plain.table(["pair", "groups", "hit", "pnl", "fees", "slip bps", "decisions", "trigger",
                              "edge p50/p75/p90 bps"], rows,
                             right=[False, True, True, True, True, True, True, True, True])
    return lines


def _equity_lines(eq: dict[str, Any]) -> list[str]:
    """Equity per currency and in the account currency (docs/ledger.md, Money)."""
    ccy = eq.get("currency", "")
    lines = [f"equity change in {ccy} = realized + unrealized - fees + carry "
             f"(marked at {eq.get('mark_source', 'none').replace('_', ' ')}; {eq.get('funding', '')})"]
    rows = []
    for c, parts in (eq.get("by_currency") or {}).items():
        rows.append([c, *(plain.number(parts.get(k), plain.money_decimals(c), signed=k == "total")
                          for k in ("realized", "unrealized", "fees", "carry", "total"))])
    rows.append([f"= {ccy}", *(plain.number(eq.get(k), plain.money_decimals(ccy), signed=k == "total")
                               for k in ("realized", "unrealized", "fees", "carry", "total"))])
    lines += plain.table(["currency", "realized", "unrealized", "fees", "carry", "total"], rows,
                         right=[False, True, True, True, True, True])
    for c, r in (eq.get("rates") or {}).items():
        if r.get("rate") is None:
            continue
        where = r.get("source")
        when = f", read {_ts(r.get('ts_ms'))} UTC" if where not in ("given", "--rate") else ""
        journaled = f", in force since {_ts(r.get('journaled_ms'))} UTC" if r.get("journaled_ms") else ""
        lines.append(f"  rate {c} = {r['rate']} {ccy} ({where}{when}{journaled})")
    for missing in eq.get("missing_rates") or []:
        lines.append(f"  no rate for {missing}: pass --rate {missing}=<{ccy} per {missing}>")
    for missing in eq.get("missing_marks") or []:
        lines.append(f"  no mark for {missing}: pass --mark {missing}=<price>")
    for unknown in eq.get("unknown_instruments") or []:
        lines.append(f"  fills of {unknown} not valued: its instrument is unknown (pass --config)")
    return lines


@ledger_app.command()
def summary(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    currency: CurrencyOpt = None,
    rate: RateOpt = None,
    mark: MarkOpt = None,
) -> None:
    """Trading state and breakers, dust, equity (realized, unrealized, fees, carry, total), groups
    by state, fills, fees, and per pair groups, hit rate, PnL, slippage, edge percentiles and
    trigger rate: today and all time."""
    from ledger.queries import summary as q

    target = _target(ledger, config)
    doc = _run(target.path, q, **target.money_args(currency, rate), marks=_marks(mark),
               instruments=target.instruments)
    if json_out:
        _dump(doc)
        return
    for line in _summary_lines(doc):
        typer.echo(line)


@ledger_app.command()
def positions(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    mark: MarkOpt = None,
    flat: Annotated[bool, typer.Option("--flat", help="Also the symbols whose position is flat.")] = False,
) -> None:
    """Per venue and symbol: position in base and venue units, average price, mark, unrealized and
    realized PnL, fees, carry; and the net position per asset across venues."""
    from ledger.money import positions as q

    target = _target(ledger, config)
    path, instruments = target.path, target.instruments
    doc = _run(path, q, now_ms=_now_ms(), marks=_marks(mark), instruments=instruments)
    if not flat:
        doc["positions"] = [r for r in doc["positions"] if Decimal(r["qty"]) != 0]
    if json_out:
        _dump(doc)
        return
    for line in _positions_lines(doc):
        typer.echo(line)


def _positions_lines(doc: dict[str, Any]) -> list[str]:
    now = int(doc.get("as_of_ms") or 0)
    lines = [f"positions as of {_ts(now)} UTC (marked at {str(doc.get('mark_source')).replace('_', ' ')})"]
    rows = []
    for r in doc.get("positions", []):
        ccy = r["quote_ccy"]
        age = "-" if r.get("mark_ts_ms") is None else _age(now - int(r["mark_ts_ms"]))
        rows.append([
            r["venue"], r["symbol"], r["asset"], plain.number(r["qty"], r["qty_decimals"], signed=True),
            plain.number(r["venue_qty"], r["venue_qty_decimals"], signed=True),
            plain.number(r["avg_price"], r["price_decimals"]) if r["avg_price"] is not None else "-",
            plain.number(r["mark"], r["price_decimals"]), age,
            plain.money(r["unrealized"], ccy, signed=True), plain.money(r["realized"], ccy, signed=True),
            plain.money_map(r["fees"]), plain.money_map(r["carry"]),
        ])
    if not rows:
        lines.append("  no open position")
    else:
        lines += plain.table(["venue", "symbol", "asset", "qty (base)", "qty (venue)", "avg price", "mark",
                              "mark age", "unrealized", "realized", "fees", "carry"], rows,
                             right=[False, False, False, True, True, True, True, True, True, True, False, False])
    net = doc.get("net_by_asset") or {}
    if net:
        lines.append("net by asset (base units): " + "   ".join(f"{a} {q}" for a, q in net.items()))
    for unknown in doc.get("unknown_instruments") or []:
        lines.append(f"  fills of {unknown} not shown: its instrument is unknown (pass --config)")
    return lines


@ledger_app.command()
def equity(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    since: Annotated[str | None, typer.Option("--since", help="ISO time (UTC), inclusive.")] = None,
    interval: Annotated[int, typer.Option("--interval", min=0,
                                          help="Seconds per point (0: a point per fill).")] = 60,
    currency: CurrencyOpt = None,
    rate: RateOpt = None,
) -> None:
    """Equity over time from the fills: realized, unrealized (at each symbol's last fill price),
    fees, carry and total, cumulative since the ledger's first fill."""
    from ledger.money import equity_series as q

    target = _target(ledger, config)
    path, instruments = target.path, target.instruments
    doc = _run(path, q, since_ms=_ms(since) or 0, interval_ms=interval * 1000, **target.money_args(currency, rate),
               instruments=instruments)
    if json_out:
        _dump(doc)
        return
    for line in _series_lines(doc):
        typer.echo(line)


def _series_lines(doc: dict[str, Any]) -> list[str]:
    ccy = doc["currency"]
    points = doc.get("points") or []
    lines = [f"equity change in {ccy}, cumulative from the first fill (marked at each symbol's last fill price; "
             f"{doc.get('funding')})"]
    if not points:
        return [*lines, "  no fills"]
    converted = all(p["total"] is not None for p in points)
    if converted:
        dec = plain.money_decimals(ccy)
        rows = [[_ts(p["ts_ms"]), *(plain.number(p[k], dec, signed=k == "total")
                                    for k in ("realized", "unrealized", "fees", "carry", "total"))] for p in points]
        lines += plain.table(["time (UTC)", "realized", "unrealized", "fees", "carry", "total"], rows,
                             right=[False, True, True, True, True, True])
    else:  # a currency without a rate: one total per currency
        ccys = sorted({c for p in points for c in p["by_currency"]})
        rows = [[_ts(p["ts_ms"]), *(plain.number((p["by_currency"].get(c) or {}).get("total", "0"),
                                                 plain.money_decimals(c), signed=True) for c in ccys)]
                for p in points]
        lines += plain.table(["time (UTC)", *(f"total {c}" for c in ccys)], rows, right=[False, *([True] * len(ccys))])
        missing = sorted({m for p in points for m in p["missing_rates"]})
        lines += [f"  no rate for {m}: pass --rate {m}=<{ccy} per {m}> for totals in {ccy}" for m in missing]
    for unknown in doc.get("unknown_instruments") or []:
        lines.append(f"  fills of {unknown} not valued: its instrument is unknown (pass --config)")
    return lines


def _now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _age(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600:,}h{s % 3600 // 60:02d}m"


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
            f"{float(r['expected_edge_bps'] or 0):>8.1f} {plain.number(r['realized_pnl'], 2, signed=True):>10}"
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
    money_doc = doc.get("attribution") or {}
    if money_doc.get("closed_by"):
        typer.echo(f"  closed by {', '.join(money_doc['closed_by'])}: their share "
                   f"{plain.number(money_doc.get('closing_cash'), 2, signed=True)} less "
                   f"{plain.number(money_doc.get('closing_fees'), 2)} fees (in its quote currencies)")
    for item in doc.get("timeline", []):
        typer.echo(f"  {_ts(item.get('ts_ms'))}  {item.get('kind', ''):<14} {item.get('text', '')}")


@ledger_app.command("export")
def export_cmd(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="csv (one table) or json (all tables) to stdout; parquet: one file per table in --out.",
    )] = "json",
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="parquet: the directory for <table>.parquet (created if missing).")] = None,
    force: Annotated[bool, typer.Option("--force", help="parquet: replace files that exist.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export the public tables: to stdout (csv, json), or as Parquet files for DuckDB, Polars or
    pandas (docs/research.md)."""
    if fmt == "parquet":
        if out is None:
            typer.echo("quantarb: --format parquet needs --out DIR", err=True)
            raise typer.Exit(2)
        from ledger.parquet import export_parquet

        counts: dict[str, int] = _run(_path(ledger, config), export_parquet, out, table=table, force=force)
        if json_out:
            _dump({"out": str(out), "tables": counts})
        else:
            for name, rows in counts.items():
                typer.echo(f"{out / (name + '.parquet')}: {rows:,} rows")
        return
    from ledger.queries import export as q

    if fmt not in ("csv", "json"):
        typer.echo("quantarb: --format must be csv, json or parquet", err=True)
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


@ledger_app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="The backup file to write (its directory must exist).")],
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
    verify: Annotated[bool, typer.Option(
        "--check/--no-check", help="Run `ledger check` on the copy (default: yes).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Copy the ledger to DEST with SQLite's online backup: safe while the engine runs (it keeps
    writing), a consistent snapshot of the committed journal in one file, mode 0600. Refuses to
    replace DEST without --force. Exit 1 when the copy fails `ledger check` (the copy is kept)."""
    from ledger.backup import backup as run_backup
    from ledger.errors import LedgerError
    from ledger.queries import check as q

    source = Path(_path(ledger, config))
    try:
        result = run_backup(source, dest, force=force)
    except LedgerError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    checked = _run(str(result.dest), q) if verify else None
    doc: dict[str, Any] = {
        "source": str(result.source), "dest": str(result.dest), "bytes": result.bytes,
        "last_seq": result.last_seq, "schema_version": result.version, "seconds": round(result.seconds, 3),
        "ahead_rows": result.ahead_rows, "check": None if checked is None else bool(checked.get("ok")),
    }
    if json_out:
        _dump(doc)
    else:
        typer.echo(f"backed up {result.source} to {result.dest}: {result.bytes:,} bytes, journal at seq "
                   f"{result.last_seq:,}, in {result.seconds:.2f}s")
        if result.ahead_rows:
            typer.echo(f"note: {result.ahead_rows} journal row(s) in {result.source.name}.ahead were not yet "
                       f"committed: a running engine commits them within milliseconds (the next backup has "
                       f"them); a stopped one, at its next start")
        elif result.ahead_rows is None:
            typer.echo(f"note: {result.source.name}.ahead could not be read: whether rows were still on their "
                       f"way to the journal is unknown")
        if checked is not None:
            typer.echo("ledger check passed on the copy" if checked.get("ok")
                       else f"ledger check FAILED on the copy: run `quantarb ledger check --ledger {result.dest}`")
    if checked is not None and not checked.get("ok"):
        raise typer.Exit(1)
