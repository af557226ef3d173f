"""Every OKX private body and message parser: the documented samples, and hypothesis over bytes
and JSON: a parser returns typed values or raises OkxParseError naming the problem, nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import OrderState
from exchanges.okx import parsers as p
from exchanges.okx.parsers import OkxParseError

DOC_ENTRY: dict[str, str] = {
    "instId": "BTC-USDT", "ordId": "452197707845865472", "clOrdId": "", "side": "sell", "ordType": "limit",
    "px": "31527.1", "sz": "0.001", "state": "filled", "accFillSz": "0.001", "fillSz": "0.001", "fillPx": "31527.1",
    "tradeId": "242589207", "avgPx": "31527.1", "execType": "M", "fillFee": "-0.02522168", "fillFeeCcy": "USDT",
    "fee": "-0.02522168", "feeCcy": "USDT", "code": "0", "msg": "", "cTime": "1654084334977", "uTime": "1654084353264",
}
DOC_PUSH: dict[str, Any] = {
    "arg": {"channel": "orders", "instType": "SPOT", "instId": "BTC-USDT", "uid": "614488474791936"},
    "data": [DOC_ENTRY],
}
DOC_PLACE = {"code": "0", "msg": "", "data": [{"clOrdId": "oktswap6", "ordId": "312269865356374016", "tag": "",
                                               "ts": "1695190491421", "sCode": "0", "sMsg": "", "subCode": ""}],
             "inTime": "1695190491421339", "outTime": "1695190491423240"}


def test_documented_orders_push_gives_one_fill_with_the_fee_positive_when_charged() -> None:
    msg = p.parse_ws(json.dumps(DOC_PUSH))
    assert msg.arg is not None and msg.arg.channel == "orders"
    (detail,) = p.parse_orders(msg.data)
    fill = p.push_fill(detail)
    assert fill is not None
    assert (fill.venue_trade_id, fill.qty, fill.price, fill.fee, fill.fee_ccy, fill.ts_ms) == (
        "242589207", Decimal("0.001"), Decimal("31527.1"), Decimal("0.02522168"), "USDT", 1654084353264)
    update = p.order_update(detail, [fill])
    assert (update.state, update.venue_order_id) == (OrderState.FILLED, "452197707845865472")


def test_documented_place_answer() -> None:
    env = p.parse_envelope(json.dumps(DOC_PLACE))
    assert env.ok
    (ack,) = p.parse_acks(env.data)
    assert (ack.ordId, ack.clOrdId, ack.sCode) == ("312269865356374016", "oktswap6", "0")


def test_unknown_path_answers_a_numeric_code() -> None:
    env = p.parse_envelope(b'{"code":404,"data":{},"msg":"Not Found"}')
    assert not env.ok and env.code_text == "404"


def test_market_order_filled_with_fill_size_zero_is_no_fill() -> None:
    detail = p.parse_orders([{**DOC_ENTRY, "fillSz": "0", "ordType": "market"}])[0]
    assert p.push_fill(detail) is None


@pytest.mark.parametrize(
    ("state", "ord_type", "expected"),
    [("live", "limit", OrderState.ACKED), ("partially_filled", "ioc", OrderState.PARTIALLY_FILLED),
     ("filled", "ioc", OrderState.FILLED), ("canceled", "ioc", OrderState.EXPIRED),
     ("canceled", "limit", OrderState.CANCELLED), ("mmp_canceled", "limit", OrderState.CANCELLED)],
)
def test_states(state: str, ord_type: str, expected: OrderState) -> None:
    detail = p.parse_orders([{**DOC_ENTRY, "state": state, "ordType": ord_type}])[0]
    assert p.order_state(detail) is expected


def test_unknown_state_is_a_clear_error() -> None:
    detail = p.parse_orders([{**DOC_ENTRY, "state": "exploded"}])[0]
    with pytest.raises(OkxParseError, match="unknown state 'exploded'"):
        p.order_state(detail)


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "1e5", "1e999999", "", " 1", "+1", ".5", "abc", None, 5, "9" * 40])
def test_bad_numbers_are_named(bad: Any) -> None:
    with pytest.raises(OkxParseError, match="okx fillSz"):
        p.decimal(bad, "fillSz")


def test_bad_fill_row_is_refused_naming_the_field() -> None:
    row = p.parse_fills([{"instId": "X", "tradeId": "1", "ordId": "2", "fillPx": "1", "fillSz": "nan", "side": "buy"}])
    with pytest.raises(OkxParseError, match="okx fillSz"):
        p.fill_from_row(row[0])


def test_instrument_spec_and_position_and_balance() -> None:
    row = p.parse_instruments([{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "tickSz": "0.1", "lotSz": "0.01",
                                "minSz": "0.01", "ctVal": "0.01", "maxLmtSz": "100000"}])[0]
    spec = p.instrument_spec(row)
    assert (spec.tick_size, spec.lot_size, spec.min_qty, spec.contract_value, spec.max_qty) == (
        Decimal("0.1"), Decimal("0.01"), Decimal("0.01"), Decimal("0.01"), Decimal(100000))
    spot = p.instrument_spec(p.parse_instruments([{"instId": "BTC-USDT", "instType": "SPOT", "tickSz": "0.1",
                                                   "lotSz": "0.00000001", "minSz": "0.00001", "ctVal": ""}])[0])
    assert spot.contract_value == 1
    with pytest.raises(OkxParseError, match="tickSz and lotSz must be > 0"):
        p.instrument_spec(p.parse_instruments([{"instId": "X", "instType": "SWAP", "tickSz": "0", "lotSz": "1",
                                                "minSz": "1"}])[0])
    pos = p.position(p.parse_positions([{"instId": "BTC-USDT-SWAP", "pos": "-3", "avgPx": "97000", "upl": "-1.5",
                                         "imr": "290"}])[0])
    assert (pos.qty, pos.avg_price, pos.unrealized_pnl, pos.margin) == (
        Decimal(-3), Decimal(97000), Decimal("-1.5"), Decimal(290))
    bal = p.account_balance(p.parse_balances([{"totalEq": "1000", "availEq": "800", "imr": "200", "details": [
        {"ccy": "USDT", "cashBal": "1000", "availBal": "800"}]}])[0])
    assert (bal.total_equity, bal.available_equity, bal.cash, bal.available) == (
        Decimal(1000), Decimal(800), {"USDT": Decimal(1000)}, {"USDT": Decimal(800)})
    assert p.parse_server_time([{"ts": "1597026383085"}]) == 1597026383085


# --- hypothesis: never anything but a result or OkxParseError -----------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=20,
)
ORDER_KEYS = ["instId", "ordId", "clOrdId", "state", "ordType", "accFillSz", "fillSz", "fillPx", "tradeId", "fillFee",
              "fillFeeCcy", "fee", "feeCcy", "fillTime", "uTime", "code", "msg", "side", "px", "sz", "avgPx"]
numberish = st.sampled_from(["0", "1", "-1", "2.5", "", "nan", "inf", "1e5", "x", "00", "9" * 70, "-0", "0.0000001"])
order_dicts = st.dictionaries(st.sampled_from(ORDER_KEYS),
                              numberish | st.sampled_from(["live", "filled", "canceled", "ioc", "limit"]) | json_values,
                              max_size=len(ORDER_KEYS))
PARSERS = [p.parse_acks, p.parse_orders, p.parse_fills, p.parse_balances, p.parse_positions, p.parse_instruments,
           p.parse_server_time]


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_envelope_and_ws_never_raise_anything_else(body: bytes) -> None:
    for parse in (p.parse_envelope, p.parse_ws):
        try:
            parse(body)
        except OkxParseError as exc:
            assert str(exc).startswith("okx ")


@settings(max_examples=300)
@given(json_values)
def test_data_parsers_never_raise_anything_else(data: Any) -> None:
    for parse in PARSERS:
        try:
            parse(data)
        except OkxParseError as exc:
            assert str(exc).startswith("okx ")


@settings(max_examples=400)
@given(order_dicts)
def test_order_conversions_never_raise_anything_else(entry: dict[str, Any]) -> None:
    try:
        details = p.parse_orders([entry])
    except OkxParseError:
        return
    detail = details[0]
    for convert in (p.push_fill, p.order_state, lambda d: p.order_update(d, [])):
        try:
            convert(detail)
        except OkxParseError as exc:
            assert str(exc).startswith("okx ")


FILL_KEYS = ["instId", "tradeId", "ordId", "fillPx", "fillSz", "side", "clOrdId", "fee", "feeCcy", "ts", "fillTime"]
INST_KEYS = ["instId", "instType", "tickSz", "lotSz", "minSz", "ctVal", "maxLmtSz"]
POS_KEYS = ["instId", "pos", "posSide", "avgPx", "upl", "imr", "margin"]


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FILL_KEYS + INST_KEYS + POS_KEYS), numberish | json_values, max_size=14))
def test_row_conversions_never_raise_anything_else(entry: dict[str, Any]) -> None:
    checks: list[Callable[[], object]] = [
        lambda: p.fill_from_row(p.parse_fills([entry])[0]),
        lambda: p.instrument_spec(p.parse_instruments([entry])[0]),
        lambda: p.position(p.parse_positions([entry])[0]),
        lambda: p.account_balance(p.parse_balances([entry])[0]),
    ]
    for check in checks:
        try:
            check()
        except OkxParseError as exc:
            assert str(exc).startswith("okx ")


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(OkxParseError):
        p.parse_ws(b"[" * 100_000)
