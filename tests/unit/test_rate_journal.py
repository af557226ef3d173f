"""Rates journaled (issue 16): the engine writes a `rate` event whenever the rate in force for a
currency changes (`engine.rates.RateLog`), and `ledger.money` converts with the rate in force at
the ledger's end (`ledger summary`) or at each point (`ledger equity`), `--rate` over it. A real
SQLite ledger; the payload parser is checked on random input."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from core.currency import RateBook, RateInForce, in_force, rate_in_range
from engine.rates import RateLog
from ledger import Ledger, LedgerError, money
from ledger import events as ev
from tests.unit.test_ledger_money import a_day, cli, independent, read
from tests.unit.test_ledger_support import T0

D = Decimal
BOOK = RateInForce("USDT", "USD", D("0.9991"), "book", "okx:USDT-USD", T0)


# -- the payload -------------------------------------------------------------------------------------
def _payload(r: RateInForce) -> Any:
    return ev.decode_payload(ev.encode_payload(ev.rate(r, T0).payload))


@pytest.mark.parametrize("r", [BOOK, RateInForce("USDC", "USD", D("1.0003"), "given"),
                               RateInForce("USDT", "EUR", None, "missing")])
def test_a_rate_event_reads_back_as_written(r: RateInForce) -> None:
    event = ev.rate(r, T0 + 5)
    assert event.kind == ev.RATE == "rate" and event.ts_ms == T0 + 5 and ev.RATE in ev.KINDS
    assert ev.rate_from_payload(_payload(r)) == r


@pytest.mark.parametrize(("change", "message"), [
    ({"rate": "abc"}, "not a decimal"),
    ({"rate": "NaN"}, "not a finite decimal"),
    ({"rate": 0.9991}, "expected a decimal string"),
    ({"rate": "-1"}, "not a positive finite number"),
    ({"source": "guess"}, "book, given or missing"),
    ({"book": None}, "names its book and read time"),
    ({"read_ms": -1}, "is not a time in ms"),
    ({"read_ms": True}, "is not a time in ms"),
    ({"ccy": "USD"}, "two different currency codes"),
    ({"ccy": 7}, "must be strings"),
    ({"source": "missing"}, "a missing rate has no value"),
])
def test_a_bad_payload_says_what_is_wrong(change: dict[str, Any], message: str) -> None:
    payload = {**_payload(BOOK), **change}
    with pytest.raises(ValueError, match=message):
        ev.rate_from_payload(payload)


def test_a_payload_with_fields_missing_or_extra_is_refused() -> None:
    payload = _payload(BOOK)
    with pytest.raises(ValueError, match="expected the fields"):
        ev.rate_from_payload({k: v for k, v in payload.items() if k != "book"})
    with pytest.raises(ValueError, match="expected the fields"):
        ev.rate_from_payload({**payload, "extra": 1})
    with pytest.raises(ValueError, match="expected an object"):
        ev.rate_from_payload(["USDT"])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_field_values: dict[str, Any] = {
    "ccy": st.sampled_from(["USDT", "USD", "usdt", "", "X"]) | _json,
    "account_ccy": st.sampled_from(["USD", "EUR", "USDT"]) | _json,
    "rate": st.sampled_from([None, "1", "0.9991", "0", "-2", "1E+3", "1E+13", "1E-13", "1E+999999999", "Infinity",
                             "sNaN", "x"]) | _json,
    "source": st.sampled_from(["book", "given", "missing", "BOOK"]) | _json,
    "book": st.sampled_from([None, "okx:USDT-USD", ""]) | _json,
    "read_ms": st.sampled_from([None, 0, T0, -5]) | _json,
}


@given(st.fixed_dictionaries(_field_values) | st.dictionaries(st.text(max_size=10), _json, max_size=7) | _json)
def test_any_payload_parses_to_a_valid_rate_or_raises_value_error(payload: Any) -> None:
    try:
        r = ev.rate_from_payload(payload)
    except ValueError as exc:
        assert str(exc)  # a message, never a bare error
        return
    assert r.ccy != r.account_ccy
    assert (r.value is None) == (r.source == "missing")
    assert r.value is None or rate_in_range(r.value)  # finite, > 0, and never an overflow when multiplied
    assert ev.rate_from_payload(_payload(r)) == r  # what parsed is written back the same


# -- the engine's log ----------------------------------------------------------------------------------
def _book(**rates: tuple[str, str, int]) -> RateBook:
    book = RateBook("USD")
    for ccy, (value, source, ts) in rates.items():
        book.set(ccy, D(value), ts, source)
    return book


def test_the_log_writes_a_change_once_and_not_a_reread_at_the_same_mid() -> None:
    written: list[RateInForce] = []
    log = RateLog("USD", {}, written.append)
    log.observe(_book(USDT=("1", "given", T0)))
    log.observe(_book(USDT=("1", "given", T0 + 9)))  # the typed rate again
    log.observe(_book(USDT=("0.9991", "okx:USDT-USD", T0 + 10)))
    log.observe(_book(USDT=("0.9991", "okx:USDT-USD", T0 + 40)))  # re-read, same mid: no change
    log.observe(_book(USDT=("0.9992", "okx:USDT-USD", T0 + 70)))
    log.observe(_book())  # stale, nothing typed: missing
    log.observe(_book())
    assert written == [RateInForce("USDT", "USD", D(1), "given"),
                       RateInForce("USDT", "USD", D("0.9991"), "book", "okx:USDT-USD", T0 + 10),
                       RateInForce("USDT", "USD", D("0.9992"), "book", "okx:USDT-USD", T0 + 70),
                       RateInForce("USDT", "USD", None, "missing")]
    assert log.written == 4


def test_a_restart_with_the_rates_the_ledger_has_writes_nothing() -> None:
    written: list[RateInForce] = []
    log = RateLog("USD", {"USDT": BOOK, "EURX": RateInForce("EURX", "EUR", D(2), "given")}, written.append)
    log.observe(_book(USDT=("0.9991", "okx:USDT-USD", T0 + 500)))
    assert written == []
    log.observe(RateBook("EUR"))  # another account currency: not this log's
    assert written == []


def test_in_force_names_each_currencys_source() -> None:
    book = _book(USDT=("0.9991", "okx:USDT-USD", T0), USDC=("1", "given", T0))
    assert in_force(book, ["USDT", "USDC", "EUR", "USD"]) == {
        "EUR": RateInForce("EUR", "USD", None, "missing"),
        "USDC": RateInForce("USDC", "USD", D(1), "given"),
        "USDT": BOOK}


# -- the ledger's figures ----------------------------------------------------------------------------
async def _journal(path: Path, *rates: tuple[int, RateInForce]) -> None:
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(path, clock=clock)
    try:
        for ts, r in rates:
            clock.advance(ms=ts - clock.time_ms())
            led.rate(r)
        await led.flush()
    finally:
        await led.close()


def _usdt(value: str, read_ms: int) -> RateInForce:
    return RateInForce("USDT", "USD", D(value), "book", "okx:USDT-USD", read_ms)


async def test_the_summary_converts_with_the_rate_in_force_at_the_ledgers_end(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    booked = await a_day(path)
    await _journal(path, (T0 + 1, RateInForce("USDT", "USD", D(1), "given")),
                   (T0 + 15_000, _usdt("0.9991", T0 + 14_000)), (T0 + 40_000, _usdt("0.9990", T0 + 39_500)))
    doc = await read(path, money.equity, now_ms=T0 + 60_000, rates={"USDT": D("0.5")})  # the journal wins
    assert D(doc["total"]) == independent(booked, D("0.9990"))
    assert doc["rates"] == {"USDT": {"rate": "0.999", "source": "okx:USDT-USD", "ts_ms": T0 + 39_500,
                                     "journaled_ms": T0 + 40_000}}
    given = await read(path, money.equity, now_ms=T0 + 60_000, rate_overrides={"USDT": D("0.9995")})
    assert D(given["total"]) == independent(booked, D("0.9995"))
    assert given["rates"]["USDT"] == {"rate": "0.9995", "source": "--rate", "ts_ms": T0 + 60_000,
                                      "journaled_ms": None}
    eur = await read(path, money.equity, now_ms=T0, account_ccy="EUR")  # journaled into USD: not these
    assert eur["rates"] == {} and eur["total"] is None


async def test_a_journaled_missing_rate_stays_missing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    await _journal(path, (T0 + 1, _usdt("0.9991", T0)), (T0 + 2, RateInForce("USDT", "USD", None, "missing")))
    doc = await read(path, money.equity, now_ms=T0, rates={"USDT": D(1)})
    assert doc["total"] is None and doc["missing_rates"] == ["USDT"]
    assert doc["rates"]["USDT"] == {"rate": None, "source": "missing", "ts_ms": T0 + 2, "journaled_ms": T0 + 2}


async def test_the_series_converts_each_point_with_the_rate_then_in_force(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)  # fills at +1, +2, +3, +10,001, +10,002, +20,001, +30,000
    await _journal(path, (T0 + 10_001, _usdt("0.9991", T0 + 10_000)), (T0 + 25_000, _usdt("0.9980", T0 + 25_000)))
    series = (await read(path, money.equity_series, interval_ms=0, rates={"USDT": D(1)}))["points"]
    by_ts = {p["ts_ms"]: p for p in series}
    for ts, rate in ((T0 + 3, D(1)), (T0 + 10_001, D("0.9991")), (T0 + 20_001, D("0.9991")),
                     (T0 + 30_000, D("0.9980"))):
        p = by_ts[ts]
        usdt, usd = D(p["by_currency"]["USDT"]["total"]), D(p["by_currency"]["USD"]["total"])
        assert D(p["total"]) == usd + usdt * rate, ts
    end = await read(path, money.equity, now_ms=T0 + 60_000)
    assert series[-1]["total"] == end["total"]


async def test_an_unreadable_rate_event_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    await _journal(path, (T0 + 1, BOOK))
    con = sqlite3.connect(path)
    con.execute("UPDATE events SET payload = json_set(payload, '$.rate', 'lots') WHERE kind = 'rate'")
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match=r"unreadable rate event \(seq \d+\): rate of 'USDT': not a decimal"):
        await read(path, money.equity, now_ms=T0)
    result = await asyncio.to_thread(cli, "summary", "--ledger", str(path), "--json")
    assert result.exit_code == 2 and "unreadable rate event" in result.stderr and "Traceback" not in result.output


async def test_the_human_summary_says_which_rate_and_from_where(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    await _journal(path, (T0 + 40_000, _usdt("0.9990", T0 + 39_500)))
    human = await asyncio.to_thread(cli, "summary", "--ledger", str(path))
    assert human.exit_code == 0, human.output
    assert "rate USDT = 0.999 USD (okx:USDT-USD, read " in human.stdout and "in force since" in human.stdout
    typed = await asyncio.to_thread(cli, "summary", "--ledger", str(path), "--rate", "USDT=0.98", "--json")
    assert json.loads(typed.stdout)["equity"]["rates"]["USDT"]["source"] == "--rate"


# -- review: rates out of any real range -----------------------------------------------------------------
@pytest.mark.parametrize("value", ["1E+999999999", "1E-999999999", "1E+13", "1E-13"])
async def test_a_journaled_rate_out_of_range_is_a_clear_error_not_an_overflow_or_a_silent_zero(
        tmp_path: Path, value: str) -> None:
    """A rate of 1E+999999999 crashed `ledger summary` with decimal.Overflow (a traceback); one of
    1E-999999999 silently valued every USDT at 0."""
    path = tmp_path / "l.db"
    await a_day(path)
    await _journal(path, (T0 + 1, BOOK))
    con = sqlite3.connect(path)
    con.execute("UPDATE events SET payload = json_set(payload, '$.rate', ?) WHERE kind = 'rate'", (value,))
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match=r"unreadable rate event \(seq \d+\): USDT: rate .* is outside"):
        await read(path, money.equity, now_ms=T0)
    for command in ("summary", "equity"):
        result = await asyncio.to_thread(cli, command, "--ledger", str(path), "--json")
        assert result.exit_code == 2, (command, result.output)
        assert "is outside" in result.stderr and "Traceback" not in result.output


async def test_a_rate_out_of_range_is_refused_by_the_book_the_config_and_the_command_line(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from core.config import MoneyConfig
    book = RateBook("USD")
    with pytest.raises(ValueError, match="is outside"):
        book.set("USDT", D("1E+13"), T0, "given")
    assert book.rates() == {}
    with pytest.raises(ValidationError, match=r"rates\.USDT"):
        MoneyConfig(rates={"USDT": D("1E+400")})
    await a_day(tmp_path / "l.db")
    result = await asyncio.to_thread(cli, "summary", "--ledger", str(tmp_path / "l.db"), "--rate", "USDT=1e999999999")
    assert result.exit_code != 0 and "must be within" in result.output + result.stderr
    assert "Traceback" not in result.output


def test_a_book_whose_rate_is_out_of_range_converts_as_if_absent() -> None:
    from core.clock import ManualClock as Clock
    from engine.rates import RateFeed, RateSource

    feed = RateFeed([RateSource("mt5", "USDTUSD")], "USD", {"USDT": D("0.999")}, Clock(wall_ms=T0),
                    max_age_s=60, poll_s=30, mt5_top=lambda _s: (1e20, 1e20, 0.0))
    asyncio.run(feed.poll_once())
    assert feed.describe(T0)[0]["stale"] is False  # read, but not a rate anyone can convert with
    got = feed.rate_book(T0).rate("USDT")
    assert got is not None and (got.value, got.source) == (D("0.999"), "given")


# -- review: a mid that moves every poll -------------------------------------------------------------------
def test_a_mid_that_wobbles_within_the_tolerance_writes_nothing_and_converts_at_the_journaled_rate() -> None:
    """A USDT-USD mid moving half a tick every poll wrote one `rate` row per poll forever (2,880 a
    day per currency at the default 30 s). Within the tolerance (1 bp) the journaled rate stays
    in force, for the ledger and the running equity alike."""
    written: list[RateInForce] = []
    log = RateLog("USD", {}, written.append, tolerance=D("0.0001"))
    converted: list[Decimal] = []
    mids = ["0.99910", "0.99915", "0.99905", "0.99910", "0.99919", "0.99901"] * 100  # within 1 bp of 0.9991
    for i, mid in enumerate(mids):
        got = log.observe(_book(USDT=(mid, "okx:USDT-USD", T0 + i * 30_000))).rate("USDT")
        assert got is not None and got.ts_ms == T0 + i * 30_000 and got.source == "okx:USDT-USD"  # the read's age
        converted.append(got.value)
    assert written == [_usdt("0.99910", T0)] and set(converted) == {D("0.99910")}
    moved = log.observe(_book(USDT=("0.99899", "okx:USDT-USD", T0 + 10**8))).rate("USDT")  # 1.1 bp: a move
    assert moved is not None and moved.value == D("0.99899")
    assert written[-1] == _usdt("0.99899", T0 + 10**8) and log.written == 2
    given = log.observe(_book(USDT=("0.99899", "given", T0 + 10**8 + 1)))  # another source: always a change
    assert written[-1] == RateInForce("USDT", "USD", D("0.99899"), "given") and log.written == 3
    assert given.rate("USDT") is not None


def test_without_a_tolerance_every_move_is_journaled_and_a_bad_tolerance_is_refused() -> None:
    written: list[RateInForce] = []
    log = RateLog("USD", {}, written.append)
    for i, mid in enumerate(["0.99910", "0.99915", "0.99910"]):
        log.observe(_book(USDT=(mid, "okx:USDT-USD", T0 + i)))
    assert [r.value for r in written] == [D("0.99910"), D("0.99915"), D("0.99910")]
    for bad in (D(-1), D(1), D("NaN")):
        with pytest.raises(ValueError, match="rate tolerance"):
            RateLog("USD", {}, written.append, tolerance=bad)


def test_a_restart_within_the_tolerance_keeps_the_journaled_rate() -> None:
    written: list[RateInForce] = []
    log = RateLog("USD", {"USDT": BOOK}, written.append, tolerance=D("0.0001"))  # 0.9991 journaled
    got = log.observe(_book(USDT=("0.99914", "okx:USDT-USD", T0 + 500))).rate("USDT")
    assert written == [] and got is not None and got.value == D("0.9991")
