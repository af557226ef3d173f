"""The simulated MT5 broker's overnight swap against worked examples of the documented modes.

Worked examples (the brokers' published formulas for MT5's `SYMBOL_SWAP_MODE`s):
- points: "swap x contract size x 10^(-digits) x lot x holding days" (Vantage); a swap of 10
  points a day is charged 3 x 10 = 30 points on Wednesday's rollover (Equiti, "How are swaps
  calculated": MT5 "knows that on a Wednesday it will charge 3 times the value we input");
- money in the deposit currency: "swap x lot x holding days";
- percent: "swap / 100 / 360 x close price x contract size x lot x holding days".
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from sim.mt5_broker import OrderType, SimBroker, SymbolSpec, TradeRequest
from sim.mt5_swap import FRIDAY, MONDAY, SATURDAY, SUNDAY, WEDNESDAY, SwapTerms, weekday_of_day

MONDAY_10H = 1_796_032_800_000  # 2026-11-30 10:00 UTC, a Monday
HOUR = 3_600_000
DAY = 24 * HOUR
EURUSD = SymbolSpec(contract_size=100_000.0, point=0.00001, volume_step=0.01,
                    swap=SwapTerms("points", long=-10.0, short=2.5))


def test_day_numbers_map_to_mql5_weekdays() -> None:
    assert weekday_of_day(0) == 4  # 1970-01-01 was a Thursday
    assert weekday_of_day(MONDAY_10H // DAY) == MONDAY
    assert weekday_of_day(MONDAY_10H // DAY + 5) == SATURDAY


def test_points_worked_example_one_night_and_the_wednesday_triple() -> None:
    # EURUSD, 5 digits, contract 100,000, 1 lot, swap long -10 points: -10 x 100,000 x 1e-5 x 1 = -10 USD.
    night = EURUSD.swap.per_night(buy=True, lots=1.0, contract_size=100_000.0, point=0.00001, price_open=1.1,
                                  price_now=1.1)
    assert night == pytest.approx(-10.0)
    assert [EURUSD.swap.nights(d) for d in range(7)] == [0, 1, 1, 3, 1, 1, 0]  # Sunday .. Saturday
    assert night * EURUSD.swap.nights(WEDNESDAY) == pytest.approx(-30.0)


def test_money_and_percent_worked_examples() -> None:
    deposit = SwapTerms("currency_deposit", long=-5.0, short=-5.0)
    # -5 USD a lot, 0.2 lot, held over Wednesday: -5 x 0.2 x 3 = -3.00.
    assert deposit.per_night(buy=False, lots=0.2, contract_size=1.0, point=0.01, price_open=1.0,
                             price_now=1.0) * deposit.nights(WEDNESDAY) == pytest.approx(-3.0)
    percent = SwapTerms("interest_current", long=-18.0, short=4.0)
    # -18 % a year on BTCUSD at a close price of 60,000, contract 1, 0.5 lot: -18/100/360 x 60,000 x 0.5 = -15.00.
    assert percent.per_night(buy=True, lots=0.5, contract_size=1.0, point=0.01, price_open=50_000.0,
                             price_now=60_000.0) == pytest.approx(-15.0)
    at_open = SwapTerms("interest_open", long=-18.0)
    assert at_open.per_night(buy=True, lots=0.5, contract_size=1.0, point=0.01, price_open=50_000.0,
                             price_now=60_000.0) == pytest.approx(-12.5)
    base = SwapTerms("currency_symbol", short=-0.0001)
    assert base.per_night(buy=False, lots=2.0, contract_size=1.0, point=0.01, price_open=1.0,
                          price_now=60_000.0) == pytest.approx(-12.0)


@pytest.mark.parametrize("bad", [
    {"mode": "reopen_current"}, {"mode": "points", "long": math.nan}, {"mode": "points", "short": math.inf},
    {"rollover3days": 7}, {"rollover3days": -1},
])
def test_terms_outside_what_is_simulated_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SwapTerms(**bad)  # type: ignore[arg-type]


class Market:
    def __init__(self) -> None:
        self.bid, self.ask = 1.10000, 1.10010

    def touch(self, symbol: str) -> tuple[float, float] | None:
        return (self.bid, self.ask) if symbol == "EURUSD" else None


def broker(clock: ManualClock, **kw: object) -> SimBroker:
    return SimBroker(Market().touch, clock=clock, specs={"EURUSD": EURUSD}, balance=100_000.0, **kw)  # type: ignore[arg-type]


def buy(b: SimBroker, lots: float, position: int = 0) -> int:
    side: OrderType = "sell" if position else "buy"
    result = b.execute(TradeRequest(symbol="EURUSD", type=side, volume=lots, position=position, magic=1))
    assert result.done, result
    return result.order


def test_the_broker_charges_each_rollover_on_the_positions_open_across_it() -> None:
    clock = ManualClock(MONDAY_10H)
    b = broker(clock)
    ticket = buy(b, 1.0)
    clock.advance(ms=13 * HOUR)  # Monday 23:00: no rollover yet
    [p] = b.positions()
    assert p.swap == 0.0
    clock.advance(ms=2 * HOUR)  # Tuesday 01:00: Monday's rollover, one night
    assert b.positions()[0].swap == -10.0
    clock.advance(ms=2 * DAY)  # Thursday 01:00: Tuesday (1) and Wednesday (3)
    assert b.positions()[0].swap == -50.0
    before = b.account()
    assert before.equity == pytest.approx(before.balance + b.floating_profit() - 50.0)
    clock.advance(ms=4 * DAY)  # next Monday 01:00: Thursday 1, Friday 1, Saturday 0, Sunday 0
    assert b.positions()[0].swap == -70.0
    # A position opened after a midnight is not charged for it.
    late = buy(b, 0.5)
    clock.advance(ms=DAY)
    swaps = {p.ticket: p.swap for p in b.positions()}
    assert swaps == {ticket: -80.0, late: -5.0}


def test_a_closing_deal_carries_the_closed_share_of_the_swap_into_the_balance() -> None:
    clock = ManualClock(MONDAY_10H)
    b = broker(clock)
    ticket = buy(b, 1.0)
    clock.advance(ms=DAY)  # Tuesday 10:00: -10 accrued
    balance = b.account().balance
    buy(b, 0.4, position=ticket)  # a partial close: 40 % of the swap goes with it
    deal = b.history_deals()[-1]
    assert (deal.entry, deal.swap) == ("out", -4.0)
    assert b.positions()[0].swap == -6.0
    assert b.account().balance == pytest.approx(balance + deal.profit + deal.commission - 4.0)
    buy(b, 0.6, position=ticket)
    assert b.history_deals()[-1].swap == -6.0 and b.positions() == []


def test_the_server_time_zone_moves_the_rollover() -> None:
    clock = ManualClock(MONDAY_10H)
    b = broker(clock, server_utc_offset_s=3 * 3600)  # UTC+3: midnight there is 21:00 UTC
    buy(b, 1.0)
    clock.advance(ms=11 * HOUR + 1)  # Monday 21:00:00.001 UTC = Tuesday 00:00 server time
    assert b.positions()[0].swap == -10.0


def test_weekends_charge_nothing_and_the_swap_day_survives_a_restart(tmp_path: Path) -> None:
    saturday = MONDAY_10H + 5 * DAY
    clock = ManualClock(saturday)
    state = tmp_path / "broker.json"
    b = broker(clock, state_file=state)
    # Markets are shut at the weekend; the simulated one still fills (it only models swap here).
    buy(b, 1.0)
    clock.advance(ms=DAY)  # Sunday: Saturday's rollover charges nothing
    assert b.positions()[0].swap == 0.0
    b.save()
    clock.advance(ms=DAY)  # Monday 10:00: Sunday's, nothing
    again = broker(clock, state_file=state)
    assert again.positions()[0].swap == 0.0
    clock.advance(ms=DAY)  # Tuesday: Monday's night
    assert again.positions()[0].swap == -10.0
    assert weekday_of_day(saturday // DAY) == SATURDAY and weekday_of_day(saturday // DAY + 1) == SUNDAY


@given(st.integers(0, 6), st.integers(0, 6))
def test_a_week_of_rollovers_charges_seven_nights_whatever_the_triple_day(start: int, triple: int) -> None:
    terms = SwapTerms("points", long=-1.0, rollover3days=triple)
    nights = sum(terms.nights((start + d) % 7) for d in range(7))
    assert nights == (7 if triple not in (SATURDAY, SUNDAY) else 5)
    assert terms.nights(FRIDAY) == (3 if triple == FRIDAY else 1)


class _SteppedClock:
    """A wall clock an NTP step can move back (ManualClock never goes backwards)."""

    def __init__(self, wall_ms: int) -> None:
        self.wall_ms = wall_ms

    def time_ms(self) -> int:
        return self.wall_ms

    def monotonic_ns(self) -> int:
        return 0


def test_a_wall_clock_stepped_back_across_midnight_does_not_charge_that_rollover_twice() -> None:
    """Review of issue 16: the rollover noted the day it saw last, also an earlier one, so a
    clock stepped back across a midnight and forward again charged that midnight again."""
    clock = _SteppedClock(MONDAY_10H)
    b = SimBroker(Market().touch, clock=clock, specs={"EURUSD": EURUSD}, balance=100_000.0)
    buy(b, 1.0)
    clock.wall_ms = MONDAY_10H + 14 * HOUR  # Tuesday 00:00 UTC: Monday's rollover
    assert b.positions()[0].swap == -10.0
    clock.wall_ms -= 2_000  # stepped back 2 s: Monday 23:59:58 again
    assert b.positions()[0].swap == -10.0
    clock.wall_ms += 60_000  # Tuesday again: nothing more
    assert b.positions()[0].swap == -10.0
    clock.wall_ms += DAY  # Wednesday 00:01: Tuesday's rollover, once
    assert b.positions()[0].swap == -20.0
