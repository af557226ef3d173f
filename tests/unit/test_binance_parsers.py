"""Binance private REST bodies and stream messages: the documented shapes parse to the right
values, and nothing (bytes, JSON of any shape, a documented message with a field removed or
replaced) makes a parser raise anything but `ParseError`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import OrderState
from exchanges.binance import parsers as p

# The spot FULL order response of the docs (two of its five fills).
SPOT_FULL = {
    "symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP",
    "transactTime": 1507725176595, "price": "0.00000000", "origQty": "10.00000000", "executedQty": "10.00000000",
    "origQuoteOrderQty": "0.000000", "cummulativeQuoteQty": "10.00000000", "status": "FILLED", "timeInForce": "GTC",
    "type": "MARKET", "side": "SELL", "workingTime": 1507725176595, "selfTradePreventionMode": "NONE",
    "fills": [
        {"price": "4000.00000000", "qty": "1.00000000", "commission": "4.00000000", "commissionAsset": "USDT",
         "tradeId": 56},
        {"price": "3999.00000000", "qty": "5.00000000", "commission": "19.99500000", "commissionAsset": "USDT",
         "tradeId": 57},
    ],
}
# A USD-M order (RESULT), as the docs list its fields.
USDM_ORDER = {
    "clientOrderId": "testOrder", "cumQty": "0", "cumQuote": "0", "executedQty": "0", "orderId": 22542179,
    "avgPrice": "0.00000", "origQty": "10", "price": "0", "reduceOnly": False, "side": "BUY", "positionSide": "SHORT",
    "status": "NEW", "stopPrice": "9300", "closePosition": False, "symbol": "BTCUSDT", "timeInForce": "GTD",
    "type": "TRAILING_STOP_MARKET", "origType": "TRAILING_STOP_MARKET", "activatePrice": "9020", "priceRate": "0.3",
    "updateTime": 1566818724722, "workingType": "CONTRACT_PRICE", "priceProtect": False, "priceMatch": "NONE",
    "selfTradePreventionMode": "NONE", "goodTillDate": 1693207680000,
}
SPOT_CANCEL = {
    "symbol": "LTCBTC", "origClientOrderId": "myOrder1", "orderId": 4, "orderListId": -1,
    "clientOrderId": "cancelMyOrder1", "transactTime": 1684804350068, "price": "2.00000000", "origQty": "1.00000000",
    "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000", "status": "CANCELED", "timeInForce": "GTC",
    "type": "LIMIT", "side": "BUY", "selfTradePreventionMode": "NONE",
}
SPOT_TRADES = [{"symbol": "BNBBTC", "id": 28457, "orderId": 100234, "orderListId": -1, "price": "4.00000100",
                "qty": "12.00000000", "quoteQty": "48.000012", "commission": "10.10000000", "commissionAsset": "BNB",
                "time": 1499865549590, "isBuyer": True, "isMaker": False, "isBestMatch": True}]
USDM_TRADES = [{"buyer": False, "commission": "-0.07819010", "commissionAsset": "USDT", "id": 698759, "maker": False,
                "orderId": 25851813, "price": "7819.01", "qty": "0.002", "quoteQty": "15.63802",
                "realizedPnl": "-0.91539999", "side": "SELL", "positionSide": "SHORT", "symbol": "BTCUSDT",
                "time": 1569514978020}]
EXECUTION_REPORT = {
    "e": "executionReport", "E": 1499405658658, "s": "ETHBTC", "c": "mUvoqJxFIILMdfAW5iGSOW", "S": "BUY",
    "o": "LIMIT", "f": "GTC", "q": "1.00000000", "p": "0.10264410", "P": "0.00000000", "F": "0.00000000", "g": -1,
    "C": "", "x": "TRADE", "X": "PARTIALLY_FILLED", "r": "NONE", "i": 4293153, "l": "0.40000000",
    "z": "0.40000000", "L": "0.10264410", "n": "0.00040000", "N": "ETH", "T": 1499405658657, "t": 71,
    "I": 8641984, "w": True, "m": False, "M": False, "O": 1499405658657, "Z": "0.04105764", "Y": "0.04105764",
    "Q": "0.00000000", "W": 1499405658657, "V": "NONE",
}
# A real USD-M frame (a user's log of the 2026 /private stream).
ORDER_TRADE_UPDATE = {
    "e": "ORDER_TRADE_UPDATE", "T": 1779367929401, "E": 1779367929402,
    "o": {"s": "SOLUSDT", "c": "bot-e0536484551311f1b0c42676a180379c", "S": "BUY", "o": "LIMIT", "f": "GTC",
          "q": "21.26", "p": "85.67", "ap": "0", "sp": "0", "x": "NEW", "X": "NEW", "i": 215456450616, "l": "0",
          "z": "0", "L": "0", "n": "0", "N": "USDT", "T": 1779367929401, "t": 0, "b": "2520.672", "a": "0",
          "m": False, "R": True, "wt": "CONTRACT_PRICE", "ot": "LIMIT", "ps": "SHORT", "cp": False, "rp": "0",
          "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0"},
}
ACCOUNT_UPDATE = {"e": "ACCOUNT_UPDATE", "E": 1564745798939, "T": 1564745798938, "a": {
    "m": "ORDER", "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
    "P": [{"s": "BTCUSDT", "pa": "0", "ep": "0.00000", "bep": "0", "cr": "200", "up": "0", "mt": "isolated",
           "iw": "0.00000000", "ps": "BOTH"}]}}
SPOT_INFO = {"timezone": "UTC", "serverTime": 1575416692969, "rateLimits": [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100}], "exchangeFilters": [],
    "symbols": [{"symbol": "ETHBTC", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "BTC", "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.00000100", "maxPrice": "100000.00000000",
         "tickSize": "0.00000100"},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "5", "multiplierDown": "0.2", "avgPriceMins": 5},
        {"filterType": "LOT_SIZE", "minQty": "0.00100000", "maxQty": "100000.00000000", "stepSize": "0.00100000"},
        {"filterType": "MIN_NOTIONAL", "minNotional": "0.00010000", "applyToMarket": True, "avgPriceMins": 5},
    ]}, {"symbol": "FREEBTC", "status": "BREAK", "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0", "maxPrice": "0", "tickSize": "0"},
        {"filterType": "LOT_SIZE", "minQty": "1", "maxQty": "100", "stepSize": "1"}]}]}
USDM_INFO = {"rateLimits": [], "symbols": [{"symbol": "BLZUSDT", "status": "TRADING", "filters": [
    {"filterType": "PRICE_FILTER", "maxPrice": "300", "minPrice": "0.0001", "tickSize": "0.0001"},
    {"filterType": "LOT_SIZE", "maxQty": "10000000", "minQty": "1", "stepSize": "1"},
    {"filterType": "MIN_NOTIONAL", "notional": "5.0"}]}]}
SPOT_ACCOUNT = {"makerCommission": 15, "takerCommission": 15, "commissionRates": {
    "maker": "0.00150000", "taker": "0.00150000", "buyer": "0.00000000", "seller": "0.00000000"}, "canTrade": True,
    "balances": [{"asset": "BTC", "free": "4723846.89208129", "locked": "0.00000000"},
                 {"asset": "LTC", "free": "4763368.68006011", "locked": "0.00000000"}]}
USDM_ACCOUNT = {"feeTier": 0, "totalWalletBalance": "103.12345678", "availableBalance": "103.12345678",
                "totalMarginBalance": "103.12345678", "totalUnrealizedProfit": "0.00000000",
                "assets": [{"asset": "USDT", "walletBalance": "23.72469206", "availableBalance": "23.72469206"}],
                "positions": [{"symbol": "BTCUSDT", "positionAmt": "-1.000", "entryPrice": "9000",
                               "unrealizedProfit": "0.00000000", "leverage": "100"},
                              {"symbol": "ETHUSDT", "positionAmt": "0.000", "leverage": "20"}]}
POSITION_RISK = [{"entryPrice": "0.00000", "breakEvenPrice": "0.0", "marginType": "isolated",
                  "isAutoAddMargin": "false", "isolatedMargin": "0.00000000", "leverage": "10",
                  "liquidationPrice": "0", "markPrice": "6679.50671178", "maxNotionalValue": "20000000",
                  "positionAmt": "0.000", "notional": "0", "isolatedWallet": "0", "symbol": "BTCUSDT",
                  "unRealizedProfit": "0.00000000", "positionSide": "BOTH", "updateTime": 0}]
WS_OK = {"id": "q1", "status": 200, "result": SPOT_FULL, "rateLimits": [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 1}]}
WS_BAN = {"id": "fc93a61a-a192-4cf4-bb2a-a8f0f0c51e06", "status": 418, "error": {
    "code": -1003, "msg": "Way too much request weight used; IP banned until 1659146400000.",
    "data": {"serverTime": 1659142907531, "retryAfter": 1659146400000}}}


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_spot_full_order_with_fills() -> None:
    r = p.parse_order(enc(SPOT_FULL))
    assert (r.state, r.client_order_id, r.venue_order_id, r.executed_qty) == (
        OrderState.FILLED, "6gCrw2kRUAF9CvJDGP16IP", "28", Decimal(10))
    assert [(t.trade_id, t.qty, t.price, t.fee, t.fee_ccy) for t in r.trades] == [
        ("56", Decimal(1), Decimal(4000), Decimal(4), "USDT"), ("57", Decimal(5), Decimal(3999), Decimal("19.995"),
                                                                "USDT")]


def test_usdm_order_and_spot_cancel_report_our_client_id() -> None:
    u = p.parse_order(enc(USDM_ORDER))
    assert (u.state, u.client_order_id, u.quote_qty, u.update_ms) == (
        OrderState.ACKED, "testOrder", Decimal(0), 1566818724722)
    c = p.parse_order(enc(SPOT_CANCEL))
    assert (c.state, c.client_order_id) == (OrderState.CANCELLED, "myOrder1")  # not the cancel's own id


@pytest.mark.parametrize(("status", "state"), sorted(p.STATUS.items()))
def test_every_documented_status_maps(status: str, state: OrderState) -> None:
    assert p.parse_order(enc({**SPOT_FULL, "status": status})).state is state


def test_an_unknown_status_is_a_parse_error() -> None:
    with pytest.raises(p.ParseError, match="unknown order status"):
        p.parse_order(enc({**SPOT_FULL, "status": "NEW_INSURANCE"}))


def test_trade_lists_of_both_markets() -> None:
    [s] = p.parse_trades(enc(SPOT_TRADES))
    assert (s.trade_id, s.order_id, s.qty, s.fee, s.fee_ccy, s.ts_ms) == (
        "28457", "100234", Decimal(12), Decimal("10.1"), "BNB", 1499865549590)
    [u] = p.parse_trades(enc(USDM_TRADES))
    assert (u.trade_id, u.price, u.fee) == ("698759", Decimal("7819.01"), Decimal("-0.07819010"))


def test_exchange_info_filters_become_specs() -> None:
    info = p.parse_exchange_info(enc(SPOT_INFO), "spot")
    spec = info.specs["ETHBTC"]
    assert (spec.tick_size, spec.lot_size, spec.min_qty, spec.max_qty, spec.min_notional) == (
        Decimal("0.000001"), Decimal("0.001"), Decimal("0.001"), Decimal(100000), Decimal("0.0001"))
    assert info.trading == {"ETHBTC"} and info.weight_limit == 6000
    assert "tickSize or stepSize is 0" in info.unusable["FREEBTC"]
    usdm = p.parse_exchange_info(enc(USDM_INFO), "usdm").specs["BLZUSDT"]
    assert (usdm.min_notional, usdm.lot_size) == (Decimal(5), Decimal(1))


def test_accounts_and_positions() -> None:
    spot = p.parse_spot_account(enc(SPOT_ACCOUNT))
    assert spot.balances["BTC"].free == Decimal("4723846.89208129") and spot.taker_rate == Decimal("0.0015")
    fut = p.parse_futures_account(enc(USDM_ACCOUNT))
    assert fut.available_balance == Decimal("103.12345678")
    assert list(fut.positions) == ["BTCUSDT"] and fut.positions["BTCUSDT"].qty == Decimal(-1)
    [pos] = p.parse_position_risk(enc(POSITION_RISK))
    assert (pos.symbol, pos.qty, pos.leverage) == ("BTCUSDT", Decimal(0), 10)
    assert p.parse_commission(enc({"symbol": "BTCUSDT", "makerCommissionRate": "0.0002",
                                   "takerCommissionRate": "0.0004"})) == (Decimal("0.0002"), Decimal("0.0004"))


def test_user_data_events() -> None:
    spot = p.parse_user_event(enc(EXECUTION_REPORT))
    assert isinstance(spot, p.OrderEvent)
    assert (spot.report.state, spot.report.executed_qty, spot.event_ms) == (
        OrderState.PARTIALLY_FILLED, Decimal("0.4"), 1499405658658)
    [trade] = spot.report.trades
    assert (trade.trade_id, trade.qty, trade.price, trade.fee, trade.fee_ccy) == (
        "71", Decimal("0.4"), Decimal("0.1026441"), Decimal("0.0004"), "ETH")
    cancel = p.parse_user_event(enc({**EXECUTION_REPORT, "x": "CANCELED", "X": "CANCELED", "c": "cancel9",
                                     "C": "mUvoqJxFIILMdfAW5iGSOW"}))
    assert isinstance(cancel, p.OrderEvent) and cancel.report.client_order_id == "mUvoqJxFIILMdfAW5iGSOW"
    fut = p.parse_user_event(enc(ORDER_TRADE_UPDATE))
    assert isinstance(fut, p.OrderEvent)
    assert (fut.report.state, fut.report.trades, fut.report.client_order_id) == (
        OrderState.ACKED, (), "bot-e0536484551311f1b0c42676a180379c")
    acc = p.parse_user_event(enc(ACCOUNT_UPDATE))
    assert isinstance(acc, p.AccountEvent) and acc.balances["USDT"].free == Decimal("122624.12345678")
    assert p.parse_user_event(b'{"e":"listenKeyExpired","E":1576653824250,"listenKey":"x"}') == p.StreamEnded(
        "listenKeyExpired", 1576653824250)
    assert p.parse_user_event(b'{"e":"balanceUpdate","E":1}') == p.OtherEvent("balanceUpdate")


def test_websocket_api_frames() -> None:
    ok = p.parse_ws_frame(enc(WS_OK))
    assert isinstance(ok, p.WsResponse) and ok.result is not None
    assert p.parse_order(ok.result).client_order_id == "6gCrw2kRUAF9CvJDGP16IP"
    ban = p.parse_ws_frame(enc(WS_BAN))
    assert isinstance(ban, p.WsResponse)
    assert (ban.status, ban.error_code, ban.retry_after_ms) == (418, -1003, 1659146400000)
    wrapped = p.parse_ws_frame(enc({"subscriptionId": 0, "event": EXECUTION_REPORT}))
    assert isinstance(wrapped, p.OrderEvent) and wrapped.report.venue_order_id == "4293153"


def test_error_bodies_never_raise() -> None:
    assert p.parse_error_body(b'{"code":-1121,"msg":"Invalid symbol."}') == (-1121, "Invalid symbol.")
    assert p.parse_error_body(b"<html>502</html>") == (None, "<html>502</html>")
    assert p.parse_error_body(b"") == (None, "(empty body)")


# ---------------------------------------------------------------------- never anything but ParseError

PARSERS: dict[str, Callable[[bytes], object]] = {
    "order": p.parse_order,
    "orders": p.parse_orders,
    "trades": p.parse_trades,
    "exchange_info_spot": lambda b: p.parse_exchange_info(b, "spot"),
    "exchange_info_usdm": lambda b: p.parse_exchange_info(b, "usdm"),
    "spot_account": p.parse_spot_account,
    "futures_account": p.parse_futures_account,
    "position_risk": p.parse_position_risk,
    "commission": p.parse_commission,
    "server_time": p.parse_server_time,
    "listen_key": p.parse_listen_key,
    "user_event": p.parse_user_event,
    "ws_frame": p.parse_ws_frame,
}
DOCUMENTS: list[tuple[str, Any]] = [
    ("order", SPOT_FULL), ("order", USDM_ORDER), ("order", SPOT_CANCEL), ("trades", SPOT_TRADES),
    ("trades", USDM_TRADES), ("exchange_info_spot", SPOT_INFO), ("exchange_info_usdm", USDM_INFO),
    ("spot_account", SPOT_ACCOUNT), ("futures_account", USDM_ACCOUNT), ("position_risk", POSITION_RISK),
    ("user_event", EXECUTION_REPORT), ("user_event", ORDER_TRADE_UPDATE), ("user_event", ACCOUNT_UPDATE),
    ("ws_frame", WS_OK), ("ws_frame", WS_BAN), ("ws_frame", {"subscriptionId": 0, "event": EXECUTION_REPORT}),
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def only_parse_errors(parse: Callable[[bytes], object], raw: bytes) -> None:
    with contextlib.suppress(p.ParseError):
        parse(raw)


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(raw=st.binary(max_size=300))
def test_any_bytes_give_a_result_or_a_parse_error(name: str, raw: bytes) -> None:
    only_parse_errors(PARSERS[name], raw)


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(value=JSON)
def test_any_json_gives_a_result_or_a_parse_error(name: str, value: Any) -> None:
    only_parse_errors(PARSERS[name], enc(value))


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutated(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    copy = json.loads(json.dumps(doc))
    node = copy
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copy


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(data=st.data())
def test_a_documented_message_with_one_field_removed_or_replaced_never_raises_else(data: st.DataObject) -> None:
    name, doc = data.draw(st.sampled_from(DOCUMENTS))
    path = data.draw(st.sampled_from(_paths(doc)))
    delete = data.draw(st.booleans())
    value = data.draw(JSON)
    only_parse_errors(PARSERS[name], enc(_mutated(doc, path, value, delete)))


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()))
def test_decimals_are_finite_non_negative_venue_decimals_or_a_parse_error(raw: Any) -> None:
    try:
        value = p.dec(raw, "x")
    except p.ParseError:
        return
    assert value.is_finite() and value >= 0


@pytest.mark.parametrize("text", ["nan", "inf", "-1", " 1", "1\n", "1e999999999", "1E5", ".5", "", "1" * 65])
def test_decimal_refusals(text: str) -> None:
    with pytest.raises(p.ParseError):
        p.dec(text, "x")
