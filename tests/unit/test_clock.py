"""Clock port: ManualClock steps deterministically, RealClock reads the system clocks."""

from __future__ import annotations

import time

import pytest

from core.clock import Clock, ManualClock, RealClock


def _reads(clock: Clock) -> tuple[int, int]:
    return clock.time_ms(), clock.monotonic_ns()


def test_manual_clock_defaults() -> None:
    clock = ManualClock()
    assert clock.time_ms() == 1_732_150_000_000
    assert clock.monotonic_ns() == 1_000_000_000


def test_manual_clock_starts_where_told() -> None:
    clock = ManualClock(wall_ms=5_000, mono_ns=42)
    assert _reads(clock) == (5_000, 42)


def test_manual_clock_does_not_move_by_itself() -> None:
    clock = ManualClock()
    first = _reads(clock)
    time.sleep(0.001)
    assert _reads(clock) == first


def test_advance_ms_moves_both_readings() -> None:
    clock = ManualClock(wall_ms=1_000, mono_ns=7)
    clock.advance(ms=250)
    # wall: 1_000 ms + 250 ms = 1_250 ms; mono: 7 ns + 250 * 1_000_000 ns = 250_000_007 ns
    assert _reads(clock) == (1_250, 250_000_007)


def test_advance_ns_moves_both_readings_and_wall_floors_to_ms() -> None:
    clock = ManualClock(wall_ms=1_000, mono_ns=0)
    clock.advance(ns=999_999)
    # 999_999 ns is not yet a whole millisecond: wall still reads 1_000 ms.
    assert _reads(clock) == (1_000, 999_999)
    clock.advance(ns=1)
    # 999_999 + 1 = 1_000_000 ns = exactly 1 ms more.
    assert _reads(clock) == (1_001, 1_000_000)


def test_advance_fractional_ms_accumulates_on_the_wall_clock() -> None:
    clock = ManualClock(wall_ms=0, mono_ns=0)
    clock.advance(ms=1.5)
    # 1.5 ms = 1_500_000 ns; wall floors 1.5 ms to 1 ms
    assert _reads(clock) == (1, 1_500_000)
    clock.advance(ms=0.5)
    # 1.5 + 0.5 = 2.0 ms: the half millisecond carried, wall reads 2
    assert _reads(clock) == (2, 2_000_000)


def test_advance_ms_and_ns_together() -> None:
    clock = ManualClock(wall_ms=0, mono_ns=0)
    clock.advance(ms=3, ns=5)
    # 3 ms + 5 ns = 3_000_005 ns
    assert _reads(clock) == (3, 3_000_005)


@pytest.mark.parametrize(
    ("ms", "expected_ns"),
    [
        # Decimal ms values are not exact in binary: 2.01 * 1e6 = 2009999.9999999998 as a float,
        # so truncating would lose a nanosecond; the clock must land on 2_010_000 ns exactly.
        (2.01, 2_010_000),
        (4.1, 4_100_000),
        (0.001, 1_000),
        (1499.999999, 1_499_999_999),
    ],
)
def test_advance_fractional_ms_is_exact_to_the_nanosecond(ms: float, expected_ns: int) -> None:
    clock = ManualClock(wall_ms=0, mono_ns=0)
    clock.advance(ms=ms)
    assert clock.monotonic_ns() == expected_ns


def test_advance_zero_changes_nothing() -> None:
    clock = ManualClock()
    before = _reads(clock)
    clock.advance()
    clock.advance(ms=0, ns=0)
    assert _reads(clock) == before


@pytest.mark.parametrize(("ms", "ns"), [(-1, 0), (0, -1), (-0.000001, 0)])
def test_manual_clock_never_goes_backwards(ms: float, ns: int) -> None:
    clock = ManualClock()
    before = _reads(clock)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(ms=ms, ns=ns)
    assert _reads(clock) == before


def test_manual_clock_many_small_steps_are_monotonic() -> None:
    clock = ManualClock(wall_ms=0, mono_ns=0)
    last_wall, last_mono = _reads(clock)
    for _ in range(2_500):
        clock.advance(ns=400_000)  # 0.4 ms
        wall, mono = _reads(clock)
        assert wall >= last_wall
        assert mono > last_mono
        last_wall, last_mono = wall, mono
    # 2_500 * 0.4 ms = 1_000 ms exactly
    assert _reads(clock) == (1_000, 1_000_000_000)


def test_real_clock_time_ms_is_the_system_wall_clock() -> None:
    clock = RealClock()
    lo = time.time_ns() // 1_000_000
    reading = clock.time_ms()
    hi = time.time_ns() // 1_000_000
    assert lo <= reading <= hi


def test_real_clock_monotonic_is_the_system_monotonic_clock() -> None:
    clock = RealClock()
    lo = time.monotonic_ns()
    reading = clock.monotonic_ns()
    hi = time.monotonic_ns()
    assert lo <= reading <= hi


def test_real_clock_never_goes_backwards() -> None:
    clock = RealClock()
    last = clock.monotonic_ns()
    for _ in range(10_000):
        now = clock.monotonic_ns()
        assert now >= last
        last = now


def test_real_clock_moves() -> None:
    clock = RealClock()
    start = clock.monotonic_ns()
    time.sleep(0.002)
    # slept 2 ms: at least 2_000_000 ns passed on the monotonic clock
    assert clock.monotonic_ns() - start >= 2_000_000
