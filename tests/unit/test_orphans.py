"""Orphan cleanup's verdicts (engine.orphans), deterministic: the scripted venue account of
tests/unit/test_reconcile.py that can also cancel, a real ledger file, a real Reconciler.

Only orders quarantined as open are touched; one the ledger has come to own is kept; a cancel
the venue does not confirm is failed with the reason and stays quarantined; the audit record
is written before the cancel leaves, and without it nothing is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.models import OrderState
from core.ports import OrderUpdate
from engine.control import ControlRefused
from engine.live_venues import OpenOrder
from engine.operator_audit import OperatorAudit
from engine.orphans import OrphanCleaner
from ledger import queries
from tests.unit.test_reconcile import FakeAccount, Rig, fill, ours_in_ledger, rig


@dataclass
class CancellingAccount(FakeAccount):
    cancels: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # cancels that fail on the wire
    ignore: set[str] = field(default_factory=set)  # cancels the venue answers but does not do

    async def cancel_open(self, order: OpenOrder) -> OrderUpdate:
        self.cancels.append(order.client_order_id)
        if order.client_order_id in self.refuse:
            raise ConnectionError("venue timeout")
        if order.client_order_id in self.ignore:
            return OrderUpdate(order.client_order_id, OrderState.ACKED)
        self.orders = [o for o in self.orders if o.client_order_id != order.client_order_id]
        return OrderUpdate(order.client_order_id, OrderState.CANCELLED)


def cleaner(r: Rig, *, journal: bool = True) -> OrphanCleaner:
    async def owned(cids: list[str]) -> set[str]:
        return set(await r.ledger.read(queries.known_orders, cids))

    audit = OperatorAudit((lambda: r.journal) if journal else (lambda: None), r.events, r.clock,
                          ledger_configured=True)
    return OrphanCleaner(lambda: r.reconciler, owned, audit, r.clock)


def audits(r: Rig) -> list[dict[str, object]]:
    return [json.loads(str(p)) for (p,) in r.rows("SELECT payload FROM events WHERE kind = 'operator_audit' "
                                                  "ORDER BY seq")]


async def test_only_open_quarantined_orders_are_cancelled_and_each_is_audited_first(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        account = CancellingAccount("okx")
        r.reconciler._accounts = [account]  # the rig's venue, able to cancel
        account.orders = [OpenOrder("web1", "11", "BTC-USDT-SWAP"), OpenOrder("web2", "12", "")]
        await ours_in_ledger(r, "FL1")
        r.clock.advance(ms=1)
        account.fills = [fill("qaghost001l0a0", "t9", "1", r.clock.time_ms())]  # a fill: quarantined, not open
        r.clock.advance(ms=10_000)
        await r.reconciler.run_once()
        assert {cid for (_, cid) in r.reconciler.quarantined} == {"web1", "web2", "qaghost001l0a0"}
        c = cleaner(r)
        assert [q.client_order_id for q in c.listed()] == ["web1", "web2"]

        result = await c.cancel("colleague's web orders", "tui")

        assert result["results"] == [
            {"venue": "okx", "client_order_id": "web1", "result": "cancelled", "detail": "cancelled on okx"},
            {"venue": "okx", "client_order_id": "web2", "result": "cancelled", "detail": "cancelled on okx"}]
        assert result["message"] == "orphan cleanup: 2 cancelled"
        assert account.cancels == ["web1", "web2"] and account.orders == []
        assert [a["target"] for a in audits(r)] == ["okx:web1", "okx:web2"]
        assert {(a["actor"], a["reason"]) for a in audits(r)} == {("tui", "colleague's web orders")}
        assert list(r.reconciler.quarantined) == [("okx", "qaghost001l0a0")]  # the fill's report stays


async def test_an_order_the_ledger_owns_is_kept_and_a_failed_cancel_stays_quarantined(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        account = CancellingAccount("okx", refuse={"web1"}, ignore={"web2"})
        r.reconciler._accounts = [account]
        account.orders = [OpenOrder("web1", "11", "BTC-USDT-SWAP"), OpenOrder("web2", "12", "BTC-USDT-SWAP"),
                          OpenOrder("FL7", "13", "BTC-USDT-SWAP")]
        await r.reconciler.run_once()  # FL7: ours by its prefix, but the ledger does not know it yet
        assert len(r.reconciler.quarantined) == 3
        await ours_in_ledger(r, "FL7")  # ... and now it does (a commit that came late)

        result = await cleaner(r).cancel("tidy", "cli alice via api 127.0.0.1")

        by_id = {row["client_order_id"]: (row["result"], row["detail"]) for row in result["results"]}
        assert by_id == {
            "FL7": ("kept", "the ledger owns this order: never cancelled by a cleanup"),
            "web1": ("failed", "cancel not confirmed: venue timeout"),
            "web2": ("failed", "still open on the venue (acked)"),
        }
        assert account.cancels == ["web1", "web2"]  # never FL7
        assert [a["target"] for a in audits(r)] == ["okx:web1", "okx:web2"]  # each written before it left
        assert set(r.reconciler.quarantined) == {("okx", "web1"), ("okx", "web2"), ("okx", "FL7")}


async def test_without_the_audit_record_nothing_is_sent(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        account = CancellingAccount("okx")
        r.reconciler._accounts = [account]
        account.orders = [OpenOrder("web1", "11", "BTC-USDT-SWAP")]
        await r.reconciler.run_once()
        result = await cleaner(r, journal=False).cancel("tidy", "tui")
        assert result["results"] == [{"venue": "okx", "client_order_id": "web1", "result": "failed",
                                      "detail": "cancel_orphan refused: the ledger is not open; nothing was sent"}]
        assert account.cancels == [] and audits(r) == []


async def test_gone_orders_and_venues_that_cannot_cancel(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.okx.orders = [OpenOrder("web1", "11", "BTC-USDT-SWAP")]
        await r.reconciler.run_once()
        result = await cleaner(r).cancel("tidy", "tui")  # the rig's plain account has no cancel
        assert [row["result"] for row in result["results"]] == ["failed"]
        assert result["results"][0]["detail"] == "this venue's account cannot cancel orders"

        account = CancellingAccount("okx")
        r.reconciler._accounts = [account]  # now open nowhere: gone, nothing sent
        result = await cleaner(r).cancel("tidy", "tui")
        assert [(row["result"], row["detail"]) for row in result["results"]] == [
            ("gone", "no longer open on the venue: nothing sent")]
        assert account.cancels == [] and r.reconciler.quarantined == {}
        with pytest.raises(ControlRefused, match="no open order is quarantined"):
            await cleaner(r).cancel("tidy", "tui")
