"""The rate source (issue 16, item 1): currency books read from the simulated OKX and Binance
public REST tickers over real sockets on 127.0.0.1 convert USDT and USDC money into USD at the
book's mid; a stale book converts as missing (or as the typed-in rate), and a failed read
changes nothing. A real SQLite ledger holds the fills."""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.breakers import DAY_MS
from core.clock import ManualClock
from core.config import DEMO_CONFIG, MoneyConfig, QuantarbConfig
from core.models import Quote
from engine.equity import RunningEquity
from engine.rates import RateFeed, RateLog, RateSource
from engine.runtime import Runtime
from ledger import Ledger, money, queries
from sim.binance_server import BinanceSimServer
from sim.market import SimTick
from sim.okx_server import OkxSimServer
from tests.integration.test_funding import INSTRUMENTS, MARKS, TOUCH, _positions
from tests.unit.test_ledger_money import BIN, fill
from tests.unit.test_ledger_support import T0, make_group, make_order

D = Decimal
MAX_AGE_S = 60.0


class _Sims:
    def __init__(self, clock: ManualClock) -> None:
        self.okx = OkxSimServer(symbols=["USDT-USD", "BTC-USDT-SWAP"], clock=clock)
        self.binance = BinanceSimServer(symbols=["USDCUSDT"], market="spot", clock=clock)

    async def __aenter__(self) -> _Sims:
        await self.okx.start()
        await self.binance.start()
        self.okx.publish(SimTick("okx", "USDT-USD", 0.9990, 0.9992, 1000.0, 1000.0, T0))
        self.binance.publish(SimTick("binance", "USDCUSDT", 1.0002, 1.0004, 1000.0, 1000.0, T0))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.okx.stop()
        await self.binance.stop()

    def sources(self) -> list[RateSource]:
        return [RateSource("binance", "USDCUSDT", self.binance.rest_url, "spot"),  # needs USDT first
                RateSource("okx", "USDT-USD", self.okx.rest_url)]


def _feed(sims: _Sims, clock: ManualClock, given: dict[str, Decimal] | None = None) -> RateFeed:
    return RateFeed(sims.sources(), "USD", given or {}, clock, max_age_s=MAX_AGE_S, poll_s=1.0)


@pytest.mark.timeout(60)
async def test_a_usdt_pnl_is_converted_at_the_books_mid(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=T0)
    async with _Sims(clock) as sims:
        led = await Ledger.open(tmp_path / "l.db", clock=clock)
        try:
            await _positions(led)  # OKX long 1 BTC and Binance short 0.5 BTC: all USDT money
            by_hand = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
            await by_hand.restore(led)
            in_usdt = D(by_hand.equity(clock.time_ms())["total"])
            assert in_usdt == D("10.4")  # (60000 - 59990) - 3 + (64010 - 64000) x 0.5 - 1.6

            feed = _feed(sims, clock, {"USDT": D(1)})
            equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: TOUCH.get((v, s)))
            await equity.restore(led)
            equity.use_rates(feed)
            assert await feed.poll_once() == 2
            now = clock.time_ms()
            doc = equity.equity(now)
            assert D(doc["total"]) == in_usdt * D("0.9991")  # the book's mid, not the typed 1
            assert doc["rates"]["USDT"] == {"rate": "0.9991", "source": "okx:USDT-USD", "age_ms": 0}
            # USDC one hop through USDT: 1.0003 USDT x 0.9991 USD.
            assert doc["rates"]["USDC"]["rate"] == format(D("1.0003") * D("0.9991"), "f")
            assert doc["rates"]["USDC"]["source"] == "binance:USDCUSDT"
            assert doc["rate_books"] == [
                {"book": "binance:USDCUSDT", "mid": "1.0003", "age_ms": 0, "stale": False, "error": None},
                {"book": "okx:USDT-USD", "mid": "0.9991", "age_ms": 0, "stale": False, "error": None}]
        finally:
            await led.close()


@pytest.mark.timeout(60)
async def test_a_stale_book_converts_as_missing_or_as_the_typed_rate() -> None:
    clock = ManualClock(wall_ms=T0)
    async with _Sims(clock) as sims:
        bare, typed = _feed(sims, clock), _feed(sims, clock, {"USDT": D("0.9995")})
        assert await bare.poll_once() == 2 and await typed.poll_once() == 2
        clock.advance(ms=MAX_AGE_S * 1000)  # exactly the limit: still fresh
        assert bare.rate_book(clock.time_ms()).convert(D(100), "USDT") == D("99.91")
        clock.advance(ms=1)
        now = clock.time_ms()
        book = bare.rate_book(now)
        assert book.convert(D(100), "USDT") is None and book.convert(D(100), "USDC") is None
        assert [(b["book"], b["stale"], b["age_ms"]) for b in bare.describe(now)] == [
            ("binance:USDCUSDT", True, 60_001), ("okx:USDT-USD", True, 60_001)]
        typed_book = typed.rate_book(now)  # the typed rate again, and USDC derived through it
        assert typed_book.rate("USDT") is not None and typed_book.rate("USDT").source == "given"  # type: ignore[union-attr]
        assert typed_book.convert(D(100), "USDT") == D("99.95")
        assert typed_book.convert(D(1), "USDC") is None  # its book is stale too: no rate


@pytest.mark.timeout(60)
async def test_a_failed_read_changes_nothing_and_the_rate_ages() -> None:
    clock = ManualClock(wall_ms=T0)
    async with _Sims(clock) as sims:
        feed = _feed(sims, clock)
        assert await feed.poll_once() == 2
        before = feed.rate_book(clock.time_ms()).rates()
        sims.okx.publish(SimTick("okx", "USDT-USD", 0.9000, 0.9002, 1000.0, 1000.0, T0))
        await sims.okx.stop()  # the venue goes away: connection refused
        clock.advance(ms=10_000)
        assert await feed.poll_once() == 1  # Binance still answers
        assert feed.failures == 1
        now = clock.time_ms()
        after = feed.rate_book(now).rates()
        assert after["USDT"] == before["USDT"]  # the same read, same time: only older
        okx_row = feed.describe(now)[1]
        assert (okx_row["mid"], okx_row["age_ms"], okx_row["stale"]) == ("0.9991", 10_000, False)
        assert okx_row["error"]


@pytest.mark.timeout(60)
async def test_a_venue_error_is_kept_as_the_books_error() -> None:
    clock = ManualClock(wall_ms=T0)
    async with _Sims(clock) as sims:
        feed = RateFeed([RateSource("okx", "USDC-USD", sims.okx.rest_url)], "USD", {}, clock,
                        max_age_s=MAX_AGE_S, poll_s=1.0)
        assert await feed.poll_once() == 0
        [row] = feed.describe(clock.time_ms())
        assert row["mid"] is None and row["stale"] is True
        assert "51001" in row["error"]
        assert feed.rate_book(clock.time_ms()).rates() == {}


def test_an_mt5_book_is_the_eas_tick_aged_from_when_it_came() -> None:
    clock = ManualClock(wall_ms=T0)
    ticks: dict[str, tuple[float, float, float]] = {"USDTUSD": (0.9989, 0.9993, 2_500.0)}
    feed = RateFeed([RateSource("mt5", "USDTUSD")], "USD", {}, clock, max_age_s=MAX_AGE_S, poll_s=1.0,
                    mt5_top=ticks.get)
    assert asyncio.run(feed.poll_once()) == 1
    rate = feed.rate_book(clock.time_ms()).rate("USDT")
    assert rate is not None and (rate.value, rate.source, rate.ts_ms) == (D("0.9991"), "mt5:USDTUSD", T0 - 2_500)
    ticks["USDTUSD"] = (0.9993, 0.9989, 0.0)  # crossed: refused, the last tick kept
    assert asyncio.run(feed.poll_once()) == 0
    assert feed.rate_book(clock.time_ms()).rate("USDT") == rate


@pytest.mark.timeout(120)
async def test_the_engine_reads_its_rate_books_and_status_shows_them(tmp_path: Path) -> None:
    """Wired in the runtime: the demo world lists the configured OKX and Binance currency books
    (quoted at a mid of exactly 1) and the engine reads them over its sockets; an MT5 book is
    the EA's tick, aged. `/api/status`'s equity says which rate, from where, how old."""
    doc: dict[str, Any] = copy.deepcopy(DEMO_CONFIG)
    doc["money"]["rate_books"] = ["okx:USDT-USD", "binance:USDCUSDT", "mt5:XAUUSD"]
    config = QuantarbConfig.model_validate(doc)
    clock = ManualClock(wall_ms=T0)
    rt = Runtime(config, is_demo=True, clock=clock, ledger_path=str(tmp_path / "t.db"), mt5_in_process=True,
                 serve_operator_api=False)
    await rt.start()
    try:
        assert rt.rates is not None
        rt.ingest(Quote("mt5", "XAUUSD", 2400.0, 2400.5, 1.0, 1.0, clock.time_ms(), clock.monotonic_ns()))
        clock.advance(ms=1_500)
        assert await rt.rates.poll_once() == 3
        clock.advance(ms=500)
        status = rt.view.status()["equity"]
        assert status["rate_books"] == [
            {"book": "okx:USDT-USD", "mid": "1", "age_ms": 500, "stale": False, "error": None},
            {"book": "binance:USDCUSDT", "mid": "1", "age_ms": 500, "stale": False, "error": None},
            {"book": "mt5:XAUUSD", "mid": "2400.25", "age_ms": 2_000, "stale": False, "error": None}]
        assert status["rates"] == {"USDT": {"rate": "1", "source": "okx:USDT-USD", "age_ms": 500},
                                   "USDC": {"rate": "1", "source": "binance:USDCUSDT", "age_ms": 500},
                                   "XAU": {"rate": "2400.25", "source": "mt5:XAUUSD", "age_ms": 2_000}}
        assert status["missing_rates"] == []
        assert rt.rates.open_clients() == 2  # kept between polls (issue 19): one per venue URL
    finally:
        await rt.stop()
    assert rt.rates.open_clients() == 0  # the engine's stop closes them


async def _rate_events(path: Path) -> list[dict[str, Any]]:
    async with queries.open_reader(path) as db, db.execute(
            "SELECT ts_ms, payload FROM events WHERE kind = 'rate' ORDER BY seq") as cur:
        return [{"ts_ms": r[0], **json.loads(r[1])} for r in await cur.fetchall()]


async def _ledger_total(path: Path, now_ms: int) -> Any:
    async with queries.open_reader(path) as db:
        return (await money.equity(db, now_ms=now_ms, marks=MARKS, instruments={BIN.key: BIN}))["total"]


@pytest.mark.timeout(60)
async def test_the_running_equity_and_the_ledger_convert_with_the_same_journaled_rate(tmp_path: Path) -> None:
    """Books only, nothing typed: each change of the rate in force is journaled once (not each
    poll), and the ledger's equity equals the running one at every step, staleness included."""
    clock = ManualClock(wall_ms=T0)
    path = tmp_path / "l.db"
    async with _Sims(clock) as sims:
        led = await Ledger.open(path, clock=clock)
        try:
            await _positions(led)
            feed = _feed(sims, clock)
            equity = RunningEquity(INSTRUMENTS, MoneyConfig(), lambda v, s: TOUCH.get((v, s)), rates=feed)
            await equity.restore(led)
            equity.journal_rates(RateLog("USD", await led.read(money.last_rates, "USD"), led.rate))

            async def same(expected: Decimal | None) -> None:
                now = clock.time_ms()
                running = equity.equity(now)["total"]
                await led.flush()
                assert (running if running is None else D(running)) == expected
                assert await _ledger_total(path, now) == running  # the same text: to the digit

            await same(None)  # nothing read yet, nothing typed: missing on both sides
            assert await _rate_events(path) == []  # nothing had a rate: nothing changed
            assert await feed.poll_once() == 2
            await same(D("10.4") * D("0.9991"))
            clock.advance(ms=1_000)
            assert await feed.poll_once() == 2  # the same mids again
            await same(D("10.4") * D("0.9991"))
            sims.okx.publish(SimTick("okx", "USDT-USD", 0.9979, 0.9981, 1000.0, 1000.0, T0))
            clock.advance(ms=1_000)
            assert await feed.poll_once() == 2
            await same(D("10.4") * D("0.9980"))
            clock.advance(ms=MAX_AGE_S * 1000 + 1)  # both books stale: missing again
            await same(None)
            events = await _rate_events(path)
            usdt = [(e["rate"], e["source"], e["book"], e["read_ms"]) for e in events if e["ccy"] == "USDT"]
            assert usdt == [("0.9991", "book", "okx:USDT-USD", T0), ("0.9980", "book", "okx:USDT-USD", T0 + 2_000),
                            (None, "missing", None, None)]
            assert [None if e["rate"] is None else D(e["rate"]) for e in events if e["ccy"] == "USDC"] == [
                D("1.0003") * D("0.9991"), D("1.0003") * D("0.9980"), None]
        finally:
            await led.close()


@pytest.mark.timeout(60)
async def test_after_a_restart_the_day_starts_at_the_rate_then_in_force(tmp_path: Path) -> None:
    """Books only, nothing typed: a restart on the next day values the equity at midnight with
    the rate journaled before it, so the day's figure is what traded today, not 0 from the
    first reading (the books are not read yet when the ledger is restored)."""
    clock = ManualClock(wall_ms=T0)
    path = tmp_path / "l.db"
    async with _Sims(clock) as sims:
        led = await Ledger.open(path, clock=clock)
        try:
            await _positions(led)
            before = _feed(sims, clock)
            first = RunningEquity(INSTRUMENTS, MoneyConfig(), lambda v, s: None, rates=before)
            await first.restore(led)
            first.journal_rates(RateLog("USD", {}, led.rate))
            assert await before.poll_once() == 2
            assert first.total(clock.time_ms()) is not None  # a reading: the book's rate journaled
            await led.flush()

            clock.advance(ms=(T0 // DAY_MS + 1) * DAY_MS - T0 + 3_600_000)  # 01:00 the next day
            feed = _feed(sims, clock)
            again = RunningEquity(INSTRUMENTS, MoneyConfig(), lambda v, s: None, rates=feed)
            await again.restore(led, now_ms=clock.time_ms())
            again.journal_rates(RateLog("USD", await led.read(money.last_rates, "USD"), led.rate))
            now = clock.time_ms()
            sell = make_order(make_group("g2", now), 0, ts_ms=now)
            sell.side, sell.qty = "sell", D(100)  # OKX closed at 59,990 (its last price): only the fee
            again.on_fill(sell, fill(sell, "o2", "59990", ts=now, fee="2"))
            assert again.day_change(now) is None  # the book not read yet: no figure, not a guess
            assert await feed.poll_once() == 2
            now = clock.time_ms()
            assert again.day_change(now) == D(-2) * D("0.9991")
        finally:
            await led.close()


@pytest.mark.timeout(60)
async def test_a_mid_that_wobbles_every_poll_adds_no_row_and_the_figures_still_agree(tmp_path: Path) -> None:
    """Review of issue 16: a USDT-USD mid moving a little at every poll wrote a `rate` row per
    poll (per currency: 2,880 a day at 30 s). Within `[money] rate_tolerance_bps` the journaled
    rate stays in force for the running equity too, so the ledger's figure is still the same."""
    clock = ManualClock(wall_ms=T0)
    path = tmp_path / "l.db"
    async with _Sims(clock) as sims:
        led = await Ledger.open(path, clock=clock)
        try:
            await _positions(led)
            feed = RateFeed([RateSource("okx", "USDT-USD", sims.okx.rest_url)], "USD", {}, clock,
                            max_age_s=MAX_AGE_S, poll_s=1.0)
            equity = RunningEquity(INSTRUMENTS, MoneyConfig(), lambda v, s: TOUCH.get((v, s)), rates=feed)
            await equity.restore(led)
            bp = Decimal(repr(MoneyConfig().rate_tolerance_bps)) / 10_000
            equity.journal_rates(RateLog("USD", await led.read(money.last_rates, "USD"), led.rate, bp))
            tops = [(0.9990, 0.9992), (0.9991, 0.9992), (0.9990, 0.9991), (0.9990, 0.9992)]  # mids within 0.5 bp
            for i in range(40):
                sims.okx.publish(SimTick("okx", "USDT-USD", *tops[i % len(tops)], 1000.0, 1000.0, clock.time_ms()))
                assert await feed.poll_once() == 1
                now = clock.time_ms()
                running = equity.equity(now)["total"]
                await led.flush()
                assert D(running) == D("10.4") * D("0.9991")  # the rate in force: the first one read
                assert await _ledger_total(path, now) == running
                clock.advance(ms=1_000)
            assert [(e["rate"], e["read_ms"]) for e in await _rate_events(path)] == [("0.9991", T0)]
            sims.okx.publish(SimTick("okx", "USDT-USD", 0.9987, 0.9989, 1000.0, 1000.0, clock.time_ms()))
            assert await feed.poll_once() == 1  # 3 bp lower: a move
            now = clock.time_ms()
            running = equity.equity(now)["total"]
            await led.flush()
            assert D(running) == D("10.4") * D("0.9988") and await _ledger_total(path, now) == running
            assert [e["rate"] for e in await _rate_events(path)] == ["0.9991", "0.9988"]
        finally:
            await led.close()


@pytest.mark.timeout(60)
async def test_a_quick_restart_converts_at_the_journaled_rate_until_the_books_are_read(tmp_path: Path) -> None:
    """Review of issue 16: right after a restart the books are not read yet, so every reading
    (the breakers' restored day figure first) converted at the typed rate or as missing, and
    journaled that, only for the first read to journal the book again: two rows per currency
    per restart, and figures that were not the ledger's. A journaled book rate read within
    `rate_max_age_s` is as fresh as the feed would hold it: it stays in force until then."""
    clock = ManualClock(wall_ms=T0)
    path = tmp_path / "l.db"
    max_age_ms = MAX_AGE_S * 1000
    async with _Sims(clock) as sims:
        led = await Ledger.open(path, clock=clock)
        try:
            await _positions(led)
            before = _feed(sims, clock)
            first = RunningEquity(INSTRUMENTS, MoneyConfig(), lambda v, s: TOUCH.get((v, s)), rates=before)
            await first.restore(led)
            first.journal_rates(RateLog("USD", {}, led.rate, max_age_ms=max_age_ms))
            assert await before.poll_once() == 2
            assert first.total(clock.time_ms()) == D("10.4") * D("0.9991")
            await led.flush()
            journaled = await _rate_events(path)
            assert [e["ccy"] for e in journaled] == ["USDC", "USDT"]

            clock.advance(ms=20_000)  # stopped and started again within rate_max_age_s
            for given in ({}, {"USDT": D(1)}):  # books only; books over a typed fallback
                config = MoneyConfig(rates=given)
                feed = _feed(sims, clock, given)
                again = RunningEquity(INSTRUMENTS, config, lambda v, s: TOUCH.get((v, s)), rates=feed)
                await again.restore(led, now_ms=clock.time_ms())
                again.journal_rates(RateLog("USD", await led.read(money.last_rates, "USD"), led.rate,
                                            max_age_ms=max_age_ms))
                now = clock.time_ms()
                running = again.equity(now)["total"]
                await led.flush()
                assert D(running) == D("10.4") * D("0.9991")  # the journaled rate, still fresh
                assert await _ledger_total(path, now) == running
                assert await _rate_events(path) == journaled  # nothing written to be undone
            clock.advance(ms=max_age_ms - 20_000 + 1)  # the journaled read is stale now, no book read
            now = clock.time_ms()
            assert again.equity(now)["total"] == str(D("10.4"))  # the typed USDT = 1 (USDC not held)
            await led.flush()
            assert [(e["ccy"], e["source"]) for e in (await _rate_events(path))[2:]] == [
                ("USDC", "missing"), ("USDT", "given")]
            assert await _ledger_total(path, now) == str(D("10.4"))
        finally:
            await led.close()
