"""Perpetual funding, booked at each funding time on the position then held, and journaled.

For every perpetual the engine trades (OKX `-SWAP` instruments, Binance USD-M symbols) the
venue's public funding history is polled (`feeds.funding`); each settlement after the last one
booked is charged to the running portfolio (`RunningEquity.accrue_funding`: -position x mark x
rate, `core.carry`) and journaled as a `funding` event, which `ledger summary`, `positions` and
`equity` replay. So the TUI, `status`, headless, `/api/status` and `/metrics` (the running
equity) and the ledger's figures include the same carry.

The position charged is the one held at the funding time, from our own fills: the signed sum
of the ledger's fills of that perpetual stamped at or before `fundingTime` (`held`:
`ledger.money.position_at`, after what is queued is committed), not the position when the
settlement is booked (polling runs every `poll_s`, 60 s by default), so a fill between a
funding time and its booking is not charged and one before it is. When that position cannot be
read (the ledger does not write, or a read fails) the settlement waits for the next poll. A
venue's own funding bill (OKX `bills`, Binance `FUNDING_FEE` income) is not read yet.
Booking resumes after the last settlement booked, else just before the perpetual's first
fill in the ledger (`ledger.money.funding_resume`): a settlement while the engine was stopped
is charged on what the fills say was held, also before any other was booked. A perpetual never
traded starts when the engine does.

One HTTP client per venue URL is kept for the accrual's life (`engine.http_clients`), closed when
`run` ends or by `aclose`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import httpx

from core.clock import Clock
from core.models import Venue
from engine.http_clients import ClientsByUrl
from feeds.funding import FundingSettlement, fetch_settlements
from feeds.rest_parsers import InvalidResponse, VenueError
from ledger.errors import LedgerError

log = logging.getLogger(__name__)
POLL_S = 60.0

Fetch = Callable[[httpx.AsyncClient, Venue, str, int], Awaitable[list[FundingSettlement]]]
# Our position of a perpetual (venue units, + long) at a funding time; None when it cannot be known now.
Held = Callable[[Venue, str, int], Awaitable[Decimal | None]]


@dataclass(frozen=True, slots=True)
class Perpetual:
    venue: Venue
    symbol: str
    rest_url: str


@dataclass(frozen=True, slots=True)
class Booked:
    venue: Venue
    symbol: str
    funding_ms: int
    rate: Decimal
    mark_price: Decimal
    position: Decimal
    amount: Decimal
    ccy: str


class FundingAccrual:
    def __init__(
        self,
        perpetuals: Sequence[Perpetual],
        accrue: Callable[[Venue, str, int, Decimal, Decimal | None, Decimal], Booked | None],
        journal: Callable[[Booked], None],
        clock: Clock,
        held: Held,
        *,
        poll_s: float = POLL_S,
        fetch: Fetch = fetch_settlements,
        timeout_s: float = 10.0,
    ) -> None:
        self._perps = list(perpetuals)
        self._accrue = accrue
        self._journal = journal
        self._held = held
        self._clock = clock
        self._fetch = fetch
        self.poll_s = poll_s
        self._last: dict[tuple[Venue, str], int] = {}
        self._clients = ClientsByUrl(timeout_s)  # per venue URL, kept between polls
        self.errors = 0
        self.last_error: str | None = None

    @property
    def perpetuals(self) -> list[Perpetual]:
        return list(self._perps)

    def restore(self, last_booked: dict[tuple[Venue, str], int]) -> None:
        """Start after the last funding time the ledger holds per perpetual, else from now."""
        now = self._clock.time_ms()
        for p in self._perps:
            self._last[(p.venue, p.symbol)] = last_booked.get((p.venue, p.symbol), now)

    async def poll_once(self) -> list[Booked]:
        """Ask every perpetual's venue for settlements since the last booked; book each in order."""
        booked: list[Booked] = []
        now = self._clock.time_ms()
        by_url: dict[str, list[Perpetual]] = {}
        for p in self._perps:
            by_url.setdefault(p.rest_url, []).append(p)
        for url, perps in by_url.items():
            client = self._clients.get(url)
            for p in perps:
                key = (p.venue, p.symbol)
                after = self._last.setdefault(key, now)
                try:
                    rows = await self._fetch(client, p.venue, p.symbol, after)
                except (httpx.HTTPError, InvalidResponse, VenueError) as exc:
                    self.errors += 1
                    self.last_error = f"{p.venue}:{p.symbol}: {exc}"[:300]
                    log.warning("funding: %s", self.last_error)
                    continue
                for row in sorted(rows, key=lambda r: r.funding_ms):
                    if row.funding_ms <= self._last[key] or row.funding_ms > now:
                        continue
                    try:
                        position = await self._held(p.venue, p.symbol, row.funding_ms)
                    except LedgerError as exc:
                        position, why = None, str(exc)
                    else:
                        why = "the ledger does not write: its fills are not all in the file"
                    if position is None:  # not booked: the next poll asks again
                        self.errors += 1
                        self.last_error = f"{p.venue}:{p.symbol} at {row.funding_ms}: position unknown: {why}"[:300]
                        log.warning("funding: %s", self.last_error)
                        break
                    result = self._accrue(p.venue, p.symbol, row.funding_ms, row.rate, row.mark, position)
                    self._last[key] = row.funding_ms
                    if result is not None:
                        self._journal(result)
                        booked.append(result)
        return booked

    async def aclose(self) -> None:
        """Close the clients (their connections); a later poll makes new ones."""
        await self._clients.aclose()

    async def run(self) -> None:
        """Poll every `poll_s` until cancelled; the clients are closed when it ends."""
        try:
            while True:
                try:
                    await self.poll_once()
                except Exception as exc:  # a bug or an unforeseen answer: counted and shown, the next poll retries
                    self.errors += 1
                    self.last_error = f"poll failed: {type(exc).__name__}: {exc}"[:300]
                    log.exception("funding: poll failed")
                await asyncio.sleep(self.poll_s)
        finally:
            await self.aclose()
