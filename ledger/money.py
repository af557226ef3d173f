"""Money from the ledger alone: positions, equity and its time series, recomputed from the fills.

The ledger's `fills` (with their orders' side and symbol) are replayed in time order into a
`core.portfolio.Portfolio`, the one definition of the money for every surface, so a figure
here is the one a runtime fed the same fills computes (docs/ledger.md, Money):

    equity change = realized + unrealized - fees + carry

- Units: venue quantities become base units with each instrument's `qty_per_unit` (and prices
  normalized with `price_scale`), as journaled with the groups that traded them
  (`group_opened`); an order on a symbol no group ever traded (a flatten order) needs the
  instrument from the config. Fills of a symbol with no known instrument are not guessed:
  they are listed in `unknown_instruments` and the figures they enter are missing (null).
- Marks: the ledger records no quotes, so an open position is marked at its symbol's last
  fill price unless a mark is given (`marks`); `mark_source` says which.
- Carry: MT5 swap booked on deals (`mt5_commands` fills' `swap`) and perpetual funding as the
  engine booked it at each funding time (`funding` events: on the position then held).
- Currencies: one account currency. Each currency converts with, in this order: `--rate`
  (`rate_overrides`), else the rate the engine had in force (its last `rate` event: a book's
  mid, a typed rate, or missing), else the config's typed rate (`rates`); a currency without
  one is missing, never 1. A stopped engine's ledger keeps its last journaled rates, with the
  time they were read: a post-mortem converts as the engine did when it stopped.

Reading and replaying are apart: `read_history` reads the ledger's money records once (the
instruments, fills, MT5 swaps, funding, nets and rates: a `History`), and the figures are pure
functions of it (`replay`, `replay_split`, `attribute`, `rates_in_force`, `equity_of`,
`series_of`), so a caller that needs several (the engine's start-up, `ledger summary`, the
analytics) reads the whole ledger once. The `db` functions (`replay_ledger`,
`group_attribution`, `equity`, `equity_series`, ...) are each one read and one replay.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import aiosqlite
import msgspec

from core.attribution import Attribution, GroupMoney, Net
from core.currency import RateBook, RateInForce, quote_currency
from core.hedge import CLOSABLE
from core.instruments import Instrument
from core.models import Venue
from core.portfolio import Portfolio
from ledger import events as ev
from ledger.errors import LedgerError
from ledger.net_positions import NetPositions
from ledger.schema import OPEN_ORDERS_WHERE

Key = tuple[Venue, str]
# Orders that open or keep a group's hedge; any other purpose (`flatten`, a close of one group)
# closes positions: sent under a group's id it is that group's, else attributed first in, first out.
OPENING_PURPOSES: frozenset[str] = frozenset({"entry", "retry_hedge", "unwind"})
CARRY_RECORDED: tuple[str, ...] = ("mt5 swap", "perpetual funding")
FUNDING_NOTE = "perpetual funding as booked by the engine at each funding time"


@dataclass(frozen=True, slots=True)
class FillRow:
    """One fill as the ledger holds it, with its order's side and symbol (venue units)."""

    fill_id: int
    ts_ms: int
    venue: Venue
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_ccy: str
    trade_id: str
    group_id: str | None
    purpose: str


@dataclass(frozen=True, slots=True)
class SwapRow:
    """Swap booked on one MT5 deal (`DEAL_SWAP`), in the currency of that deal's fill."""

    ts_ms: int
    symbol: str
    deal: str
    amount: Decimal
    ccy: str


async def _rows(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    async with db.execute(sql, tuple(params)) as cur:
        return list(await cur.fetchall())


async def ledger_instruments(db: aiosqlite.Connection) -> dict[Key, Instrument]:
    """The instruments the groups were sized with (`group_opened`), the latest per (venue, symbol).
    Every group journals its instruments, so the same few records repeat once per group: each
    distinct set is read once, in the order of its last use (a 31,000-group ledger holds 18),
    which leaves the latest per book last, as reading every event in order would."""
    out: dict[Key, Instrument] = {}
    for text, _last, group_id in await _rows(
            db, "SELECT json_extract(payload, '$.instruments'), MAX(seq), group_id FROM events "
                "WHERE kind = ? AND json_extract(payload, '$.instruments') IS NOT NULL GROUP BY 1 ORDER BY 2",
            (ev.GROUP_OPENED,)):
        try:
            journaled = ev.decode_json(text)
            if not isinstance(journaled, dict):
                raise TypeError(f"not an object: {text[:80]!r}")
            for p in journaled.values():
                inst = ev.instrument_from_payload(p)
                out[inst.key] = inst
        except (KeyError, TypeError, ValueError, ArithmeticError, msgspec.DecodeError) as exc:
            raise LedgerError(f"group {group_id}: unreadable instrument {text!r}: {exc}") from None
    return out


async def fill_rows(db: aiosqlite.Connection) -> list[FillRow]:
    """Every fill with its order's side and symbol, in execution order (time, then journal order)."""
    rows = await _rows(
        db,
        "SELECT f.fill_id, f.ts_ms, f.venue, o.symbol, o.side, f.qty, f.price, f.fee, f.fee_ccy, f.venue_trade_id, "
        "o.group_id, o.purpose FROM fills f JOIN orders o ON o.order_id = f.order_id ORDER BY f.ts_ms, f.fill_id",
    )
    return [FillRow(int(r[0]), int(r[1]), r[2], r[3], r[4], Decimal(r[5]), Decimal(r[6]), Decimal(r[7]), r[8],
                    r[9], r[10], r[11]) for r in rows]


async def swap_rows(db: aiosqlite.Connection) -> list[SwapRow]:
    """MT5 swap on deals, from the commands' reported fills (none in a ledger from before swap was
    reported); the currency is that of the deal's fill (the MT5 account's)."""
    tables = {str(r[0]) for r in await _rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "mt5_commands" not in tables:
        return []
    rows = await _rows(
        db,
        "SELECT c.symbol, json_extract(d.value, '$.deal'), json_extract(d.value, '$.swap'), "
        "json_extract(d.value, '$.time_msc'), f.fee_ccy "
        "FROM mt5_commands c, json_each(c.fills) d "
        "LEFT JOIN fills f ON f.venue = 'mt5' AND f.venue_trade_id = CAST(json_extract(d.value, '$.deal') AS TEXT) "
        "WHERE json_extract(d.value, '$.swap') IS NOT NULL ORDER BY json_extract(d.value, '$.time_msc')",
    )
    out: list[SwapRow] = []
    for symbol, deal, swap, time_msc, ccy in rows:
        amount = Decimal(str(swap))
        if amount != 0:
            out.append(SwapRow(int(time_msc), symbol, str(deal), amount, ccy or ""))
    return out


async def position_at(db: aiosqlite.Connection, venue: Venue, symbol: str, at_ms: int) -> Decimal:
    """Our position of `venue:symbol` at `at_ms` in venue units (+ long): the signed sum of the
    ledger's fills of it stamped at or before then (what a funding time charges). A running
    engine asks its ledger (`Ledger.position_at`), which keeps the sums between reads."""
    return await NetPositions().position_at(db, venue, symbol, at_ms)


@dataclass(frozen=True, slots=True)
class FundingRow:
    """Funding booked at one funding time (a `funding` event), + received, in `ccy`."""

    ts_ms: int  # the funding time
    venue: Venue
    symbol: str
    amount: Decimal
    ccy: str


Item = FillRow | SwapRow | FundingRow


async def funding_rows(db: aiosqlite.Connection) -> list[FundingRow]:
    out: list[FundingRow] = []
    for r in await _rows(db, "SELECT payload FROM events WHERE kind = ? ORDER BY seq", (ev.FUNDING,)):
        p = ev.decode_payload(r[0])
        try:
            out.append(FundingRow(int(p["funding_ms"]), p["venue"], str(p["symbol"]), Decimal(p["amount"]),
                                  str(p["ccy"])))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise LedgerError(f"unreadable funding event {p!r}: {exc}") from None
    return out


async def last_funding(db: aiosqlite.Connection) -> dict[Key, int]:
    """The last funding time booked per (venue, symbol): where the engine's funding resumes."""
    out: dict[Key, int] = {}
    for row in await funding_rows(db):
        key = (row.venue, row.symbol)
        out[key] = max(out.get(key, 0), row.ts_ms)
    return out


async def funding_resume(db: aiosqlite.Connection) -> dict[Key, int]:
    """Where the engine's funding resumes per perpetual: after the last funding time booked,
    else just before the first fill of it (a settlement while the engine was down, before any
    was booked, is charged on the position the fills say was held: `position_at`). A symbol
    with neither is absent (booking starts when the engine does)."""
    out: dict[Key, int] = {}
    for venue, symbol, first_ms in await _rows(
            db, "SELECT f.venue, o.symbol, MIN(f.ts_ms) FROM fills f JOIN orders o ON o.order_id = f.order_id "
                "GROUP BY f.venue, o.symbol"):
        out[(venue, str(symbol))] = int(first_ms) - 1
    out.update(await last_funding(db))
    return out


@dataclass(frozen=True, slots=True)
class RateRow:
    """A `rate` event: the engine converted with `rate` from `ts_ms` on."""

    seq: int
    ts_ms: int
    rate: RateInForce


async def rate_rows(db: aiosqlite.Connection, account_ccy: str | None = None) -> list[RateRow]:
    """Every `rate` event in journal order (into `account_ccy` only, when given). LedgerError,
    naming the event, for one that cannot be read."""
    out: list[RateRow] = []
    for seq, ts_ms, text in await _rows(db, "SELECT seq, ts_ms, payload FROM events WHERE kind = ? ORDER BY seq",
                                        (ev.RATE,)):
        try:
            r = ev.rate_from_payload(ev.decode_payload(text))
        except (ValueError, msgspec.DecodeError) as exc:
            raise LedgerError(f"unreadable rate event (seq {seq}): {exc}") from None
        if account_ccy is None or r.account_ccy == account_ccy:
            out.append(RateRow(int(seq), int(ts_ms), r))
    return out


async def last_rates(db: aiosqlite.Connection, account_ccy: str) -> dict[str, RateInForce]:
    """The last journaled rate per currency into `account_ccy`: what the engine converted with
    when it last wrote (where a restarted engine's journaling resumes)."""
    return journaled_rates(await rate_rows(db, account_ccy), account_ccy)


def journaled_rates(rows: Iterable[RateRow], account_ccy: str) -> dict[str, RateInForce]:
    """Of `rate` rows in journal order, the last per currency into `account_ccy` (`last_rates`)."""
    return {row.rate.ccy: row.rate for row in rows if row.rate.account_ccy == account_ccy}


class LedgerRates:
    """The rates the ledger's figures convert with, per currency: `--rate` (`overrides`), else
    the engine's journaled rate in force (`journal` each `rate` row in order; a journaled
    `missing` stays missing), else the config's typed rate (`typed`)."""

    def __init__(self, account_ccy: str, typed: Mapping[str, Decimal] | None = None,
                 overrides: Mapping[str, Decimal] | None = None) -> None:
        self.account_ccy = account_ccy
        self._typed = {c: v for c, v in (typed or {}).items() if c != account_ccy}
        self._overrides = {c: v for c, v in (overrides or {}).items() if c != account_ccy}
        self._journaled: dict[str, RateRow] = {}

    def journal(self, row: RateRow) -> None:
        if row.rate.account_ccy == self.account_ccy:
            self._journaled[row.rate.ccy] = row

    def journal_until(self, rows: Iterable[RateRow], until_ms: int | None) -> None:
        """Every row journaled before `until_ms` (exclusive; all without one)."""
        for row in rows:
            if until_ms is None or row.ts_ms < until_ms:
                self.journal(row)

    def book(self, now_ms: int) -> RateBook:
        book = RateBook(self.account_ccy)
        for ccy, value in self._typed.items():
            if ccy not in self._journaled:
                book.set(ccy, value, now_ms, "given")
        for ccy, row in self._journaled.items():
            r = row.rate
            if r.value is not None:
                book.set(ccy, r.value, r.read_ms if r.read_ms is not None else row.ts_ms, r.book or "given")
        for ccy, value in self._overrides.items():
            book.set(ccy, value, now_ms, "--rate")
        return book

    def doc(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per currency with a rate or a journaled one: `rate` (null: missing), `source` (the
        book's name, `given`, `--rate`, or `missing`), `ts_ms` (when the book was read, when
        the typed rate took force) and `journaled_ms` (when the engine began converting with
        it; null for a rate the engine did not journal)."""
        out: dict[str, dict[str, Any]] = {}
        for ccy in sorted(set(self._typed) | set(self._journaled) | set(self._overrides)):
            row = self._journaled.get(ccy)
            if ccy in self._overrides:
                out[ccy] = {"rate": _money_text(self._overrides[ccy]), "source": "--rate", "ts_ms": now_ms,
                            "journaled_ms": None}
            elif row is not None:
                r = row.rate
                out[ccy] = {"rate": None if r.value is None else _money_text(r.value),
                            "source": r.book if r.source == "book" else r.source,
                            "ts_ms": r.read_ms if r.read_ms is not None else row.ts_ms, "journaled_ms": row.ts_ms}
            else:
                out[ccy] = {"rate": _money_text(self._typed[ccy]), "source": "given", "ts_ms": now_ms,
                            "journaled_ms": None}
        return out


async def ledger_rates(db: aiosqlite.Connection, account_ccy: str, typed: Mapping[str, Decimal] | None = None,
                       overrides: Mapping[str, Decimal] | None = None, *, until_ms: int | None = None) -> LedgerRates:
    """The rates in force at the ledger's end (or just before `until_ms`)."""
    return rates_in_force(await rate_rows(db, account_ccy), account_ccy, typed, overrides, until_ms=until_ms)


def rates_in_force(rows: Iterable[RateRow], account_ccy: str, typed: Mapping[str, Decimal] | None = None,
                   overrides: Mapping[str, Decimal] | None = None, *, until_ms: int | None = None) -> LedgerRates:
    """`ledger_rates` from `rate` rows already read (journal order; other account currencies
    are passed over)."""
    rates = LedgerRates(account_ccy, typed, overrides)
    rates.journal_until(rows, until_ms)
    return rates


@dataclass(slots=True)
class Replay:
    """The ledger's fills replayed into a Portfolio, with what could not be placed in it."""

    portfolio: Portfolio
    unknown: set[Key]
    marks: dict[Key, tuple[Decimal, str, int]]  # key -> (price, source, ts_ms)

    def mark_last_fills(self) -> None:
        """Mark every book at its last fill price, except those given a mark."""
        for v in self.portfolio.positions(0, include_flat=True):
            key = (v.venue, v.symbol)
            last = self.portfolio.last_fill(*key)
            if last is not None and (key not in self.marks or self.marks[key][1] == "last_fill"):
                self.portfolio.mark_at(v.venue, v.symbol, last[0], last[1])
                self.marks[key] = (last[0], "last_fill", last[1])


def new_replay(instruments: Mapping[Key, Instrument]) -> Replay:
    known = {k: i for k, i in instruments.items() if quote_currency(i.venue, i.symbol) is not None}
    # An instrument whose quote currency its name does not give stays out: its fills are unknown.
    return Replay(Portfolio(known.values()), set(), {})


def apply_fill(replay: Replay, row: FillRow) -> None:
    p = replay.portfolio
    if not p.has(row.venue, row.symbol):
        replay.unknown.add((row.venue, row.symbol))
        return
    if row.side not in ("buy", "sell"):
        raise LedgerError(f"fill {row.fill_id}: order side {row.side!r}")
    try:
        p.fill(venue=row.venue, symbol=row.symbol, side="buy" if row.side == "buy" else "sell", qty=row.qty,
               price=row.price, fee=row.fee, fee_ccy=row.fee_ccy, ts_ms=row.ts_ms, trade_id=row.trade_id)
    except ValueError as exc:
        raise LedgerError(f"fill {row.fill_id}: {exc}") from None


def apply_funding(replay: Replay, row: FundingRow) -> None:
    if not replay.portfolio.has(row.venue, row.symbol):
        replay.unknown.add((row.venue, row.symbol))
        return
    replay.portfolio.book_funding(row.venue, row.symbol, row.ts_ms, row.amount, row.ccy)


def apply_item(replay: Replay, item: FillRow | SwapRow | FundingRow) -> None:
    if isinstance(item, FillRow):
        apply_fill(replay, item)
    elif isinstance(item, SwapRow):
        apply_swap(replay, item)
    else:
        apply_funding(replay, item)


def apply_swap(replay: Replay, row: SwapRow) -> None:
    if not replay.portfolio.has("mt5", row.symbol):
        replay.unknown.add(("mt5", row.symbol))
        return
    if not row.ccy:
        return  # a deal whose fill the ledger does not hold: nothing to attach it to
    replay.portfolio.book_swap("mt5", row.symbol, row.deal, row.amount, row.ccy)


@dataclass(frozen=True, slots=True)
class History:
    """The ledger's money records, read once (`read_history`): every whole-ledger figure is a
    pure function of them (`replay`, `replay_split`, `attribute`, `rates_in_force`,
    `equity_of`, `series_of`), so a caller needing several reads the ledger once, not once a
    figure (a start-up read the fills three times and replayed them twice)."""

    instruments: dict[Key, Instrument]  # journaled with the groups (`ledger_instruments`)
    fills: list[FillRow]  # execution order (time, then journal order)
    swaps: list[SwapRow]
    funding: list[FundingRow]
    rates: list[RateRow] | None  # every account currency, journal order; None: not read
    nets: list[tuple[int, Net]] | None  # None: not read (`read_history(nets=False)`)

    def known(self, instruments: Mapping[Key, Instrument] | None = None) -> dict[Key, Instrument]:
        """`instruments` (the config's: symbols no group journaled) with the ledger's own over them."""
        known = dict(instruments or {})
        known.update(self.instruments)
        return known

    def items(self) -> list[Item]:
        """Fills, swaps and funding in replay order (`_merged`)."""
        return [item for _, item in _merged(self.fills, self.swaps, self.funding)]

    def rate_rows(self) -> list[RateRow]:
        if self.rates is None:
            raise ValueError("these figures need the history's rates: read_history(rates=True)")
        return self.rates

    def net_rows(self) -> list[tuple[int, Net]]:
        if self.nets is None:
            raise ValueError("the group attribution needs the history's nets: read_history(nets=True)")
        return self.nets


async def read_history(db: aiosqlite.Connection, *, rates: bool = True, nets: bool = False) -> History:
    """The ledger's money records (`History`): the instruments, fills, MT5 swaps and funding,
    the `rate` events unless not `rates` (the replay alone does not convert), the `net` events
    only with `nets` (the group attribution needs them, the portfolio does not)."""
    return History(await ledger_instruments(db), await fill_rows(db), await swap_rows(db), await funding_rows(db),
                   await rate_rows(db) if rates else None, await net_rows(db) if nets else None)


def replay(history: History, instruments: Mapping[Key, Instrument] | None = None, *,
           until_ms: int | None = None) -> Replay:
    """The history (or up to `until_ms`, exclusive) replayed; `instruments` fill in symbols no
    group journaled (the ledger's own win)."""
    out = new_replay(history.known(instruments))
    _apply(out, history.items(), 0, until_ms)
    return out


def replay_split(history: History, instruments: Mapping[Key, Instrument] | None, split_ms: int, rates: RateBook,
                 now_ms: int) -> tuple[Replay, dict[str, Any]]:
    """The whole history replayed, and from the same pass the equity document as it stood just
    before `split_ms` (what `replay(until_ms=split_ms)` marked at its last fills gives,
    converted with `rates`): a restart's replay and the equity when its day began, one pass."""
    out = new_replay(history.known(instruments))
    items = history.items()
    done = _apply(out, items, 0, split_ms)
    out.mark_last_fills()
    doc = equity_doc(out, rates, now_ms)
    out.portfolio.clear_marks()  # the replay goes on as if never marked (a fresh replay has none)
    out.marks.clear()
    _apply(out, items, done, None)
    return out, doc


def _apply(replay: Replay, items: Sequence[Item], start: int, until_ms: int | None) -> int:
    """Apply `items[start:]` stamped before `until_ms` (all without one); returns where it stopped."""
    i = start
    while i < len(items) and (until_ms is None or items[i].ts_ms < until_ms):
        apply_item(replay, items[i])
        i += 1
    return i


async def replay_ledger(
    db: aiosqlite.Connection,
    instruments: Mapping[Key, Instrument] | None = None,
    *,
    until_ms: int | None = None,
) -> Replay:
    """The whole ledger (or up to `until_ms`, exclusive) replayed (`replay` of `read_history`)."""
    return replay(await read_history(db, rates=False), instruments, until_ms=until_ms)



def _merged(fills: list[FillRow], swaps: list[SwapRow],
            funding: list[FundingRow] | None = None) -> list[tuple[tuple[int, int, int], Item]]:
    """Fills, swaps and funding in time order; at one instant a deal's swap after its fill, and
    funding after both (a fill stamped at the funding time counts as held at it, as the engine
    charged it: `position_at`)."""
    items: list[tuple[tuple[int, int, int], Item]] = [((f.ts_ms, 0, f.fill_id), f) for f in fills]
    items += [((s.ts_ms, 1, i), s) for i, s in enumerate(swaps)]
    items += [((r.ts_ms, 2, i), r) for i, r in enumerate(funding or [])]
    items.sort(key=lambda t: t[0])
    return items


def rate_book(account_ccy: str, rates: Mapping[str, Decimal], ts_ms: int) -> RateBook:
    book = RateBook(account_ccy)
    for ccy, value in rates.items():
        if ccy != account_ccy:
            book.set(ccy, value, ts_ms, "given")
    return book


def _given_marks(replay: Replay, marks: Mapping[Key, Decimal], now_ms: int) -> None:
    for key, price in marks.items():
        if not replay.portfolio.has(*key):
            raise LedgerError(f"mark for {key[0]}:{key[1]}: no such instrument in this ledger")
        replay.portfolio.mark_at(key[0], key[1], price, now_ms)
        replay.marks[key] = (price, "given", now_ms)


def _decimals(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def mark_source(replay: Replay) -> str:
    sources = {source for _, source, _ in replay.marks.values()}
    return "+".join(sorted(sources)) if sources else "none"


def equity_doc(replay: Replay, rates: RateBook, now_ms: int) -> dict[str, Any]:
    doc = replay.portfolio.equity(rates, now_ms).as_dict()
    unknown = sorted(f"{v}:{s}" for v, s in replay.unknown)
    if unknown:  # fills not valued: the account figures would be wrong, so they are missing
        for name in ("realized", "unrealized", "fees", "carry", "total"):
            doc[name] = None
    doc["unknown_instruments"] = unknown
    return doc


async def equity(
    db: aiosqlite.Connection,
    *,
    now_ms: int,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    marks: Mapping[Key, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> dict[str, Any]:
    """Equity change over the whole ledger (`equity_of` its history)."""
    return equity_of(await read_history(db), now_ms=now_ms, account_ccy=account_ccy, rates=rates,
                     rate_overrides=rate_overrides, marks=marks, instruments=instruments)


def equity_of(
    history: History,
    *,
    now_ms: int,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    marks: Mapping[Key, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> dict[str, Any]:
    """Equity change over the whole history: `currency`, `realized`, `unrealized`, `fees`, `carry`,
    `total` (decimal strings; null = missing), per currency, how it was marked, and the `rates`
    it converted with (`LedgerRates`: `rate_overrides` > journaled > the typed `rates`)."""
    replayed = replay(history, instruments)
    replayed.mark_last_fills()
    _given_marks(replayed, marks or {}, now_ms)
    in_force = rates_in_force(history.rate_rows(), account_ccy, rates, rate_overrides)
    doc = equity_doc(replayed, in_force.book(now_ms), now_ms)
    doc["rates"] = in_force.doc(now_ms)
    doc["mark_source"] = mark_source(replayed)
    doc["carry_recorded"] = list(CARRY_RECORDED)
    doc["funding"] = FUNDING_NOTE
    return doc


async def positions(
    db: aiosqlite.Connection,
    *,
    now_ms: int,
    marks: Mapping[Key, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> dict[str, Any]:
    """Per venue and symbol (with its asset): position in base and venue units, average price,
    mark (and its source), realized and unrealized PnL in the quote currency, fees, carry."""
    replayed = await replay_ledger(db, instruments)
    replayed.mark_last_fills()
    _given_marks(replayed, marks or {}, now_ms)
    rows = []
    for v in replayed.portfolio.positions(now_ms):
        row = v.as_dict()
        mark = replayed.marks.get((v.venue, v.symbol))
        row["mark_source"] = mark[1] if mark else None
        inst = replayed.portfolio.instrument(v.venue, v.symbol)
        # Decimals people should see: the lot step in base and venue units, the tick as normalized.
        row["qty_decimals"] = _decimals(inst.base_step)
        row["venue_qty_decimals"] = _decimals(inst.lot_step)
        row["price_decimals"] = _decimals(inst.tick_size * inst.price_scale)
        rows.append(row)
    net: dict[str, str] = {asset: format(q.normalize(), "f") if q else "0"
                           for asset, q in sorted(replayed.portfolio.net_by_asset().items())
                           if any(r["asset"] == asset for r in rows)}
    return {"as_of_ms": now_ms, "positions": rows, "net_by_asset": net,
            "unknown_instruments": sorted(f"{v}:{s}" for v, s in replayed.unknown),
            "mark_source": mark_source(replayed)}


async def equity_series(
    db: aiosqlite.Connection,
    *,
    since_ms: int = 0,
    interval_ms: int = 60_000,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> dict[str, Any]:
    """Equity over time, from the fills (`series_of` the ledger's history)."""
    return series_of(await read_history(db), since_ms=since_ms, interval_ms=interval_ms, account_ccy=account_ccy,
                     rates=rates, rate_overrides=rate_overrides, instruments=instruments)[0]


def series_of(
    history: History,
    *,
    since_ms: int = 0,
    interval_ms: int = 60_000,
    account_ccy: str = "USD",
    rates: Mapping[str, Decimal] | None = None,
    rate_overrides: Mapping[str, Decimal] | None = None,
    instruments: Mapping[Key, Instrument] | None = None,
) -> tuple[dict[str, Any], Replay]:
    """Equity over time: one point at the end of each `interval_ms` that had a fill (every fill
    when 0), from `since_ms` on. Figures are cumulative since the ledger's first fill, every
    position marked at its symbol's last fill price at that time and converted with the rates
    in force then (`LedgerRates`: the engine's `rate` events up to that time). With the
    document, the replay it ended with (the whole history, marked at the last fills)."""
    if interval_ms < 0 or since_ms < 0:
        raise LedgerError("interval and since must be >= 0")
    replayed = new_replay(history.known(instruments))
    in_force = LedgerRates(account_ccy, rates, rate_overrides)
    pending = [r for r in history.rate_rows() if r.rate.account_ccy == account_ccy]
    pending.sort(key=lambda r: (r.ts_ms, r.seq))
    next_rate = 0
    points: list[dict[str, Any]] = []

    def point(ts_ms: int) -> None:
        nonlocal next_rate
        while next_rate < len(pending) and pending[next_rate].ts_ms <= ts_ms:
            in_force.journal(pending[next_rate])
            next_rate += 1
        doc = equity_doc(replayed, in_force.book(ts_ms), ts_ms)
        points.append({"ts_ms": ts_ms, **{k: doc[k] for k in ("realized", "unrealized", "fees", "carry", "total")},
                       "by_currency": doc["by_currency"], "missing_rates": doc["missing_rates"]})

    bucket: int | None = None
    last_ts = 0
    for item in history.items():
        this = item.ts_ms // interval_ms if interval_ms else None
        if bucket is not None and (interval_ms == 0 or this != bucket) and last_ts >= since_ms:
            point(last_ts)
        apply_item(replayed, item)
        if isinstance(item, FillRow) and replayed.portfolio.has(item.venue, item.symbol):
            replayed.portfolio.mark_at(item.venue, item.symbol, item.price, item.ts_ms)
        bucket = this if interval_ms else 0
        last_ts = item.ts_ms
    if bucket is not None and last_ts >= since_ms:
        point(last_ts)
    return ({"currency": account_ccy, "since_ms": since_ms, "interval_ms": interval_ms, "mark_source": "last_fill",
             "carry_recorded": list(CARRY_RECORDED), "funding": FUNDING_NOTE,
             "unknown_instruments": sorted(f"{v}:{s}" for v, s in replayed.unknown), "points": points}, replayed)


def closing_purpose(purpose: str) -> bool:
    """True for an order that closes positions rather than opening or keeping a hedge."""
    return purpose not in OPENING_PURPOSES


def attribute_fill(attribution: Attribution, row: FillRow) -> None:
    """One ledger fill into the group attribution (a fill of an unknown instrument is skipped:
    `replay_ledger` lists it)."""
    if not attribution.has(row.venue, row.symbol):
        return
    if row.side not in ("buy", "sell"):
        raise LedgerError(f"fill {row.fill_id}: order side {row.side!r}")
    try:
        attribution.fill(group_id=row.group_id, closing=closing_purpose(row.purpose), venue=row.venue,
                         symbol=row.symbol, side="buy" if row.side == "buy" else "sell", qty=row.qty,
                         price=row.price, fee=row.fee, ts_ms=row.ts_ms, trade_id=row.trade_id)
    except ValueError as exc:
        raise LedgerError(f"fill {row.fill_id}: {exc}") from None


async def group_attribution(
    db: aiosqlite.Connection,
    instruments: Mapping[Key, Instrument] | None = None,
    *,
    keep_flat: bool = True,
) -> Attribution:
    """Every fill attributed to the group it belongs to (`attribute` of the ledger's history)."""
    return attribute(await read_history(db, rates=False, nets=True), instruments, keep_flat=keep_flat)


def attribute(history: History, instruments: Mapping[Key, Instrument] | None = None, *,
              keep_flat: bool = True) -> Attribution:
    """Every fill attributed to the group it belongs to (`core.attribution`): a group's own
    orders by their group id (a close of that group's included), a flatten's fills first in,
    first out to the groups that held, the rest on the `flatten` line; the journaled nets
    booked between them, all in journal order. `history` must hold the nets
    (`read_history(nets=True)`)."""
    attribution = Attribution((i for i in history.known(instruments).values()), keep_flat=keep_flat)
    # In journal order (a fill's id is its event's seq): the order the engine attributed them
    # in, nets included (a net is journaled after the fills it followed). The venues' times
    # would put a fill stamped before a net, but booked after it, before it (issue 19 review).
    items: list[tuple[int, FillRow | Net]] = [(f.fill_id, f) for f in history.fills]
    items += history.net_rows()
    items.sort(key=lambda t: t[0])
    for _, item in items:
        if isinstance(item, FillRow):
            attribute_fill(attribution, item)
        elif attribution.has(item.venue, item.symbol):
            try:
                attribution.transfer(item)
            except (ValueError, ArithmeticError) as exc:  # a figure past Decimal's range: Overflow
                raise LedgerError(f"net at {item.ts_ms}: {exc!r}") from None
    return attribution


async def net_rows(db: aiosqlite.Connection) -> list[tuple[int, Net]]:
    """Every `net` event (seq, transfer) in journal order. LedgerError, naming the event, for one
    that cannot be read."""
    out: list[tuple[int, Net]] = []
    for seq, text in await _rows(db, "SELECT seq, payload FROM events WHERE kind = ? ORDER BY seq", (ev.NET,)):
        try:
            out.append((int(seq), ev.net_from_payload(ev.decode_payload(text))))
        except (ValueError, msgspec.DecodeError) as exc:
            raise LedgerError(f"unreadable net event (seq {seq}): {exc}") from None
    return out


async def settled_groups(db: aiosqlite.Connection, group_ids: list[str]) -> list[str]:
    """Of `group_ids`, those whose ledger state is one a group ends its execution in and can
    still hold positions (`core.hedge.CLOSABLE`) and that have no order still open (a close of
    the group sent before a crash, an `unknown`): done trading, so they net. One with an open
    order is not: recovery has yet to learn what the order did, and its fills, under the
    group's id, must find the group's money whole (as `Runtime._settle` requires live)."""
    states = sorted(s.value for s in CLOSABLE)
    rows = await _rows(db, "SELECT g.group_id FROM hedge_groups g JOIN json_each(?) j ON j.value = g.group_id "
                           f"WHERE g.state IN ({', '.join('?' for _ in states)}) AND NOT EXISTS "
                           f"(SELECT 1 FROM orders o WHERE o.group_id = g.group_id AND o.{OPEN_ORDERS_WHERE})",
                       (json.dumps(group_ids), *states))
    return [str(r[0]) for r in rows]


@dataclass(frozen=True, slots=True)
class GroupRow:
    """What closing a group from its ledger row needs: its state, when its execution ended, the
    note of its last `group_state` event, its PnL so far and its pair."""

    state: str
    closed_at_ms: int | None
    note: str
    realized_pnl: Decimal
    pair: str


async def group_rows(db: aiosqlite.Connection, group_ids: Iterable[str]) -> dict[str, GroupRow]:
    """The row of each group id the ledger holds (`GroupRow`)."""
    out: dict[str, GroupRow] = {}
    for gid in group_ids:
        rows = await _rows(
            db,
            "SELECT g.state, g.closed_at_ms, (SELECT json_extract(e.payload, '$.note') FROM events e "
            "WHERE e.group_id = g.group_id AND e.kind = ? ORDER BY e.seq DESC LIMIT 1), g.realized_pnl, g.pair "
            "FROM hedge_groups g WHERE g.group_id = ?", (ev.GROUP_STATE, gid))
        if rows:
            r = rows[0]
            try:
                pnl = Decimal(str(r[3])) if r[3] is not None else Decimal(0)
            except InvalidOperation:
                raise LedgerError(f"group {gid}: realized_pnl {str(r[3])[:40]!r} is not a decimal") from None
            out[gid] = GroupRow(str(r[0]), None if r[1] is None else int(r[1]), str(r[2] or ""),
                                pnl if pnl.is_finite() else Decimal(0), str(r[4]))
    return out


def group_money_doc(g: GroupMoney) -> dict[str, Any]:
    """One group's (or the flatten line's) attributed money as JSON (decimal strings)."""
    return {"group_id": g.group_id, "cash": _money_text(g.cash), "fees": _money_text(g.fees),
            "closing_cash": _money_text(g.closing_cash), "closing_fees": _money_text(g.closing_fees),
            "realized": _money_text(g.realized), "closed_by": list(g.closed_by),
            "positions": {f"{v}:{s}": _money_text(q) for (v, s), q in sorted(g.positions.items()) if q}}


def _money_text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")
