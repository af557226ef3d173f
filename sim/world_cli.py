"""`quantarb sim world`: a rehearsal world of simulated venues, one process each, for live mode.

It starts the simulated OKX, Binance spot and Binance USD-M venues (`quantarb sim venue ...`)
and the simulated MT5 terminal (`quantarb mt5 sim`, posting to the listener port the engine
will open), all on 127.0.0.1 and all pricing one market: each process steps the same seeded
`SyntheticMarket` on a wall-clock grid from a shared epoch (`sim.epoch_market`), so their
prices agree and the seeded dislocations are the only edges. Once every child answered (a
venue: its `listening on` line and its REST server time; the terminal: its `started` line) it
writes a live-mode config for them (sim/world_config.py) and the per-run secrets next to it
(`<config>.env`, mode 0600), prints one line starting `ready`, and serves until SIGTERM,
SIGINT or SIGHUP. Then `quantarb headless --config <config>`, with the env file loaded,
trades live against it.

Supervision: a child that exits ends the world with code 3 and a line naming it (never a
silent half-world); a stop signal stops every child (SIGTERM, SIGKILL after a grace period)
and exits 0. Children run in their own sessions (the terminal's Ctrl-C reaches the world
only, which stops them in order) and, on Linux, are sent SIGTERM if the world itself dies.
The config and env files are kept. Secrets reach the children through their environment,
never their command lines, and are printed nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from sim.world_config import (
    DEFAULT_TERMINAL,
    BinanceMarket,
    WorldEndpoints,
    WorldSecrets,
    env_file_text,
    to_toml,
    world_config,
    write_file,
)

EXIT_USAGE = 2
EXIT_FAILED = 3
HOST = "127.0.0.1"

VENUES = ("okx", "binance-spot", "binance-usdm")
TIME_PATHS: Mapping[str, str] = {
    "okx": "/api/v5/public/time",
    "binance-spot": "/api/v3/time",
    "binance-usdm": "/fapi/v1/time",
}
MT5 = "mt5"
_LISTENING = "listening on "
_STARTED = "started terminal "


class WorldError(Exception):
    """The world cannot start or keep running; the message names the part (never a secret)."""


@dataclass(frozen=True, slots=True)
class WorldOptions:
    config_out: Path
    binance_market: BinanceMarket = "usdm"
    ledger: Path | None = None
    seed: int = 7
    listener_port: int = 0
    terminal: str = DEFAULT_TERMINAL
    startup_timeout_s: float = 30.0
    stop_grace_s: float = 5.0
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def env_out(self) -> Path:
        return self.config_out.with_name(self.config_out.name + ".env")

    @property
    def ledger_path(self) -> Path:
        """Next to the config unless given: `<config stem>.db`."""
        if self.ledger is not None:
            return self.ledger.expanduser().absolute()
        return self.config_out.with_name(self.config_out.stem + ".db")


@dataclass(slots=True)
class _Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    base_url: str | None = None
    forwarder: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def process(self) -> asyncio.subprocess.Process:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (bound and released: the engine binds it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_argvs(opts: WorldOptions, *, epoch_ms: int, listener_url: str) -> list[_Child]:
    """The four children's command lines (no secret on any of them)."""
    cli = [opts.python, "-m", "quantarb_tui.cli"]
    shared = ["--seed", str(opts.seed), "--epoch-ms", str(epoch_ms)]
    children = [_Child(v, [*cli, "sim", "venue", v, "--host", HOST, "--port", "0", *shared]) for v in VENUES]
    children.append(_Child(MT5, [*cli, "mt5", "sim", "--url", listener_url, "--terminal", opts.terminal, *shared]))
    return children


def child_env(secrets: WorldSecrets, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every child gets: ours without any QUANTARB_* variable (an operator's
    real keys stay out of the simulators), plus this run's secrets under the engine's names,
    which `quantarb sim venue` and `quantarb mt5 sim` read."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.upper().startswith("QUANTARB_")}
    env.update(secrets.env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


_PR_SET_PDEATHSIG = 1


def death_signal(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """Linux: a call for a forked child (a `preexec_fn`) that has it get `sig` when its parent
    dies, even by SIGKILL (no orphaned venues, no orphaned bench twin). `prctl` is looked up
    here, in the parent: the forked child (the asyncio child watcher has threads by then) only
    makes the one call. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:  # pragma: no cover - runs in the forked child
        prctl(_PR_SET_PDEATHSIG, int(sig))

    return in_child


class World:
    """The running world: its children, started, watched and stopped together."""

    def __init__(self, opts: WorldOptions, *, out: Callable[[str], None], err: Callable[[str], None]) -> None:
        self.opts = opts
        self._out = out
        self._err = err
        self.secrets = WorldSecrets.generate(opts.terminal)
        self.listener_port = opts.listener_port or free_port()
        self.epoch_ms = int(time.time() * 1000)
        self.listener_url = f"http://{HOST}:{self.listener_port}"
        self.children = child_argvs(opts, epoch_ms=self.epoch_ms, listener_url=self.listener_url)

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        env = child_env(self.secrets)
        on_fork = death_signal()
        for child in self.children:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=None, start_new_session=True, preexec_fn=on_fork,
            )

    async def wait_ready(self) -> None:
        """Every child answered, or WorldError naming the first that did not."""
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            await asyncio.gather(*(self._ready(child, client) for child in self.children))

    async def _ready(self, child: _Child, client: httpx.AsyncClient) -> None:
        proc = child.process
        assert proc.stdout is not None  # started with stdout=PIPE
        want = _STARTED if child.name == MT5 else _LISTENING
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                code = await proc.wait()
                raise WorldError(f"{child.name} (pid {proc.pid}) exited with code {code} before it was ready")
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(want):
                break
            self._err(f"[{child.name}] {line}")
        if child.name == MT5:
            child.base_url = self.listener_url
        else:
            child.base_url = line.removeprefix(_LISTENING).strip()
            url = child.base_url + TIME_PATHS[child.name]
            try:
                resp = await client.get(url)
                resp.raise_for_status()
                resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise WorldError(f"{child.name} (pid {proc.pid}) does not answer {url}: {exc}") from None
        child.forwarder = asyncio.create_task(self._forward(child), name=f"world-forward-{child.name}")

    async def _forward(self, child: _Child) -> None:
        """What a child prints after it is ready goes to our stderr, named (and the pipe never fills)."""
        stdout = child.process.stdout
        assert stdout is not None  # started with stdout=PIPE
        while raw := await stdout.readline():
            self._err(f"[{child.name}] {raw.decode('utf-8', 'replace').rstrip()}")

    # ------------------------------------------------------------------ files

    def endpoints(self) -> WorldEndpoints:
        urls = {c.name: c.base_url or "" for c in self.children}
        return WorldEndpoints(okx=urls["okx"], binance_spot=urls["binance-spot"], binance_usdm=urls["binance-usdm"],
                              listener_host=HOST, listener_port=self.listener_port)

    def write_files(self) -> None:
        opts = self.opts
        data = world_config(self.endpoints(), ledger=opts.ledger_path, binance_market=opts.binance_market,
                            terminal=opts.terminal)
        header = (f"Written by `quantarb sim world` (seed {opts.seed}, epoch_ms {self.epoch_ms}): live mode\n"
                  f"against the simulated venues on this machine, valid while that world runs.\n"
                  f"Secrets: {opts.env_out.name} (load it: set -a; . {opts.env_out}; set +a).")
        write_file(opts.env_out, env_file_text(self.secrets.env()), mode=0o600)
        write_file(opts.config_out, to_toml(data, header), mode=0o644)

    def ready_line(self, startup_s: float) -> str:
        parts = [f"config={self.opts.config_out}", f"env={self.opts.env_out}", f"listener={self.listener_url}"]
        parts += [f"{c.name}={c.base_url}" for c in self.children if c.name != MT5]
        parts += [f"seed={self.opts.seed}", f"epoch_ms={self.epoch_ms}", f"startup_s={startup_s:.2f}"]
        parts.append("pids=" + ",".join(f"{c.name}:{c.pid}" for c in self.children))
        return "ready " + " ".join(parts)

    # ------------------------------------------------------------------ run, stop

    async def first_exit(self) -> _Child:
        """The first child to exit."""
        waits = {asyncio.ensure_future(c.process.wait()): c for c in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[next(iter(done))]

    async def stop(self) -> None:
        """SIGTERM every child still running; SIGKILL those left after the grace period."""
        running = [c for c in self.children if c.running()]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        if running:
            waits = [asyncio.ensure_future(c.process.wait()) for c in running]
            _, pending = await asyncio.wait(waits, timeout=self.opts.stop_grace_s)
            for task in pending:
                task.cancel()
        for child in self.children:
            if child.running():
                self._err(f"world: {child.name} (pid {child.pid}) ignored SIGTERM; killed")
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        for child in self.children:
            if child.forwarder is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(child.forwarder, 1.0)


async def run_world(
    opts: WorldOptions,
    *,
    out: Callable[[str], None] | None = None,
    err: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run a world until `stop` is set (or a stop signal when none is given); the exit code."""
    opts = replace(opts, config_out=opts.config_out.expanduser().absolute())
    say = out or (lambda line: print(line, flush=True))
    warn = err or (lambda line: print(line, file=sys.stderr, flush=True))
    problem = _check_paths(opts)
    if problem:
        warn(f"world: {problem}")
        return EXIT_USAGE
    if opts.ledger_path.exists():
        warn(f"world: the ledger {opts.ledger_path} is from an earlier run; the simulated venues start empty, "
             f"so its positions will not be found there (delete it, or pass --ledger)")
    done = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if stop is None else ()
    for sig in signals:
        loop.add_signal_handler(sig, done.set)
    world = World(opts, out=say, err=warn)
    started = time.monotonic()
    stopper: asyncio.Task[Any] = asyncio.ensure_future(done.wait())
    try:
        try:
            await world.start()
        except OSError as exc:
            raise WorldError(f"cannot start a part: {exc}") from None
        ready: asyncio.Task[Any] = asyncio.ensure_future(world.wait_ready())
        finished, _ = await asyncio.wait({ready, stopper}, timeout=opts.startup_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        if ready not in finished:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, WorldError):
                await ready
            if stopper in finished:
                return 0
            late = [c.name for c in world.children if c.base_url is None]
            raise WorldError(f"not ready within {opts.startup_timeout_s:g} s: {', '.join(late)}")
        ready.result()
        world.write_files()
        say(world.ready_line(time.monotonic() - started))
        exited: asyncio.Task[Any] = asyncio.ensure_future(world.first_exit())
        finished, _ = await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if exited in finished:
            child: _Child = exited.result()
            raise WorldError(f"{child.name} (pid {child.pid}) exited with code {child.process.returncode}; "
                             f"stopping the world")
        exited.cancel()
        return 0
    except WorldError as exc:
        warn(f"world: {exc}")
        return EXIT_FAILED
    finally:
        stopper.cancel()
        await world.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        say("stopped")


def _check_paths(opts: WorldOptions) -> str | None:
    folder = opts.config_out.parent
    if not folder.is_dir():
        return f"--config-out: the folder {folder} does not exist"
    if opts.config_out.is_dir():
        return f"--config-out: {opts.config_out} is a folder"
    if not opts.ledger_path.parent.is_dir():
        return f"--ledger: the folder {opts.ledger_path.parent} does not exist"
    if opts.startup_timeout_s <= 0 or opts.stop_grace_s <= 0:
        return "the startup timeout and the stop grace period must be > 0"
    return None


def main(opts: WorldOptions) -> int:
    return asyncio.run(run_world(opts))


__all__ = ["EXIT_FAILED", "EXIT_USAGE", "World", "WorldError", "WorldOptions", "child_argvs", "child_env",
           "free_port", "main", "run_world"]
