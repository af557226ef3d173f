"""The operator's manual venue actions in live mode, against the simulated OKX and Binance USD-M
venues of `sim/` over loopback (real sockets, the live gateways, a real SQLite ledger):

1. a hedged group is closed by hand: both legs leave as IOC orders filed with the group, the
   venues end flat for it, and the next reconciliation pass agrees with the ledger;
2. orders placed on the venues behind quantarb's back (a web-page order on each venue, and one
   with our prefix the ledger never saw) are quarantined by reconciliation, then the orphan
   cleanup cancels exactly those: the venues have no open order left, each cancel has its
   audit row, one that was cancelled on the venue meanwhile is reported gone (nothing sent).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from core.models import GroupState, TradingState
from engine.control import ControlRefused
from engine.runtime import Runtime
from ledger import queries
from tests.integration.test_live_mode import BN_SYM, OKX_KEY, OKX_SYM, SECRETS, live_config, rows, until, venues


def _okx_order(cid: str) -> dict[str, str]:
    return {"instId": OKX_SYM, "tdMode": "cross", "side": "buy", "ordType": "limit", "sz": "1", "px": "90000.0",
            "clOrdId": cid}


def _bn_order(cid: str) -> dict[str, str]:
    return {"symbol": BN_SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
            "price": "90000.0", "newClientOrderId": cid}


async def test_close_a_group_and_clean_up_orphans_on_live_venues(tmp_path: Path) -> None:
    ledger = tmp_path / "live.db"
    async with venues() as v:
        rt = Runtime(live_config(v, ledger), is_demo=False, secrets=SECRETS, serve_operator_api=False)
        await rt.start()
        try:
            rec = rt.reconciler
            assert rec is not None
            await until(lambda: rec.passes == 1 and rt.gate.state is TradingState.ACTIVE, "the first pass")

            # 1. A hedged group (buy Binance, sell OKX), then closed by hand.
            v.books((97390.0, 97390.1), (97000.0, 97000.1))
            await until(lambda: any(g.state is GroupState.HEDGED for g in rt.orchestrator.closed), "a hedged group")
            v.calm()
            [group] = [g for g in rt.orchestrator.closed if g.state is GroupState.HEDGED]
            assert group.position("okx") < 0 < group.position("binance")
            result = await rt.control.close_group(group.group_id, "rehearsal: close by hand", "cli tester")
            assert result.detail["flat"] is True, result.detail
            assert group.position("okx") == 0 and group.position("binance") == 0
            closing = rows(ledger, f"SELECT venue, side, state FROM orders WHERE group_id = '{group.group_id}' "
                           "AND purpose = 'flatten' ORDER BY venue")
            assert closing == [("binance", "sell", "filled"), ("okx", "buy", "filled")]
            okx_orders = v.okx.private.accounts[OKX_KEY].by_cl_ord_id
            assert {okx_orders[c].ord_type for c in result.detail["legs"][1]["orders"]} == {"ioc"}
            await rec.run_once()  # the venues agree with the ledger: flat for this group
            assert rt.gate.state is TradingState.ACTIVE
            assert rec.venues["okx"].positions == {OKX_SYM: "0 / 0"}
            assert rec.venues["binance"].positions == {BN_SYM: "0 / 0"}

            # 2. Orders behind quantarb's back: quarantined, then cancelled by the cleanup.
            okx_account = v.okx.private.accounts[OKX_KEY]
            assert v.okx.private.place_order(okx_account, _okx_order("web1"))["sCode"] == "0"
            v.binance.exchange.new_order(_bn_order("manual1"))
            v.binance.exchange.new_order(_bn_order("manual2"))
            v.binance.exchange.new_order(_bn_order("qaghost001l0a0"))  # ours by its prefix, not in the ledger
            await rec.run_once()
            listed = {(q.venue, q.client_order_id) for q in rec.quarantined.values() if q.open_order}
            assert listed == {("okx", "web1"), ("binance", "manual1"), ("binance", "manual2"),
                              ("binance", "qaghost001l0a0")}
            assert rt.gate.state is TradingState.ACTIVE
            v.binance.exchange.cancel_order({"symbol": BN_SYM, "origClientOrderId": "manual2"})  # by hand, meanwhile

            cleanup = await rt.control.cancel_orphans("web orders left by a colleague", "tui")

            results = {(r["venue"], r["client_order_id"]): r["result"] for r in cleanup.detail["results"]}
            assert results == {("okx", "web1"): "cancelled", ("binance", "manual1"): "cancelled",
                               ("binance", "manual2"): "gone", ("binance", "qaghost001l0a0"): "cancelled"}
            assert cleanup.message == "orphan cleanup: 3 cancelled, 1 gone"
            assert [o for o in okx_account.orders.values() if o.state in ("live", "partially_filled")] == []
            assert [o.client_order_id for o in v.binance.exchange.orders.values() if o.is_open] == []
            assert rec.quarantined == {}
            audits = [json.loads(p) for (p,) in rows(ledger, "SELECT payload FROM events WHERE kind = "
                                                     "'operator_audit' ORDER BY seq")]
            assert [(a["action"], a["target"]) for a in audits] == [
                ("close_group", group.group_id), ("cancel_orphan", "binance:manual1"),
                ("cancel_orphan", "binance:qaghost001l0a0"), ("cancel_orphan", "okx:web1")]
            assert {(a["actor"], a["reason"]) for a in audits[1:]} == {("tui", "web orders left by a colleague")}
            assert audits[0]["actor"] == "cli tester" and audits[0]["detail"]["legs"][0]["venue"] == "binance"

            # The next pass finds nothing; a second cleanup has nothing to do.
            await rec.run_once()
            assert rec.quarantined == {}
            with pytest.raises(ControlRefused, match="no open order is quarantined"):
                await rt.control.cancel_orphans("again", "tui")
            # The ledger's money agrees: the group's row carries the closing fills.
            [(pnl,)] = rows(ledger, f"SELECT realized_pnl FROM hedge_groups WHERE group_id = '{group.group_id}'")
            assert Decimal(pnl) == group.realized_pnl
            assert rt.ledger is not None
            checked = await rt.ledger.read(queries.check)  # `quantarb ledger check`: every invariant holds
            assert checked["ok"] is True, [c for c in checked["checks"] if not c["ok"]]
        finally:
            await rt.stop()
