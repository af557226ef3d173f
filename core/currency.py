"""Currencies: which currency an instrument's prices are in, and rates into one account currency.

quantarb trades the same asset against USD (an MT5 CFD) and USDT or USDC (perpetuals, spot),
and those are different currencies: a USDT that trades at 0.9990 USD makes a USDT profit worth
less than a USD one. So money is kept per currency and converted only with a rate somebody saw
(a book's mid, or a rate an operator typed). A currency without a rate is *missing*: the
conversion says None, never 1.0 by default. The account currency converts to itself at exactly 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from core.models import Venue

# Quote currencies a Binance symbol may end with, longest first so `FDUSD` wins over `USD`.
_BINANCE_QUOTES: tuple[str, ...] = tuple(sorted(
    ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USDP", "DAI", "USD", "EUR", "TRY", "BRL", "BTC", "ETH", "BNB"),
    key=len, reverse=True,
))
_MT5_QUOTES: tuple[str, ...] = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD")
_CCY = re.compile(r"^[A-Z0-9]{2,10}$")
_MT5_NAME = re.compile(r"^[A-Z]+")  # a broker suffix (`.m`, `_i`) follows the letters
# A rate outside this range is refused: far past any real conversion (a BTC account values a
# USDT at ~1e-5, a JPY one values a BTC at ~1e7), and inside what Decimal arithmetic can multiply
# into every amount without overflowing (a rate of 1E+999999999 would crash each conversion, one of
# 1E-999999999 would silently turn every amount into 0).
RATE_MIN = Decimal("1E-12")
RATE_MAX = Decimal("1E+12")


def rate_in_range(value: Decimal) -> bool:
    """A finite rate within [RATE_MIN, RATE_MAX]."""
    return value.is_finite() and RATE_MIN <= value <= RATE_MAX


def quote_currency(venue: Venue, symbol: str) -> str | None:
    """The currency `symbol`'s prices are in on `venue`, or None when the name does not say.

    OKX names it (`BTC-USDT-SWAP`: USDT); Binance ends with it (`BTCUSDT`: USDT); an MT5 symbol
    ends with its profit currency, before any broker suffix (`XAUUSD`, `BTCUSD.m`: USD).
    Anything else (`US500`, `GOLD`) needs an explicit mapping.
    """
    s = symbol.upper()
    if venue == "okx":
        parts = s.split("-")
        return parts[1] if len(parts) >= 2 and _CCY.match(parts[1]) else None
    if venue == "binance":
        return _ends_with(s, _BINANCE_QUOTES)
    m = _MT5_NAME.match(s)
    return _ends_with(m.group(0), _MT5_QUOTES) if m else None


def _ends_with(name: str, quotes: tuple[str, ...]) -> str | None:
    for q in quotes:
        if name.endswith(q) and len(name) > len(q):
            return q
    return None


def rate_pair(venue: Venue, symbol: str) -> tuple[str, str] | None:
    """(base, quote) of a currency book (`USDT-USD`, `USDCUSDT`, `USDTUSD`), else None: the books
    whose mid is a conversion rate."""
    s = symbol.upper()
    quote = quote_currency(venue, s)
    if quote is None:
        return None
    if venue == "okx":
        base = s.split("-")[0]
    else:
        m = _MT5_NAME.match(s)
        name = m.group(0) if m else s
        base = name[: len(name) - len(quote)]
    if base == quote or not _CCY.match(base):
        return None
    return base, quote


@dataclass(slots=True, frozen=True)
class Rate:
    """One unit of `ccy` is worth `value` of the account currency, as seen at `ts_ms` from `source`."""

    ccy: str
    value: Decimal
    ts_ms: int
    source: str


class RateBook:
    """Rates into one account currency: set directly, or derived from a currency book's mid.

    Derivation goes one hop through a currency that already has a rate (a USDC/USDT book gives
    USDC once USDT has a rate), so the result never depends on a guess.
    """

    def __init__(self, account_ccy: str) -> None:
        if not _CCY.match(account_ccy):
            raise ValueError(f"account currency {account_ccy!r}: 2 to 10 letters or digits")
        self.account_ccy = account_ccy
        self._rates: dict[str, Rate] = {}
        self._identity = Rate(account_ccy, Decimal(1), 0, "identity")  # immutable: one for every read

    def set(self, ccy: str, value: Decimal, ts_ms: int, source: str) -> None:
        """1 `ccy` = `value` account currency. Refused (ValueError, nothing changed) unless finite,
        > 0 and within [RATE_MIN, RATE_MAX]."""
        if not _CCY.match(ccy):
            raise ValueError(f"currency {ccy!r}: 2 to 10 letters or digits")
        if not value.is_finite() or value <= 0:
            raise ValueError(f"rate of {ccy}: {value} is not a positive finite number")
        if not rate_in_range(value):
            raise ValueError(f"rate of {ccy}: {value} is outside {RATE_MIN}..{RATE_MAX}")
        if ccy == self.account_ccy:
            raise ValueError(f"{ccy} is the account currency: its rate is 1 by definition")
        self._rates[ccy] = Rate(ccy, value, ts_ms, source)

    def from_book(self, base: str, quote: str, bid: Decimal, ask: Decimal, ts_ms: int, source: str) -> bool:
        """Take the mid of a `base`/`quote` book as a rate; False when neither side leads to the
        account currency (nothing changed). Refuses a crossed or non-positive book."""
        if not (bid.is_finite() and ask.is_finite()) or bid <= 0 or ask < bid:
            raise ValueError(f"{base}/{quote} book {bid}/{ask}: not a positive, uncrossed book")
        mid = (bid + ask) / 2
        quote_rate = self.rate(quote)
        if quote_rate is not None and base != self.account_ccy:
            self.set(base, mid * quote_rate.value, ts_ms, source)
            return True
        base_rate = self.rate(base)
        if base_rate is not None and quote != self.account_ccy:
            self.set(quote, base_rate.value / mid, ts_ms, source)
            return True
        return False

    def rate(self, ccy: str) -> Rate | None:
        if ccy == self.account_ccy:
            return self._identity
        return self._rates.get(ccy)

    def convert(self, amount: Decimal, ccy: str) -> Decimal | None:
        """`amount` of `ccy` in the account currency; None when `ccy` has no rate."""
        r = self.rate(ccy)
        return None if r is None else amount * r.value

    def total(self, amounts: Iterable[tuple[Decimal | None, str]]) -> Decimal | None:
        """The sum of (amount, currency) in the account currency; None when an amount is
        missing or a non-zero amount's currency has no rate."""
        out = Decimal(0)
        for amount, ccy in amounts:
            if amount is None:
                return None
            if amount == 0:
                continue
            converted = self.convert(amount, ccy)
            if converted is None:
                return None
            out += converted
        return out

    def rates(self) -> dict[str, Rate]:
        return dict(self._rates)


RateSourceKind = Literal["book", "given", "missing"]


@dataclass(slots=True, frozen=True)
class RateInForce:
    """What converts `ccy` into `account_ccy`: a currency book's mid (`book` names it, `read_ms`
    is when it was read), a rate an operator typed (`given`), or nothing (`missing`, `value`
    None). The engine journals one whenever it changes (a `rate` ledger event)."""

    ccy: str
    account_ccy: str
    value: Decimal | None
    source: RateSourceKind
    book: str | None = None
    read_ms: int | None = None

    def __post_init__(self) -> None:
        if not (_CCY.match(self.ccy) and _CCY.match(self.account_ccy)) or self.ccy == self.account_ccy:
            raise ValueError(f"rate of {self.ccy!r} in {self.account_ccy!r}: two different currency codes needed")
        if self.source == "missing":
            if self.value is not None or self.book is not None or self.read_ms is not None:
                raise ValueError(f"{self.ccy}: a missing rate has no value, book or read time")
            return
        if self.source not in ("book", "given"):
            raise ValueError(f"{self.ccy}: rate source {self.source!r}: book, given or missing")
        if self.value is None or not self.value.is_finite() or self.value <= 0:
            raise ValueError(f"{self.ccy}: rate {self.value} is not a positive finite number")
        if not rate_in_range(self.value):
            raise ValueError(f"{self.ccy}: rate {self.value} is outside {RATE_MIN}..{RATE_MAX}")
        if (self.source == "book") != (self.book is not None and self.read_ms is not None):
            raise ValueError(f"{self.ccy}: a book rate (and only one) names its book and read time")

    def same_rate(self, other: RateInForce | None) -> bool:
        """The same conversion (value, source and book): a re-read of an unchanged book is not a change."""
        return other is not None and (self.account_ccy, self.value, self.source, self.book) == (
            other.account_ccy, other.value, other.source, other.book)


def in_force(book: RateBook, currencies: Iterable[str], given_source: str = "given") -> dict[str, RateInForce]:
    """Each of `currencies` (the account currency left out) as `book` converts it now: a rate
    whose source is `given_source` is typed, any other source is the name of the book it came from."""
    out: dict[str, RateInForce] = {}
    for ccy in sorted(set(currencies)):
        if ccy == book.account_ccy:
            continue
        r = book.rate(ccy)
        if r is None:
            out[ccy] = RateInForce(ccy, book.account_ccy, None, "missing")
        elif r.source == given_source:
            out[ccy] = RateInForce(ccy, book.account_ccy, r.value, "given")
        else:
            out[ccy] = RateInForce(ccy, book.account_ccy, r.value, "book", r.source, r.ts_ms)
    return out
