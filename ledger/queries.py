"""Read-side queries: summary, groups, show, export, check. Every result is JSON-able.

They run on a read-only aiosqlite connection (WAL: a reader never blocks the writer, and sees
every committed transaction), from the CLI on a file (`run(path, summary)`) or from a
running engine (`await ledger.read(summary)`). Decimal amounts stay strings; sums are exact
(`Decimal`), never SQL floats.

`check` verifies the ledger's invariants, including that every projection equals what its
journal rebuilds (`rebuild_projections_and_compare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TextIO, TypeVar

import aiosqlite

from core.attribution import Attribution
from core.hedge import GROUP_TERMINAL
from core.instruments import Instrument
from core.models import GroupState, Venue
from core.pnl import GroupPnl, PairStats
from ledger import events as ev
from ledger import money
from ledger.audit import OPERATOR_AUDIT
from ledger.errors import LedgerError
from ledger.integrity import damage_text, is_damage, printable, read_error
from ledger.net_positions import NetPositions
from ledger.projections import PROJECTION_TABLES, rebuild_from
from ledger.schema import (
    OPEN_ORDERS_WHERE,
    PUBLIC_TABLES,
    SCHEMA_VERSION,
    STATS_TABLES,
    check_readable,
    current_statements,
    reader_uri,
)

P = ParamSpec("P")
T = TypeVar("T")

ExportFormat = Literal["csv", "json"]
EXPORTABLE: tuple[str, ...] = (*PUBLIC_TABLES, *STATS_TABLES, "mt5_commands")
EDGE_PERCENTILES: tuple[int, ...] = (50, 75, 90)
EXAMPLES = 20  # rows shown per failed check

CLOSED_STATES: tuple[str, ...] = tuple(s.value for s in GROUP_TERMINAL)
# Groups whose PnL counts as realized (the orchestrator's rule: every terminal state but rejected).
PNL_STATES: tuple[str, ...] = tuple(s.value for s in GROUP_TERMINAL if s is not GroupState.REJECTED)
OPEN_STATES: tuple[str, ...] = tuple(s.value for s in GroupState if s not in GROUP_TERMINAL)


# A reader's page cache, KiB: C memory (see ledger.writer's). Reconciliation's position check
# sums the fills table, which grows for weeks: with SQLite's default (2 MB) each such scan grew
# the cache towards it in steps, for hours at the demo's rate (issue 19). The reads are of recent
# rows or whole-table scans, which the OS's page cache serves as well; a small cache fills at once.
READER_CACHE_KIB = 256


# -- connections ---------------------------------------------------------------------------
async def connect_reader(uri: str) -> aiosqlite.Connection:
    """A read-only connection with `sqlite3.Row` rows (`uri` from `schema.reader_uri`). No validation.
    Its page cache is `READER_CACHE_KIB`; no memory-mapped I/O (mapped pages would count in RSS)."""
    conn = await aiosqlite.connect(uri, uri=True)
    conn.row_factory = sqlite3.Row
    await conn.execute_fetchall("PRAGMA busy_timeout = 5000")
    await conn.execute_fetchall(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    await conn.execute_fetchall("PRAGMA mmap_size = 0")
    return conn


@contextlib.asynccontextmanager
async def open_reader(path: str | os.PathLike[str]) -> AsyncIterator[aiosqlite.Connection]:
    """Validate `path` as a ledger (LedgerError if not) and yield a read-only connection."""
    uri = await asyncio.to_thread(_validated_uri, path)
    try:
        conn = await connect_reader(uri)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()


def _validated_uri(path: str | os.PathLike[str]) -> str:
    p = Path(path).expanduser()
    check_readable(p)
    return reader_uri(p)


def run(
    path: str | os.PathLike[str],
    query: Callable[Concatenate[aiosqlite.Connection, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """For the command line: open `path` read-only and run one query to completion."""

    async def main() -> T:
        async with open_reader(path) as db:
            return await query(db, *args, **kwargs)

    try:
        return asyncio.run(main())
    except (sqlite3.Error, UnicodeDecodeError) as exc:  # e.g. a damaged page met half-way through
        raise read_error(Path(path).expanduser(), exc) from None


# -- helpers -------------------------------------------------------------------------------
async def _all(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    async with db.execute(sql, tuple(params)) as cur:
        return list(await cur.fetchall())


async def _one(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
    async with db.execute(sql, tuple(params)) as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


def _dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a mapping


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))


def _sum(values: Iterable[str | None]) -> Decimal:
    return sum((Decimal(v) for v in values if v is not None), Decimal(0))


def _text(value: Decimal) -> str:
    return ev.dec(value)


async def ledger_path(db: aiosqlite.Connection) -> str:
    rows = await _all(db, "PRAGMA database_list")
    for row in rows:
        if row[1] == "main":
            return str(row[2])
    return ""


async def table_names(db: aiosqlite.Connection, schema: str = "main") -> set[str]:
    """Tables of the file: a reader never migrates, so an older ledger lacks the newer ones."""
    return {str(r[0]) for r in await _all(db, f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}


async def schema_version(db: aiosqlite.Connection) -> int:
    return int(await _one(db, "PRAGMA user_version") or 0)


async def net_positions(db: aiosqlite.Connection) -> dict[tuple[str, str], Decimal]:
    """Net filled quantity per (venue, symbol), venue units, signed (long > 0), from the ledger
    (every fill once; a running engine keeps a `NetPositions` and reads only new fills)."""
    return await NetPositions().refresh(db)


async def setting_changes(db: aiosqlite.Connection) -> list[dict[str, Any]]:
    """Every journaled runtime-setting change (engine.steering), oldest first: the audit
    records restart_plan judges. Read from the small risk_events table, not the event log."""
    out: list[dict[str, Any]] = []
    async with db.execute(
        "SELECT json_extract(e.payload, '$.setting') AS setting FROM risk_events r "
        "JOIN events e ON e.seq = r.event_id WHERE r.kind = 'setting' ORDER BY r.event_id"
    ) as cur:
        async for (setting,) in cur:
            if isinstance(setting, str):
                decoded = ev.decode_json(setting)
                if isinstance(decoded, dict):
                    out.append(decoded)
    return out


# A list of ids is passed as one JSON parameter (`IN (SELECT value FROM json_each(?))`), not
# as `IN (?,?,...)`: each length of the latter is a different SQL text, and the connection's
# statement cache (128 statements) then fills with one prepared statement per length seen, up
# to some 6 MB of SQLite memory per connection (issue 19, docs/performance.md); this is one
# statement whatever the length.
ID_LIST = "(SELECT value FROM json_each(?))"


async def known_orders(db: aiosqlite.Connection, client_order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The ledger's orders among `client_order_ids`: client order id -> its row (reconciliation)."""
    ids = sorted(set(client_order_ids))
    if not ids:
        return {}
    rows = await _all(db, "SELECT client_order_id, group_id, venue, symbol, side, qty, price, purpose, "
                          f"state, created_at_ms FROM orders WHERE client_order_id IN {ID_LIST}", [json.dumps(ids)])
    return {str(row["client_order_id"]): dict(row) for row in rows}


async def known_trades(db: aiosqlite.Connection, venue: str, trade_ids: Iterable[str]) -> set[str]:
    """The venue trade ids among `trade_ids` the ledger has booked (reconciliation)."""
    ids = sorted(set(trade_ids))
    if not ids:
        return set()
    rows = await _all(db, f"SELECT venue_trade_id FROM fills WHERE venue = ? AND venue_trade_id IN {ID_LIST}",
                      [venue, json.dumps(ids)])
    return {str(r["venue_trade_id"]) for r in rows}


async def cash_flows(db: aiosqlite.Connection) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """(cash flow, fees) per (venue, symbol) from every fill in the ledger, venue units: a sell
    brings qty x price in, a buy takes it out."""
    out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    async with db.execute(
        "SELECT o.venue, o.symbol, o.side, f.qty, f.price, f.fee FROM fills f JOIN orders o ON o.order_id = f.order_id"
    ) as cur:
        async for venue, symbol, side, qty, price, fee in cur:
            flow = Decimal(qty) * Decimal(price)
            cash, fees = out.get((venue, symbol), (Decimal(0), Decimal(0)))
            out[(venue, symbol)] = (cash + (flow if side == "sell" else -flow), fees + Decimal(fee))
    return out


def day_start_ms(now_ms: int) -> int:
    """Midnight UTC of the day that contains `now_ms`."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * 1000)


# -- summary -------------------------------------------------------------------------------
async def _pnl_rows(db: aiosqlite.Connection, since_ms: int) -> list[sqlite3.Row]:
    return await _all(
        db,
        f"SELECT realized_pnl, fees FROM hedge_groups WHERE state IN ({_marks(PNL_STATES)}) AND closed_at_ms >= ?",
        (*PNL_STATES, since_ms),
    )


async def realized_pnl(db: aiosqlite.Connection, *, since_ms: int = 0) -> Decimal:
    """Realized PnL of the groups closed since `since_ms` (every terminal state but rejected):
    what `summary` reports for a period, without the rest of it (e.g. the daily loss at start)."""
    return _sum(r[0] for r in await _pnl_rows(db, since_ms))


async def _period(db: aiosqlite.Connection, since_ms: int) -> dict[str, Any]:
    by_state = {
        str(r[0]): int(r[1])
        for r in await _all(
            db, "SELECT state, count(*) FROM hedge_groups WHERE opened_at_ms >= ? GROUP BY state ORDER BY state",
            (since_ms,),
        )
    }
    fees: dict[str, Decimal] = {}
    fills = 0
    for r in await _all(db, "SELECT fee_ccy, fee FROM fills WHERE ts_ms >= ?", (since_ms,)):
        fills += 1
        fees[r[0]] = fees.get(r[0], Decimal(0)) + Decimal(r[1])
    pnl_rows = await _pnl_rows(db, since_ms)
    closed = int(
        await _one(
            db,
            f"SELECT count(*) FROM hedge_groups WHERE state IN ({_marks(CLOSED_STATES)}) AND closed_at_ms >= ?",
            (*CLOSED_STATES, since_ms),
        )
    )
    return {
        "groups_opened": sum(by_state.values()),
        "groups_by_state": by_state,
        "groups_closed": closed,
        "fills": fills,
        "fees": {ccy: _text(v) for ccy, v in sorted(fees.items())},
        "realized_pnl": _text(_sum(r[0] for r in pnl_rows)),
        "group_fees": _text(_sum(r[1] for r in pnl_rows)),
    }


# -- per pair: groups, hit rate, PnL, slippage (core.pnl), decision statistics, dust -------------
def edge_percentiles(
    buckets: dict[tuple[int, float], int], qs: tuple[int, ...] = EDGE_PERCENTILES
) -> dict[str, float] | None:
    """p<q> of the edges counted in merged histograms ({(k, width): count}, bucket k covering
    [k * width, (k + 1) * width) bps); None when empty.

    Mirrors core.pnl.percentile (linear interpolation at rank (n - 1) * q / 100), with the
    i-th of a bucket's c edges placed at lo + width * (i + 0.5) / c: so within `width` of
    the exact percentile for edges inside the histogram's range (clipped ones count at its ends).
    """
    spans = sorted(((k * w, w, c) for (k, w), c in buckets.items() if c > 0), key=lambda t: (t[0], t[1]))
    total = sum(c for _, _, c in spans)
    if total == 0:
        return None

    def value_at(index: int) -> float:
        seen = 0
        for lo, width, c in spans:
            if index < seen + c:
                return lo + width * (index - seen + 0.5) / c
            seen += c
        lo, width, _ = spans[-1]  # pragma: no cover - index < total
        return lo + width

    out: dict[str, float] = {}
    for q in qs:
        pos = (total - 1) * q / 100.0
        lo_i = int(pos)
        hi_i = min(lo_i + 1, total - 1)
        a, b = value_at(lo_i), value_at(hi_i)
        out[f"p{q}"] = a + (b - a) * (pos - lo_i)
    return out


async def _group_stats(
    db: aiosqlite.Connection, since: dict[str, int]
) -> dict[str, tuple[PairStats, dict[str, Decimal]]]:
    """Per period: core.pnl.PairStats fed with the groups closed in it, in closing order (so
    groups, hit rate, PnL and slippage are the runtime's own definitions and arithmetic), and
    the groups' fees per pair.

    The slippage of a group is what `core.pnl.group_pnl` computed when it closed (the `pnl` of
    its last `group_state` event; groups closed before version 3 have none).
    """
    rows = await _all(
        db,
        "SELECT g.group_id, g.pair, g.state, g.closed_at_ms, g.realized_pnl, g.fees, g.expected_edge_bps, "
        "json_extract(p.payload, '$.pnl.realized_edge_bps') AS realized_edge_bps, "
        "json_extract(p.payload, '$.pnl.latency_slippage_bps') AS latency_bps, "
        "json_extract(p.payload, '$.pnl.impact_slippage_bps') AS impact_bps, "
        "json_extract(p.payload, '$.outcome') AS outcome "
        "FROM hedge_groups g LEFT JOIN events p ON p.seq = ("
        "  SELECT max(e.seq) FROM events e WHERE e.group_id = g.group_id AND e.kind = 'group_state') "
        f"WHERE g.state IN ({_marks(CLOSED_STATES)}) ORDER BY coalesce(g.closed_at_ms, 0), g.group_id",
        CLOSED_STATES,
    )
    out = {name: (PairStats(), dict[str, Decimal]()) for name in since}
    for row in rows:
        pnl = GroupPnl(
            group_id=row["group_id"],
            pair=row["pair"],
            state=row["outcome"] or row["state"],  # a closed group is a hit as its execution ended
            realized_pnl=Decimal(row["realized_pnl"]),
            fees={},
            expected_edge_bps=float(row["expected_edge_bps"] or 0.0),
            realized_edge_bps=_float(row["realized_edge_bps"]),
            latency_slippage_bps=_float(row["latency_bps"]),
            impact_slippage_bps=_float(row["impact_bps"]),
        )
        closed_ms = int(row["closed_at_ms"] or 0)
        for name, start in since.items():
            if closed_ms >= start:
                stats, fees = out[name]
                stats.record_group(pnl)
                if row["state"] != GroupState.REJECTED.value:
                    fees[row["pair"]] = fees.get(row["pair"], Decimal(0)) + Decimal(row["fees"])
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def _decision_stats(
    db: aiosqlite.Connection, since: dict[str, int]
) -> dict[str, dict[str, tuple[int, int, dict[tuple[int, float], int]]]]:
    """Per period and pair: (decisions, intents, merged edge histogram) from `decision_stats`
    rows whose interval starts in the period."""
    out: dict[str, dict[str, tuple[int, int, dict[tuple[int, float], int]]]] = {name: {} for name in since}
    if "decision_stats" not in await table_names(db):
        return out
    for r in await _all(db, "SELECT pair, start_ms, decisions, intents, edge_bucket_bps, edge_histogram "
                            "FROM decision_stats ORDER BY event_id"):
        try:
            hist = ev.histogram_from_json(r["edge_histogram"])
        except ValueError as exc:
            raise LedgerError(f"decision_stats row of {r['pair']} at {r['start_ms']}: {exc}") from None
        width = float(r["edge_bucket_bps"])
        for name, start in since.items():
            if int(r["start_ms"]) < start:
                continue
            decisions, intents, merged = out[name].get(r["pair"], (0, 0, {}))
            for k, c in hist.items():
                merged[(k, width)] = merged.get((k, width), 0) + c
            out[name][r["pair"]] = (decisions + int(r["decisions"]), intents + int(r["intents"]), merged)
    return out


async def pair_summaries(db: aiosqlite.Connection, since: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per period name in `since` ({"today": ms, ...}) and pair: the runtime's per-pair figures
    (core.pnl.PairSummary.as_dict's keys) computed from the ledger alone, plus hits, fees and
    the number of groups with a slippage figure."""
    group_stats = await _group_stats(db, since)
    decisions = await _decision_stats(db, since)
    out: dict[str, dict[str, Any]] = {}
    for name in since:
        stats, fees = group_stats[name]
        snapshot = stats.snapshot()
        pairs: dict[str, Any] = {}
        for pair in sorted(set(snapshot) | set(decisions[name])):
            s = snapshot.get(pair)
            n_dec, n_int, hist = decisions[name].get(pair, (0, 0, {}))
            pairs[pair] = {
                "groups": s.groups if s else 0,
                "hits": s.hits if s else 0,
                "hit_rate": s.hit_rate if s else 0.0,
                "total_pnl": _text(s.total_pnl if s else Decimal(0)),
                "fees": _text(fees.get(pair, Decimal(0))),
                "mean_slippage_bps": s.mean_slippage_bps if s else None,
                "slippage_groups": s.slippage_n if s else 0,
                "decisions": n_dec,
                "intents": n_int,
                "trigger_rate": n_int / n_dec if n_dec else 0.0,
                "edge_bps": edge_percentiles(hist),
            }
        out[name] = pairs
    return out


async def dust(db: aiosqlite.Connection) -> dict[str, str]:
    """The dust book as last journaled: non-zero totals per pair (exact decimal strings)."""
    if "dust" not in await table_names(db):
        return {}
    return {str(r[0]): str(r[1]) for r in await _all(db, "SELECT pair, qty FROM dust ORDER BY pair")
            if Decimal(r[1]) != 0}


async def last_breakers(db: aiosqlite.Connection) -> dict[str, Any]:
    """The breaker map of the latest risk event that carried one (as journaled), else {}."""
    rows = await _all(
        db,
        "SELECT json_extract(e.payload, '$.breakers') FROM risk_events r JOIN events e ON e.seq = r.event_id "
        "WHERE json_type(e.payload, '$.breakers') IS NOT NULL ORDER BY r.event_id DESC LIMIT 1",
    )
    if not rows:
        return {}
    value = ev.decode_json(rows[0][0])
    return value if isinstance(value, dict) else {}


async def decisions_by_reason(db: aiosqlite.Connection) -> dict[str, int]:
    """Rows of the decision log per reason, most first. The log is sampled (every intent, at
    most one blocked decision per pair, direction and reason a second), so these count the
    seconds in which a reason occurred rather than every decision; a refusal such as
    `price_outlier` or `edge_above_ceiling` shows here whenever it happened."""
    rows = await _all(db, "SELECT reason, count(*) AS n FROM decisions GROUP BY reason ORDER BY n DESC, reason")
    return {str(r[0]): int(r[1]) for r in rows}


async def summary(
    db: aiosqlite.Connection,
    *,
    now_ms: int | None = None,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    marks: Mapping[tuple[Venue, str], Decimal] | None = None,
    instruments: Mapping[tuple[Venue, str], Instrument] | None = None,
) -> dict[str, Any]:
    """Groups by state, fills, fees, realized PnL, and per pair the monitor and PnL statistics:
    today (since midnight UTC) and all time; the trading state with its breakers; the dust book;
    and `equity`, the money truth recomputed from the fills (`ledger.money.equity`: realized,
    unrealized, fees, carry, total in `account_ccy`, converted with the engine's journaled rates
    over the typed `rates`, `rate_overrides` (`--rate`) over both; with the `marks` and extra
    `instruments` given).

    A period counts the groups *opened* in it, the fills *executed* in it, and the realized
    PnL of the groups *closed* in it (every terminal state but rejected); per pair, the
    groups closed in it (as core.pnl.PairStats does) and the decision intervals that start
    in it (`decision_stats`: up to one interval behind a running engine).
    """
    if now_ms is None:
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
    today = day_start_ms(now_ms)
    last = await _all(db, "SELECT ts_ms, kind, reason, trading_state FROM risk_events WHERE kind != 'setting' "
                      "ORDER BY event_id DESC LIMIT 1")
    trading: dict[str, Any] = (
        {"state": last[0]["trading_state"], "reason": last[0]["reason"], "since_ms": last[0]["ts_ms"],
         "last_event": last[0]["kind"]}
        if last
        else {"state": "active", "reason": "", "since_ms": None, "last_event": None}
    )
    trading["breakers"] = await last_breakers(db)
    pairs = await pair_summaries(db, {"today": today, "all_time": 0})
    today_doc, all_doc = await _period(db, today), await _period(db, 0)
    today_doc["pairs"], all_doc["pairs"] = pairs["today"], pairs["all_time"]
    history = await money.read_history(db, nets=True)  # the equity and the flatten line: one read
    return {
        "ledger": await ledger_path(db),
        "schema_version": await schema_version(db),
        "as_of_ms": now_ms,
        "day_start_ms": today,
        "trading_state": trading,
        "open_groups": int(
            await _one(db, f"SELECT count(*) FROM hedge_groups WHERE state IN ({_marks(OPEN_STATES)})", OPEN_STATES)
        ),
        "open_orders": int(await _one(db, f"SELECT count(*) FROM orders WHERE {OPEN_ORDERS_WHERE}")),
        "events": int(await _one(db, "SELECT count(*) FROM events")),
        "last_seq": int(await _one(db, "SELECT coalesce(max(seq), 0) FROM events")),
        "decisions": int(await _one(db, "SELECT count(*) FROM decisions")),
        "decisions_by_reason": await decisions_by_reason(db),
        "dust": await dust(db),
        "equity": money.equity_of(history, now_ms=now_ms, account_ccy=account_ccy, rates=rates,
                                  rate_overrides=rate_overrides, marks=marks, instruments=instruments),
        # What closing fills (a flatten) cost beyond the positions of the groups they closed.
        "flatten": money.group_money_doc(money.attribute(history, instruments).line),
        "today": today_doc,
        "all_time": all_doc,
    }


# -- groups --------------------------------------------------------------------------------
async def groups(
    db: aiosqlite.Connection,
    *,
    state: str | None = None,
    pair: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """hedge_groups rows, newest first, filtered by state (`open` = any non-terminal state),
    pair, and opening time in [since_ms, until_ms)."""
    where: list[str] = []
    params: list[Any] = []
    if state == "open":
        where.append(f"state IN ({_marks(OPEN_STATES)})")
        params.extend(OPEN_STATES)
    elif state:
        where.append("state = ?")
        params.append(state)
    if pair:
        where.append("pair = ?")
        params.append(pair)
    if since_ms is not None:
        where.append("opened_at_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("opened_at_ms < ?")
        params.append(until_ms)
    sql = "SELECT * FROM hedge_groups"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY opened_at_ms DESC, group_id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_dict(r) for r in await _all(db, sql, params)]


# -- show ----------------------------------------------------------------------------------
def _describe(kind: str, p: dict[str, Any]) -> str:
    if kind == ev.DECISION:
        return f"decision {p['outcome']} {p['reason']} edge {p['edge_bps']} bps"
    if kind == ev.GROUP_OPENED:
        return (f"opened {p['pair']} buy {p['buy_venue']} sell {p['sell_venue']} qty {p['target_qty']} "
                f"expected {p['expected_edge_bps']} bps")
    if kind == ev.GROUP_STATE:
        return f"group -> {p['state']} pnl {p['realized_pnl']} fees {p['fees']} residual {p['residual']}"
    if kind == ev.ORDER_CREATED:
        return (f"order {p['client_order_id']} {p['purpose']} {p['venue']} {p['side']} {p['qty']} {p['symbol']} "
                f"@ {p['price']}")
    if kind == ev.ORDER_STATE:
        reason = f" ({p['reject_reason']})" if p.get("reject_reason") else ""
        return f"order {p['client_order_id']} -> {p['state']} filled {p['filled_qty']}{reason}"
    if kind == ev.FILL:
        return (f"fill {p['venue']}:{p['venue_trade_id']} {p['qty']} @ {p['price']} fee {p['fee']} {p['fee_ccy']} "
                f"for {p['client_order_id']}")
    if kind == ev.COMPENSATION:
        return f"compensation {p['action_id']} {p['kind']} {p['outcome']}: {p['reason']}"
    if kind == ev.MT5_COMMAND:
        return f"mt5 command {p['command_id']} {p['kind']} {p['side']} {p['volume']} {p['symbol']} -> {p['state']}"
    if kind == ev.NET:
        return (f"net {p['qty']} {p['venue']}:{p['symbol']} at {p['price']}: {p['long_group']} sold to "
                f"{p['short_group']}")
    if kind == OPERATOR_AUDIT:
        return f"operator {p['action']} by {p['actor']}: {p['reason']}"
    return kind


async def show(db: aiosqlite.Connection, group_id: str) -> dict[str, Any] | None:
    """One group's story: the group row, its decision and intent, orders with their fills,
    compensation, PnL, and the timeline of its journal events. None if there is no such group."""
    rows = await _all(db, "SELECT * FROM hedge_groups WHERE group_id = ?", (group_id,))
    if not rows:
        return None
    group = _dict(rows[0])
    timeline: list[dict[str, Any]] = []
    decision: dict[str, Any] | None = None
    intent: dict[str, Any] | None = None
    for r in await _all(db, "SELECT seq, ts_ms, kind, payload FROM events WHERE group_id = ? ORDER BY seq",
                        (group_id,)):
        payload = ev.decode_payload(r["payload"])
        if r["kind"] == ev.DECISION and decision is None:
            decision = payload
        elif r["kind"] == ev.GROUP_OPENED:
            intent = payload["intent"]
        timeline.append({"seq": r["seq"], "ts_ms": r["ts_ms"], "kind": r["kind"],
                         "text": _describe(r["kind"], payload), "payload": payload})
    # A net names two groups in its payload, not in the row's group_id: found by either.
    for r in await _all(db, "SELECT seq, ts_ms, kind, payload FROM events WHERE kind = ? AND "
                            "(json_extract(payload, '$.long_group') = ? OR json_extract(payload, '$.short_group') = ?)",
                        (ev.NET, group_id, group_id)):
        payload = ev.decode_payload(r["payload"])
        timeline.append({"seq": r["seq"], "ts_ms": r["ts_ms"], "kind": r["kind"],
                         "text": _describe(r["kind"], payload), "payload": payload})
    timeline.sort(key=lambda t: int(t["seq"]))
    orders = [_dict(r) for r in await _all(
        db, "SELECT * FROM orders WHERE group_id = ? ORDER BY created_at_ms, order_id", (group_id,))]
    fills_by_order: dict[str, list[dict[str, Any]]] = {}
    fees: dict[str, Decimal] = {}
    for r in await _all(
        db,
        "SELECT f.* FROM fills f JOIN orders o ON o.order_id = f.order_id WHERE o.group_id = ? ORDER BY f.fill_id",
        (group_id,),
    ):
        fills_by_order.setdefault(r["order_id"], []).append(_dict(r))
        fees[r["fee_ccy"]] = fees.get(r["fee_ccy"], Decimal(0)) + Decimal(r["fee"])
    for order in orders:
        fs = fills_by_order.get(order["order_id"], [])
        order["fills"] = fs
        order["filled_qty"] = _text(_sum(f["qty"] for f in fs))
    actions = [_dict(r) for r in await _all(
        db, "SELECT * FROM compensation_actions WHERE group_id = ? ORDER BY created_at_ms, action_id", (group_id,))]
    return {
        "group": group,
        "decision": decision,
        "intent": intent,
        "orders": orders,
        "compensation": actions,
        "pnl": {
            "realized_pnl": group["realized_pnl"],
            "fees": group["fees"],
            "fees_by_ccy": {ccy: _text(v) for ccy, v in sorted(fees.items())},
            "closed": group["state"] in CLOSED_STATES,
        },
        # Its money with what closing orders (a flatten's share) brought (`core.attribution`).
        "attribution": _attributed(await money.group_attribution(db), group_id),
        "timeline": timeline,
    }


def _attributed(attribution: Attribution, group_id: str) -> dict[str, Any] | None:
    g = attribution.group(group_id)
    return None if g is None else money.group_money_doc(g)


# -- export --------------------------------------------------------------------------------
async def export(
    db: aiosqlite.Connection,
    out: TextIO,
    fmt: ExportFormat = "json",
    *,
    table: str | None = None,
) -> int:
    """Write public tables to `out`; returns the number of rows written.

    json: one document `{"schema_version": N, "tables": {name: [row objects]}}` with every
    public table and the statistics tables the file has (or only `table`); the journal's
    payloads and the edge histograms are embedded as JSON.
    csv: one table (default `hedge_groups`) with a header row; payloads stay JSON text.
    """
    if table is not None and table not in EXPORTABLE:
        raise LedgerError(f"cannot export {table!r}: choose one of {', '.join(EXPORTABLE)}")
    present = await table_names(db)
    if table is not None and table not in present:
        raise LedgerError(f"cannot export {table!r}: this ledger (schema version {await schema_version(db)}) "
                          "has no such table")
    if fmt == "csv":
        name = table or "hedge_groups"
        writer = csv.writer(out, lineterminator="\n")
        async with db.execute(f"SELECT * FROM {name} ORDER BY rowid") as cur:
            writer.writerow([d[0] for d in cur.description])
            count = 0
            async for row in cur:
                writer.writerow(["" if v is None else v for v in row])
                count += 1
        return count
    if fmt != "json":
        raise LedgerError(f"unknown export format {fmt!r}: csv or json")
    names = [table] if table else [t for t in (*PUBLIC_TABLES, *STATS_TABLES) if t in present]
    out.write(f'{{"schema_version": {await schema_version(db)}, "tables": {{')
    count = 0
    for i, name in enumerate(names):
        out.write(("" if i == 0 else ", ") + json.dumps(name) + ": [")
        first = True
        async with db.execute(f"SELECT * FROM {name} ORDER BY rowid") as cur:
            async for row in cur:
                record = _dict(row)
                if name == "events":
                    record["payload"] = ev.decode_payload(record["payload"])
                elif name == "mt5_commands":
                    record["fills"] = ev.decode_json(record["fills"])
                elif name == "decision_stats":
                    record["edge_histogram"] = ev.decode_json(record["edge_histogram"])
                out.write(("" if first else ", ") + ev.encode_payload(record))
                first = False
                count += 1
        out.write("]")
    out.write("}}\n")
    return count


# -- check ---------------------------------------------------------------------------------
async def rebuild_projections_and_compare(db: aiosqlite.Connection) -> dict[str, Any]:
    """Replay the ledger's journal into a fresh temporary database and compare every projection.

    Reads the ledger in one read transaction, so a running writer cannot make it disagree
    with itself. Per table: row counts and up to EXAMPLES rows found only in the ledger or
    only in the rebuild (`decisions` is compared with its rowid, the others by whole rows).
    """
    path = await ledger_path(db)
    if not path:
        raise LedgerError("rebuild needs a ledger file, not an in-memory database")
    tmp = await aiosqlite.connect("file:", uri=True, isolation_level=None)
    try:
        for statement in current_statements():
            await tmp.execute(statement)
        await tmp.execute("ATTACH DATABASE ? AS src", (await asyncio.to_thread(reader_uri, Path(path)),))
        await tmp.execute("BEGIN")
        try:
            replayed = await rebuild_from("src", tmp)
            in_src = await table_names(tmp, "src")
            tables: dict[str, Any] = {}
            for name in PROJECTION_TABLES:
                if name not in in_src:
                    # An older ledger (readers never migrate): its journal cannot hold these
                    # kinds, so the rebuilt table must be empty.
                    rebuilt = int(await _one(tmp, f"SELECT count(*) FROM main.{name}"))
                    tables[name] = {"ok": rebuilt == 0, "ledger_rows": None, "rebuilt_rows": rebuilt,
                                    "only_in_ledger": [], "only_in_rebuild": []}
                    continue
                cols_rows = await _all(tmp, f"PRAGMA main.table_info({name})")
                cols = ", ".join(str(r[1]) for r in cols_rows)
                if name == "decisions":
                    cols = "rowid, " + cols
                live = int(await _one(tmp, f"SELECT count(*) FROM src.{name}"))
                rebuilt = int(await _one(tmp, f"SELECT count(*) FROM main.{name}"))
                only_live = await _all(
                    tmp, f"SELECT {cols} FROM src.{name} EXCEPT SELECT {cols} FROM main.{name} LIMIT {EXAMPLES}")
                only_rebuilt = await _all(
                    tmp, f"SELECT {cols} FROM main.{name} EXCEPT SELECT {cols} FROM src.{name} LIMIT {EXAMPLES}")
                tables[name] = {
                    "ok": live == rebuilt and not only_live and not only_rebuilt,
                    "ledger_rows": live,
                    "rebuilt_rows": rebuilt,
                    "only_in_ledger": [list(r) for r in only_live],
                    "only_in_rebuild": [list(r) for r in only_rebuilt],
                }
        finally:
            await tmp.execute("ROLLBACK")
            await tmp.execute("DETACH DATABASE src")
    finally:
        await tmp.close()
    return {"ok": all(t["ok"] for t in tables.values()), "events_replayed": replayed, "tables": tables}


def _result(name: str, description: str, rows: list[sqlite3.Row], count: int | None = None) -> dict[str, Any]:
    n = len(rows) if count is None else count
    return {"name": name, "ok": n == 0, "description": description, "count": n,
            "examples": [list(r) for r in rows[:EXAMPLES]]}


async def check(db: aiosqlite.Connection) -> dict[str, Any]:
    """The ledger's invariants; `ok` is true only when every check passes.

    integrity (SQLite quick_check), fills_have_orders, orders_have_group_or_flatten,
    unique_client_order_ids (journal and table), fills_match_orders, projections_match_journal.
    A damaged file (quick_check's findings, or SQLite calling it malformed half-way through:
    a `readable` check) gets `damaged: true` and no further checks, which would read garbage.
    """
    damage = await _quick_check(db)
    checks: list[dict[str, Any]] = [{
        "name": "integrity", "ok": not damage, "description": "SQLite quick_check reports no corruption",
        "count": len(damage), "examples": [[line] for line in damage[:EXAMPLES]],
    }]
    replayed = 0
    if not damage:
        try:
            more, replayed = await _invariants(db)
            checks += more
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not is_damage(exc):
                raise
            damage = [damage_text(exc)]
            checks.append({"name": "readable", "ok": False, "count": 1, "examples": [[damage[0]]],
                           "description": "every table reads without an SQLite error"})
    return {
        "ok": all(c["ok"] for c in checks),
        "damaged": bool(damage),
        "ledger": await ledger_path(db),
        "schema_version": await schema_version(db),
        "code_schema_version": SCHEMA_VERSION,
        "last_seq": await _last_seq(db),
        "events_replayed": replayed,
        "checks": checks,
    }


async def _quick_check(db: aiosqlite.Connection) -> list[str]:
    """What `PRAGMA quick_check` finds wrong, one line per problem; [] for an intact file."""
    found: list[str] = []
    try:
        async with db.execute("PRAGMA quick_check") as cur:
            async for row in cur:  # row by row: keep what it found before an error stops it
                if row[0] != "ok":
                    found += [line for line in str(row[0]).splitlines()
                              if line and not line.startswith("*** in database")]
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        found.append(damage_text(exc))
    return [printable(line) for line in found]


async def _last_seq(db: aiosqlite.Connection) -> int | None:
    """The journal's last seq; None when a damaged file cannot say."""
    try:
        return int(await _one(db, "SELECT coalesce(max(seq), 0) FROM events"))
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        return None


async def _invariants(db: aiosqlite.Connection) -> tuple[list[dict[str, Any]], int]:
    """Every check after integrity (on a file quick_check passed), and the events replayed."""
    checks: list[dict[str, Any]] = []
    orphan_fills = await _all(
        db,
        "SELECT f.fill_id, f.order_id, f.venue, f.venue_trade_id FROM fills f "
        "LEFT JOIN orders o ON o.order_id = f.order_id WHERE o.order_id IS NULL ORDER BY f.fill_id",
    )
    checks.append(_result("fills_have_orders", "every fill belongs to a recorded order", orphan_fills))

    orphan_orders = await _all(
        db,
        "SELECT o.order_id, o.group_id, o.purpose FROM orders o "
        "LEFT JOIN hedge_groups g ON g.group_id = o.group_id "
        "WHERE g.group_id IS NULL AND o.purpose <> 'flatten' ORDER BY o.created_at_ms",
    )
    checks.append(_result("orders_have_group_or_flatten",
                          "every order belongs to a hedge group or is a flatten order", orphan_orders))

    duplicates = await _all(
        db,
        "SELECT json_extract(payload, '$.client_order_id') AS coid, count(*) FROM events "
        "WHERE kind = 'order_created' GROUP BY coid HAVING count(*) > 1 "
        "UNION ALL SELECT client_order_id, count(*) FROM orders GROUP BY client_order_id HAVING count(*) > 1",
    )
    checks.append(_result("unique_client_order_ids",
                          "no client order id was created twice (journal) or stored twice (orders)", duplicates))

    # A fill lost (e.g. a venue trade id reused across runs and silently dropped) or doubled
    # shows as filled orders whose fills do not add up to their quantity. Quantities are
    # exact decimal strings; the comparison allows only float rounding.
    fills_mismatch = await _all(
        db,
        "SELECT o.order_id, o.venue, o.qty, coalesce(sum(CAST(f.qty AS REAL)), 0) AS filled "
        "FROM orders o LEFT JOIN fills f ON f.order_id = o.order_id "
        "GROUP BY o.order_id HAVING (o.state = 'filled' AND abs(filled - CAST(o.qty AS REAL)) > 1e-9) "
        "OR filled > CAST(o.qty AS REAL) + 1e-9 ORDER BY o.order_id",
    )
    checks.append(_result("fills_match_orders",
                          "a filled order's fills add up to its quantity; no order is overfilled", fills_mismatch))

    rebuild = await rebuild_projections_and_compare(db)
    bad_tables = [name for name, t in rebuild["tables"].items() if not t["ok"]]
    checks.append({
        "name": "projections_match_journal",
        "ok": rebuild["ok"],
        "description": "every projection equals what its journal rebuilds",
        "count": len(bad_tables),
        "examples": [{"table": name, **rebuild["tables"][name]} for name in bad_tables],
    })
    return checks, int(rebuild["events_replayed"])
