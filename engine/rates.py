"""The rate source: currency books read from the venues, turned into rates into the account currency.

`[money] rate_books` names currency books (`okx:USDC-USDT`, `binance:USDCUSDT`, `mt5:USDTUSD`).
Every `rate_poll_s` each OKX and Binance book's best bid and ask are read from the venue's
public REST ticker (`feeds.rates`); an MT5 book is the EA's latest tick of that symbol (the
engine's own book of it). A book's age is counted from when the engine read it (its own clock:
Binance spot's book ticker has no time).

Precedence, per currency, when the rates are asked for (`rate_book`):
1. a fresh book (read within `rate_max_age_s`): its mid, one hop through a currency that already
   has a rate (`core.currency.RateBook.from_book`), so USDC-USDT needs USDT's rate;
2. else the operator's typed-in rate (`[money] rates`, source `given`);
3. else missing: amounts in that currency convert to None, never 1.0.
A stale book is shown as stale (`describe`) and converts as if absent. A failed read changes
nothing: the last top is kept and ages; trading is never stopped by it.

The rates in force are journaled (`RateLog`: a `rate` event per currency whose rate changed,
not per poll), so `ledger summary`/`equity` convert with what the engine converted with.

One HTTP client per venue URL is kept for the feed's life (`engine.http_clients`), closed when
`run` ends or by `aclose`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from core.clock import Clock
from core.currency import RateBook, RateInForce, in_force, rate_pair
from core.models import Venue
from engine.http_clients import ClientsByUrl
from feeds.rates import BinanceMarket, BookTop, fetch_book_top
from feeds.rest_parsers import InvalidResponse, VenueError

log = logging.getLogger(__name__)

Fetch = Callable[[httpx.AsyncClient, Venue, str, BinanceMarket], Awaitable[BookTop]]
# An MT5 book as the engine holds it from the EA: (bid, ask, age in ms), None without a tick.
Mt5Top = Callable[[str], tuple[float, float, float] | None]


@dataclass(frozen=True, slots=True)
class RateSource:
    """One configured currency book and where it is read from (`rest_url` None: the EA's ticks)."""

    venue: Venue
    symbol: str
    rest_url: str | None = None
    binance_market: BinanceMarket = "spot"

    @property
    def name(self) -> str:
        return f"{self.venue}:{self.symbol}"


@dataclass(frozen=True, slots=True)
class _Read:
    top: BookTop
    ts_ms: int


class RateFeed:
    def __init__(
        self,
        sources: Sequence[RateSource],
        account_ccy: str,
        given: Mapping[str, Decimal],
        clock: Clock,
        *,
        max_age_s: float,
        poll_s: float,
        mt5_top: Mt5Top | None = None,
        fetch: Fetch = fetch_book_top,
        timeout_s: float = 10.0,
    ) -> None:
        self._pairs: dict[str, tuple[str, str]] = {}
        for s in sources:
            pair = rate_pair(s.venue, s.symbol)
            if pair is None:
                raise ValueError(f"{s.name}: not a currency book")
            if s.venue != "mt5" and s.rest_url is None:
                raise ValueError(f"{s.name}: no REST URL to read it from")
            self._pairs[s.name] = pair
        self._sources = list(sources)
        self._account_ccy = account_ccy
        self._given = dict(given)
        self._clock = clock
        self._max_age_ms = max_age_s * 1000
        self.poll_s = poll_s
        self._mt5_top = mt5_top
        self._fetch = fetch
        self._reads: dict[str, _Read] = {}
        self._clients = ClientsByUrl(timeout_s)  # per venue URL, kept between polls
        self._errors: dict[str, str] = {}  # the last failure per book (cleared by a good read)
        self.failures = 0
        self.reads = 0  # good reads so far: a reading memoized before a read is stale after it

    async def poll_once(self) -> int:
        """Read every book once; the number read. A failure keeps the last read (it ages)."""
        read = 0
        by_url: dict[str, list[RateSource]] = {}
        for s in self._sources:
            if s.rest_url is None:
                read += self._read_mt5(s)
            else:
                by_url.setdefault(s.rest_url, []).append(s)
        for url, sources in by_url.items():
            client = self._clients.get(url)
            for s in sources:
                try:
                    top = await self._fetch(client, s.venue, s.symbol, s.binance_market)
                except (httpx.HTTPError, InvalidResponse, VenueError) as exc:
                    self._failed(s, str(exc) or type(exc).__name__)
                    continue
                self._reads[s.name] = _Read(top, self._clock.time_ms())
                self._errors.pop(s.name, None)
                self.reads += 1
                read += 1
        return read

    def open_clients(self) -> int:
        """HTTP clients held open between polls (one per venue URL; 0 once stopped)."""
        return self._clients.open_count()

    async def aclose(self) -> None:
        """Close the clients (their connections); a later poll makes new ones."""
        await self._clients.aclose()

    def _read_mt5(self, s: RateSource) -> int:
        got = self._mt5_top(s.symbol) if self._mt5_top is not None else None
        if got is None:
            self._failed(s, "no tick from the EA yet")
            return 0
        bid, ask, age_ms = got
        try:
            top = BookTop(Decimal(repr(bid)), Decimal(repr(ask)))
            if not (top.bid.is_finite() and top.ask.is_finite()) or top.bid <= 0 or top.ask < top.bid:
                raise ValueError(f"book {bid}/{ask} is not a positive, uncrossed book")
        except (ValueError, ArithmeticError) as exc:
            self._failed(s, str(exc))
            return 0
        self._reads[s.name] = _Read(top, self._clock.time_ms() - int(age_ms))
        self._errors.pop(s.name, None)
        self.reads += 1
        return 1

    def _failed(self, s: RateSource, why: str) -> None:
        self.failures += 1
        self._errors[s.name] = why[:300]
        log.warning("rates: %s: %s", s.name, self._errors[s.name])

    def _fresh(self, name: str, now_ms: int) -> _Read | None:
        r = self._reads.get(name)
        return r if r is not None and now_ms - r.ts_ms <= self._max_age_ms else None

    def rate_book(self, now_ms: int) -> RateBook:
        """The rates in force now: fresh books, else typed-in rates, else missing."""
        book = RateBook(self._account_ccy)
        pending = [s.name for s in self._sources if self._fresh(s.name, now_ms) is not None]
        pending = self._apply(book, pending, now_ms)
        for ccy, value in self._given.items():
            if ccy != self._account_ccy and book.rate(ccy) is None:
                book.set(ccy, value, now_ms, "given")
        self._apply(book, pending, now_ms)
        return book

    def _apply(self, book: RateBook, pending: list[str], now_ms: int) -> list[str]:
        """Apply each book one of whose currencies has a rate and the other not, until none is
        left to apply; the books left over (neither side known yet, or both)."""
        progress = True
        while progress:
            progress = False
            for name in list(pending):
                base, quote = self._pairs[name]
                known = (book.rate(base) is not None, book.rate(quote) is not None)
                if known not in ((True, False), (False, True)):
                    continue
                r = self._fresh(name, now_ms)
                assert r is not None
                pending.remove(name)
                progress = True
                try:
                    book.from_book(base, quote, r.top.bid, r.top.ask, r.ts_ms, name)
                except ValueError as exc:  # a rate out of range (a misbehaving book): as if absent
                    log.warning("rates: %s: %s", name, str(exc)[:300])
        return pending

    def describe(self, now_ms: int) -> list[dict[str, Any]]:
        """Each book as shown: its mid, age, whether it is stale, and its last error."""
        out: list[dict[str, Any]] = []
        for s in self._sources:
            r = self._reads.get(s.name)
            out.append({
                "book": s.name,
                "mid": None if r is None else format(r.top.mid.normalize(), "f"),
                "age_ms": None if r is None else now_ms - r.ts_ms,
                "stale": r is None or now_ms - r.ts_ms > self._max_age_ms,
                "error": self._errors.get(s.name),
            })
        return out

    async def run(self) -> None:
        """Poll every `poll_s` until cancelled; the clients are closed when it ends."""
        try:
            while True:
                try:
                    await self.poll_once()
                except Exception:  # a rate source never stops the engine: the rate ages instead
                    log.exception("rates: poll failed")
                await asyncio.sleep(self.poll_s)
        finally:
            await self.aclose()


def rates_doc(book: RateBook, now_ms: int) -> dict[str, dict[str, Any]]:
    """The rates in force, per currency: value, source (`given` or the book) and age."""
    return {ccy: {"rate": format(r.value.normalize(), "f"), "source": r.source, "age_ms": now_ms - r.ts_ms}
            for ccy, r in sorted(book.rates().items())}


class RateLog:
    """Journals the rates in force when they change: a currency whose value, source or book
    differs from the last one journaled, or one that had a rate and has none now (`missing`).
    A book re-read within `tolerance` (relative: 0.0001 is 1 bp) of the rate journaled from that
    same book is no change: the rate in force stays the journaled one, and the running equity
    converts with it (`observe` returns the rates to convert with), so a mid that moves a little
    every poll writes nothing and every surface still states the figure `ledger summary` does.
    Seeded with the ledger's last rates, so a restart with the same rates writes nothing. A
    journaled book rate read within `max_age_ms` of now stays in force while `book` has no
    book's rate for its currency (a restart: the books are not read again yet, or the feed not
    started): it is as fresh as the feed would hold it, so the figures right after a restart (the
    day's loss the breakers restore included) are the ledger's, not missing or at the typed rate,
    and no `missing`/`given` row is written only to be undone by the first read. The running
    equity calls `observe` with every rate book it converts with, so no figure is shown with a
    rate the ledger does not have."""

    def __init__(self, account_ccy: str, last: Mapping[str, RateInForce],
                 write: Callable[[RateInForce], object], tolerance: Decimal = Decimal(0),
                 max_age_ms: float | None = None) -> None:
        if not (tolerance.is_finite() and 0 <= tolerance < 1):
            raise ValueError(f"rate tolerance {tolerance}: a fraction in [0, 1)")
        self._account_ccy = account_ccy
        self._last = {c: r for c, r in last.items() if r.account_ccy == account_ccy}
        self._write = write
        self._tolerance = tolerance
        self._max_age_ms = max_age_ms
        self.written = 0
        self._seen: tuple[tuple[str, Decimal, str], ...] | None = None  # the last book observed, in short

    def observe(self, book: RateBook, now_ms: int | None = None) -> RateBook:
        """Journal what changed in `book` (as of `now_ms`); the rates to convert with (`book`'s,
        a book's rate within the tolerance of the journaled one at the journaled value, and a
        journaled book rate still fresh where `book` has none from a book)."""
        if book.account_ccy != self._account_ccy:
            return book
        book = self._with_fresh_journaled(book, now_ms)
        seen = tuple((c, r.value, r.source) for c, r in sorted(book.rates().items()))
        if seen != self._seen:  # else the same rates as at the last reading (every snapshot reads them)
            had = {c for c, r in self._last.items() if r.source != "missing"}
            for ccy, now in in_force(book, set(book.rates()) | had).items():
                if not self._unchanged(now, self._last.get(ccy)):
                    self._write(now)  # raises only for a bug: the journal halts on a write failure itself
                    self._last[ccy] = now
                    self.written += 1
            self._seen = seen
        out = RateBook(book.account_ccy)
        for ccy, r in book.rates().items():
            last, value = self._last.get(ccy), r.value
            if last is not None and last.value is not None and last.source == "book" and last.book == r.source:
                value = last.value  # within the tolerance of it: else journaled just above
            out.set(ccy, value, r.ts_ms, r.source)
        return out

    def _unchanged(self, now: RateInForce, last: RateInForce | None) -> bool:
        if now.same_rate(last):
            return True
        return (last is not None and now.source == last.source == "book" and now.book == last.book
                and now.value is not None and last.value is not None
                and abs(now.value - last.value) <= last.value * self._tolerance)

    def _with_fresh_journaled(self, book: RateBook, now_ms: int | None) -> RateBook:
        if now_ms is None or self._max_age_ms is None:
            return book
        fresh = {c: r for c, r in self._last.items()
                 if r.source == "book" and r.value is not None and r.book is not None and r.read_ms is not None
                 and now_ms - r.read_ms <= self._max_age_ms}
        rates = book.rates()
        resumed = {c: r for c, r in fresh.items() if c not in rates or rates[c].source == "given"}
        if not resumed:
            return book
        out = RateBook(book.account_ccy)
        for ccy, r in rates.items():
            if ccy not in resumed:
                out.set(ccy, r.value, r.ts_ms, r.source)
        for ccy, j in resumed.items():
            assert j.value is not None and j.book is not None and j.read_ms is not None
            out.set(ccy, j.value, j.read_ms, j.book)
        return out
