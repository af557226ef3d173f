"""The EA simulator over real HTTP on loopback, against a minimal listener written here.

The listener (Starlette on uvicorn, 127.0.0.1, ephemeral port) is not quantarb's: it checks
every request's signature with its own HMAC computation (and refuses replays and stale
timestamps), serves commands until they are acknowledged, can keep re-serving them after the
ack, and can fail acks with 503. The EA simulator must execute each command exactly once and
deliver its ack and fill, also when it is restarted in the middle of a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.clock import RealClock
from sim.ea_sim import EaSimulator, MarketTickSource, Mt5Tick
from sim.mt5_broker import TRADE_RETCODE_DONE, BrokerBehaviour, SimBroker
from sim.mt5_sim_cli import run_mt5_sim

SECRET = b"integration-secret"
TERMINAL = "T1"
MAGIC = 7701
T = 5.0  # bound on every wait


@dataclass
class Listener:
    """State of the fake listener."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=dict)
    seen_signatures: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    requests: int = 0
    resend_after_ack: int = 0  # serve each command this many more times after its ack
    fail_acks: bool = False

    def check(self, method: str, path: str, body: bytes, headers: Any) -> str | None:
        ts = headers.get("x-qa-timestamp", "")
        sig = headers.get("x-qa-signature", "")
        if headers.get("x-qa-terminal") != TERMINAL or not ts.isdigit():
            return "headers"
        if abs(int(ts) - time.time_ns() // 1_000_000) > 30_000:
            return "timestamp"
        want = hmac.new(SECRET, ts.encode() + b"\n" + method.encode() + b"\n" + path.encode() + b"\n" + body,
                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            return "signature"
        if sig in self.seen_signatures:
            return "replay"
        self.seen_signatures.add(sig)
        return None

    def pending(self) -> list[dict[str, Any]]:
        out = []
        for cmd in self.commands:
            cid = cmd["id"]
            if cid in self.acked:
                if self.resend_after_ack <= 0:
                    continue
                self.resend_after_ack -= 1
            self.deliveries[cid] = self.deliveries.get(cid, 0) + 1
            out.append(cmd)
        return out

    def unique_fills(self) -> dict[int, dict[str, Any]]:
        unique: dict[int, dict[str, Any]] = {}
        for fill in self.fills:
            assert unique.setdefault(fill["deal"], fill) == fill, "the same deal reported with other values"
        return unique

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> JSONResponse:
            body = await request.body()
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            why = self.check(request.method, path, body, request.headers)
            self.requests += 1
            if why is not None:
                self.refused.append(f"{why} {request.method} {path}")
                return JSONResponse({"error": "unauthorized", "reason": why}, status_code=401)
            route = request.url.path
            data = json.loads(body) if body else {}
            if route == "/mt5/tick":
                self.ticks.extend(data["ticks"])
                return JSONResponse({"commands": self.pending()})
            if route == "/mt5/commands":
                return JSONResponse({"commands": self.pending()})
            if route == "/mt5/ack":
                if self.fail_acks:
                    return JSONResponse({"error": "unavailable"}, status_code=503)
                self.acks.append(data)
                self.acked.setdefault(data["command_id"], data)
            elif route == "/mt5/fill":
                self.fills.append(data)
            elif route == "/mt5/account":
                self.accounts.append(data)
            return JSONResponse({"ok": True})

        paths = ["/mt5/tick", "/mt5/commands", "/mt5/ack", "/mt5/fill", "/mt5/account"]
        return Starlette(routes=[Route(p, endpoint, methods=["GET", "POST"]) for p in paths])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # leave the test runner's signal handlers alone


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Listener, str]]:
    state = Listener()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(state.app(), log_config=None, lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started)
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, T)
        sock.close()


class Book:
    """A fixed quote for the broker and the EA (it does not change: the EA polls)."""

    def __init__(self) -> None:
        self.quotes = {"XAUUSD": (2650.11, 2650.31)}
        self.time_msc = time.time_ns() // 1_000_000

    def touch(self, symbol: str) -> tuple[float, float] | None:
        return self.quotes.get(symbol)

    def __call__(self) -> list[Mt5Tick]:
        return [Mt5Tick(s, b, a, self.time_msc) for s, (b, a) in self.quotes.items()]


def open_command(cid: str = "o-1", ttl_ms: int = 5000) -> dict[str, Any]:
    return {"id": cid, "group_id": "g-1", "kind": "open", "symbol": "XAUUSD", "side": "buy", "volume": 0.1,
            "price": 2650.31, "deviation_points": 20, "filling": "IOC", "magic": MAGIC, "position": 0,
            "expires_msc": time.time_ns() // 1_000_000 + ttl_ms}


def make_ea(url: str, broker: SimBroker, book: Book, **kw: Any) -> EaSimulator:
    kw.setdefault("timer_ms", 20)
    return EaSimulator(url, TERMINAL, SECRET, ["XAUUSD"], broker, book, RealClock(), magic=MAGIC,
                       account_every_s=0.2, **kw)


async def until(cond: Callable[[], bool], within: float = T) -> None:
    """Poll every 10 ms until `cond()` holds (the fake listener has no events to wait on)."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within:g}s")
        await asyncio.sleep(0.01)


async def test_ticks_account_and_a_command_over_real_http(listener: tuple[Listener, str]) -> None:
    state, url = listener
    book = Book()
    broker = SimBroker(book.touch, seed=1, behaviour=BrokerBehaviour(commission_per_lot=7.0))
    ea = make_ea(url, broker, book, fill_latency_ms=(5, 15))
    task = asyncio.create_task(ea.run())
    await until(lambda: bool(state.ticks) and bool(state.accounts))
    state.commands.append(open_command())
    await until(lambda: "o-1" in state.acked and bool(state.fills))
    await ea.stop()
    await task
    [deal] = broker.history_deals()
    assert state.acked["o-1"] == {"command_id": "o-1", "status": "accepted", "retcode": TRADE_RETCODE_DONE,
                                  "reason": ""}
    assert list(state.unique_fills()) == [deal.ticket]
    assert state.fills[0]["position"] == broker.positions()[0].ticket
    assert state.ticks[0]["symbol"] == "XAUUSD"
    assert state.refused == [] and ea.http_errors == 0
    assert ea.executed == 1 and ea.polls > 0


async def test_command_served_again_and_again_is_executed_once(listener: tuple[Listener, str]) -> None:
    state, url = listener
    state.resend_after_ack = 8
    state.commands.append(open_command())
    book = Book()
    broker = SimBroker(book.touch, seed=1)
    ea = make_ea(url, broker, book)
    task = asyncio.create_task(ea.run())
    await until(lambda: state.resend_after_ack == 0 and len(state.acks) >= 9)
    await ea.stop()
    await task
    assert state.deliveries["o-1"] >= 9
    assert broker.requests == 1 and len(broker.history_deals()) == 1
    assert ea.executed == 1 and ea.duplicates_skipped >= 8
    assert len({json.dumps(a, sort_keys=True) for a in state.acks}) == 1
    assert list(state.unique_fills()) == [broker.history_deals()[0].ticket]
    assert state.refused == []


async def test_restart_after_execution_reports_and_never_executes_again(listener: tuple[Listener, str]) -> None:
    state, url = listener
    state.fail_acks = True  # the EA executes, then cannot get its ack through
    state.commands.append(open_command(ttl_ms=10_000))
    book = Book()
    broker = SimBroker(book.touch, seed=1)
    first = make_ea(url, broker, book)
    first_task = asyncio.create_task(first.run())
    await until(lambda: len(broker.history_deals()) == 1 and first.pending_reports > 0)
    first_task.cancel()  # the EA dies mid-command: no ack delivered
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    assert state.acked == {}

    state.fail_acks = False
    second = make_ea(url, broker, book)  # a new EA on the same terminal and account
    second_task = asyncio.create_task(second.run())
    await until(lambda: "o-1" in state.acked and bool(state.fills))
    await asyncio.sleep(0.2)  # more timer events: nothing more may happen
    await second.stop()
    await second_task
    [deal] = broker.history_deals()
    assert broker.requests == 1
    assert second.executed == 0 and second.duplicates_skipped >= 1
    assert state.acked["o-1"]["status"] == "accepted"
    assert list(state.unique_fills()) == [deal.ticket]
    assert state.deliveries["o-1"] >= 2
    assert state.refused == []


async def test_restart_before_execution_executes_exactly_once(listener: tuple[Listener, str]) -> None:
    state, url = listener
    state.commands.append(open_command(ttl_ms=10_000))
    book = Book()
    broker = SimBroker(book.touch, seed=1)
    first = make_ea(url, broker, book, fill_latency_ms=(2000, 2000))  # stuck in "OrderSend"
    first_task = asyncio.create_task(first.run())
    await until(lambda: first.commands_seen >= 1)
    first_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    assert broker.requests == 0

    second = make_ea(url, broker, book)
    second_task = asyncio.create_task(second.run())
    await until(lambda: "o-1" in state.acked and bool(state.fills))
    await second.stop()
    await second_task
    assert broker.requests == 1 and second.executed == 1
    assert list(state.unique_fills()) == [broker.history_deals()[0].ticket]


async def test_run_mt5_sim_summary_and_state_file(listener: tuple[Listener, str], tmp_path: Path) -> None:
    state, url = listener
    state_file = tmp_path / "mt5-sim.json"
    # A buy limited at 10 000 000: any BTC ask of the synthetic market is better (the EA refuses
    # a command whose price the market has moved beyond).
    state.commands.append({**open_command(ttl_ms=10_000), "symbol": "BTCUSD", "volume": 0.01, "price": 1e7})
    summary = await run_mt5_sim(url, TERMINAL, SECRET, duration_s=1.0, state_file=state_file, seed=3, timer_ms=20)
    assert summary["terminal"] == TERMINAL and not summary["cancelled"]
    assert summary["ticks_sent"] > 0 and summary["executed"] == 1 and summary["deals"] == 1
    assert summary["http_errors"] == 0 and state.refused == []
    assert sorted({t["symbol"] for t in state.ticks}) == ["BTCUSD", "ETHUSD", "XAUUSD"]
    assert state.acked[state.commands[0]["id"]]["status"] == "accepted"
    assert state_file.exists()
    # a restarted `quantarb mt5 sim` keeps the account and does not execute the command again
    state.acked.clear()
    again = await run_mt5_sim(url, TERMINAL, SECRET, duration_s=0.5, state_file=state_file, seed=3, timer_ms=20)
    assert again["executed"] == 0 and again["deals"] == 1 and again["open_positions"] == 1
    assert again["duplicates_skipped"] >= 1


async def test_run_mt5_sim_stops_on_cancellation(listener: tuple[Listener, str]) -> None:
    _, url = listener
    task = asyncio.create_task(run_mt5_sim(url, TERMINAL, SECRET, seed=3, timer_ms=20))
    await asyncio.sleep(0.3)
    task.cancel()
    summary = await asyncio.wait_for(task, T)
    assert summary["cancelled"] and summary["ticks_sent"] > 0


def test_market_source_runs_with_a_real_clock() -> None:
    source = MarketTickSource(seed=1, clock=RealClock(), symbols=["XAUUSD"])
    assert [t.symbol for t in source()] == ["XAUUSD"]
