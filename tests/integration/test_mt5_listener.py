"""The MT5 listener over real HTTP on 127.0.0.1 (EmbeddedServer + httpx), and property tests in process.

Real sockets: signed ticks reach the quote sink; wrong secret, stale timestamp and replays get
401 and change nothing; oversize bodies get 413; malformed ones 422 with field errors; a command
round trip through `MT5Gateway.place` (with a duplicated fill and a redelivered command); the
expiry path; `/healthz`; and the server leaves the process's signal handlers alone.

In process (httpx.ASGITransport): hypothesis sends arbitrary bodies, headers, methods and paths;
nothing gets a 5xx and nothing that is refused changes any state.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock, RealClock
from core.commands import CommandState
from core.models import OrderState
from mt5_bridge.app import MAX_BODY_BYTES, create_app
from mt5_bridge.gateway import MT5Gateway
from mt5_bridge.server import EmbeddedServer
from tests.mt5_support import (
    MAGIC,
    Ea,
    Rig,
    held,
    instrument,
    make_command,
    make_order,
    make_rig,
    signed_headers,
    state_of,
    tick,
)


@pytest.fixture
async def live() -> AsyncIterator[tuple[Rig, EmbeddedServer, httpx.AsyncClient]]:
    rig = make_rig(RealClock())
    server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield rig, server, client
    await server.stop()


def _gateway(rig: Rig, *, ttl_ms: int = 3000, grace_ms: int = 300) -> MT5Gateway:
    return MT5Gateway(rig.queue, "T1", {"XAUUSD": instrument(), "BTCUSD": instrument("BTCUSD")}, rig.clock,
                      magic=MAGIC, deviation_points=20, filling="IOC", command_ttl_ms=ttl_ms, grace_ms=grace_ms)


# ------------------------------------------------------------------------------------------------
# Server lifecycle


async def test_server_binds_a_free_port_and_stops_without_leftovers() -> None:
    rig = make_rig(RealClock())
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0)
    await server.start()
    assert server.port > 0 and server.running
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # nothing installed while serving
    async with httpx.AsyncClient(base_url=server.url) as client:
        resp = await client.get("/healthz")
        assert resp.status_code == 200
    await server.stop()
    assert not server.running
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    await server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.get("/healthz")


async def test_a_port_in_use_fails_start_with_oserror() -> None:
    rig = make_rig(RealClock())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            await server.start()
        assert not server.running


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[str, str]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("openssl is not available to make a test certificate")
    yield str(cert), str(key)


async def test_tls(tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    rig = make_rig(RealClock())
    server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0, tls_cert=cert, tls_key=key)
    await server.start()
    try:
        assert server.url.startswith("https://")
        async with httpx.AsyncClient(base_url=server.url, verify=ssl.create_default_context(cafile=cert)) as client:
            resp = await Ea(client, rig.clock).tick(tick())
            assert resp.status_code == 200, resp.text
        assert len(rig.quotes) == 1
    finally:
        await server.stop()
    with pytest.raises(ValueError):
        EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0, tls_cert=cert)


# ------------------------------------------------------------------------------------------------
# Authentication


async def test_signed_tick_reaches_the_sink(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    resp = await Ea(client, rig.clock).tick(tick(), tick("BTCUSD", 97000.5, 97001.0, 1_732_150_000_200))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == b'{"commands":[]}'
    first, second = rig.quotes
    assert (first.venue, first.symbol, first.bid, first.ask, first.venue_ts_ms) == (
        "mt5", "XAUUSD", 2650.11, 2650.31, 1_732_150_000_123)
    assert math.isinf(first.bid_size) and math.isinf(first.ask_size)
    assert first.recv_ns > 0 and second.symbol == "BTCUSD"
    health = rig.bridge.health("T1")
    assert health.ticks == 2 and health.last_tick_ns == first.recv_ns and health.last_seen_ns > 0
    assert rig.bridge.health("T2").ticks == 0


async def test_refused_requests_get_401_and_change_nothing(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    body = json.dumps({"ticks": [tick()]}).encode()
    before = state_of(rig)

    async def post(headers: dict[str, str]) -> httpx.Response:
        return await client.post("/mt5/tick", content=body, headers=headers)

    now = rig.clock.time_ms()
    wrong_secret = await post(signed_headers("POST", "/mt5/tick", body, clock=rig.clock, secret=b"wrong"))
    unknown_terminal = await post(signed_headers("POST", "/mt5/tick", body, clock=rig.clock, terminal="T9"))
    stale = await post(signed_headers("POST", "/mt5/tick", body, clock=rig.clock, ts=now - 31_000))
    future = await post(signed_headers("POST", "/mt5/tick", body, clock=rig.clock, ts=now + 31_000))
    tampered = await post(signed_headers("POST", "/mt5/tick", body + b" ", clock=rig.clock))
    missing = await post({})
    for resp in (wrong_secret, unknown_terminal, tampered, missing):
        assert (resp.status_code, resp.json()) == (401, {"error": "unauthorized", "reason": "signature"})
    assert wrong_secret.content == unknown_terminal.content
    for resp in (stale, future):
        assert (resp.status_code, resp.json()) == (401, {"error": "unauthorized", "reason": "timestamp"})
    assert state_of(rig) == before
    assert rig.quotes == []

    # A replay of an accepted request: refused, and the tick is not counted twice.
    good = signed_headers("POST", "/mt5/tick", body, clock=rig.clock)
    assert (await post(good)).status_code == 200
    after_first = state_of(rig)
    replay = await post(good)
    assert (replay.status_code, replay.json()["reason"]) == (401, "signature")
    assert state_of(rig) == after_first
    assert len(rig.quotes) == 1


async def test_signature_covers_the_query_string(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    headers = signed_headers("GET", "/mt5/commands?wait_ms=0", b"", clock=rig.clock)
    assert (await client.get("/mt5/commands?wait_ms=0", headers=headers)).status_code == 200
    headers = signed_headers("GET", "/mt5/commands?wait_ms=0", b"", clock=rig.clock, ts=rig.clock.time_ms() + 1)
    assert (await client.get("/mt5/commands?wait_ms=5", headers=headers)).status_code == 401
    headers = signed_headers("GET", "/mt5/commands", b"", clock=rig.clock, ts=rig.clock.time_ms() + 2)
    assert (await client.get("/mt5/commands", headers=headers)).status_code == 200


# ------------------------------------------------------------------------------------------------
# Size and validation


async def test_oversize_bodies_get_413(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    before = state_of(rig)
    big = b'{"ticks":[' + b" " * (MAX_BODY_BYTES) + b"]}"
    # Declared by Content-Length (even correctly signed).
    headers = signed_headers("POST", "/mt5/tick", big, clock=rig.clock)
    resp = await client.post("/mt5/tick", content=big, headers=headers)
    assert (resp.status_code, resp.json()) == (413, {"error": "body too large"})

    # Streamed without a length (chunked): counted while reading.
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with httpx.AsyncClient(base_url=str(client.base_url)) as fresh:
        resp = await fresh.post("/mt5/tick", content=chunks(), headers=signed_headers(
            "POST", "/mt5/tick", big, clock=rig.clock, ts=rig.clock.time_ms() + 1))
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413
    assert state_of(rig) == before

    # Exactly 64 KiB is not too large (it gets as far as validation).
    exact = b'{"ticks":[' + b" " * (MAX_BODY_BYTES - 12) + b"]}"
    assert len(exact) == MAX_BODY_BYTES
    resp = await Ea(client, rig.clock).request("POST", "/mt5/tick", exact)
    assert resp.status_code == 200, resp.text


async def test_malformed_bodies_get_422_with_field_errors(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    ea = Ea(client, rig.clock)
    before = state_of(rig)

    async def fields(method: str, path: str, body: bytes | dict[str, Any], terminal: str = "T1") -> dict[str, str]:
        resp = await Ea(client, rig.clock, terminal).request(method, path, body)
        assert resp.status_code == 422, resp.text
        payload = resp.json()
        assert payload["error"] == "invalid request"
        return {f["field"]: f["reason"] for f in payload["fields"]}

    got = await fields("POST", "/mt5/tick", {"ticks": [
        tick(bid=2650.5, ask=2650.4),
        tick(bid=-1.0),
        tick("EURUSD"),
        tick(ask=0.0),
        tick(time_msc=-5),
    ]})
    assert got == {
        "ticks[0].bid": "bid above ask (crossed quote)",
        "ticks[1].bid": "must be a finite number > 0",
        "ticks[2].symbol": "symbol not configured for terminal T1",
        "ticks[3].ask": "must be a finite number > 0",
        "ticks[4].time_msc": "must be an integer from 0 to 9223372036854775807",
    }
    # BTCUSD is configured for T1 only.
    assert await fields("POST", "/mt5/tick", {"ticks": [tick("BTCUSD")]}, "T2") == {
        "ticks[0].symbol": "symbol not configured for terminal T2"}
    assert await fields("POST", "/mt5/tick", b'{"ticks":[{"symbol":"XAUUSD","bid":1e999,"ask":1,"time_msc":1}]}') == {
        "ticks[0].bid": "number out of range"}
    as_string = {"ticks": [{"symbol": "XAUUSD", "bid": "2650.1", "ask": 1, "time_msc": 1}]}
    assert await fields("POST", "/mt5/tick", as_string) == {"ticks[0].bid": "expected number, got string"}
    assert await fields("POST", "/mt5/tick", {"ticks": [{"symbol": "XAUUSD", "ask": 1, "time_msc": 1}]}) == {
        "ticks[0].bid": "required field missing"}
    # Deliberately a float where the protocol wants an integer.
    assert await fields("POST", "/mt5/tick", {"ticks": [tick(time_msc=1.5)]}) == {  # type: ignore[arg-type]
        "ticks[0].time_msc": "expected integer, got number"}
    assert await fields("POST", "/mt5/tick", b"[1,2]") == {"body": "expected object, got array"}
    assert (await fields("POST", "/mt5/tick", b'{"ticks":[')).keys() == {"body"}
    nul = await fields("POST", "/mt5/tick", b'{"ticks":[]}\x00')
    assert "NUL" in nul["body"]
    assert await fields("POST", "/mt5/ack", {"command_id": "c-1", "status": "done", "retcode": 1, "reason": ""}) == {
        "status": "must be one of accepted, rejected, expired, unknown, got 'done'"}
    assert await fields("POST", "/mt5/ack", {"command_id": "c-1", "status": "accepted", "retcode": True,
                                              "reason": ""}) == {"retcode": "expected integer, got boolean"}
    assert await fields("POST", "/mt5/fill", {
        "command_id": "c-1", "deal": 0, "order": 1, "position": 1, "symbol": "XAUUSD", "side": "buy",
        "volume": 0, "price": 2650.0, "commission": 0, "time_msc": 1}) == {
        "deal": "must be an integer from 1 to 18446744073709551615", "volume": "must be a finite number > 0"}
    assert await fields("POST", "/mt5/fill", {
        "command_id": "c-1", "deal": 5, "order": 1, "position": 1, "symbol": "XAUUSD", "side": "sell",
        "volume": 0.1, "price": 2650.0, "commission": 0, "time_msc": 1}) == {"side": "command c-1 is a buy"}
    assert await fields("POST", "/mt5/account", {"balance": 1, "equity": 1, "margin_free": 1, "positions": [
        {"ticket": 1, "symbol": "XAUUSD", "type": "long", "volume": 1, "price_open": 1, "magic": 1}]}) == {
        "positions[0].type": "must be one of buy, sell, got 'long'"}
    for bad in ("-1", "abc", "1.5", "9" * 12):
        resp = await ea.request("GET", f"/mt5/commands?wait_ms={bad}")
        assert resp.status_code == 422 and resp.json()["fields"][0]["field"] == "wait_ms"
    assert state_of(rig) == before
    assert rig.quotes == []


async def test_deeply_nested_json_is_a_422_not_a_500(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    """2000 levels of nesting in a correctly signed body made msgspec raise RecursionError, which
    escaped as uvicorn's plain-text 500; it is a bad body like any other."""
    rig, _, client = live
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    ea = Ea(client, rig.clock)
    before = state_of(rig)
    deep = b"[" * 2000 + b"]" * 2000
    bodies = {
        "/mt5/tick": b'{"ticks":[],"x":' + deep + b"}",
        "/mt5/ack": b'{"command_id":"c-1","status":"accepted","retcode":10009,"reason":"","x":' + deep + b"}",
        "/mt5/fill": b'{"x":' + deep + b',"command_id":"c-1"}',
        "/mt5/account": b'{"balance":1,"equity":1,"margin_free":1,"positions":[],"x":' + deep + b"}",
    }
    for path, body in bodies.items():
        resp = await ea.request("POST", path, body)
        assert resp.status_code == 422, (path, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"error": "invalid request",
                               "fields": [{"field": "body", "reason": "nested too deeply"}]}
    assert state_of(rig) == before
    assert rig.quotes == []


async def test_unknown_commands_get_404_and_change_nothing(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    before = state_of(rig)
    ea, other = Ea(client, rig.clock), Ea(client, rig.clock, "T2")
    for resp in (await ea.ack("nope"), await ea.fill("nope", 1, 0.1), await other.ack("c-1"),
                 await other.fill("c-1", 1, 0.1)):
        assert (resp.status_code, resp.json()) == (404, {"error": "unknown command"})
    assert state_of(rig) == before


async def test_unknown_paths_and_methods_answer_json(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    _, _, client = live
    resp = await client.get("/nope")
    assert (resp.status_code, resp.json()) == (404, {"error": "not found"})
    resp = await client.post("/mt5/commands")
    assert resp.status_code == 405 and resp.json() == {"error": "method not allowed"}


async def test_head_does_not_serve_commands(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    before = state_of(rig)
    headers = signed_headers("HEAD", "/mt5/commands", b"", clock=rig.clock)
    resp = await client.head("/mt5/commands", headers=headers)
    assert resp.status_code == 405
    assert state_of(rig) == before
    assert held(rig.queue, "c-1").state is CommandState.PENDING


async def test_bad_content_length_is_a_400(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, server, _ = live
    before = state_of(rig)
    # On the wire (uvicorn's HTTP parser answers first) ...
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /mt5/tick HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n{}")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"400"
    # ... and in the app itself, for servers that pass it through.
    transport = httpx.ASGITransport(app=create_app(rig.bridge))
    async with httpx.AsyncClient(transport=transport, base_url="http://listener") as client:
        resp = await client.post("/mt5/tick", content=b"{}", headers={"content-length": "x"})
        assert (resp.status_code, resp.json()) == (400, {"error": "invalid content-length"})
        resp = await client.post("/mt5/tick", content=b"{}", headers={"content-length": str(10**6)})
        assert (resp.status_code, resp.json()) == (413, {"error": "body too large"})
    assert state_of(rig) == before


# ------------------------------------------------------------------------------------------------
# Commands


async def test_command_round_trip_through_the_gateway(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    ea = Ea(client, rig.clock)
    gateway = _gateway(rig)
    placing = asyncio.create_task(gateway.place(make_order("ord-1", "0.10")))

    # The command rides on the next tick answer, and again on the next poll until acked.
    commands = await ea.poll(wait_ms=1000)
    assert commands == [{
        "id": "ord-1", "group_id": "g-1", "kind": "open", "symbol": "XAUUSD", "side": "buy", "volume": 0.1,
        "price": 2650.31, "deviation_points": 20, "filling": "IOC", "magic": MAGIC, "position": 0,
        "expires_msc": commands[0]["expires_msc"],
    }]
    assert commands[0]["expires_msc"] > rig.clock.time_ms()
    redelivered = (await ea.tick(tick())).json()["commands"]
    assert [c["id"] for c in redelivered] == ["ord-1"]
    assert held(rig.queue, "ord-1").deliveries == 2
    assert rig.store.all()[0].state is CommandState.DELIVERED

    assert (await ea.ack("ord-1")).json() == {"ok": True}
    assert (await ea.ack("ord-1")).json() == {"ok": True, "duplicate": True}
    assert await ea.poll() == []
    assert (await ea.fill("ord-1", 1001, 0.04)).json() == {"ok": True}
    assert (await ea.fill("ord-1", 1001, 0.04)).json() == {"ok": True, "duplicate": True}
    assert not placing.done()
    assert (await ea.fill("ord-1", 1002, 0.06, 2650.40, commission=-0.42)).json() == {"ok": True}

    update = await asyncio.wait_for(placing, 5)
    assert update.state is OrderState.FILLED
    assert [(f.venue_trade_id, f.qty, f.price, f.fee) for f in update.fills] == [
        ("1001", Decimal("0.04"), Decimal("2650.35"), Decimal("0.35")),
        ("1002", Decimal("0.06"), Decimal("2650.4"), Decimal("0.42")),
    ]
    stored = rig.store.all()[0]
    assert stored.state is CommandState.ACCEPTED and [f.deal for f in stored.fills] == [1001, 1002]
    # Re-placing the same order sends nothing new.
    again = await asyncio.wait_for(gateway.place(make_order("ord-1", "0.10")), 2)
    assert again.state is OrderState.FILLED
    assert await ea.poll() == []


async def test_commands_ride_on_tick_answers(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    await rig.queue.enqueue(make_command("c-2", terminal="T2", expires_msc=rig.clock.time_ms() + 60_000))
    resp = await Ea(client, rig.clock).tick(tick())
    assert [c["id"] for c in resp.json()["commands"]] == ["c-1"]
    resp = await Ea(client, rig.clock, "T2").tick()
    assert [c["id"] for c in resp.json()["commands"]] == ["c-2"]


async def test_long_poll_returns_when_a_command_arrives(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    ea = Ea(client, rig.clock)
    assert await ea.poll(wait_ms=0) == []
    polling = asyncio.create_task(ea.poll(wait_ms=1000))
    await asyncio.sleep(0.05)
    await rig.queue.enqueue(make_command("c-1", expires_msc=rig.clock.time_ms() + 60_000))
    assert [c["id"] for c in await asyncio.wait_for(polling, 5)] == ["c-1"]
    # A long wait is capped at one second.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await Ea(client, rig.clock, "T2").poll(wait_ms=60_000) == []
    assert loop.time() - started < 5


async def test_expiry_path(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    ea = Ea(client, rig.clock)
    gateway = _gateway(rig, ttl_ms=300, grace_ms=100)
    placing = asyncio.create_task(gateway.place(make_order("ord-9")))
    assert [c["id"] for c in await ea.poll(wait_ms=1000)] == ["ord-9"]
    update = await asyncio.wait_for(placing, 5)  # the EA had it and never answered
    assert update.state is OrderState.UNKNOWN  # it may be executing: never guess "expired"
    assert await ea.poll() == []
    assert rig.store.all()[0].state is CommandState.EXPIRED
    # The EA's late ack settles what was unknown: it executed (the fills will follow). The
    # state stays expired (final states do not change); a query now says acknowledged.
    assert (await ea.ack("ord-9")).json() == {"ok": True}
    assert held(rig.queue, "ord-9").state is CommandState.EXPIRED
    assert (await gateway.query(make_order("ord-9"))).state is OrderState.ACKED
    # A repeat changes nothing more.
    assert (await ea.ack("ord-9")).json() == {"ok": True, "duplicate": True}


async def test_account_report_keeps_our_positions(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    resp = await Ea(client, rig.clock).request("POST", "/mt5/account", {
        "balance": 10000.0, "equity": 10012.5, "margin_free": 9500.25, "positions": [
            {"ticket": 789, "symbol": "XAUUSD", "type": "buy", "volume": 0.1, "price_open": 2650.35, "magic": MAGIC},
            {"ticket": 790, "symbol": "EURUSD", "type": "sell", "volume": 1, "price_open": 1.05, "magic": 1},
        ]})
    assert resp.json() == {"ok": True}
    account = rig.bridge.account("T1")
    assert account is not None and (account.balance, account.equity, account.margin_free) == (10000.0, 10012.5, 9500.25)
    [position] = account.positions
    assert (position.ticket, position.side, position.volume, position.price_open) == (
        789, "buy", Decimal("0.1"), Decimal("2650.35"))
    assert rig.bridge.health("T1").account == account
    assert rig.bridge.account("T2") is None


async def test_healthz(live: tuple[Rig, EmbeddedServer, httpx.AsyncClient]) -> None:
    rig, _, client = live
    for status in ("ok", "degraded", "halted"):
        rig.status[0] = status
        resp = await client.get("/healthz")
        assert (resp.status_code, resp.content) == (200, b'{"status":"%s"}' % status.encode())
    rig.status[0] = "something else"
    assert (await client.get("/healthz")).json() == {"status": "degraded"}


# ------------------------------------------------------------------------------------------------
# Property tests, in process
#
# Each request is mostly a near-valid body for its endpoint (a valid one, or one with a field
# replaced by an arbitrary JSON value or removed), sometimes anything at all; mostly signed
# correctly, sometimes with a stale or future timestamp, sometimes with garbage headers. A
# sequence of up to four requests also covers duplicates, replays and conflicts (two T1
# commands share deal numbers 1 to 3). Every answer is < 500; every refusal changes nothing.

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=12)
_POSITIVE = st.floats(min_value=0.01, max_value=3000, allow_nan=False)

_VALID_TICK = st.builds(
    lambda symbol, bid, spread, ts: {"symbol": symbol, "bid": bid, "ask": bid + spread, "time_msc": ts},
    st.sampled_from(["XAUUSD", "BTCUSD"]), _POSITIVE, st.floats(0, 5), st.integers(0, 2**40))
_VALID = {
    "/mt5/tick": st.builds(lambda ticks: {"ticks": ticks}, st.lists(_VALID_TICK, max_size=3)),
    "/mt5/ack": st.fixed_dictionaries({
        "command_id": st.sampled_from(["c-1", "c-2", "c-3", "nope"]),
        "status": st.sampled_from(["accepted", "rejected", "expired"]),
        "retcode": st.sampled_from([0, 10009, 10010, 10006]), "reason": st.text(max_size=8)}),
    "/mt5/fill": st.fixed_dictionaries({
        "command_id": st.sampled_from(["c-1", "c-1", "c-3", "c-2", "nope"]), "deal": st.integers(1, 3),
        "order": st.integers(0, 9), "position": st.integers(0, 9),
        "symbol": st.sampled_from(["XAUUSD", "XAUUSD", "XAUUSD", "BTCUSD"]),
        "side": st.sampled_from(["buy", "buy", "buy", "sell"]), "volume": _POSITIVE, "price": _POSITIVE,
        "commission": st.floats(-5, 5), "time_msc": st.integers(0, 2**40)}),
    "/mt5/account": st.fixed_dictionaries({
        "balance": st.floats(-1e6, 1e6), "equity": st.floats(-1e6, 1e6), "margin_free": st.floats(-1e6, 1e6),
        "positions": st.lists(st.fixed_dictionaries({
            "ticket": st.integers(1, 9), "symbol": st.sampled_from(["XAUUSD", "EURUSD"]),
            "type": st.sampled_from(["buy", "sell"]), "volume": _POSITIVE, "price_open": _POSITIVE,
            "magic": st.sampled_from([MAGIC, 1])}), max_size=2)}),
}


@st.composite
def _mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body with one field (at the top or in the first list entry) replaced or removed."""
    body = draw(valid)
    target: dict[str, Any] = body
    for key in ("ticks", "positions"):
        if isinstance(body.get(key), list) and body[key] and draw(st.booleans()):
            target = body[key][0]
    if target:
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(_VALUES)
    return body


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _deeply_nested(valid: bytes, depth: int, objects: bool) -> bytes:
    """A valid body with one more (unknown) field nested `depth` levels deep: past ~1000 levels
    msgspec's decoder raises RecursionError while skipping it."""
    opener, closer = (b'{"a":', b"}") if objects else (b"[", b"]")
    return valid[:-1] + b',"x":' + opener * depth + b"0" + closer * depth + b"}"


_ANY_BODY = st.one_of(st.binary(max_size=200), _VALUES.map(_dumps))
_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=70)
_GARBAGE_HEADERS = st.dictionaries(
    st.sampled_from(["X-QA-Terminal", "X-QA-Timestamp", "X-QA-Signature", "X-Other"]), _HEADER_TEXT, max_size=4)
_QUERY = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?%"), max_size=6)

Auth = dict[str, str] | tuple[str, int]


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, bytes, Auth]:
    shape = draw(st.integers(0, 9))
    if shape <= 6:
        method, path = "POST", draw(st.sampled_from(sorted(_VALID)))
        valid = _VALID[path]
        body_shape = draw(st.integers(0, 6))
        if body_shape <= 2:
            body = _dumps(draw(valid))
        elif body_shape == 3:
            body = _dumps(draw(_mutated(valid)))
        elif body_shape == 4:
            body = draw(_ANY_BODY)
        elif body_shape == 5:
            body = _dumps(draw(valid)) + b"\x00"
        else:
            body = _deeply_nested(_dumps(draw(valid)), draw(st.integers(1000, 3000)), draw(st.booleans()))
    elif shape == 7:
        method = "GET"
        path = draw(st.one_of(st.just("/mt5/commands"), st.sampled_from(["0", "1", "-1", "x", ""]).map(
            lambda q: "/mt5/commands?wait_ms=" + q), _QUERY.map(lambda q: "/mt5/commands?wait_ms=" + q)))
        body = draw(st.one_of(st.just(b""), _ANY_BODY))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        path = draw(st.sampled_from(["/mt5/tick", "/mt5/commands", "/mt5/ack", "/mt5/fill", "/mt5/account",
                                     "/healthz", "/mt5/x", "/"]))
        body = draw(_ANY_BODY)
    auth_shape = draw(st.integers(0, 5))
    auth: Auth
    if auth_shape <= 3:
        auth = (draw(st.sampled_from(["T1", "T1", "T2"])), 0)
    elif auth_shape == 4:
        auth = (draw(st.sampled_from(["T1", "T2", "T9"])), draw(st.sampled_from([1, 30_000, -30_001, 45_000])))
    else:
        auth = draw(_GARBAGE_HEADERS)
    return method, path, body, auth


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_requests(), min_size=1, max_size=4))
def test_arbitrary_requests_never_5xx_and_refusals_change_nothing(requests: list[tuple[str, str, bytes, Auth]]) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        rig = make_rig(clock)
        far = clock.time_ms() + 3_600_000
        await rig.queue.enqueue(make_command("c-1", expires_msc=far))
        await rig.queue.enqueue(make_command("c-2", terminal="T2", expires_msc=far))
        await rig.queue.enqueue(make_command("c-3", expires_msc=far))
        app = create_app(rig.bridge)
        previous: dict[str, str] = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://listener") as client:
            for i, (method, path, body, auth) in enumerate(requests):
                if isinstance(auth, tuple):
                    terminal, offset = auth
                    headers = signed_headers(method, path, body, clock=clock, terminal=terminal,
                                             ts=clock.time_ms() + offset)
                    if i and requests[i - 1] == requests[i]:
                        headers = previous  # the same signed request again: a replay
                else:
                    headers = auth
                previous = headers
                before = state_of(rig)
                resp = await client.request(method, path, content=body, headers=headers)
                event(f"{method} {path.split('?')[0]} -> {resp.status_code}")
                assert resp.status_code < 500, (resp.status_code, resp.text)
                payload = resp.json()
                if resp.status_code == 401:
                    assert payload in ({"error": "unauthorized", "reason": "signature"},
                                       {"error": "unauthorized", "reason": "timestamp"})
                if resp.status_code == 422:
                    assert payload["error"] == "invalid request" and payload["fields"]
                if resp.status_code != 200:
                    assert state_of(rig) == before, (method, path, body, resp.status_code, resp.text)
                elif isinstance(payload, dict) and payload.get("duplicate"):
                    assert state_of(rig) == before  # an ignored duplicate changes nothing either
                clock.advance(ms=1)

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(_ANY_BODY, _VALID["/mt5/tick"].map(_dumps)), headers=_GARBAGE_HEADERS,
       path=st.sampled_from(["/mt5/tick", "/mt5/commands", "/mt5/ack", "/mt5/fill", "/mt5/account"]),
       method=st.sampled_from(["GET", "POST"]))
def test_unsigned_requests_are_always_refused(body: bytes, headers: dict[str, str], path: str, method: str) -> None:
    async def scenario() -> None:
        rig = make_rig(ManualClock())
        await rig.queue.enqueue(make_command("c-1"))
        before = state_of(rig)
        app = create_app(rig.bridge)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://listener") as client:
            resp = await client.request(method, path, content=body, headers=headers)
            assert resp.status_code in (401, 405)
        assert state_of(rig) == before

    asyncio.run(scenario())
