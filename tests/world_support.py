"""A rehearsal world (`quantarb sim world`) in a subprocess, for process tests.

    world = start_world(tmp_path)
    try:
        subprocess.run([... "headless", "--config", str(world.config)], env=world.env, ...)
    finally:
        world.stop()

`start_world` waits (bounded) for the `ready` line and fails the test if it does not come;
`world.env` is this process's environment without any QUANTARB_* variable, plus the secrets
of `<config>.env`; `world.info` is the ready line's `key=value` fields (venue URLs, listener,
seed, epoch_ms, pids).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass
class RunningWorld:
    """A started world: its files, its environment for the engine, and how to stop it."""

    config: Path
    env_file: Path
    secrets: dict[str, str]
    env: dict[str, str]
    info: dict[str, str]
    proc: subprocess.Popen[str]
    stderr_path: Path
    lines: queue.Queue[str | None] = field(repr=False)

    @property
    def pids(self) -> dict[str, int]:
        """Each child's pid, by name (okx, binance-spot, binance-usdm, mt5)."""
        return {name: int(pid) for name, pid in (p.split(":") for p in self.info["pids"].split(","))}

    def url(self, name: str) -> str:
        return self.info[name]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the world and wait for it (killing it and failing if it does not end in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the world did not stop within {timeout:g} s of SIGTERM") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout_lines(self, timeout: float) -> list[str]:
        """The stdout lines after `ready`, up to the end of the process (bounded)."""
        out: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"world stdout did not end within {timeout:g} s") from None
            if line is None:
                return out
            out.append(line)


def world_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "quantarb_tui.cli", "sim", "world", "--config-out", str(config), *extra]


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = raw.partition("=")
        assert sep and name and value, f"{path}: not a NAME=value line"
        values[name] = value
    return values


def base_env() -> dict[str, str]:
    """This process's environment without QUANTARB_* (no stray setting or key leaks in)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("QUANTARB_")}


def start_world(folder: Path, *extra: str, name: str = "world.toml",
                ready_timeout: float = READY_TIMEOUT_S) -> RunningWorld:
    """Start `quantarb sim world --config-out <folder>/<name> <extra...>` and wait for `ready`."""
    config = folder / name
    stderr_path = folder / f"{name}.stderr"
    with stderr_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(world_command(config, *extra), stdout=subprocess.PIPE, stderr=err, text=True,
                                env=base_env(), cwd=folder)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=ready_timeout)
        except queue.Empty:
            proc.kill()
            proc.wait()
            raise AssertionError(f"no ready line within {ready_timeout:g} s; stderr:\n"
                                 f"{stderr_path.read_text()}") from None
        if line is None:
            code = proc.wait()
            raise AssertionError(f"the world exited with {code} before ready; stderr:\n{stderr_path.read_text()}")
        if line.startswith("ready "):
            break
    info = dict(token.split("=", 1) for token in line.split()[1:])
    env_file = Path(info["env"])
    secrets = read_env_file(env_file)
    return RunningWorld(config=Path(info["config"]), env_file=env_file, secrets=secrets,
                        env={**base_env(), **secrets}, info=info, proc=proc, stderr_path=stderr_path, lines=lines)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


__all__ = ["RunningWorld", "alive", "base_env", "read_env_file", "start_world", "world_command"]
