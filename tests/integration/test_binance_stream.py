"""The Binance private order stream (spot WebSocket API subscription, USD-M listenKey stream on
the /private route) against the simulated venue: fills delivered once, the stream agreeing
with REST, and a dropped stream reconnected and caught up with no fill lost or doubled.
"""

from __future__ import annotations

from collections import Counter

import pytest

from core.models import OrderState
from core.ports import OrderUpdate
from exchanges.binance.endpoints import BinanceMarket
from exchanges.binance.stream import UserDataStream
from tests.binance_support import Rig, T, order, rig, wait_until

MARKETS: list[BinanceMarket] = ["spot", "usdm"]


def stream_of(r: Rig, updates: list[OrderUpdate], **kwargs: object) -> UserDataStream:
    return UserDataStream(r.gateway, r.credentials, r.clock, on_update=updates.append, symbols=["BTCUSDT"],
                          reconnect_delay_s=(0.05, 0.2), timeout_s=T, **kwargs)  # type: ignore[arg-type]


def fill_ids(updates: list[OrderUpdate]) -> list[str]:
    return [f.venue_trade_id for u in updates for f in u.fills]


def venue_fill_ids(r: Rig) -> set[str]:
    return {f"{r.market}:{t.symbol}:{t.trade_id}" for t in r.sim.exchange.trades}


@pytest.mark.parametrize("market", MARKETS)
async def test_the_stream_delivers_each_fill_once_and_agrees_with_the_rest_answer(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        stream.start()
        try:
            await stream.wait_connected(T)
            placed = await r.gateway.place(order(r.clock))
            await wait_until(lambda: bool(fill_ids(updates)), "the fill on the stream")
            await wait_until(lambda: updates[-1].state is OrderState.FILLED, "the final state on the stream")
        finally:
            await stream.stop()
        [streamed] = [f for u in updates for f in u.fills]
        [answered] = placed.fills
        assert streamed == answered  # same trade id, qty, price, fee, fee asset, order
        assert {u.client_order_id for u in updates} == {placed.client_order_id}


@pytest.mark.parametrize("market", MARKETS)
async def test_a_repeated_event_delivers_its_fill_once(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        r.sim.ws.repeat_events = True
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        stream.start()
        try:
            await stream.wait_connected(T)
            await r.gateway.place(order(r.clock))
            await r.gateway.place(order(r.clock))
            await wait_until(lambda: stream.duplicate_fills == 2, "both repeated trade events")
        finally:
            await stream.stop()
        assert Counter(fill_ids(updates)) == Counter(venue_fill_ids(r))  # each once


@pytest.mark.parametrize("market", MARKETS)
async def test_a_stream_down_while_orders_fill_is_caught_up_on_reconnect(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        stream.start()
        try:
            await stream.wait_connected(T)
            await r.gateway.place(order(r.clock))
            await wait_until(lambda: len(fill_ids(updates)) == 1, "the first fill on the stream")
            r.sim.refuse_private = True
            assert r.sim.drop_user_streams() == 1
            await wait_until(lambda: not stream.connected.is_set(), "the stream to notice the drop")
            missed = [await r.gateway.place(order(r.clock)) for _ in range(2)]
            partial = await r.gateway.place(order(r.clock, price="96000.0"))  # expires unfilled
            assert [u.state for u in missed] == [OrderState.FILLED, OrderState.FILLED]
            r.sim.refuse_private = False
            await stream.wait_connected(T)
        finally:
            await stream.stop()
        ids = fill_ids(updates)
        assert Counter(ids) == Counter(venue_fill_ids(r)) and len(ids) == 3  # none lost, none doubled
        assert stream.caught_up_fills == 2
        assert stream.connections == 2
        states = {u.client_order_id: u.state for u in updates}
        assert all(states[u.client_order_id] is OrderState.FILLED for u in missed)
        assert partial.client_order_id not in states  # no trade and never tracked: nothing to say


@pytest.mark.parametrize("market", MARKETS)
async def test_a_drop_in_the_middle_of_an_order_loses_no_fill(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        stream.start()
        try:
            await stream.wait_connected(T)
            r.sim.ws.drop_after_events = 1  # NEW goes out; the TRADE event is lost with the connection
            o = order(r.clock)
            await r.gateway.place(o)
            r.sim.ws.drop_after_events = None  # the reconnect waits at least 50 ms: it gets a clean stream
            await wait_until(lambda: stream.connections == 2 and stream.connected.is_set(), "the reconnect")
        finally:
            await stream.stop()
        assert [u.state for u in updates] == [OrderState.ACKED, OrderState.FILLED]
        assert Counter(fill_ids(updates)) == Counter(venue_fill_ids(r))
        assert stream.caught_up_fills == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_a_tracked_open_order_cancelled_while_down_is_reported_after_the_gap(market: BinanceMarket) -> None:
    async with rig(market) as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        stream.start()
        try:
            await stream.wait_connected(T)
            resting = order(r.clock, price="96000.0")
            r.sim.exchange.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                      "quantity": "0.01", "price": "96000",
                                      "newClientOrderId": resting.client_order_id})
            await wait_until(lambda: any(u.state is OrderState.ACKED for u in updates), "the NEW event")
            r.sim.refuse_private = True
            r.sim.drop_user_streams()
            await wait_until(lambda: not stream.connected.is_set(), "the stream to notice the drop")
            assert (await r.gateway.cancel(resting)).state is OrderState.CANCELLED
            r.sim.refuse_private = False
            await stream.wait_connected(T)
        finally:
            await stream.stop()
        assert [u.state for u in updates] == [OrderState.ACKED, OrderState.CANCELLED]


async def test_usdm_listen_key_keepalive_and_a_lost_key_reconnects_with_a_new_one() -> None:
    async with rig("usdm") as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates, keepalive_s=0.05)
        stream.start()
        try:
            await stream.wait_connected(T)
            first_key = next(iter(r.sim.exchange.listen_keys))
            r.sim.exchange.close_listen_key(None)  # the venue forgets it: the next keepalive gets -1125
            await wait_until(lambda: stream.connections == 2 and stream.connected.is_set(), "a new listenKey")
            assert next(iter(r.sim.exchange.listen_keys)) != first_key
            await r.gateway.place(order(r.clock))
            await wait_until(lambda: len(fill_ids(updates)) == 1, "a fill on the new stream")
        finally:
            await stream.stop()


async def test_an_unreadable_frame_is_counted_and_dropped_never_raised() -> None:
    async with rig("usdm") as r:
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates)
        for frame in (b"", b"{", b"[]", b'{"e":"ORDER_TRADE_UPDATE"}', b'{"e":"executionReport","E":"x"}'):
            stream._on_frame(frame)
        assert (stream.dropped, updates) == (5, [])


async def test_a_catch_up_does_not_deliver_again_an_old_fill_of_a_tracked_order_whose_id_aged_out() -> None:
    """Issue 19: fill ids are forgotten once older than the catch-up's horizon. A catch-up reads
    every trade of a tracked open order, however old: those before the horizon were delivered
    when they happened and are not delivered again."""
    async with rig("usdm", ask_size="0.005") as r:
        await r.gateway.start()
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates, lookback_ms=5000, seen_margin_ms=60_000)
        stream.start()
        try:
            await stream.wait_connected(T)
            resting = order(r.clock, price="97000.2")
            r.sim.exchange.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                      "quantity": "0.01", "price": "97000.2",
                                      "newClientOrderId": resting.client_order_id})  # 0.005 fills, 0.005 rests
            await wait_until(lambda: len(fill_ids(updates)) == 1, "the resting order's first fill")
            r.clock.advance(ms=120_000)  # its trade is now 65 s before the horizon's 55 s
            await r.gateway.place(order(r.clock, side="sell", price="96999.0"))  # at the bid: the ask is taken
            await wait_until(lambda: len(fill_ids(updates)) == 2, "a later order's fill")
            assert stream.remembered()[1] == 1  # the resting order's fill id aged out
            r.sim.refuse_private = True
            r.sim.drop_user_streams()
            await wait_until(lambda: not stream.connected.is_set(), "the stream to notice the drop")
            r.sim.refuse_private = False
            await stream.wait_connected(T)
            await wait_until(lambda: stream.connections == 2, "the catch-up after the reconnect")
        finally:
            await stream.stop()
        assert Counter(fill_ids(updates)) == Counter(venue_fill_ids(r)) and len(fill_ids(updates)) == 2


async def test_an_event_stamped_far_ahead_of_the_venue_clock_does_not_age_out_every_fill_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One misdated event must not move the catch-up's horizon (and the fill ids' age) ahead
    of the venue's clock by more than `EVENT_AHEAD_MS`: repeats of later events still deliver
    nothing twice."""
    async with rig("usdm") as r:
        await r.gateway.start()
        emit = r.sim.exchange._emit
        misdated: list[int] = []

        def a_year_ahead_once(event: dict[str, object]) -> None:
            if not misdated and isinstance(event.get("E"), int):
                event = {**event, "E": int(event["E"]) + 365 * 86_400_000}  # type: ignore[call-overload]
                misdated.append(1)
            emit(event)

        monkeypatch.setattr(r.sim.exchange, "_emit", a_year_ahead_once)
        updates: list[OrderUpdate] = []
        stream = stream_of(r, updates, lookback_ms=5000, seen_margin_ms=60_000)
        stream.start()
        try:
            await stream.wait_connected(T)
            await r.gateway.place(order(r.clock))
            await wait_until(lambda: len(fill_ids(updates)) == 1, "the first fill")
            r.sim.ws.repeat_events = True
            await r.gateway.place(order(r.clock))
            await wait_until(lambda: stream.duplicate_fills == 1, "the repeated trade event")
        finally:
            await stream.stop()
        assert misdated and stream.last_event_ms <= r.gateway.rest.venue_ms() + 60_000
        assert Counter(fill_ids(updates)) == Counter(venue_fill_ids(r)) and len(fill_ids(updates)) == 2
