"""ledger.net_positions: reconciliation's net positions, summed once and then from new fills only.

Reconciliation used to sum every fill in the ledger three times a pass; these tests pin that the
running sums equal a full scan, that a read does not re-read counted fills, that a fill whose
order is missing counts once its order is there, and that concurrent reads count a fill once."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from core.clock import ManualClock
from core.models import Fill, Order
from ledger import Ledger, LedgerError, money, queries
from ledger.net_positions import NetPositions
from tests.unit.test_ledger_support import T0, apply_fill, make_group, make_order

D = Decimal


def fill(order: Order, tid: str, qty: Decimal) -> Fill:
    return Fill(venue=order.venue, venue_trade_id=tid, client_order_id=order.client_order_id, qty=qty,
                price=D("65000"), fee=D("0.01"), fee_ccy="USDT", ts_ms=T0)


async def book_group(led: Ledger, gid: str, n: int) -> None:
    """A group whose two legs each fill in `n` parts of 1 (OKX contracts buy, MT5 lots sell)."""
    group = make_group(gid, T0)
    led.group_opened(group)
    for leg in (0, 1):
        order = make_order(group, leg, ts_ms=T0)
        await led.order_created(order)
        for i in range(n):
            f = fill(order, f"{gid}-{leg}-{i}", D(1))
            apply_fill(order, f)
            led.fill(order, f)
    await led.flush()


async def a_closed_ledger(path: Path, n: int) -> None:
    """A ledger file holding group g1 with `n` fills a leg, closed (to change behind its back)."""
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await book_group(led, "g1", n)
    finally:
        await led.close()


async def test_running_sums_equal_a_full_scan_as_fills_are_booked(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    net = NetPositions()
    try:
        assert await led.read(net.refresh) == {}
        await book_group(led, "g1", 2)
        first = await led.read(net.refresh)
        assert first == {("okx", "BTC-USDT-SWAP"): D(2), ("mt5", "BTCUSD"): D(-2)}
        after_first = net.counted_through
        assert after_first > 0
        await book_group(led, "g2", 3)
        second = await led.read(net.refresh)
        assert second == {("okx", "BTC-USDT-SWAP"): D(5), ("mt5", "BTCUSD"): D(-5)}
        assert second == await led.read(queries.net_positions)
        assert net.counted_through > after_first
        first[("okx", "BTC-USDT-SWAP")] = D(99)  # a copy: the caller cannot move the sums
        assert await led.read(net.refresh) == second
    finally:
        await led.close()


async def test_a_read_does_not_read_counted_fills_again(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_closed_ledger(path, 2)
    net = NetPositions()
    async with queries.open_reader(path) as db:
        assert (await net.refresh(db))[("okx", "BTC-USDT-SWAP")] == D(2)
    with sqlite3.connect(path) as raw:  # change a counted fill behind its back: a full scan sees it
        raw.execute("UPDATE fills SET qty = '7' WHERE venue_trade_id = 'g1-0-0'")
    async with queries.open_reader(path) as db:
        assert (await queries.net_positions(db))[("okx", "BTC-USDT-SWAP")] == D(8)
        assert (await net.refresh(db))[("okx", "BTC-USDT-SWAP")] == D(2)


async def test_a_fill_without_its_order_counts_once_the_order_is_there(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_closed_ledger(path, 1)
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO fills (fill_id, order_id, venue, venue_trade_id, qty, price, fee, fee_ccy, ts_ms) "
                    "VALUES (100000, 'qaorphan', 'okx', 'x1', '4', '1', '0', 'USDT', 0)")
        raw.execute("INSERT INTO fills (fill_id, order_id, venue, venue_trade_id, qty, price, fee, fee_ccy, ts_ms) "
                    "SELECT 100001, order_id, venue, 'x2', '1', '1', '0', 'USDT', 0 FROM fills "
                    "WHERE venue_trade_id = 'g1-0-0'")
    net = NetPositions()
    async with queries.open_reader(path) as db:
        # the orphan is not counted (as in a full scan); the fill after it is
        assert (await net.refresh(db))[("okx", "BTC-USDT-SWAP")] == D(2)
        assert await net.refresh(db) == await queries.net_positions(db)
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO orders SELECT 'qaorphan', 'qaorphan', group_id, venue, symbol, 'sell', qty, price, "
                    "purpose, state, venue_order_id, created_at_ms, updated_at_ms FROM orders WHERE venue = 'okx'")
    async with queries.open_reader(path) as db:
        assert (await net.refresh(db))[("okx", "BTC-USDT-SWAP")] == D(-2)
        assert (await net.refresh(db))[("okx", "BTC-USDT-SWAP")] == D(-2)  # once, not again
        assert await net.refresh(db) == await queries.net_positions(db)


async def test_concurrent_reads_count_each_fill_once(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    net = NetPositions()
    try:
        await book_group(led, "g1", 200)
        results = await asyncio.gather(*(led.read(net.refresh) for _ in range(3)))
        assert all(r == {("okx", "BTC-USDT-SWAP"): D(200), ("mt5", "BTCUSD"): D(-200)} for r in results)
    finally:
        await led.close()


async def test_the_newest_fill_id_per_venue(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        assert await led.last_fill_id("okx") == 0
        await book_group(led, "g1", 2)
        okx, mt5 = await led.last_fill_id("okx"), await led.last_fill_id("mt5")
        assert 0 < okx < mt5  # the OKX leg was booked first
        await book_group(led, "g2", 1)
        assert await led.last_fill_id("okx") > mt5
        assert await led.last_fill_id("binance") == 0
    finally:
        await led.close()


async def test_the_position_at_a_moment_counts_fills_stamped_by_then_also_booked_late(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        group = make_group("g1", T0)
        led.group_opened(group)
        order = make_order(group, 0, ts_ms=T0)
        await led.order_created(order)
        stamps = [T0 + 10, T0 + 20, T0 + 30, T0 + 15]  # the last one booked late, stamped earlier
        for i, ts in enumerate(stamps):
            f = Fill(venue="okx", venue_trade_id=f"t{i}", client_order_id=order.client_order_id, qty=D(i + 1),
                     price=D("65000"), fee=D(0), fee_ccy="USDT", ts_ms=ts)
            apply_fill(order, f)
            led.fill(order, f)
        await led.flush()
        await led.net_positions()  # the running sums hold every fill now: the answer takes off the later ones
        for at, want in ((T0, 0), (T0 + 10, 1), (T0 + 15, 5), (T0 + 20, 7), (T0 + 30, 10)):
            assert await led.position_at("okx", "BTC-USDT-SWAP", at) == D(want), at
            async with queries.open_reader(led.path) as db:  # the one-shot read, from nothing
                assert await money.position_at(db, "okx", "BTC-USDT-SWAP", at) == D(want), at
        assert await led.position_at("okx", "ETH-USDT-SWAP", T0 + 30) == 0
    finally:
        await led.close()


async def test_a_damaged_quantity_or_side_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_closed_ledger(path, 1)
    for sql in ("UPDATE fills SET qty = '-1' WHERE venue_trade_id = 'g1-1-0'",
                "UPDATE fills SET qty = 'NaN' WHERE venue_trade_id = 'g1-1-0'",
                "UPDATE orders SET side = 'hold' WHERE venue = 'mt5'"):
        with sqlite3.connect(path) as raw:
            raw.execute(sql)
            raw.commit()
            net = NetPositions()
            try:
                async with queries.open_reader(path) as db:
                    with pytest.raises(LedgerError, match="mt5:BTCUSD"):
                        await net.refresh(db)
                    # nothing past the fill before the damaged one was counted
                    assert net.counted_through < await queries_last_fill(db)
            finally:
                raw.execute("UPDATE fills SET qty = '1'")
                raw.execute("UPDATE orders SET side = 'sell' WHERE venue = 'mt5'")


async def queries_last_fill(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT max(fill_id) FROM fills") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _cancel_a_read(led: Ledger) -> None:
    """A read whose caller is cancelled inside aiosqlite's execute (a reconciliation pass cut by
    its timeout), then a moment for the worker thread to run it."""
    task = asyncio.create_task(led.read(queries.known_trades, "okx", ["g1-0-0"]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)  # lets the old bug show (the statement ran before the commit below)


async def test_a_cancelled_read_leaves_no_stale_snapshot_for_the_next(tmp_path: Path) -> None:
    """Review of this change: aiosqlite's worker held the cancelled read's statement open, and the
    next read on the reader connection saw the snapshot before fills already flushed: funding's
    position at a settlement missed them, and a fill booked during a venue's read went unseen."""
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        await book_group(led, "g1", 3)
        assert await led.position_at("okx", "BTC-USDT-SWAP", T0 + 100) == D(3)
        await _cancel_a_read(led)
        await book_group(led, "g2", 2)  # committed: flush returned
        assert await led.position_at("okx", "BTC-USDT-SWAP", T0 + 100) == D(5)

        before = await led.last_fill_id("okx")
        await _cancel_a_read(led)
        await book_group(led, "g3", 1)
        assert await led.last_fill_id("okx") > before
        assert await led.get_command("nothing") is None  # the MT5 command reads go the same way
    finally:
        await led.close()
