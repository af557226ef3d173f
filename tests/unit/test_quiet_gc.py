"""The workstation's full collection passes (quantarb_tui.quiet_gc): one a minute, never within
a second of the operator's key or click. Under the TUI, rendered lines die as cycles in the old
generation; without a regular pass they piled up for 5 to 20 minutes (issue 19)."""

from __future__ import annotations

from quantarb_tui.quiet_gc import QuietCollector


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def collector(clock: Clock, passes: list[float]) -> QuietCollector:
    def collect() -> int:
        passes.append(clock.t)
        return 0

    return QuietCollector(every_s=60.0, quiet_s=1.0, clock=clock, collect=collect)


def test_a_full_pass_runs_once_a_minute_when_the_operator_is_quiet() -> None:
    clock, passes = Clock(), list[float]()
    gc_ = collector(clock, passes)
    clock.t += 59.9
    assert not gc_.maybe_collect() and passes == []
    clock.t += 0.1
    assert gc_.maybe_collect() and passes == [1060.0]
    clock.t += 30.0
    assert not gc_.maybe_collect()  # the next one a minute after this one
    clock.t += 30.0
    assert gc_.maybe_collect() and passes == [1060.0, 1120.0]
    assert gc_.passes == 2


def test_no_pass_within_a_second_of_a_key_it_runs_at_the_first_quiet_refresh() -> None:
    clock, passes = Clock(), list[float]()
    gc_ = collector(clock, passes)
    clock.t += 60.0
    gc_.operator_input()  # a key, just as the pass came due
    clock.t += 0.5
    assert not gc_.maybe_collect() and passes == []
    gc_.operator_input()  # typing on
    clock.t += 0.9
    assert not gc_.maybe_collect() and passes == []
    clock.t += 0.1  # a second after the last key
    assert gc_.maybe_collect() and passes == [1061.5]


def test_no_pass_while_a_group_is_open_unless_it_is_five_intervals_late() -> None:
    """The engine shares the app's loop: a pass while a group's legs are out would hold them."""
    clock, passes = Clock(), list[float]()
    gc_ = collector(clock, passes)
    clock.t += 60.0
    assert not gc_.maybe_collect(busy=True) and passes == []
    clock.t += 10.0
    assert gc_.maybe_collect(busy=False) and passes == [1070.0]  # the first refresh with none open
    clock.t += 299.9
    assert not gc_.maybe_collect(busy=True)
    clock.t += 0.1
    assert gc_.maybe_collect(busy=True) and passes == [1070.0, 1370.0]  # overdue: groups open or not
