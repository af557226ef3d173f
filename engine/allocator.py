"""Give the C allocator's free pages back to the OS now and then (glibc's `malloc_trim`).

`quantarb headless` runs for weeks. With the Python heap flat (issue 19: every collection
bounded), RSS still crept up at the demo's load: glibc keeps what Python's larger blocks (HTTP
bodies, JSON documents, dict and list buffers over pymalloc's 512 bytes) free in the middle of
its heap, and only gives back the top of it. The soak measured it: the Python heap -0.75 MB/h,
malloc's memory in use +0.84 MB/h, its free memory +3.5 MB/h, RSS +4.0 MB/h
(docs/performance.md, session 7). `malloc_trim(0)` hands every whole free page in every arena
back (`madvise(MADV_DONTNEED)`), so RSS follows what is in use. It walks the heap (well under a
millisecond for the engine's tens of MB), once a minute (`TRIM_EVERY_S`), on the event loop.

Not glibc (musl, macOS): nothing to do, and `AllocatorTrim.available` says so.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_EVERY_S = 60.0


def _malloc_trim() -> Callable[[], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: int(fn(0))


class AllocatorTrim:
    """Calls `malloc_trim(0)` every `every_s` seconds while `run()` runs."""

    def __init__(self, every_s: float = TRIM_EVERY_S, trim: Callable[[], int] | None = None) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, not {every_s}")
        self.every_s = every_s
        self._trim = trim if trim is not None else _malloc_trim()
        self.trims = 0  # calls made
        self.released = 0  # calls that gave memory back (malloc_trim returned 1)

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim_now(self) -> bool:
        """One trim; True when the allocator gave memory back."""
        if self._trim is None:
            return False
        self.trims += 1
        gave = self._trim() == 1
        self.released += gave
        return gave

    async def run(self) -> None:
        if self._trim is None:
            return
        while True:
            await asyncio.sleep(self.every_s)
            self.trim_now()
