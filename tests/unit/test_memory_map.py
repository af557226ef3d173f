"""`bench soak`'s RSS breakdown (issue 19): /proc/<pid>/smaps split by what holds the memory.
Synthetic smaps text for the rules, this process's own smaps for the real format, and
hypothesis for the parser's refusal of anything else."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantarb_tui.bench.memory_map import KINDS, SmapsError, parse_smaps, read_rss_breakdown

ARENA = 0x7F0000000000  # 64 MiB-aligned
SMAPS = f"""\
55d0c0000000-55d0c2000000 rw-p 00000000 00:00 0                          [heap]
Size:              32768 kB
Rss:                1000 kB
{ARENA:x}-{ARENA + 0x200000:x} rw-p 00000000 00:00 0
Rss:                 300 kB
{ARENA + 0x200000:x}-{ARENA + 0x4000000:x} ---p 00000000 00:00 0
Rss:                   0 kB
7f1000000000-7f1000001000 ---p 00000000 00:00 0
Rss:                   0 kB
7f1000001000-7f1000801000 rw-p 00000000 00:00 0
Rss:                  40 kB
7f1000901000-7f1000a01000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f1100400000-7f1100c00000 rw-p 00000000 00:00 0
Rss:                8000 kB
VmFlags: rd wr mr mw me ac sd
7f2000000000-7f2000008000 rw-s 00000000 08:01 1234                       /tmp/x/soak.db-shm
Rss:                  32 kB
7f2000010000-7f2000020000 r-xp 00000000 08:01 99                         /usr/lib/libsqlite3.so.0.8.6
Rss:                  64 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
"""


def test_each_mapping_is_counted_under_its_kind() -> None:
    b = parse_smaps(SMAPS)
    # The 8 MiB mapping without a guard page below it (merged pymalloc arenas) is not a stack.
    assert b.kib == {"main_heap": 1000, "thread_arenas": 300, "thread_stacks": 40, "anon_other": 9024,
                     "sqlite_files": 32, "files": 64, "other": 12}
    assert b.arenas == 1  # the arena's reserved, unreadable tail is not a second arena
    assert b.total_kib == 10472


def test_this_process_s_smaps_adds_up_to_its_rss() -> None:
    b = read_rss_breakdown()
    if b is None:
        pytest.skip("no /proc/self/smaps here")
    with open("/proc/self/status", encoding="ascii") as f:
        vm_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert set(b.kib) == set(KINDS)
    assert b.kib["files"] > 0 and b.kib["anon_other"] + b.kib["main_heap"] > 0
    # The two reads are moments apart; this test's own allocations move RSS by far less than 5%.
    assert abs(b.total_kib - vm_rss) < vm_rss * 0.05, (b, vm_rss)


@pytest.mark.parametrize("text", [
    "Rss:  12 kB\n",  # before any mapping
    "not a header at all\n",
    "zz-10 rw-p 00000000 00:00 0\nRss: 1 kB\n",
    "10-20 rw-p 00000000 00:00 0\nRss: twelve kB\n",
    "10-20 rw-p 00000000 00:00 0\nRss: 12 MB\n",
    "20-10 rw-p 00000000 00:00 0\n",
])
def test_text_that_is_not_smaps_is_refused(text: str) -> None:
    with pytest.raises(SmapsError):
        parse_smaps(text)


@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_clearly(text: str) -> None:
    try:
        b = parse_smaps(text)
    except SmapsError:
        return
    assert all(v >= 0 for v in b.kib.values()) and b.arenas >= 0


@given(st.lists(st.tuples(st.integers(0, 2**47), st.integers(0, 2**30), st.integers(0, 10**6),
                          st.sampled_from(["", "[heap]", "/x/y.db-shm", "/lib/a.so"])), max_size=20))
def test_the_kinds_add_up_to_every_rss_line(maps: list[tuple[int, int, int, str]]) -> None:
    text = "".join(f"{lo:x}-{lo + size:x} rw-p 00000000 00:00 0 {name}\nSize: {size // 1024} kB\nRss: {rss} kB\n"
                   for lo, size, rss, name in maps)
    assert parse_smaps(text).total_kib == sum(rss for *_, rss, _ in maps)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("smaps is Linux's")


PYMALLOC_REPORT = """Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16          27           16984           110

# arenas allocated total           =                   93
# arenas reclaimed                 =                   20
# arenas highwater mark            =                   75
# arenas allocated current         =                   73
73 arenas * 1048576 bytes/arena    =           76,546,048

# bytes in allocated blocks        =           70,005,296
# bytes in available blocks        =            2,135,632
231 unused pools * 16384 bytes     =            3,784,704
# bytes lost to pool headers       =              221,952
# bytes lost to quantization       =              398,464
# bytes lost to arena alignment    =                    0
Total                              =           76,546,048
"""


def test_pymalloc_report_figures_are_read() -> None:
    from quantarb_tui.bench.memory_map import PymallocStats, parse_pymalloc_stats

    assert parse_pymalloc_stats(PYMALLOC_REPORT) == PymallocStats(
        arenas=73 * 1048576, in_use=70_005_296, free=2_135_632 + 231 * 16384)


@given(st.text(max_size=400))
def test_a_text_without_the_figures_is_refused_never_misread(text: str) -> None:
    from quantarb_tui.bench.memory_map import parse_pymalloc_stats

    with pytest.raises(ValueError, match="not a pymalloc report"):
        parse_pymalloc_stats(text.replace("arenas", "").replace("allocated", ""))


def test_this_process_pymalloc_figures_are_live_and_stderr_is_restored(capfd: pytest.CaptureFixture[str]) -> None:
    from quantarb_tui.bench.memory_map import read_pymalloc_stats

    before = read_pymalloc_stats()
    kept = [bytearray(256) for _ in range(20_000)]  # ~5 MB of small blocks
    after = read_pymalloc_stats()
    assert before is not None and after is not None
    assert after.in_use - before.in_use > 4_000_000 and after.arenas >= after.in_use
    os.write(2, b"still stderr\n")  # through fd 2 itself (capfd points it at its own file)
    assert capfd.readouterr().err == "still stderr\n"  # nothing of the report leaked, fd 2 back
    del kept
