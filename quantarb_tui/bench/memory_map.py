"""Where a process's resident memory is (`bench soak`'s `rss_breakdown`, issue 19).

The Python heap can be flat while RSS rises: the rest is C memory (SQLite's page caches,
glibc's arenas, thread stacks) or mapped files. This module splits RSS by what holds it, from
`/proc/self/smaps`, glibc's `mallinfo2` and SQLite's own allocator counter, so the soak report
says where a slope comes from instead of leaving it "not explained".

Every reader returns None (or an empty breakdown) where the source does not exist (not Linux,
not glibc, SQLite without the symbol): the bench still runs, with fewer columns.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# glibc: a thread's arena is a heap of at most HEAP_MAX_SIZE (64 MiB on 64-bit), mmap'd at an
# address aligned to that size; that alignment is what tells it from other anonymous mappings.
ARENA_ALIGN = 64 * 1024 * 1024
# pthread's default stack (ulimit -s 8 MiB): a thread's stack is one writable mapping of exactly
# this size right above its guard page (the kernel merges adjacent anonymous mappings, so eight
# of pymalloc's 1 MiB arenas can make an 8 MiB mapping too: the guard tells them apart).
THREAD_STACK_BYTES = 8 * 1024 * 1024
GUARD_BYTES = 4096

KINDS = ("main_heap", "thread_arenas", "thread_stacks", "anon_other", "sqlite_files", "files", "other")


class SmapsError(ValueError):
    """`/proc/<pid>/smaps` text that is not what the kernel writes."""


@dataclass(frozen=True, slots=True)
class RssBreakdown:
    """RSS by kind, KiB; `arenas` counts glibc's thread arenas (one per thread that mallocs,
    up to 8 per core)."""

    kib: dict[str, int]
    arenas: int

    @property
    def total_kib(self) -> int:
        return sum(self.kib.values())


def _kind(start: int, size: int, perms: str, name: str, after_guard: bool) -> str:
    if name == "[heap]":
        return "main_heap"  # the main arena (brk): the event loop's thread, Python's big blocks
    if name.startswith("["):
        return "other"  # [stack], [vdso], [vvar]
    if name:
        base = name.rsplit("/", 1)[-1]
        if base.endswith(("-shm", "-wal", ".db")):
            return "sqlite_files"  # the WAL index (-shm) is mmap'd; the database if mmap_size > 0
        return "files"  # code and shared libraries
    if "w" not in perms:
        return "other"  # guard pages, reserved arena tails
    if start % ARENA_ALIGN == 0:  # a thread stack's writable part starts after its guard page
        return "thread_arenas"
    if size == THREAD_STACK_BYTES and after_guard:
        return "thread_stacks"
    return "anon_other"  # pymalloc's arenas, malloc's mmap'd blocks (>= its mmap threshold)


def parse_smaps(text: str | Iterable[str]) -> RssBreakdown:
    """Split the `Rss:` of each mapping in smaps `text` (or its lines) by kind (see `KINDS`).

    Raises SmapsError on a line that is neither a mapping header nor a `Key: value` field, or
    an `Rss:` before any header."""
    kib = dict.fromkeys(KINDS, 0)
    arenas = 0
    kind: str | None = None
    guard_end = -1  # where the last guard page (an unnamed ---p page) ended
    lines = text.splitlines() if isinstance(text, str) else text
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        head, _, rest = line.partition(" ")
        if head.endswith(":"):  # a field of the current mapping
            if head == "Rss:":
                if kind is None:
                    raise SmapsError(f"line {number}: Rss before any mapping")
                value = rest.split()
                if len(value) != 2 or value[1] != "kB" or not value[0].isdigit():
                    raise SmapsError(f"line {number}: Rss is not '<n> kB': {line[:80]!r}")
                kib[kind] += int(value[0])
            continue
        fields = line.split(maxsplit=5)
        lo, sep, hi = head.partition("-")
        if not sep or len(fields) < 5:
            raise SmapsError(f"line {number}: not a mapping header: {line[:80]!r}")
        try:
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            raise SmapsError(f"line {number}: bad address range: {head[:40]!r}") from None
        if end < start:
            raise SmapsError(f"line {number}: range ends before it starts: {head[:40]!r}")
        perms = fields[1]
        name = fields[5].strip() if len(fields) > 5 else ""
        kind = _kind(start, end - start, perms, name, after_guard=start == guard_end)
        guard_end = end if (perms.startswith("---") and not name and end - start == GUARD_BYTES) else -1
        if kind == "thread_arenas":
            arenas += 1
    return RssBreakdown(kib=kib, arenas=arenas)


def read_rss_breakdown(pid: int | str = "self") -> RssBreakdown | None:
    """This process's (or `pid`'s) RSS by kind; None where there is no smaps (not Linux)."""
    try:
        # Line by line: the whole text is a quarter of a megabyte, and a block that size, made
        # and freed every sample in the heap being measured, was the bench's own fragmentation.
        with open(f"/proc/{pid}/smaps", encoding="ascii", errors="replace") as f:
            return parse_smaps(f)
    except OSError:
        return None


def thread_count() -> int:
    """Threads of this process (each one that mallocs may own a glibc arena)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@dataclass(frozen=True, slots=True)
class MallInfo:
    """glibc's `mallinfo2`, summed over every arena, bytes: `arena` taken from the system
    outside mmap, `in_use` (uordblks) of it allocated, `free` (fordblks) held free inside it
    (fragmentation and the top chunk not given back), `mmapped` (hblkhd) big blocks mmap'd apart."""

    arena: int
    in_use: int
    free: int
    mmapped: int


def _load_mallinfo() -> Callable[[], MallInfo] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):  # not glibc, or glibc < 2.33 (Windows: TypeError)
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []

    def read() -> MallInfo:
        info = fn()
        return MallInfo(int(info.arena), int(info.uordblks), int(info.fordblks), int(info.hblkhd))

    return read


def _load_sqlite_memory() -> Callable[[], int] | None:
    """`sqlite3_memory_used()` of the libsqlite3 Python's sqlite3 module is linked to: every
    byte SQLite holds in this process (page caches of every connection, statements, schema)."""
    try:
        import _sqlite3

        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = []
    return lambda: int(fn())


@dataclass(frozen=True, slots=True)
class PymallocStats:
    """CPython's small-object allocator (`sys._debugmallocstats`), bytes: `arenas` mapped (1 MiB
    each in 3.11, in `anon_other`), `in_use` in allocated blocks, `free` in free blocks and
    unused pools inside them. Arenas rising with `in_use` flat is fragmentation (an arena goes
    back only when every block in it is free), not objects kept."""

    arenas: int
    in_use: int
    free: int


_PYMALLOC_FIELDS = {
    "arenas": re.compile(r"^(\d+) arenas \* (\d+) bytes/arena\s*=", re.M),
    "in_use": re.compile(r"^# bytes in allocated blocks\s*=\s*([\d,]+)\s*$", re.M),
    "available": re.compile(r"^# bytes in available blocks\s*=\s*([\d,]+)\s*$", re.M),
    "unused": re.compile(r"^(\d+) unused pools \* (\d+) bytes\s*=", re.M),
}


def parse_pymalloc_stats(text: str) -> PymallocStats:
    """The figures of `sys._debugmallocstats()`'s report; ValueError when one is missing."""
    found = {name: rx.search(text) for name, rx in _PYMALLOC_FIELDS.items()}
    missing = [name for name, m in found.items() if m is None]
    if missing:
        raise ValueError(f"not a pymalloc report: no {', '.join(missing)}")
    arenas, unused = found["arenas"], found["unused"]
    in_use, available = found["in_use"], found["available"]
    assert arenas is not None and unused is not None and in_use is not None and available is not None
    return PymallocStats(
        arenas=int(arenas[1]) * int(arenas[2]),
        in_use=int(in_use[1].replace(",", "")),
        free=int(available[1].replace(",", "")) + int(unused[1]) * int(unused[2]),
    )


def read_pymalloc_stats() -> PymallocStats | None:
    """This process's pymalloc figures; None where there is no report (not CPython, or built
    without pymalloc). The report goes to the C stderr: fd 2 points at a temporary file for the
    call (a line another thread writes to stderr meanwhile is lost)."""
    report = getattr(sys, "_debugmallocstats", None)
    if report is None:
        return None
    with tempfile.TemporaryFile() as out:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (closed): no report, the bench goes on without it
            return None
        try:
            os.dup2(out.fileno(), 2)
            report()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("ascii", errors="replace")
    try:
        return parse_pymalloc_stats(text)
    except ValueError:
        return None


mallinfo = _load_mallinfo()
sqlite_memory_used = _load_sqlite_memory()

__all__ = ["KINDS", "MallInfo", "PymallocStats", "RssBreakdown", "SmapsError", "mallinfo", "parse_pymalloc_stats",
           "parse_smaps", "read_pymalloc_stats", "read_rss_breakdown", "sqlite_memory_used", "thread_count"]
