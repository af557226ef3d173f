"""engine/memory_trim.py: glibc's malloc_trim on a timer (issue 19). The real call on this
process where there is glibc; a stand-in to count what the timer does."""

from __future__ import annotations

import asyncio

import pytest

from core.config import demo_config
from engine.memory_trim import MemoryTrim, load_malloc_trim


def test_the_default_trims_once_a_minute_and_zero_turns_it_off() -> None:
    assert demo_config().engine.memory_trim_s == 60.0
    assert MemoryTrim(0.0, trim=lambda pad: 1).active is False
    assert MemoryTrim(60.0, trim=None).active is (load_malloc_trim() is not None)
    with pytest.raises(ValueError, match="interval_s -1"):
        MemoryTrim(-1.0)


@pytest.mark.skipif(load_malloc_trim() is None, reason="not glibc")
def test_on_glibc_a_trim_gives_back_the_pages_a_freed_block_left_in_the_middle_of_the_heap() -> None:
    """Blocks below the mmap threshold land in the heap; one kept at the top holds the rest
    there after they are freed: only a trim gives their pages back."""
    from quantarb_tui.bench.memory_map import read_rss_breakdown

    trim = MemoryTrim(60.0)
    first = trim.trim_now()
    blocks = [bytearray(100_000) for _ in range(200)]  # ~20 MB, each below the 128 KiB threshold
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touched: resident
    top = bytearray(100_000)  # allocated last: at the top of the heap
    del blocks
    before = read_rss_breakdown()
    assert trim.trim_now() is True
    after = read_rss_breakdown()
    assert before is not None and after is not None
    assert before.kib["main_heap"] - after.kib["main_heap"] > 10_000  # KiB given back
    assert trim.calls == 2 and trim.released == int(first) + 1
    del top


async def test_the_timer_trims_every_interval_until_cancelled() -> None:
    calls: list[int] = []
    three = asyncio.Event()

    def fake(pad: int) -> int:
        calls.append(pad)
        if len(calls) == 3:
            three.set()
        return 0

    trim = MemoryTrim(0.01, trim=fake)
    task = asyncio.create_task(trim.run())
    try:
        await asyncio.wait_for(three.wait(), timeout=10)
    finally:
        task.cancel()
    assert set(calls) == {0} and trim.calls == len(calls) and trim.released == 0
