"""Carry: what holding a position costs or earns while it is open (pure).

**Perpetual funding** (OKX swaps, Binance USD-M). Both venues charge it at each funding time
(every 8 hours by default: 00:00, 08:00, 16:00 UTC; some contracts 1, 2 or 4 hours) to whoever
holds a position at that moment, and nothing to whoever closed before it:

- OKX (help "Introduction to perpetual swap funding fee"): funding fee = position value x
  funding rate; a positive rate: longs pay shorts, a negative rate: shorts pay longs. The
  position value of a USDT-margined swap is contracts x contract value (`ctVal`) x mark price.
- Binance USD-M (FAQ "Introduction to Binance Futures Funding Rates"): funding amount =
  nominal value of positions x funding rate, nominal value = mark price x size; same sign
  rule. The rate and mark come from `GET /fapi/v1/premiumIndex` (`lastFundingRate`,
  `markPrice`, `nextFundingTime`) and past ones from `GET /fapi/v1/fundingRate`
  (`fundingRate`, `fundingTime`, `markPrice`).

So for a signed position q (base units, + long) at mark price m and rate r, the holder's cash
changes by -q x m x r, in the contract's settlement currency (USDT for a USDT-margined swap).

**MT5 swap and commission.** A CFD's overnight swap is broker-specific (points, percent,
money; triple on one weekday), so quantarb never computes it: the terminal reports it.
`DEAL_SWAP` of a closing deal is swap booked; `POSITION_SWAP` of an open position is swap
accrued so far. Commission is `DEAL_COMMISSION` on each deal (a fee, booked with the fill). All
in the account's currency, signed as charged (negative = a cost).
"""

from __future__ import annotations

from decimal import Decimal


def funding_payment(position_base: Decimal, mark_price: Decimal, rate: Decimal) -> Decimal:
    """Cash the holder receives (+) or pays (-) at one funding time: -position x mark x rate.

    `position_base` is signed (long > 0) in base units, `mark_price` per base unit.
    A long at a positive rate pays; a short at a positive rate receives.
    """
    if not (position_base.is_finite() and mark_price.is_finite() and rate.is_finite()):
        raise ValueError("funding needs finite position, mark price and rate")
    if mark_price <= 0:
        raise ValueError(f"mark price {mark_price} must be > 0")
    return -(position_base * mark_price * rate)
