"""Money figures round half-even whatever the thread's decimal context says: ccxt sets
ROUND_HALF_UP on it, and a figure shown or judged must not depend on which library ran before."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from core.breakers import BreakerLimits, Breakers
from core.trade_stats import GroupOutcome, trade_stats
from quantarb_tui.widgets import format as fmt

D = Decimal


def test_figures_round_half_even_under_a_half_up_context() -> None:
    limits = BreakerLimits(daily_loss_limit=D(100), max_consecutive_failures=3, failure_pause_s=60,
                           venue_block_s=5, feed_stale_halt_s=30, venue_down_halt_s=20,
                           min_free_balance=D(0), hold_timeout_s=600)
    with localcontext() as ctx:
        ctx.rounding = ROUND_HALF_UP
        assert fmt.money("4.505").plain == "4.50"
        (trip,) = Breakers(limits).on_day_equity(D("-100.005"), 1_732_150_800_000)
        assert trip.detail == "equity today -100.00 <= -100"
        assert trade_stats([GroupOutcome("XAU", D("0.00005"), None)]).as_dict()["total_pnl"] == "0.0000"
