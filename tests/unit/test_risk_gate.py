"""RiskGate (issue 7 acceptance, the pure part).

No sequence of intents and fills lets an order through that breaks a limit; in `reducing`
only exposure-reducing orders pass; in `halted` only cancels, compensation that reduces a
group's residual, and flatten. A stateful property test drives random orders, fills,
releases, late fills, breakers and operator actions; unit tests pin each rule's reason.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from core.breakers import DAY_MS, BreakerLimits
from core.clock import ManualClock
from core.config import RiskConfig
from core.exposure import ExposureBook
from core.instruments import Instrument
from core.models import ExecutionIntent, ExecutionLeg, OrderPurpose, Reason, Side, TradingState
from core.risk import OrderCheck, RearmRefused, RiskGate, RiskLimits
from exchanges.paper import PaperGateway

D = Decimal
T0 = 1_732_150_800_000
LIMITS = RiskLimits(
    max_leg_notional=D(1000),
    max_open_groups=2,
    max_venue_exposure=D(2000),
    max_asset_exposure=D(3000),
    min_free_balance=D(100),
)
BREAKERS = BreakerLimits(
    daily_loss_limit=D(100),
    max_consecutive_failures=2,
    failure_pause_s=60,
    venue_block_s=5,
    feed_stale_halt_s=30,
    venue_down_halt_s=30,
    min_free_balance=D(100),
    hold_timeout_s=600,
)
MARKS = {"BTC": D(100), "ETH": D(10)}


def _gate(clock: ManualClock | None = None) -> RiskGate:
    gate = RiskGate(clock or ManualClock(wall_ms=T0), limits=LIMITS, breakers=BREAKERS)
    for asset, mark in MARKS.items():
        gate.exposure.mark(asset, mark)
    return gate


_seq = iter(range(10**9))


def _order(
    venue: str = "okx",
    asset: str = "BTC",
    side: Side = "buy",
    qty: Decimal | int | str = 1,
    price: Decimal | int | str | None = None,
    purpose: OrderPurpose = OrderPurpose.ENTRY,
    reduces_group: bool = False,
    key: str | None = None,
) -> OrderCheck:
    return OrderCheck(
        key=key or f"k{next(_seq)}",
        venue=venue,
        asset=asset,
        side=side,
        base_qty=D(qty),
        price=MARKS[asset] if price is None else D(price),
        purpose=purpose,
        reduces_group=reduces_group,
    )


def _pass(gate: RiskGate, o: OrderCheck) -> str | None:
    """check_order, and reserve when it passes (what the orchestrator does)."""
    refusal = gate.check_order(o)
    if refusal is None:
        gate.exposure.reserve(o.key, o.venue, o.asset, o.side, o.base_qty, o.price)
    return refusal


def _intent(
    qty: str | int = 1, buy_venue: str = "okx", sell_venue: str = "mt5", price: float = 100.0, pair: str = "BTC"
) -> ExecutionIntent:
    q = D(qty)
    p = D(repr(price))
    # The gate judges any venue name: the tests pass some outside the Venue literal ("kraken").
    return ExecutionIntent(
        pair=pair,
        buy=ExecutionLeg(buy_venue, f"{pair}-X", "buy", q, p, q),  # type: ignore[arg-type]
        sell=ExecutionLeg(sell_venue, f"{pair}-Y", "sell", q, p, q),  # type: ignore[arg-type]
        base_qty=q,
        expected_edge_bps=5.0,
        buy_price=price,
        sell_price=price,
        created_ms=T0,
    )


# =============================================================================================
# Each limit rule and its reason
# =============================================================================================
def test_max_leg_notional() -> None:
    gate = _gate()
    assert gate.check_order(_order(qty=10)) is None  # 10 * 100 = 1000: at the limit
    assert gate.check_order(_order(qty="10.01")) == "risk:max_leg_notional"
    assert gate.check_order(_order(qty=1, price=1001)) == "risk:max_leg_notional"
    assert gate.check(_intent(qty="10.5"), open_groups=0) == "risk:max_leg_notional"
    assert gate.check(_intent(qty=10), open_groups=0) is None


def test_max_open_groups() -> None:
    gate = _gate()
    assert gate.check(_intent(), open_groups=1) is None
    assert gate.check(_intent(), open_groups=2) == "risk:max_open_groups"
    assert gate.check(_intent(), open_groups=5) == "risk:max_open_groups"


def test_max_venue_exposure() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(12))  # 1200
    gate.exposure.set_position("okx", "ETH", D(-50))  # 500
    assert gate.check_order(_order("okx", "BTC", "buy", 3)) is None  # 2000
    assert gate.check_order(_order("okx", "BTC", "buy", "3.01")) == "risk:max_venue_exposure"
    assert gate.check_order(_order("okx", "ETH", "sell", 31)) == "risk:max_venue_exposure"
    assert gate.check_order(_order("binance", "BTC", "buy", 3)) is None  # another venue
    assert gate.check(_intent(qty=4, buy_venue="okx"), open_groups=0) == "risk:max_venue_exposure"


def test_max_asset_exposure() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(15))  # 1500
    gate.exposure.set_position("binance", "BTC", D(-10))  # 1000: gross 2500, net 5
    assert gate.check_order(_order("mt5", "BTC", "buy", 5)) is None  # 3000
    assert gate.check_order(_order("mt5", "BTC", "sell", "5.01")) == "risk:max_asset_exposure"
    assert gate.check_order(_order("mt5", "ETH", "sell", 50)) is None  # another asset
    assert gate.check(_intent(qty=6, buy_venue="mt5", sell_venue="kraken"), open_groups=0) \
        == "risk:max_asset_exposure"


def test_venue_blocked_by_a_stale_feed() -> None:
    gate = _gate()
    gate.apply(gate.breakers.on_venue_health("okx", connected=True, quote_age_s=6, down_for_s=0, now_ms=T0))
    assert gate.state is TradingState.ACTIVE
    assert gate.check(_intent(buy_venue="okx"), open_groups=0) == "risk:venue_blocked"
    assert gate.check(_intent(buy_venue="binance", sell_venue="okx"), open_groups=0) == "risk:venue_blocked"
    assert gate.check_order(_order("okx")) == "risk:venue_blocked"
    # group repairs still go to the blocked venue; so does an entry that hedges its group
    assert gate.check_order(_order("okx", purpose=OrderPurpose.RETRY_HEDGE, reduces_group=True)) is None
    assert gate.check_order(_order("okx", purpose=OrderPurpose.UNWIND)) is None
    assert gate.check_order(_order("okx", reduces_group=True)) is None
    assert gate.check_order(_order("binance")) is None
    gate.apply(gate.breakers.on_venue_health("okx", connected=True, quote_age_s=0.1, down_for_s=0, now_ms=T0))
    assert gate.check_order(_order("okx")) is None


def test_min_free_balance() -> None:
    gate = _gate()
    gate.apply(gate.set_free_balance("mt5", D(99)))
    assert gate.free_balance["mt5"] == 99
    assert gate.check(_intent(sell_venue="mt5"), open_groups=0) == "risk:min_free_balance"
    assert gate.check_order(_order("mt5")) == "risk:min_free_balance"
    gate.apply(gate.set_free_balance("mt5", D(100)))
    assert gate.check_order(_order("mt5")) is None
    assert ("min_free_balance", "mt5", D(100), D(100)) in gate.limit_use(0)


def test_invalid_orders_are_refused() -> None:
    gate = _gate()
    assert gate.check_order(_order(qty=0)) == "risk:invalid_order"
    assert gate.check_order(_order(qty=-5)) == "risk:invalid_order"
    assert gate.check_order(_order(price=-1)) == "risk:invalid_order"


def test_an_unpriced_order_is_valued_at_the_mark() -> None:
    gate = _gate()
    assert gate.check_order(_order(qty=10, price=0)) is None  # 10 * mark 100
    assert gate.check_order(_order(qty=11, price=0)) == "risk:max_leg_notional"
    # nothing to value it with: it cannot be shown to fit
    unmarked = OrderCheck("x", "okx", "DOGE", "buy", D(1), D(0), OrderPurpose.ENTRY)
    assert gate.check_order(unmarked) == "risk:max_leg_notional"


def test_an_unmarked_asset_is_valued_at_the_order_price_without_marking_it() -> None:
    gate = _gate()
    o = OrderCheck("d1", "okx", "DOGE", "buy", D(1000), D(1), OrderPurpose.ENTRY)
    assert gate.check_order(o) is None
    assert "DOGE" not in gate.exposure.marks  # judging leaves the book as it was
    o = OrderCheck("d2", "okx", "DOGE", "buy", D(2001), D("0.49"), OrderPurpose.ENTRY)
    assert gate.check_order(o) is None  # 980 leg; 2001 * 0.49 = 980 gross
    o = OrderCheck("d3", "okx", "DOGE", "buy", D(1000), D("1.01"), OrderPurpose.ENTRY)
    assert gate.check_order(o) == "risk:max_leg_notional"


# =============================================================================================
# Reservations
# =============================================================================================
def test_two_orders_that_each_fit_but_together_break_a_limit() -> None:
    gate = _gate()
    first, second = _order("okx", qty=8), _order("okx", qty=8)  # 800 each, venue gross limit 2000
    third = _order("okx", qty=8)
    assert _pass(gate, first) is None
    assert _pass(gate, second) is None
    assert gate.check_order(third) == "risk:max_venue_exposure"
    # buys and sells pending both ways do not net: a sell does not make room for a buy
    assert gate.check_order(_order("okx", side="sell", qty=8)) is None
    assert _pass(gate, _order("okx", side="sell", qty=8)) is None
    assert gate.check_order(_order("okx", qty="4.01")) == "risk:max_venue_exposure"


def test_two_orders_across_venues_break_the_asset_limit_together() -> None:
    gate = _gate()
    assert _pass(gate, _order("okx", qty=10)) is None
    assert _pass(gate, _order("binance", side="sell", qty=10)) is None
    assert _pass(gate, _order("mt5", qty=10)) is None  # 3000: at the asset limit
    assert gate.check_order(_order("kraken", qty="0.01")) == "risk:max_asset_exposure"


def test_releasing_frees_the_room() -> None:
    gate = _gate()
    a, b = _order("okx", qty=10), _order("okx", qty=10)
    assert _pass(gate, a) is None
    assert _pass(gate, b) is None
    c = _order("okx", qty=1)
    assert gate.check_order(c) == "risk:max_venue_exposure"
    gate.exposure.release(a.key)
    assert gate.check_order(c) is None
    # a partial fill then a release: only the filled part still counts
    gate.exposure.fill("okx", "BTC", "buy", D(4), D(100), key=b.key)
    gate.exposure.release(b.key)
    assert gate.exposure.venue_gross("okx") == 400
    assert gate.check_order(_order("okx", qty=10)) is None
    assert gate.check_order(_order("okx", qty=10)) is None


def test_a_late_fill_after_release_moves_the_position() -> None:
    gate = _gate()
    a = _order("okx", qty=10)
    assert _pass(gate, a) is None
    gate.exposure.release(a.key)  # cancelled
    assert gate.exposure.venue_gross("okx") == 0
    gate.exposure.fill("okx", "BTC", "buy", D(10), D(100), key=a.key)  # ...and filled after all
    assert gate.exposure.position("okx", "BTC") == 10
    assert gate.exposure.venue_gross("okx") == 1000
    assert gate.check_order(_order("okx", qty="10.01")) == "risk:max_leg_notional"
    assert gate.check_order(_order("okx", qty=10)) is None
    assert gate.check_order(_order("okx", qty="10.01", price=99)) == "risk:max_venue_exposure"


def test_a_recheck_does_not_count_the_order_twice() -> None:
    gate = _gate()
    o = _order("okx", qty=10)
    assert _pass(gate, o) is None
    assert _pass(gate, _order("okx", qty=10)) is None  # venue at 2000
    assert gate.check_order(o) is None  # its own reservation is left out
    assert o.key in gate.exposure.reservations


def test_intent_check_judges_both_legs_together() -> None:
    gate = _gate()
    gate.exposure.set_position("binance", "BTC", D(20))  # asset gross 2000 of 3000
    intent = _intent(qty=6, buy_venue="okx", sell_venue="mt5")  # each leg alone: 2600; both: 3200
    assert gate.check(intent, open_groups=0) == "risk:max_asset_exposure"
    assert gate.exposure.reservations == {}  # judging leaves no trace
    assert gate.check(_intent(qty=5, buy_venue="okx", sell_venue="mt5"), open_groups=0) is None
    # and the gate agrees with itself: the legs of an intent that passes pass check_order
    a = _order("okx", side="buy", qty=5)
    b = _order("mt5", side="sell", qty=5)
    assert _pass(gate, a) is None
    assert _pass(gate, b) is None


def test_intent_check_leaves_the_marks_alone() -> None:
    gate = RiskGate(ManualClock(wall_ms=T0), limits=LIMITS, breakers=BREAKERS)
    assert gate.check(_intent(qty=1, price=50.0), open_groups=0) is None
    assert gate.exposure.marks == {}
    assert gate.exposure.reservations == {}


# =============================================================================================
# Exposure-reducing orders
# =============================================================================================
def test_position_reducing_orders_are_exempt_from_the_exposure_limits() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(30))  # far above every limit
    assert gate.check_order(_order("okx", side="buy", qty=1)) == "risk:max_venue_exposure"
    assert gate.check_order(_order("okx", side="sell", qty=30)) is None
    assert gate.check_order(_order("okx", side="sell", qty="30.1")) == "risk:max_leg_notional"


def test_reducing_orders_together_never_flip_the_position() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(9))
    assert _pass(gate, _order("okx", side="sell", qty=5, purpose=OrderPurpose.FLATTEN)) is None
    assert _pass(gate, _order("okx", side="sell", qty=4, purpose=OrderPurpose.FLATTEN)) is None
    # each alone would reduce the position of 9; with the others filling it would flip it
    assert gate.check_order(_order("okx", side="sell", qty=1, purpose=OrderPurpose.FLATTEN)) \
        == "risk:flatten_not_reducing"
    assert gate.position_reducing("okx", "BTC", "sell", D(1)) is False
    assert gate.exposure.worst_qty("okx", "BTC") == 9


def test_position_reducing_definition() -> None:
    gate = _gate()
    book = gate.exposure
    assert not gate.position_reducing("okx", "BTC", "sell", D(1))  # flat
    book.set_position("okx", "BTC", D(5))
    assert gate.position_reducing("okx", "BTC", "sell", D(5))
    assert not gate.position_reducing("okx", "BTC", "sell", D("5.01"))  # flips through zero
    assert not gate.position_reducing("okx", "BTC", "buy", D(1))  # wrong way
    assert not gate.position_reducing("okx", "BTC", "sell", D(0))
    book.reserve("s", "okx", "BTC", "sell", D(2), D(100))
    book.reserve("b", "okx", "BTC", "buy", D(2), D(100))  # the other side does not matter
    assert gate.position_reducing("okx", "BTC", "sell", D(3))
    assert not gate.position_reducing("okx", "BTC", "sell", D("3.01"))
    assert gate.position_reducing("okx", "BTC", "sell", D(5), exclude="s")
    book.set_position("binance", "BTC", D(-5))
    assert gate.position_reducing("binance", "BTC", "buy", D(5))
    assert not gate.position_reducing("binance", "BTC", "sell", D(1))


def test_net_reducing_definition() -> None:
    gate = _gate()
    book = gate.exposure
    book.set_position("okx", "BTC", D(5))
    book.set_position("mt5", "BTC", D(-2))  # net +3
    assert gate.net_reducing("BTC", "sell", D(3))
    assert not gate.net_reducing("BTC", "sell", D("3.5"))
    assert not gate.net_reducing("BTC", "buy", D(1))
    book.reserve("s", "binance", "BTC", "sell", D(2), D(100))
    assert gate.net_reducing("BTC", "sell", D(1))
    assert not gate.net_reducing("BTC", "sell", D(2))
    assert gate.net_reducing("BTC", "sell", D(3), exclude="s")
    assert not gate.net_reducing("ETH", "sell", D(1))


# =============================================================================================
# Trading states
# =============================================================================================
def test_reducing_lets_only_exposure_reducing_orders_through() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(4))
    gate.exposure.set_position("mt5", "BTC", D(-1))  # net +3
    gate.reduce("operator")
    assert gate.state is TradingState.REDUCING
    assert gate.blocked_state() == Reason.REDUCING
    assert gate.check_order(_order("okx", side="buy", qty=1)) == "risk:reducing"
    assert gate.check_order(_order("binance", side="buy", qty=1)) == "risk:reducing"
    assert gate.check_order(_order("okx", side="sell", qty=4)) is None  # position-reducing
    # the hedge of the net position on another venue: net-reducing (and still within limits)
    assert gate.check_order(_order("binance", side="sell", qty=3, purpose=OrderPurpose.RETRY_HEDGE)) is None
    assert gate.check_order(_order("binance", side="sell", qty=4)) == "risk:reducing"
    assert gate.check_order(_order("mt5", side="buy", qty=1)) is None  # mt5 short -1: reduces
    assert gate.check_order(_order("okx", "ETH", side="sell", qty=1)) == "risk:reducing"


def test_halted_lets_only_group_repairs_and_reducing_flatten_through() -> None:
    gate = _gate()
    gate.exposure.set_position("okx", "BTC", D(4))
    gate.exposure.set_position("mt5", "BTC", D(-1))
    change = gate.kill("operator kill")
    assert change.state is TradingState.HALTED
    assert gate.state is TradingState.HALTED  # synchronous: the very next decision sees it
    assert gate.blocked_state() == Reason.HALTED
    assert gate.check_order(_order("binance", qty=1)) == "risk:halted"
    # a position-reducing order that is not a flatten nor a group repair: refused
    assert gate.check_order(_order("okx", side="sell", qty=1, purpose=OrderPurpose.UNWIND)) == "risk:halted"
    # compensation that reduces its group's residual
    assert gate.check_order(_order("okx", side="sell", qty=1, purpose=OrderPurpose.UNWIND,
                                   reduces_group=True)) is None
    assert gate.check_order(_order("binance", side="sell", qty=3, purpose=OrderPurpose.RETRY_HEDGE,
                                   reduces_group=True)) is None
    # ...not judged against the leg limit (its size is a leg its group already holds: 1,100
    # against 1,000), but it must still fit the exposure limits when it does not reduce its
    # venue position (2,100 on binance against 2,000)
    assert gate.check_order(_order("binance", side="sell", qty=11, purpose=OrderPurpose.RETRY_HEDGE,
                                   reduces_group=True)) is None
    assert gate.check_order(_order("binance", side="sell", qty=21, purpose=OrderPurpose.RETRY_HEDGE,
                                   reduces_group=True)) == "risk:max_venue_exposure"
    assert gate.check_order(_order("binance", side="sell", qty=11, purpose=OrderPurpose.RETRY_HEDGE)) == "risk:halted"
    # flatten: only when it reduces its venue position
    assert gate.check_order(_order("okx", side="sell", qty=4, purpose=OrderPurpose.FLATTEN)) is None
    assert gate.check_order(_order("mt5", side="buy", qty=1, purpose=OrderPurpose.FLATTEN)) is None
    assert gate.check_order(_order("okx", side="sell", qty=5, purpose=OrderPurpose.FLATTEN)) == "risk:halted"
    assert gate.check_order(_order("okx", side="buy", qty=1, purpose=OrderPurpose.FLATTEN)) == "risk:halted"
    assert gate.check_order(_order("binance", side="buy", qty=1, purpose=OrderPurpose.FLATTEN)) == "risk:halted"


def test_flatten_that_does_not_reduce_is_refused_in_any_state() -> None:
    gate = _gate()
    assert gate.check_order(_order("okx", purpose=OrderPurpose.FLATTEN)) == "risk:flatten_not_reducing"


def test_paused_lets_groups_in_flight_go_on() -> None:
    gate = _gate()
    change = gate.pause("operator")
    assert change is not None and (change.state, change.reason, change.ts_ms) == (TradingState.PAUSED, "operator", T0)
    assert gate.state is TradingState.PAUSED
    assert gate.blocked_state() == Reason.PAUSED
    assert gate.check_order(_order("okx", qty=1)) is None
    assert gate.check_order(_order("okx", qty=11)) == "risk:max_leg_notional"
    assert gate.pause("again") is None


def test_kill_is_synchronous_and_reduce_never_loosens_a_halt() -> None:
    clock = ManualClock(wall_ms=T0)
    gate = _gate(clock)
    assert gate.blocked_state() is None
    gate.kill("")
    assert gate.reason == "kill"
    assert gate.blocked_state() == Reason.HALTED
    assert gate.history[-1].ts_ms == T0
    change = gate.reduce("try")
    assert change.state is TradingState.HALTED
    assert gate.state is TradingState.HALTED
    assert gate.pause() is None
    assert gate.resume() is None
    assert gate.state is TradingState.HALTED


def test_rearm_needs_a_reason_and_no_tripped_breaker() -> None:
    clock = ManualClock(wall_ms=T0)
    gate = _gate(clock)
    gate.kill("operator")
    with pytest.raises(RearmRefused, match="reason"):
        gate.rearm("   ")
    assert gate.state is TradingState.HALTED
    # a halting breaker that is still tripped: refused, and the message names it
    gate.apply(gate.breakers.on_day_equity(D(-150), T0))
    with pytest.raises(RearmRefused, match=r"daily_loss \(equity today -150.00"):
        gate.rearm("checked")
    assert gate.state is TradingState.HALTED
    # a pause breaker blocks too
    for _ in range(2):
        gate.apply(gate.breakers.on_group_closed(failed=False, compensated=True, now_ms=T0))
    with pytest.raises(RearmRefused, match="consecutive_failures") as err:
        gate.rearm("checked")
    assert "daily_loss" in str(err.value)
    # a venue block does not
    gate.apply(gate.set_free_balance("mt5", D(0)))
    clock.advance(ms=60_000)
    gate.apply(gate.breakers.tick(clock.time_ms()))
    with pytest.raises(RearmRefused, match="daily_loss") as err:
        gate.rearm("checked")
    assert "consecutive_failures" not in str(err.value)
    clock.advance(ms=86_400_000)
    gate.apply(gate.breakers.tick(clock.time_ms()))
    assert gate.state is TradingState.HALTED  # the roll releases the breaker, not the halt
    change = gate.rearm("new day")
    assert change.state is TradingState.ACTIVE and change.reason == "new day"
    assert gate.blocked_state() is None
    assert gate.check_order(_order("mt5")) == "risk:min_free_balance"  # still blocked by its breaker


def test_rearm_releases_latched_breakers_whose_cause_is_gone() -> None:
    gate = _gate()
    gate.apply(gate.breakers.on_venue_health("okx", connected=False, quote_age_s=31, down_for_s=31, now_ms=T0))
    assert gate.state is TradingState.HALTED
    with pytest.raises(RearmRefused) as err:
        gate.rearm("too early")
    assert "stale_halt:okx" in str(err.value) and "down:okx" in str(err.value)
    assert gate.last_released == []
    gate.apply(gate.breakers.on_venue_health("okx", connected=True, quote_age_s=0.1, down_for_s=0, now_ms=T0))
    assert gate.rearm("back").state is TradingState.ACTIVE
    assert sorted(c.name for c in gate.last_released) == ["down:okx", "stale_halt:okx"]
    assert all(not c.tripped for c in gate.last_released)


def test_resume_is_refused_while_the_failure_breaker_holds_the_pause() -> None:
    clock = ManualClock(wall_ms=T0)
    gate = _gate(clock)
    for _ in range(2):
        gate.apply(gate.breakers.on_group_closed(failed=False, compensated=True, now_ms=T0))
    assert gate.state is TradingState.PAUSED
    assert gate.resume("operator") is None
    assert gate.state is TradingState.PAUSED
    clock.advance(ms=60_000)
    released = gate.apply(gate.breakers.tick(clock.time_ms()))
    assert released[0][1] is not None and released[0][1].state is TradingState.ACTIVE
    assert gate.resume("again") is None  # not paused any more
    gate.pause("operator")
    change = gate.resume("operator")
    assert change is not None and change.state is TradingState.ACTIVE


def test_from_config_and_limit_use() -> None:
    gate = RiskGate.from_config(ManualClock(wall_ms=T0), RiskConfig(max_gross_exposure=D(7000),
                                                                   max_asset_exposure=D(9000)))
    assert gate.limits.max_venue_exposure == 7000
    assert gate.limits.max_asset_exposure == 9000
    assert gate.max_open_groups == 3
    gate.exposure.mark("BTC", D(100))
    gate.exposure.reserve("a", "okx", "BTC", "buy", D(2), D(101))
    rows = gate.limit_use(open_groups=1)
    assert ("max_open_groups", "engine", D(3), D(1)) in rows
    assert ("max_leg_notional", "leg", D(5000), D(202)) in rows
    assert ("max_venue_exposure", "okx", D(7000), D(200)) in rows
    assert ("max_asset_exposure", "BTC", D(9000), D(200)) in rows
    assert not any(r[0] == "min_free_balance" for r in rows)
    assert RiskGate(ManualClock(), max_open_groups=7).max_open_groups == 7


# =============================================================================================
# The property: no sequence of intents, orders and fills breaks a limit
# =============================================================================================
VENUES = ("mt5", "okx", "binance")
ASSETS = ("BTC", "ETH")
QTYS = st.sampled_from([D(x) for x in ("0.5", "1", "2", "3", "5", "8", "10", "12", "20", "40", "90")])
PRICE_FACTORS = st.sampled_from([D(0), D("0.5"), D(1), D(1), D(1), D("1.5")])
PURPOSES = st.sampled_from(list(OrderPurpose))
FRACTIONS = st.sampled_from([D("0.25"), D("0.5"), D(1)])


def _grosses(book: ExposureBook) -> dict[tuple[str, str], Decimal]:
    out = {("venue", v): book.venue_gross(v) for v in VENUES}
    out.update({("asset", a): book.asset_gross(a) for a in ASSETS})
    return out


def _model_reducing(book: ExposureBook, venue: str | None, asset: str, side: Side, qty: Decimal) -> bool:
    """The oracle: filling the order and every other open order on its side leaves a smaller
    |position| (on the venue; or net over every venue when venue is None)."""
    if venue is None:
        pos = sum((q for (_, a), q in book.positions.items() if a == asset), D(0))
    else:
        pos = book.positions.get((venue, asset), D(0))
    pending = sum(
        (r.remaining for r in book.reservations.values()
         if r.asset == asset and r.side == side and (venue is None or r.venue == venue)),
        D(0),
    )
    if qty <= 0 or pos == 0 or (pos > 0) == (side == "buy"):
        return False
    return qty <= abs(pos) - pending


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(wall_ms=T0)
        self.day_equity = (T0 // DAY_MS, D(0))  # (UTC day, the equity change that day)
        self.gate = _gate(self.clock)
        for v in VENUES:
            self.gate.breakers.watch_venue(v)
        self.open: list[str] = []  # reserved keys
        self.released: list[str] = []
        self.n = 0
        self.allowed = 0

    @property
    def book(self) -> ExposureBook:
        return self.gate.exposure

    @initialize(positions=st.lists(st.tuples(st.sampled_from(VENUES), st.sampled_from(ASSETS),
                                             st.integers(-25, 25)), max_size=4))
    def start(self, positions: list[tuple[str, str, int]]) -> None:
        for venue, asset, qty in positions:
            self.book.set_position(venue, asset, D(qty))

    def _no_increase(self, before: dict[tuple[str, str], Decimal]) -> None:
        after = _grosses(self.book)
        for k, v in after.items():
            assert v <= before[k], (k, before[k], v)

    # -- orders ------------------------------------------------------------------------------
    @rule(venue=st.sampled_from(VENUES), asset=st.sampled_from(ASSETS), side=st.sampled_from(["buy", "sell"]),
          qty=QTYS, factor=PRICE_FACTORS, purpose=PURPOSES, reduces_group=st.booleans())
    def order(self, venue: str, asset: str, side: Side, qty: Decimal, factor: Decimal,
              purpose: OrderPurpose, reduces_group: bool) -> None:
        self.n += 1
        key = f"o{self.n}"
        o = OrderCheck(key, venue, asset, side, qty, MARKS[asset] * factor, purpose, reduces_group)
        before = _grosses(self.book)
        state = self.gate.state
        pos_red = _model_reducing(self.book, venue, asset, side, qty)
        net_red = _model_reducing(self.book, None, asset, side, qty)
        blocked = venue in self.gate.breakers.blocked_venues()
        # what the book would look like with it in flight (judged on a copy)
        trial = copy.deepcopy(self.book)
        trial.reserve(key, venue, asset, side, qty, o.price)
        value = o.price if o.price > 0 else MARKS[asset]
        fits = ((reduces_group or qty * value <= LIMITS.max_leg_notional)
                and trial.venue_gross(venue) <= LIMITS.max_venue_exposure
                and trial.asset_gross(asset) <= LIMITS.max_asset_exposure)

        refusal = self.gate.check_order(o)
        allowed = refusal is None
        event(f"{state}: {refusal or ('pass (reducing)' if pos_red else 'pass')}")

        # the acceptance, in its own words
        if allowed:
            self.allowed += 1
            if state is TradingState.HALTED:
                assert (purpose is OrderPurpose.FLATTEN and pos_red) or reduces_group
            if state is TradingState.REDUCING:
                assert pos_red or net_red
            if purpose is OrderPurpose.FLATTEN:
                assert pos_red
            if not pos_red and not reduces_group:  # a group's repair is a leg already admitted
                assert qty * value <= LIMITS.max_leg_notional
                if purpose is OrderPurpose.ENTRY and not reduces_group:
                    assert not blocked
        else:
            assert refusal is not None and refusal.startswith("risk:")

        # and the gate is no stricter than the rules: exactly these orders pass
        if state is TradingState.HALTED:
            state_ok = pos_red if purpose is OrderPurpose.FLATTEN else reduces_group
        elif state is TradingState.REDUCING:
            state_ok = pos_red or net_red
        else:
            state_ok = True
        expected = state_ok and (pos_red or (
            purpose is not OrderPurpose.FLATTEN
            and not (purpose is OrderPurpose.ENTRY and blocked and not reduces_group)
            and fits
        ))
        assert allowed == expected, (refusal, state, pos_red, net_red, blocked, fits)

        if allowed:
            self.book.reserve(key, venue, asset, side, qty, o.price)
            self.open.append(key)
            if pos_red:
                self._no_increase(before)  # a reducing order can never raise exposure
            else:
                after = _grosses(self.book)
                assert after[("venue", venue)] <= LIMITS.max_venue_exposure
                assert after[("asset", asset)] <= LIMITS.max_asset_exposure
                for k, v in after.items():
                    if k not in (("venue", venue), ("asset", asset)):
                        assert v == before[k]
        else:
            assert _grosses(self.book) == before  # a refusal leaves no trace
            assert key not in self.book.reservations

    @rule(venue=st.sampled_from(VENUES), asset=st.sampled_from(ASSETS), side=st.sampled_from(["buy", "sell"]),
          qty=QTYS, factor=PRICE_FACTORS, purpose=PURPOSES, reduces_group=st.booleans())
    def another_order(self, venue: str, asset: str, side: Side, qty: Decimal, factor: Decimal,
                      purpose: OrderPurpose, reduces_group: bool) -> None:
        self.order(venue, asset, side, qty, factor, purpose, reduces_group)

    @rule(data=st.data())
    def intent(self, data: st.DataObject) -> None:
        """An intent that passes `check` has legs that pass `check_order` (while active)."""
        buy_venue, sell_venue = data.draw(st.permutations(VENUES))[:2]
        asset = data.draw(st.sampled_from(ASSETS))
        qty = data.draw(QTYS)
        intent = _intent(qty=str(qty), buy_venue=buy_venue, sell_venue=sell_venue,
                         price=float(MARKS[asset]), pair=asset)
        before = (copy.deepcopy(self.book.reservations), dict(self.book.marks))
        verdict = self.gate.check(intent, open_groups=0)
        assert (self.book.reservations, self.book.marks) == before
        if verdict is None and self.gate.state is TradingState.ACTIVE:
            legs = [_order(leg.venue, asset, leg.side, leg.base_qty, key=f"i{self.n}{leg.side}")
                    for leg in intent.legs]
            trial = copy.deepcopy(self.gate)
            for leg in legs:
                assert _pass(trial, leg) is None

    # -- fills and releases --------------------------------------------------------------------
    @precondition(lambda self: bool(self.open))
    @rule(data=st.data(), fraction=FRACTIONS)
    def fill(self, data: st.DataObject, fraction: Decimal) -> None:
        key = data.draw(st.sampled_from(self.open))
        r = self.book.reservations[key]
        qty = r.remaining * fraction
        before = _grosses(self.book)
        pos = self.book.position(r.venue, r.asset)
        self.book.fill(r.venue, r.asset, r.side, qty, MARKS[r.asset], key=key)
        assert self.book.position(r.venue, r.asset) == pos + (qty if r.side == "buy" else -qty)
        self._no_increase(before)  # a fill inside its reservation was already counted

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.open))
        before = _grosses(self.book)
        self.book.release(key)
        self.open.remove(key)
        self.released.append(key)
        self._no_increase(before)

    @precondition(lambda self: bool(self.released))
    @rule(data=st.data(), venue=st.sampled_from(VENUES), asset=st.sampled_from(ASSETS),
          side=st.sampled_from(["buy", "sell"]), qty=QTYS)
    def late_fill(self, data: st.DataObject, venue: str, asset: str, side: Side, qty: Decimal) -> None:
        """A fill after the order was released: real exposure, applied whatever it does."""
        key = data.draw(st.sampled_from(self.released))
        pos = self.book.position(venue, asset)
        self.book.fill(venue, asset, side, qty, MARKS[asset], key=key)
        assert self.book.position(venue, asset) == pos + (qty if side == "buy" else -qty)

    # -- states and breakers -------------------------------------------------------------------
    # Operator actions and breakers are one rule each, so that orders and fills make up most
    # of every run.
    @rule(action=st.sampled_from(["kill", "pause", "resume", "reduce", "rearm", "rearm_blank", "rearm_empty"]))
    def operator(self, action: str) -> None:
        if action.startswith("rearm"):
            self.rearm({"rearm": "checked", "rearm_blank": "  ", "rearm_empty": ""}[action])
        else:
            getattr(self, action)()

    @rule(data=st.data(), kind=st.sampled_from(["balance", "venue_health", "group_closed", "tick"]))
    def breaker(self, data: st.DataObject, kind: str) -> None:
        if kind == "balance":
            self.balance(data.draw(st.sampled_from(VENUES)), data.draw(st.booleans()))
        elif kind == "venue_health":
            ages = [0.1, 0.1, 6.0, 6.0, 31.0]
            self.venue_health(data.draw(st.sampled_from(VENUES)), data.draw(st.sampled_from(ages)),
                              data.draw(st.booleans()))
        elif kind == "group_closed":
            self.group_closed(data.draw(st.sampled_from(["hedged", "hedged", "compensated", "failed"])),
                              data.draw(st.sampled_from([D(-60), D(0), D(5)])))
        else:
            self.tick(data.draw(st.sampled_from([1, 30, 61, 86_400])))

    def kill(self) -> None:
        self.gate.kill("kill")
        assert self.gate.state is TradingState.HALTED
        assert self.gate.blocked_state() == Reason.HALTED

    def pause(self) -> None:
        was = self.gate.state
        change = self.gate.pause("op")
        assert (change is not None) == (was is TradingState.ACTIVE)

    def resume(self) -> None:
        was = self.gate.state
        held = self.gate.breakers.all["consecutive_failures"].tripped
        change = self.gate.resume("op")
        assert (change is not None) == (was is TradingState.PAUSED and not held)
        assert self.gate.state is (TradingState.ACTIVE if change is not None else was)

    def reduce(self) -> None:
        was = self.gate.state
        self.gate.reduce("op")
        assert self.gate.state is (TradingState.HALTED if was is TradingState.HALTED else TradingState.REDUCING)

    def rearm(self, reason: str) -> None:
        was = self.gate.state
        try:
            self.gate.rearm(reason)
        except RearmRefused as exc:
            assert self.gate.state is was
            blocking = self.gate.breakers.blocking_rearm()
            if reason.strip():
                assert blocking
                for b in blocking:
                    assert b.name in str(exc)
            else:
                assert "reason" in str(exc)
        else:
            assert reason.strip()
            assert self.gate.state is TradingState.ACTIVE
            assert self.gate.breakers.blocking_rearm() == []

    def balance(self, venue: str, low: bool) -> None:
        self.gate.apply(self.gate.set_free_balance(venue, D(50) if low else D(5000)))
        assert (venue in self.gate.breakers.blocked_venues()) == (
            low or self.gate.breakers.all[f"stale:{venue}"].tripped)

    def venue_health(self, venue: str, age: float, connected: bool) -> None:
        was = self.gate.state
        out = self.gate.apply(self.gate.breakers.on_venue_health(
            venue, connected=connected, quote_age_s=age, down_for_s=0 if connected else age,
            now_ms=self.clock.time_ms()))
        if any(c.tripped and c.effect == "halt" for c, _ in out):
            assert self.gate.state is TradingState.HALTED
        elif not out:
            assert self.gate.state is was

    def group_closed(self, kind: str, pnl: Decimal) -> None:
        """A group closes and moves the day's equity by `pnl` (the risk loop's next reading)."""
        was = self.gate.state
        now = self.clock.time_ms()
        day, change = self.day_equity
        self.day_equity = (now // DAY_MS, (change if day == now // DAY_MS else D(0)) + pnl)
        changes = self.gate.breakers.on_group_closed(
            failed=kind == "failed", compensated=kind == "compensated", now_ms=now)
        changes += self.gate.breakers.on_day_equity(self.day_equity[1], now)
        self.gate.apply(changes)
        if any(c.tripped and c.effect == "halt" for c in changes):
            assert self.gate.state is TradingState.HALTED
        elif any(c.tripped and c.effect == "pause" for c in changes) and was is TradingState.ACTIVE:
            assert self.gate.state is TradingState.PAUSED

    def tick(self, seconds: int) -> None:
        self.clock.advance(ms=seconds * 1000)
        self.gate.apply(self.gate.breakers.tick(self.clock.time_ms()))

    # -- always ----------------------------------------------------------------------------------
    @invariant()
    def reservations_are_the_open_orders(self) -> None:
        assert set(self.book.reservations) == set(self.open)
        assert all(r.remaining >= 0 for r in self.book.reservations.values())

    @invariant()
    def active_only_with_nothing_holding_the_engine(self) -> None:
        if self.gate.state is TradingState.ACTIVE:
            assert self.gate.breakers.blocking_rearm() == []
            assert self.gate.blocked_state() is None


TestGateMachine = GateMachine.TestCase
TestGateMachine.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- a spot account sells only what it holds (issue 16, Deliver 6) --------------------------------
def test_a_spot_account_sells_only_what_it_holds() -> None:
    gate = _gate()
    gate.spot_account("binance", {"BTC": D(3)})
    assert gate.spot_held("binance", "BTC") == D(3) and gate.spot_held("okx", "BTC") is None
    assert _pass(gate, _order("binance", side="sell", qty=4)) == "risk:spot_inventory"
    assert _pass(gate, _order("binance", side="sell", qty=2, key="s1")) is None  # reserved
    assert _pass(gate, _order("binance", side="sell", qty=2)) == "risk:spot_inventory"  # 1 left unreserved
    gate.exposure.fill("binance", "BTC", "sell", D(2), D(100), key="s1")
    assert gate.spot_held("binance", "BTC") == D(1)
    assert _pass(gate, _order("binance", side="buy", qty=5)) is None  # buying needs no inventory
    assert _pass(gate, _order("okx", side="sell", qty=5)) is None  # a derivatives venue may go short
    # An intent whose sell leg lands on the spot account is refused before anything is sent.
    assert gate.check(_intent(2, buy_venue="okx", sell_venue="binance"), 0) == "risk:spot_inventory"
    assert gate.check(_intent(1, buy_venue="okx", sell_venue="binance"), 0) is None


async def test_a_paper_spot_account_takes_the_ledgers_fills_at_start() -> None:
    inst = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=D(1), tick_size=D("0.1"),
                      lot_step=D("0.001"), min_qty=D("0.001"), taker_fee_bps=10.0)
    gw = PaperGateway("binance", {"BTCUSDT": inst}, lambda v, s: None, ManualClock(), spot_inventory={"BTC": D(2)})
    gw.add_inventory("BTC", D("-1.5"))  # sold in an earlier run
    assert gw.held("BTC") == D("0.5")
    with pytest.raises(ValueError):
        PaperGateway("okx", {}, lambda v, s: None, ManualClock()).add_inventory("BTC", D(1))
