"""core.trade_stats: a worked example of every statistic, and the held clock."""

from __future__ import annotations

from decimal import Decimal

from core.trade_stats import HOUR_MS, GroupOutcome, HeldClock, trade_stats

D = Decimal


def test_a_worked_example() -> None:
    outcomes = [GroupOutcome("XAU", D("10"), 1.5), GroupOutcome("XAU", D("-5"), -0.5),
                GroupOutcome("BTC", D("3"), None), GroupOutcome("BTC", D("0"), 2.0)]
    s = trade_stats(outcomes, carry=D("-12"), held_ms=3 * HOUR_MS)
    assert (s.groups, s.wins, s.losses) == (4, 2, 1)
    assert s.hit_rate == 0.5  # a group that made exactly nothing is no hit
    assert s.profit_factor == D("2.6")  # (10 + 3) / 5
    assert s.expectancy == D(2)  # 8 / 4
    assert s.mean_slippage_bps == 1.0  # (1.5 - 0.5 + 2.0) / 3: groups without a figure left out
    assert s.carry_per_held_hour == D(-4)
    doc = s.as_dict()
    assert doc["profit_factor"] == "2.6000" and doc["expectancy"] == "2.0000" and doc["held_ms"] == 3 * HOUR_MS
    assert doc["carry_per_held_hour"] == "-4.0000" and doc["hit_rate"] == 0.5


def test_without_losses_groups_or_time_the_ratios_are_missing_not_invented() -> None:
    s = trade_stats([GroupOutcome("XAU", D(1), None)], carry=D(0), held_ms=0)
    assert s.profit_factor is None and s.carry_per_held_hour is None and s.mean_slippage_bps is None
    empty = trade_stats([], carry=None)
    assert empty.hit_rate is None and empty.expectancy is None and empty.carry_per_held_hour is None


def test_held_clock_counts_each_holding_to_its_end_or_now() -> None:
    c = HeldClock()
    c.update("XAU", True, 1_000)
    c.update("XAU", True, 2_000)  # still held: the start stays
    c.update("XAU", False, 5_000)
    c.update("XAU", False, 6_000)
    c.update("XAU", True, 10_000)
    c.update("BTC", False, 10_000)
    assert c.held_ms(12_000) == {"XAU": 4_000 + 2_000}

