"""The OKX simulator's private side, checked with raw httpx and websockets clients.

Nothing here uses exchanges/: the simulator is checked against the OKX documentation (the
signature, the error codes, the message shapes), so that the gateway tests against it mean
something.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.clock import ManualClock
from sim.okx_accounts import INST_TYPES
from sim.okx_server import OkxSimServer
from tests.okx_support import BTC, KEY, PASSPHRASE, SECRET, T, okx_sim

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stamp(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def signed(clock: ManualClock, method: str, target: str, body: str = "", *, key: str = KEY, secret: str = SECRET,
           passphrase: str = PASSPHRASE, ts: str | None = None) -> dict[str, str]:
    ts = ts or stamp(clock.time_ms())
    sign = base64.b64encode(hmac.new(secret.encode(), f"{ts}{method}{target}{body}".encode(), hashlib.sha256).digest())
    return {"OK-ACCESS-KEY": key, "OK-ACCESS-SIGN": sign.decode(), "OK-ACCESS-TIMESTAMP": ts,
            "OK-ACCESS-PASSPHRASE": passphrase, "Content-Type": "application/json"}


async def call(server: OkxSimServer, clock: ManualClock, method: str, target: str, body: Any = None,
               **auth: Any) -> httpx.Response:
    text = json.dumps(body, separators=(",", ":")) if body is not None else ""
    async with httpx.AsyncClient(base_url=server.rest_url, timeout=T) as client:
        return await client.request(method, target, content=text.encode() if text else None,
                                    headers=signed(clock, method, target, text, **auth))


ORDER = {"instId": BTC, "tdMode": "cross", "clOrdId": "b15", "side": "buy", "ordType": "ioc", "px": "97001", "sz": "2"}


async def test_signed_order_is_placed_and_queried_in_the_documented_shapes() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        placed = await call(server, clock, "POST", "/api/v5/trade/order", ORDER)
        body = placed.json()
        assert (placed.status_code, body["code"], body["msg"]) == (200, "0", "")
        ack = body["data"][0]
        assert set(ack) >= {"clOrdId", "ordId", "tag", "ts", "sCode", "sMsg"} and ack["sCode"] == "0"
        assert {"inTime", "outTime"} <= set(body)
        got = (await call(server, clock, "GET", f"/api/v5/trade/order?instId={BTC}&clOrdId=b15")).json()
        detail = got["data"][0]
        assert (detail["state"], detail["accFillSz"], detail["avgPx"], detail["ordType"]) == (
            "filled", "2", "97000.1", "ioc")
        assert detail["fee"].startswith("-")  # charged fees are negative on OKX
        fills = (await call(server, clock, "GET", f"/api/v5/trade/fills?instType=SWAP&ordId={ack['ordId']}")).json()
        assert [f["fillSz"] for f in fills["data"]] == ["2"]


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ({"key": ""}, "50103"),
        ({"passphrase": ""}, "50104"),
        ({"passphrase": "wrong"}, "50105"),
        ({"key": "unknown"}, "50111"),
        ({"secret": "not-the-secret"}, "50113"),
        ({"ts": "2020-12-08 09:08:57"}, "50112"),
        ({"ts": "2020-12-08T09:08:57.715Z"}, "50102"),
    ],
)
async def test_authentication_failures_answer_the_venue_codes(auth: dict[str, str], code: str) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        answer = await call(server, clock, "POST", "/api/v5/trade/order", ORDER, **auth)
        assert answer.status_code == 401
        assert answer.json()["code"] == code
        assert server.private.orders_received == 0


async def test_business_failures_are_http_200_with_sCode() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        bad = await call(server, clock, "POST", "/api/v5/trade/order", {**ORDER, "sz": "1.5"})
        body = bad.json()
        assert (bad.status_code, body["code"], body["msg"]) == (200, "1", "All operations failed")
        assert (body["data"][0]["sCode"], body["data"][0]["ordId"]) == ("51121", "")
        unknown = (await call(server, clock, "POST", "/api/v5/trade/order", {**ORDER, "instId": "NOPE-USDT"})).json()
        assert unknown["data"][0]["sCode"] == "51001"
        missing = (await call(server, clock, "GET", f"/api/v5/trade/order?instId={BTC}&clOrdId=nothere")).json()
        assert missing["code"] == "51603"
        broke = await call(server, clock, "POST", "/api/v5/trade/order", {**ORDER, "sz": "100000"})
        assert broke.json()["data"][0]["sCode"] == "51008"  # 100 000 contracts: no margin for that


async def test_client_order_id_is_unique_among_pending_orders_only() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        resting = {**ORDER, "ordType": "limit", "px": "96000", "clOrdId": "dup1"}
        assert (await call(server, clock, "POST", "/api/v5/trade/order", resting)).json()["code"] == "0"
        again = (await call(server, clock, "POST", "/api/v5/trade/order", resting)).json()
        assert again["data"][0]["sCode"] == "51016"
        cancel = await call(server, clock, "POST", "/api/v5/trade/cancel-order", {"instId": BTC, "clOrdId": "dup1"})
        assert cancel.json()["data"][0]["sCode"] == "0"
        # Terminal: the id may be reused, and a query returns the latest order with it.
        reused = (await call(server, clock, "POST", "/api/v5/trade/order", {**ORDER, "clOrdId": "dup1"})).json()
        assert reused["code"] == "0"
        latest = (await call(server, clock, "GET", f"/api/v5/trade/order?instId={BTC}&clOrdId=dup1")).json()
        assert latest["data"][0]["ordId"] == reused["data"][0]["ordId"]
        twice = await call(server, clock, "POST", "/api/v5/trade/cancel-order", {"instId": BTC, "clOrdId": "dup1"})
        assert twice.json()["data"][0]["sCode"] == "51402"  # filled: nothing to cancel


async def test_instruments_answers_every_instrument_type() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, httpx.AsyncClient(base_url=server.rest_url) as client:
        counts = {}
        for inst_type in INST_TYPES:
            body = (await client.get("/api/v5/public/instruments", params={"instType": inst_type})).json()
            assert body["code"] == "0"
            counts[inst_type] = len(body["data"])
        assert counts == {"SPOT": 1, "MARGIN": 0, "SWAP": 2, "FUTURES": 0, "OPTION": 0}
        wrong = (await client.get("/api/v5/public/instruments", params={"instType": "BOND"})).json()
        assert wrong["code"] == "51000"


async def test_balance_positions_and_pending_orders() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server:
        await call(server, clock, "POST", "/api/v5/trade/order", ORDER)
        await call(server, clock, "POST", "/api/v5/trade/order",
                   {**ORDER, "ordType": "limit", "px": "96000", "sz": "1", "clOrdId": "rest1"})
        pos = (await call(server, clock, "GET", "/api/v5/account/positions?instType=SWAP")).json()["data"]
        assert [(p["instId"], p["pos"], p["posSide"], p["mgnMode"]) for p in pos] == [(BTC, "2", "net", "cross")]
        pending = (await call(server, clock, "GET", "/api/v5/trade/orders-pending?instType=SWAP")).json()["data"]
        assert [(o["clOrdId"], o["state"]) for o in pending] == [("rest1", "live")]
        bal = (await call(server, clock, "GET", "/api/v5/account/balance")).json()["data"][0]
        usdt = next(d for d in bal["details"] if d["ccy"] == "USDT")
        assert float(usdt["availBal"]) < float(usdt["cashBal"])  # margin and the resting order hold some


async def login(ws: ClientConnection, clock: ManualClock, *, key: str = KEY, secret: str = SECRET,
                passphrase: str = PASSPHRASE, seconds: int | None = None) -> dict[str, Any]:
    ts = str(seconds if seconds is not None else clock.time_ms() // 1000)
    sign = base64.b64encode(hmac.new(secret.encode(), f"{ts}GET/users/self/verify".encode(), hashlib.sha256).digest())
    await ws.send(json.dumps({"op": "login", "args": [{"apiKey": key, "passphrase": passphrase, "timestamp": ts,
                                                       "sign": sign.decode()}]}))
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), T))
    return answer


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"key": "nobody"}, "60005"), ({"secret": "x" * 32}, "60007"), ({"passphrase": "no"}, "60024"),
     ({"seconds": 1}, "60006")],
)
async def test_private_login_refusals(kwargs: dict[str, Any], code: str) -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, connect(server.private_ws_url) as ws:
        answer = await login(ws, clock, **kwargs)
        assert (answer["event"], answer["code"]) == ("error", code)


async def test_private_stream_pushes_orders_and_takes_orders() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, connect(server.private_ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert (refused["event"], refused["code"]) == ("error", "60011")  # log in first
        assert (await login(ws, clock))["event"] == "login"
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "SWAP"}]}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "orders", "instType": "SWAP"}
        assert json.loads(await asyncio.wait_for(ws.recv(), T))["event"] == "channel-conn-count"
        await ws.send(json.dumps({"id": "req1", "op": "order", "args": [{**ORDER, "clOrdId": "ws1"}]}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), T)) for _ in range(2)]
        push = next(f for f in frames if "arg" in f)
        answer = next(f for f in frames if f.get("op") == "order")
        assert push["arg"]["channel"] == "orders" and push["arg"]["uid"]
        data = push["data"][0]
        assert (data["clOrdId"], data["state"], data["fillSz"], data["execType"]) == ("ws1", "filled", "2", "T")
        assert data["tradeId"] and data["fillFee"].startswith("-")
        assert (answer["id"], answer["code"], answer["data"][0]["sCode"]) == ("req1", "0", "0")
        await ws.send(json.dumps({"id": "req2", "op": "cancel-order", "args": [{"instId": BTC, "clOrdId": "ws1"}]}))
        cancel = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert (cancel["op"], cancel["code"], cancel["data"][0]["sCode"]) == ("cancel-order", "1", "51402")


async def test_drop_private_streams_closes_without_a_close_frame() -> None:
    clock = ManualClock()
    async with okx_sim(clock) as server, connect(server.private_ws_url) as ws:
        await login(ws, clock)
        assert server.drop_private_streams() == 1
        with pytest.raises(Exception, match="no close frame"):
            await asyncio.wait_for(ws.recv(), T)


async def test_serve_okx_from_the_command_line_prints_its_address_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": _REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.okx_sim_cli", "--port", "0", "--api-key", KEY, "--secret", SECRET,
        "--passphrase", PASSPHRASE, cwd=_REPO, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base = line.removeprefix("listening on ")
        async with httpx.AsyncClient(base_url=base) as client:
            swaps = (await client.get("/api/v5/public/instruments", params={"instType": "SWAP"})).json()["data"]
        assert {s["instId"] for s in swaps} == {"XAUT-USDT-SWAP", "BTC-USDT-SWAP", "ETH-USDT-SWAP"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
