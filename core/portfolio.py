"""The portfolio: what quantarb holds on each venue and what it has made (pure, deterministic).

Fed by fills, marks, funding and swap; asked for positions and equity. One book per
(venue, symbol), in base units at normalized prices (`core.instruments`), in the instrument's
quote currency:

- position q (signed, + long) and its cost c (signed: q x average price);
- cash: what the fills brought in (sells) minus what they took out (buys);
- realized = cash + c: the PnL of what has been closed (average-cost method; exactly the
  cash once the book is flat);
- unrealized = q x mark - c, at the mid of that venue's book (with the mark's age);
- fees, per currency as charged (a rebate is a negative fee);
- carry, per currency, + received / - paid: perpetual funding at each funding time on the
  position then held (`core.carry`), MT5 swap booked on deals and accrued on open positions.

Equity change = realized + unrealized - fees + carry. Defined this way it is, by
construction, the sum of every fill's cash flow, minus fees, plus carry, plus every open
position at its mark: the identity the property tests check to the cent.

Figures in one account currency need a rate per currency (`core.currency.RateBook`); a
currency without one, or an open position without a mark, makes the figures it enters
*missing* (None), never a guess.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from core.carry import funding_payment
from core.currency import RateBook, quote_currency
from core.instruments import Instrument
from core.models import Side, Venue

# Divisions (the cost left after a partial close, average prices) keep 50 digits: far past a
# cent on any notional, and the identity realized + unrealized = cash + q x mark does not
# depend on them (realized is defined as cash + cost).
_CTX = Context(prec=50)
_ZERO = Decimal(0)

Key = tuple[Venue, str]


def _dec(value: float | Decimal, name: str) -> Decimal:
    """A finite Decimal from a float (by its repr: 0.1 stays 0.1) or a Decimal; ValueError otherwise."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} {value} is not finite")
        return Decimal(repr(value))
    if not value.is_finite():
        raise ValueError(f"{name} {value} is not finite")
    return value


def _add(into: dict[str, Decimal], ccy: str, amount: Decimal) -> None:
    into[ccy] = into.get(ccy, _ZERO) + amount


def _text(value: Decimal | None) -> str | None:
    """Positional notation without trailing zeros or exponent (`1E+1` -> `10`, `-0` -> `0`)."""
    if value is None:
        return None
    return "0" if value == 0 else format(value.normalize(), "f")


@dataclass(slots=True)
class _Book:
    """One (venue, symbol): position and money in the instrument's quote currency."""

    inst: Instrument
    quote_ccy: str
    qty: Decimal = _ZERO
    cost: Decimal = _ZERO
    cash: Decimal = _ZERO
    fees: dict[str, Decimal] = field(default_factory=dict)
    carry: dict[str, Decimal] = field(default_factory=dict)
    # MT5 swap accrued on the open position (replaced by each report; cleared when flat).
    accrued: tuple[Decimal, str, int] | None = None
    fills: int = 0
    last_fill_ms: int = 0
    last_price: Decimal = _ZERO  # venue units
    # When the position last became at least one lot step (or reversed through zero): how long
    # it has been held. None while below a lot step (dust is not a holding).
    opened_ms: int | None = None
    # The last quote as it came (venue units, float): converted only when valued.
    mark_bid: float = 0.0
    mark_ask: float = 0.0
    mark_ms: int = -1
    # An exact mark in venue units (a price the operator gave, a last fill), else None.
    mark_exact: Decimal | None = None
    # The view at `view_ms` (`Portfolio._view`): the risk loop's pass, the equity and the
    # holdings all read every book at the same instant. Every change to the book drops it.
    view: PositionView | None = None
    view_ms: int = 0

    def trade(self, signed: Decimal, price: Decimal) -> None:
        """Apply `signed` base units (+ buy) at normalized `price` (average-cost method)."""
        self.cash -= signed * price
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.cost += signed * price
            self.qty += signed
        elif abs(signed) < abs(self.qty):
            self.cost -= _CTX.divide(_CTX.multiply(self.cost, abs(signed)), abs(self.qty))
            self.qty += signed
        else:  # closes the position, and opens the rest the other way at this price
            self.qty += signed
            self.cost = self.qty * price
        if self.qty == 0:
            self.cost = _ZERO
            self.accrued = None

    def track_opening(self, before: Decimal, ts_ms: int) -> None:
        """After a trade: a position that became held (>= one lot step), or reversed, opens now."""
        step = self.inst.base_step
        held = abs(self.qty) >= step
        if not held:
            self.opened_ms = None
        elif abs(before) < step or (before > 0) != (self.qty > 0):
            self.opened_ms = ts_ms

    def mark_price(self) -> Decimal | None:
        if self.mark_ms < 0:
            return None
        if self.mark_exact is not None:
            return self.mark_exact * self.inst.price_scale
        mid = (Decimal(repr(self.mark_bid)) + Decimal(repr(self.mark_ask))) / 2
        return mid * self.inst.price_scale

    def carry_total(self) -> dict[str, Decimal]:
        out = dict(self.carry)
        if self.accrued is not None:
            _add(out, self.accrued[1], self.accrued[0])
        return out


@dataclass(slots=True, frozen=True)
class PositionView:
    """One (venue, symbol) as the portfolio sees it now. Money in `quote_ccy` unless keyed by currency."""

    venue: Venue
    symbol: str
    asset: str
    quote_ccy: str
    qty: Decimal  # base units, + long
    venue_qty: Decimal  # the venue's units (lots, contracts, coins)
    avg_price: Decimal | None  # None when flat
    realized: Decimal
    mark: Decimal | None
    mark_ts_ms: int | None
    mark_age_ms: int | None
    unrealized: Decimal | None  # None: open without a mark
    fees: dict[str, Decimal]
    carry: dict[str, Decimal]
    fills: int
    opened_ms: int | None = None  # held (>= one lot step) since; None below a lot step

    def as_dict(self) -> dict[str, Any]:
        return {
            "venue": self.venue, "symbol": self.symbol, "asset": self.asset, "quote_ccy": self.quote_ccy,
            "qty": _text(self.qty), "venue_qty": _text(self.venue_qty), "avg_price": _text(self.avg_price),
            "realized": _text(self.realized), "mark": _text(self.mark), "mark_ts_ms": self.mark_ts_ms,
            "mark_age_ms": self.mark_age_ms, "unrealized": _text(self.unrealized),
            "fees": {k: _text(v) for k, v in sorted(self.fees.items())},
            "carry": {k: _text(v) for k, v in sorted(self.carry.items())}, "fills": self.fills,
            "opened_ms": self.opened_ms,
        }


@dataclass(slots=True, frozen=True)
class MoneyParts:
    """The equity figures in one currency (before conversion)."""

    realized: Decimal = _ZERO
    unrealized: Decimal | None = _ZERO
    fees: Decimal = _ZERO
    carry: Decimal = _ZERO

    @property
    def total(self) -> Decimal | None:
        if self.unrealized is None:
            return None
        return self.realized + self.unrealized - self.fees + self.carry

    def as_dict(self) -> dict[str, str | None]:
        return {"realized": _text(self.realized), "unrealized": _text(self.unrealized),
                "fees": _text(self.fees), "carry": _text(self.carry), "total": _text(self.total)}


@dataclass(slots=True, frozen=True)
class Equity:
    """Equity change in the account currency: realized + unrealized - fees + carry.

    A figure is None when a currency it needs has no rate (`missing_rates`) or, for
    unrealized and total, when an open position has no mark (`missing_marks`).
    """

    currency: str
    realized: Decimal | None
    unrealized: Decimal | None
    fees: Decimal | None
    carry: Decimal | None
    by_currency: dict[str, MoneyParts]
    missing_rates: tuple[str, ...]
    missing_marks: tuple[Key, ...]

    @property
    def total(self) -> Decimal | None:
        if self.realized is None or self.unrealized is None or self.fees is None or self.carry is None:
            return None
        return self.realized + self.unrealized - self.fees + self.carry

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "realized": _text(self.realized),
            "unrealized": _text(self.unrealized),
            "fees": _text(self.fees),
            "carry": _text(self.carry),
            "total": _text(self.total),
            "by_currency": {ccy: parts.as_dict() for ccy, parts in sorted(self.by_currency.items())},
            "missing_rates": list(self.missing_rates),
            "missing_marks": [f"{v}:{s}" for v, s in self.missing_marks],
        }


class Portfolio:
    """Positions, PnL, fees and carry per (venue, symbol), fed in time order.

    Every input is checked before anything changes: a bad one raises ValueError and leaves
    the portfolio as it was. Fills are deduplicated on (venue, venue trade id), funding on
    (venue, symbol, funding time), booked swap on (venue, deal).
    """

    def __init__(self, instruments: Iterable[Instrument], *, quote_ccy: Mapping[Key, str] | None = None) -> None:
        self._books: dict[Key, _Book] = {}
        overrides = dict(quote_ccy or {})
        for inst in instruments:
            ccy = overrides.get(inst.key) or quote_currency(inst.venue, inst.symbol)
            if ccy is None:
                raise ValueError(f"{inst.venue}:{inst.symbol}: its quote currency is not in its name; "
                                 "give it explicitly")
            self._books[inst.key] = _Book(inst, ccy)
        self._sorted = [b for _, b in sorted(self._books.items())]  # by venue and symbol
        # Fill ids seen, in the order they came, each with when it was booked (its `booked_ms`).
        self._trades: dict[tuple[Venue, str], int] = {}
        # With `keep_recent_trades`: the same ids in a queue, the oldest forgotten first, and the
        # latest booking's time (what "older than `max_age_ms`" is measured from; a clock that
        # steps back holds ids longer, never drops a young one).
        self._trade_order: deque[tuple[Venue, str]] | None = None
        self._trades_kept = 0
        self._trades_max_age_ms: int | None = None
        self._trades_newest_ms = 0
        # funding key -> (amount, currency, reported by the venue)
        self._funding: dict[tuple[Venue, str, int], tuple[Decimal, str, bool]] = {}
        self._swaps: set[tuple[Venue, str]] = set()

    def keep_recent_trades(self, limit: int, *, max_age_ms: int | None = None, now_ms: int | None = None) -> None:
        """Remember only the newest `limit` fill ids for deduplication from now on, and with
        `max_age_ms` only those booked within that long of the newest (the running engine's
        portfolio, which lives for weeks: every id ever seen was about 190 bytes a fill, and a
        bound by count alone filled for hours at the demo's rate, issue 19). A venue repeats a
        fill within minutes (a reconnect's catch-up, reconciliation's overlap); an older repeat
        would be counted again here, and refused by the ledger (unique venue trade id), which
        stays the record. Without a call, every id is kept (a replay of the ledger). Called on
        a portfolio already fed (restored from the ledger, in its order), the oldest of those
        ids go first; with `now_ms` (the clock `booked_ms` will come from), those ids count as
        booked then, not at their fills' times (the venues' clocks: one stamped ahead of ours
        would hold every later id in the window)."""
        if limit < 1:
            raise ValueError(f"limit {limit}: must be >= 1")
        if max_age_ms is not None and max_age_ms < 0:
            raise ValueError(f"max_age_ms {max_age_ms}: must be >= 0")
        self._trades_kept = limit
        self._trades_max_age_ms = max_age_ms
        if now_ms is not None:
            self._trades = dict.fromkeys(self._trades, now_ms)
            self._trades_newest_ms = now_ms
        if self._trade_order is None:
            self._trade_order = deque(self._trades)
            if now_ms is None:
                self._trades_newest_ms = max(self._trades.values(), default=0)
        self._forget_old_trades()

    def _forget_old_trades(self) -> None:
        order = self._trade_order
        if order is None:
            return
        trades = self._trades
        while len(order) > self._trades_kept:
            del trades[order.popleft()]
        if self._trades_max_age_ms is not None:
            horizon = self._trades_newest_ms - self._trades_max_age_ms
            while order and trades[order[0]] < horizon:
                del trades[order.popleft()]

    def _book(self, venue: Venue, symbol: str) -> _Book:
        book = self._books.get((venue, symbol))
        if book is None:
            raise ValueError(f"{venue}:{symbol}: not an instrument of this portfolio")
        return book

    def has(self, venue: Venue, symbol: str) -> bool:
        return (venue, symbol) in self._books

    def instrument(self, venue: Venue, symbol: str) -> Instrument:
        return self._book(venue, symbol).inst

    def last_fill(self, venue: Venue, symbol: str) -> tuple[Decimal, int] | None:
        """The last fill's price (venue units) and time, None before any fill."""
        book = self._book(venue, symbol)
        if not book.fills:
            return None
        return book.last_price, book.last_fill_ms

    # -- inputs ----------------------------------------------------------------------------
    def fill(self, *, venue: Venue, symbol: str, side: Side, qty: Decimal, price: Decimal, fee: Decimal,
             fee_ccy: str, ts_ms: int, trade_id: str, booked_ms: int | None = None) -> bool:
        """One execution in the venue's units; False if (venue, trade_id) was already applied.
        `booked_ms`: when it was booked here (this portfolio's clock; the fill's own time when
        not given), from which `keep_recent_trades(max_age_ms=)` ages its id."""
        book = self._book(venue, symbol)
        if side not in ("buy", "sell"):
            raise ValueError(f"side {side!r}: buy or sell")
        qty, price, fee = _dec(qty, "qty"), _dec(price, "price"), _dec(fee, "fee")
        if qty <= 0 or price <= 0:
            raise ValueError(f"{venue}:{symbol} fill {trade_id!r}: qty {qty} and price {price} must be > 0")
        if not fee_ccy:
            raise ValueError(f"{venue}:{symbol} fill {trade_id!r}: no fee currency")
        if not trade_id:
            raise ValueError(f"{venue}:{symbol}: a fill needs the venue's trade id")
        if (venue, trade_id) in self._trades:
            return False
        booked = ts_ms if booked_ms is None else booked_ms
        self._trades[(venue, trade_id)] = booked
        if self._trade_order is not None:
            self._trade_order.append((venue, trade_id))
            self._trades_newest_ms = booked
            self._forget_old_trades()
        base = book.inst.to_base_qty(qty)
        px = book.inst.normalized_price(price)
        before = book.qty
        book.view = None
        book.trade(base if side == "buy" else -base, px)
        book.track_opening(before, ts_ms)
        _add(book.fees, fee_ccy, fee)
        book.fills += 1
        if ts_ms >= book.last_fill_ms:  # a late fill stamped earlier is not the last price
            book.last_fill_ms, book.last_price = ts_ms, price
        return True

    def mark(self, venue: Venue, symbol: str, bid: float, ask: float, ts_ms: int) -> bool:
        """The venue's book now (its own price units). Cheap: converted only when valued.
        False when the book was already marked with these very objects at `ts_ms` (nothing
        changed: the same quote marked again within one instant)."""
        book = self._book(venue, symbol)
        if book.mark_bid is bid and book.mark_ask is ask and book.mark_ms == ts_ms >= 0 and book.mark_exact is None:
            return False
        if not (math.isfinite(bid) and math.isfinite(ask)) or bid <= 0 or ask < bid:
            raise ValueError(f"{venue}:{symbol}: book {bid}/{ask} is not positive and uncrossed")
        book.mark_bid, book.mark_ask, book.mark_ms, book.mark_exact = bid, ask, ts_ms, None
        book.view = None
        return True

    def mark_at(self, venue: Venue, symbol: str, price: Decimal, ts_ms: int) -> None:
        """An exact mark price in the venue's units (a last fill price, a price given by hand)."""
        book = self._book(venue, symbol)
        price = _dec(price, "mark price")
        if price <= 0:
            raise ValueError(f"{venue}:{symbol}: mark price {price} must be > 0")
        book.mark_exact, book.mark_ms = price, ts_ms
        book.view = None

    def clear_marks(self) -> None:
        """Every book unmarked, as before any quote or mark: a replay that valued an earlier
        instant at its last fills (the ledger's day start) goes on as if it never had."""
        for book in self._sorted:
            book.mark_bid, book.mark_ask, book.mark_ms, book.mark_exact = 0.0, 0.0, -1, None
            book.view = None

    def accrue_funding(self, venue: Venue, symbol: str, funding_ts_ms: int, rate: Decimal,
                       mark_price: Decimal, position: Decimal | None = None) -> Decimal | None:
        """Funding at one funding time on `position` (base units, + long: what was held at
        `funding_ts_ms`; default the position held now): -q x mark x rate in the quote currency.
        `mark_price` in venue units. None if that funding time is already booked (computed or
        reported)."""
        book = self._book(venue, symbol)
        held = book.qty if position is None else _dec(position, "position")
        amount = funding_payment(held, book.inst.normalized_price(_dec(mark_price, "mark price")),
                                 _dec(rate, "rate"))
        key = (venue, symbol, funding_ts_ms)
        if key in self._funding:
            return None
        self._funding[key] = (amount, book.quote_ccy, False)
        _add(book.carry, book.quote_ccy, amount)
        book.view = None
        return amount

    def book_funding(self, venue: Venue, symbol: str, funding_ts_ms: int, amount: Decimal, ccy: str) -> bool:
        """Funding as the venue reported it (OKX bill, Binance `FUNDING_FEE` income), + received.
        It replaces a computed amount for the same funding time; False if already reported."""
        book = self._book(venue, symbol)
        amount = _dec(amount, "funding")
        if not ccy:
            raise ValueError(f"{venue}:{symbol}: funding without a currency")
        key = (venue, symbol, funding_ts_ms)
        prior = self._funding.get(key)
        if prior is not None and prior[2]:
            return False
        book.view = None
        if prior is not None:
            _add(book.carry, prior[1], -prior[0])
        self._funding[key] = (amount, ccy, True)
        _add(book.carry, ccy, amount)
        return True

    def book_swap(self, venue: Venue, symbol: str, deal: str, amount: Decimal, ccy: str) -> bool:
        """Swap booked on a deal (MT5 `DEAL_SWAP`), signed as charged; False for a repeated deal."""
        book = self._book(venue, symbol)
        amount = _dec(amount, "swap")
        if not ccy or not deal:
            raise ValueError(f"{venue}:{symbol}: swap needs a deal and a currency")
        if (venue, deal) in self._swaps:
            return False
        self._swaps.add((venue, deal))
        _add(book.carry, ccy, amount)
        book.view = None
        return True

    def accrued_swap(self, venue: Venue, symbol: str, amount: Decimal, ccy: str, ts_ms: int) -> bool:
        """Swap accrued on the open position (MT5 `POSITION_SWAP`), replacing the previous report.
        Ignored (False) when flat or older than the book's last fill: it describes a position
        that is no longer there."""
        book = self._book(venue, symbol)
        amount = _dec(amount, "swap")
        if not ccy:
            raise ValueError(f"{venue}:{symbol}: swap without a currency")
        if book.qty == 0 or ts_ms < book.last_fill_ms:
            return False
        book.accrued = (amount, ccy, ts_ms)
        book.view = None
        return True

    # -- reads -----------------------------------------------------------------------------
    def position(self, venue: Venue, symbol: str, now_ms: int) -> PositionView:
        return self._view(self._book(venue, symbol), now_ms)

    def positions(self, now_ms: int, *, include_flat: bool = False) -> list[PositionView]:
        """Every book with a fill (or an open position), by venue and symbol."""
        view = self._view
        return [view(b, now_ms) for b in self._sorted if include_flat or b.fills or b.qty or b.carry]

    def net_by_asset(self) -> dict[str, Decimal]:
        """Net base quantity per asset across venues: the unhedged delta."""
        out: dict[str, Decimal] = {}
        for b in self._books.values():
            _add(out, b.inst.pair, b.qty)
        return out

    def _view(self, b: _Book, now_ms: int) -> PositionView:
        """The book as it is now; the same view object for every read at the same `now_ms` until
        the book changes (views are read-only, their dicts included)."""
        view = b.view
        if view is not None and b.view_ms == now_ms:
            return view
        view = b.view = self._new_view(b, now_ms)
        b.view_ms = now_ms
        return view

    def _new_view(self, b: _Book, now_ms: int) -> PositionView:
        mark = b.mark_price()
        unrealized = (b.qty * mark - b.cost) if mark is not None else (None if b.qty else _ZERO)
        return PositionView(
            venue=b.inst.venue, symbol=b.inst.symbol, asset=b.inst.pair, quote_ccy=b.quote_ccy, qty=b.qty,
            venue_qty=_CTX.divide(b.qty, b.inst.qty_per_unit),
            avg_price=_CTX.divide(b.cost, b.qty) if b.qty else None,
            realized=b.cash + b.cost, mark=mark,
            mark_ts_ms=b.mark_ms if mark is not None else None,
            mark_age_ms=now_ms - b.mark_ms if mark is not None else None,
            unrealized=unrealized, fees=dict(b.fees), carry=b.carry_total(), fills=b.fills, opened_ms=b.opened_ms,
        )

    def equity(self, rates: RateBook, now_ms: int) -> Equity:
        """Equity change since the portfolio began, per currency and in `rates.account_ccy`."""
        realized: dict[str, Decimal] = {}
        unrealized: dict[str, Decimal | None] = {}
        fees: dict[str, Decimal] = {}
        carry: dict[str, Decimal] = {}
        missing_marks: list[Key] = []
        for b in self._sorted:
            key = b.inst.key
            v = self._view(b, now_ms)
            _add(realized, b.quote_ccy, v.realized)
            if v.unrealized is None:
                missing_marks.append(key)
                unrealized[b.quote_ccy] = None
            elif b.quote_ccy not in unrealized or unrealized[b.quote_ccy] is not None:
                unrealized[b.quote_ccy] = (unrealized.get(b.quote_ccy) or _ZERO) + v.unrealized
            for ccy, amount in v.fees.items():
                _add(fees, ccy, amount)
            for ccy, amount in v.carry.items():
                _add(carry, ccy, amount)
        ccys = sorted(set(realized) | set(fees) | set(carry))
        by_ccy = {
            c: MoneyParts(realized.get(c, _ZERO), unrealized.get(c, _ZERO), fees.get(c, _ZERO), carry.get(c, _ZERO))
            for c in ccys
        }
        missing_rates = tuple(c for c in ccys if rates.rate(c) is None and _nonzero(by_ccy[c]))

        def convert(per: Mapping[str, Decimal | None]) -> Decimal | None:
            total = _ZERO
            for c, amount in per.items():
                if amount is None:
                    return None
                if amount == 0:
                    continue
                converted = rates.convert(amount, c)
                if converted is None:
                    return None
                total += converted
            return total

        return Equity(
            currency=rates.account_ccy,
            realized=convert(realized), unrealized=convert(unrealized), fees=convert(fees), carry=convert(carry),
            by_currency=by_ccy, missing_rates=missing_rates, missing_marks=tuple(missing_marks),
        )


def _nonzero(parts: MoneyParts) -> bool:
    return bool(parts.realized or parts.unrealized is None or parts.unrealized or parts.fees or parts.carry)
