"""Overnight swap as an MT5 trade server charges it, for the simulated broker.

The simulator implements MetaTrader 5's documented symbol properties on its own (it never uses
quantarb's `core.carry`, which only reads what a terminal reports):

- `SYMBOL_SWAP_MODE` (`ENUM_SYMBOL_SWAP_MODE`) says what the sizes `SYMBOL_SWAP_LONG` and
  `SYMBOL_SWAP_SHORT` are: `points` (price points: money = size x point x contract size x
  lots, in the quote currency), `currency_symbol` (money in the symbol's base currency per lot),
  `currency_deposit` (money in the account currency per lot), `interest_current` /
  `interest_open` (annual interest in percent of the position's value at the current or the
  open price, over a 360-day bank year). `disabled`: no swap. The reopen modes and
  `currency_margin` are not simulated (refused when a spec names them).
- The swap is charged at the server's daily rollover (midnight, server time) on every
  position open across it: once for a rollover that closes Monday to Friday, three times for
  the one that closes `SYMBOL_SWAP_ROLLOVER3DAYS` (Wednesday by default: the value date
  rolls over the weekend there), never for Saturday or Sunday (brokers' published rules, e.g.
  "roll by 1 day on Monday, Tuesday, Thursday and Friday and by 3 days on Wednesday").
- The charge accumulates on the position (`POSITION_SWAP`); a closing deal carries the
  closed volume's share of it (`DEAL_SWAP`) into the balance. How a partial close splits the
  swap is not in MetaQuotes' documentation; this simulator splits it by volume.

The simulated symbols are quoted in the account currency (see `sim.mt5_broker`), so
`points`, `currency_symbol` at the price, and the interest modes all come out in it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SwapMode = Literal["disabled", "points", "currency_symbol", "currency_deposit", "interest_current",
                   "interest_open"]
SWAP_MODES: tuple[str, ...] = ("disabled", "points", "currency_symbol", "currency_deposit", "interest_current",
                               "interest_open")

# ENUM_DAY_OF_WEEK: SUNDAY = 0 ... SATURDAY = 6.
SUNDAY, MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY = range(7)
BANK_YEAR_DAYS = 360
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SwapTerms:
    """A symbol's swap properties: `SYMBOL_SWAP_MODE`, `_LONG`, `_SHORT`, `_ROLLOVER3DAYS`."""

    mode: SwapMode = "disabled"
    long: float = 0.0
    short: float = 0.0
    rollover3days: int = WEDNESDAY

    def __post_init__(self) -> None:
        if self.mode not in SWAP_MODES:
            raise ValueError(f"swap mode {self.mode!r} is not simulated (one of {', '.join(SWAP_MODES)})")
        if not (math.isfinite(self.long) and math.isfinite(self.short)):
            raise ValueError("swap sizes must be finite")
        if self.rollover3days not in range(7):
            raise ValueError("rollover3days is a day of the week, 0 (Sunday) to 6 (Saturday)")

    def nights(self, weekday: int) -> int:
        """How many nights the rollover at the end of `weekday` (ENUM_DAY_OF_WEEK) charges."""
        if weekday in (SATURDAY, SUNDAY):
            return 0
        return 3 if weekday == self.rollover3days else 1

    def per_night(self, *, buy: bool, lots: float, contract_size: float, point: float, price_open: float,
                  price_now: float) -> float:
        """One night's swap of a position, in the account currency, signed (negative = charged).

        `price_now` is the price the position would close at (bid for a buy, ask for a sell).
        """
        size = self.long if buy else self.short
        if self.mode == "disabled" or size == 0.0:
            return 0.0
        if self.mode == "points":
            return size * point * contract_size * lots
        if self.mode == "currency_deposit":
            return size * lots
        if self.mode == "currency_symbol":  # base currency per lot, at the price into the quote (= account)
            return size * lots * price_now
        price = price_now if self.mode == "interest_current" else price_open
        return size / 100.0 / BANK_YEAR_DAYS * price * contract_size * lots


def weekday_of_day(day: int) -> int:
    """ENUM_DAY_OF_WEEK of day number `day` since 1970-01-01 (a Thursday)."""
    return (day + THURSDAY) % 7



NO_SWAP = SwapTerms()

__all__ = ["DAY_MS", "NO_SWAP", "SWAP_MODES", "SwapMode", "SwapTerms", "weekday_of_day"]
