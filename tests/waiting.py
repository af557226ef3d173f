"""Waiting in async tests for something the system does on its own: fail (never return) when
it has not happened within the bound, naming what was awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(cond: Callable[[], object], what: str, within: float = 10.0, poll: float = 0.005) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        await asyncio.sleep(poll)
