"""Ending the engine's tasks without hanging: a stop must finish even when a task misbehaves."""

from __future__ import annotations

import asyncio

from core.clock import Clock
from engine.events import EngineEvent, EventLog


async def cancel_and_wait(
    tasks: list[asyncio.Task[None]], events: EventLog, clock: Clock, grace_s: float = 2.0
) -> None:
    """Cancel and await `tasks`. A cancellation lost inside a library (asyncio's timeout and a
    socket read racing on Python 3.11) is repeated, so a stop never hangs; a task that had
    failed is reported, and does not stop the rest of the shutdown."""
    for task in tasks:
        task.cancel()
    for attempt in range(3):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        _done, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            events.emit(EngineEvent(clock.time_ms(), "error",
                                    f"task {task.get_name()} ignored a cancel; cancelling again ({attempt + 1})",
                                    "warn"))
            task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            events.emit(EngineEvent(clock.time_ms(), "error",
                                    f"task {task.get_name()} had failed: {task.exception()!r}", "error"))
