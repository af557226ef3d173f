"""The Binance gateway (spot and USD-M) against the simulated venue over loopback sockets.

Place, fill, partial fill, cancel and query; a timeout is `unknown`, resolved by a query and
never sent twice; duplicate client ids; rate-limit backoff honoured before the venue bans us;
a wrong key refused with the venue's code; clock skew healed; local filter refusals; the
WebSocket API order path with REST as the fallback; balances and positions.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from core.instruments import Instrument
from core.models import Order, OrderPurpose, OrderState
from exchanges.binance.auth import ed25519_available
from exchanges.binance.endpoints import BinanceMarket
from exchanges.venue import ErrorKind, VenueError
from tests.binance_support import ASK, T, order, rig, wait_until

MARKETS: list[BinanceMarket] = ["spot", "usdm"]


@pytest.mark.parametrize("market", MARKETS)
async def test_a_marketable_ioc_order_fills_at_the_touch_with_its_trade(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        o = order(r.clock)
        update = await r.gateway.place(o)
        assert update.state is OrderState.FILLED, update.reason
        assert update.client_order_id == o.client_order_id
        [fill] = update.fills
        assert (fill.qty, fill.price) == (Decimal("0.01"), Decimal(ASK))
        [trade] = r.sim.exchange.trades
        assert fill.venue_trade_id == f"{market}:BTCUSDT:{trade.trade_id}"
        assert fill.fee == trade.commission and fill.fee > 0
        assert fill.fee_ccy == ("BTC" if market == "spot" else "USDT")  # spot charges the asset received
        assert update.venue_order_id == str(trade.order_id)
        assert r.sim.rest.orders_received == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_an_ioc_larger_than_the_touch_fills_partly_and_the_rest_expires(market: BinanceMarket) -> None:
    async with rig(market, ask_size="0.004") as r:
        await r.gateway.start()
        update = await r.gateway.place(order(r.clock, qty="0.01"))
        assert update.state is OrderState.EXPIRED
        assert [f.qty for f in update.fills] == [Decimal("0.004")]
        # The venue agrees when asked.
        again = await r.gateway.query(order(r.clock, cid=update.client_order_id))
        assert again.state is OrderState.EXPIRED
        assert [f.venue_trade_id for f in again.fills] == [f.venue_trade_id for f in update.fills]


@pytest.mark.parametrize("market", MARKETS)
async def test_an_ioc_that_does_not_cross_expires_unfilled(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        update = await r.gateway.place(order(r.clock, price="96000.0"))
        assert (update.state, update.fills) == (OrderState.EXPIRED, [])


@pytest.mark.parametrize("market", MARKETS)
async def test_cancel_an_open_order_and_cancel_a_final_one(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        resting = order(r.clock, price="96000.0")
        r.sim.exchange.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                  "quantity": "0.01", "price": "96000", "newClientOrderId": resting.client_order_id})
        assert (await r.gateway.query(resting)).state is OrderState.ACKED
        cancelled = await r.gateway.cancel(resting)
        assert cancelled.state is OrderState.CANCELLED
        assert cancelled.client_order_id == resting.client_order_id  # not the cancel's own id
        # A cancel of a final order (-2011 at the venue) answers the order's real state.
        filled = order(r.clock)
        await r.gateway.place(filled)
        answer = await r.gateway.cancel(filled)
        assert answer.state is OrderState.FILLED
        assert len(answer.fills) == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_an_order_the_venue_never_saw_is_unknown_until_its_recv_window_passed(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        ghost = order(r.clock)
        first = await r.gateway.query(ghost)
        assert first.state is OrderState.UNKNOWN
        r.clock.advance(ms=r.gateway.rest.recv_window_ms + r.gateway.not_found_grace_ms + 1)
        later = await r.gateway.query(ghost)
        assert later.state is OrderState.REJECTED
        assert "never reached the venue" in later.reason


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("executed", [True, False])
async def test_a_timeout_is_unknown_then_resolved_by_query_and_never_sent_twice(
    market: BinanceMarket, executed: bool
) -> None:
    async with rig(market, rest_timeout_s=0.3) as r:
        await r.gateway.start()
        r.sim.faults.timeout_orders = 1
        r.sim.faults.timeout_executes = executed
        r.sim.faults.timeout_hold_s = 5.0
        o = order(r.clock)
        update = await r.gateway.place(o)
        assert update.state is OrderState.UNKNOWN
        assert r.sim.rest.orders_received == 1
        resolved = await r.gateway.query(o)
        if executed:
            assert resolved.state is OrderState.FILLED
            assert [f.qty for f in resolved.fills] == [Decimal("0.01")]
        else:
            assert resolved.state is OrderState.UNKNOWN  # within its recvWindow: maybe still on its way
            r.clock.advance(ms=10_000)
            assert (await r.gateway.query(o)).state is OrderState.REJECTED
        assert r.sim.rest.orders_received == 1  # asked about, never sent again
        assert len(r.sim.exchange.orders) == (1 if executed else 0)


@pytest.mark.parametrize("market", MARKETS)
async def test_a_5xx_with_unknown_status_is_unknown_and_resolved_by_query(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        r.sim.faults.error_orders = 1
        r.sim.faults.error_executes = True
        o = order(r.clock)
        update = await r.gateway.place(o)
        assert update.state is OrderState.UNKNOWN
        assert "Unknown error" in update.reason
        assert (await r.gateway.query(o)).state is OrderState.FILLED
        assert r.sim.rest.orders_received == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_a_duplicate_client_id_is_asked_about_not_taken_for_a_rejection(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        o = order(r.clock, price="96000.0")
        r.sim.exchange.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                  "quantity": "0.01", "price": "96000", "newClientOrderId": o.client_order_id})
        update = await r.gateway.place(o)
        code = "-2010" if market == "spot" else "-4116"
        assert update.state is OrderState.UNKNOWN
        assert code in update.reason
        assert (await r.gateway.query(o)).state is OrderState.ACKED  # the order that holds the id
        assert len(r.sim.exchange.orders) == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_a_429_is_honoured_locally_until_retry_after_and_no_ban_follows(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        r.sim.faults.rate_limit_requests = 1
        r.sim.faults.rate_limit_retry_after_s = 2
        first = await r.gateway.place(order(r.clock))
        assert first.state is OrderState.REJECTED
        assert "rate_limited" in first.reason and "-1003" in first.reason
        served = r.sim.rest.requests_served
        for _ in range(5):  # a client that did not wait would be banned (418) by the third one
            refused = await r.gateway.place(order(r.clock))
            assert refused.state is OrderState.REJECTED
            assert "local-rate-gate" in refused.reason
        assert r.sim.rest.requests_served == served  # none of them reached the venue
        assert r.sim.meter.rejected_418 == 0
        r.clock.advance(ms=2001)
        assert (await r.gateway.place(order(r.clock))).state is OrderState.FILLED


async def test_the_venue_bans_a_client_that_ignores_retry_after() -> None:
    """The simulator side of the same rule: requests during the wait earn a 418 ban."""
    async with rig("spot") as r:
        await r.gateway.start()
        r.sim.faults.rate_limit_requests = 1
        with pytest.raises(VenueError) as first:
            await r.gateway.rest.call(r.gateway.endpoints.api.time)
        assert first.value.kind is ErrorKind.RATE_LIMITED and first.value.retry_after_s == 2
        r.gateway.rest.gate.blocked_until_ms = 0  # a client that forgets what it was told
        kinds = []
        for _ in range(3):
            try:
                await r.gateway.rest.call(r.gateway.endpoints.api.time)
            except VenueError as exc:
                kinds.append((exc.kind, exc.http_status))
            r.gateway.rest.gate.blocked_until_ms = 0
        assert kinds[-1] == (ErrorKind.HALT, 418)
        assert r.sim.meter.rejected_418 == 1


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize(("key", "secret", "code", "kind"), [
    ("B" * 64, "whatever", "-2015", ErrorKind.AUTH),
    ("short-key", "whatever", "-2014", ErrorKind.AUTH),
    (None, "not-the-secret", "-1022", ErrorKind.AUTH),
])
async def test_a_wrong_key_or_signature_is_refused_with_the_venues_code(
    market: BinanceMarket, key: str | None, secret: str, code: str, kind: ErrorKind
) -> None:
    from tests.binance_support import KEY

    async with rig(market, key=key or KEY, secret=secret) as r:
        await r.gateway.start()  # public endpoints need no key
        update = await r.gateway.place(order(r.clock))
        assert update.state is OrderState.REJECTED
        assert code in update.reason
        assert r.gateway.last_halt is not None and r.gateway.last_halt.kind is kind
        assert secret not in update.reason and secret not in str(r.gateway.last_halt)
        assert r.sim.rest.orders_received == 0  # refused before the order was looked at


@pytest.mark.parametrize("market", MARKETS)
async def test_clock_skew_minus_1021_resyncs_the_offset_and_the_request_goes_once(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        r.sim.faults.clock_skew_ms = -20_000  # the venue's clock is 20 s behind ours
        update = await r.gateway.place(order(r.clock))
        assert update.state is OrderState.FILLED
        assert r.gateway.rest.resyncs == 1
        assert r.gateway.rest.offset.offset_ms == -20_000
        assert len(r.sim.exchange.orders) == 1


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize(("qty", "price", "filter_name"), [
    ("0.0001", "97001.0", "lot_size"),  # less than one lot
    ("0.0105", "97001.0", "lot_size"),  # off the grid: never silently sent smaller
    ("0.001", "100.0", "min_notional"),
])
async def test_an_order_off_the_venues_filters_is_refused_locally_naming_the_filter(
    market: BinanceMarket, qty: str, price: str, filter_name: str
) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        if market == "spot" and filter_name == "lot_size":
            qty = {"0.0001": "0.000001", "0.0105": "0.010005"}[qty]
        update = await r.gateway.place(order(r.clock, qty=qty, price=price))
        assert update.state is OrderState.REJECTED
        assert "refused locally" in update.reason and filter_name in update.reason
        assert r.sim.rest.orders_received == 0


async def test_the_price_is_rounded_to_the_tick_never_worse_than_the_limit() -> None:
    async with rig("usdm") as r:
        await r.gateway.start()
        buy = await r.gateway.place(order(r.clock, price="97000.29"))  # tick 0.1: a buy rounds down
        assert buy.state is OrderState.FILLED
        [placed] = r.sim.exchange.orders.values()
        assert placed.price == Decimal("97000.2")


@pytest.mark.parametrize("market", MARKETS)
async def test_specs_come_from_exchange_info_and_config_mismatches_are_reported(market: BinanceMarket) -> None:
    async with rig(market) as r:
        info = await r.gateway.start()
        spec = info.specs["BTCUSDT"]
        step = Decimal("0.00001") if market == "spot" else Decimal("0.001")
        tick = Decimal("0.01") if market == "spot" else Decimal("0.1")
        assert (spec.tick_size, spec.lot_size, spec.min_qty) == (tick, step, step)
        assert spec.min_notional == (Decimal(5) if market == "spot" else Decimal(100))
        good = Instrument("binance", "BTCUSDT", "BTC", Decimal(1), tick, step, step, 5.0)
        assert r.gateway.check_instruments([good]) == []
        wrong = Instrument("binance", "BTCUSDT", "BTC", Decimal(1), tick, step * 10, step, 5.0)
        [problem] = r.gateway.check_instruments([wrong])
        assert "lot_step" in problem
        missing = Instrument("binance", "DOGEUSDT", "DOGE", Decimal(1), tick, step, step, 5.0)
        assert r.gateway.check_instruments([missing]) == [f"binance DOGEUSDT: not listed on {market}"]


async def test_spot_balances_move_with_a_fill() -> None:
    async with rig("spot") as r:
        await r.gateway.start()
        before = await r.gateway.balances()
        await r.gateway.place(order(r.clock))
        after = await r.gateway.balances()
        assert after["USDT"].free == before["USDT"].free - Decimal("970.002")
        assert after["BTC"].free == before["BTC"].free + Decimal("0.01") - Decimal("0.00001")
        assert await r.gateway.free_margin("USDT") == after["USDT"].free
        assert await r.gateway.positions() == {}
        assert await r.gateway.fee_rates("BTCUSDT") == (Decimal("0.001"), Decimal("0.001"))


async def test_usdm_positions_and_margin_follow_fills() -> None:
    async with rig("usdm") as r:
        await r.gateway.start()
        free_before = await r.gateway.free_margin()
        await r.gateway.place(order(r.clock))
        positions = await r.gateway.positions()
        assert positions["BTCUSDT"].qty == Decimal("0.01")
        assert positions["BTCUSDT"].entry_price == Decimal(ASK)
        assert await r.gateway.free_margin() < free_before
        await r.gateway.place(order(r.clock, side="sell", price="96999.0"))
        assert await r.gateway.positions() == {}


@pytest.mark.parametrize("market", MARKETS)
async def test_orders_go_over_the_websocket_api_when_it_is_open(market: BinanceMarket) -> None:
    async with rig(market, ws=True) as r:
        await r.gateway.start()
        assert r.gateway.ws_api is not None
        await r.gateway.ws_api.connect()
        update = await r.gateway.place(order(r.clock))
        assert update.state is OrderState.FILLED
        assert len(update.fills) == 1
        assert (r.gateway.placed_over_ws, r.gateway.placed_over_rest) == (1, 0)
        assert r.sim.rest.orders_received == 0


@pytest.mark.parametrize("market", MARKETS)
async def test_rest_is_the_fallback_when_the_websocket_api_is_down(market: BinanceMarket) -> None:
    async with rig(market, ws=True) as r:
        await r.gateway.start()
        assert r.gateway.ws_api is not None
        await r.gateway.ws_api.connect()
        r.sim.drop_user_streams()
        await asyncio.wait_for(r.gateway.ws_api.closed.wait(), T)
        update = await r.gateway.place(order(r.clock))
        assert update.state is OrderState.FILLED
        assert (r.gateway.placed_over_ws, r.gateway.placed_over_rest) == (0, 1)
        # The session is reopened in the background; the next order takes it again.
        ws_api = r.gateway.ws_api
        await wait_until(lambda: ws_api.connected, "the WebSocket API session to reopen")
        assert (await r.gateway.place(order(r.clock))).state is OrderState.FILLED
        assert (r.gateway.placed_over_ws, r.gateway.placed_over_rest) == (1, 1)


@pytest.mark.parametrize("market", MARKETS)
async def test_a_websocket_order_without_answer_is_unknown_and_not_resent_over_rest(market: BinanceMarket) -> None:
    async with rig(market, ws=True, ws_timeout_s=0.3) as r:
        await r.gateway.start()
        assert r.gateway.ws_api is not None
        await r.gateway.ws_api.connect()
        r.sim.faults.timeout_orders = 1
        o = order(r.clock)
        update = await r.gateway.place(o)
        assert update.state is OrderState.UNKNOWN
        assert "ws-timeout" in update.reason
        assert r.sim.rest.orders_received == 0  # no second copy over REST
        assert (await r.gateway.query(o)).state is OrderState.FILLED
        assert len(r.sim.exchange.orders) == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_a_rest_429_also_holds_back_websocket_orders(market: BinanceMarket) -> None:
    async with rig(market, ws=True) as r:
        await r.gateway.start()
        assert r.gateway.ws_api is not None
        await r.gateway.ws_api.connect()
        r.sim.faults.rate_limit_requests = 1
        with pytest.raises(VenueError):
            await r.gateway.open_orders("BTCUSDT")
        requests = r.sim.ws.requests
        refused = await r.gateway.place(order(r.clock))
        assert refused.state is OrderState.REJECTED and "local-rate-gate" in refused.reason
        assert r.sim.ws.requests == requests and len(r.sim.exchange.orders) == 0
        r.clock.advance(ms=2001)
        assert (await r.gateway.place(order(r.clock))).state is OrderState.FILLED
        assert r.gateway.placed_over_ws == 1


@pytest.mark.skipif(not ed25519_available(), reason="the cryptography package is not installed")
async def test_an_ed25519_session_logon_authorizes_websocket_orders_without_per_request_signatures() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    async with rig("spot", ws=True, logon=True, sim_pem=public, client_pem=private) as r:
        await r.gateway.start()
        assert r.gateway.ws_api is not None
        await r.gateway.ws_api.connect()
        assert r.gateway.ws_api.logged_on
        assert (await r.gateway.place(order(r.clock))).state is OrderState.FILLED
    other = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    async with rig("spot", ws=True, logon=True, sim_pem=public, client_pem=other) as r:
        assert r.gateway.ws_api is not None
        with pytest.raises(VenueError) as refused:
            await r.gateway.ws_api.connect()
        assert refused.value.code == "-1022"


def _flatten(o: Order) -> Order:
    return replace(o, purpose=OrderPurpose.FLATTEN, reduce_only=True)


async def test_a_usdm_flatten_below_the_minimum_notional_is_sent_reduce_only_and_closes_the_dust() -> None:
    """A partial fill can leave a USD-M position below the symbol's minimum notional (0.001 BTC
    at 97,000 is 97 USDT, the minimum 100): an entry of that size is refused locally, but a
    flatten is sent `reduceOnly=true`, which the venue exempts from the minimum, and the
    position is flat. A reduce-only order that would flip the position is the venue's -2022."""
    async with rig("usdm") as r:
        await r.gateway.start()
        opened = await r.gateway.place(order(r.clock, qty="0.002"))
        assert opened.state is OrderState.FILLED, opened.reason
        small_entry = await r.gateway.place(order(r.clock, side="sell", qty="0.001", price="96999.0"))
        assert small_entry.state is OrderState.REJECTED and "min_notional" in small_entry.reason
        too_much = _flatten(order(r.clock, side="sell", qty="0.003", price="96999.0"))
        flipped = await r.gateway.place(too_much)
        assert flipped.state is OrderState.REJECTED and "-2022" in flipped.reason, flipped.reason
        assert r.sim.exchange.positions["BTCUSDT"].amount == Decimal("0.002")
        first = await r.gateway.place(_flatten(order(r.clock, side="sell", qty="0.001", price="96999.0")))
        second = await r.gateway.place(_flatten(order(r.clock, side="sell", qty="0.001", price="96999.0")))
        assert (first.state, second.state) == (OrderState.FILLED, OrderState.FILLED), (first.reason, second.reason)
        assert r.sim.exchange.positions["BTCUSDT"].amount == 0
        sent = [o for o in r.sim.exchange.orders.values() if o.reduce_only]
        assert len(sent) == 2 and all(o.side == "SELL" for o in sent)
        assert r.sim.rest.orders_received == 4  # the entry, the flip (refused by the venue), two flattens


async def test_a_group_close_order_is_not_reduce_only_and_keeps_the_minimum_notional() -> None:
    """A group's close by hand (purpose flatten, not `reduce_only`: trading goes on, and another
    group's entry may move the account's position first) is sent as any order."""
    async with rig("usdm") as r:
        await r.gateway.start()
        assert (await r.gateway.place(order(r.clock, qty="0.002"))).state is OrderState.FILLED
        close = replace(order(r.clock, side="sell", qty="0.002", price="96999.0"), purpose=OrderPurpose.FLATTEN)
        assert (await r.gateway.place(close)).state is OrderState.FILLED
        assert not any(o.reduce_only for o in r.sim.exchange.orders.values())
        small = replace(order(r.clock, side="sell", qty="0.001", price="96999.0"), purpose=OrderPurpose.FLATTEN)
        refused = await r.gateway.place(small)
        assert refused.state is OrderState.REJECTED and "min_notional" in refused.reason


async def test_a_spot_flatten_below_the_minimum_notional_is_refused_locally() -> None:
    """Spot has no positions and no reduce-only flag: its minimum notional holds for a flatten too."""
    async with rig("spot") as r:
        await r.gateway.start()
        dust = _flatten(order(r.clock, side="sell", qty="0.00001", price="96999.0"))
        update = await r.gateway.place(dust)
        assert update.state is OrderState.REJECTED and "min_notional" in update.reason
        assert r.sim.rest.orders_received == 0
