"""quantarb_tui.screens.reload_pacer: the history and analytics screens read the ledger again
once more groups have closed, at most every interval, and never miss the last change."""

from __future__ import annotations

from quantarb_tui.screens.reload_pacer import ReloadPacer, groups_token


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_change_reloads_at_most_once_per_interval_and_is_never_dropped() -> None:
    clock = Clock()
    pacer = ReloadPacer(2.0, clock)
    pacer.loaded()  # the read on open
    assert not pacer.should_reload(5)  # the first snapshot: nothing to compare with
    assert not pacer.should_reload(5)
    clock.now += 0.5
    assert not pacer.should_reload(6)  # closed one more, inside the interval: held
    clock.now += 1.0
    assert not pacer.should_reload(6)
    clock.now += 0.6  # past the interval, nothing closed since: the held change is read now
    assert pacer.should_reload(6)
    pacer.loaded()
    clock.now += 5.0
    assert not pacer.should_reload(6)  # read, and nothing new: no reload however long
    assert pacer.should_reload(7)  # a change long after the last read: at once
    pacer.loaded()


def test_under_load_reads_follow_the_interval_not_the_snapshots() -> None:
    clock = Clock()
    pacer = ReloadPacer(2.0, clock)
    pacer.loaded()
    pacer.should_reload(0)
    reads = 0
    for tick in range(1, 81):  # 10 s of snapshots at 8 Hz (exact in binary), a group closing at each
        clock.now += 0.125
        if pacer.should_reload(tick):
            pacer.loaded()
            reads += 1
    assert reads == 5  # every 2 s, not 80


def test_a_read_the_screen_starts_itself_counts() -> None:
    clock = Clock()
    pacer = ReloadPacer(2.0, clock)
    pacer.should_reload(3)
    assert not pacer.should_reload(3)
    pacer.loaded()  # a filter changed: read now
    clock.now += 1.0
    assert not pacer.should_reload(4)  # too soon after that read
    clock.now += 1.0
    assert pacer.should_reload(4)


def test_a_group_moving_between_closed_states_is_a_change() -> None:
    """Closed by the operator (hedged -> closed) or netted: the closed total is unchanged, the
    rows are not."""
    clock = Clock()
    pacer = ReloadPacer(2.0, clock)
    pacer.loaded()
    pacer.should_reload(groups_token({"hedged": 3, "closed": 1}, "1.50"))
    clock.now += 3.0
    assert pacer.should_reload(groups_token({"hedged": 2, "closed": 2}, "1.50"))
    pacer.loaded()
    clock.now += 3.0
    assert pacer.should_reload(groups_token({"hedged": 2, "closed": 2}, "1.20"))
    pacer.loaded()
    clock.now += 3.0
    assert not pacer.should_reload(groups_token({"closed": 2, "hedged": 2}, "1.20"))  # same, other order


def test_a_failed_read_is_read_again_after_the_interval() -> None:
    clock = Clock()
    pacer = ReloadPacer(2.0, clock)
    pacer.should_reload(1)
    pacer.loaded()
    pacer.failed()  # the ledger could not be read: what was to be shown is still to be read
    clock.now += 1.0
    assert not pacer.should_reload(1)
    clock.now += 1.0
    assert pacer.should_reload(1)
