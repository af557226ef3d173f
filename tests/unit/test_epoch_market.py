"""The shared market grid: processes that start apart and wake at different times quote the same."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from sim.ea_sim import MarketTickSource
from sim.epoch_market import EpochMarket, EpochPacer, world_pairs
from sim.market import SimTick

EPOCH = 1_796_000_000_000


def latest(market: EpochMarket) -> dict[tuple[str, str], SimTick]:
    return {(t.venue, t.symbol): t for t in market.quotes()}


def test_a_late_starter_catching_up_quotes_what_a_stepper_quotes() -> None:
    stepper = EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH)
    for ms in range(0, 30_001, 50):
        stepper.catch_up(EPOCH + ms)
    late = EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH)
    due = late.catch_up(EPOCH + 30_000)
    assert late.steps == stepper.steps == 600
    assert latest(late) == latest(stepper)
    # One quote per instrument that came due, however many steps the call covered: all nine.
    assert len(due) == len({(t.venue, t.symbol) for t in due}) == 9
    assert stepper.market.dislocations == late.market.dislocations > 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=40))
def test_any_wake_pattern_lands_on_the_same_quotes(wakes_ms: list[int]) -> None:
    reference = EpochMarket(world_pairs(), seed=3, epoch_ms=EPOCH)
    irregular = EpochMarket(world_pairs(), seed=3, epoch_ms=EPOCH)
    now = EPOCH
    for gap in wakes_ms:
        now += gap
        irregular.catch_up(now)
    reference.catch_up(now)
    assert latest(irregular) == latest(reference)


def test_another_seed_is_another_market() -> None:
    a = EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH)
    b = EpochMarket(world_pairs(), seed=8, epoch_ms=EPOCH)
    a.catch_up(EPOCH + 5_000)
    b.catch_up(EPOCH + 5_000)
    assert latest(a) != latest(b)


def test_before_the_epoch_nothing_moves_and_time_runs_from_it() -> None:
    market = EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH)
    assert market.catch_up(EPOCH - 10_000) == []
    assert market.steps == 0
    assert {t.ts_ms for t in market.quotes()} == {EPOCH}
    market.catch_up(EPOCH + 1_049)
    assert market.steps == 20  # whole 50 ms steps only
    assert max(t.ts_ms for t in market.quotes()) <= EPOCH + 1_000


def test_bad_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="step_ms"):
        EpochMarket(world_pairs(), seed=1, epoch_ms=EPOCH, step_ms=0)
    with pytest.raises(ValueError, match="epoch_ms"):
        EpochMarket(world_pairs(), seed=1, epoch_ms=-1)


def test_the_mt5_terminal_source_follows_the_grid() -> None:
    clock = ManualClock(wall_ms=EPOCH + 2_000)
    source = MarketTickSource(seed=7, clock=clock, epoch_ms=EPOCH)
    clock.advance(ms=3_000)
    ticks = {t.symbol: t for t in source()}
    model = EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH)
    model.catch_up(EPOCH + 5_000)
    want = {t.symbol: (t.bid, t.ask, t.ts_ms) for t in model.quotes() if t.venue == "mt5"}
    assert {s: (t.bid, t.ask, t.time_msc) for s, t in ticks.items()} == want
    with pytest.raises(ValueError, match="world's pairs"):
        MarketTickSource(world_pairs(), seed=7, clock=clock, epoch_ms=EPOCH)


def test_the_pacer_catches_up_on_wall_time_from_its_start() -> None:
    clock = ManualClock(wall_ms=EPOCH + 10_000)
    pacer = EpochPacer(EpochMarket(world_pairs(), seed=7, epoch_ms=EPOCH), clock)
    assert pacer.market.steps == 200  # caught up when made, before its first snapshot
    assert pacer.due() == []
    clock.advance(ms=50)
    assert pacer.market.steps == 200
    pacer.due()
    assert pacer.market.steps == 201
