"""engine/memory_trim.py: glibc's malloc_trim on a timer (issue 19). The real call on this
process where there is glibc; a stand-in to count what the timer does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import demo_config
from engine.memory_trim import M_ARENA_MAX, M_MMAP_THRESHOLD, MemoryTrim, load_malloc_trim, tune_malloc

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_trims_once_a_minute_and_zero_turns_it_off() -> None:
    assert demo_config().engine.memory_trim_s == 60.0
    assert MemoryTrim(0.0, trim=lambda pad: 1).active is False
    assert MemoryTrim(60.0, trim=None).active is (load_malloc_trim() is not None)
    with pytest.raises(ValueError, match="interval_s -1"):
        MemoryTrim(-1.0)


HEAP_HOLE = """
import json
from engine.memory_trim import MemoryTrim
from quantarb_tui.bench.memory_map import read_rss_breakdown
trim = MemoryTrim(60.0)
first = trim.trim_now()
blocks = [bytearray(100_000) for _ in range(200)]  # ~20 MB, each below the 128 KiB mmap threshold
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])  # touched: resident
top = bytearray(100_000)  # allocated last: at the top of the heap, it keeps the rest there
del blocks
before = read_rss_breakdown()
second = trim.trim_now()
after = read_rss_breakdown()
print(json.dumps({"first": first, "second": second, "calls": trim.calls, "released": trim.released,
                  "max_s": trim.max_s, "given_back_kib": before.kib["main_heap"] - after.kib["main_heap"]}))
"""


@pytest.mark.skipif(load_malloc_trim() is None, reason="not glibc")
def test_on_glibc_a_trim_gives_back_the_pages_freed_blocks_left_in_the_middle_of_the_heap() -> None:
    """In a fresh interpreter (this one's heap has holes from earlier tests): 20 MB of blocks
    below the mmap threshold, freed under one kept at the top, stay resident until a trim."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", HEAP_HOLE], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["second"] is True and out["given_back_kib"] > 10_000
    assert out["calls"] == 2 and out["released"] == int(out["first"]) + 1 and out["max_s"] > 0


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
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(calls) == {0} and trim.calls == len(calls) and trim.released == 0


def test_the_runtime_trims_on_the_configured_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.runtime import Runtime

    monkeypatch.setenv("HOME", str(tmp_path))
    config = demo_config()
    off = config.model_copy(update={"engine": config.engine.model_copy(update={"memory_trim_s": 0.0})})
    on = Runtime(config, is_demo=True, ledger_path=str(tmp_path / "on.db"), mt5_in_process=True)
    assert on.memory_trim.interval_s == 60.0 and on.memory_trim.active is (load_malloc_trim() is not None)
    assert not Runtime(off, is_demo=True, ledger_path=str(tmp_path / "off.db"), mt5_in_process=True).memory_trim.active


def test_tune_malloc_sets_one_arena_and_a_fixed_mmap_threshold() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert tune_malloc({}, mallopt) == {"arena_max": 1, "mmap_threshold": 128 * 1024}
    assert calls == [(M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 128 * 1024)]


@pytest.mark.parametrize("name", ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"])
def test_tune_malloc_leaves_the_operators_own_settings(name: str) -> None:
    calls: list[tuple[int, int]] = []
    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert tune_malloc({name: "2"}, mallopt) == {}
    assert calls == []


def test_tune_malloc_reports_only_what_glibc_took() -> None:
    assert tune_malloc({}, lambda p, v: 0 if p == M_ARENA_MAX else 1) == {"mmap_threshold": 128 * 1024}


THRESHOLD = """
import ctypes, json, sys
from engine.memory_trim import tune_malloc
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
info = ctypes.CDLL(None).mallinfo2
info.restype = MallInfo2
tuned = tune_malloc({}) if sys.argv[1] == "tuned" else {}
big = bytearray(1 << 20)  # mapped; freed, it raises glibc's dynamic threshold to its size
del big
before = info().hblks
block = bytearray(200_000)
print(json.dumps({"tuned": tuned, "mapped": info().hblks - before}))
"""


@pytest.mark.skipif(load_malloc_trim() is None, reason="glibc only")
@pytest.mark.parametrize(("how", "mapped"), [("tuned", 1), ("default", 0)])
def test_on_glibc_a_large_block_stays_its_own_mapping(how: str, mapped: int) -> None:
    """In a fresh interpreter (the heap's top small): after a 1 MiB block is freed, glibc's own
    threshold serves a 200 KB block from the heap (where, freed between live blocks, it leaves a
    hole); tuned, the threshold stays at 128 KiB and the block is a mapping of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", THRESHOLD, how], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    res = json.loads(out)
    assert res["mapped"] == mapped, res
    assert res["tuned"] == ({"arena_max": 1, "mmap_threshold": 128 * 1024} if how == "tuned" else {})
