"""`quantarb doctor` against simulated venues on loopback, run as the operator runs it (issue 15).

The OKX and Binance USD-M simulators serve in this test's event loop; `quantarb doctor` runs as
a child process with a config pointing at them and the keys in its environment. It passes on a
healthy setup, and fails (exit 3), naming the venue and the reason, with a wrong secret, a
skewed venue clock, an instrument spec that differs from the venue's, a key that cannot trade,
and a venue that does not answer. With an MT5 terminal it asks the running engine about the
EA: `quantarb headless` in live mode on the same config and venues, the EA simulator posting
to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim
from sim.market import SimTick
from sim.mt5_sim_cli import run_mt5_sim
from sim.okx_accounts import SimInstrumentSpec
from sim.okx_server import OkxSimServer

OKX_KEY, OKX_SECRET, OKX_PASS = "doctor-okx-key", "6A1F0C2D9E8B7A6554433221100FFEDD", "Doctor-pass1"
BN_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BN_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
MT5_SECRET = "doctor-terminal-secret-0123456789"
BTC_SWAP = "BTC-USDT-SWAP"
T = 30.0  # the bound on every wait for a process or a state

KEYS = {
    "QUANTARB_OKX_API_KEY": OKX_KEY, "QUANTARB_OKX_API_SECRET": OKX_SECRET, "QUANTARB_OKX_API_PASSPHRASE": OKX_PASS,
    "QUANTARB_BINANCE_API_KEY": BN_KEY, "QUANTARB_BINANCE_API_SECRET": BN_SECRET,
}
# Every check of a venue whose key is good, in the order doctor reports them.
OKX_CHECKS = ["reachable", "clock", "instruments", "api key", "permissions", "account mode", "balance"]
BINANCE_CHECKS = ["reachable", "clock", "instruments", "api key", "permissions", "balance"]
LOCAL_CHECKS = ["listener bind", "listener tls", "ledger directory", "ledger file", "ledger in use"]


@dataclass
class Venues:
    okx: OkxSimServer
    binance: BinanceVenueSim


@asynccontextmanager
async def venues(okx_tick: str = "0.1") -> AsyncIterator[Venues]:
    """OKX (one BTC swap, tick `okx_tick`) and Binance USD-M (its default symbols) on loopback."""
    spec = SimInstrumentSpec(BTC_SWAP, Decimal(okx_tick), Decimal(1), Decimal(1), ct_val=Decimal("0.01"))
    okx = OkxSimServer("127.0.0.1", 0, symbols=[BTC_SWAP], specs=[spec])
    okx.private.add_account(OKX_KEY, OKX_SECRET, OKX_PASS)
    binance = BinanceVenueSim(market="usdm", credentials=SimCredentials(BN_KEY, BN_SECRET))
    async with okx, binance:
        okx.publish(SimTick("okx", BTC_SWAP, 97000.0, 97000.1, 5.0, 5.0, okx.clock.time_ms()))
        binance.set_book("BTCUSDT", "97000.0", "97000.2", "3", "5")
        yield Venues(okx, binance)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(tmp: Path, *, okx_url: str, binance_url: str, port: int, mt5: bool = False,
                 binance_lot: str = "0.001") -> Path:
    ws_okx = "ws" + okx_url.removeprefix("http")
    ws_bn = "ws" + binance_url.removeprefix("http")
    text = f"""
[engine]
execution = "live"
ledger = "{tmp / 'data' / 'ledger.db'}"

[listener]
host = "127.0.0.1"
port = {port}

[venues.okx]
rest_url = "{okx_url}"
ws_url = "{ws_okx}/ws/v5/public"
private_ws_url = "{ws_okx}/ws/v5/private"

[venues.binance]
market = "usdm"
rest_url = "{binance_url}"
ws_url = "{ws_bn}"
trade_rest_url = "{binance_url}"
ws_api_url = "{ws_bn}/ws-fapi/v1"
user_stream_url = "{ws_bn}/private"
{'[venues.mt5]' + chr(10) + 'terminals = ["T1"]' if mt5 else ''}

[[pairs]]
name = "BTC"
[pairs.instruments.okx]
symbol = "{BTC_SWAP}"
qty_per_contract = "0.01"
lot_step = "1"
min_qty = "1"
tick_size = "0.1"
[pairs.instruments.binance]
symbol = "BTCUSDT"
qty_per_contract = "1"
lot_step = "{binance_lot}"
min_qty = "0.001"
tick_size = "0.1"
"""
    if mt5:  # the EA simulator's market is its own: no edge is real, so none is traded
        text += """[pairs.instruments.mt5]
symbol = "BTCUSD"
qty_per_lot = "1"
lot_step = "0.01"
min_qty = "0.01"

[strategy]
threshold_bps = 299
"""
    path = tmp / "quantarb.toml"
    path.write_text(text, encoding="utf-8")
    return path


def environment(tmp: Path, **secrets: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("QUANTARB_")}
    env["HOME"] = str(tmp)
    env.update(secrets)
    return env


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def checks(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.out)["checks"]
        return found

    def check(self, venue: str | None, name: str) -> dict[str, Any]:
        found = [c for c in self.checks if (c["venue"], c["name"]) == (venue, name)]
        assert len(found) == 1, (venue, name, self.out)
        return found[0]

    def failures(self) -> list[tuple[str | None, str]]:
        return [(c["venue"], c["name"]) for c in self.checks if not c["ok"]]


async def doctor(config: Path, env: dict[str, str], *args: str) -> Outcome:
    """`quantarb doctor --config CONFIG --json`, as a child process (the venues keep serving here)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantarb_tui.cli", "doctor", "--config", str(config), "--json", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), T)
    assert proc.returncode is not None
    return Outcome(proc.returncode, out.decode(), err.decode())


def assert_no_secret(outcome: Outcome) -> None:
    for secret in (OKX_SECRET, OKX_PASS, BN_SECRET, BN_KEY, OKX_KEY, MT5_SECRET):
        assert secret not in outcome.out + outcome.err


async def test_passes_on_healthy_venues_with_the_exact_json_shape(tmp_path: Path) -> None:
    async with venues() as v:
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        result = await doctor(config, environment(tmp_path, **KEYS))
    assert result.code == 0, result.out + result.err
    assert all(set(c) == {"name", "venue", "ok", "detail"} for c in result.checks)
    assert all(c["ok"] is True and isinstance(c["detail"], str) and c["detail"] for c in result.checks)
    assert [(c["venue"], c["name"]) for c in result.checks] == [
        (None, "secrets"), *[("okx", n) for n in OKX_CHECKS], *[("binance", n) for n in BINANCE_CHECKS],
        *[(None, n) for n in LOCAL_CHECKS]]
    assert result.check("okx", "permissions")["detail"] == "read_only,trade (no withdrawal)"
    assert result.check("okx", "balance")["detail"].endswith("; USDT 100000 (available 100000)")
    assert result.check("binance", "permissions")["detail"] == (
        "enableFutures on, withdrawals off, not IP-restricted")
    assert result.check("binance", "instruments")["detail"] == "the config matches the venue: BTCUSDT"
    assert_no_secret(result)


async def test_paper_execution_without_keys_checks_only_the_public_side(tmp_path: Path) -> None:
    async with venues() as v:
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        result = await doctor(config, environment(tmp_path, QUANTARB_ENGINE__EXECUTION="paper"))
    assert result.code == 0, result.out + result.err
    assert [c["name"] for c in result.checks if c["venue"] == "okx"] == OKX_CHECKS[:4]
    assert result.check("binance", "api key")["detail"] == (
        "no key set (paper execution needs none): key, permissions and balance not checked")
    assert result.check(None, "secrets")["detail"] == "this configuration requires no secret"


async def test_a_wrong_secret_fails_naming_each_venue_and_its_code(tmp_path: Path) -> None:
    wrong = {**KEYS, "QUANTARB_OKX_API_SECRET": "0" * 32, "QUANTARB_BINANCE_API_SECRET": "1" * 64}
    async with venues() as v:
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        result = await doctor(config, environment(tmp_path, **wrong))
    assert result.code == 3, result.out + result.err
    assert result.failures() == [("okx", "api key"), ("binance", "api key")]
    assert result.check("okx", "api key")["detail"] == (
        "a signed request was refused: 50113 Invalid Sign (the signature is wrong: check QUANTARB_OKX_API_SECRET)")
    assert result.check("binance", "api key")["detail"] == (
        "a signed request was refused: -1022 Signature for this request is not valid. (the signature is wrong: "
        "check QUANTARB_BINANCE_API_SECRET)")
    # Nothing signed was read after the refusal: no permissions, no balance.
    assert [c["name"] for c in result.checks if c["venue"] == "okx"] == OKX_CHECKS[:4]
    assert_no_secret(result)
    assert "0" * 32 not in result.out and "1" * 64 not in result.out


async def test_a_skewed_venue_clock_fails_naming_the_venue_and_the_offset(tmp_path: Path) -> None:
    async with venues() as v:
        v.okx.private.faults.clock_skew_ms = 5_000
        v.binance.faults.clock_skew_ms = -4_000
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        result = await doctor(config, environment(tmp_path, **KEYS))
    assert result.code == 3, result.out + result.err
    assert result.failures() == [("okx", "clock"), ("binance", "clock")]
    okx = re.fullmatch(r"the venue's clock is (\d+) ms ahead of this machine's \(limit ±1000 ms\): .*NTP.*",
                       result.check("okx", "clock")["detail"])
    binance = re.fullmatch(r"the venue's clock is (\d+) ms behind this machine's \(limit ±1000 ms\): .*",
                           result.check("binance", "clock")["detail"])
    assert okx is not None and binance is not None, result.out
    assert 4_000 < int(okx.group(1)) < 6_000 and 3_000 < int(binance.group(1)) < 5_000
    # The gateways measure the offset and sign on the venue's clock: the keys still work.
    assert result.check("okx", "api key")["ok"] and result.check("binance", "api key")["ok"]


async def test_an_instrument_spec_that_differs_from_the_venue_fails_naming_the_field(tmp_path: Path) -> None:
    async with venues(okx_tick="0.01") as v:
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port(),
                              binance_lot="0.01")
        result = await doctor(config, environment(tmp_path, **KEYS))
    assert result.code == 3, result.out + result.err
    assert result.failures() == [("okx", "instruments"), ("binance", "instruments")]
    assert result.check("okx", "instruments")["detail"] == (
        "okx BTC-USDT-SWAP: tick_size is 0.1 in the config, 0.01 on the venue")
    assert result.check("binance", "instruments")["detail"] == (
        "binance BTCUSDT: lot_step is 0.01 in the config, 0.001 on the venue")


async def test_key_permissions_withdrawal_is_a_loud_warning_and_no_trading_fails(tmp_path: Path) -> None:
    async with venues() as v:
        v.okx.private.accounts[OKX_KEY].perm = "read_only,trade,withdraw"
        v.binance.rest.api_restrictions["enableWithdrawals"] = True
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        warned = await doctor(config, environment(tmp_path, **KEYS))
        v.okx.private.accounts[OKX_KEY].perm = "read_only"
        v.okx.private.accounts[OKX_KEY].pos_mode = "long_short_mode"
        v.binance.rest.api_restrictions["enableFutures"] = False
        refused = await doctor(config, environment(tmp_path, **KEYS))
    assert warned.code == 0, warned.out + warned.err
    assert warned.check("okx", "permissions")["detail"].startswith(
        "warning: the key's permissions are read_only,trade,withdraw: THIS KEY CAN WITHDRAW.")
    assert warned.check("binance", "permissions")["detail"].startswith(
        "warning: enableWithdrawals is on: THIS KEY CAN WITHDRAW.")
    assert refused.code == 3
    assert refused.failures() == [("okx", "permissions"), ("okx", "account mode"), ("binance", "permissions")]
    assert refused.check("binance", "permissions")["detail"] == (
        "enableFutures is off: the key cannot trade on usdm; enable it on the key")
    assert "posMode" not in refused.check("okx", "account mode")["detail"]
    assert "long_short_mode" in refused.check("okx", "account mode")["detail"]


async def test_a_dead_or_silent_venue_fails_within_the_timeout(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # reads the request, never answers
        await asyncio.sleep(T)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    closed = free_port()  # nothing listens there
    try:
        silent_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        config = write_config(tmp_path, okx_url=f"http://127.0.0.1:{closed}", binance_url=silent_url,
                              port=free_port())
        result = await doctor(config, environment(tmp_path, **KEYS), "--timeout", "0.5")
    finally:
        server.close()
    assert result.code == 3, result.out + result.err
    assert result.failures() == [("okx", "reachable"), ("binance", "reachable")]
    assert result.check("okx", "reachable")["detail"].startswith(f"http://127.0.0.1:{closed}: transport ")
    assert "no answer" in result.check("binance", "reachable")["detail"]
    # An unreachable venue reports nothing else.
    assert [c["venue"] for c in result.checks].count("okx") == 1


async def test_human_output_names_each_failure_and_exits_3(tmp_path: Path) -> None:
    async with venues() as v:
        v.okx.private.faults.clock_skew_ms = 5_000
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=free_port())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quantarb_tui.cli", "doctor", "--config", str(config),
            env=environment(tmp_path, **KEYS), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), T)
    text = out.decode()
    assert proc.returncode == 3, text
    lines = text.splitlines()
    assert lines[0] == f"quantarb doctor: {config} (execution live)"
    assert re.fullmatch(r"  FAIL  okx\s+clock\s+the venue's clock is \d+ ms ahead of this machine's .*", lines[3])
    assert lines[1].startswith("  ok    -        secrets ")
    assert lines[-1] == f"1 of {len(lines) - 2} checks failed: okx clock"


# ------------------------------------------------------------------------------ with the engine


class Engine:
    """`quantarb headless` on the config, as a child process, its log in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, url: str, token: str) -> None:
        self.proc, self.log, self.url, self.token = proc, log, url, token

    @classmethod
    async def start(cls, config: Path, env: dict[str, str], port: int, ledger: Path) -> Engine:
        log = config.with_name("engine.log")
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "quantarb_tui.cli", "headless", "--config", str(config),
                env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + T
        token_file = ledger.with_name(ledger.name + ".admin-token")
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"the engine exited {proc.returncode}:\n{log.read_text()}")
                try:
                    if (await client.get(f"{url}/healthz")).status_code == 200 and token_file.exists():
                        break
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"the engine never listened on {url}:\n{log.read_text()}")
                await asyncio.sleep(0.2)
        return cls(proc, log, url, token_file.read_text().strip())

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            doc: dict[str, Any] = (await client.get(f"{self.url}/api/status",
                                                    headers={"authorization": f"Bearer {self.token}"})).json()
            return doc

    async def terminal(self, until: str, value: object) -> dict[str, Any]:
        """Poll /api/status until terminal T1's `until` field equals `value`; fail otherwise."""
        deadline = asyncio.get_running_loop().time() + T
        headers = {"authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                doc = (await client.get(f"{self.url}/api/status", headers=headers)).json()
                rows = [r for r in doc["mt5_terminals"] if r["terminal"] == "T1"]
                if rows and rows[0][until] == value:
                    row: dict[str, Any] = rows[0]
                    return row
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"T1 {until} never became {value!r}; last status: {doc['mt5_terminals']}")
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), T)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.mark.timeout(180)
async def test_passes_with_the_running_engine_and_its_ea_then_fails_when_autotrading_is_off(tmp_path: Path) -> None:
    port = free_port()
    secrets = {**KEYS, "QUANTARB_MT5_SECRET_T1": MT5_SECRET}
    async with venues() as v:
        config = write_config(tmp_path, okx_url=v.okx.rest_url, binance_url=v.binance.base_url, port=port, mt5=True)
        ledger = tmp_path / "data" / "ledger.db"
        before = await doctor(config, environment(tmp_path, **secrets))
        engine = await Engine.start(config, environment(tmp_path, **secrets), port, ledger)
        try:
            stop = asyncio.Event()
            # One simulated terminal (its state file), the EA restarted on it: the same instance.
            terminal = tmp_path / "terminal.json"
            ea = asyncio.create_task(run_mt5_sim(engine.url, "T1", MT5_SECRET, symbols=["BTCUSD"], stop=stop,
                                                 account_every_s=0.3, state_file=terminal))
            await engine.terminal("margin_mode", "hedging")
            assert (await engine.status())["mode"] == "live"
            healthy = await doctor(config, environment(tmp_path, **secrets))
            stop.set()
            await asyncio.wait_for(ea, T)
            stop = asyncio.Event()
            ea = asyncio.create_task(run_mt5_sim(engine.url, "T1", MT5_SECRET, symbols=["BTCUSD"], stop=stop,
                                                 account_every_s=0.3, state_file=terminal, trade_allowed=False))
            await engine.terminal("trade_allowed", False)
            autotrading_off = await doctor(config, environment(tmp_path, **secrets))
            stop.set()
            await asyncio.wait_for(ea, T)
        finally:
            await engine.stop()
    # Before the engine runs, the EA cannot be vouched for: that check fails and says why.
    assert before.code == 3 and before.failures() == [("mt5", "T1 ea")]
    assert before.check("mt5", "T1 ea")["detail"].startswith(f"not checked: no engine answers at http://127.0.0.1:{port}")
    assert healthy.code == 0, healthy.out + healthy.err + engine.log.read_text()
    assert [(c["venue"], c["name"]) for c in healthy.checks if c["venue"] == "mt5"] == [
        ("mt5", "T1 secret"), ("mt5", "T1 ea"), ("mt5", "T1 account mode"), ("mt5", "T1 autotrading")]
    assert healthy.check("mt5", "T1 secret")["detail"] == "QUANTARB_MT5_SECRET_T1 is set (from QUANTARB_MT5_SECRET_T1)"
    assert re.fullmatch(r"seen \d+\.\d s ago \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); last tick .*",
                        healthy.check("mt5", "T1 ea")["detail"])
    assert healthy.check("mt5", "T1 account mode")["detail"] == "hedging"
    assert healthy.check("mt5", "T1 autotrading")["detail"] == "on"
    assert healthy.check(None, "listener bind")["detail"] == (
        f"127.0.0.1:{port} is held by the running quantarb (http://127.0.0.1:{port})")
    assert re.fullmatch(r"held by a running engine \(pid \d+\); one engine per ledger",
                        healthy.check(None, "ledger in use")["detail"])
    assert healthy.check(None, "ledger file")["detail"].startswith(f"{ledger}: intact")
    assert autotrading_off.code == 3
    assert autotrading_off.failures() == [("mt5", "T1 autotrading")]
    assert autotrading_off.check("mt5", "T1 autotrading")["detail"].startswith("off: the terminal's AutoTrading")
    assert_no_secret(healthy)
