"""The OKX gateway against the OKX simulator over loopback: orders, faults, the private stream.

The simulator is written from the OKX documentation and never imports exchanges/; each test
checks what the gateway reports against what the simulated venue holds.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest

from core.clock import ManualClock
from core.instruments import Instrument
from core.models import Fill, OrderState
from core.ports import OrderUpdate
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import ConfigMismatch
from exchanges.venue import ErrorKind, VenueError
from sim.okx_accounts import SimOrder
from sim.okx_server import OkxSimServer
from tests.okx_support import BTC, ETH, KEY, PASSPHRASE, SECRET, SPOT, T, gateway, okx_sim, order, tick, until


def venue_order(server: OkxSimServer, cid: str) -> SimOrder:
    return server.private.accounts[KEY].by_cl_ord_id[cid]


def venue_trade_ids(server: OkxSimServer, cid: str | None = None) -> list[str]:
    return sorted(f.trade_id for f in server.private.accounts[KEY].fills if cid is None or f.order.cl_ord_id == cid)


async def test_place_fills_over_the_socket_and_agrees_with_the_venue() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        o = order(qty="2", price="97001")
        update = await gw.place(o)
        assert update.state is OrderState.FILLED
        assert gw.sent_over_ws == 1 and gw.sent_over_rest == 0
        assert [f.venue_trade_id for f in update.fills] == venue_trade_ids(server, o.client_order_id)
        fill = update.fills[0]
        assert (fill.qty, fill.price, fill.fee_ccy) == (Decimal(2), Decimal("97000.1"), "USDT")
        # OKX reports the fee negative; ours is positive when charged: 2 x 0.01 x 97000.1 x 0.05%.
        assert fill.fee == Decimal("0.970001")
        assert update.venue_order_id == venue_order(server, o.client_order_id).ord_id
        positions = await gw.positions()
        assert [(p.inst_id, p.qty, p.avg_price) for p in positions] == [(BTC, Decimal(2), Decimal("97000.1"))]
        balance = await gw.balance()
        assert balance.cash["USDT"] == Decimal(100_000) - Decimal("0.970001")
        assert balance.initial_margin > 0


async def test_partial_fill_leaves_the_rest_expired() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        o = order(qty="8", price="97001")  # the ask shows 5 contracts
        update = await gw.place(o)
        assert update.state is OrderState.EXPIRED
        assert update.reason == "ioc rest canceled"
        assert sum(f.qty for f in update.fills) == Decimal(5)
        seen = venue_order(server, o.client_order_id)
        assert (seen.state, seen.acc_fill_sz) == ("canceled", Decimal(5))
        # The size taken stays taken until the book changes: the next buy finds nothing.
        nothing = await gw.place(order(qty="1", price="97001"))
        assert nothing.state is OrderState.EXPIRED and nothing.fills == [] and nothing.reason == "ioc not filled"


async def test_rest_order_entry_when_there_is_no_stream() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False) as gw:
        o = order(side="sell", qty="3", price="96999")
        update = await gw.place(o)
        assert update.state is OrderState.FILLED
        assert (gw.sent_over_rest, gw.sent_over_ws) == (1, 0)
        assert [f.price for f in update.fills] == [Decimal("97000")]
        assert (await gw.query(o)).fills == update.fills
        assert [p.qty for p in await gw.positions()] == [Decimal(-3)]


async def test_order_not_marketable_expires_unfilled() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        update = await gw.place(order(qty="1", price="96000"))
        assert (update.state, update.fills) == (OrderState.EXPIRED, [])
        assert await gw.positions() == []
        assert server.private.accounts[KEY].fills == []


async def test_spot_order_goes_as_cash_and_moves_balances() -> None:
    clock = ManualClock()
    async with okx_sim(clock, balances={"USDT": 50_000}) as server, gateway(server, clock) as gw:
        o = order(symbol=SPOT, qty="0.1", price="97001")
        update = await gw.place(o)
        assert update.state is OrderState.FILLED
        assert venue_order(server, o.client_order_id).td_mode == "cash"
        cash = (await gw.balance()).cash
        # The buy fee is charged in the base currency: 0.1 x 0.1% = 0.0001 BTC.
        assert cash["BTC"] == Decimal("0.0999")
        assert cash["USDT"] == Decimal(50_000) - Decimal("9700.01")


@pytest.mark.parametrize("over_socket", [True, False])
async def test_cancel_and_query_by_client_order_id(over_socket: bool) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=over_socket) as gw:
        resting = order(qty="1", price="96000", cid="restingA1")
        ack = server.private.place_order(server.private.accounts[KEY], {
            "instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "limit", "px": "96000", "sz": "1",
            "clOrdId": "restingA1"})
        assert ack["sCode"] == "0"
        seen = await gw.query(resting)
        assert seen.state is OrderState.ACKED
        assert [u.client_order_id for u in await gw.open_orders(BTC)] == ["restingA1"]
        cancelled = await gw.cancel(resting)
        assert cancelled.state is OrderState.CANCELLED
        assert venue_order(server, "restingA1").state == "canceled"
        assert await gw.open_orders(BTC) == []
        # Cancelling an order that already filled reports the truth: filled.
        done = order(qty="1", price="97001")
        assert (await gw.place(done)).state is OrderState.FILLED
        assert (await gw.cancel(done)).state is OrderState.FILLED


@pytest.mark.parametrize("over_socket", [True, False])
async def test_timeout_is_unknown_then_resolved_by_query_and_never_sent_twice(over_socket: bool) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=over_socket, request_timeout_s=0.3) as gw:
        server.private.faults.hang_next = 1
        server.private.faults.hang_s = 2.0
        server.private.faults.hang_processed = True
        o = order(qty="2", price="97001")
        first = await gw.place(o)
        assert first.state is OrderState.UNKNOWN
        assert first.reason.startswith("timeout")
        assert server.private.orders_received == 1
        resolved = await gw.query(o)
        assert resolved.state is OrderState.FILLED
        assert [f.venue_trade_id for f in resolved.fills] == venue_trade_ids(server, o.client_order_id)
        again = await gw.place(o)  # the engine retrying must not make a second order
        assert again.state is OrderState.FILLED
        assert server.private.orders_received == 1
        assert len(server.private.accounts[KEY].orders) == 1


async def test_lost_order_is_unknown_within_the_grace_then_not_found() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False, request_timeout_s=0.3,
                                                 not_found_grace_s=60.0) as gw:
        server.private.faults.hang_next = 1
        server.private.faults.hang_s = 1.0
        server.private.faults.hang_processed = False
        o = order()
        assert (await gw.place(o)).state is OrderState.UNKNOWN
        assert server.private.orders_received == 0
        pending = await gw.query(o)
        assert (pending.state, pending.reason) == (OrderState.UNKNOWN, "not found yet")
        gw.config = gw.config  # the grace is a setting: past it, not found is final
        object.__setattr__(gw.config, "not_found_grace_s", 0.0)
        final = await gw.query(o)
        assert (final.state, final.reason) == (OrderState.REJECTED, "order not found")


async def test_server_error_after_processing_is_unknown_and_query_finds_the_fill() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False) as gw:
        server.private.faults.server_error_next = 1
        o = order()
        first = await gw.place(o)
        assert first.state is OrderState.UNKNOWN and "50001" in first.reason
        assert (await gw.query(o)).state is OrderState.FILLED
        assert server.private.orders_received == 1


async def test_duplicate_client_order_id_is_unknown_and_the_venue_keeps_one_order() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False) as gw:
        account = server.private.accounts[KEY]
        server.private.place_order(account, {"instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "limit",
                                             "px": "96000", "sz": "1", "clOrdId": "dupA1"})
        o = order(qty="1", price="97001", cid="dupA1")
        update = await gw.place(o)  # this gateway never sent dupA1: the venue refuses it (51016)
        assert update.state is OrderState.UNKNOWN
        assert update.reason.startswith("51016")
        assert [x.cl_ord_id for x in account.orders.values()] == ["dupA1"]
        assert (await gw.query(o)).state is OrderState.ACKED  # the query finds the resting one


async def test_a_refused_duplicate_id_with_no_such_order_resolves_as_not_found() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        server.private.faults.duplicate_next = 1
        o = order()
        first = await gw.place(o)
        assert (first.state, first.reason) == (OrderState.UNKNOWN, "51016 Duplicated clOrdId")
        assert (await gw.query(o)).state is OrderState.REJECTED  # asked, not re-sent: nothing is there
        assert server.private.orders_received == 0 and server.private.accounts[KEY].orders == {}


async def test_rate_limit_waits_before_sending_again() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False, rate_limit_wait_s=0.3) as gw:
        server.private.faults.rate_limit_next = 1
        update = await gw.place(order())
        assert update.state is OrderState.FILLED
        assert gw.rest.rate_limited == 1
        places = [(t, status) for t, method, path, status in server.private.request_log
                  if method == "POST" and path == "/api/v5/trade/order"]
        assert [s for _, s in places] == [429, 200]
        assert places[1][0] - places[0][0] >= 0.3  # the wait came before the second request
        assert server.private.orders_received == 1


async def test_venue_rate_limit_window_is_honoured() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False, rate_limit_wait_s=0.8) as gw:
        server.private.rate_limits["/api/v5/trade/order"] = 2  # per 2 s
        for _ in range(3):
            assert (await gw.place(order(qty="1"))).state is OrderState.FILLED
            server.publish(tick(bid=97000.0, ask=97000.1, size=5.0 + gw.rest.requests, clock=clock))
        posts = [(t, s) for t, m, _p, s in server.private.request_log if m == "POST"]
        statuses = [s for _, s in posts]
        assert statuses[:2] == [200, 200] and statuses[-1] == 200
        assert set(statuses[2:-1]) == {429}  # the third waited out the window, however many tries
        for (t_429, status), (t_next, _) in itertools.pairwise(posts):
            if status == 429:
                assert t_next - t_429 >= 0.8, "a request left before the rate-limit wait"
        assert server.private.orders_received == 3


async def test_clock_skew_resyncs_the_offset_and_signs_again() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False) as gw:
        server.private.faults.clock_skew_ms = 45_000
        assert (await gw.place(order())).state is OrderState.FILLED
        assert gw.rest.resyncs == 1
        assert gw.rest.offset.offset_ms == 45_000
        assert [s for _, m, _p, s in server.private.request_log if m == "POST"] == [401, 200]


@pytest.mark.parametrize(
    ("creds", "code"),
    [
        (OkxCredentials("wrong-key", SECRET, PASSPHRASE), "50111"),
        (OkxCredentials(KEY, "0" * 32, PASSPHRASE), "50113"),
        (OkxCredentials(KEY, SECRET, "wrong-pass"), "50105"),
    ],
)
async def test_wrong_credentials_are_refused_with_the_venue_code(creds: OkxCredentials, code: str) -> None:
    clock = ManualClock()
    halts: list[VenueError] = []
    async with okx_sim(clock) as server, gateway(server, clock, creds=creds, stream=False) as gw:
        gw.on_halt = halts.append
        update = await gw.place(order())
        assert update.state is OrderState.REJECTED
        assert update.reason.startswith(f"auth: {code}")
        assert gw.halted is not None and gw.halted.code == code and gw.halted.kind is ErrorKind.AUTH
        assert [h.code for h in halts] == [code]
        assert server.private.auth_failures == [code]
        assert server.private.orders_received == 0
        assert creds.secret not in update.reason and creds.secret not in str(gw.halted)
        # Once halted, nothing more leaves.
        assert (await gw.place(order())).reason.startswith("okx halted")
        assert server.private.auth_failures == [code]


async def test_demo_key_needs_the_demo_header() -> None:
    clock = ManualClock()
    async with okx_sim(clock, demo=True) as server:
        async with gateway(server, clock, stream=False) as live:
            update = await live.place(order())
            assert update.reason.startswith("auth: 50101")
        async with gateway(server, clock, stream=False, demo=True) as demo:
            assert (await demo.place(order())).state is OrderState.FILLED


async def test_private_login_with_a_wrong_key_stops_the_stream() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock, stream=False,
                                                 creds=OkxCredentials("nope", SECRET, PASSPHRASE)) as gw:
        await gw.stream.start()
        await until(lambda: gw.stream.fatal is not None, "the refused login")
        assert gw.stream.fatal is not None and gw.stream.fatal.code == "60005"
        assert not gw.stream.connected
        assert gw.stream.stats.connects == 1  # no hammering with a key that is wrong


async def test_stream_drop_reconnects_resubscribes_and_catches_up_without_loss_or_double() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        heard: list[OrderUpdate] = []
        gw.states.on_update = heard.append
        before = await gw.place(order(qty="1"))
        assert before.state is OrderState.FILLED
        server.refuse_connections_for(1.5)  # long enough that the next order cannot find it back
        assert server.drop_private_streams() == 1
        await until(lambda: not gw.stream.connected, "the drop to be seen")
        # While down: one order through the gateway (REST), one the stream never heard of at all.
        during = await gw.place(order(qty="1"))
        assert during.state is OrderState.FILLED and gw.sent_over_rest == 1
        server.publish(tick(bid=97000.2, ask=97000.3, clock=clock))
        server.private.place_order(server.private.accounts[KEY], {
            "instId": BTC, "tdMode": "cross", "side": "buy", "ordType": "ioc", "px": "97001", "sz": "2",
            "clOrdId": "missedWhileDown1"})
        await gw.stream.wait_ready(T)
        await until(lambda: gw.stream.stats.catch_ups == 1, "the catch-up")
        await until(lambda: any(u.client_order_id == "missedWhileDown1" and u.fills for u in heard), "missed fill")
        assert gw.stream.stats.connects == 2
        heard_ids = [f.venue_trade_id for u in heard for f in u.fills]
        assert len(heard_ids) == len(set(heard_ids)), "a fill was reported twice"
        assert sorted(heard_ids) == venue_trade_ids(server)
        # After the reconnect the stream hears new orders again.
        after = await gw.place(order(qty="1", price="97001"))
        assert after.state is OrderState.FILLED and gw.sent_over_ws == 2


async def test_the_same_push_twice_is_one_fill() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        fills: list[Fill] = []
        gw.states.on_update = lambda u: fills.extend(u.fills)
        o = order()
        await gw.place(o)
        sim_order = venue_order(server, o.client_order_id)
        session = next(iter(server.private.sessions))
        text = json.dumps({"arg": {"channel": "orders", "instType": "ANY"}, "data": [sim_order.detail()]})
        pushes = gw.stream.stats.pushes
        session.push(text)
        session.push(text)
        await until(lambda: gw.stream.stats.pushes == pushes + 2, "both pushes")
        # Heard once when it was made, never again however often OKX resends the message.
        assert [f.venue_trade_id for f in fills] == venue_trade_ids(server, o.client_order_id)
        assert len(gw.states.fills.fills(o.client_order_id)) == 1


async def test_venue_specs_are_loaded_and_the_config_is_checked_against_them() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        spec = gw.specs[BTC]
        assert (spec.tick_size, spec.lot_size, spec.min_qty, spec.contract_value) == (
            Decimal("0.1"), Decimal(1), Decimal(1), Decimal("0.01"))
        good = Instrument("okx", BTC, "BTC", Decimal("0.01"), Decimal("0.1"), Decimal(1), Decimal(1), 5.0)
        gw.verify_config([good])
        bad = Instrument("okx", ETH, "ETH", Decimal("0.01"), Decimal("0.01"), Decimal(1), Decimal(1), 5.0)
        mismatch = r"ETH-USDT-SWAP: qty_per_unit is 0.01 in the config, 0.1 on the venue"
        with pytest.raises(ConfigMismatch, match=mismatch):
            gw.verify_config([good, bad])
        with pytest.raises(KeyError, match="NOPE-USDT-SWAP"):
            await gw.load_specs(["NOPE-USDT-SWAP"])


@pytest.mark.parametrize(
    ("qty", "price", "filter_name"),
    [("0.5", "97001", "lot_size"), ("1.5", "97001", "lot_size"), ("2", "0", "positive")],
)
async def test_local_filter_refusal_names_the_filter_and_sends_nothing(qty: str, price: str, filter_name: str) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        update = await gw.place(order(qty=qty, price=price))
        assert update.state is OrderState.REJECTED
        assert update.reason.startswith("refused locally") and filter_name in update.reason
        assert server.private.orders_received == 0


async def test_price_is_rounded_to_the_tick_never_worse() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        buy = order(qty="1", price="97000.19")
        await gw.place(buy)
        assert venue_order(server, buy.client_order_id).px == Decimal("97000.1")
        sell = order(qty="1", price="96999.91", side="sell")
        await gw.place(sell)
        assert venue_order(server, sell.client_order_id).px == Decimal("97000.0")


async def test_recent_fills_and_fee_tier() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, gateway(server, clock) as gw:
        await gw.place(order(qty="1"))
        await gw.place(order(qty="1", side="sell", price="96999"))
        fills = await gw.recent_fills("SWAP", BTC)
        assert [f.venue_trade_id for f in fills] == sorted(venue_trade_ids(server), reverse=True)
        assert await gw.trade_fee("SWAP") == (Decimal("0.0002"), Decimal("0.0005"))
