"""Net positions from the ledger's fills, read once and then only what was booked since.

A running engine asks the ledger for its positions all the time: reconciliation compares each
venue's with the ledger's every pass (every 30 s, once per venue, with the newest fill id
around the venue's read), and funding charges the position held at each settlement. Summing
every fill each time was a scan of the whole fills table, several times a pass: CPU and
short-lived objects that grew with the ledger for as long as the engine ran (an hour of the
accelerated soak books some 65,000 fills; weeks of running, millions), and the funding read
copied every row of the venue into one list (issue 19).

`NetPositions` keeps the sums and reads only the fills after the last one it counted. That is
exact because fills are append-only: a fill row's id is its journal sequence number (rows
come in commit order, so a reader sees a committed prefix), and no code updates or deletes a
fill or changes an order's venue, symbol or side. A fill whose order the ledger does not know
(none is journaled that way: the order is written first) is not counted, as in a full scan;
its id is kept and asked again on each read, so it counts once its order is there (a ledger
with such fills is damaged: they are not expected to pile up).

Decimal sums, never SQL floats (quantities are TEXT decimals in the ledger); a side or a
quantity that is not one is a LedgerError, never guessed, and nothing of that read is counted
past the fill before it.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation

import aiosqlite

from ledger.errors import LedgerError

Key = tuple[str, str]  # (venue, symbol)

_SELECT = ("SELECT f.fill_id, f.venue, o.venue, o.symbol, o.side, f.qty FROM fills f "
           "LEFT JOIN orders o ON o.order_id = f.order_id ")
_NEW_FILLS = _SELECT + "WHERE f.fill_id > ? ORDER BY f.fill_id"
_ORPHANS = _SELECT + "WHERE f.fill_id IN (SELECT value FROM json_each(?))"
# The fills counted so far of one book stamped after a moment (the `fills_by_ts` index: a
# settlement's fills since, not the book's whole history).
_AFTER = ("SELECT f.fill_id, o.side, f.qty FROM fills f JOIN orders o ON o.order_id = f.order_id "
          "WHERE f.ts_ms > ? AND f.fill_id <= ? AND o.venue = ? AND o.symbol = ?")


def signed_qty(venue: str, symbol: str, side: object, text: object) -> Decimal:
    """A fill's quantity, + for a buy: the ledger's TEXT decimal, checked."""
    if side not in ("buy", "sell"):
        raise LedgerError(f"a fill of {venue}:{symbol}: order side {str(side)[:20]!r}")
    try:
        qty = Decimal(str(text))
    except (InvalidOperation, TypeError, ValueError):
        qty = Decimal("NaN")
    if not qty.is_finite() or qty < 0:
        raise LedgerError(f"a fill of {venue}:{symbol}: quantity {str(text)[:40]!r} is not a decimal >= 0")
    return qty if side == "buy" else -qty


class NetPositions:
    """Net filled quantity per (venue, symbol), venue units, signed (long > 0)."""

    def __init__(self) -> None:
        self._net: dict[Key, Decimal] = {}
        self._after = 0  # every fill up to this id is counted, but the orphans
        self._orphans: set[int] = set()  # fills read before their order was in the ledger
        self._last: dict[str, int] = {}  # the newest fill id read per venue (orphans too)
        # Reconciliation reads the venues concurrently: two reads from the same point would
        # count the same fills twice.
        self._lock = asyncio.Lock()

    @property
    def counted_through(self) -> int:
        """The id of the last fill read (0: none yet)."""
        return self._after

    async def refresh(self, db: aiosqlite.Connection) -> dict[Key, Decimal]:
        """Count the fills booked since the last read; return a copy of the sums."""
        async with self._lock:
            await self._read_new(db)
            return dict(self._net)

    async def last_fill_id(self, db: aiosqlite.Connection, venue: str) -> int:
        """The newest fill row's id on `venue` (0 for none): reconciliation reads it around the
        venue's position read, and a change means a fill was booked meanwhile."""
        async with self._lock:
            await self._read_new(db)
            return self._last.get(venue, 0)

    async def position_at(self, db: aiosqlite.Connection, venue: str, symbol: str, at_ms: int) -> Decimal:
        """Our position of `venue:symbol` at `at_ms` (+ long): the fills of it stamped at or
        before then (what a funding time charges), as the sum now less those stamped after."""
        async with self._lock:
            await self._read_new(db)
            total = self._net.get((venue, symbol), Decimal(0))
            query, args = _AFTER, [at_ms, self._after, venue, symbol]
            if self._orphans:  # not counted: not taken off either, should their order appear now
                query += " AND f.fill_id NOT IN (SELECT value FROM json_each(?))"
                args.append(_ids(self._orphans))
            async with db.execute(query, args) as cur:
                async for _, side, qty in cur:
                    total -= signed_qty(venue, symbol, side, qty)
            return total

    async def _read_new(self, db: aiosqlite.Connection) -> None:
        if self._orphans:
            async with db.execute(_ORPHANS, (_ids(self._orphans),)) as cur:
                async for fill_id, _, venue, symbol, side, qty in cur:
                    if venue is not None:
                        self._count(str(venue), str(symbol), side, qty)
                        self._orphans.discard(int(fill_id))
        async with db.execute(_NEW_FILLS, (self._after,)) as cur:
            async for fill_id, fill_venue, venue, symbol, side, qty in cur:
                if venue is None:
                    self._orphans.add(int(fill_id))
                else:
                    self._count(str(venue), str(symbol), side, qty)
                self._after = int(fill_id)
                self._last[str(fill_venue)] = self._after

    def _count(self, venue: str, symbol: str, side: object, qty: object) -> None:
        signed = signed_qty(venue, symbol, side, qty)
        self._net[(venue, symbol)] = self._net.get((venue, symbol), Decimal(0)) + signed


def _ids(ids: set[int]) -> str:
    return "[" + ",".join(str(i) for i in sorted(ids)) + "]"
