"""Rate books (issue 16, item 1): the ticker bodies a rate is read from (only InvalidResponse or
VenueError leave the parsers), `[money] rate_books` validation, and which rate wins."""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from core.clock import ManualClock
from core.config import DEMO_CONFIG, MoneyConfig, QuantarbConfig
from engine.rates import RateFeed, RateSource
from engine.sources import rate_sources
from feeds.rates import BookTop, parse_binance_rate_ticker, parse_okx_rate_ticker
from feeds.rest_parsers import InvalidResponse, VenueError
from quantarb_tui.operator_cli import render_status

D = Decimal


def _okx(bid: str, ask: str, inst: str = "USDC-USDT") -> str:
    return json.dumps({"code": "0", "msg": "", "data": [
        {"instType": "SPOT", "instId": inst, "last": "1", "lastSz": "1", "askPx": ask, "askSz": "5",
         "bidPx": bid, "bidSz": "5", "ts": "1597026383085"}]})


def test_okx_ticker_top_is_exact() -> None:
    assert parse_okx_rate_ticker(_okx("0.99990", "1.0001"), "USDC-USDT") == BookTop(D("0.9999"), D("1.0001"))


def test_binance_spot_and_usdm_book_tickers() -> None:
    spot = '{"symbol":"USDCUSDT","bidPrice":"1.00020000","bidQty":"431.0","askPrice":"1.00030000","askQty":"9.0"}'
    assert parse_binance_rate_ticker(spot, "USDCUSDT").mid == D("1.00025")
    usdm = ('{"symbol":"USDCUSDT","bidPrice":"0.9998","bidQty":"1","askPrice":"0.9999","askQty":"1",'
            '"time":1589437530011}')
    assert parse_binance_rate_ticker(usdm, "USDCUSDT") == BookTop(D("0.9998"), D("0.9999"))


@pytest.mark.parametrize("body", [
    "nope", "[]", '{"code": "0", "data": []}', '{"code": "0", "data": [1]}',
    _okx("1", "1", inst="USDT-USD"),  # another book
    _okx("1.1", "1.0"),  # crossed
    _okx("0", "1.0"), _okx("", "1.0"), _okx("nan", "1"), _okx("1", "inf"), _okx("x", "1"),
])
def test_bad_okx_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_okx_rate_ticker(body, "USDC-USDT")


def test_venue_errors_are_venue_errors() -> None:
    with pytest.raises(VenueError, match="51001"):
        parse_okx_rate_ticker('{"code": "51001", "msg": "Instrument ID does not exist", "data": []}', "X-Y")
    with pytest.raises(VenueError, match="-1121"):
        parse_binance_rate_ticker('{"code": -1121, "msg": "Invalid symbol."}', "USDCUSDT")


@pytest.mark.parametrize("body", [
    "{", "[]", '{"symbol": "USDCUSDT"}', '{"symbol": "BTCUSDT", "bidPrice": "1", "askPrice": "1"}',
    '{"symbol": "USDCUSDT", "bidPrice": 1, "askPrice": "1"}',
    '{"symbol": "USDCUSDT", "bidPrice": "-1", "askPrice": "1"}',
    '{"symbol": "USDCUSDT", "bidPrice": "1.2", "askPrice": "1.1"}',
])
def test_bad_binance_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_binance_rate_ticker(body, "USDCUSDT")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
                           max_leaves=12)


@given(json_values)
def test_any_json_parses_or_is_refused_cleanly(doc: Any) -> None:
    body = json.dumps(doc)
    for parse, symbol in ((parse_okx_rate_ticker, "USDC-USDT"), (parse_binance_rate_ticker, "USDCUSDT")):
        try:
            top = parse(body, symbol)
        except (InvalidResponse, VenueError):
            continue
        assert top.bid.is_finite() and 0 < top.bid <= top.ask


prices = st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=6, allow_nan=False)


@given(prices, prices)
def test_any_book_reads_back_exactly_or_is_refused_as_crossed(a: Decimal, b: Decimal) -> None:
    for body, parse, symbol in (
        (_okx(str(a), str(b)), parse_okx_rate_ticker, "USDC-USDT"),
        (json.dumps({"symbol": "USDCUSDT", "bidPrice": str(a), "askPrice": str(b)}), parse_binance_rate_ticker,
         "USDCUSDT"),
    ):
        if b < a:
            with pytest.raises(InvalidResponse, match="crossed"):
                parse(body, symbol)
        else:
            assert parse(body, symbol) == BookTop(a, b)


# -- [money] rate_books -----------------------------------------------------------------------------

def test_rate_books_are_venue_symbol_currency_books() -> None:
    cfg = MoneyConfig(rate_books=["okx:USDC-USDT", "binance:USDCUSDT", "mt5:USDTUSD"], rate_max_age_s=31)
    assert cfg.rate_book_keys() == [("okx", "USDC-USDT"), ("binance", "USDCUSDT"), ("mt5", "USDTUSD")]
    assert (MoneyConfig().rate_books, MoneyConfig().rate_max_age_s) == ([], 300.0)


@pytest.mark.parametrize(("book", "message"), [
    ("USDC-USDT", "not venue:symbol"),
    ("kraken:USDCUSD", "not venue:symbol"),
    ("okx:", "not venue:symbol"),
    ("okx:BTC-USDT-SWAP", "not a currency book"),
    ("okx:USDT", "not a currency book"),
    ("binance:US500", "not a currency book"),
])
def test_bad_rate_books_are_refused_clearly(book: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MoneyConfig(rate_books=[book])


def test_a_book_twice_and_bad_ages_are_refused() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        MoneyConfig(rate_books=["okx:USDC-USDT", "okx:USDC-USDT"])
    for age in (0, -1, float("inf")):
        with pytest.raises(ValidationError, match="rate_max_age_s"):
            MoneyConfig(rate_max_age_s=age)


@pytest.mark.parametrize(("age", "poll"), [(10.0, 30.0), (30.0, 30.0)])
def test_a_book_stale_before_its_next_read_is_refused(age: float, poll: float) -> None:
    """Review of issue 16: such a book flapped between its rate and the typed one (or missing)
    at every poll, two `rate` rows a poll and figures missing most of the time."""
    with pytest.raises(ValidationError, match=r"rate_max_age_s \(\d+\) must exceed rate_poll_s"):
        MoneyConfig(rate_max_age_s=age, rate_poll_s=poll)
    assert MoneyConfig(rate_max_age_s=poll + 1, rate_poll_s=poll).rate_max_age_s == poll + 1


def _config(books: list[str], drop_venue: str | None = None) -> QuantarbConfig:
    doc: dict[str, Any] = copy.deepcopy(DEMO_CONFIG)
    doc["money"]["rate_books"] = books
    if drop_venue is not None:
        del doc["venues"][drop_venue]
        for pair in doc["pairs"]:
            del pair["instruments"][drop_venue]
    return QuantarbConfig.model_validate(doc)


def test_a_rate_book_needs_its_venue_and_an_mt5_book_one_of_the_eas_symbols() -> None:
    with pytest.raises(ValidationError, match=r"venue okx has no \[venues.okx\] section"):
        _config(["okx:USDC-USDT"], drop_venue="okx")
    with pytest.raises(ValidationError, match="mt5:USDTUSD: not one of the EA's symbols"):
        _config(["mt5:USDTUSD"])
    cfg = _config(["okx:USDC-USDT", "binance:USDCUSDT", "mt5:XAUUSD"])
    assert rate_sources(cfg) == [RateSource("okx", "USDC-USDT", "https://www.okx.com"),
                                 RateSource("binance", "USDCUSDT", "https://fapi.binance.com", "usdm"),
                                 RateSource("mt5", "XAUUSD")]


# -- precedence ---------------------------------------------------------------------------------------

def test_a_fresh_book_wins_over_a_typed_rate_only_for_its_currency() -> None:
    clock = ManualClock(wall_ms=1_000_000)
    ticks = {"USDTUSD": (0.998, 0.998, 0.0)}
    feed = RateFeed([RateSource("mt5", "USDTUSD")], "USD", {"USDT": D(1), "USDC": D("0.9999")}, clock,
                    max_age_s=10, poll_s=1, mt5_top=ticks.get)
    book = feed.rate_book(clock.time_ms())  # nothing read yet: the typed rates
    assert {c: (r.value, r.source) for c, r in book.rates().items()} == {
        "USDT": (D(1), "given"), "USDC": (D("0.9999"), "given")}
    assert asyncio.run(feed.poll_once()) == 1
    book = feed.rate_book(clock.time_ms())
    assert {c: (r.value, r.source) for c, r in book.rates().items()} == {
        "USDT": (D("0.998"), "mt5:USDTUSD"), "USDC": (D("0.9999"), "given")}


def test_a_book_leading_nowhere_gives_no_rate() -> None:
    clock = ManualClock(wall_ms=1_000_000)
    feed = RateFeed([RateSource("mt5", "USDCUSDT")], "USD", {}, clock, max_age_s=10, poll_s=1,
                    mt5_top=lambda s: (1.0001, 1.0003, 0.0))
    assert asyncio.run(feed.poll_once()) == 1
    assert feed.rate_book(clock.time_ms()).rates() == {}  # USDC/USDT, and no USDT rate: both missing


def test_quantarb_status_names_each_rates_source_and_age() -> None:
    equity = {"rates": {"USDT": {"rate": "0.9991", "source": "okx:USDT-USD", "age_ms": 1_500},
                        "EUR": {"rate": "1.08", "source": "given", "age_ms": 0}},
              "missing_rates": ["USDC"],
              "rate_books": [{"book": "okx:USDT-USD", "stale": False}, {"book": "binance:USDCUSDT", "stale": True}]}
    text = render_status({"trading_state": "active", "equity": equity}, "http://x")
    [line] = [ln for ln in text.splitlines() if ln.startswith("rates")]
    assert line.split(None, 1)[1] == ("USDT 0.9991 (okx:USDT-USD, 1.5s)  EUR 1.08 (given)  USDC missing  "
                                      "binance:USDCUSDT stale")
    assert not [ln for ln in render_status({"trading_state": "active"}, "http://x").splitlines()
                if ln.startswith("rates")]
