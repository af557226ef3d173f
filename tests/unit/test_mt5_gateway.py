"""The MT5 gateway over the command queue, with the EA played directly on the queue."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.clock import ManualClock, RealClock
from core.commands import CommandFill, CommandState, Mt5Command
from core.models import Order, OrderState
from mt5_bridge.gateway import MT5Gateway, command_id_for
from mt5_bridge.queue import CommandQueue, InMemoryCommandStore
from tests.mt5_support import MAGIC, held, instrument, make_order


def _gateway(queue: CommandQueue, clock: RealClock | ManualClock, *, ttl_ms: int = 2000,
             grace_ms: int = 200) -> MT5Gateway:
    return MT5Gateway(queue, "T1", {"XAUUSD": instrument()}, clock, magic=MAGIC, deviation_points=20,
                      filling="IOC", command_ttl_ms=ttl_ms, grace_ms=grace_ms)


def _fill(deal: int, volume: str) -> CommandFill:
    return CommandFill(deal=deal, order=456, position=789, volume=Decimal(volume), price=Decimal("2650.35"),
                       commission=Decimal("-0.35"), time_msc=1_732_150_000_456)


async def _served(queue: CommandQueue) -> Mt5Command:
    cmds = await queue.wait_pending("T1", 1000)
    assert len(cmds) == 1
    return cmds[0]


def _setup(*, ttl_ms: int = 2000, grace_ms: int = 200) -> tuple[CommandQueue, MT5Gateway]:
    clock = RealClock()
    queue = CommandQueue(InMemoryCommandStore(), clock)
    return queue, _gateway(queue, clock, ttl_ms=ttl_ms, grace_ms=grace_ms)


async def test_place_ack_fill_is_filled() -> None:
    queue, gw = _setup()
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    cmd = await _served(queue)
    assert (cmd.command_id, cmd.kind, cmd.symbol, cmd.side, cmd.volume, cmd.price) == (
        "ord-1", "open", "XAUUSD", "buy", Decimal("0.10"), Decimal("2650.31"))
    assert (cmd.magic, cmd.deviation_points, cmd.filling, cmd.position) == (MAGIC, 20, "IOC", 0)
    assert cmd.expires_msc - cmd.created_ms == 2000
    await queue.ack("T1", "ord-1", "accepted", 10009, "")
    await queue.fill("T1", "ord-1", _fill(123, "0.10"))
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.FILLED
    assert update.venue_order_id == "456"
    [fill] = update.fills
    assert (fill.venue, fill.venue_trade_id, fill.client_order_id) == ("mt5", "123", "ord-1")
    assert (fill.qty, fill.price, fill.fee, fill.fee_ccy, fill.ts_ms) == (
        Decimal("0.10"), Decimal("2650.35"), Decimal("0.35"), "USD", 1_732_150_000_456)


async def test_partial_fills_then_the_deadline_is_partially_filled() -> None:
    queue, gw = _setup(ttl_ms=150, grace_ms=50)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "accepted", 10010, "")
    await queue.fill("T1", "ord-1", _fill(1, "0.04"))
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.PARTIALLY_FILLED
    assert [f.qty for f in update.fills] == [Decimal("0.04")]
    assert "10010" in update.reason


async def test_two_partial_fills_complete_the_order() -> None:
    queue, gw = _setup()
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.fill("T1", "ord-1", _fill(1, "0.04"))
    await asyncio.sleep(0.01)
    assert not placing.done()
    await queue.fill("T1", "ord-1", _fill(2, "0.06"))
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.FILLED
    assert [f.venue_trade_id for f in update.fills] == ["1", "2"]


async def test_rejection_is_reported_at_once() -> None:
    queue, gw = _setup(ttl_ms=10_000)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "rejected", 10019, "no money")
    update = await asyncio.wait_for(placing, 1)
    assert update.state is OrderState.REJECTED
    assert update.reason == "retcode 10019: no money"
    assert update.fills == []


async def test_accepted_without_fills_is_acked_at_the_deadline() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=50)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "accepted", 10008, "placed")
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.ACKED


async def test_no_answer_expires() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=50)
    update = await asyncio.wait_for(gw.place(make_order("ord-1")), 2)
    assert update.state is OrderState.EXPIRED
    assert held(queue, "ord-1").state is CommandState.EXPIRED


async def test_ea_refusing_an_expired_command_is_expired() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=0)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "expired", 0, "expires_msc passed")
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.EXPIRED


async def test_a_late_fill_within_the_grace_is_reported_filled() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=1000)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await asyncio.sleep(0.2)  # the command expires unacknowledged ...
    assert held(queue, "ord-1").state is CommandState.EXPIRED
    await queue.fill("T1", "ord-1", _fill(5, "0.10"))  # ... but the EA had executed it
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.FILLED
    assert [f.venue_trade_id for f in update.fills] == ["5"]


async def test_a_clock_that_does_not_move_gives_unknown_never_a_guess() -> None:
    clock = ManualClock()
    queue = CommandQueue(InMemoryCommandStore(), clock)
    gw = _gateway(queue, clock, ttl_ms=50, grace_ms=20)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    update = await asyncio.wait_for(placing, 2)
    assert update.state is OrderState.UNKNOWN
    assert "no answer" in update.reason


async def test_store_failure_while_enqueuing_is_unknown() -> None:
    class Broken(InMemoryCommandStore):
        async def save(self, command: Mt5Command) -> None:
            raise OSError("disk full")

    clock = RealClock()
    queue = CommandQueue(Broken(), clock)
    update = await _gateway(queue, clock).place(make_order("ord-1"))
    assert update.state is OrderState.UNKNOWN
    assert "OSError" in update.reason


async def test_re_place_is_idempotent() -> None:
    queue, gw = _setup()
    first = asyncio.create_task(gw.place(make_order("ord-1")))
    second = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.fill("T1", "ord-1", _fill(1, "0.10"))
    a, b = await asyncio.wait_for(asyncio.gather(first, second), 2)
    assert a.state is b.state is OrderState.FILLED
    assert len(queue.commands()) == 1
    again = await asyncio.wait_for(gw.place(make_order("ord-1")), 1)
    assert again.state is OrderState.FILLED
    assert len(queue.commands()) == 1


async def test_cancel_withdraws_a_command_not_yet_served() -> None:
    queue, gw = _setup()
    order = make_order("ord-1")
    placing = asyncio.create_task(gw.place(order))
    await asyncio.sleep(0.01)
    update = await gw.cancel(order)
    assert (update.state, update.reason) == (OrderState.REJECTED, "withdrawn")
    placed = await asyncio.wait_for(placing, 1)
    assert (placed.state, placed.reason) == (OrderState.REJECTED, "withdrawn")
    assert queue.pending("T1") == []


async def test_cancel_of_a_served_command_reports_its_state() -> None:
    queue, gw = _setup()
    order = make_order("ord-1")
    placing = asyncio.create_task(gw.place(order))
    await _served(queue)
    update = await gw.cancel(order)
    assert update.state is OrderState.SUBMITTED
    await queue.ack("T1", "ord-1", "rejected", 10006, "rejected")
    assert (await placing).state is OrderState.REJECTED
    assert (await gw.cancel(order)).state is OrderState.REJECTED


async def test_query() -> None:
    queue, gw = _setup()
    assert (await gw.query(make_order("never"))).state is OrderState.REJECTED  # the store knows it was never sent
    amnesic = _gateway(CommandQueue(None, RealClock()), RealClock())
    unknown = await amnesic.query(make_order("never"))
    assert unknown.state is OrderState.UNKNOWN
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    assert (await gw.query(make_order("ord-1"))).state is OrderState.SUBMITTED
    await queue.ack("T1", "ord-1", "accepted", 10009, "")
    assert (await gw.query(make_order("ord-1"))).state is OrderState.ACKED
    await queue.fill("T1", "ord-1", _fill(9, "0.10"))
    assert (await placing).state is OrderState.FILLED
    assert (await gw.query(make_order("ord-1"))).state is OrderState.FILLED


async def test_invalid_orders_are_rejected_before_anything_is_sent() -> None:
    queue, gw = _setup()
    assert (await gw.place(make_order("a", symbol="EURUSD"))).state is OrderState.REJECTED
    assert (await gw.place(make_order("b", qty="0"))).state is OrderState.REJECTED
    bad_price = make_order("c")
    bad_price.price = Decimal(0)
    assert (await gw.place(bad_price)).state is OrderState.REJECTED
    assert queue.commands() == []
    wrong_venue = make_order("d")
    wrong_venue.venue = "okx"
    with pytest.raises(ValueError):
        await gw.place(wrong_venue)


async def test_close_position_sends_a_close_command() -> None:
    queue, gw = _setup()
    closing = asyncio.create_task(gw.close_position(789, "XAUUSD", "sell", Decimal("0.10"), "g-9", "flat-1"))
    cmd = await _served(queue)
    assert (cmd.kind, cmd.position, cmd.side, cmd.price, cmd.group_id, cmd.client_order_id) == (
        "close", 789, "sell", Decimal(0), "g-9", "flat-1")
    await queue.ack("T1", cmd.command_id, "accepted", 10009, "")
    await queue.fill("T1", cmd.command_id, CommandFill(77, 78, 789, Decimal("0.10"), Decimal("2650.0"), Decimal(0), 1))
    update = await asyncio.wait_for(closing, 2)
    assert update.state is OrderState.FILLED
    assert update.client_order_id == "flat-1"
    assert (await gw.close_position(0, "XAUUSD", "sell", Decimal(1), "g", "x")).state is OrderState.REJECTED


def test_command_ids() -> None:
    assert command_id_for("ord-1_A") == "ord-1_A"
    long_id = "g-" + "x" * 40
    derived = command_id_for(long_id)
    assert derived == command_id_for(long_id) and len(derived) == 31 and derived.startswith("c")
    assert command_id_for('with "quote"') != command_id_for("with quote")
    assert len(command_id_for("ünïcode")) == 31
    assert command_id_for("a\n") != "a\n"


def test_gateway_venue() -> None:
    _, gw = _setup()
    assert gw.venue == "mt5"
    order: Order = make_order()
    assert order.venue == gw.venue


async def test_an_unknown_ack_is_unknown_at_the_deadline_and_a_later_fill_resolves_it() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=50)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "unknown", 10012, "TIMEOUT")
    update = await asyncio.wait_for(placing, 2)
    assert (update.state, update.reason) == (OrderState.UNKNOWN, "retcode 10012: outcome unknown: TIMEOUT")
    assert held(queue, "ord-1").state is CommandState.EXPIRED
    await queue.fill("T1", "ord-1", _fill(123, "0.10"))  # the EA found the deal
    resolved = await gw.query(make_order("ord-1"))
    assert resolved.state is OrderState.FILLED and [f.venue_trade_id for f in resolved.fills] == ["123"]


async def test_an_unknown_outcome_the_ea_then_rejects_is_expired_not_unknown() -> None:
    queue, gw = _setup(ttl_ms=100, grace_ms=50)
    placing = asyncio.create_task(gw.place(make_order("ord-1")))
    await _served(queue)
    await queue.ack("T1", "ord-1", "unknown", 10012, "TIMEOUT")
    assert (await asyncio.wait_for(placing, 2)).state is OrderState.UNKNOWN
    await queue.ack("T1", "ord-1", "rejected", 10012, "TIMEOUT: no order or deal appeared within 30000 ms")
    resolved = await gw.query(make_order("ord-1"))
    assert (resolved.state, resolved.reason) == (
        OrderState.EXPIRED, "TIMEOUT: no order or deal appeared within 30000 ms")
