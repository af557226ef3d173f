"""The engine's running money: one portfolio, the same definition as `quantarb ledger summary`.

At start it is the ledger's own replay (`ledger.money.replay_ledger`: every fill, MT5 swap),
then every fill the orchestrator books is applied as it happens (deduplicated on the venue's
trade id, so a fill seen twice counts once, as in the ledger). When read, each open position
is marked at the mid of its venue's book as the engine sees it now (the last fill price where
the venue has no quote yet), and converted with the configured rates:

    equity change = realized + unrealized - fees + carry

so the TUI, `status`, headless, `/api/status` and `/metrics` say the figure `ledger summary`
computes from the fills table alone (with the ledger's marks: the last fill prices). A
currency without a configured rate makes the total missing, never a guess. Every rate book it
converts with goes through the `RateLog` first (`journal_rates`): a rate in force that changed
is journaled, so `ledger summary` converts with the same rate (a book's mid within the log's
tolerance of the journaled rate converts at the journaled one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from core.attribution import Attribution, GroupMoney, Net
from core.breakers import DAY_MS
from core.config import MoneyConfig
from core.currency import RateBook, RateInForce
from core.holdings import Holding, holdings
from core.instruments import Instrument
from core.models import Fill, Order, Venue
from core.portfolio import Portfolio, PositionView
from engine.funding import Booked
from engine.rates import RateFeed, RateLog, rates_doc
from ledger import money
from ledger.ledger import Ledger

log = logging.getLogger(__name__)

Touch = Callable[[Venue, str], tuple[float, float] | None]
# The MT5 terminal's last account report: swap accrued per symbol (POSITION_SWAP summed), its
# currency and the report's time; None without one.
SwapReport = Callable[[], tuple[dict[str, Decimal], str, int] | None]
# Fill ids the running portfolio remembers to deduplicate (issue 19: every id ever seen, about
# 190 bytes each, grew for weeks): those booked in the last `RECENT_FILLS_MAX_AGE_MS`, at most
# `RECENT_FILLS_KEPT`. This is the second line: a fill reaches the books through the order
# tracker, which deduplicates per order while the orchestrator remembers the order (a group
# closed five minutes ago at most, `engine.orchestrator.RECENT_GROUPS_MAX_AGE_MS`, or one of the
# newest it shows), or, for an order it forgot, as reconciliation journals it, once per trade id
# (`engine.orchestrator.UNTRACKED_FILLS_KEPT`; reconciliation books none while the ledger cannot
# write, so one the tracker booked is not booked again). Ten minutes is twice
# that horizon and about 800 ids at the demo's rate (a count alone, 10,000, took 2.5 hours of
# the demo to fill: a slope in every soak). The ledger refuses any older repeat (unique venue
# trade id) and stays the record.
RECENT_FILLS_KEPT = 10_000
RECENT_FILLS_MAX_AGE_MS = 10 * 60_000


class RunningEquity:
    def __init__(self, instruments: Iterable[Instrument], config: MoneyConfig, touch: Touch,
                 swaps: SwapReport | None = None, rates: RateFeed | None = None,
                 now_ms: Callable[[], int] | None = None) -> None:
        self._instruments = {i.key: i for i in instruments}
        self._config = config
        self._rates = rates  # the venues' currency books (engine.rates), else the typed-in rates
        self._rate_log: RateLog | None = None  # journals the rates in force when they change
        self._touch = touch
        self._swaps = swaps
        # The engine's clock: a fill id's age in the dedup window runs from its booking here (a
        # venue's own fill time, used without it, is the venue's to get wrong).
        self._now_ms = now_ms
        self._replay = money.new_replay(self._instruments)
        self._bound_fill_ids(self._replay.portfolio)
        # Which group each fill's money belongs to (a flatten's share included): bounded by the
        # groups that hold positions.
        self._groups = Attribution(self._instruments.values(), keep_flat=False)
        self._unclosed: list[GroupMoney] = []  # flat at the restore, not closed in the ledger
        self.refused = 0  # fills the portfolio refused (logged): a bug, never silent
        self.restore_error: str | None = None  # the ledger could not be replayed: no figure
        # The last rate journaled per currency, as the restore read them (the runtime's `RateLog`
        # resumes from them without reading the ledger again); None before a restore.
        self.journaled_rates: dict[str, RateInForce] | None = None
        # (UTC day, equity when it began): the day's figure is the equity now less this. Set
        # by the ledger at restore, else recorded by the first reading of a day; before either,
        # this run's money began at 0 (nothing came before it).
        self._day: tuple[int, Decimal | None] | None = None
        # One reading per instant: a snapshot, the risk loop and the status bar all ask for the
        # equity, the holdings and the day's figure at the same `now_ms`. Any fill, restore or
        # rate read starts afresh (a quote within the same millisecond waits for the next one).
        self._version = 0
        self._memo_key: tuple[int, int, int] | None = None
        self._memo: dict[str, Any] = {}

    def _clock_ms(self) -> int | None:
        return self._now_ms() if self._now_ms is not None else None

    def _bound_fill_ids(self, portfolio: Portfolio) -> None:
        """The running portfolio's dedup window (RECENT_FILLS_*), its ids booked now."""
        portfolio.keep_recent_trades(RECENT_FILLS_KEPT, max_age_ms=RECENT_FILLS_MAX_AGE_MS, now_ms=self._clock_ms())

    async def restore(self, ledger: Ledger, now_ms: int | None = None) -> None:
        """Start from everything the ledger holds (the same replay as `ledger summary`). When
        that fails the figures are missing (null), never the money of this run alone. With
        `now_ms`, the equity at the start of that UTC day is replayed too (marked at the last
        fill prices before midnight: the ledger keeps no quotes; converted with the rates in
        force then, as `ledger equity` does: journaled, else typed), so a restart keeps the
        day's figure and the daily loss it may have reached, also when the rates come from
        books not read yet.

        The ledger is read once (`money.read_history`) and replayed once: the portfolio and
        the day's start in one pass (`money.replay_split`), the groups from the same rows
        (`money.attribute`), and the journaled rates kept for the runtime's rate log
        (`journaled_rates`). A start-up that read and replayed it per figure took minutes on a
        weeks-long ledger."""
        account = self._config.account_currency
        try:
            history = await ledger.read(money.read_history, nets=True)
            at_midnight: dict[str, Any] | None = None
            if now_ms is None:
                replay = money.replay(history, self._instruments)
            else:
                split = now_ms // DAY_MS * DAY_MS
                midnight = money.rates_in_force(history.rate_rows(), account, self._config.rates, until_ms=split)
                replay, at_midnight = money.replay_split(history, self._instruments, split, midnight.book(now_ms),
                                                         now_ms)
            self._bound_fill_ids(replay.portfolio)
            self._replay = replay
            groups = money.attribute(history, self._instruments, keep_flat=False)
            # Closed before this run: journaled then (or in `ledger groups`); unless the run
            # stopped between the net (or closing fill) that took a group flat and its close:
            # its row still has it settled, and the runtime closes it now (`take_unclosed`).
            # Those still held that were done trading when the ledger was written net from now
            # on (`settle_restored`). One read of the groups' rows answers both.
            closed = groups.take_closed()
            asked = list(dict.fromkeys([g.group_id for g in closed] + list(groups.groups())))
            settled = set(await ledger.read(money.settled_groups, asked)) if asked else set()
            self._unclosed = [g for g in closed if g.group_id in settled]
            groups.mark_settled(g for g in groups.groups() if g in settled)
            self._groups = groups
            self.journaled_rates = money.journaled_rates(history.rate_rows(), account)
            if now_ms is not None and at_midnight is not None:
                total = at_midnight.get("total")
                self._day = (now_ms // DAY_MS, Decimal(total) if isinstance(total, str) else None)
        except Exception as exc:
            self.restore_error = (str(exc) or type(exc).__name__)[:300]
            raise
        finally:
            self._version += 1
        self.restore_error = None

    def on_fill(self, order: Order, fill: Fill) -> None:
        """A fill as the orchestrator books it (venue units)."""
        self._version += 1
        portfolio = self._replay.portfolio
        if not portfolio.has(fill.venue, order.symbol):
            self._replay.unknown.add((fill.venue, order.symbol))
            return
        try:
            new = portfolio.fill(venue=fill.venue, symbol=order.symbol, side=order.side, qty=fill.qty,
                                 price=fill.price, fee=fill.fee, fee_ccy=fill.fee_ccy, ts_ms=fill.ts_ms,
                                 trade_id=fill.venue_trade_id,
                                 booked_ms=self._clock_ms())
        except ValueError as exc:
            self.refused += 1
            log.error("equity: fill %s:%s refused: %s", fill.venue, fill.venue_trade_id, exc)
            return
        if new:  # the portfolio deduplicated it: each fill is attributed once
            self._attribute(order, fill)

    def _attribute(self, order: Order, fill: Fill) -> None:
        if not self._groups.has(fill.venue, order.symbol):
            return
        try:
            self._groups.fill(group_id=order.group_id or None, closing=money.closing_purpose(order.purpose),
                              venue=fill.venue, symbol=order.symbol, side=order.side, qty=fill.qty,
                              price=fill.price, fee=fill.fee, ts_ms=fill.ts_ms, trade_id=fill.venue_trade_id)
        except ValueError as exc:
            log.error("equity: fill %s:%s not attributed: %s", fill.venue, fill.venue_trade_id, exc)

    def net_off(self, venue: Venue, symbol: str, batch: str, now_ms: int) -> list[str]:
        """Groups holding this (flat) book against each other closed at its mark now (the mid of
        its book, else the last fill price): `core.attribution.Attribution.net_off`."""
        price = self._mark_now(venue, symbol) if self._groups.has(venue, symbol) else None
        if price is None:
            return []
        return self._groups.net_off(venue, symbol, price, now_ms, batch)

    def take_unclosed(self) -> list[GroupMoney]:
        """The groups the restore found flat whose ledger rows were never closed (each once)."""
        out, self._unclosed = self._unclosed, []
        return out

    def settle(self, group_id: str, now_ms: int) -> list[Net]:
        """The group is done trading: set it against the settled groups holding its books the
        other way (`core.attribution.Attribution.settle`)."""
        return self._groups.settle(group_id, now_ms)

    def unsettle(self, group_id: str) -> None:
        """The group trades again (a close of it by hand): it nets no more until settled again."""
        self._groups.unsettle(group_id)

    def group_held(self, group_id: str) -> dict[Venue, Decimal]:
        """What the running attribution says the group holds, per venue (base units)."""
        g = self._groups.group(group_id)
        out: dict[Venue, Decimal] = {}
        for (venue, _symbol), q in (g.positions.items() if g is not None else ()):
            out[venue] = out.get(venue, Decimal(0)) + q
        return out

    def settle_restored(self, now_ms: int) -> list[Net]:
        """The settled groups restored from the ledger, each set against the older ones (a ledger
        written before netting, or a run that stopped between a group's end and its net)."""
        out: list[Net] = []
        for group_id in self._groups.settled():
            out += self._groups.settle(group_id, now_ms)
        return out

    def remembered_groups(self) -> int:
        """How many groups the running attribution holds (issue 19: bounded by the net positions)."""
        return self._groups.remembered()

    def accrue_funding(self, venue: Venue, symbol: str, funding_ms: int, rate: Decimal, mark: Decimal | None,
                       held: Decimal) -> Booked | None:
        """Funding at one funding time on `held`, the position (venue units) held at it
        (`core.carry`): at the venue's mark for it when given, else the mid of its book now
        (else the last fill price). None when nothing was held, the instrument is unknown, or
        that time is already booked."""
        portfolio = self._replay.portfolio
        if self.restore_error is not None or not portfolio.has(venue, symbol):
            return None
        inst = portfolio.instrument(venue, symbol)
        qty = inst.to_base_qty(held)
        if qty == 0:
            return None
        if mark is None:
            mark = self._mark_now(venue, symbol)
            if mark is None:
                log.error("funding %s:%s at %d: no mark to value the position", venue, symbol, funding_ms)
                return None
        amount = portfolio.accrue_funding(venue, symbol, funding_ms, rate, mark, qty)
        if amount is None:
            return None
        self._version += 1
        ccy = portfolio.position(venue, symbol, funding_ms).quote_ccy
        return Booked(venue, symbol, funding_ms, rate, mark, qty, amount, ccy)

    def _mark_now(self, venue: Venue, symbol: str) -> Decimal | None:
        """The mid of the venue's book now (venue units), else the last fill price, else None."""
        touch = self._touch(venue, symbol)
        if touch is not None and touch[0] > 0 and touch[1] >= touch[0]:
            return (Decimal(repr(touch[0])) + Decimal(repr(touch[1]))) / 2
        portfolio = self._replay.portfolio
        last = portfolio.last_fill(venue, symbol) if portfolio.has(venue, symbol) else None
        return last[0] if last is not None else None

    def take_closed(self) -> list[GroupMoney]:
        """The groups closing fills took to flat since the last call (`core.attribution`)."""
        return self._groups.take_closed()

    def book_swap(self, symbol: str, deal: str, amount: Decimal, ccy: str) -> bool:
        """Swap booked on an MT5 deal (`DEAL_SWAP`) as the EA reports it (as the ledger's replay
        reads it from the deal reports); False for a repeated deal or an unknown symbol."""
        portfolio = self._replay.portfolio
        if amount == 0 or not portfolio.has("mt5", symbol):
            return False
        try:
            booked = portfolio.book_swap("mt5", symbol, deal, amount, ccy)
        except ValueError as exc:
            log.error("equity: swap on deal %s refused: %s", deal, exc)
            return False
        self._version += booked
        return booked

    def _accrue_swaps(self) -> None:
        """Swap accrued on the open MT5 positions, from the terminal's last account report."""
        report = self._swaps() if self._swaps is not None else None
        if report is None:
            return
        per_symbol, ccy, ts_ms = report
        portfolio = self._replay.portfolio
        for (venue, symbol) in self._instruments:
            if venue == "mt5" and portfolio.has(venue, symbol):
                portfolio.accrued_swap(venue, symbol, per_symbol.get(symbol, Decimal(0)), ccy, ts_ms)

    def _mark(self, now_ms: int) -> None:
        """Every book at its venue's mid now (the last fill price before a quote), and the MT5
        positions' accrued swap from the last account report."""
        self._accrue_swaps()
        replay = self._replay
        portfolio = replay.portfolio
        for (venue, symbol) in self._instruments:
            if not portfolio.has(venue, symbol):
                continue
            touch = self._touch(venue, symbol)
            if touch is not None and touch[0] > 0 and touch[1] >= touch[0]:
                # Unchanged (the same quote, marked again at the same instant): so is its mark.
                if portfolio.mark(venue, symbol, touch[0], touch[1], now_ms):
                    replay.marks[(venue, symbol)] = (Decimal(repr((touch[0] + touch[1]) / 2)), "book", now_ms)
            else:
                last = portfolio.last_fill(venue, symbol)
                if last is not None:
                    portfolio.mark_at(venue, symbol, last[0], last[1])
                    replay.marks[(venue, symbol)] = (last[0], "last_fill", last[1])

    def use_rates(self, rates: RateFeed) -> None:
        """Rates from the venues' currency books from now on (known once the feeds' URLs are)."""
        self._rates = rates
        self._version += 1

    def journal_rates(self, log: RateLog) -> None:
        """Every rate book converted with from now on is observed by `log` (journaled on change)."""
        self._rate_log = log

    def _rate_book(self, now_ms: int) -> RateBook:
        if self._rates is not None:
            book = self._rates.rate_book(now_ms)
        else:
            book = money.rate_book(self._config.account_currency, self._config.rates, now_ms)
        return book if self._rate_log is None else self._rate_log.observe(book, now_ms)

    def _memoized(self, name: str, now_ms: int, compute: Callable[[], Any]) -> Any:
        key = (now_ms, self._version, self._rates.reads if self._rates is not None else 0)
        if self._memo_key != key:
            self._memo_key, self._memo = key, {}
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]

    def equity(self, now_ms: int) -> dict[str, Any]:
        """The equity document (`currency`, `realized`, `unrealized`, `fees`, `carry`, `total`:
        decimal strings, null when missing), marked now."""
        return dict(self._memoized("equity", now_ms, lambda: self._equity(now_ms)))

    def _equity(self, now_ms: int) -> dict[str, Any]:
        replay = self._replay
        self._mark(now_ms)
        rates = self._rate_book(now_ms)
        doc = money.equity_doc(replay, rates, now_ms)
        doc["mark_source"] = money.mark_source(replay)
        doc["rates"] = rates_doc(rates, now_ms)  # which rate, from where, how old
        if self._rates is not None:
            doc["rate_books"] = self._rates.describe(now_ms)
        if self.restore_error is not None:
            for name in ("realized", "unrealized", "fees", "carry", "total"):
                doc[name] = None
            doc["error"] = f"not restored from the ledger: {self.restore_error}"
        return doc

    def positions(self, now_ms: int) -> list[PositionView]:
        """Every book with a fill or a position, marked now ([] when nothing was restored)."""
        if self.restore_error is not None:
            return []
        self._mark(now_ms)
        return self._replay.portfolio.positions(now_ms)

    def holdings(self, now_ms: int) -> list[Holding]:
        """Per asset: each venue's position, net delta, mark, unrealized and carry (in the
        account currency), marked now. Empty when the ledger could not be replayed: the
        positions are not known."""
        return list(self._memoized("holdings", now_ms, lambda: self._holdings(now_ms)))

    def _holdings(self, now_ms: int) -> list[Holding]:
        if self.restore_error is not None:
            return []
        portfolio = self._replay.portfolio
        views = self.positions(now_ms)
        instruments = dict(self._instruments)
        for v in views:
            instruments.setdefault((v.venue, v.symbol), portfolio.instrument(v.venue, v.symbol))
        rates = self._rate_book(now_ms)
        return holdings(views, instruments, rates)

    def venue_equity(self, now_ms: int) -> dict[Venue, Decimal | None]:
        """Each venue's own equity change in the account currency (its books' realized +
        unrealized - fees + carry), marked now: with the account's starting balance, what
        margin is computed from. None for a venue whose figure is missing (a rate, a mark, or
        a fill of an instrument the portfolio does not know); {} when nothing was restored."""
        if self.restore_error is not None:
            return {}
        self._mark(now_ms)
        portfolio = self._replay.portfolio
        rates = self._rate_book(now_ms)
        out: dict[Venue, Decimal | None] = {}
        for v in portfolio.positions(now_ms, include_flat=True):
            amount = rates.total([(v.realized, v.quote_ccy), (v.unrealized, v.quote_ccy),
                                  *((-fee, ccy) for ccy, fee in v.fees.items()),
                                  *((c, ccy) for ccy, c in v.carry.items())])
            prior = out.get(v.venue, Decimal(0))
            out[v.venue] = None if prior is None or amount is None else prior + amount
        for venue, _symbol in self._replay.unknown:
            out[venue] = None
        return out

    def total(self, now_ms: int) -> Decimal | None:
        value = self.equity(now_ms).get("total")
        return Decimal(value) if isinstance(value, str) else None

    def day_change(self, now_ms: int) -> Decimal | None:
        """The day's equity: equity now less equity when the UTC day began (recorded when the
        day rolls: by the first reading of a day that has a figure). None when either is not
        known (a missing rate or mark, a ledger that could not be replayed)."""
        total = self.total(now_ms)
        day = now_ms // DAY_MS
        if self._day is None:
            self._day = (day, Decimal(0))
        elif self._day[0] != day or self._day[1] is None:
            self._day = (day, total)
        start = self._day[1]
        return None if total is None or start is None else total - start
