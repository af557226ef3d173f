"""One hedge group rebuilt from the ledger, whatever its state (an operator closing a group
that closed before this run started: the orchestrator keeps only the recent ones in memory)."""

from __future__ import annotations

from typing import Any

import aiosqlite

from core.hedge import HedgeGroup
from core.models import CompensationAction, CompensationKind, Fill, GroupState
from ledger import events as ev
from ledger.ledger import _order_from_row


async def _rows(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    async with db.execute(sql, params) as cur:
        return list(await cur.fetchall())


async def load_group(db: aiosqlite.Connection, group_id: str) -> HedgeGroup | None:
    """The group with every order (its fills applied) and compensation action; None when the
    ledger has no such group."""
    groups = await _rows(db, "SELECT * FROM hedge_groups WHERE group_id = ?", (group_id,))
    opened = await _rows(db, "SELECT payload FROM events WHERE kind = ? AND group_id = ? ORDER BY seq LIMIT 1",
                         (ev.GROUP_OPENED, group_id))
    if not groups or not opened:
        return None
    row, payload = groups[0], ev.decode_payload(opened[0]["payload"])
    fills: dict[str, list[Fill]] = {}
    for r in await _rows(db, "SELECT f.* FROM fills f JOIN orders o ON o.order_id = f.order_id "
                         "WHERE o.group_id = ? ORDER BY f.fill_id", (group_id,)):
        fills.setdefault(r["order_id"], []).append(Fill(
            venue=r["venue"], venue_trade_id=r["venue_trade_id"], client_order_id=r["order_id"],
            qty=ev.decimal_from(r["qty"], "fill qty"), price=ev.decimal_from(r["price"], "fill price"),
            fee=ev.decimal_from(r["fee"], "fill fee"), fee_ccy=r["fee_ccy"], ts_ms=int(r["ts_ms"])))
    orders = [_order_from_row(r, fills.get(r["order_id"], []))
              for r in await _rows(db, "SELECT * FROM orders WHERE group_id = ? ORDER BY created_at_ms, order_id",
                                   (group_id,))]
    actions = [CompensationAction(action_id=r["action_id"], group_id=r["group_id"], kind=CompensationKind(r["kind"]),
                                  reason=r["reason"], created_ms=int(r["created_at_ms"]), outcome=r["outcome"])
               for r in await _rows(db, "SELECT * FROM compensation_actions WHERE group_id = ? "
                                    "ORDER BY created_at_ms, action_id", (group_id,))]
    return HedgeGroup(
        group_id=group_id,
        intent=ev.intent_from_payload(payload["intent"]),
        instruments={venue: ev.instrument_from_payload(inst) for venue, inst in payload["instruments"].items()},
        opened_ms=int(row["opened_at_ms"]),
        state=GroupState(row["state"]),
        orders=orders,
        actions=actions,
        closed_ms=int(row["closed_at_ms"] or 0),
    )
