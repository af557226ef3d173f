"""`quantarb record` and `quantarb replay`: capture raw feed frames, and judge them again.

`record` runs only the market-data feeds (the sim world's in the demo) with a frame tap
into a FrameRecorder, showing a live progress display on stderr. `replay` is
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
from engine.demo import build_world
from engine.signals import stop_on_signals
from engine.sources import build_feeds
from feeds.recording import FrameRecorder


@dataclass(slots=True)
class RecordResult:
    path: Path
    frames: int
    by_feed: dict[str, int]
    seconds: float


async def record(config: QuantarbConfig, *, is_demo: bool, duration: float, out: Path,
                 console: Console | None = None) -> RecordResult:
    """Record every frame the configured feeds receive for `duration` seconds (or until a signal)."""
    clock = RealClock()
    world = build_world(config, clock, is_demo=is_demo)
    console = console or Console(stderr=True)
    stop = asyncio.Event()
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    with FrameRecorder(out) as recorder, stop_on_signals(stop):
        try:
            if world is not None:
                await world.start()
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
                while not stop.is_set():
                    elapsed = time.monotonic() - started
                    detail = "  ".join(
                        f"{f.name} {f.health.state} {recorder.by_feed.get(f.name, 0):,}" for f in feeds
                    )
                    progress.update(task_id, completed=min(elapsed, duration),
                                    detail=f"{recorder.frames:,} frames  {detail}")
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
            if world is not None:
                await world.stop()
    return RecordResult(out, recorder.frames, dict(recorder.by_feed), time.monotonic() - started)


def _ignore(_quote: Quote) -> None:
    """Recording keeps frames, not quotes."""
