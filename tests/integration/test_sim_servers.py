"""The loopback venue simulators over real sockets, checked with raw websockets and httpx clients.

Nothing here uses feeds/: the simulators are checked against the documented protocols, so
that a feed test against them means something.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.protocol import State

from core.clock import ManualClock, RealClock
from core.config import demo_config
from core.models import Venue
from sim.binance_server import BinanceSimServer
from sim.market import SimTick
from sim.okx_server import OkxSimServer
from sim.venue_server import Faults
from sim.world import SimWorld

T = 2.0  # the bound on every single wait
BTC_SWAP = "BTC-USDT-SWAP"
ETH_SWAP = "ETH-USDT-SWAP"
TICKER_KEYS = {
    "instType", "instId", "last", "lastSz", "askPx", "askSz", "bidPx", "bidSz", "open24h", "high24h",
    "low24h", "volCcy24h", "vol24h", "sodUtc0", "sodUtc8", "ts",
}  # fmt: skip

_ts = iter(range(1_732_150_000_000, 1_732_150_000_000 + 10**9, 7))


def tick(venue: Venue, symbol: str, bid: float, ask: float, *, bid_size: float = 3.0, ask_size: float = 5.0) -> SimTick:
    return SimTick(venue, symbol, bid, ask, bid_size, ask_size, next(_ts))


def okx_tick(bid: float = 97000.1, ask: float = 97000.2, symbol: str = BTC_SWAP, size: float = 3.0) -> SimTick:
    return tick("okx", symbol, bid, ask, bid_size=size, ask_size=size + 2)


def bn_tick(bid: float = 97000.1, ask: float = 97000.2, symbol: str = "BTCUSDT", size: float = 0.5) -> SimTick:
    return tick("binance", symbol, bid, ask, bid_size=size, ask_size=size * 2)


async def recv_text(ws: ClientConnection, within: float = T) -> str:
    raw = await asyncio.wait_for(ws.recv(), within)
    assert isinstance(raw, str)
    return raw


async def recv_json(ws: ClientConnection, within: float = T) -> Any:
    return json.loads(await recv_text(ws, within))


async def assert_quiet(ws: ClientConnection, within: float = 0.25) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), within)


async def wait_closed(ws: ClientConnection, within: float = T) -> ConnectionClosed:
    """Read until the connection ends; return how it ended."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc


async def wait_for(predicate: Any, within: float = T) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def client(url: str) -> Any:
    # No client pings: the tests decide what goes over the wire.
    return connect(url, open_timeout=T, close_timeout=0.5, ping_interval=None)


async def okx_subscribe(ws: ClientConnection, channel: str, inst_id: str = BTC_SWAP, req_id: str = "1") -> Any:
    await ws.send(json.dumps({"id": req_id, "op": "subscribe", "args": [{"channel": channel, "instId": inst_id}]}))
    return await recv_json(ws)


@pytest.fixture
async def okx() -> AsyncIterator[OkxSimServer]:
    server = OkxSimServer(symbols=[BTC_SWAP, ETH_SWAP], clock=ManualClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def spot() -> AsyncIterator[BinanceSimServer]:
    server = BinanceSimServer(symbols=["BTCUSDT", "ETHUSDT"], market="spot", clock=ManualClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def usdm() -> AsyncIterator[BinanceSimServer]:
    server = BinanceSimServer(symbols=["BTCUSDT", "ETHUSDT"], market="usdm", clock=ManualClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------------------------------- OKX


async def test_okx_tickers_ack_and_push_shapes(okx: OkxSimServer) -> None:
    okx.publish(okx_tick(97000.1, 97000.3, size=12))
    async with client(okx.ws_url) as ws:
        ack = await okx_subscribe(ws, "tickers", req_id="1512")
        assert set(ack) == {"id", "event", "arg", "connId"}
        assert ack["id"] == "1512" and ack["event"] == "subscribe"
        assert ack["arg"] == {"channel": "tickers", "instId": BTC_SWAP}
        assert isinstance(ack["connId"], str) and ack["connId"]
        push = await recv_json(ws)  # the current ticker follows the ack
        assert push["arg"] == {"channel": "tickers", "instId": BTC_SWAP}
        (data,) = push["data"]
        assert set(data) == TICKER_KEYS
        assert all(isinstance(v, str) for v in data.values())
        assert data["instType"] == "SWAP" and data["instId"] == BTC_SWAP
        assert (data["bidPx"], data["askPx"], data["bidSz"], data["askSz"]) == ("97000.1", "97000.3", "12", "14")
        await asyncio.sleep(0.12)  # past the throttle window
        okx.publish(okx_tick(97001.0, 97001.5))
        data = (await recv_json(ws))["data"][0]
        assert (data["bidPx"], data["askPx"]) == ("97001", "97001.5")
        assert int(data["ts"]) > 0
        assert okx.subscriptions == 1 and okx.active_connections == 1


async def test_okx_bbo_tbt_snapshot_then_increasing_seq_and_inst_id_only_in_arg(okx: OkxSimServer) -> None:
    okx.publish(okx_tick(100.5, 100.6, symbol=ETH_SWAP, size=7))
    async with client(okx.ws_url) as ws:
        ack = await okx_subscribe(ws, "bbo-tbt", ETH_SWAP)
        assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "bbo-tbt", "instId": ETH_SWAP}
        snapshot = await recv_json(ws)
        assert snapshot["arg"] == {"channel": "bbo-tbt", "instId": ETH_SWAP}
        (data,) = snapshot["data"]
        assert set(data) == {"asks", "bids", "ts", "seqId"}  # no instId, no bidPx/askPx
        assert isinstance(data["seqId"], int) and isinstance(data["ts"], str)
        (ask_level,) = data["asks"]
        (bid_level,) = data["bids"]
        assert ask_level[:3] == ["100.6", "9", "0"] and bid_level[:3] == ["100.5", "7", "0"]
        assert all(isinstance(x, str) for x in ask_level + bid_level)
        seqs = [data["seqId"]]
        for i in range(1, 5):
            okx.publish(okx_tick(100.5 + i / 10, 100.6 + i / 10, symbol=ETH_SWAP))
            seqs.append((await recv_json(ws))["data"][0]["seqId"])
        assert seqs == sorted(set(seqs))
        okx.publish(okx_tick(100.9, 101.0, symbol=ETH_SWAP))  # the same top of book: no push
        await assert_quiet(ws, 0.15)


async def test_okx_bbo_tbt_idle_book_resends_the_snapshot_with_the_same_seq() -> None:
    server = OkxSimServer(symbols=[BTC_SWAP], bbo_resend_s=0.2)
    async with server, client(server.ws_url) as ws:
        server.publish(okx_tick(100.0, 100.1))
        await okx_subscribe(ws, "bbo-tbt")
        snapshot = await recv_json(ws)
        resent = await recv_json(ws, within=1.0)
        assert resent == snapshot


async def test_okx_ping_pong_errors_and_unsubscribe(okx: OkxSimServer) -> None:
    async with client(okx.ws_url) as ws:
        await ws.send("ping")
        assert await recv_text(ws) == "pong"
        bad_inst = await okx_subscribe(ws, "tickers", "NOPE-USDT-SWAP", req_id="7")
        assert bad_inst["event"] == "error" and bad_inst["code"] == "60018" and bad_inst["id"] == "7"
        assert "connId" in bad_inst and bad_inst["msg"]
        bad_channel = await okx_subscribe(ws, "books-l9", BTC_SWAP)
        assert (bad_channel["event"], bad_channel["code"]) == ("error", "60018")
        await ws.send("{not json")
        bad_json = await recv_json(ws)
        assert (bad_json["event"], bad_json["code"]) == ("error", "60012") and "id" not in bad_json
        await ws.send(json.dumps({"op": "login", "args": []}))
        assert (await recv_json(ws))["code"] == "60012"
        ack = await okx_subscribe(ws, "bbo-tbt")
        assert ack["event"] == "subscribe"
        await ws.send(
            json.dumps({"id": "9", "op": "unsubscribe", "args": [{"channel": "bbo-tbt", "instId": BTC_SWAP}]})
        )
        unack = await recv_json(ws)
        assert unack["event"] == "unsubscribe" and unack["id"] == "9" and unack["arg"]["instId"] == BTC_SWAP
        okx.publish(okx_tick())
        await assert_quiet(ws, 0.15)
        assert okx.subscriptions == 0


async def test_okx_tickers_throttle_sends_the_latest_state_once_per_window(okx: OkxSimServer) -> None:
    okx.publish(okx_tick(97000.0, 97000.5))
    async with client(okx.ws_url) as ws:
        await okx_subscribe(ws, "tickers")
        first = await recv_json(ws)
        t0 = time.monotonic()
        for i in range(1, 6):
            okx.publish(okx_tick(97000.0 + i, 97000.5 + i))
        second = await recv_json(ws)
        assert time.monotonic() - t0 >= 0.08
        assert first["data"][0]["bidPx"] == "97000"
        assert second["data"][0]["bidPx"] == "97005"  # the latest, not the first of the burst
        await assert_quiet(ws, 0.2)


async def test_okx_drops_a_connection_without_subscription() -> None:
    server = OkxSimServer(symbols=[BTC_SWAP], idle_timeout_s=0.3)
    async with server:
        server.publish(okx_tick())
        async with client(server.ws_url) as idle, client(server.ws_url) as pinging:
            ack = await okx_subscribe(pinging, "tickers")
            assert ack["event"] == "subscribe"
            await recv_json(pinging)  # the current ticker
            idle_closed = asyncio.create_task(wait_closed(idle, within=T))
            for _ in range(6):  # nothing published, but the client's pings keep it alive
                await pinging.send("ping")
                assert await recv_text(pinging) == "pong"
                await asyncio.sleep(0.1)
            closed = await idle_closed
            assert closed.rcvd is not None and closed.rcvd.code == 4004
            assert pinging.state is State.OPEN


async def test_okx_rest_ticker_and_error_bodies(okx: OkxSimServer) -> None:
    okx.publish(okx_tick(97000.1, 97000.2, size=4))
    async with httpx.AsyncClient(base_url=okx.rest_url, timeout=T) as http:
        ok = await http.get("/api/v5/market/ticker", params={"instId": BTC_SWAP})
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        body = ok.json()
        assert body["code"] == "0" and body["msg"] == ""
        (data,) = body["data"]
        assert set(data) == TICKER_KEYS and data["bidPx"] == "97000.1" and data["askSz"] == "6"
        unknown = (await http.get("/api/v5/market/ticker", params={"instId": "NOPE-USDT"})).json()
        assert unknown == {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        missing = await http.get("/api/v5/market/ticker")
        assert missing.status_code == 400 and missing.json()["code"] == "50014"
        not_found = await http.get("/api/v5/nothing/here")
        assert not_found.status_code == 404 and not_found.json()["code"] == 404
        server_time = (await http.get("/api/v5/public/time")).json()
        assert server_time["code"] == "0" and server_time["data"][0]["ts"].isdigit()
    assert okx.rest_requests == 5


async def test_okx_ws_on_a_wrong_path_is_refused(okx: OkxSimServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with client(f"{okx.ws_base_url}/ws/v5/business"):
            pass
    assert info.value.response.status_code == 404
    assert okx.connections_refused == 1 and okx.connections_accepted == 0


# ------------------------------------------------------------------------------------ Binance


async def test_binance_spot_raw_stream_payload(spot: BinanceSimServer) -> None:
    async with client(f"{spot.ws_url}/ws/btcusdt@bookTicker") as ws:
        await wait_for(lambda: spot.active_connections == 1)
        spot.publish(bn_tick(25.3519, 25.3652, size=31.21))
        spot.publish(bn_tick(97000.0, 97000.1, symbol="ETHUSDT"))  # not subscribed
        spot.publish(bn_tick(25.36, 25.37, size=1.5))
        first = await recv_json(ws)
        assert first == {
            "u": first["u"], "s": "BTCUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
            "A": "62.42000000",
        }  # fmt: skip
        assert isinstance(first["u"], int)
        second = await recv_json(ws)
        assert second["s"] == "BTCUSDT" and second["u"] > first["u"] and second["b"] == "25.36000000"
        await assert_quiet(ws, 0.1)
        assert spot.subscriptions == 1


async def test_binance_spot_combined_stream_wraps_payloads(spot: BinanceSimServer) -> None:
    url = f"{spot.ws_url}/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"
    async with client(url) as ws:
        await wait_for(lambda: spot.active_connections == 1)
        spot.publish(bn_tick(97000.0, 97000.1))
        spot.publish(bn_tick(3400.0, 3400.1, symbol="ETHUSDT"))
        one, two = await recv_json(ws), await recv_json(ws)
        assert set(one) == {"stream", "data"} and one["stream"] == "btcusdt@bookTicker"
        assert one["data"]["s"] == "BTCUSDT" and one["data"]["b"] == "97000.00000000"
        assert two["stream"] == "ethusdt@bookTicker" and two["data"]["a"] == "3400.10000000"
        assert spot.subscriptions == 2


async def test_binance_live_subscribe_and_requests(spot: BinanceSimServer) -> None:
    async with client(f"{spot.ws_url}/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1}))
        assert await recv_json(ws) == {"result": None, "id": 1}
        spot.publish(bn_tick(97000.0, 97000.1))
        assert (await recv_json(ws))["s"] == "BTCUSDT"  # a raw connection: not wrapped
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "abc"}))
        assert await recv_json(ws) == {"result": ["btcusdt@bookTicker"], "id": "abc"}
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 2}))
        assert await recv_json(ws) == {"result": None, "id": 2}
        spot.publish(bn_tick(97000.2, 97000.3))
        assert (await recv_json(ws))["stream"] == "btcusdt@bookTicker"
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 3}))
        assert await recv_json(ws) == {"result": True, "id": 3}
        await ws.send("{oops")
        bad_json = await recv_json(ws)
        assert bad_json["error"]["code"] == 3 and bad_json["id"] is None
        await ws.send(json.dumps({"method": "SUBSCRIB", "params": [], "id": 4}))
        unknown = await recv_json(ws)
        assert unknown["error"]["code"] == 2 and unknown["id"] == 4
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["x@bookTicker"]}))
        assert (await recv_json(ws))["error"]["code"] == 2  # no id
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 5}))
        assert await recv_json(ws) == {"result": None, "id": 5}
        spot.publish(bn_tick(97000.4, 97000.5))
        await assert_quiet(ws, 0.15)


async def test_binance_usdm_public_path_payload_and_legacy_path_refused(usdm: BinanceSimServer) -> None:
    with pytest.raises(InvalidStatus) as legacy:
        async with client(f"{usdm.ws_url}/ws/btcusdt@bookTicker"):
            pass
    assert legacy.value.response.status_code == 404
    with pytest.raises(InvalidStatus):
        async with client(f"{usdm.ws_url}/stream?streams=btcusdt@bookTicker"):
            pass
    assert usdm.connections_refused == 2
    async with (
        client(f"{usdm.ws_url}/public/ws/btcusdt@bookTicker") as raw,
        client(f"{usdm.ws_url}/public/stream?streams=btcusdt@bookTicker") as combined,
    ):
        await wait_for(lambda: usdm.active_connections == 2)
        sent = bn_tick(25.3519, 25.3652, size=31.21)
        usdm.publish(sent)
        payload = await recv_json(raw)
        assert payload["e"] == "bookTicker" and payload["s"] == "BTCUSDT"
        assert payload["T"] == sent.ts_ms and payload["E"] >= payload["T"]
        assert (payload["b"], payload["B"], payload["a"], payload["A"]) == (
            "25.35190000", "31.21000000", "25.36520000", "62.42000000",
        )  # fmt: skip
        assert isinstance(payload["u"], int)
        wrapped = await recv_json(combined)
        assert wrapped == {"stream": "btcusdt@bookTicker", "data": payload}


async def test_binance_rest_book_ticker_bodies(spot: BinanceSimServer, usdm: BinanceSimServer) -> None:
    spot.publish(bn_tick(4.0, 4.000002, size=431))
    usdm.publish(bn_tick(97000.0, 97000.1, size=2))
    async with httpx.AsyncClient(base_url=spot.rest_url, timeout=T) as http:
        one = await http.get("/api/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"})
        assert one.status_code == 200 and one.headers["content-type"] == "application/json"
        assert one.json() == {
            "symbol": "BTCUSDT", "bidPrice": "4.00000000", "bidQty": "431.00000000",
            "askPrice": "4.00000200", "askQty": "862.00000000",
        }  # fmt: skip
        every = (await http.get("/api/v3/ticker/bookTicker")).json()
        assert [t["symbol"] for t in every] == ["BTCUSDT", "ETHUSDT"]
        some = await http.get("/api/v3/ticker/bookTicker", params={"symbols": '["ETHUSDT"]'})
        assert [t["symbol"] for t in some.json()] == ["ETHUSDT"]
        bad = await http.get("/api/v3/ticker/bookTicker", params={"symbol": "NOPEUSDT"})
        assert bad.status_code == 400 and bad.json() == {"code": -1121, "msg": "Invalid symbol."}
        lower = await http.get("/api/v3/ticker/bookTicker", params={"symbol": "btcusdt"})
        assert lower.status_code == 400 and lower.json()["code"] == -1100
        assert (await http.get("/fapi/v1/ticker/bookTicker")).status_code == 404
        assert (await http.get("/api/v3/ping")).json() == {}
    async with httpx.AsyncClient(base_url=usdm.rest_url, timeout=T) as http:
        body = (await http.get("/fapi/v1/ticker/bookTicker", params={"symbol": "BTCUSDT"})).json()
        assert body["symbol"] == "BTCUSDT" and body["bidPrice"] == "97000.00000000"
        assert body["askQty"] == "4.00000000" and isinstance(body["time"], int)
        bad = await http.get("/fapi/v1/ticker/bookTicker", params={"symbol": "NOPEUSDT"})
        assert bad.status_code == 400 and bad.json() == {"code": -1121, "msg": "Invalid symbol."}
        assert "serverTime" in (await http.get("/fapi/v1/time")).json()


async def _raw_ws_never_answering(port: int, path: str) -> bytes:
    """Open a WebSocket by hand and never answer anything; return all bytes until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
        assert head.startswith(b"HTTP/1.1 101")
        received = b""
        async with asyncio.timeout(3.0):
            while chunk := await reader.read(4096):
                received += chunk
        return received
    finally:
        writer.close()
        await writer.wait_closed()


async def test_binance_server_pings_keep_answering_clients_and_drop_silent_ones() -> None:
    server = BinanceSimServer(symbols=["BTCUSDT"], market="spot", ping_interval_s=0.1, pong_timeout_s=0.2,
                              close_timeout_s=0.2)  # fmt: skip
    async with server, client(f"{server.ws_url}/ws/btcusdt@bookTicker") as answering:
        # websockets answers ping frames by itself; the hand-made client never does.
        received = await _raw_ws_never_answering(server.port, "/ws/btcusdt@bookTicker")
        assert received[0] == 0x89  # a ping frame came first ...
        assert b"\x88" in received  # ... and a close frame before the end
        assert server.keepalive_timeouts == 1
        assert answering.state is State.OPEN
        server.publish(bn_tick())
        assert (await recv_json(answering))["s"] == "BTCUSDT"


async def test_binance_max_lifetime_closes_the_connection() -> None:
    server = BinanceSimServer(symbols=["BTCUSDT"], market="usdm", max_lifetime_s=0.3)
    async with server, client(f"{server.ws_url}/public/ws/btcusdt@bookTicker") as ws:
        t0 = time.monotonic()
        closed = await wait_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1000
        assert time.monotonic() - t0 >= 0.25


async def test_binance_server_shutdown_event(usdm: BinanceSimServer) -> None:
    async with client(f"{usdm.ws_url}/public/ws/btcusdt@bookTicker") as ws:
        await wait_for(lambda: usdm.active_connections == 1)
        assert usdm.send_server_shutdown(close_after_s=0.1) == 1
        event = await recv_json(ws)
        assert event["e"] == "serverShutdown" and isinstance(event["E"], int)
        closed = await wait_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1001


# ------------------------------------------------------------------------------------- faults


async def test_fault_drop_after_n_data_frames(okx: OkxSimServer) -> None:
    okx.faults.drop_after_frames = 3
    okx.publish(okx_tick(100.0, 100.1))
    async with client(okx.ws_url) as ws:
        assert (await okx_subscribe(ws, "bbo-tbt"))["event"] == "subscribe"  # an ack is not a data frame
        for i in range(1, 6):
            okx.publish(okx_tick(100.0 + i, 100.1 + i))
        frames = [await recv_json(ws) for _ in range(3)]  # the snapshot and two updates
        assert [f["arg"]["channel"] for f in frames] == ["bbo-tbt"] * 3
        closed = await wait_closed(ws)
        assert isinstance(closed, ConnectionClosedError) and closed.rcvd is None  # no close frame: abrupt
    assert okx.data_frames_sent == 3


async def test_fault_silent_keeps_the_connection_open_and_sends_nothing(okx: OkxSimServer) -> None:
    okx.publish(okx_tick(100.0, 100.1))
    async with client(okx.ws_url) as ws:
        await okx_subscribe(ws, "bbo-tbt")
        await recv_json(ws)  # snapshot
        okx.faults.silent = True
        await ws.send("ping")
        okx.publish(okx_tick(101.0, 101.1))
        pong_waiter = await ws.ping()
        await assert_quiet(ws, 0.3)
        assert not pong_waiter.done()  # not even protocol pongs
        assert ws.state is State.OPEN and okx.active_connections == 1
        okx.faults.silent = False
        assert await recv_text(ws) == "pong"  # the ping read after the silence
        await asyncio.wait_for(pong_waiter, T)
        okx.publish(okx_tick(102.0, 102.1))
        assert (await recv_json(ws))["data"][0]["bids"][0][0] == "102"


async def test_fault_malformed_every_nth_frame(spot: BinanceSimServer) -> None:
    spot.faults.malformed_every = 2
    async with client(f"{spot.ws_url}/ws/btcusdt@bookTicker") as ws:
        await wait_for(lambda: spot.active_connections == 1)
        for i in range(4):
            spot.publish(bn_tick(100.0 + i, 100.5 + i))
        texts = [await recv_text(ws) for _ in range(4)]
    parsed = []
    for text in texts:
        try:
            parsed.append(json.loads(text))
        except ValueError:
            parsed.append(None)
    # Every second frame is garbled; the others are the published books, intact.
    assert parsed[1] is None and parsed[3] is None
    assert parsed[0] is not None and parsed[2] is not None
    assert [(p["s"], p["b"], p["a"]) for p in (parsed[0], parsed[2])] == [
        ("BTCUSDT", "100.00000000", "100.50000000"), ("BTCUSDT", "102.00000000", "102.50000000")]


async def test_fault_crossed_every_nth_frame(okx: OkxSimServer, usdm: BinanceSimServer) -> None:
    okx.tickers_throttle_s = 0.0
    okx.faults.crossed_every = 2
    usdm.faults.crossed_every = 2
    okx.publish(okx_tick(100.0, 100.1))
    async with client(okx.ws_url) as ows, client(f"{usdm.ws_url}/public/ws/btcusdt@bookTicker") as bws:
        await okx_subscribe(ows, "tickers")
        await wait_for(lambda: usdm.active_connections == 1)
        for i in range(1, 4):
            okx.publish(okx_tick(100.0 + i, 100.1 + i))
            usdm.publish(bn_tick(200.0 + i, 200.1 + i))
        okx_frames = [(await recv_json(ows))["data"][0] for _ in range(4)]
        bn_frames = [await recv_json(bws) for _ in range(3)]
    crossed_okx = [float(d["bidPx"]) > float(d["askPx"]) for d in okx_frames]
    assert crossed_okx == [False, True, False, True]
    crossed_bn = [float(p["b"]) > float(p["a"]) for p in bn_frames]
    assert crossed_bn == [False, True, False]


async def test_fault_error_events(okx: OkxSimServer, spot: BinanceSimServer) -> None:
    async with client(okx.ws_url) as ows, client(f"{spot.ws_url}/ws") as bws:
        await wait_for(lambda: okx.active_connections == 1 and spot.active_connections == 1)
        assert okx.send_error() == 1
        event = await recv_json(ows)
        assert event["event"] == "error" and event["code"] and event["msg"] and "connId" in event
        assert spot.send_error(code=-1001, msg="Internal error") == 1
        assert await recv_json(bws) == {"error": {"code": -1001, "msg": "Internal error"}, "id": None}


async def test_fault_refuse_connections_then_accept_again(spot: BinanceSimServer) -> None:
    spot.refuse_connections_for(0.3)
    with pytest.raises(InvalidStatus) as refused:
        async with client(f"{spot.ws_url}/ws/btcusdt@bookTicker"):
            pass
    assert refused.value.response.status_code == 503
    async with httpx.AsyncClient(base_url=spot.rest_url, timeout=T) as http:
        assert (await http.get("/api/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"})).status_code == 200
    await asyncio.sleep(0.35)
    async with client(f"{spot.ws_url}/ws/btcusdt@bookTicker") as ws:
        assert ws.state is State.OPEN
    assert spot.connections_refused == 1 and spot.connections_accepted == 1


async def test_fault_okx_notice_then_close(okx: OkxSimServer) -> None:
    async with client(okx.ws_url) as ws:
        await okx_subscribe(ws, "tickers")
        assert okx.send_notice(close_after_s=0.1) == 1
        notice = await recv_json(ws)
        assert notice["event"] == "notice" and notice["code"] == "64008" and "connId" in notice
        closed = await wait_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
    await wait_for(lambda: okx.active_connections == 0)


def test_faults_reject_nonsense_values() -> None:
    faults = Faults()
    for name, value in (("malformed_every", 0), ("crossed_every", -1), ("drop_after_frames", True)):
        with pytest.raises(ValueError, match=name):
            setattr(faults, name, value)
    faults.drop_after_frames = 2
    faults.silent = True
    faults.clear()
    assert repr(faults) == repr(Faults())  # every switch off


# ------------------------------------------------------------------------ stop and the world


def _other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_stop_closes_connections_and_leaves_no_task() -> None:
    okx = OkxSimServer(symbols=[BTC_SWAP], tickers_throttle_s=10.0)
    spot = BinanceSimServer(symbols=["BTCUSDT"], market="spot")
    await okx.start()
    await spot.start()
    okx.publish(okx_tick())
    async with client(okx.ws_url) as ows, client(f"{spot.ws_url}/ws/btcusdt@bookTicker") as bws:
        await okx_subscribe(ows, "tickers")
        await recv_json(ows)
        okx.publish(okx_tick(1.0, 2.0))  # leaves a throttled push pending
        okx.faults.silent = True  # a silent connection must close too
        await wait_for(lambda: spot.active_connections == 1)
        await asyncio.wait_for(asyncio.gather(okx.stop(), spot.stop()), T)
        for ws in (ows, bws):
            closed = await wait_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert not okx.running and not spot.running
    assert okx.active_connections == 0 and spot.active_connections == 0
    assert _other_tasks() == []


async def test_world_routes_ticks_to_the_venues_and_stops_cleanly() -> None:
    mt5_ticks: list[SimTick] = []
    world = SimWorld(demo_config().build_pairs(), seed=7, clock=RealClock(), tick_ms=20.0,
                     on_mt5_tick=mt5_ticks.append)  # fmt: skip
    before = world.touch("okx", BTC_SWAP)  # quoted before it even starts
    assert before is not None and 0 < before[0] < before[1]
    await world.start()
    try:
        assert world.okx_ws_url.endswith("/ws/v5/public")
        assert world.binance_ws_url.startswith("ws://127.0.0.1:")
        async with (
            client(world.okx_ws_url) as ows,
            client(f"{world.binance_ws_url}/public/ws/btcusdt@bookTicker") as bws,
        ):
            ack = await okx_subscribe(ows, "bbo-tbt")
            assert ack["event"] == "subscribe"
            okx_frames = [await recv_json(ows) for _ in range(3)]
            assert [f["arg"]["instId"] for f in okx_frames] == [BTC_SWAP] * 3
            bn_frames = [await recv_json(bws) for _ in range(3)]
            assert {f["s"] for f in bn_frames} == {"BTCUSDT"} and bn_frames[0]["e"] == "bookTicker"
        async with httpx.AsyncClient(timeout=T) as http:
            r = await http.get(f"{world.binance_rest_url}/fapi/v1/ticker/bookTicker", params={"symbol": "PAXGUSDT"})
            assert float(r.json()["bidPrice"]) > 0
            r = await http.get(f"{world.okx_rest_url}/api/v5/market/ticker", params={"instId": "XAUT-USDT-SWAP"})
            assert float(r.json()["data"][0]["bidPx"]) > 0
        assert mt5_ticks and {t.venue for t in mt5_ticks} == {"mt5"}
        touch = world.touch("binance", "BTCUSDT")
        assert touch is not None and touch[0] < touch[1]
        assert world.touch("okx", "NOPE") is None
    finally:
        await asyncio.wait_for(world.stop(), T)
    assert not world.running
    assert _other_tasks() == []
