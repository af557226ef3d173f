"""Analytics from the ledger alone: the equity curve and trade statistics (the TUI's analytics
screen reads it through `engine.view_model.ViewModel.analytics`).

- The curve is `ledger.money.equity_series` (every position marked at its symbol's last fill
  price at each point): a point per fill while there are at most POINTS fills, else one per
  interval chosen so that a long ledger still gives a few hundred points.
- The statistics are `core.trade_stats` over the groups closed with a PnL (every terminal state
  but rejected), overall and per pair: the group's `realized_pnl` (its own legs' cash flows
  after fees, compensation included) and the slippage `core.pnl` computed when it closed. Carry
  is what the ledger records (MT5 swap), per asset, over the hours the asset was held, replayed
  from the fills.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiosqlite

from core.holdings import holdings
from core.instruments import Instrument
from core.trade_stats import GroupOutcome, HeldClock, trade_stats
from ledger import money
from ledger.queries import PNL_STATES

Key = money.Key
POINTS = 300  # at most about this many points on the curve, whatever the ledger's span
MIN_INTERVAL_MS = 1000


async def group_outcomes(db: aiosqlite.Connection, since_ms: int = 0) -> list[GroupOutcome]:
    """The groups closed since `since_ms` with a PnL, in closing order."""
    marks = ", ".join("?" for _ in PNL_STATES)
    async with db.execute(
        "SELECT g.pair, g.realized_pnl, "
        "json_extract(p.payload, '$.pnl.latency_slippage_bps'), json_extract(p.payload, '$.pnl.impact_slippage_bps') "
        "FROM hedge_groups g LEFT JOIN events p ON p.seq = ("
        "  SELECT max(e.seq) FROM events e WHERE e.group_id = g.group_id AND e.kind = 'group_state') "
        f"WHERE g.state IN ({marks}) AND coalesce(g.closed_at_ms, 0) >= ? "
        "ORDER BY coalesce(g.closed_at_ms, 0), g.group_id",
        (*PNL_STATES, since_ms),
    ) as cur:
        rows = list(await cur.fetchall())
    out: list[GroupOutcome] = []
    for pair, pnl, latency, impact in rows:
        slip = None if latency is None and impact is None else float(latency or 0.0) + float(impact or 0.0)
        out.append(GroupOutcome(str(pair), Decimal(pnl), slip))
    return out


async def held_ms(
    db: aiosqlite.Connection, *, now_ms: int, instruments: Mapping[Key, Instrument] | None = None
) -> dict[str, int]:
    """Per asset, how long it has been held (ms), replaying the fills in time order."""
    return held_ms_of(await money.read_history(db, rates=False), now_ms=now_ms, instruments=instruments)


def held_ms_of(
    history: money.History, *, now_ms: int, instruments: Mapping[Key, Instrument] | None = None
) -> dict[str, int]:
    """`held_ms` from the ledger's history already read."""
    known = history.known(instruments)
    replay = money.new_replay(known)
    clock = HeldClock()
    rates = money.rate_book("USD", {}, 0)  # only quantities are read: no money is converted
    for row in history.fills:
        money.apply_fill(replay, row)
        if not replay.portfolio.has(row.venue, row.symbol):
            continue
        asset = replay.portfolio.instrument(row.venue, row.symbol).pair
        views = [v for v in replay.portfolio.positions(row.ts_ms) if v.asset == asset]
        held = any(h.held for h in holdings(views, known, rates))
        clock.update(asset, held, row.ts_ms)
    return clock.held_ms(now_ms)


async def analytics(
    db: aiosqlite.Connection,
    *,
    now_ms: int,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> dict[str, Any]:
    """`series` (the equity curve: `money.equity_series`' document), `stats` (overall) and
    `pairs` (per pair: `core.trade_stats.TradeStats.as_dict`)."""
    async with db.execute("SELECT count(*), min(ts_ms), max(ts_ms) FROM fills") as cur:
        count, first, last = (await cur.fetchone()) or (0, None, None)
    span = int(last) - int(first) if first is not None and last is not None else 0
    interval = 0 if int(count or 0) <= POINTS else max(
        MIN_INTERVAL_MS, math.ceil(span / POINTS / MIN_INTERVAL_MS) * MIN_INTERVAL_MS)
    # The ledger read once: the curve's pass ends with the whole replay, whose carry (not its
    # marks) is read here.
    history = await money.read_history(db)
    series, replay = money.series_of(history, interval_ms=interval, account_ccy=account_ccy, rates=rates,
                                     rate_overrides=rate_overrides, instruments=instruments)
    book = money.rates_in_force(history.rate_rows(), account_ccy, rates, rate_overrides).book(now_ms)
    carry: dict[str, Decimal | None] = {}
    for v in replay.portfolio.positions(now_ms, include_flat=True):
        amount = book.total((c, ccy) for ccy, c in v.carry.items())
        prior = carry.get(v.asset, Decimal(0))
        carry[v.asset] = None if prior is None or amount is None else prior + amount
    held = held_ms_of(history, now_ms=now_ms, instruments=instruments)
    outcomes = await group_outcomes(db)
    pairs: dict[str, Any] = {}
    for pair in sorted({o.pair for o in outcomes} | set(held)):
        pairs[pair] = trade_stats([o for o in outcomes if o.pair == pair], carry=carry.get(pair, Decimal(0)),
                                  held_ms=held.get(pair, 0)).as_dict()
    overall: Decimal | None = Decimal(0)
    for amount in carry.values():
        overall = None if overall is None or amount is None else overall + amount
    stats = trade_stats(outcomes, carry=overall, held_ms=sum(held.values())).as_dict()
    return {"currency": account_ccy, "as_of_ms": now_ms, "series": series, "stats": stats, "pairs": pairs,
            "carry_recorded": list(money.CARRY_RECORDED), "funding": money.FUNDING_NOTE}
