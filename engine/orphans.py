"""Orphan cleanup: cancel the open orders reconciliation quarantined, on the operator's word.

Reconciliation (engine.reconcile) reports an open order on a live venue that the ledger does
not own (placed on the venue's web page, by another program, or ours but lost before its row
was committed) and never touches it. This is the operator's action on that report: for each
order quarantined as open, and only those, the venue's open orders and the ledger are read
once more (the order may be gone; the ledger may have caught up with one of ours, and what the
ledger owns is never cancelled here), an audit record (who, why, which order) is committed,
then the cancel is sent by client order id and the venue asked again. Each order's result:
`cancelled`, `gone` (no longer open, nothing sent), `kept` (the ledger owns it) or `failed`
with the reason. Cancelled and gone orders leave the quarantine list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from core.clock import Clock
from core.models import OrderState, Venue
from core.ports import OrderUpdate
from engine.control import ControlRefused
from engine.live_venues import OpenOrder
from engine.operator_audit import OperatorAudit
from engine.reconcile import Quarantined, Reconciler

Owned = Callable[[list[str]], Awaitable[set[str]]]  # which of these client ids the ledger has


@runtime_checkable
class CancelsOpenOrders(Protocol):
    async def open_orders(self) -> list[OpenOrder]: ...

    async def cancel_open(self, order: OpenOrder) -> OrderUpdate: ...


def _said(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]


class OrphanCleaner:
    def __init__(self, reconciler: Callable[[], Reconciler | None], owned: Owned, audit: OperatorAudit,
                 clock: Clock) -> None:
        self._reconciler = reconciler
        self._owned = owned
        self._audit = audit
        self._clock = clock

    def listed(self) -> list[Quarantined]:
        """The orders a cleanup would cancel: quarantined as open, oldest first."""
        rec = self._reconciler()
        if rec is None:
            return []
        return sorted((q for q in rec.quarantined.values() if q.open_order), key=lambda q: (q.since_ms, q.venue))

    async def cancel(self, reason: str, actor: str) -> dict[str, Any]:
        rec = self._reconciler()
        if rec is None:
            raise ControlRefused("no reconciliation runs here (paper mode): no order is quarantined")
        targets = self.listed()
        if not targets:
            raise ControlRefused("no open order is quarantined: nothing to cancel")
        owned = await self._owned([q.client_order_id for q in targets])
        results: list[dict[str, str]] = []
        for venue in sorted({q.venue for q in targets}):
            mine = [q for q in targets if q.venue == venue]
            account = rec.account(venue)
            if not isinstance(account, CancelsOpenOrders):
                results += [self._row(q, "failed", "this venue's account cannot cancel orders") for q in mine]
                continue
            try:
                open_now = {o.client_order_id: o for o in await account.open_orders()}
            except Exception as exc:
                results += [self._row(q, "failed", f"the venue's open orders could not be read: {_said(exc)}")
                            for q in mine]
                continue
            for q in mine:
                results.append(await self._one(rec, account, venue, q, open_now.get(q.client_order_id),
                                               q.client_order_id in owned, reason, actor))
        counts = {k: sum(1 for r in results if r["result"] == k) for k in ("cancelled", "gone", "kept", "failed")}
        message = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing done"
        return {"results": results, "counts": counts, "message": f"orphan cleanup: {message}"}

    async def _one(self, rec: Reconciler, account: CancelsOpenOrders, venue: Venue, q: Quarantined,
                   now_open: OpenOrder | None, owned: bool, reason: str, actor: str) -> dict[str, str]:
        if owned:
            return self._row(q, "kept", "the ledger owns this order: never cancelled by a cleanup")
        if now_open is None:
            rec.release(venue, q.client_order_id)
            return self._row(q, "gone", "no longer open on the venue: nothing sent")
        target = OpenOrder(q.client_order_id, now_open.venue_order_id, now_open.symbol or q.symbol)
        try:
            await self._audit.record("cancel_orphan", f"{venue}:{q.client_order_id}", actor, reason,
                                     {"venue": venue, "client_order_id": q.client_order_id,
                                      "venue_order_id": target.venue_order_id, "symbol": target.symbol,
                                      "quarantined": q.reason})
        except ControlRefused as exc:  # not journaled: not sent
            return self._row(q, "failed", str(exc))
        try:
            update = await account.cancel_open(target)
            still = any(o.client_order_id == q.client_order_id for o in await account.open_orders())
        except Exception as exc:
            return self._row(q, "failed", f"cancel not confirmed: {_said(exc)}")
        said = f"{update.state}: {update.reason}" if update.reason else str(update.state)
        if still:
            return self._row(q, "failed", f"still open on the venue ({said})")
        rec.release(venue, q.client_order_id)
        if update.state is OrderState.CANCELLED:
            return self._row(q, "cancelled", f"cancelled on {venue}")
        return self._row(q, "gone", f"no longer open ({said})")

    @staticmethod
    def _row(q: Quarantined, result: str, detail: str) -> dict[str, str]:
        return {"venue": q.venue, "client_order_id": q.client_order_id, "result": result, "detail": detail}
