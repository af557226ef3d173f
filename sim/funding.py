"""Simulated perpetual funding: a rate per symbol settled every interval, as the venues document it.

Both venues settle funding every 8 hours by default at 00:00, 08:00 and 16:00 UTC (OKX help
"Introduction to perpetual swap funding fee"; Binance USD-M "Get Funding Rate History"). The
simulator charges a fixed rate per symbol (configurable; 0.01 % by default, the venues'
neutral rate) so a position held across a funding time has a known, testable carry. History
is served from the funding times between the server's start and now; the mark price of a
settlement is the book's mid when it is asked (the simulator keeps no price history).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

EIGHT_HOURS_MS = 8 * 3_600_000
DEFAULT_RATE = Decimal("0.0001")


class SimFunding:
    def __init__(self, *, interval_ms: int = EIGHT_HOURS_MS, rates: Mapping[str, Decimal] | None = None,
                 default_rate: Decimal = DEFAULT_RATE, since_ms: int = 0) -> None:
        if interval_ms <= 0:
            raise ValueError("funding interval must be > 0")
        self.interval_ms = interval_ms
        self._rates = dict(rates or {})
        self.default_rate = default_rate
        self.since_ms = since_ms  # no settlement before this (the server's start)

    def rate(self, symbol: str) -> Decimal:
        return self._rates.get(symbol, self.default_rate)

    def set_rate(self, symbol: str, rate: Decimal) -> None:
        self._rates[symbol] = rate

    def next_funding_ms(self, now_ms: int) -> int:
        """The first settlement after `now_ms` (settlements fall on multiples of the interval)."""
        return (now_ms // self.interval_ms + 1) * self.interval_ms

    def settlements(self, now_ms: int, start_ms: int | None, end_ms: int | None) -> list[int]:
        """Settlement times in [start, end] (both optional), none before `since_ms` nor after now;
        oldest first."""
        lo = max(self.since_ms, start_ms if start_ms is not None else 0)
        hi = min(now_ms, end_ms if end_ms is not None else now_ms)
        first = -(-lo // self.interval_ms) * self.interval_ms
        return list(range(first, hi + 1, self.interval_ms)) if first <= hi else []
