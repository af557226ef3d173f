"""`quantarb sim world`: the rehearsal world as separate processes on loopback.

The world prints `ready` once every part answered, writes a live-mode config and its secrets
(`<config>.env`, 0600), quotes one market from every process (checked exactly against the same
seeded market computed here), feeds the MT5 listener port with ticks signed by the env file's
secret (and keeps at it across a listener restart), stops every child on SIGTERM, and ends
non-zero naming the child that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sim.epoch_market import EpochMarket, world_pairs
from sim.world_cli import WorldOptions, run_world
from tests.waiting import until
from tests.world_support import RunningWorld, alive, base_env, start_world

T = 20.0  # bound on every wait for a process

SECRET_NAMES = {
    "QUANTARB_OKX_API_KEY", "QUANTARB_OKX_API_SECRET", "QUANTARB_OKX_API_PASSPHRASE", "QUANTARB_BINANCE_API_KEY",
    "QUANTARB_BINANCE_API_SECRET", "QUANTARB_ADMIN_TOKEN", "QUANTARB_MT5_SECRET_T1",
}
TIME_PATHS = {"okx": "/api/v5/public/time", "binance-spot": "/api/v3/time", "binance-usdm": "/fapi/v1/time"}

Book = dict[tuple[str, str, int], tuple[float, float]]


def model_book(world: RunningWorld, until_ms: int) -> Book:
    """Every quote the world's market gave up to `until_ms`, by (venue, symbol, ts_ms)."""
    market = EpochMarket(world_pairs(), seed=int(world.info["seed"]), epoch_ms=int(world.info["epoch_ms"]))
    book: Book = {(t.venue, t.symbol, t.ts_ms): (t.bid, t.ask) for t in market.quotes()}
    while market.steps < market.step_at(until_ms):
        for t in market.step():
            book[(t.venue, t.symbol, t.ts_ms)] = (t.bid, t.ask)
    return book


def wait_until(cond: Callable[[], bool], what: str, within: float = T) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        time.sleep(0.05)


def config_check(world: RunningWorld, tmp_path: Path, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**world.env, "HOME": str(tmp_path), **dict(extra_env)}
    return subprocess.run([sys.executable, "-m", "quantarb_tui.cli", "config", "check", str(world.config), "--json"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False)


@pytest.fixture
def world(tmp_path: Path) -> Generator[RunningWorld, None, None]:
    running = start_world(tmp_path)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


def test_world_is_ready_with_its_files_and_one_market(world: RunningWorld, tmp_path: Path) -> None:
    # The files: config next to the env file, which is private from its first byte.
    assert world.config == tmp_path / "world.toml" and world.config.is_file()
    assert world.env_file == tmp_path / "world.toml.env"
    assert stat.S_IMODE(world.env_file.stat().st_mode) == 0o600
    assert set(world.secrets) == SECRET_NAMES
    assert len(set(world.secrets.values())) == len(SECRET_NAMES)  # a fresh value each
    assert all(len(v) >= 40 for v in world.secrets.values())
    config_text = world.config.read_text()
    assert 'execution = "live"' in config_text
    assert f'ledger = "{tmp_path / "world.db"}"' in config_text
    assert f"port = {world.info['listener'].rsplit(':', 1)[1]}" in config_text

    # It loads as written: a live config whose secrets are all there.
    checked = config_check(world, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    live = json.loads(checked.stdout)
    assert live["execution"] == "live" and live["venues"] == ["mt5", "okx", "binance"]
    assert {s["variable"] for s in live["secrets"] if s["present"]} == SECRET_NAMES
    assert live["errors"] == []

    with httpx.Client(timeout=5, trust_env=False) as client:
        for name, path in TIME_PATHS.items():
            answer = client.get(world.url(name) + path)
            assert answer.status_code == 200, (name, answer.text)
        time.sleep(1.0)  # the market moves on: the quotes below are not the epoch's snapshot
        okx = {s: client.get(world.url("okx") + "/api/v5/market/ticker", params={"instId": s}).json()["data"][0]
               for s in ("XAUT-USDT-SWAP", "BTC-USDT-SWAP", "ETH-USDT-SWAP")}
        usdm = {s: client.get(world.url("binance-usdm") + "/fapi/v1/ticker/bookTicker", params={"symbol": s}).json()
                for s in ("PAXGUSDT", "BTCUSDT", "ETHUSDT")}
        spot = {s: client.get(world.url("binance-spot") + "/api/v3/ticker/bookTicker", params={"symbol": s}).json()
                for s in ("PAXGUSDT", "BTCUSDT", "ETHUSDT")}
    book = model_book(world, int(time.time() * 1000))

    # Each venue's quote is exactly the shared market's quote of its instrument at its time.
    for symbol, ticker in okx.items():
        assert int(ticker["ts"]) > int(world.info["epoch_ms"]), symbol
        assert book[("okx", symbol, int(ticker["ts"]))] == (float(ticker["bidPx"]), float(ticker["askPx"])), symbol
    for symbol, ticker in usdm.items():
        assert book[("binance", symbol, ticker["time"])] == (float(ticker["bidPrice"]), float(ticker["askPrice"]))
    # Spot's bookTicker carries no time: its touch is one the market gave that symbol.
    for symbol, ticker in spot.items():
        touch = (float(ticker["bidPrice"]), float(ticker["askPrice"]))
        assert any(k[:2] == ("binance", symbol) and v == touch for k, v in book.items()), symbol

    # And so the venues agree on each asset (the dislocations, 20-45 bps, are the edges).
    mids: dict[str, list[float]] = {}
    for pair, (o, u, s) in {"XAU": ("XAUT-USDT-SWAP", "PAXGUSDT", "PAXGUSDT"),
                            "BTC": ("BTC-USDT-SWAP", "BTCUSDT", "BTCUSDT"),
                            "ETH": ("ETH-USDT-SWAP", "ETHUSDT", "ETHUSDT")}.items():
        mids[pair] = [(float(okx[o]["bidPx"]) + float(okx[o]["askPx"])) / 2,
                      (float(usdm[u]["bidPrice"]) + float(usdm[u]["askPrice"])) / 2,
                      (float(spot[s]["bidPrice"]) + float(spot[s]["askPrice"])) / 2]
    for pair, values in mids.items():
        assert (max(values) - min(values)) / min(values) < 0.01, (pair, values)

    # No secret reached the world's output.
    assert world.stop() == 0
    output = "\n".join(world.stdout_lines(T)) + world.stderr()
    assert not [name for name, value in world.secrets.items() if value in output]


def test_headless_on_paper_finds_and_hedges_the_worlds_edges(world: RunningWorld, tmp_path: Path) -> None:
    """The world's config, with execution overridden to paper until live lands: the engine's feeds
    and listener come up on the world's URLs and its shared market's dislocations become groups
    (seed 7 dislocates 4.1, 6.2, 7.7, 8.6 and 9.0 s after the epoch: inside this run)."""
    env = {**world.env, "HOME": str(tmp_path), "QUANTARB_ENGINE__EXECUTION": "paper"}
    result = subprocess.run([sys.executable, "-m", "quantarb_tui.cli", "headless", "--config", str(world.config),
                             "--duration", "10"], capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path,
                            check=False)
    assert result.returncode == 0, result.stderr
    started = next(line for line in result.stdout.splitlines() if "engine started:" in line)
    assert "mode=paper" in started and "feeds=okx,binance-usdm" in started
    assert f"listener={world.info['listener']}" in started
    summary = next(line for line in result.stdout.splitlines() if line.startswith("summary "))
    fields = dict(token.split("=", 1) for token in summary.split() if "=" in token)
    assert int(fields["intents"]) >= 1 and int(fields["hedged"]) >= 1, summary  # "groups hedged=N"
    assert not [v for v in world.secrets.values() if v in result.stdout + result.stderr]


def test_sigterm_stops_every_child_and_keeps_the_files(world: RunningWorld) -> None:
    pids = world.pids
    assert set(pids) == {"okx", "binance-spot", "binance-usdm", "mt5"}
    assert all(alive(pid) for pid in pids.values())
    assert world.stop() == 0
    assert "stopped" in world.stdout_lines(T)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), "every child gone")
    assert world.config.is_file() and world.env_file.is_file()


def test_a_child_that_dies_ends_the_world_naming_it(world: RunningWorld) -> None:
    pids = world.pids
    os.kill(pids["binance-spot"], signal.SIGKILL)
    assert world.proc.wait(timeout=T) == 3
    assert f"world: binance-spot (pid {pids['binance-spot']}) exited with code -9; stopping the world" in world.stderr()
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), "every child gone")


def test_a_killed_world_takes_its_children_along(world: RunningWorld) -> None:
    pids = world.pids
    world.proc.kill()
    world.proc.wait(timeout=T)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), "every child gone after the world's SIGKILL")


def test_a_second_run_writes_fresh_secrets_and_warns_about_the_old_ledger(tmp_path: Path) -> None:
    first = start_world(tmp_path)
    assert first.stop() == 0
    assert "is from an earlier run" not in first.stderr()
    (tmp_path / "world.db").write_bytes(b"")  # what the engine left from the first rehearsal
    second = start_world(tmp_path)
    try:
        assert second.config == first.config
        assert set(second.secrets) == set(first.secrets)
        assert not set(second.secrets.values()) & set(first.secrets.values())
        assert stat.S_IMODE(second.env_file.stat().st_mode) == 0o600
        assert f"world: the ledger {tmp_path / 'world.db'} is from an earlier run" in second.stderr()
    finally:
        assert second.stop() == 0


async def test_a_part_that_dies_before_it_is_ready_fails_the_start_naming_it(tmp_path: Path) -> None:
    said: list[str] = []
    opts = WorldOptions(config_out=tmp_path / "w.toml", python="/bin/false")  # every part exits 1 at once
    code = await asyncio.wait_for(run_world(opts, out=said.append, err=said.append, stop=asyncio.Event()), T)
    assert code == 3
    failures = [line for line in said if line.startswith("world: ")]
    assert len(failures) == 1 and " exited with code 1 before it was ready" in failures[0]
    assert failures[0].removeprefix("world: ").split(" ")[0] in {"okx", "binance-spot", "binance-usdm", "mt5"}
    assert not any(line.startswith("ready") for line in said)
    assert not (tmp_path / "w.toml").exists() and not (tmp_path / "w.toml.env").exists()


async def test_parts_that_never_answer_fail_the_start_in_time_and_are_stopped(tmp_path: Path) -> None:
    silent = tmp_path / "silent"
    marker = f"silent-{os.getpid()}-{tmp_path.name}"
    silent.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import time; time.sleep(60)" {marker} "$@"\n')
    silent.chmod(0o755)
    said: list[str] = []
    opts = WorldOptions(config_out=tmp_path / "w.toml", python=str(silent), startup_timeout_s=3.0, stop_grace_s=2.0)
    world_pids: list[int] = []

    def note(line: str) -> None:
        said.append(line)

    task = asyncio.ensure_future(run_world(opts, out=note, err=note, stop=asyncio.Event()))
    await until(lambda: len(_sleepers(marker)) == 4, "the silent parts started", within=T, poll=0.05)  # scans /proc
    world_pids.extend(_sleepers(marker))
    assert await asyncio.wait_for(task, T) == 3
    assert "world: not ready within 3 s: okx, binance-spot, binance-usdm, mt5" in said
    assert said[-1] == "stopped"
    await until(lambda: not any(alive(pid) for pid in world_pids), "the silent parts stopped", within=T)


def _sleepers(marker: str) -> list[int]:
    """Pids of the live processes whose command line carries `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes().split(b"\0") and alive(int(entry.name)):
                    pids.append(int(entry.name))
    return pids


def test_refuses_a_config_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "quantarb_tui.cli", "sim", "world", "--config-out",
                             str(tmp_path / "nope" / "w.toml")], capture_output=True, text=True, timeout=60,
                            env=base_env(), check=False)
    assert result.returncode == 2
    assert f"the folder {tmp_path / 'nope'} does not exist" in result.stderr
    assert "ready" not in result.stdout


def test_spot_config_lists_the_spot_markets_filters(tmp_path: Path) -> None:
    running = start_world(tmp_path, "--binance", "spot")
    try:
        text = running.config.read_text()
        assert 'market = "spot"' in text
        assert f'ws_api_url = "ws{running.url("binance-spot").removeprefix("http")}/ws-api/v3"' in text
        assert "user_stream_url" not in text
        assert 'lot_step = "0.00001"' in text  # BTCUSDT's spot step, not the USD-M one
    finally:
        assert running.stop() == 0


# ------------------------------------------------------------------ the MT5 terminal


@dataclass
class TickSink:
    """The listener port the EA calls: records signed tick posts, answers with no commands."""

    posts: list[tuple[dict[str, str], str, bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> JSONResponse:
            body = await request.body()
            if request.url.path == "/mt5/tick":
                self.posts.append((dict(request.headers), request.url.path, body))
            polled = request.url.path in ("/mt5/tick", "/mt5/commands")
            return JSONResponse({"commands": []} if polled else {"ok": True})

        paths = ["/mt5/tick", "/mt5/commands", "/mt5/ack", "/mt5/fill", "/mt5/account"]
        return Starlette(routes=[Route(p, endpoint, methods=["GET", "POST"]) for p in paths])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # leave the test runner's signal handlers alone


@contextlib.asynccontextmanager
async def serving(sink: TickSink, port: int) -> AsyncIterator[None]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = _Server(uvicorn.Config(sink.app(), log_config=None, lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, T)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_terminal_posts_the_shared_market_signed_and_outlives_a_listener_restart(tmp_path: Path) -> None:
    port = free_port()
    running = await asyncio.to_thread(start_world, tmp_path, "--listener-port", str(port))
    try:
        assert running.info["listener"] == f"http://127.0.0.1:{port}"
        secret = running.secrets["QUANTARB_MT5_SECRET_T1"].encode()
        first, second = TickSink(), TickSink()
        async with serving(first, port):  # the engine comes up after the world
            await until(lambda: len(first.posts) >= 3, "ticks at the first listener", within=T)
        await asyncio.sleep(0.5)  # the engine is down a moment: the EA keeps trying
        async with serving(second, port):
            await until(lambda: len(second.posts) >= 3, "ticks at the restarted listener", within=T)
        book = model_book(running, int(time.time() * 1000))
        checked = 0
        for headers, path, body in first.posts + second.posts:
            assert headers["x-qa-terminal"] == "T1"
            ts = headers["x-qa-timestamp"]
            want = hmac.new(secret, f"{ts}\nPOST\n{path}\n".encode() + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-qa-signature"], want)
            for tick in json.loads(body)["ticks"]:
                assert book[("mt5", tick["symbol"], tick["time_msc"])] == (tick["bid"], tick["ask"]), tick
                checked += 1
        assert checked >= 6
    finally:
        assert await asyncio.to_thread(running.stop) == 0
