"""Perpetual funding journaled (issue 16): the simulated OKX and Binance USD-M servers settle
funding as documented, the engine books each settlement on the position held, journals it,
and the ledger's replay (`ledger summary` / `equity`) states the same carry as the running
equity. Real sockets on 127.0.0.1, a real SQLite ledger.

Worked examples, from the venues' documented formulas:
- OKX, "Introduction to perpetual swap funding fee" (https://www.okx.com/help/360053909272):
  funding fee = position value x funding rate; a positive rate: longs pay shorts. Long 100
  BTC-USDT-SWAP contracts (ctVal 0.01 BTC: 1 BTC) valued at 60,000 and a 0.01 % rate: pays 6 USDT.
- Binance USD-M, "Get Funding Rate History" (`GET /fapi/v1/fundingRate`: `fundingRate`,
  `fundingTime`, `markPrice`) and "Introduction to Binance Futures Funding Rates": funding amount
  = nominal value x funding rate, nominal = mark price x size; a negative rate: shorts pay longs.
  Short 0.5 BTC at a 64,000 mark and -0.0125 %: pays 4 USDT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from core.clock import ManualClock
from core.config import MoneyConfig
from core.instruments import Instrument
from core.models import OrderPurpose, Venue
from engine.equity import RunningEquity
from engine.funding import Booked, FundingAccrual, Held, Perpetual
from feeds.funding import FundingSettlement
from ledger import Ledger, money, queries
from sim.binance_server import BinanceSimServer
from sim.funding import EIGHT_HOURS_MS
from sim.market import SimTick
from sim.okx_server import OkxSimServer
from tests.unit.test_ledger_money import BIN, book, fill
from tests.unit.test_ledger_support import OKX, T0, make_group, make_order

D = Decimal
FUNDING_MS = (T0 // EIGHT_HOURS_MS + 1) * EIGHT_HOURS_MS
TOUCH: dict[tuple[Venue, str], tuple[float, float]] = {
    ("okx", "BTC-USDT-SWAP"): (59999.9, 60000.1), ("binance", "BTCUSDT"): (63999.9, 64000.1)}
MARKS = {k: (D(repr(b)) + D(repr(a))) / 2 for k, (b, a) in TOUCH.items()}
INSTRUMENTS: list[Instrument] = [OKX, BIN]


def _held(led: Ledger) -> Held:
    """The position at a funding time from the ledger's fills, as the runtime reads it."""
    async def held(venue: Venue, symbol: str, at_ms: int) -> Decimal:
        await led.flush()
        return await led.read(money.position_at, venue, symbol, at_ms)
    return held


Venues = tuple[ManualClock, OkxSimServer, BinanceSimServer, Ledger]


@contextlib.asynccontextmanager
async def _perpetual_venues(tmp_path: Path) -> AsyncIterator[Venues]:
    """OKX's and Binance USD-M's simulators quoting BTC at T0 (Binance funding -0.0125 %), and a
    ledger on the same manual clock; all stopped and closed after."""
    clock = ManualClock(wall_ms=T0)
    okx = OkxSimServer(symbols=["BTC-USDT-SWAP"], clock=clock)
    binance = BinanceSimServer(symbols=["BTCUSDT"], market="usdm", clock=clock)
    await okx.start()
    await binance.start()
    led = await Ledger.open(tmp_path / "l.db", clock=clock)
    try:
        okx.publish(SimTick("okx", "BTC-USDT-SWAP", *TOUCH[("okx", "BTC-USDT-SWAP")], 5.0, 5.0, T0))
        binance.publish(SimTick("binance", "BTCUSDT", *TOUCH[("binance", "BTCUSDT")], 1.0, 1.0, T0))
        binance.funding.set_rate("BTCUSDT", D("-0.000125"))
        yield clock, okx, binance, led
    finally:
        await led.close()
        await okx.stop()
        await binance.stop()


async def _positions(led: Ledger) -> None:
    """Long 1 BTC on OKX (a group's leg), short 0.5 BTC on Binance (a flatten order's)."""
    g = make_group("g1", T0)
    led.group_opened(g)
    buy = make_order(g, 0, ts_ms=T0)
    buy.qty = D(100)
    await book(led, buy, fill(buy, "o1", "59990", ts=T0 + 1, fee="3"))
    short = make_order(None, 7, purpose=OrderPurpose.FLATTEN, ts_ms=T0 + 2, coid="qabin1")
    short.venue, short.symbol, short.side, short.qty = "binance", "BTCUSDT", "sell", D("0.5")
    await book(led, short, fill(short, "b1", "64010", ts=T0 + 3, fee="1.6"))
    await led.flush()


@pytest.mark.timeout(60)
async def test_funding_is_booked_at_each_funding_time_and_replayed_from_the_ledger(tmp_path: Path) -> None:
    async with _perpetual_venues(tmp_path) as (clock, okx, binance, led):
        await _positions(led)
        config = MoneyConfig(rates={"USDT": D(1)})
        equity = RunningEquity(INSTRUMENTS, config, lambda v, s: TOUCH.get((v, s)))
        await equity.restore(led)
        journaled: list[Booked] = []

        def journal(b: Booked) -> None:
            journaled.append(b)
            led.funding(b.venue, b.symbol, b.funding_ms, b.rate, b.mark_price, b.position, b.amount, b.ccy)

        perps = [Perpetual("okx", "BTC-USDT-SWAP", okx.rest_url), Perpetual("binance", "BTCUSDT", binance.rest_url)]
        accrual = FundingAccrual(perps, equity.accrue_funding, journal, clock, _held(led))
        accrual.restore(await led.read(money.last_funding))
        assert await accrual.poll_once() == []  # no funding time has passed yet
        clock.advance(ms=FUNDING_MS - T0 + 1_000)
        booked = await accrual.poll_once()
        assert accrual.errors == 0, accrual.last_error
        assert {(b.venue, b.funding_ms, b.position, b.amount, b.ccy) for b in booked} == {
            ("okx", FUNDING_MS, D(1), D(-6), "USDT"), ("binance", FUNDING_MS, D("-0.5"), D(-4), "USDT")}
        assert await accrual.poll_once() == []  # each funding time once
        now = clock.time_ms()
        running = equity.equity(now)
        assert D(running["carry"]) == D(-10)
        await led.flush()

        async with queries.open_reader(tmp_path / "l.db") as db:
            ledger_eq = await money.equity(db, now_ms=now, rates={"USDT": D(1)}, marks=MARKS,
                                           instruments={BIN.key: BIN})
        assert D(ledger_eq["carry"]) == D(-10)
        assert D(ledger_eq["total"]) == D(running["total"])  # the same figure, to the cent and beyond

        # After a restart: the carry is replayed, and nothing is booked twice.
        again = RunningEquity(INSTRUMENTS, config, lambda v, s: TOUCH.get((v, s)))
        await again.restore(led)
        assert D(again.equity(now)["carry"]) == D(-10)
        resumed = FundingAccrual(perps, again.accrue_funding, journal, clock, _held(led))
        resumed.restore(await led.read(money.last_funding))
        assert await resumed.poll_once() == [] and len(journaled) == 2
        # The next funding time is charged on what is held then (OKX closed meanwhile: nothing).
        clock.advance(ms=EIGHT_HOURS_MS)
        sell = make_order(make_group("g2", now), 0, ts_ms=now)
        sell.side, sell.qty = "sell", D(100)
        closed = fill(sell, "o2", "60000", ts=clock.time_ms() - 5_000)
        await book(led, sell, closed)
        again.on_fill(sell, closed)
        assert [(b.venue, b.amount) for b in await resumed.poll_once()] == [("binance", D(-4))]


@pytest.mark.timeout(60)
async def test_the_sims_serve_the_documented_funding_endpoints() -> None:
    clock = ManualClock(wall_ms=T0)
    okx = OkxSimServer(symbols=["BTC-USDT-SWAP", "BTC-USDT"], clock=clock)
    binance = BinanceSimServer(symbols=["BTCUSDT"], market="usdm", clock=clock)
    await okx.start()
    await binance.start()
    try:
        binance.publish(SimTick("binance", "BTCUSDT", 63999.9, 64000.1, 1.0, 1.0, T0))
        clock.advance(ms=FUNDING_MS - T0 + 2 * EIGHT_HOURS_MS + 5)
        async with httpx.AsyncClient(base_url=okx.rest_url) as c:
            now = (await c.get("/api/v5/public/funding-rate", params={"instId": "BTC-USDT-SWAP"})).json()
            assert now["code"] == "0"
            [row] = now["data"]
            assert row["fundingRate"] == "0.0001" and int(row["fundingTime"]) == FUNDING_MS + 3 * EIGHT_HOURS_MS
            assert int(row["nextFundingTime"]) == int(row["fundingTime"]) + EIGHT_HOURS_MS
            hist = (await c.get("/api/v5/public/funding-rate-history", params={"instId": "BTC-USDT-SWAP"})).json()
            assert [int(r["fundingTime"]) for r in hist["data"]] == [
                FUNDING_MS + 2 * EIGHT_HOURS_MS, FUNDING_MS + EIGHT_HOURS_MS, FUNDING_MS]  # newest first
            page = (await c.get("/api/v5/public/funding-rate-history",
                                params={"instId": "BTC-USDT-SWAP", "before": str(FUNDING_MS)})).json()
            assert [int(r["fundingTime"]) for r in page["data"]] == [FUNDING_MS + 2 * EIGHT_HOURS_MS,
                                                                       FUNDING_MS + EIGHT_HOURS_MS]
            spot = (await c.get("/api/v5/public/funding-rate", params={"instId": "BTC-USDT"})).json()
            assert spot["code"] == "51001"  # a spot instrument has no funding
            bad = await c.get("/api/v5/public/funding-rate-history", params={"instId": "BTC-USDT-SWAP", "limit": "0"})
            assert bad.status_code == 400
        async with httpx.AsyncClient(base_url=binance.rest_url) as c:
            premium = (await c.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})).json()
            assert premium["markPrice"] == "64000.00000000" and premium["lastFundingRate"] == "0.00010000"
            assert premium["nextFundingTime"] == FUNDING_MS + 3 * EIGHT_HOURS_MS
            rates = (await c.get("/fapi/v1/fundingRate", params={"symbol": "BTCUSDT",
                                                                  "startTime": str(FUNDING_MS + 1)})).json()
            assert [r["fundingTime"] for r in rates] == [FUNDING_MS + EIGHT_HOURS_MS, FUNDING_MS + 2 * EIGHT_HOURS_MS]
            assert (await c.get("/fapi/v1/fundingRate", params={"symbol": "NOPE"})).json()["code"] == -1121
    finally:
        await okx.stop()
        await binance.stop()


@pytest.mark.timeout(60)
async def test_funding_charges_the_position_held_at_the_funding_time_not_at_its_booking(tmp_path: Path) -> None:
    """Booked a minute after the funding time: a fill before it counts, one between it and the
    booking does not (the position is the ledger's fills stamped at or before `fundingTime`)."""
    async with _perpetual_venues(tmp_path) as (clock, okx, _, led):
        equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
        await equity.restore(led)
        journaled: list[Booked] = []
        accrual = FundingAccrual([Perpetual("okx", "BTC-USDT-SWAP", okx.rest_url)], equity.accrue_funding,
                                 journaled.append, clock, _held(led))
        accrual.restore({})
        g = make_group("g1", T0)
        led.group_opened(g)

        async def trade(n: int, side: str, contracts: int, ts: int) -> None:
            order = make_order(g, 0, attempt=n, ts_ms=ts)
            order.side, order.qty = "buy" if side == "buy" else "sell", D(contracts)
            f = fill(order, f"o{n}", "60000", ts=ts, fee="0")
            await book(led, order, f)
            equity.on_fill(order, f)

        await trade(1, "buy", 100, FUNDING_MS - 1_000)  # 1 BTC long before the funding time
        await trade(2, "buy", 100, FUNDING_MS)  # stamped at it: held at it (fills, then funding)
        clock.advance(ms=FUNDING_MS - T0 + 30_000)
        await trade(3, "sell", 200, FUNDING_MS + 20_000)  # closed before the booking: still charged
        await trade(4, "buy", 300, FUNDING_MS + 25_000)  # bought after it: not charged
        clock.advance(ms=30_000)  # the poll, a minute after the funding time
        [b] = await accrual.poll_once()
        assert accrual.errors == 0, accrual.last_error
        assert (b.funding_ms, b.position, b.amount) == (FUNDING_MS, D(2), D(-12))  # 2 BTC x 60,000 x 0.01 %
        assert journaled == [b]
        assert equity.equity(clock.time_ms())["carry"] == "-12"


@pytest.mark.timeout(60)
async def test_a_funding_time_whose_position_cannot_be_read_waits_for_the_next_poll(tmp_path: Path) -> None:
    async with _perpetual_venues(tmp_path) as (clock, okx, _, led):
        await _positions(led)
        equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
        await equity.restore(led)
        readable = False

        async def held(venue: Venue, symbol: str, at_ms: int) -> Decimal | None:
            return await _held(led)(venue, symbol, at_ms) if readable else None

        accrual = FundingAccrual([Perpetual("okx", "BTC-USDT-SWAP", okx.rest_url)], equity.accrue_funding,
                                 lambda b: None, clock, held)
        accrual.restore({})
        clock.advance(ms=FUNDING_MS - T0 + 1_000)
        assert await accrual.poll_once() == []
        assert accrual.errors == 1 and accrual.last_error is not None and "position unknown" in accrual.last_error
        readable = True
        assert [(b.funding_ms, b.amount) for b in await accrual.poll_once()] == [(FUNDING_MS, D(-6))]


@pytest.mark.timeout(60)
async def test_a_settlement_while_the_engine_was_stopped_is_charged_also_before_any_was_booked(
        tmp_path: Path) -> None:
    """Review of issue 16: a perpetual with no funding journaled yet resumed from *now* at every
    start, so a funding time that passed while the engine was stopped (a first hedge opened, a
    restart across 08:00) was never charged. It resumes just before the perpetual's first fill."""
    async with _perpetual_venues(tmp_path) as (clock, okx, binance, led):
        await _positions(led)  # then the engine stops; the funding time passes; it starts again
        clock.advance(ms=FUNDING_MS - T0 + 3_600_000)
        resume = await led.read(money.funding_resume)
        assert resume == {("okx", "BTC-USDT-SWAP"): T0, ("binance", "BTCUSDT"): T0 + 2}
        equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
        await equity.restore(led)
        perps = [Perpetual("okx", "BTC-USDT-SWAP", okx.rest_url), Perpetual("binance", "BTCUSDT", binance.rest_url)]
        journaled: list[Booked] = []
        accrual = FundingAccrual(perps, equity.accrue_funding, journaled.append, clock, _held(led))
        accrual.restore(resume)
        booked = await accrual.poll_once()
        assert accrual.errors == 0, accrual.last_error
        assert {(b.venue, b.funding_ms, b.position, b.amount) for b in booked} == {
            ("okx", FUNDING_MS, D(1), D(-6)), ("binance", FUNDING_MS, D("-0.5"), D(-4))}
        assert journaled == booked
        for b in booked:
            led.funding(b.venue, b.symbol, b.funding_ms, b.rate, b.mark_price, b.position, b.amount, b.ccy)
        await led.flush()
        after = await led.read(money.funding_resume)
        assert after == {("okx", "BTC-USDT-SWAP"): FUNDING_MS, ("binance", "BTCUSDT"): FUNDING_MS}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("qty", ["lots", "NaN", "-1"])
async def test_a_fill_quantity_the_position_query_cannot_read_leaves_the_settlement_waiting(
        tmp_path: Path, qty: str) -> None:
    """Review of issue 16: `money.position_at` summed `Decimal(qty)` as written, so a damaged
    quantity raised InvalidOperation out of the funding poll (its task has no guard: funding
    stopped for the run) or, for `NaN`, charged a NaN. Now a LedgerError: the settlement waits."""
    async with _perpetual_venues(tmp_path) as (clock, okx, _, led):
        await _positions(led)
        equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
        await equity.restore(led)
        con = sqlite3.connect(tmp_path / "l.db")
        con.execute("UPDATE fills SET qty = ? WHERE venue_trade_id = 'o1'", (qty,))
        con.commit()
        con.close()
        journaled: list[Booked] = []
        accrual = FundingAccrual([Perpetual("okx", "BTC-USDT-SWAP", okx.rest_url)], equity.accrue_funding,
                                 journaled.append, clock, _held(led))
        accrual.restore({})
        clock.advance(ms=FUNDING_MS - T0 + 1_000)
        assert await accrual.poll_once() == [] and journaled == []
        assert accrual.errors == 1 and accrual.last_error is not None
        assert "position unknown" in accrual.last_error and "is not a decimal >= 0" in accrual.last_error


@pytest.mark.timeout(60)
async def test_an_unexpected_failure_of_one_poll_does_not_end_funding_for_the_run() -> None:
    """Review of issue 16: `FundingAccrual.run` had no guard (the rates loop has one), so one
    exception nobody foresaw ended the task and no funding was booked for the rest of the run."""
    clock = ManualClock(wall_ms=T0)
    calls: list[int] = []
    second = asyncio.Event()

    async def fetch(_c: httpx.AsyncClient, _v: Venue, _s: str, after_ms: int) -> list[FundingSettlement]:
        calls.append(after_ms)
        if len(calls) == 1:
            raise RuntimeError("an answer nobody foresaw")
        second.set()
        return []

    async def held(_v: Venue, _s: str, _at: int) -> Decimal:
        return D(0)

    accrual = FundingAccrual([Perpetual("okx", "BTC-USDT-SWAP", "http://127.0.0.1:9")], lambda *a: None,
                             lambda b: None, clock, held, poll_s=0.01, fetch=fetch)
    accrual.restore({})
    task = asyncio.create_task(accrual.run())
    try:
        await asyncio.wait_for(second.wait(), timeout=10)  # raises (fails) if the loop died
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert accrual.errors == 1 and accrual.last_error == "poll failed: RuntimeError: an answer nobody foresaw"
