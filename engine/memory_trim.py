"""Give the free pages inside glibc's heaps back to the system, on a timer (issue 19).

glibc returns memory to the kernel only from the top of a heap; a free chunk in the middle,
between live ones, stays resident however long it is unused. A process that runs for weeks and
turns its bounded collections over (every group, order, HTTP body and SQLite page comes and
goes) accumulates such chunks: measured on the demo, untraced, the free memory inside the
arenas (`mallinfo2().fordblks`) rose +2.3 MB/h while what was in use stayed flat, and that was
most of the RSS slope (docs/performance.md, session 9). `malloc_trim(0)` walks every arena and
`madvise`s each whole free page away (glibc >= 2.8); the pages come back zeroed if needed.

It runs on the event loop's thread, which waits for it, and it holds each arena's lock while it
walks it (SQLite's threads wait for theirs meanwhile): measured in the soaks, `max_s` and
`total_s`. So it runs every `interval_s` (`engine.memory_trim_s`; 0 turns it off), never per
event. Not in a worker thread: that thread would get an arena of its own to trim. Where there
is no glibc (musl, macOS) there is nothing to call and nothing is done.

`tune_malloc` sets two of glibc's options at start (`engine.malloc_tuning`), before the
engine's threads exist:
- **one arena for every thread** (`M_ARENA_MAX` 1): each thread that allocates (SQLite's
  connection threads, the default executor) otherwise gets an arena of its own, a heap with
  its own free chunks between live ones; the event loop and SQLite then share one heap, and
  the GIL means they seldom contend for its lock;
- **a fixed mmap threshold** (`M_MMAP_THRESHOLD` 128 KiB, glibc's starting value): glibc
  raises the threshold to the size of each mapped block freed (up to 32 MiB), after which
  blocks that size come from the heap, where a large block freed between live ones leaves a
  hole the heap cannot give back; fixed, a block of 128 KiB or more is its own mapping,
  returned whole when freed.
Measured side by side on the accelerated soak (docs/performance.md, session 10). An operator
who sets glibc's own environment variables for this keeps them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable, Mapping

TrimFn = Callable[[int], int]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
ARENA_MAX = 1
MMAP_THRESHOLD = 128 * 1024
# The operator's own settings of the same options, which tune_malloc leaves alone.
MALLOC_ENVIRONMENT = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def _libc(name: str, *argtypes: type[ctypes.c_int] | type[ctypes.c_size_t]) -> Callable[..., int] | None:
    """glibc's function `name` returning an int; None elsewhere (not Linux, or Linux without
    glibc: Windows cannot even open "no library", `CDLL(None)` raises TypeError there)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = list(argtypes)
    return lambda *args: int(fn(*args))


def load_malloc_trim() -> TrimFn | None:
    """glibc's `malloc_trim`; None elsewhere."""
    return _libc("malloc_trim", ctypes.c_size_t)


def tune_malloc(environ: Mapping[str, str] | None = None,
                mallopt: Callable[[int, int], int] | None = None) -> dict[str, int]:
    """Set glibc's arena count and mmap threshold (module docstring); returns what was set
    ({} where there is no glibc, or where the environment already says)."""
    env = os.environ if environ is None else environ
    if any(name in env for name in MALLOC_ENVIRONMENT):
        return {}
    if mallopt is None:
        mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
        if mallopt is None:
            return {}
    done: dict[str, int] = {}
    for name, param, value in (("arena_max", M_ARENA_MAX, ARENA_MAX),
                               ("mmap_threshold", M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if mallopt(param, value) == 1:  # mallopt answers 1 on success
            done[name] = value
    return done


class MemoryTrim:
    """Calls `malloc_trim(0)` every `interval_s`; counts the calls, those that gave memory back,
    and the time they took (`bench soak` reports them)."""

    def __init__(self, interval_s: float, trim: TrimFn | None = None) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s {interval_s}: must be >= 0 (0: off)")
        self.interval_s = interval_s
        self._trim = trim if trim is not None else load_malloc_trim()
        self.calls = 0
        self.released = 0  # calls after which glibc said it gave memory back
        self.total_s = 0.0
        self.max_s = 0.0  # the longest call: the event loop waits that long

    @property
    def active(self) -> bool:
        return self.interval_s > 0 and self._trim is not None

    def trim_now(self) -> bool:
        """One trim; whether memory was given back (False where there is no glibc)."""
        if self._trim is None:
            return False
        started = time.perf_counter()
        gave_back = self._trim(0) == 1
        took = time.perf_counter() - started
        self.total_s += took
        self.max_s = max(self.max_s, took)
        self.calls += 1
        self.released += gave_back
        return gave_back

    async def run(self) -> None:
        """Trim every `interval_s` until cancelled (returns at once when not `active`)."""
        if not self.active:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            self.trim_now()


__all__ = ["MemoryTrim", "TrimFn", "load_malloc_trim", "tune_malloc"]
