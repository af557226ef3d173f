"""`quantarb record` and `quantarb replay`: capture raw feed frames, and judge them again.

`record` runs only the market-data feeds (the sim world's in the demo) with a frame tap
into a FrameRecorder, and, when MT5 is configured, the listener's MT5 side with a tick tap:
every tick body an EA posts and the listener accepts is kept as feed `mt5:<terminal>` (in
the demo, the simulated EA posts the simulated broker's ticks). Nothing trades: the EA's
command polls find nothing. A live progress display goes to stderr. `replay` is
`engine.replay`: the whole engine on the recorded clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from core.clock import RealClock
from core.config import QuantarbConfig
from core.models import Quote
from engine.demo import DemoEa, build_world, is_simulated
from engine.mt5_side import MissingTerminalSecret, Mt5Side
from engine.mt5_side import terminal_secrets as mt5_terminal_secrets
from engine.settings import Secrets
from engine.signals import stop_on_signals
from engine.sources import build_feeds
from feeds.recording import MT5_FEED_PREFIX, FrameRecorder


@dataclass(slots=True)
class RecordResult:
    path: Path
    frames: int
    by_feed: dict[str, int]
    seconds: float
    paths: list[Path]  # every part written (one without rotation)


class RecordError(RuntimeError):
    """A recording that cannot start as configured (an MT5 terminal without its secret)."""


def _mt5_side(config: QuantarbConfig, clock: RealClock, secrets: Secrets | None,
              simulated: bool) -> tuple[Mt5Side | None, DemoEa | None]:
    """The listener's MT5 side for recording ticks (None without MT5), and in the demo the
    simulated EA that streams to it."""
    venue = config.venues.mt5
    if venue is None or not venue.terminals:
        return None, None
    pairs = config.build_pairs()
    instruments = [i for p in pairs for i in p.instruments if i.venue == "mt5"]
    try:
        terminal_secrets = mt5_terminal_secrets(venue, secrets, simulated)
    except MissingTerminalSecret as exc:
        raise RecordError(str(exc)) from None
    ea = None
    if simulated:
        first = venue.terminals[0]
        ea = DemoEa(first, terminal_secrets[first], instruments, clock, seed=config.demo.seed,
                    magic=venue.magic, state_file=None)
    side = Mt5Side(venue, config.listener, terminal_secrets, instruments, clock, _ignore,
                   status=lambda: "ok", terminal=ea)
    return side, ea


async def record(config: QuantarbConfig, *, is_demo: bool, duration: float, out: Path,
                 console: Console | None = None, secrets: Secrets | None = None,
                 max_bytes: int | None = None, rotate_s: float | None = None) -> RecordResult:
    """Record every frame the configured feeds (and MT5 terminals) send for `duration`
    seconds (or until a signal); `max_bytes`/`rotate_s` rotate it into numbered parts."""
    clock = RealClock()
    mt5, ea = _mt5_side(config, clock, secrets, is_simulated(config, is_demo=is_demo))
    world = build_world(config, clock, is_demo=is_demo, on_mt5_tick=ea.on_tick if ea is not None else None)
    console = console or Console(stderr=True)
    stop = asyncio.Event()
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    with FrameRecorder(out, clock, max_bytes=max_bytes, rotate_s=rotate_s) as recorder, stop_on_signals(stop):
        try:
            if world is not None:
                await world.start()
            if mt5 is not None:

                def tick_tap(terminal: str, body: bytes, recv_ns: int) -> None:
                    # An accepted body is valid UTF-8 JSON (the listener decoded it).
                    recorder.write("mt5", MT5_FEED_PREFIX + terminal, body.decode(), recv_ns)

                mt5.bridge.tap_ticks(tick_tap)
                await mt5.start()
            feeds = build_feeds(config, _ignore, clock, world)
            for feed in feeds:
                venue = feed.venue

                def tap(name: str, frame: str | bytes, recv_ns: int, venue: str = venue) -> None:
                    recorder.write(venue, name, frame, recv_ns)

                feed.tap = tap
            tasks = [asyncio.create_task(f.run(), name=f"record-{f.name}") for f in feeds]
            with Progress(
                TextColumn("[bold]recording[/] {task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"),
                console=console,
                transient=not console.is_terminal,
            ) as progress:
                task_id = progress.add_task(str(out), total=duration, detail="")
                rotating = max_bytes is not None or rotate_s is not None
                while not stop.is_set():
                    elapsed = time.monotonic() - started
                    detail = "  ".join(
                        f"{f.name} {f.health.state} {recorder.by_feed.get(f.name, 0):,}" for f in feeds
                    ) + "".join(f"  {name} {n:,}" for name, n in recorder.by_feed.items()
                                if name.startswith(MT5_FEED_PREFIX))
                    progress.update(task_id, completed=min(elapsed, duration),
                                    detail=f"{recorder.frames:,} frames  {detail}"
                                    + (f"  part {recorder.part}" if rotating else ""))
                    if elapsed >= duration:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=min(0.25, duration - elapsed))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if mt5 is not None:
                with contextlib.suppress(Exception):
                    await mt5.stop()
            if world is not None:
                await world.stop()
    return RecordResult(out, recorder.frames, dict(recorder.by_feed), time.monotonic() - started,
                        list(recorder.paths))


def _ignore(_quote: Quote) -> None:
    """Recording keeps frames, not quotes."""
