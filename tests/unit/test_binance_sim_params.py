"""The simulated Binance engine answers any parameters with the venue's refusal (`ApiError`)
or a result, never another exception, and a refused request changes nothing."""

from __future__ import annotations

import copy
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from sim.binance_exchange import ApiError, BinanceExchange
from sim.binance_private import check_timestamp, split_signature

NAMES = ["symbol", "side", "type", "timeInForce", "quantity", "price", "newClientOrderId", "newOrderRespType",
         "reduceOnly", "orderId", "origClientOrderId", "limit", "startTime", "fromId", "recvWindow", "timestamp"]
VALUES = st.one_of(
    st.sampled_from(["BTCUSDT", "ETHUSDT", "btcusdt", "BUY", "SELL", "LIMIT", "MARKET", "LIMIT_MAKER", "IOC", "GTC",
                     "FOK", "GTX", "FULL", "RESULT", "ACK", "true", "0.001", "0.01", "97000.2", "96000", "0",
                     "-1", "1e3", "NaN", "12345678901234567890123", "\u0661\u0662", "abc\n", ""]),
    st.text(max_size=12),
)
PARAMS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=9)


def _exchange(market: str) -> BinanceExchange:
    ex = BinanceExchange(market, ManualClock(1_732_150_000_000))  # type: ignore[arg-type]
    ex.set_book("BTCUSDT", Decimal("97000.0"), Decimal("97000.2"), Decimal(3), Decimal(5))
    return ex


SPOT = _exchange("spot")
USDM = _exchange("usdm")


@settings(max_examples=400)
@given(st.sampled_from(["spot", "usdm"]), st.sampled_from(["new_order", "query_order", "cancel_order",
                                                          "open_orders", "trade_list", "position_risk"]), PARAMS)
def test_any_parameters_give_a_venue_answer_and_a_refusal_changes_nothing(market: str, method: str,
                                                                          params: dict[str, str]) -> None:
    ex = SPOT if market == "spot" else USDM
    before = (copy.deepcopy(ex.free), copy.deepcopy(ex.locked), len(ex.orders), len(ex.trades),
              copy.deepcopy(ex.positions))
    try:
        getattr(ex, method)(params)
    except ApiError as refusal:
        assert refusal.http_status in (400, 401) and refusal.code < 0 and refusal.msg
        after = (ex.free, ex.locked, len(ex.orders), len(ex.trades), ex.positions)
        assert after == before


@given(st.dictionaries(st.sampled_from(["timestamp", "recvWindow", "x"]), st.text(max_size=25), max_size=3),
       st.integers(0, 2**45))
def test_timestamp_checks_answer_with_the_venues_codes_only(params: dict[str, str], server_ms: int) -> None:
    try:
        check_timestamp(params, server_ms)
    except ApiError as refusal:
        assert refusal.code in (-1021, -1102, -1131)


@given(st.text(max_size=60))
def test_split_signature_never_raises_and_removes_every_signature(raw: str) -> None:
    rest, _signature, count = split_signature(raw)
    assert "signature=" not in [part[:10] for part in rest.split("&")]
    assert count == sum(1 for part in raw.split("&") if raw and part.startswith("signature="))
