"""`quantarb set` and `quantarb settings` as real processes against a real operator listener on
127.0.0.1 (a demo Runtime with a real ledger), found and authenticated from the configuration
as on an operator's box: a valid change is journaled and in force, a bad value is exit 3 with
the field and the range, a change without a reason never leaves the shell (exit 2)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import demo_config
from engine.admin_token import engine_admin_token
from engine.operator_api import create_operator_app
from engine.runtime import Runtime
from ledger import queries
from mt5_bridge.server import EmbeddedServer


@dataclass
class Engine:
    runtime: Runtime
    server: EmbeddedServer
    ledger: Path
    home: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
        env["HOME"] = str(self.home)
        env["QUANTARB_ENGINE__LEDGER"] = str(self.ledger)
        env["QUANTARB_LISTENER__PORT"] = str(self.server.port)
        return env


@dataclass
class Run:
    code: int
    out: str
    err: str


async def quantarb(engine: Engine, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantarb_tui.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=engine.env(), cwd=engine.home,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    ledger = tmp_path / "data" / "engine.db"
    runtime = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(ledger), mt5_in_process=True)
    await runtime.open_ledger()
    token = engine_admin_token(runtime.ledger_path)
    app = create_operator_app(runtime.control, runtime.view, token, settings=runtime.steering)
    server = EmbeddedServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Engine(runtime, server, ledger, tmp_path)
    finally:
        await server.stop()
        await runtime.close_ledger()


async def _journaled(engine: Engine) -> list[dict[str, object]]:
    assert engine.runtime.ledger is not None
    return await engine.runtime.ledger.read(queries.setting_changes)


async def test_set_changes_the_running_engine_and_journals_it(engine: Engine) -> None:
    run = await quantarb(engine, "set", "strategy.threshold_bps", "6.5", "--reason", "tight spreads")
    assert run.code == 0, run.err
    assert run.out.strip() == "set: strategy.threshold_bps 8 -> 6.5"
    assert engine.runtime.pipeline.threshold_bps == 6.5
    [record] = await _journaled(engine)
    assert (record["new"], record["source"], record["reason"]) == ("6.5", "cli", "tight spreads")


async def test_a_bad_value_is_exit_3_with_the_field_and_range(engine: Engine) -> None:
    run = await quantarb(engine, "set", "strategy.cooldown_ms", "1.5", "--reason", "x")
    assert run.code == 3
    assert run.err.strip() == ("quantarb: invalid request: strategy.cooldown_ms: expected a whole number, "
                               "0 <= value <= 86400000 ms, got '1.5'")
    assert engine.runtime.pipeline.cooldown_ms == 3000
    assert await _journaled(engine) == []


async def test_set_without_a_reason_is_refused_before_sending(engine: Engine) -> None:
    run = await quantarb(engine, "set", "pairs.BTC.enabled", "false")
    assert run.code == 2
    assert "set needs a reason" in run.err
    assert engine.runtime.pipeline.pair_enabled("BTC") is True
    assert await _journaled(engine) == []


async def test_settings_lists_the_steerable_keys(engine: Engine) -> None:
    await engine.runtime.steering.set("risk.max_leg_notional", "2500", "smaller", "tui")
    run = await quantarb(engine, "settings")
    assert run.code == 0, run.err
    lines = [line.split(None, 3) for line in run.out.splitlines()]
    assert lines[0] == ["key", "value", "config", "allowed"]
    assert ["risk.max_leg_notional", "2500", "5000", "a decimal, 0 < value <= 60000"] in lines
    as_json = await quantarb(engine, "settings", "--json")
    assert as_json.code == 0
    assert len(json.loads(as_json.out)["settings"]) == 6
