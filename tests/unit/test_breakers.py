"""Automatic breakers (core.breakers), one test each, and how RiskGate.apply turns their
trips and releases into trading states. Time only moves through ManualClock."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from core.breakers import DAY_MS, BreakerChange, BreakerLimits, Breakers, Effect
from core.clock import ManualClock
from core.config import RiskConfig
from core.models import TradingState
from core.risk import RearmRefused, RiskGate, breaker_limits

D = Decimal
LIMITS = BreakerLimits(
    daily_loss_limit=D(100),
    max_consecutive_failures=3,
    failure_pause_s=60,
    venue_block_s=5,
    feed_stale_halt_s=30,
    venue_down_halt_s=20,
    min_free_balance=D(500),
    hold_timeout_s=600,
)
# 2024-11-21 01:00 UTC: well inside one UTC day
T0 = 1_732_150_800_000


def _names(changes: list[BreakerChange]) -> list[tuple[str, bool]]:
    return [(c.name, c.tripped) for c in changes]


def _state(gate: RiskGate) -> TradingState:
    """The gate's state, read afresh (mypy narrows `gate.state` across calls otherwise)."""
    return gate.state


def _gate(clock: ManualClock | None = None, limits: BreakerLimits = LIMITS) -> RiskGate:
    return RiskGate(clock or ManualClock(wall_ms=T0), breakers=limits)


# -- daily loss ------------------------------------------------------------------------------
def test_daily_loss_trips_halt_at_the_limit_and_the_day_roll_releases_it() -> None:
    b = Breakers(LIMITS)
    assert b.on_day_equity(D(-60), T0) == []
    assert b.daily_pnl == -60
    changes = b.on_day_equity(D(-100), T0 + 1000)
    assert _names(changes) == [("daily_loss", True)]
    assert changes[0].effect == "halt"
    assert changes[0].detail == "equity today -100.00 <= -100"
    assert b.all["daily_loss"].tripped
    assert [x.name for x in b.blocking_rearm()] == ["daily_loss"]
    # a profit later the same day does not release it; nor does a rearm
    assert b.on_day_equity(D(400), T0 + 2000) == []
    assert b.clear_latched(T0 + 3000) == []
    assert b.all["daily_loss"].tripped
    # the UTC day rolls: released, and the count starts again
    next_day = (T0 // DAY_MS + 1) * DAY_MS
    assert b.tick(next_day - 1) == []
    changes = b.tick(next_day)
    assert _names(changes) == [("daily_loss", False)]
    assert b.daily_pnl == 0
    assert not b.all["daily_loss"].tripped


def test_daily_loss_follows_the_days_equity_and_an_unknown_figure_changes_nothing() -> None:
    b = Breakers(LIMITS)
    b.on_day_equity(D(-90), T0)
    assert b.on_day_equity(None, T0 + 1000) == []  # a rate or mark missing: the last figure stands
    assert b.daily_pnl == -90 and not b.all["daily_loss"].tripped
    tomorrow = T0 + DAY_MS
    assert b.on_day_equity(D(-10), tomorrow) == []
    assert b.daily_pnl == -10
    # closing groups no longer moves the daily figure: their money is in the equity
    b.on_group_closed(failed=False, compensated=False, now_ms=tomorrow)
    assert b.daily_pnl == -10


# -- consecutive failures --------------------------------------------------------------------
def test_consecutive_failures_pause_then_the_tick_releases() -> None:
    b = Breakers(LIMITS)
    assert b.on_group_closed(failed=False, compensated=True, now_ms=T0) == []
    assert b.on_group_closed(failed=False, compensated=True, now_ms=T0) == []
    changes = b.on_group_closed(failed=False, compensated=True, now_ms=T0 + 10)
    assert _names(changes) == [("consecutive_failures", True)]
    assert changes[0].effect == "pause"
    breaker = b.all["consecutive_failures"]
    assert breaker.until_ms == T0 + 10 + 60_000
    assert b.tick(T0 + 10 + 59_999) == []
    assert _names(b.tick(T0 + 10 + 60_000)) == [("consecutive_failures", False)]
    assert b.consecutive_failures == 0
    assert not breaker.tripped


def test_failed_groups_count_as_failures_too() -> None:
    b = Breakers(LIMITS)
    b.on_group_closed(failed=True, compensated=False, now_ms=T0)
    b.on_group_closed(failed=True, compensated=False, now_ms=T0)
    changes = b.on_group_closed(failed=True, compensated=False, now_ms=T0)
    assert ("consecutive_failures", True) in _names(changes)


def test_a_hedged_group_resets_the_failure_count() -> None:
    b = Breakers(LIMITS)
    b.on_group_closed(failed=False, compensated=True, now_ms=T0)
    b.on_group_closed(failed=False, compensated=True, now_ms=T0)
    b.on_group_closed(failed=False, compensated=False, now_ms=T0)  # hedged
    assert b.consecutive_failures == 0
    assert b.on_group_closed(failed=False, compensated=True, now_ms=T0) == []
    assert b.on_group_closed(failed=False, compensated=True, now_ms=T0) == []
    assert not b.all["consecutive_failures"].tripped


# -- venue feed ------------------------------------------------------------------------------
def test_stale_venue_blocks_it_and_quotes_flowing_release() -> None:
    b = Breakers(LIMITS)
    assert b.on_venue_health("okx", connected=True, quote_age_s=5.0, down_for_s=0, now_ms=T0) == []
    changes = b.on_venue_health("okx", connected=True, quote_age_s=5.1, down_for_s=0, now_ms=T0)
    assert _names(changes) == [("stale:okx", True)]
    assert changes[0].effect == "block_venue" and changes[0].venue == "okx"
    assert b.blocked_venues() == {"okx"}
    assert b.blocking_rearm() == []  # a venue block never holds the engine
    # still stale: no new change
    assert b.on_venue_health("okx", connected=True, quote_age_s=8, down_for_s=0, now_ms=T0) == []
    changes = b.on_venue_health("okx", connected=True, quote_age_s=0.2, down_for_s=0, now_ms=T0)
    assert _names(changes) == [("stale:okx", False)]
    assert b.blocked_venues() == set()


def test_never_quoted_counts_from_down_for() -> None:
    b = Breakers(LIMITS)
    assert b.on_venue_health("mt5", connected=True, quote_age_s=None, down_for_s=4, now_ms=T0) == []
    changes = b.on_venue_health("mt5", connected=True, quote_age_s=None, down_for_s=6, now_ms=T0)
    assert _names(changes) == [("stale:mt5", True)]


def test_stale_feed_halts_and_stays_latched_until_cleared_and_fresh() -> None:
    b = Breakers(LIMITS)
    changes = b.on_venue_health("binance", connected=True, quote_age_s=31, down_for_s=0, now_ms=T0)
    assert _names(changes) == [("stale:binance", True), ("stale_halt:binance", True)]
    assert changes[1].effect == "halt"
    # still stale: a rearm does not clear it
    assert b.clear_latched(T0) == []
    assert b.all["stale_halt:binance"].tripped
    # quotes flow again: the block releases, the halt stays latched
    changes = b.on_venue_health("binance", connected=True, quote_age_s=0.1, down_for_s=0, now_ms=T0)
    assert _names(changes) == [("stale:binance", False)]
    assert b.all["stale_halt:binance"].tripped
    assert b.on_venue_health("binance", connected=True, quote_age_s=0.1, down_for_s=0, now_ms=T0) == []
    assert b.all["stale_halt:binance"].tripped
    # only the operator's rearm clears it
    assert _names(b.clear_latched(T0)) == [("stale_halt:binance", False)]
    assert b.blocking_rearm() == []


def test_disconnected_venue_halts_after_venue_down_halt_s() -> None:
    b = Breakers(LIMITS)
    # quotes are fresh (some cached source), the link is down: only the down timer counts
    assert b.on_venue_health("okx", connected=False, quote_age_s=1, down_for_s=20, now_ms=T0) == []
    changes = b.on_venue_health("okx", connected=False, quote_age_s=1, down_for_s=20.5, now_ms=T0)
    assert _names(changes) == [("down:okx", True)]
    assert changes[0].effect == "halt"
    # still disconnected: a rearm does not clear it, even though the feed is not stale
    assert b.clear_latched(T0) == []
    assert b.all["down:okx"].tripped
    # connected again: latched until the rearm
    assert b.on_venue_health("okx", connected=True, quote_age_s=0.1, down_for_s=0, now_ms=T0) == []
    assert b.all["down:okx"].tripped
    assert _names(b.clear_latched(T0)) == [("down:okx", False)]


def test_connected_venue_never_trips_down() -> None:
    b = Breakers(LIMITS)
    assert b.on_venue_health("okx", connected=True, quote_age_s=0, down_for_s=999, now_ms=T0) == []
    assert not b.all["down:okx"].tripped


def test_watch_venue_shows_every_venue_breaker_as_ok() -> None:
    b = Breakers(LIMITS)
    b.watch_venue("mt5")
    assert {"stale:mt5", "stale_halt:mt5", "down:mt5", "balance:mt5"} <= set(b.all)
    assert b.tripped() == []
    assert b.to_json()["down:mt5"]["state"] == "ok"


# -- balance ---------------------------------------------------------------------------------
def test_low_free_balance_blocks_the_venue() -> None:
    b = Breakers(LIMITS)
    assert b.on_balance("mt5", D(500), T0) == []  # at the floor: fine
    changes = b.on_balance("mt5", D("499.99"), T0)
    assert _names(changes) == [("balance:mt5", True)]
    assert changes[0].effect == "block_venue"
    assert b.blocked_venues() == {"mt5"}
    assert b.blocking_rearm() == []
    assert _names(b.on_balance("mt5", D(800), T0)) == [("balance:mt5", False)]
    assert b.blocked_venues() == set()


def test_zero_floor_turns_the_balance_breaker_off() -> None:
    b = Breakers(breaker_limits(RiskConfig(min_free_balance=D(0))))
    assert b.on_balance("mt5", D(-1000), T0) == []
    assert b.blocked_venues() == set()


# -- hold timeout and compensation -------------------------------------------------------------
def test_hold_timeout_is_an_alert_that_trips_and_releases_at_once() -> None:
    b = Breakers(LIMITS)
    changes = b.on_hold_timeout("G1", 700, T0)
    assert _names(changes) == [("hold_timeout", True), ("hold_timeout", False)]
    assert {c.effect for c in changes} == {"alert"}
    assert "G1" in changes[0].detail
    assert not b.all["hold_timeout"].tripped
    assert b.blocking_rearm() == []


def test_failed_compensation_halts_until_rearm() -> None:
    b = Breakers(LIMITS)
    changes = b.on_group_closed(failed=True, compensated=False, now_ms=T0)
    assert _names(changes) == [("compensation_failed", True)]
    assert changes[0].effect == "halt"
    assert [x.name for x in b.blocking_rearm()] == ["compensation_failed"]
    assert _names(b.clear_latched(T0)) == [("compensation_failed", False)]


# -- persistence -----------------------------------------------------------------------------
def test_to_json_restore_round_trip() -> None:
    b = Breakers(LIMITS)
    b.on_day_equity(D(-150), T0)  # daily_loss
    b.on_group_closed(failed=True, compensated=False, now_ms=T0)  # compensation_failed
    b.on_group_closed(failed=False, compensated=True, now_ms=T0)
    b.on_group_closed(failed=False, compensated=True, now_ms=T0)  # pause until T0 + 60 s
    b.on_venue_health("okx", connected=False, quote_age_s=40, down_for_s=40, now_ms=T0)
    b.on_balance("mt5", D(1), T0)
    state = json.loads(json.dumps(b.to_json()))
    tripped = {name for name, s in state.items() if s["state"] == "tripped"}
    assert tripped == {"daily_loss", "compensation_failed", "consecutive_failures", "stale:okx",
                       "stale_halt:okx", "down:okx", "balance:mt5"}

    fresh = Breakers(LIMITS)
    fresh.restore(state, daily_pnl=D(-150), now_ms=T0 + 1000)
    assert {x.name for x in fresh.tripped()} == tripped
    for name in tripped:
        assert fresh.all[name].to_json() == b.all[name].to_json()
    assert fresh.daily_pnl == -150
    assert fresh.blocked_venues() == {"okx", "mt5"}
    # the restored pause still ends on time
    assert _names(fresh.tick(T0 + 60_000)) == [("consecutive_failures", False)]
    # the restored daily loss halt still waits for the day to roll
    assert fresh.tick(T0 + 60_001) == []
    assert fresh.all["daily_loss"].tripped


def test_restore_skips_an_expired_pause_and_alerts() -> None:
    b = Breakers(LIMITS)
    for _ in range(3):
        b.on_group_closed(failed=False, compensated=True, now_ms=T0)
    state = b.to_json()
    state["hold_timeout"] = {"state": "tripped", "effect": "alert", "since_ms": T0, "until_ms": None,
                             "detail": "x", "venue": None}
    fresh = Breakers(LIMITS)
    fresh.restore(state, now_ms=T0 + 60_000)
    assert fresh.tripped() == []
    fresh = Breakers(LIMITS)
    fresh.restore(state, now_ms=T0 + 59_999)
    assert [x.name for x in fresh.tripped()] == ["consecutive_failures"]


def test_restore_of_a_pause_without_an_end_still_ends() -> None:
    state = {"consecutive_failures": {"state": "tripped", "effect": "pause", "since_ms": T0,
                                      "until_ms": None, "detail": "3 in a row", "venue": None}}
    b = Breakers(LIMITS)
    b.restore(state, now_ms=T0)
    assert b.all["consecutive_failures"].until_ms == T0 + 60_000
    assert _names(b.tick(T0 + 60_000)) == [("consecutive_failures", False)]


def test_restore_drops_yesterdays_daily_loss_halt() -> None:
    """A restart on the next UTC day: yesterday's loss would have been released by the roll."""
    b = Breakers(LIMITS)
    b.on_day_equity(D(-150), T0)
    state = b.to_json()
    fresh = Breakers(LIMITS)
    fresh.restore(state, daily_pnl=D(0), now_ms=T0 + DAY_MS)
    assert not fresh.all["daily_loss"].tripped
    assert fresh.blocking_rearm() == []


def test_restore_of_todays_daily_loss_without_pnl_is_not_released_by_the_first_tick() -> None:
    b = Breakers(LIMITS)
    b.on_day_equity(D(-150), T0)
    fresh = Breakers(LIMITS)
    fresh.restore(b.to_json(), now_ms=T0 + 1000)
    assert fresh.tick(T0 + 2000) == []
    assert fresh.all["daily_loss"].tripped
    next_day = (T0 // DAY_MS + 1) * DAY_MS
    assert _names(fresh.tick(next_day)) == [("daily_loss", False)]


def test_restore_ignores_ok_and_unknown_entries() -> None:
    b = Breakers(LIMITS)
    b.restore({"daily_loss": {"state": "ok", "effect": "halt"},
               "weird": {"state": "tripped", "effect": "explode"}}, now_ms=T0)
    assert b.tripped() == []
    assert "weird" not in b.all


# -- RiskGate.apply ----------------------------------------------------------------------------
def _change(name: str, effect: Effect, tripped: bool, venue: str | None = None) -> BreakerChange:
    return BreakerChange(name, effect, tripped, "detail", venue)


def test_apply_halt_trip_halts_from_any_state() -> None:
    for setup in ("active", "paused", "reducing"):
        gate = _gate()
        if setup == "paused":
            gate.pause("op")
        elif setup == "reducing":
            gate.reduce("op")
        [(_, state)] = gate.apply([_change("daily_loss", "halt", True)])
        assert state is not None and state.state is TradingState.HALTED
        assert gate.state is TradingState.HALTED
        assert gate.reason.startswith("breaker daily_loss")


def test_apply_halt_release_does_not_unhalt() -> None:
    gate = _gate()
    gate.apply([_change("daily_loss", "halt", True)])
    [(_, state)] = gate.apply([_change("daily_loss", "halt", False)])
    assert state is None
    assert gate.state is TradingState.HALTED


def test_apply_pause_trip_pauses_only_from_active() -> None:
    gate = _gate()
    [(_, state)] = gate.apply([_change("consecutive_failures", "pause", True)])
    assert state is not None and state.state is TradingState.PAUSED
    assert gate.state is TradingState.PAUSED
    for setup in (TradingState.HALTED, TradingState.REDUCING):
        gate = _gate()
        if setup is TradingState.HALTED:
            gate.kill("op")
        else:
            gate.reduce("op")
        [(_, state)] = gate.apply([_change("consecutive_failures", "pause", True)])
        assert state is None
        assert gate.state is setup


def test_apply_pause_release_resumes_only_its_own_pause() -> None:
    gate = _gate()
    gate.apply([_change("consecutive_failures", "pause", True)])
    [(_, state)] = gate.apply([_change("consecutive_failures", "pause", False)])
    assert state is not None and state.state is TradingState.ACTIVE
    assert gate.state is TradingState.ACTIVE
    # an operator's pause is not the breaker's: its release leaves it paused
    gate = _gate()
    gate.pause("operator pause")
    gate.apply([_change("consecutive_failures", "pause", True)])
    assert gate.reason == "operator pause"
    [(_, state)] = gate.apply([_change("consecutive_failures", "pause", False)])
    assert state is None
    assert gate.state is TradingState.PAUSED
    # a halted engine stays halted
    gate = _gate()
    gate.apply([_change("consecutive_failures", "pause", True)])
    gate.kill("op")
    gate.apply([_change("consecutive_failures", "pause", False)])
    assert gate.state is TradingState.HALTED


def test_apply_venue_blocks_and_alerts_leave_the_state_alone() -> None:
    gate = _gate()
    out = gate.apply([
        _change("stale:okx", "block_venue", True, "okx"),
        _change("balance:mt5", "block_venue", True, "mt5"),
        _change("hold_timeout", "alert", True),
        _change("hold_timeout", "alert", False),
        _change("stale:okx", "block_venue", False, "okx"),
    ])
    assert [s for _, s in out] == [None] * 5
    assert gate.state is TradingState.ACTIVE
    assert list(gate.history) == []


def test_breaker_flow_through_the_gate_end_to_end() -> None:
    clock = ManualClock(wall_ms=T0)
    gate = _gate(clock)
    for _ in range(3):
        gate.apply(gate.breakers.on_group_closed(failed=False, compensated=True, now_ms=clock.time_ms()))
    assert _state(gate) is TradingState.PAUSED
    assert gate.resume("operator") is None  # the failure breaker holds the pause
    with pytest.raises(RearmRefused, match="consecutive_failures"):
        gate.rearm("try")
    clock.advance(ms=60_000)
    gate.apply(gate.breakers.tick(clock.time_ms()))
    assert _state(gate) is TradingState.ACTIVE
    # a failed group halts; the rearm releases the latched breaker and goes active
    gate.apply(gate.breakers.on_group_closed(failed=True, compensated=False, now_ms=clock.time_ms()))
    assert _state(gate) is TradingState.HALTED
    change = gate.rearm("looked at it")
    assert change.state is TradingState.ACTIVE
    assert [c.name for c in gate.last_released] == ["compensation_failed"]
    # a stale feed that halts: the rearm is refused while the feed is still stale
    gate.apply(gate.breakers.on_venue_health("okx", connected=True, quote_age_s=31, down_for_s=0,
                                             now_ms=clock.time_ms()))
    assert _state(gate) is TradingState.HALTED
    with pytest.raises(RearmRefused, match="stale_halt:okx"):
        gate.rearm("too early")
    assert _state(gate) is TradingState.HALTED
    gate.apply(gate.breakers.on_venue_health("okx", connected=True, quote_age_s=0.1, down_for_s=0,
                                             now_ms=clock.time_ms()))
    assert gate.rearm("fresh again").state is TradingState.ACTIVE
