"""Operator audit records: a manual action on the venues, journaled before it is done.

Closing one hedge group by hand and cancelling orders reconciliation quarantined are trades
(or cancels) no strategy decided; the ledger says who asked, why, when, and what was about to
be sent, in one `operator_audit` event written (and committed) before the first request
leaves. The event is kept in the journal only (no projection table): `audit_rows` reads them.

Payload: `action` ("close_group", "cancel_orphan"), `target` (a group id, or venue:client id),
`actor` (where it came from: "tui", "api 127.0.0.1", "cli alice"), `reason`, `ts_ms`, and
`detail` (a JSON object: the legs to send, the order to cancel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aiosqlite

from ledger import events as ev
from ledger.events import LedgerEvent

OPERATOR_AUDIT: Final = "operator_audit"
AUDIT_ACTIONS: frozenset[str] = frozenset({"close_group", "cancel_orphan"})
MAX_TEXT = 500


def audit_event(action: str, target: str, actor: str, reason: str, detail: Mapping[str, Any],
                ts_ms: int, *, group_id: str | None = None) -> LedgerEvent:
    """One audit record; `group_id` files it with a group (its detail screen's timeline)."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {sorted(AUDIT_ACTIONS)}")
    if not target or not actor:
        raise ValueError("an audit record needs a target and an actor")
    payload: dict[str, Any] = {"action": action, "target": target[:MAX_TEXT], "actor": actor[:MAX_TEXT],
                               "reason": reason[:MAX_TEXT], "ts_ms": ts_ms, "detail": dict(detail)}
    return LedgerEvent(OPERATOR_AUDIT, ts_ms, group_id, payload)


async def audit_rows(db: aiosqlite.Connection, action: str | None = None) -> list[dict[str, Any]]:
    """Every audit record (of `action` when given), oldest first, with its journal seq."""
    sql = "SELECT seq, ts_ms, group_id, payload FROM events WHERE kind = ?"
    params: list[Any] = [OPERATOR_AUDIT]
    if action is not None:
        sql += " AND json_extract(payload, '$.action') = ?"
        params.append(action)
    async with db.execute(sql + " ORDER BY seq", params) as cur:
        rows = list(await cur.fetchall())
    return [{"seq": r["seq"], "ts_ms": r["ts_ms"], "group_id": r["group_id"], **ev.decode_payload(r["payload"])}
            for r in rows]
