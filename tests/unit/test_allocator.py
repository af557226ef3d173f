"""engine/allocator.py: the periodic malloc_trim that lets RSS follow the memory in use."""

from __future__ import annotations

import asyncio
import sys

import pytest

from engine.allocator import AllocatorTrim


async def test_run_trims_every_interval_and_counts_what_gave_memory_back() -> None:
    answers = [1, 0, 1, 1]
    calls: list[int] = []
    task: asyncio.Task[None] | None = None

    def fake_trim() -> int:
        calls.append(1)
        if len(calls) == len(answers):
            assert task is not None
            task.cancel()  # the fourth is the last: run() stops at its next sleep
        return answers[len(calls) - 1]

    trim = AllocatorTrim(every_s=0.001, trim=fake_trim)
    task = asyncio.create_task(trim.run())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)
    assert (trim.trims, trim.released) == (4, 3)


async def test_without_glibc_run_returns_at_once_and_nothing_is_trimmed() -> None:
    trim = AllocatorTrim()
    trim._trim = None  # what a non-glibc platform finds
    await asyncio.wait_for(trim.run(), 1.0)
    assert (trim.available, trim.trim_now(), trim.trims) == (False, False, 0)


@pytest.mark.parametrize("every_s", [0.0, -1.0, float("nan")])
def test_a_nonsense_interval_is_refused(every_s: float) -> None:
    with pytest.raises(ValueError, match="every_s"):
        AllocatorTrim(every_s=every_s)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_on_linux_the_real_malloc_trim_is_called() -> None:
    trim = AllocatorTrim()
    assert trim.available
    garbage = [bytes(4096) for _ in range(2000)]  # 8 MB through malloc, then freed
    del garbage
    trim.trim_now()
    assert trim.trims == 1
