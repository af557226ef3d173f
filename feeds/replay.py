"""Replay a recording as a quote source, through the same normalizers as the live feeds.

Each recorded frame goes to the `on_frame` of the feed it was recorded from (matched by
feed name), so routing, normalization and drop accounting are exactly the live ones.
Two paces:

- `run_fast()`: as fast as possible; a `ReplayClock` is set to each frame's recorded
  receive time first, so quote ages, persistence and cooldowns are judged as they were live.
- `run_realtime()`: the original timing (optionally sped up), each frame stamped with the
  live clock on delivery, as if it had just arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.clock import Clock, ReplayClock
from feeds.recording import read_recording


class FrameHandler(Protocol):
    def on_frame(self, frame: str | bytes, recv_ns: int) -> object: ...


@dataclass(slots=True)
class ReplayStats:
    frames: int = 0
    by_feed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # frames of feeds not configured
    first_ns: int = 0
    last_ns: int = 0

    @property
    def span_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.frames else 0.0

    def _count(self, feed: str, recv_ns: int, handled: bool) -> None:
        target = self.by_feed if handled else self.skipped
        target[feed] = target.get(feed, 0) + 1
        if handled:
            if not self.frames:
                self.first_ns = recv_ns
            self.frames += 1
            self.last_ns = recv_ns


class ReplaySource:
    def __init__(self, path: str | Path, handlers: Mapping[str, FrameHandler]) -> None:
        self.path = Path(path)
        self.handlers = dict(handlers)

    def run_fast(self, clock: ReplayClock) -> ReplayStats:
        stats = ReplayStats()
        for rec in read_recording(self.path):
            handler = self.handlers.get(rec.feed)
            stats._count(rec.feed, rec.recv_ns, handler is not None)
            if handler is not None:
                clock.now_ns = rec.recv_ns
                handler.on_frame(rec.frame, rec.recv_ns)
        return stats

    async def run_realtime(self, clock: Clock, speed: float = 1.0) -> ReplayStats:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        stats = ReplayStats()
        loop = asyncio.get_running_loop()
        start_loop = loop.time()
        start_rec: int | None = None
        for rec in read_recording(self.path):
            handler = self.handlers.get(rec.feed)
            stats._count(rec.feed, rec.recv_ns, handler is not None)
            if handler is None:
                continue
            if start_rec is None:
                start_rec = rec.recv_ns
            due = start_loop + (rec.recv_ns - start_rec) / 1e9 / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            handler.on_frame(rec.frame, clock.monotonic_ns())
        return stats
