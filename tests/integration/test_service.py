"""quantarb as a systemd service: the notifications `quantarb headless` sends to a fake
`NOTIFY_SOCKET` (a real AF_UNIX datagram socket in tmp), the watchdog falling silent while the
event loop is blocked, and a watchdog kill (SIGABRT) followed by a restart that is halted
because the engine was halted. The unit file itself: tests/unit/test_deploy_units.py."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import demo_config
from engine.runtime import Runtime
from engine.sdnotify import SdNotifier
from quantarb_tui.headless import serve


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end of the notify socket, bound in tmp."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    """The datagrams already queued, without waiting."""
    out: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


class Collector:
    """Reads the socket on a thread as systemd would: the kernel queues only a few datagrams
    per socket (net.unix.max_dgram_qlen, 10 here), so an unread socket would refuse them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.settimeout(0.1)
        self.messages: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> list[str]:
        self._done.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        return self.messages + drain(self._sock)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUANTARB_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["HOME"] = str(home)
    env["QUANTARB_LISTENER__PORT"] = "0"
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.5"
    env.update(extra)
    return env


def _quantarb(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantarb_tui.cli", *args]


def test_ready_then_watchdog_pings_none_while_the_loop_is_blocked(
    tmp_path: Path, manager: tuple[socket.socket, str]
) -> None:
    """The real engine (the demo, in real time) served as headless serves it: READY once it
    runs, WATCHDOG=1 every half period, nothing at all while the loop is blocked for ten
    periods (the loop's thread is the only sender, and the check runs on it), pings again
    once it runs, STOPPING at the end."""
    sock, path = manager
    config = demo_config()
    config = config.model_copy(update={
        "listener": config.listener.model_copy(update={"port": 0}),
        "engine": config.engine.model_copy(update={"heartbeat_s": 1.0}),
    })
    runtime = Runtime(config, is_demo=True, ledger_path=str(tmp_path / "demo.db"))
    notifier = SdNotifier(path, watchdog_s=0.4)  # a ping every 0.2 s
    out = io.StringIO()
    seen: list[str] = []

    async def wait_for(what: str, count: int = 1, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while sum(1 for m in seen if m.startswith(what)) < count:
            assert time.monotonic() < deadline, f"no {what} x{count} within {within}s: {seen[-10:]}"
            await asyncio.sleep(0.05)
            seen.extend(drain(sock))

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        served = asyncio.create_task(serve(runtime, duration=None, out=out, as_json=False, notifier=notifier,
                                           stop=stop))
        await wait_for("READY=1")
        assert runtime.running and "engine started" in out.getvalue()
        ready_at = len(seen)
        await wait_for("WATCHDOG=1", count=sum(1 for m in seen if m == "WATCHDOG=1") + 3)
        assert len(seen) > ready_at
        seen.extend(drain(sock))
        time.sleep(2.0)  # noqa: ASYNC251 (the point: the event loop is blocked for ten watchdog periods)
        during = drain(sock)
        pings = sum(1 for m in seen if m == "WATCHDOG=1")
        await wait_for("WATCHDOG=1", count=pings + 2, within=10.0)  # the loop runs: pings resume
        await wait_for("STATUS=", count=1)  # the heartbeat keeps `systemctl status` current
        stop.set()
        await asyncio.wait_for(served, timeout=60)
        seen.extend(drain(sock))
        return during

    try:
        during = asyncio.run(scenario())
    finally:
        notifier.close()
    assert during == []
    ready = next(i for i, m in enumerate(seen) if m.startswith("READY=1"))
    assert seen[ready].startswith("READY=1\nSTATUS=demo "), seen[ready]
    stopping = [i for i, m in enumerate(seen) if m.startswith("STOPPING=1")]
    assert len(stopping) == 1 and stopping[0] > ready
    assert set(seen[stopping[0] + 1:]) <= {"WATCHDOG=1"}  # fed until the stop is done
    statuses = [m for m in seen[ready + 1:stopping[0]] if m.startswith("STATUS=")]
    assert statuses and all(" open groups; equity " in m for m in statuses), statuses
    assert "heartbeat state=" in out.getvalue()
    assert out.getvalue().rstrip().splitlines()[-1].startswith("summary ")


def test_headless_process_under_a_fake_systemd(tmp_path: Path) -> None:
    """`quantarb headless` as systemd starts it: an abstract-namespace NOTIFY_SOCKET, a
    watchdog of one second for this very process (WATCHDOG_PID unset)."""
    name = f"quantarb-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    collector = Collector(sock)
    try:
        result = subprocess.run(
            _quantarb("headless", "--duration", "4", "--ledger", str(tmp_path / "demo.db")),
            cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
            env=_env(tmp_path, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000", QUANTARB_ENGINE__HEARTBEAT_S="1"),
        )
    finally:
        messages = collector.stop()
        sock.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    kinds = [m.split("=", 1)[0] for m in messages]
    assert kinds.count("READY") == 1 and kinds.count("STOPPING") == 1, messages
    ready, stopping = kinds.index("READY"), kinds.index("STOPPING")
    assert ready < stopping
    # Pings every 0.5 s for about 4 s of trading, more while starting and stopping.
    assert 4 <= kinds[ready:stopping].count("WATCHDOG") <= 40, messages
    assert 2 <= kinds[ready:stopping].count("STATUS") <= 6, messages  # one per heartbeat
    assert set(kinds[stopping + 1:]) <= {"WATCHDOG"}


def test_a_notify_socket_it_cannot_use_is_said_and_the_engine_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        _quantarb("headless", "--duration", "1", "--ledger", str(tmp_path / "demo.db")),
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
        env=_env(tmp_path, NOTIFY_SOCKET="vsock:2:9999"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("quantarb: NOTIFY_SOCKET=vsock:2:9999: not an AF_UNIX socket (an absolute path or "
                             "@name); systemd notifications off\n")
    assert result.stdout.rstrip().splitlines()[-1].startswith("summary ")


def _wait_line(log: Path, pattern: str, proc: subprocess.Popen[str], within: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(encoding="utf-8"))
        if found:
            return found
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text(encoding='utf-8')}"
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {within}s:\n{log.read_text(encoding='utf-8')}")


def test_a_watchdog_kill_then_restart_comes_back_halted(tmp_path: Path, manager: tuple[socket.socket, str]) -> None:
    """What systemd does to a hung engine: SIGABRT (the stack of every thread goes to stderr,
    the journal), then a new start. The engine had been halted by an operator: the restarted
    one says READY, halted, and trades nothing."""
    sock, path = manager
    collector = Collector(sock)
    ledger = tmp_path / "svc.db"
    env = _env(tmp_path, NOTIFY_SOCKET=path, WATCHDOG_USEC="30000000")
    log = tmp_path / "first.log"
    with log.open("w", encoding="utf-8") as stdout:
        proc = subprocess.Popen(_quantarb("headless", "--ledger", str(ledger)), cwd=tmp_path, env=env,
                                stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_line(log, r"listener=(http://127\.0\.0\.1:\d+)", proc).group(1)
        kill = subprocess.run(_quantarb("kill", "--url", url, "--ledger", str(ledger), "--reason", "before the hang"),
                              cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
                              check=False)
        assert kill.returncode == 0, kill.stdout + kill.stderr
        _wait_line(log, r"HALTED", proc)
        proc.send_signal(signal.SIGABRT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in err and "File " in err, err  # where the loop was
    first = len(collector.messages)

    result = subprocess.run(_quantarb("headless", "--duration", "3", "--ledger", str(ledger)), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr
    ready = [m for m in collector.stop()[first:] if m.startswith("READY=1")]
    assert len(ready) == 1 and "halted (before the hang)" in ready[0], ready
    summary = result.stdout.rstrip().splitlines()[-1]
    assert " state=halted " in summary, summary
    assert " intent " not in result.stdout.split("engine started", 1)[1]
