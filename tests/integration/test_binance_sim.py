"""The simulated Binance venue checked against the documentation with raw HTTP and WebSocket
clients (hand-signed here, not with exchanges/): the docs' own signed examples are accepted,
and every wrong key, signature, timestamp or rate gets the venue's status, code and message.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.clock import ManualClock
from sim.binance_exchange import SimSymbol
from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim
from tests.binance_support import KEY, SECRET, T

NOW = 1_732_150_000_000


def sign(payload: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), payload.encode(), sha256).hexdigest()


def signed(params: dict[str, str], ts: int = NOW, secret: str = SECRET) -> str:
    query = urlencode({**params, "timestamp": str(ts)})
    return f"{query}&signature={sign(query, secret)}"


@pytest.fixture
async def spot() -> AsyncIterator[BinanceVenueSim]:
    sim = BinanceVenueSim(market="spot", credentials=SimCredentials(KEY, SECRET), clock=ManualClock(NOW))
    async with sim:
        sim.set_book("BTCUSDT", "97000.0", "97000.2", "3", "5")
        yield sim


@pytest.fixture
async def usdm() -> AsyncIterator[BinanceVenueSim]:
    sim = BinanceVenueSim(market="usdm", credentials=SimCredentials(KEY, SECRET), clock=ManualClock(NOW))
    async with sim:
        sim.set_book("BTCUSDT", "97000.0", "97000.2", "3", "5")
        yield sim


async def get(sim: BinanceVenueSim, path: str, *, key: str | None = KEY) -> httpx.Response:
    headers = {"X-MBX-APIKEY": key} if key is not None else {}
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=T) as client:
        return await client.get(path, headers=headers)


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


async def test_the_docs_rest_example_is_accepted_as_signed() -> None:
    """The spot docs' SIGNED example: that key, that secret, that query, that signature."""
    clock = ManualClock(1_499_827_319_559 + 10)
    ltc = SimSymbol("LTCBTC", "LTC", "BTC", Decimal("0.000001"), Decimal("0.001"), Decimal("0.001"), Decimal("0.0001"))
    sim = BinanceVenueSim(market="spot", credentials=SimCredentials(KEY, SECRET), clock=clock, symbols=[ltc],
                          balances={"BTC": "1"})
    async with sim:
        body = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
                "&timestamp=1499827319559&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=T) as client:
            response = await client.post("/api/v3/order", content=body, headers={
                "X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "NEW"
            # The docs' mixed form: part in the query, part in the body, signed as their concatenation.
            query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
            rest = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
            mixed = await client.post(f"/api/v3/order?{query}", content=f"{rest}&signature={sign(query + rest)}",
                                      headers={"X-MBX-APIKEY": KEY,
                                               "Content-Type": "application/x-www-form-urlencoded"})
            assert mixed.status_code == 200, mixed.text


async def test_the_docs_websocket_api_example_is_accepted_as_signed() -> None:
    """The WebSocket API docs' HMAC example, sent as printed (recvWindow 100 at 1645423376532)."""
    clock = ManualClock(1_645_423_376_532 + 20)
    sim = BinanceVenueSim(market="spot", credentials=SimCredentials(KEY, SECRET), clock=clock,
                          balances={"BTC": "1", "USDT": "0"})
    async with sim:
        sim.set_book("BTCUSDT", "60000", "60000.01", "1", "1")
        request = {"id": "4885f793-e5ad-4c3b-8f6c-55d891472b71", "method": "order.place", "params": {
            "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01000000",
            "price": "52000.00", "newOrderRespType": "ACK", "recvWindow": 100, "timestamp": 1645423376532,
            "apiKey": KEY, "signature": "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"}}
        async with connect(f"{sim.ws_base_url}/ws-api/v3") as ws:
            await ws.send(json.dumps(request))
            answer = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert answer["id"] == request["id"] and answer["status"] == 200, answer
        assert set(answer["result"]) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
        assert answer["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        clock.advance(ms=200)  # the same request, now outside its 100 ms recvWindow
        async with connect(f"{sim.ws_base_url}/ws-api/v3") as ws:
            await ws.send(json.dumps(request))
            late = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert (late["status"], late["error"]["code"]) == (400, -1021)


@pytest.mark.parametrize(("key", "status", "code", "msg"), [
    (None, 401, -2014, "API-key format invalid."),
    ("not a key", 401, -2014, "API-key format invalid."),
    ("X" * 64, 401, -2015, "Invalid API-key, IP, or permissions for action."),
])
async def test_a_bad_key_gets_the_venues_answer(spot: BinanceVenueSim, key: str | None, status: int, code: int,
                                                msg: str) -> None:
    response = await get(spot, f"/api/v3/account?{signed({})}", key=key)
    assert error_of(response) == (status, code, msg)


async def test_signature_and_timestamp_checks(spot: BinanceVenueSim) -> None:
    cases: list[tuple[str, tuple[int, int, str]]] = [
        ("timestamp=1", (400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")),
        (f"{signed({}, secret='wrong')}", (400, -1022, "Signature for this request is not valid.")),
        (signed({}, ts=NOW + 1000), (400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")),
        (signed({}, ts=NOW - 5001), (400, -1021, "Timestamp for this request is outside of the recvWindow.")),
        (signed({"recvWindow": "60001"}), (400, -1131, "recvWindow must be less than 60000")),
        (f"symbol=A&symbol=B&{signed({})}", (400, -1101, "Duplicate values for a parameter detected.")),
    ]
    for query, expected in cases:
        assert error_of(await get(spot, f"/api/v3/account?{query}")) == expected, query
    ok = await get(spot, f"/api/v3/account?{signed({}, ts=NOW - 5000)}")
    assert ok.status_code == 200
    upper = signed({}).rsplit("=", 1)
    assert (await get(spot, f"/api/v3/account?{upper[0]}={upper[1].upper()}")).status_code == 200


async def test_every_answer_carries_the_used_weight_and_orders_their_counts(spot: BinanceVenueSim) -> None:
    first = await get(spot, "/api/v3/exchangeInfo", key=None)
    second = await get(spot, "/api/v3/exchangeInfo", key=None)
    assert int(second.headers["X-MBX-USED-WEIGHT-1M"]) == int(first.headers["X-MBX-USED-WEIGHT-1M"]) + 20
    async with httpx.AsyncClient(base_url=spot.base_url, timeout=T) as client:
        placed = await client.post("/api/v3/order", content=signed({
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.001",
            "price": "97001"}), headers={"X-MBX-APIKEY": KEY})
    assert placed.status_code == 200
    assert (placed.headers["X-MBX-ORDER-COUNT-10S"], placed.headers["X-MBX-ORDER-COUNT-1D"]) == ("1", "1")
    assert placed.json()["status"] == "FILLED"


async def test_over_the_weight_limit_429_with_retry_after_then_a_ban_for_who_keeps_going() -> None:
    clock = ManualClock(NOW - NOW % 60_000 + 1_000)  # one second into a minute
    sim = BinanceVenueSim(market="spot", credentials=SimCredentials(KEY, SECRET), clock=clock, weight_limit=45)
    async with sim:
        statuses = [(await get(sim, "/api/v3/exchangeInfo", key=None)) for _ in range(6)]
    codes = [r.status_code for r in statuses]
    assert codes == [200, 200, 429, 429, 429, 418]
    assert statuses[2].headers["Retry-After"] == "59"
    assert statuses[2].json()["code"] == -1003
    assert statuses[5].json()["msg"].startswith("Way too much request weight used; IP banned until")
    assert statuses[5].headers["Retry-After"] == "120"


async def test_exchange_info_filters_as_documented(spot: BinanceVenueSim, usdm: BinanceVenueSim) -> None:
    s = (await get(spot, "/api/v3/exchangeInfo", key=None)).json()
    btc = next(x for x in s["symbols"] if x["symbol"] == "BTCUSDT")
    kinds = {f["filterType"]: f for f in btc["filters"]}
    assert kinds["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert kinds["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert kinds["NOTIONAL"]["minNotional"] == "5.00000000"
    u = (await get(usdm, "/fapi/v1/exchangeInfo", key=None)).json()
    fut = next(x for x in u["symbols"] if x["symbol"] == "BTCUSDT")
    fkinds = {f["filterType"]: f for f in fut["filters"]}
    assert fkinds["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "notional": "100"}
    assert fut["contractType"] == "PERPETUAL" and fkinds["PRICE_FILTER"]["tickSize"] == "0.1"


async def test_the_retired_spot_listen_key_endpoint_fails_loudly(spot: BinanceVenueSim) -> None:
    async with httpx.AsyncClient(base_url=spot.base_url, timeout=T) as client:
        response = await client.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": KEY})
    assert response.status_code == 410


async def test_client_order_ids_are_unique_among_open_orders_only(spot: BinanceVenueSim) -> None:
    ex = spot.exchange
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
              "price": "96000", "newClientOrderId": "same1"}
    async with httpx.AsyncClient(base_url=spot.base_url, timeout=T) as client:
        def post(p: dict[str, str]) -> Any:
            return client.post("/api/v3/order", content=signed(p), headers={"X-MBX-APIKEY": KEY})

        assert (await post(params)).status_code == 200
        assert error_of(await post(params)) == (400, -2010, "Duplicate order sent.")
        first = ex.by_client["same1"]
        ex.cancel_order({"symbol": "BTCUSDT", "origClientOrderId": "same1"})
        assert (await post(params)).status_code == 200  # terminal orders free their id
        assert ex.by_client["same1"] is not first
        bad = {**params, "newClientOrderId": "has space"}
        assert error_of(await post(bad))[1] == -1100


async def test_matching_partial_fill_expiry_and_a_resting_order_filled_by_a_later_book(spot: BinanceVenueSim) -> None:
    ex = spot.exchange
    events: list[dict[str, Any]] = []
    ex.add_listener(events.append)
    spot.set_book("BTCUSDT", "97000.0", "97000.2", "1", "0.004")
    ioc = ex.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                        "quantity": "0.01", "price": "97001", "newOrderRespType": "FULL"})
    assert (ioc["status"], ioc["executedQty"], len(ioc["fills"])) == ("EXPIRED", "0.00400000", 1)
    rest = ex.new_order({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                         "quantity": "0.01", "price": "97100", "newClientOrderId": "rest1"})
    assert rest["status"] == "NEW"
    assert ex.locked["BTC"] == Decimal("0.01")
    spot.set_book("BTCUSDT", "97150.0", "97150.5", "0.02", "1")
    filled = ex.by_client["rest1"]
    assert (filled.status, filled.trades[0].price, filled.trades[0].maker) == ("FILLED", Decimal("97100"), True)
    assert ex.locked["BTC"] == 0
    reports = [(e["x"], e["X"]) for e in events if e["e"] == "executionReport"]
    assert reports == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED"), ("EXPIRED", "EXPIRED"),
                       ("NEW", "NEW"), ("TRADE", "FILLED")]


async def test_usdm_private_stream_needs_a_live_listen_key_on_the_private_route(usdm: BinanceVenueSim) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(f"{usdm.ws_base_url}/private/ws/not-a-key") as ws:
            await asyncio.wait_for(ws.recv(), T)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with httpx.AsyncClient(base_url=usdm.base_url, timeout=T) as client:
        key = (await client.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})).json()["listenKey"]
    with pytest.raises(InvalidStatus):  # the legacy route is retired
        async with connect(f"{usdm.ws_base_url}/ws/{key}"):
            pass
    async with connect(f"{usdm.ws_base_url}/private/ws?listenKey={key}") as ws:
        usdm.exchange.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                                 "quantity": "0.01", "price": "97001"})
        names = [json.loads(await asyncio.wait_for(ws.recv(), T))["e"] for _ in range(3)]
    assert names == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]


async def test_the_module_entry_point_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.binance_venue", "--market", "usdm", "--port", "0", "--api-key", KEY,
        "--secret", SECRET, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base = line.removeprefix("listening on ")
        async with httpx.AsyncClient(base_url=base, timeout=T) as client:
            assert (await client.get("/fapi/v1/time")).status_code == 200
            book = (await client.get("/fapi/v1/ticker/bookTicker", params={"symbol": "BTCUSDT"})).json()
            assert float(book["askPrice"]) > float(book["bidPrice"]) > 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
