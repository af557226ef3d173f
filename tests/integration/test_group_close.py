"""Closing one hedge group by hand (engine.group_close through `Runtime.control.close_group`).

A started Runtime (manual clock, a real SQLite ledger, no exchange feeds: the only quotes are
the test's) trades through venue doubles that answer as the test scripts
(tests/holding_gateway.py). A hedged group's two legs are sent back at market, filed with the
group (their fills in its PnL, in memory and in the ledger row), after an audit record; the
refusals (unknown, in flight, flat, not reducing, no reason, during a flatten) send nothing;
an IOC the book left (unfilled, or part-filled and final) is tried again under a new client order
id for what remains.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import ManualClock
from core.config import demo_config
from core.hedge import HedgeGroup, client_order_id
from core.models import ExecutionIntent, ExecutionLeg, GroupState, Order, OrderPurpose, Quote, TradingState, Venue
from engine.control import ControlRefused, ControlResult, OrphanRef
from engine.operator_api import create_operator_app
from engine.runtime import Runtime
from ledger import money, queries
from mt5_bridge.server import EmbeddedServer
from tests.holding_gateway import HoldingGateway, Placement, Step, held_config
from tests.integration.test_operator_cli import quantarb
from tests.waiting import until

BTC: dict[Venue, str] = {"okx": "BTC-USDT-SWAP", "binance": "BTCUSDT"}
QTY = Decimal("0.01")
BOUND_S = 10.0


@dataclass
class Rig:
    rt: Runtime
    okx: HoldingGateway
    binance: HoldingGateway
    placements: list[Placement]
    ledger: Path
    steps: dict[str, Step] = field(default_factory=dict)
    by_purpose: dict[OrderPurpose, Step] = field(default_factory=dict)

    def closes(self) -> list[Placement]:
        return [p for p in self.placements if p.purpose is OrderPurpose.FLATTEN]

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.ledger)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    monkeypatch.setattr("engine.runtime.build_feeds", lambda *args, **kwargs: [])
    monkeypatch.setattr("engine.group_close.RETRY_PAUSE_S", 0)  # no pause before a retry: no clock here
    clock = ManualClock()
    ledger = tmp_path / "close.db"
    rt = Runtime(held_config(), is_demo=True, clock=clock, ledger_path=str(ledger), mt5_in_process=True)
    placements: list[Placement] = []
    steps: dict[str, Step] = {}
    by_purpose: dict[OrderPurpose, Step] = {}

    def decide(order: Order) -> Step:
        return steps.get(order.client_order_id) or by_purpose.get(order.purpose, "reject")

    okx, binance, mt5 = (HoldingGateway(v, clock, decide, placements) for v in ("okx", "binance", "mt5"))
    rt.gateways.update({"okx": okx, "binance": binance, "mt5": mt5})
    held = Rig(rt, okx, binance, placements, ledger, steps, by_purpose)
    await rt.start()
    now = clock.monotonic_ns()
    for _ in range(2):  # twice: the price guard accepts 60,000 once every venue agrees
        for venue, symbol in BTC.items():
            rt.ingest(Quote(venue, symbol, 60000.0, 60010.0, 5.0, 5.0, clock.time_ms(), now))
    try:
        yield held
    finally:
        await rt.orchestrator.shutdown(timeout_s=1.0)
        await rt.stop()


def _intent(rt: Runtime, buy: Venue, sell: Venue, qty: Decimal = QTY) -> ExecutionIntent:
    bi, si = rt.instruments[(buy, BTC[buy])], rt.instruments[(sell, BTC[sell])]
    return ExecutionIntent(
        pair="BTC",
        buy=ExecutionLeg(buy, bi.symbol, "buy", bi.to_venue_qty(qty), Decimal(60000), qty),
        sell=ExecutionLeg(sell, si.symbol, "sell", si.to_venue_qty(qty), Decimal(60100), qty),
        base_qty=qty, expected_edge_bps=10.0, buy_price=60000.0, sell_price=60100.0,
        created_ms=rt.clock.time_ms(),
    )


async def _hedged(rig: Rig, buy: Venue = "okx", sell: Venue = "binance") -> HedgeGroup:
    rig.by_purpose[OrderPurpose.ENTRY] = "fill"
    group = rig.rt.orchestrator.submit(_intent(rig.rt, buy, sell))
    await until(lambda: group.state is GroupState.HEDGED and group.group_id not in rig.rt.orchestrator.open,
                "the group hedged and closed")
    return group


def _seen(rig: Rig) -> tuple[object, ...]:
    return (len(rig.placements), rig.rt.gate.state, rig.rt.orchestrator.realized_pnl,
            len(rig.rows("SELECT * FROM orders")), len(rig.rows("SELECT * FROM events WHERE kind='operator_audit'")))


async def test_a_hedged_group_is_closed_on_both_venues_and_its_pnl_counts_the_closing_fills(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    before = group.realized_pnl
    run_before = rt.orchestrator.realized_pnl
    assert before == Decimal("1.00")  # 0.01 BTC bought at 60,000 and sold at 60,100
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"

    result = await rt.control.close_group(group.group_id, "held too long", "tui")

    assert (result.action, result.changed, result.detail["flat"]) == ("close", True, True)
    assert result.message == f"group {group.group_id} closed: flat"
    closes = rig.closes()
    assert sorted((p.venue, p.side, p.group_id) for p in closes) == [
        ("binance", "buy", group.group_id), ("okx", "sell", group.group_id)]
    okx_close = rt.instruments[("okx", BTC["okx"])]
    assert {p.venue: p.qty for p in closes} == {"okx": okx_close.to_venue_qty(QTY), "binance": QTY}
    assert all(p.client_order_id.startswith(f"qa{group.group_id}c") for p in closes)
    assert group.position("okx") == 0 and group.position("binance") == 0
    # The closing fills are the group's: sold at the bid less 15 bps, bought at the ask plus 15 bps.
    prices = {r[0]: Decimal(r[1]) for r in rig.rows(
        "SELECT venue, price FROM orders WHERE group_id = ? AND purpose = 'flatten'", group.group_id)}
    assert prices == {"okx": Decimal("59910.0"), "binance": Decimal("60100.1")}
    expected = before + QTY * (prices["okx"] - prices["binance"])
    assert group.realized_pnl == expected == Decimal("-0.901")
    assert rt.orchestrator.realized_pnl == run_before + expected - before
    assert Decimal(result.detail["realized_pnl"]) == expected
    [(pnl, state)] = rig.rows("SELECT realized_pnl, state FROM hedge_groups WHERE group_id = ?", group.group_id)
    assert (Decimal(pnl), state) == (expected, "closed")  # flat now: closed, its PnL with the closing fills
    # The audit record is committed before the first closing order's write-ahead row.
    [(audit_seq, payload)] = rig.rows("SELECT seq, payload FROM events WHERE kind = 'operator_audit'")
    assert '"action":"close_group"' in payload and '"actor":"tui"' in payload and "held too long" in payload
    created = [r[0] for r in rig.rows("SELECT seq FROM events WHERE kind = 'order_created' AND group_id = ? "
                                      "AND json_extract(payload, '$.purpose') = 'flatten'", group.group_id)]
    assert len(created) == 2 and audit_seq < min(created)
    assert rt.ledger is not None  # `quantarb ledger show`: the close in the group's timeline
    shown = await rt.ledger.read(queries.show, group.group_id)
    assert shown is not None
    assert [e["text"] for e in shown["timeline"] if e["kind"] == "operator_audit"] == [
        "operator close_group by tui: held too long"]
    # Closed means flat: a second close is refused and sends nothing.
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=f"group {group.group_id} is already flat"):
        await rt.control.close_group(group.group_id, "again", "tui")
    assert _seen(rig) == seen


async def test_closing_works_while_halted_as_flatten_does(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    await rt.control.kill("night check")
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    result = await rt.control.close_group(group.group_id, "close while halted", "cli")
    assert result.detail["flat"] is True and result.trading_state == "halted"
    assert rt.gate.state is TradingState.HALTED  # closing never re-arms
    assert len(rig.closes()) == 2


async def test_refusals_send_nothing(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=r"^no group gnosuchgroup$"):
        await rt.control.close_group("gnosuchgroup", "typo", "tui")
    with pytest.raises(ControlRefused, match=r"^close needs a reason"):
        await rt.control.close_group(group.group_id, "  ", "tui")
    assert _seen(rig) == seen

    # In flight: one leg resting on the book.
    rig.by_purpose[OrderPurpose.ENTRY] = "fill"
    flying = rt.orchestrator.submit(_intent(rt, "binance", "okx"))
    rig.steps[client_order_id(flying.group_id, 1, 0)] = "rest"
    await until(lambda: len(rig.okx.parked) == 1, "the okx leg resting")
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=f"group {flying.group_id} is still in flight"):
        await rt.control.close_group(flying.group_id, "too early", "tui")
    assert _seen(rig) == seen
    rig.okx.finish(client_order_id(flying.group_id, 1, 0), "fill")
    await until(lambda: flying.group_id not in rt.orchestrator.open, "the second group settled")

    # Two opposite groups: okx holds +0.01 and -0.01. They net (issue 19): the first is closed
    # by the second, and its legs (its own orders still add up to them) are not closed again by
    # hand: that would trade other groups' positions under its id. Refused before either is sent.
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=f"group {group.group_id} is closed .*another group's net"):
        await rt.control.close_group(group.group_id, "one of two", "tui")
    assert _seen(rig) == seen


async def test_a_group_a_net_closed_is_not_closed_again_by_hand(rig: Rig) -> None:
    """A group a net closed (issue 19) holds nothing of its own, though its own orders still add
    up to a position. Closing "its legs" traded g2's position under g1's id: the running
    attribution gave those fills to g2 (and closed it), g1's ledger row booked them on top of
    the net, so the rows summed to -0.802 against 1.099 of money, and `ledger groups` (which
    books them to g1) had g2 still holding what the engine said was closed."""
    rt = rig.rt
    g1 = await _hedged(rig)  # long okx, short binance
    g2 = await _hedged(rig)  # the same way: what the venues hold after the net
    g3 = rt.orchestrator.submit(_intent(rt, "binance", "okx"))  # the other way: nets g1 (first in, first out)
    await until(lambda: g1.state is GroupState.CLOSED and g3.state is GroupState.CLOSED, "g1 and g3 netted")
    assert g2.state is GroupState.HEDGED
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=f"group {g1.group_id} is closed"):
        await rt.control.close_group(g1.group_id, "held too long", "tui")
    assert _seen(rig) == seen
    # What the rows say is what the ledger's replay says.
    assert rt.ledger is not None
    await rt.ledger.flush()
    async with queries.open_reader(rig.ledger) as db:
        attribution = await money.group_attribution(db)
    con = sqlite3.connect(rig.ledger)
    try:
        rows = {r[0]: (r[1], Decimal(r[2])) for r in con.execute(
            "SELECT group_id, state, realized_pnl FROM hedge_groups")}
    finally:
        con.close()
    for g in (g1, g3):
        m = attribution.group(g.group_id)
        assert m is not None and rows[g.group_id] == ("closed", m.realized)


async def test_a_group_a_net_took_in_part_is_not_closed_by_its_own_orders(rig: Rig) -> None:
    """g1 (two lots) is netted in part by g3 (one lot the other way): it holds one lot, its own
    orders still add up to two. Closing those two would take g1 short in the attribution (a
    settled holder of the other sign next to g2), close it in its row without the net's cash
    the partner's row has. Refused, nothing sent: a flatten closes what the venues hold."""
    rt = rig.rt
    rig.by_purpose[OrderPurpose.ENTRY] = "fill"
    g1 = rt.orchestrator.submit(_intent(rt, "okx", "binance", 2 * QTY))
    await until(lambda: g1.state is GroupState.HEDGED and g1.group_id not in rt.orchestrator.open, "g1 hedged")
    await _hedged(rig)  # g2, the same way
    g3 = rt.orchestrator.submit(_intent(rt, "binance", "okx"))
    await until(lambda: g3.state is GroupState.CLOSED, "g3 netted by g1")
    assert g1.state is GroupState.HEDGED and g1.position("okx") == 2 * QTY
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=f"group {g1.group_id} holds .* of its own orders"):
        await rt.control.close_group(g1.group_id, "held too long", "tui")
    assert _seen(rig) == seen


async def test_no_net_takes_a_group_while_its_close_is_out(rig: Rig) -> None:
    """g1's close orders are out (held by the venues) when g3, the other way, settles: g3 must
    not net g1 then (g1 closed by the net, forgotten by the running attribution, and its close
    fills, under its id, spread to other groups or the flatten line live but booked as g1's own
    by the ledger's replay). After the close, what the rows say is what the replay says."""
    rt = rig.rt
    g1 = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    close = asyncio.create_task(rt.control.close_group(g1.group_id, "held too long", "tui"))
    await until(lambda: len(rig.okx.parked) + len(rig.binance.parked) == 2, "both close orders held")
    g3 = rt.orchestrator.submit(_intent(rt, "binance", "okx"))
    await until(lambda: g3.group_id not in rt.orchestrator.open, "g3 settled")
    assert g1.state is GroupState.HEDGED and g3.state is GroupState.HEDGED  # not netted
    for cid in list(rig.okx.parked) + list(rig.binance.parked):
        (rig.okx if cid in rig.okx.parked else rig.binance).finish(cid, "fill")
    result = await asyncio.wait_for(close, 10)
    assert result.detail["flat"] is True
    assert str(g1.state) == "closed"  # by its own close
    assert rt.ledger is not None
    await rt.ledger.flush()
    async with queries.open_reader(rig.ledger) as db:
        attribution = await money.group_attribution(db)
    rows = {r[0]: (r[1], Decimal(r[2])) for r in rig.rows("SELECT group_id, state, realized_pnl FROM hedge_groups")}
    for g in (g1, g3):
        m = attribution.group(g.group_id)
        assert m is not None and rows[g.group_id] == (str(g.state), m.realized), g.group_id
        assert rt.equity.group_held(g.group_id) == {v: q for (v, _s), q in m.positions.items() if q}


async def test_refused_during_a_flatten(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    flatten = asyncio.create_task(rt.control.flatten("everything"))
    await until(lambda: len(rig.okx.parked) == 1, "the flatten order held by okx")
    with pytest.raises(ControlRefused, match=r"^close refused: a flatten is running"):
        await rt.control.close_group(group.group_id, "now", "tui")
    for cid in list(rig.okx.parked) + list(rig.binance.parked):
        (rig.okx if cid in rig.okx.parked else rig.binance).finish(cid, "fill")
    await asyncio.wait_for(flatten, 10)


async def test_an_ioc_the_book_left_is_retried_under_a_new_id(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    close = asyncio.create_task(rt.control.close_group(group.group_id, "retry", "tui"))
    await until(lambda: len(rig.okx.parked) == 1 and len(rig.binance.parked) == 1, "both closing orders held")
    [okx_first] = rig.okx.parked
    [bn_first] = rig.binance.parked
    rig.okx.finish(okx_first, "expire")  # the book moved: nothing filled, final
    rig.binance.finish(bn_first, "fill")
    await until(lambda: len(rig.okx.parked) == 1 and okx_first not in rig.okx.parked, "the okx retry")
    [okx_second] = rig.okx.parked
    assert okx_second != okx_first and okx_second.startswith(f"qa{group.group_id}c")
    rig.okx.finish(okx_second, "fill")
    result = await asyncio.wait_for(close, 10)
    assert result.detail["flat"] is True
    okx_leg = next(leg for leg in result.detail["legs"] if leg["venue"] == "okx")
    assert okx_leg["orders"] == [okx_first, okx_second]
    assert [p.client_order_id for p in rig.closes() if p.venue == "okx"] == [okx_first, okx_second]


async def test_a_closed_group_from_an_earlier_run_is_read_from_the_ledger(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    await rt.journal.flush() if rt.journal is not None else None
    rt.orchestrator.closed.clear()  # as after a restart: only the ledger remembers it
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    result = await rt.control.close_group(group.group_id, "from the ledger", "api 127.0.0.1")
    assert result.detail["flat"] is True
    rows = rig.rows("SELECT venue, side, purpose FROM orders WHERE group_id = ? ORDER BY venue, purpose",
                    group.group_id)
    assert rows == [("binance", "sell", "entry"), ("binance", "buy", "flatten"),
                    ("okx", "buy", "entry"), ("okx", "sell", "flatten")]
    [(pnl,)] = rig.rows("SELECT realized_pnl FROM hedge_groups WHERE group_id = ?", group.group_id)
    assert Decimal(pnl) == Decimal("-0.901")


# -- the same action from the CLI and the API (real socket, `quantarb` in a subprocess) ------------
TOKEN = "close-test-admin-token-0123456789"


@pytest.fixture
async def served(rig: Rig) -> AsyncIterator[str]:
    server = EmbeddedServer(create_operator_app(rig.rt.control, rig.rt.view, TOKEN), "127.0.0.1", 0)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    return {**env, "HOME": str(home), "QUANTARB_ADMIN_TOKEN": TOKEN}


async def test_close_from_the_cli(rig: Rig, served: str, tmp_path: Path) -> None:
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    env = _cli_env(tmp_path)
    seen = _seen(rig)
    no_reason = await quantarb("close", group.group_id, "--url", served, env=env, cwd=tmp_path)
    assert no_reason.code == 2 and "a reason is required" in no_reason.err
    assert _seen(rig) == seen  # refused before anything was sent

    run = await quantarb("close", group.group_id, "--reason", "cli close", "--url", served, env=env, cwd=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"close: group {group.group_id} closed: flat (trading active)"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["binance BTCUSDT", "okx BTC-USDT-SWAP"]
    [(payload,)] = rig.rows("SELECT payload FROM events WHERE kind = 'operator_audit'")
    audit = json.loads(payload)
    assert audit["actor"].startswith("cli ") and audit["actor"].endswith(" via api 127.0.0.1")
    assert (audit["reason"], audit["target"]) == ("cli close", group.group_id)

    again = await quantarb("close", group.group_id, "--reason", "again", "--url", served, env=env, cwd=tmp_path)
    assert again.code == 3 and f"refused: group {group.group_id} is already flat" in again.err
    orphans = await quantarb("orphans", "cancel", "--reason", "tidy", "--url", served, env=env, cwd=tmp_path)
    assert orphans.code == 3 and "refused: no open order is quarantined: nothing to cancel" in orphans.err


async def test_orphan_cleanup_from_the_cli_lists_asks_and_sends_that_list(
        rig: Rig, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review P2-5: the CLI shows what is quarantined, asks y/N (unless --yes), and sends
    exactly that list; the engine cancels nothing else."""
    sent: list[list[OrphanRef]] = []

    async def cancel_orphans(reason: str, actor: str, orders: list[OrphanRef]) -> ControlResult:
        sent.append(list(orders))
        return ControlResult("orphans_cancel", "active", "", True, "orphan cleanup: 2 cancelled", {"results": [
            {**o.to_json(), "result": "cancelled", "detail": "cancelled"} for o in orders]})

    status = {"reconcile": {"quarantined": [
        {"venue": "binance", "client_order_id": "manual1", "reason": "not ours", "since_ms": 1, "open_order": True},
        {"venue": "okx", "client_order_id": "", "venue_order_id": "777", "reason": "not ours", "since_ms": 2,
         "open_order": True},
        {"venue": "okx", "client_order_id": "qagx001l0a0", "reason": "a fill", "since_ms": 3, "open_order": False},
    ]}}
    monkeypatch.setattr(rig.rt.control, "cancel_orphans", cancel_orphans)
    monkeypatch.setattr(rig.rt.view, "status", lambda: status)
    env = _cli_env(tmp_path)
    no = await quantarb("orphans", "cancel", "--reason", "tidy", "--url", served, env=env, cwd=tmp_path,
                        stdin=b"n\n")
    assert no.code == 3 and "binance  manual1" in no.err and "okx      ordId 777" in no.err
    assert "not confirmed: nothing sent" in no.err and sent == []
    yes = await quantarb("orphans", "cancel", "--reason", "tidy", "--url", served, env=env, cwd=tmp_path,
                         stdin=b"y\n")
    assert yes.code == 0, yes.err
    assert sent == [[OrphanRef("binance", "manual1"), OrphanRef("okx", "", "777")]]
    forced = await quantarb("orphans", "cancel", "--reason", "tidy", "--yes", "--url", served, env=env,
                            cwd=tmp_path)
    assert forced.code == 0 and "cancel these?" not in forced.err and len(sent) == 2


async def test_close_api_checks_token_then_body(rig: Rig, served: str) -> None:
    group = await _hedged(rig)
    seen = _seen(rig)
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=served, trust_env=False) as client:
        for path in ("/api/close", "/api/orphans/cancel"):
            r = await client.post(path, json={"group": group.group_id, "reason": "x"})
            assert r.status_code == 401
        r = await client.post("/api/close", headers=auth, json={"group": group.group_id})
        assert (r.status_code, r.json()["fields"]) == (422, [{"field": "reason", "reason": "required"}])
        r = await client.post("/api/close", headers=auth, json={"group": "g-1", "reason": "x", "size": 1})
        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "size", "reason": "unknown field"},
                                      {"field": "group", "reason": "a group id is letters and digits"}]
        r = await client.post("/api/close", headers=auth, json={"group": "gnosuch", "reason": "x"})
        assert (r.status_code, r.json()) == (409, {"error": "refused", "message": "no group gnosuch"})
    assert _seen(rig) == seen


async def test_paper_mode_closes_through_the_paper_venues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in demo, started (paper execution: nothing real is sent): a hedged group of its
    own trading is closed through the paper venues and booked with the group."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    ledger = tmp_path / "paper.db"
    rt = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(ledger), mt5_in_process=True)
    assert {type(g).__name__ for g in rt.gateways.values()} == {"PaperGateway"}
    await rt.start()
    try:
        await rt.driver.drive(1500, 20.0)
        # A hedged group whose legs each shrink their venue's net position (the demo trades both
        # ways: closing a group that others offset on a venue is refused, test_refusals_send_nothing),
        # and that no net took in part (it holds what its own orders add up to: else refused).
        def closable(g: HedgeGroup) -> bool:
            return g.state is GroupState.HEDGED and all(
                (pos := rt.gate.exposure.position(v, g.pair)) * g.position(v) > 0 and abs(pos) >= abs(g.position(v))
                for v in g.instruments) and rt.equity.group_held(g.group_id) == {
                v: g.position(v) for v in g.instruments}

        group = next((g for g in rt.orchestrator.closed if closable(g)), None)
        assert group is not None, "no closable hedged group after 30 simulated seconds"
        held = {v: group.position(v) for v in group.instruments}
        assert all(q != 0 for q in held.values())
        result = await asyncio.wait_for(rt.control.close_group(group.group_id, "paper close", "test"), 30)
        assert result.detail["flat"] is True
        assert {leg["venue"]: Decimal(leg["before"]) for leg in result.detail["legs"]} == held
        assert all(group.position(v) == 0 for v in group.instruments)
        await rt.journal.flush() if rt.journal is not None else None
        con = sqlite3.connect(ledger)
        try:
            closing = con.execute("SELECT venue, state FROM orders WHERE group_id = ? AND purpose = 'flatten' "
                                  "ORDER BY venue", (group.group_id,)).fetchall()
            [(pnl,)] = con.execute("SELECT realized_pnl FROM hedge_groups WHERE group_id = ?",
                                   (group.group_id,)).fetchall()
        finally:
            con.close()
        assert closing == [(v, "filled") for v in sorted(held)]
        assert Decimal(pnl) == group.realized_pnl
    finally:
        await rt.stop()


async def test_without_the_audit_record_nothing_is_sent(rig: Rig) -> None:
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    await rt.close_ledger()  # a configured ledger that is not open: the record cannot be written
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=r"^close_group refused: the ledger is not open; nothing was sent$"):
        await rt.control.close_group(group.group_id, "no ledger", "tui")
    assert _seen(rig) == seen and rig.closes() == []


async def test_a_group_read_back_after_a_close_refused_locally_gets_a_fresh_close_id(rig: Rig) -> None:
    """Review P2-3: the first close's binance order is refused at send time (never journaled),
    its okx order fills (journaled). Read back from the ledger, the group has one order fewer
    than ids were handed out: the next close must not reuse the okx close's id, or the ledger
    files the new order on the old row."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    judge = rt.orchestrator._judge

    def refuse_binance(order: Order, check: Any) -> str | None:
        if order.venue == "binance" and order.purpose is OrderPurpose.FLATTEN:
            return "risk:test_refusal"
        return judge(order, check)

    rt.orchestrator._judge = refuse_binance  # type: ignore[method-assign]
    first = await rt.control.close_group(group.group_id, "first try", "tui")
    rt.orchestrator._judge = judge  # type: ignore[method-assign]
    assert first.detail["flat"] is False
    used = [o for leg in first.detail["legs"] for o in leg["orders"]]
    assert len(used) == 2
    assert rt.journal is not None
    await rt.journal.flush()
    rt.orchestrator.closed.clear()  # as after a restart: only the ledger remembers it
    second = await rt.control.close_group(group.group_id, "second try", "tui")
    assert second.detail["flat"] is True
    [bn_leg] = [leg for leg in second.detail["legs"] if leg["venue"] == "binance"]
    [new_id] = bn_leg["orders"]
    assert new_id not in used
    assert rig.rows("SELECT venue, side, state FROM orders WHERE order_id = ?", new_id) == [
        ("binance", "buy", "filled")]


async def test_a_blocked_venue_or_an_old_quote_refuses_the_close_before_anything_leaves(rig: Rig) -> None:
    """Review P2-4: both legs go at once; a venue that cannot trade (a breaker blocks it) or
    a quote older than `max_quote_age_ms` would let the other leg close alone."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    rt.gate.breakers.on_price_check("binance", outlier_run=1000, agreed=False, now_ms=clock.time_ms())
    seen = _seen(rig)
    with pytest.raises(ControlRefused, match=r"^close refused: the binance leg .*binance is blocked "
                                             r"\(outlier:binance\): the other leg would close alone$"):
        await rt.control.close_group(group.group_id, "blocked", "tui")
    assert _seen(rig) == seen
    rt.gate.breakers.on_price_check("binance", outlier_run=0, agreed=True, now_ms=clock.time_ms())
    clock.advance(ms=rt.config.strategy.max_quote_age_ms + 1)
    with pytest.raises(ControlRefused, match=r"^close refused: the binance leg .*: the quote is 1501 ms old "
                                             r"\(> 1500 ms\): the other leg would close alone$"):
        await rt.control.close_group(group.group_id, "old quotes", "tui")
    assert _seen(rig) == seen


async def test_a_close_that_leaves_a_residual_pauses_trading_and_raises_an_alert(rig: Rig) -> None:
    """Review P2-4: the okx leg closes, the binance one is rejected: the hedge is one open
    position now. Trading is paused and the close's event is an urgent alert."""
    from engine.alerts import classify

    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    judge = rt.orchestrator._judge

    def refuse_binance(order: Order, check: Any) -> str | None:
        if order.venue == "binance" and order.purpose is OrderPurpose.FLATTEN:
            return "risk:test_refusal"
        return judge(order, check)

    rt.orchestrator._judge = refuse_binance  # type: ignore[method-assign]
    before = rt.gate.state
    result = await rt.control.close_group(group.group_id, "half", "tui")
    assert result.detail["flat"] is False
    assert (before, rt.gate.state) == (TradingState.ACTIVE, TradingState.PAUSED)
    ours = [e for e in rt.events.recent() if e.kind == "operator" and e.data.get("group_id") == group.group_id]
    assert [e.level for e in ours] == ["warn", "error"]  # the audit line, then the close's result
    assert classify(ours[0]) is None
    alert = classify(ours[1])
    assert alert is not None and (alert.severity, alert.title, alert.urgent) == (
        "critical", "group close left a residual", True)


async def test_a_failing_leg_never_leaves_the_other_unattended(rig: Rig) -> None:
    """Review P3-9: one leg's send raises; the other still runs to its end, the group is
    rebooked and made durable, and the answer names the failing leg (a residual: paused)."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    send = rt.orchestrator.send_flatten

    async def failing(order: Order, close: Any = None) -> None:
        if order.venue == "binance":
            raise RuntimeError("venue adapter bug")
        await send(order, close)

    rt.orchestrator.send_flatten = failing  # type: ignore[method-assign]
    result = await rt.control.close_group(group.group_id, "one leg breaks", "tui")
    legs = {leg["venue"]: leg for leg in result.detail["legs"]}
    assert legs["binance"]["note"] == "failed: RuntimeError: venue adapter bug" and not legs["binance"]["flat"]
    assert legs["okx"]["flat"] is True and group.position("okx") == 0
    assert result.detail["flat"] is False and rt.gate.state is TradingState.PAUSED
    [(pnl,)] = rig.rows("SELECT realized_pnl FROM hedge_groups WHERE group_id = ?", group.group_id)
    assert Decimal(pnl) == group.realized_pnl != Decimal("1.00")  # the okx closing fill is booked


async def test_a_close_waiting_behind_an_asset_close_yields_to_a_flatten_that_began_meanwhile(rig: Rig) -> None:
    """Review P3-9: the close passed the flatten check, then waited for the close lock; a
    flatten began meanwhile. When the lock frees, the close is refused (the flatten goes)."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    lock = rt.control._close_lock
    await lock.acquire()  # an asset close still sending
    close = asyncio.create_task(rt.control.close_group(group.group_id, "behind", "tui"))
    await until(lambda: bool(lock._waiters), "the close waiting for the lock")
    flatten = asyncio.create_task(rt.control.flatten("everything"))
    await until(lambda: rt.control._flatten_lock.locked() and len(lock._waiters or ()) == 2,
                "the flatten waiting too")
    lock.release()
    with pytest.raises(ControlRefused, match=r"^close refused: a flatten is running"):
        await asyncio.wait_for(close, 10)
    report = await asyncio.wait_for(flatten, 10)
    assert report.detail["flat"] is True
    assert [p.client_order_id.startswith(f"qa{group.group_id}c") for p in rig.closes()] == [False, False]


async def test_an_ioc_part_filled_and_final_is_retried_for_the_rest_only(rig: Rig) -> None:
    """Review (tests): the partial case. An IOC the book took half of and that ended EXPIRED
    (final: its trade is reported) is retried for the other half only, as flatten does; only
    a non-final state (trades may still come) or `unknown` stops the leg (docs/operator.md)."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    close = asyncio.create_task(rt.control.close_group(group.group_id, "partial", "tui"))
    await until(lambda: len(rig.okx.parked) == 1 and len(rig.binance.parked) == 1, "both closing orders held")
    [okx_first] = rig.okx.parked
    [bn_first] = rig.binance.parked
    rig.okx.finish(okx_first, "fill")
    rig.binance.finish(bn_first, "half_then_expire")
    await until(lambda: len(rig.binance.parked) == 1 and bn_first not in rig.binance.parked, "the binance retry")
    [bn_second] = rig.binance.parked
    assert [p.qty for p in rig.closes() if p.venue == "binance"] == [QTY, QTY / 2]  # the rest, never all again
    rig.binance.finish(bn_second, "fill")
    result = await asyncio.wait_for(close, 10)
    assert result.detail["flat"] is True and group.position("binance") == 0
    [bn_leg] = [leg for leg in result.detail["legs"] if leg["venue"] == "binance"]
    assert bn_leg["orders"] == [bn_first, bn_second]


async def test_two_closes_of_one_group_at_once_send_one_close(rig: Rig, served: str) -> None:
    """Review (tests): the TUI and the API close the same group at the same moment. The second
    waits for the first (one closing pass at a time), then finds the group flat: refused, so
    each venue gets exactly one closing order."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "hold"
    tui = asyncio.create_task(rt.control.close_group(group.group_id, "from the tui", "tui"))
    await until(lambda: len(rig.okx.parked) == 1 and len(rig.binance.parked) == 1, "the tui's orders held")
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=served, trust_env=False) as client:
        api = asyncio.create_task(client.post("/api/close", headers=auth,
                                              json={"group": group.group_id, "reason": "from the api"}))
        await until(lambda: bool(rt.control._close_lock._waiters), "the api's close waiting")
        for cid in list(rig.okx.parked):
            rig.okx.finish(cid, "fill")
        for cid in list(rig.binance.parked):
            rig.binance.finish(cid, "fill")
        first = await asyncio.wait_for(tui, 10)
        second = await asyncio.wait_for(api, 10)
    assert first.detail["flat"] is True
    assert second.status_code == 409
    assert second.json()["message"].startswith(f"group {group.group_id} is already flat")
    assert sorted(p.venue for p in rig.closes()) == ["binance", "okx"]


async def test_a_close_id_the_ledger_already_has_is_never_sent(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review P2-3 (the loud part): should an id ever repeat, the ledger's row would take the
    new order's fills; the closer asks the ledger first and sends nothing under a known id."""
    rt = rig.rt
    group = await _hedged(rig)
    rig.by_purpose[OrderPurpose.FLATTEN] = "fill"
    taken = client_order_id(group.group_id, 0, 0)  # the okx entry's id, journaled
    monkeypatch.setattr("engine.group_close.close_order_id", lambda g: taken)
    placed = len(rig.placements)
    result = await rt.control.close_group(group.group_id, "repeat id", "tui")
    assert len(rig.placements) == placed
    assert {leg["note"] for leg in result.detail["legs"]} == {f"{taken} is already in the ledger: not sent"}
    assert result.detail["flat"] is False
