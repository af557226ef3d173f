"""Reconciliation reads every fill since its last pass, however many: OKX pages back by bill id
(100 a page), Binance forward by trade id (1000 a page), against the simulators' own paging.
A burst larger than one pass may read is said (IncompleteRead), never taken as complete.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from core.clock import ManualClock
from engine.live_venues import BinanceAccount, IncompleteRead, OkxAccount
from sim.binance_exchange import SimTrade
from tests import binance_support as bn
from tests.okx_support import BTC, gateway, okx_sim, order, tick


async def test_okx_pages_back_through_every_fill_since_the_last_pass() -> None:
    clock = ManualClock()
    async with okx_sim(clock, balances={"USDT": 10**9}) as server:
        server.private.rate_limits = {}  # 250 orders at once: OKX's window would refuse them
        async with gateway(server, clock, stream=False) as gw:
            start = clock.time_ms()
            for i in range(250):
                server.publish(tick(BTC, clock=clock))  # a fresh book: the touch is there again
                buy = i % 2 == 0
                done = await gw.place(order(qty="1", price="97100" if buy else "96900", side="buy" if buy else "sell",
                                            cid=f"qap{i}"))
                assert done.fills, done
                clock.advance(ms=10)
            account = OkxAccount(gw, [BTC])
            fills = await account.fills_since(start)
            assert len(fills) == 250 and len({f.venue_trade_id for f in fills}) == 250
            assert {f.client_order_id for f in fills} == {f"qap{i}" for i in range(250)}
            later = await account.fills_since(start + 10 * 200)  # only the last 50
            assert len(later) == 50
            gw_pages = await gw.fills_since("SWAP", start, max_pages=2)
            assert gw_pages[1] is False and len(gw_pages[0]) == 200  # said incomplete, not complete


async def test_binance_pages_forward_and_looks_up_only_what_the_ledger_lacks() -> None:
    async with bn.rig("usdm") as r:
        ids = itertools.count(1)
        await r.gateway.start()
        placed = await r.gateway.place(bn.order(r.clock, cid="qab1"))
        report = next(iter(r.sim.exchange.orders.values()))
        assert placed.fills
        base = r.clock.time_ms()
        # 2,499 more trades of that order on the venue (as a busy day leaves them).
        for i in range(2499):
            r.sim.exchange.trades.append(SimTrade(10_000 + next(ids), report.order_id, "BTCUSDT", "BUY",
                                                  Decimal("97000.2"), Decimal("0.001"), Decimal("0.01"), "USDT",
                                                  base + i, False))
        account = BinanceAccount(r.gateway, ["BTCUSDT"])
        asked: list[int] = []

        async def known(trade_ids: list[str]) -> set[str]:
            asked.append(len(trade_ids))
            return set(trade_ids[:-1])  # the ledger has all but one

        fills = await account.fills_since(base - 60_000, known)
        assert len(fills) == 2500 and asked == [2500]
        assert [f.client_order_id for f in fills if f.client_order_id] == ["qab1"]  # only the missing one

        # A burst beyond what one pass reads is said, not taken as complete.
        for i in range(8000):
            r.sim.exchange.trades.append(SimTrade(20_000 + i, report.order_id, "BTCUSDT", "BUY", Decimal("97000.2"),
                                                  Decimal("0.001"), Decimal("0.01"), "USDT", base + 3000 + i, False))
        with pytest.raises(IncompleteRead, match="BTCUSDT"):
            await account.fills_since(base - 60_000, known)
