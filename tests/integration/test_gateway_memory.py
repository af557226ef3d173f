"""The live gateways' memory of orders is bounded, and what they forget is still reachable
(issue 19): a final order is forgotten after `order_memory_s` (OKX) or once its not-found
deadline has passed (Binance); an order not final is kept whatever its age and is never sent
twice; a forgotten order is read back from the venue by its client order id. The simulated
venues the demo runs in-process forget final orders and fills after their history window.

Against the simulators over loopback (real sockets); the OKX gateway's age rule is exercised at
`order_memory_s = 0` (forgotten as soon as final) and at its default (kept), never by waiting.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.models import GroupState, OrderState, TradingState
from core.ports import OrderUpdate
from engine import reconcile
from engine.runtime import Runtime
from exchanges.binance.endpoints import BinanceMarket
from exchanges.binance.stream import UserDataStream
from exchanges.okx.gateway import OkxGateway
from exchanges.okx.parsers import parse_envelope, parse_orders
from exchanges.okx.stream import OrderStates
from sim import binance_exchange, okx_accounts
from sim.market import SimTick
from tests.binance_support import order as binance_order
from tests.binance_support import rig, wait_until
from tests.integration import test_live_mode as live
from tests.okx_support import BTC, KEY, gateway, okx_sim, order, tick


def venue_trade_ids(server: object, cid: str) -> list[str]:
    account = server.private.accounts[KEY]  # type: ignore[attr-defined]
    return sorted(f.trade_id for f in account.fills if f.order.cl_ord_id == cid)


# ---------------------------------------------------------------- OKX gateway


async def test_okx_final_orders_are_forgotten_and_read_back_from_the_venue() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False, order_memory_s=0.0) as gw:
        placed = []
        for _ in range(5):
            o = order(qty="1", price="97001")
            update = await gw.place(o)
            assert update.state is OrderState.FILLED
            placed.append((o, [f.venue_trade_id for f in update.fills]))
            server.publish(_fresh(clock))  # the size taken is shown again
        # Each place forgets the final orders before it: only the last one is remembered.
        assert gw.remembered() == (1, 1)
        first, first_fills = placed[0]
        again = await gw.query(first)  # forgotten here, still on the venue
        assert again.state is OrderState.FILLED
        assert [f.venue_trade_id for f in again.fills] == first_fills == venue_trade_ids(server, first.client_order_id)


async def test_okx_final_orders_are_kept_for_order_memory_s() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False) as gw:  # 600 s
        for _ in range(3):
            assert (await gw.place(order(qty="1", price="97001"))).state is OrderState.FILLED
            server.publish(_fresh(clock))
        assert gw.remembered() == (3, 3)
        assert gw.forget_old_orders() == 0


async def test_okx_an_order_not_final_is_never_forgotten_nor_sent_twice() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False, order_memory_s=0.0,
                                                 request_timeout_s=0.3) as gw:
        server.private.faults.hang_next = 1
        server.private.faults.hang_s = 1.0
        server.private.faults.hang_processed = True  # the venue fills it; the answer is lost
        lost = order(qty="1", price="97001")
        assert (await gw.place(lost)).state is OrderState.UNKNOWN
        server.publish(_fresh(clock))
        for _ in range(3):
            assert (await gw.place(order(qty="1", price="97001"))).state is OrderState.FILLED
            server.publish(_fresh(clock))
        # The unknown one is kept (with the last one placed); the others are forgotten.
        assert gw.remembered()[0] == 2
        received = server.private.orders_received
        retried = await gw.place(lost)  # the engine retrying: asks, never sends again
        assert retried.state is OrderState.FILLED
        assert server.private.orders_received == received
        assert [f.venue_trade_id for f in retried.fills] == venue_trade_ids(server, lost.client_order_id)
        assert gw.forget_old_orders() == 2  # now final: forgotten with the last one
        assert gw.remembered() == (0, 0)


def _detail(cid: str, state: str, trade: str = "", fill_sz: str = "0") -> bytes:
    return (b'{"code":"0","msg":"","data":[{"instId":"BTC-USDT-SWAP","ordId":"1","clOrdId":"%s","state":"%s",'
            b'"ordType":"ioc","accFillSz":"%s","tradeId":"%s","fillSz":"%s","fillPx":"%s","fillFee":"%s",'
            b'"uTime":"5"}]}') % (cid.encode(), state.encode(), fill_sz.encode(), trade.encode(), fill_sz.encode(),
                                  b"100" if trade else b"", b"-0.1" if trade else b"")


def test_order_states_forget_final_orders_only_and_oldest_first() -> None:
    now = [100.0]
    states = OrderStates(monotonic=lambda: now[0])
    heard: list[tuple[str, OrderState, int]] = []
    states.on_update = lambda u: heard.append((u.client_order_id, u.state, len(u.fills)))

    def ingest(raw: bytes) -> None:
        [detail] = parse_orders(parse_envelope(raw, "/api/v5/trade/order").data)
        states.ingest(detail)

    ingest(_detail("a1", "filled", "t1", "1"))
    now[0] = 110.0
    ingest(_detail("b1", "live"))
    ingest(_detail("c1", "canceled"))
    now[0] = 120.0
    assert states.prune(final_before=105.0) == ["a1"]
    assert (states.latest("a1"), states.fills.fills("a1")) == (None, [])
    assert states.prune(final_before=1e9) == ["c1"]  # b1 is open: kept whatever its age
    assert states.open_ids() == ["b1"] and len(states) == 1
    # OKX resending a forgotten order's push: recorded as new, its fill handed on again (the
    # ledger deduplicates fills by venue trade id), and forgotten again once final in time.
    heard.clear()
    ingest(_detail("a1", "filled", "t1", "1"))
    assert heard == [("a1", OrderState.FILLED, 1)]


def _fresh(clock: ManualClock) -> SimTick:
    return tick(BTC, clock=clock)


# ---------------------------------------------------------------- Binance gateway


@pytest.mark.parametrize("market", ["usdm"])
async def test_binance_send_times_are_forgotten_past_their_deadline_with_the_same_verdict(
    market: BinanceMarket,
) -> None:
    async with rig(market, rest_timeout_s=0.3) as r:
        gw = r.gateway
        await gw.start()
        r.sim.faults.timeout_orders = 1
        r.sim.faults.timeout_executes = False  # it never reaches the matching engine
        r.sim.faults.timeout_hold_s = 1.0
        ghost = binance_order(r.clock)
        r.clock.advance(ms=1000)  # sent a second after it was made: the send time is what counts
        assert (await gw.place(ghost)).state is OrderState.UNKNOWN
        deadline_ms = gw.rest.recv_window_ms + gw.not_found_grace_ms
        r.clock.advance(ms=deadline_ms - 500)  # past the order's creation + deadline, not its send
        assert (await gw.query(ghost)).state is OrderState.UNKNOWN
        assert (await gw.place(binance_order(r.clock))).state is OrderState.FILLED
        assert gw.remembered() == 2  # both still within their deadline
        r.clock.advance(ms=501)
        assert (await gw.place(binance_order(r.clock))).state is OrderState.FILLED
        assert gw.remembered() == 2  # the ghost's send time is gone, the two fills' kept
        later = await gw.query(ghost)
        assert later.state is OrderState.REJECTED and "never reached the venue" in later.reason


# ---------------------------------------------------------------- the simulated venues


async def test_okx_sim_forgets_final_orders_and_fills_after_its_history_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        account = server.private.accounts[KEY]
        ex = server.private
        resting = ex.place_order(account, {"instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "limit",
                                           "px": "96000", "sz": "1", "clOrdId": "rest1"})
        assert resting["sCode"] == "0"
        for n in range(3):
            ex.place_order(account, {"instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "ioc",
                                     "px": "97001", "sz": "1", "clOrdId": f"ioc{n}"})
            server.publish(_fresh(clock))
        assert (len(account.orders), len(account.fills)) == (4, 3)
        clock.advance(ms=okx_accounts.HISTORY_KEPT_MS + 1)
        ex.place_order(account, {"instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "ioc",
                                 "px": "97001", "sz": "1", "clOrdId": "late1"})
        # The three old IOCs and their fills are gone; the resting order stays, open.
        assert sorted(account.by_cl_ord_id) == ["late1", "rest1"]
        assert [f.order.cl_ord_id for f in account.fills] == ["late1"]
        monkeypatch.setattr(okx_accounts, "HISTORY_KEPT", 2)  # and a count bound, whatever the rate
        for n in range(3):
            server.publish(_fresh(clock))
            ex.place_order(account, {"instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "ioc",
                                     "px": "97001", "sz": "1", "clOrdId": f"more{n}"})
        assert sorted(account.by_cl_ord_id) == ["more2", "rest1"]
        assert [f.order.cl_ord_id for f in account.fills] == ["more1", "more2"]


@pytest.mark.parametrize("market", ["spot", "usdm"])
async def test_binance_sim_forgets_final_orders_and_trades_after_its_history_window(market: BinanceMarket) -> None:
    async with rig(market) as r:
        ex = r.sim.exchange
        ex.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                      "quantity": "0.01", "price": "90000.0", "newClientOrderId": "rest1"})
        for n in range(3):
            ex.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                          "quantity": "0.01", "price": "97001.0", "newClientOrderId": f"ioc{n}"})
        assert (len(ex.orders), len(ex.trades)) == (4, 3)
        r.clock.advance(ms=binance_exchange.HISTORY_KEPT_MS + 1)
        r.sim.set_book("BTCUSDT", "97000.0", "97000.2", "3", "5")
        ex.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                      "quantity": "0.01", "price": "97001.0", "newClientOrderId": "late1"})
        assert sorted(ex.by_client) == ["late1", "rest1"]
        assert [t.order_id for t in ex.trades] == [ex.by_client["late1"].order_id]
        assert Decimal(ex.query_order({"symbol": "BTCUSDT", "origClientOrderId": "rest1"})["origQty"]) == Decimal(
            "0.01")


# ---------------------------------------------------------------- the engine: a late fill of a forgotten order


async def test_a_late_fill_of_an_order_the_gateway_forgot_reaches_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hedged group's OKX order, final and forgotten by the gateway, gets a fill on the venue
    afterwards: the reconciliation books it once (from the venue's fills, not the gateway's
    memory) and hands it to the orchestrator's late-fill path, which asks the venue by client
    order id (read back) and halts (the exposure is unhedged)."""
    monkeypatch.setattr(reconcile, "FILL_SETTLE_MS", 0)  # the late fill is booked on the next pass
    ledger = tmp_path / "live.db"
    async with live.venues() as v:
        rt = Runtime(live.live_config(v, ledger), is_demo=False, secrets=live.SECRETS, serve_operator_api=False)
        await rt.start()
        try:
            assert rt.reconciler is not None
            await live.until(lambda: rt.gate.state is TradingState.ACTIVE, "trading allowed after reconciling")
            v.books((97390.0, 97390.1), (97000.0, 97000.1))
            await live.until(lambda: any(g.state is GroupState.HEDGED for g in rt.orchestrator.closed),
                             "a hedged group")
            v.calm()
            await rt.journal.flush() if rt.journal is not None else None
            gw = rt.gateways["okx"]
            assert isinstance(gw, OkxGateway)
            object.__setattr__(gw.config, "order_memory_s", 0.0)
            gw.forget_old_orders()
            assert gw.remembered() == (0, 0)

            [group] = [g for g in rt.orchestrator.closed if g.state is GroupState.HEDGED]
            [ours] = [o for o in group.orders if o.venue == "okx"]
            account = v.okx.private.accounts[live.OKX_KEY]
            sim_order = account.by_cl_ord_id[ours.client_order_id]
            # The venue fills it late (a fill after the order was final):
            v.okx.private.exchange._fill(account, sim_order, Decimal("97390.0"), Decimal(1), "T")
            late = account.fills[-1].trade_id
            await rt.reconciler.run_once()

            booked = live.rows(ledger, f"SELECT venue_trade_id FROM fills WHERE venue_trade_id = '{late}'")
            assert booked == [(late,)]
            assert any(e.kind == "late_fill" and ours.client_order_id in e.text for e in rt.events.recent(50))
            assert rt.gate.state is TradingState.HALTED
        finally:
            await rt.stop()


async def test_binance_user_stream_keeps_the_latest_final_states_only() -> None:
    async with rig("usdm") as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = UserDataStream(r.gateway, r.credentials, r.clock, on_update=updates.append, symbols=["BTCUSDT"],
                                reconnect_delay_s=(0.05, 0.2), timeout_s=3.0, final_limit=2)
        stream.start()
        try:
            await stream.wait_connected(3.0)
            for _ in range(4):
                assert (await r.gateway.place(binance_order(r.clock))).state is OrderState.FILLED
            await wait_until(lambda: sum(u.state is OrderState.FILLED for u in updates) == 4, "four final states")
        finally:
            await stream.stop()
        assert stream.remembered() == (2, 4)  # two final states (the latest), four fill ids


async def test_binance_user_stream_forgets_fill_ids_no_catch_up_can_read_again_and_old_final_states() -> None:
    """A count alone (200,000 fill ids, 10,000 final states) took tens of hours of the demo to
    fill. A fill id goes once its trade is older than the next catch-up's `since` (the newest
    event less `lookback_ms`) by `seen_margin_ms`; a final state once it is `final_age_ms` old on
    our clock. The simulated venue stamps trades and events with the same clock."""
    async with rig("usdm") as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = UserDataStream(r.gateway, r.credentials, r.clock, on_update=updates.append, symbols=["BTCUSDT"],
                                reconnect_delay_s=(0.05, 0.2), timeout_s=3.0, lookback_ms=5000,
                                seen_margin_ms=60_000, final_age_ms=60_000)
        stream.start()

        async def fill_one_at(t_s: int) -> None:
            r.clock.advance(ms=t_s * 1000 - (r.clock.time_ms() - start))
            done = sum(u.state is OrderState.FILLED for u in updates)
            assert (await r.gateway.place(binance_order(r.clock))).state is OrderState.FILLED
            await wait_until(lambda: sum(u.state is OrderState.FILLED for u in updates) == done + 1, "a final state")

        try:
            await stream.wait_connected(3.0)
            start = r.clock.time_ms()
            await fill_one_at(0)
            await fill_one_at(30)
            assert stream.remembered() == (2, 2)
            # At 66 s: states older than 6 s go (the first's, of 0 s); trades older than
            # 66 - 5 - 60 = 1 s go (the first's).
            await fill_one_at(66)
            assert stream.remembered() == (2, 2)
            # At 95 s: the state of 30 s is past 35 s and goes; its trade is exactly at the
            # trade horizon (95 - 65 = 30 s), which a catch-up could still read: kept.
            await fill_one_at(95)
            assert stream.remembered() == (2, 3)
        finally:
            await stream.stop()
