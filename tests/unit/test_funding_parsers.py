"""feeds.funding: the venues' funding-history bodies, good and bad (only InvalidResponse or
VenueError leave the parsers), and the simulator's settlement times."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from engine.sources import perpetual_sources
from feeds.binance import BinanceFeed
from feeds.funding import parse_binance_funding_history, parse_okx_funding_history
from feeds.okx import OkxFeed
from feeds.rest_parsers import InvalidResponse, VenueError
from sim.funding import EIGHT_HOURS_MS, SimFunding

D = Decimal


def test_okx_history_oldest_first_with_the_realized_rate() -> None:
    body = json.dumps({"code": "0", "msg": "", "data": [
        {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "fundingRate": "0.0001", "realizedRate": "0.00009",
         "fundingTime": "1732176000000", "method": "current_period"},
        {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "fundingRate": "-0.0002", "realizedRate": "",
         "fundingTime": "1732147200000", "method": "current_period"}]})
    rows = parse_okx_funding_history(body, "BTC-USDT-SWAP")
    assert [(r.funding_ms, r.rate, r.mark) for r in rows] == [(1732147200000, D("-0.0002"), None),
                                                            (1732176000000, D("0.00009"), None)]


def test_binance_history_with_its_mark() -> None:
    body = json.dumps([{"symbol": "BTCUSDT", "fundingRate": "-0.03750000", "fundingTime": 1570608000000,
                        "markPrice": "34287.54619963"}])
    [row] = parse_binance_funding_history(body, "BTCUSDT")
    assert (row.funding_ms, row.rate, row.mark) == (1570608000000, D("-0.0375"), D("34287.54619963"))


@pytest.mark.parametrize("body", [
    '{"code": "51001", "msg": "Instrument ID does not exist", "data": []}',
])
def test_okx_error_is_a_venue_error(body: str) -> None:
    with pytest.raises(VenueError):
        parse_okx_funding_history(body, "BTC-USDT-SWAP")


@pytest.mark.parametrize("body", [
    "not json", "[]", '{"code": "0", "data": {}}',
    '{"code": "0", "data": [{"instId": "ETH-USDT-SWAP", "fundingRate": "0.1", "fundingTime": "1"}]}',
    '{"code": "0", "data": [{"instId": "BTC-USDT-SWAP", "fundingRate": "nan", "fundingTime": "1"}]}',
    '{"code": "0", "data": [{"instId": "BTC-USDT-SWAP", "fundingRate": "0.1", "fundingTime": "-1"}]}',
    '{"code": "0", "data": [{"instId": "BTC-USDT-SWAP", "fundingRate": 0.1, "fundingTime": "1"}]}',
])
def test_bad_okx_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_okx_funding_history(body, "BTC-USDT-SWAP")


@pytest.mark.parametrize("body", [
    "{", '{"symbol": "BTCUSDT"}', '[{"symbol": "BTCUSDT", "fundingRate": "x", "fundingTime": 1}]',
    '[{"symbol": "BTCUSDT", "fundingRate": "0.1", "fundingTime": true}]',
    '[{"symbol": "BTCUSDT", "fundingRate": "0.1", "fundingTime": 1, "markPrice": "0"}]',
])
def test_bad_binance_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidResponse):
        parse_binance_funding_history(body, "BTCUSDT")
    with pytest.raises(VenueError):
        parse_binance_funding_history('{"code": -1121, "msg": "Invalid symbol."}', "BTCUSDT")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
                           max_leaves=12)


@given(json_values)
def test_any_json_parses_or_is_refused_cleanly(doc: Any) -> None:
    body = json.dumps(doc)
    for parse, symbol in ((parse_okx_funding_history, "BTC-USDT-SWAP"), (parse_binance_funding_history, "BTCUSDT")):
        try:
            rows = parse(body, symbol)
        except (InvalidResponse, VenueError):
            continue
        assert all(r.symbol == symbol and r.funding_ms > 0 and r.rate.is_finite() for r in rows)


def test_sim_settlements_fall_on_the_interval_from_the_start() -> None:
    f = SimFunding(since_ms=EIGHT_HOURS_MS * 3 + 5)
    assert f.next_funding_ms(EIGHT_HOURS_MS * 3 + 5) == EIGHT_HOURS_MS * 4
    assert f.settlements(EIGHT_HOURS_MS * 6, None, None) == [EIGHT_HOURS_MS * 4, EIGHT_HOURS_MS * 5,
                                                            EIGHT_HOURS_MS * 6]
    assert f.settlements(EIGHT_HOURS_MS * 6, EIGHT_HOURS_MS * 5 + 1, None) == [EIGHT_HOURS_MS * 6]
    assert f.settlements(EIGHT_HOURS_MS * 3 + 10, None, None) == []


def test_the_perpetuals_are_the_okx_swaps_and_a_usdm_feeds_symbols() -> None:
    def sink(*_: object) -> None:
        return None

    okx = OkxFeed(ws_url="ws://127.0.0.1:1/ws", rest_url="http://127.0.0.1:1",
                  instruments=[("BTC-USDT-SWAP", "bbo-tbt"), ("BTC-USDT", "tickers")], sink=sink, clock=ManualClock())
    usdm = BinanceFeed(market="usdm", symbols=["BTCUSDT"], sink=sink, clock=ManualClock(),
                       ws_url="ws://127.0.0.1:2", rest_url="http://127.0.0.1:2")
    spot = BinanceFeed(market="spot", symbols=["ETHUSDT"], sink=sink, clock=ManualClock(),
                       ws_url="ws://127.0.0.1:3", rest_url="http://127.0.0.1:3")
    assert perpetual_sources([okx, usdm, spot]) == [("okx", "BTC-USDT-SWAP", "http://127.0.0.1:1"),
                                                    ("binance", "BTCUSDT", "http://127.0.0.1:2")]
