"""`quantarb status | kill | ... ` as real processes against a real operator listener on 127.0.0.1.

The listener is `create_operator_app` on a demo Runtime, served by EmbeddedServer in the test's
event loop; the CLI runs as `python -m quantarb_tui.cli` with HOME in tmp (the built-in demo
config) and finds the URL and the token file from the configuration, as on an operator's box.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import demo_config
from engine.admin_token import engine_admin_token
from engine.control import ControlRefused, ControlResult, OperatorControl
from engine.operator_api import MAX_REASON_CHARS, create_operator_app
from engine.runtime import Runtime
from mt5_bridge.server import EmbeddedServer
from quantarb_tui.operator_cli import MAX_REASON_CHARS as CLI_MAX_REASON_CHARS


class PolicyControl:
    """The demo engine's control, except that it refuses a pause (a 409 the CLI must report)."""

    def __init__(self, inner: OperatorControl) -> None:
        self._inner = inner

    async def kill(self, reason: str) -> ControlResult:
        return await self._inner.kill(reason)

    async def flatten(self, reason: str) -> ControlResult:
        return await self._inner.flatten(reason)

    async def rearm(self, reason: str) -> ControlResult:
        return await self._inner.rearm(reason)

    async def pause(self, reason: str = "") -> ControlResult:
        raise ControlRefused("pausing is disabled by policy")

    async def resume(self, reason: str) -> ControlResult:
        return await self._inner.resume(reason)

    async def close_group(self, group_id: str, reason: str, actor: str) -> ControlResult:
        return await self._inner.close_group(group_id, reason, actor)

    async def cancel_orphans(self, reason: str, actor: str) -> ControlResult:
        return await self._inner.cancel_orphans(reason, actor)


@dataclass
class Engine:
    runtime: Runtime
    server: EmbeddedServer
    ledger: Path
    token: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
        env["HOME"] = str(self.home)  # no user config: the built-in demo's settings ...
        env["QUANTARB_ENGINE__LEDGER"] = str(self.ledger)  # ... with this ledger (token file next to it)
        env["QUANTARB_LISTENER__PORT"] = str(self.server.port)  # ... and this listener
        env.update(extra)
        return env


@dataclass
class Run:
    code: int
    out: str
    err: str


async def quantarb(*args: str, env: dict[str, str], cwd: Path) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantarb_tui.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    ledger = tmp_path / "data" / "engine.db"
    runtime = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(ledger),
                            mt5_in_process=True)
    await runtime.driver.drive(50)  # some quotes, feeds and edges to show
    token = engine_admin_token(runtime.ledger_path)
    app = create_operator_app(PolicyControl(runtime.control), runtime.view, token)
    server = EmbeddedServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Engine(runtime, server, ledger, token, tmp_path)
    finally:
        await server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_status_finds_url_and_token_from_the_config(engine: Engine, tmp_path: Path) -> None:
    run = await quantarb("status", env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["instance", engine.server.url]
    assert lines[1].split()[:2] == ["trading", "ACTIVE"]
    assert any(line.split()[:2] == ["mode", "demo"] for line in lines)
    open_groups = len(engine.runtime.orchestrator.open)
    assert ["open", "groups", str(open_groups)] in [line.split() for line in lines]
    assert ["breakers", "tripped", "none"] in [line.split() for line in lines]
    assert any(line.split()[:4] == ["feed", "venue", "state", "last"] for line in lines)
    assert engine.token not in run.out + run.err


async def test_json_prints_exactly_one_document(engine: Engine, tmp_path: Path) -> None:
    run = await quantarb("status", "--json", env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err
    assert json.loads(run.out)["trading_state"] == "active"  # the whole of stdout is one document
    run = await quantarb("kill", "--reason", "cli test", "--json", "--url", engine.server.url,
                         env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["action"] == "kill" and result["trading_state"] == "halted" and result["reason"] == "cli test"
    assert str(engine.runtime.gate.state) == "halted"


async def test_kill_then_rearm_in_human_form(engine: Engine, tmp_path: Path) -> None:
    run = await quantarb("kill", env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err
    assert run.out.startswith("kill: halted") and "trading halted" in run.out
    run = await quantarb("rearm", "--reason", "venues checked", env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "trading active" in run.out
    assert str(engine.runtime.gate.state) == "active"


async def test_rearm_without_a_reason_is_a_usage_error_before_anything_is_contacted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)
    for extra in ((), ("--reason", "  ")):
        # Nothing listens at this URL: a 2 (not a 4) proves nothing was sent.
        run = await quantarb("rearm", "--url", f"http://127.0.0.1:{_free_port()}", *extra, env=env, cwd=tmp_path)
        assert run.code == 2, run.err
        assert "rearm needs a reason" in run.err
        assert run.out == ""


async def test_exit_4_when_no_instance_answers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)
    url = f"http://127.0.0.1:{_free_port()}"
    for args in (("status",), ("kill", "--reason", "x"), ("status", "--json")):
        run = await quantarb(*args, "--url", url, env=env, cwd=tmp_path)
        assert run.code == 4, (args, run.err)
        assert f"no quantarb instance answers at {url}" in run.err
        assert run.out == ""


async def test_a_refused_action_exits_3_with_the_engines_message(engine: Engine, tmp_path: Path) -> None:
    run = await quantarb("pause", "--reason", "x", env=engine.env(), cwd=tmp_path)
    assert run.code == 3
    assert "refused: pausing is disabled by policy" in run.err
    run = await quantarb("pause", "--json", env=engine.env(), cwd=tmp_path)
    assert run.code == 3
    assert json.loads(run.out) == {"error": "refused", "message": "pausing is disabled by policy"}


async def test_a_wrong_or_missing_token_exits_3_and_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    run = await quantarb("kill", env=engine.env(QUANTARB_ADMIN_TOKEN="wrong-token-0123456789"), cwd=tmp_path)
    assert run.code == 3
    assert "the admin token was refused (token from QUANTARB_ADMIN_TOKEN)" in run.err
    assert "wrong-token-0123456789" not in run.err
    other = tmp_path / "other.db"  # a ledger with no token file next to it
    run = await quantarb("kill", "--ledger", str(other), env=engine.env(), cwd=tmp_path)
    assert run.code == 3
    assert "no admin token" in run.err and f"{other}.admin-token" in run.err
    assert str(engine.runtime.gate.state) == "active"


async def test_an_unsafe_token_file_is_a_usage_error(engine: Engine, tmp_path: Path) -> None:
    os.chmod(f"{engine.ledger}.admin-token", 0o640)
    run = await quantarb("status", env=engine.env(), cwd=tmp_path)
    assert run.code == 2
    assert "accessible to other users" in run.err
    assert engine.token not in run.err


async def test_port_zero_in_the_config_needs_an_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env.update(HOME=str(tmp_path), QUANTARB_LISTENER__PORT="0")
    run = await quantarb("status", env=env, cwd=tmp_path)
    assert run.code == 2 and "pass --url" in run.err


class FakeEngine:
    """A listener someone else runs on 127.0.0.1: it answers every request with a kill that
    "worked", and records every connection and every request head it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeEngine:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            body = b'{"action":"kill","trading_state":"halted","changed":true,"message":"halted"}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                         b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _plant(path: Path, how: str, url: str) -> None:
    """A `<ledger>.listener` someone else could have written."""
    if how == "symlink":
        real = path.with_name("elsewhere")
        real.write_text(url + "\n")
        os.chmod(real, 0o600)
        path.symlink_to(real)
        return
    path.write_text(url + "\n")
    os.chmod(path, {"group-writable": 0o620, "world-writable": 0o602}.get(how, 0o600))
    if how == "other-owner":
        os.chown(path, 4242, 4242)


@pytest.mark.parametrize("how", [
    "group-writable",
    "world-writable",
    "symlink",
    pytest.param("other-owner", marks=pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")),
    "wildcard-address",  # 0.0.0.0 reaches this machine on Linux, but is no loopback address
])
async def test_a_planted_listener_file_is_refused_and_the_token_goes_nowhere(
    engine: Engine, tmp_path: Path, how: str
) -> None:
    """The CLI used to send the admin token to whatever `<ledger>.listener` named and report the
    fake's answer as success. Now a file that is not ours, is writable by others, is a link, or
    names a non-loopback address stops the CLI (exit 2) before anything is sent."""
    listener_file = Path(f"{engine.ledger}.listener")
    async with FakeEngine() as fake:
        host = "0.0.0.0" if how == "wildcard-address" else "127.0.0.1"
        _plant(listener_file, how, f"http://{host}:{fake.port}")
        run = await quantarb("kill", "--reason", "x", env=engine.env(), cwd=tmp_path)
    assert (fake.connections, fake.heads) == (0, []), run.err
    assert run.code == 2, (run.code, run.out, run.err)
    assert str(listener_file) in run.err and "pass --url" in run.err
    assert run.out == "" and engine.token not in run.err
    assert str(engine.runtime.gate.state) == "active"


async def test_a_remote_address_in_the_listener_file_is_refused(engine: Engine, tmp_path: Path) -> None:
    listener_file = Path(f"{engine.ledger}.listener")
    _plant(listener_file, "ours", "http://10.255.255.1:8787")  # never contacted: refused before
    run = await quantarb("status", env=engine.env(), cwd=tmp_path)
    assert run.code == 2, run.err
    assert "'10.255.255.1', not a loopback address" in run.err and "--url" in run.err
    # --url is the operator's own choice: the file is not even read.
    run = await quantarb("status", "--url", engine.server.url, env=engine.env(), cwd=tmp_path)
    assert run.code == 0, run.err


async def test_a_listener_file_of_ours_is_used(engine: Engine, tmp_path: Path) -> None:
    """A 0600 file of this user naming a loopback address wins over the configured port."""
    _plant(Path(f"{engine.ledger}.listener"), "ours", engine.server.url)
    run = await quantarb("status", env=engine.env(QUANTARB_LISTENER__PORT=str(_free_port())), cwd=tmp_path)
    assert run.code == 0, run.err
    assert run.out.splitlines()[0].split() == ["instance", engine.server.url]


def test_cli_and_api_agree_on_the_reason_limit() -> None:
    assert CLI_MAX_REASON_CHARS == MAX_REASON_CHARS
