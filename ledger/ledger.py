"""Ledger: the one object the runtime holds. Records the engine's life and gives it back on start.

    ledger = await Ledger.open(path)            # create / migrate / refuse (LedgerError)
    state = await ledger.recover()              # open groups, live orders, MT5 commands, halt
    ledger.decision(d, group_id=...)            # counted per pair + sampled signal log
    ledger.group_opened(group)                  # fire and forget (ordered before its orders)
    await ledger.order_created(order)           # WRITE-AHEAD: returns once committed
    ledger.order_state(order); ledger.fill(order, fill)
    await ledger.flush()                        # the fills above are on disk
    ledger.group_state(group); ledger.compensation(action)
    await ledger.risk_event("kill", gate.kill(reason), breakers=...)   # durable
    ledger.dust(pair, total)                    # the DustBook's total for a pair (queued)
    await ledger.save(command)                  # CommandStore port (durable)
    await ledger.close()                        # commits what is queued

The synchronous methods only queue the event (call them from the event loop's thread,
including the synchronous hot path); they return its journal seq. Events are committed in
seq order, so awaiting a later event's commit (`flush`, a durable call) makes every earlier
one durable too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from core.attribution import Net
from core.clock import Clock, RealClock
from core.commands import CommandStore, Mt5Command
from core.currency import RateInForce
from core.hedge import GROUP_TERMINAL, HedgeGroup
from core.models import (
    CompensationAction,
    CompensationKind,
    Decision,
    Fill,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    Outcome,
    TradingState,
)
from core.orders import TERMINAL as ORDER_TERMINAL
from core.ports import RiskKind
from core.risk import StateChange
from core.runtime_settings import SettingChange
from ledger import events as ev
from ledger.ahead import AheadFile, ahead_path, replay_ahead
from ledger.errors import LedgerClosedError, LedgerError
from ledger.events import EDGE_BUCKET_BPS, EDGE_BUCKETS, EDGE_MIN_BPS, LedgerEvent
from ledger.files import ledger_files, make_private_dirs, tighten
from ledger.integrity import read_error
from ledger.lock import WriterLock
from ledger.net_positions import NetPositions
from ledger.queries import _all, connect_reader  # _all: the package's one row reader
from ledger.schema import OPEN_ORDERS_WHERE, prepare, reader_uri
from ledger.writer import LedgerWriter, memory_pragmas

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DECISION_INTERVAL_MS = 1000
DEFAULT_DECISION_STATS_INTERVAL_MS = 60_000
DEFAULT_COMMAND_FILL_WAIT_MS = 10 * 60 * 1000

OPEN_GROUP_STATES: tuple[str, ...] = tuple(s.value for s in GroupState if s not in GROUP_TERMINAL)
_INTENT = Outcome.INTENT  # a module constant: read for every decision (a StrEnum member costs ~60 ns)


class DecisionSampler:
    """Keeps the signal log bounded: every intent, and at most one blocked decision per
    (pair, buy venue, sell venue, reason) per `interval_ms` window of the decision's own time.
    """

    __slots__ = ("_interval_ms", "_last", "kept", "suppressed")

    def __init__(self, interval_ms: int = DEFAULT_DECISION_INTERVAL_MS) -> None:
        if interval_ms < 1:
            raise ValueError("interval_ms must be >= 1")
        self._interval_ms = interval_ms
        self._last: dict[tuple[str, str | None, str | None, str], int] = {}
        self.kept = 0
        self.suppressed = 0

    def keep(self, d: Decision) -> bool:
        if d.outcome is _INTENT:
            self.kept += 1
            return True
        key = (d.pair, d.buy_venue, d.sell_venue, d.reason)
        window = d.ts_ms // self._interval_ms
        if self._last.get(key) == window:
            self.suppressed += 1
            return False
        self._last[key] = window
        self.kept += 1
        return True


_BUCKETS_PER_BPS = 1.0 / EDGE_BUCKET_BPS
_LAST_BUCKET = EDGE_BUCKETS - 1
# A pair's counts are one list: the edge histogram slots, then these two counters.
_UNBINNED = EDGE_BUCKETS  # decisions whose edge is NaN: counted, never binned
_INTENTS = EDGE_BUCKETS + 1
_COUNTS_LEN = EDGE_BUCKETS + 2


class DecisionStats:
    """Counts EVERY decision per pair and interval of decision time (`ts_ms`, the engine's
    clock): the `decisions` log is sampled, so edge percentiles or a trigger rate computed
    from it would be biased. Journaled as `decision_stats` events when the interval rolls
    and at close; a crash loses at most the current interval.

    Decisions without a counter quote are skipped: their edge is a placeholder (core.pnl's
    PairStats skips them too, so the ledger and the runtime snapshot agree). Per pair the
    counts are one flat list (histogram slots, unbinned, intents) so that counting, which
    `Ledger.decision` does inline for every quote, is a dict lookup and two list increments.
    """

    __slots__ = ("interval_ms", "pairs", "start_ms", "until_ms")

    def __init__(self, interval_ms: int = DEFAULT_DECISION_STATS_INTERVAL_MS) -> None:
        if interval_ms < 1:
            raise ValueError("decision_stats_interval_ms must be >= 1")
        self.interval_ms = interval_ms
        self.pairs: dict[str, list[int]] = {}  # never replaced: Ledger caches it
        self.start_ms = 0
        self.until_ms = -1  # no interval yet: the first decision opens one

    def counts(self, pair: str) -> tuple[int, int, list[int]]:
        """(decisions, intents, histogram slots) of `pair` in the current interval."""
        c = self.pairs.get(pair)
        if c is None:
            return 0, 0, [0] * EDGE_BUCKETS
        return sum(c[:_INTENTS]), c[_INTENTS], c[:EDGE_BUCKETS]

    def drain(self, ts_ms: int, next_ms: int | None = None) -> list[LedgerEvent]:
        """The current interval's events (pairs with decisions), counters reset; with `next_ms`,
        the interval that contains it becomes the current one."""
        out: list[LedgerEvent] = []
        for pair, c in self.pairs.items():
            decisions = sum(c) - c[_INTENTS]
            if decisions:
                out.append(ev.decision_stats(pair, self.start_ms, self.interval_ms, decisions, c[_INTENTS],
                                             c[:EDGE_BUCKETS], ts_ms))
                c[:] = _ZEROS
        if next_ms is not None:
            self.start_ms = next_ms - next_ms % self.interval_ms
            self.until_ms = self.start_ms + self.interval_ms
        return out


_ZEROS = (0,) * _COUNTS_LEN


@dataclass(slots=True)
class RecoveredState:
    """What a starting engine must know before it sends anything (docs/ledger.md, Recovery)."""

    trading_state: TradingState = TradingState.ACTIVE
    trading_reason: str = ""
    trading_since_ms: int = 0
    open_groups: list[HedgeGroup] = field(default_factory=list)
    # Every order not in a terminal state (the open groups' and flatten orders), to be asked
    # about by client order id; the open groups' orders are the same objects.
    open_orders: list[Order] = field(default_factory=list)
    open_commands: list[Mt5Command] = field(default_factory=list)
    last_seq: int = 0
    # The breaker-state map of the latest risk event that carried one (name -> {state,
    # since_ms, until_ms, detail}); empty if none did. A tripped breaker stays tripped.
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The DustBook: the latest non-zero dust total per pair (base units).
    dust: dict[str, Decimal] = field(default_factory=dict)

    @property
    def halted(self) -> bool:
        return self.trading_state is TradingState.HALTED


class Ledger:
    """The ledger of one engine: the single writer, a reader connection, recovery, CommandStore."""

    def __init__(
        self,
        path: Path,
        writer: LedgerWriter,
        reader: aiosqlite.Connection,
        lock: WriterLock,
        *,
        clock: Clock,
        decision_interval_ms: int,
        command_fill_wait_ms: int,
        migrated_from: int,
        decision_stats_interval_ms: int = DEFAULT_DECISION_STATS_INTERVAL_MS,
        notices: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.writer = writer
        self._reader = reader
        self._lock = lock
        # Warnings from opening (file modes tightened, extra hard links) for the engine's log.
        self.notices = notices
        self.clock = clock
        self.sampler = DecisionSampler(decision_interval_ms)
        self.decision_stats = DecisionStats(decision_stats_interval_ms)
        self._stats_pairs = self.decision_stats.pairs  # the hot path's shortcuts
        self._stats_until_ms = self.decision_stats.until_ms
        self.command_fill_wait_ms = command_fill_wait_ms
        self.migrated_from = migrated_from
        self.writer_options: dict[str, Any] = {}
        self.ahead: AheadFile | None = None  # ledger.ahead; attached by `open`
        self._failure_listeners: list[Callable[[BaseException], None]] = []
        writer.on_failure = self._writer_failed
        self._positions = NetPositions()  # summed once, then from new fills (ledger.net_positions)
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        decision_interval_ms: int = DEFAULT_DECISION_INTERVAL_MS,
        command_fill_wait_ms: int = DEFAULT_COMMAND_FILL_WAIT_MS,
        decision_stats_interval_ms: int = DEFAULT_DECISION_STATS_INTERVAL_MS,
        **writer_options: Any,
    ) -> Ledger:
        """Open (creating or migrating) the ledger at `path` and start its writer.

        Raises NotALedgerError / LedgerTooNewError / LedgerCorruptError (exit 2) for a file it
        must not touch, LedgerBusyError when another engine holds the file (under any name),
        LedgerError for anything else. `writer_options` go to LedgerWriter (max_batch,
        max_delay_s, max_queue, ...). The connections use the resolved path: the -wal and -shm
        are the ones the writer lock covers.
        """
        if decision_interval_ms < 1:
            raise ValueError("decision_interval_ms must be >= 1")
        if decision_stats_interval_ms < 1:
            raise ValueError("decision_stats_interval_ms must be >= 1")
        opened = await asyncio.to_thread(_prepare_locked, Path(path))
        lock = opened.lock
        try:
            writer = await LedgerWriter.open(lock.path, **writer_options)
            try:
                reader = await connect_reader(await asyncio.to_thread(reader_uri, lock.path))
            except BaseException:
                await writer.close()
                raise
        except BaseException:
            lock.release()  # after the connections: see ledger.lock
            raise
        ledger = cls(
            opened.shown,
            writer,
            reader,
            lock,
            clock=clock or RealClock(),
            decision_interval_ms=decision_interval_ms,
            command_fill_wait_ms=command_fill_wait_ms,
            migrated_from=opened.before,
            decision_stats_interval_ms=decision_stats_interval_ms,
            notices=tuple(opened.notices),
        )
        ledger.writer_options = dict(writer_options)
        try:
            ledger.ahead = AheadFile(ahead_path(lock.path))
        except BaseException:
            await ledger.close()
            raise
        writer.attach_ahead(ledger.ahead)
        return ledger

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the journal ---------------------------------------------------------------------
    @property
    def write_failure(self) -> LedgerError | None:
        """Why the writer stopped (a disk that refused a write), or None while it writes."""
        return self.writer.failed

    def on_write_failure(self, listener: Callable[[BaseException], None]) -> None:
        """Call `listener` when the writer stops on an error, from the writer's task: the
        engine halts at once, not at its next write."""
        self._failure_listeners.append(listener)

    def _writer_failed(self, exc: BaseException) -> None:
        for listener in self._failure_listeners:
            try:
                listener(exc)
            except Exception:  # a listener's bug must not hide the failure from the others
                logging.getLogger(__name__).exception("ledger failure listener failed")

    async def restart_writer(self) -> None:
        """After the writer stopped on an I/O error (a full disk): a new writer on the same file,
        continuing after the last committed event. Events queued but not committed when it
        failed are gone from it: the caller replays them. The writer lock is still held."""
        if self._closed:
            raise LedgerClosedError(f"{self.path}: the ledger is closed")
        old = self.writer
        if old.failed is None:
            return
        with contextlib.suppress(Exception):
            await old.close()
        self.writer = await LedgerWriter.open(
            self._lock.path, **self.writer_options, min_next_seq=old.last_seq + 1  # as at open
        )
        self.writer.on_failure = self._writer_failed
        if self.ahead is not None:
            self.writer.attach_ahead(self.ahead)

    def append(self, event: LedgerEvent) -> int:
        """Queue any event (fire and forget); returns its seq."""
        return self.writer.append(event)

    async def append_durable(self, event: LedgerEvent) -> int:
        """Queue an event and return its seq once it is committed."""
        return await self.writer.append_durable(event)

    async def flush(self, seq: int | None = None) -> None:
        """Wait until `seq` (default: everything queued so far) is committed."""
        await self.writer.wait_committed(seq)

    # -- one method per event kind -------------------------------------------------------
    def decision(self, decision: Decision, *, group_id: str | None = None) -> int | None:
        """Count a pipeline decision (`decision_stats`; call it for EVERY decision) and log it if
        the sampler keeps it (every intent is kept).

        Returns the seq of its `decision` event, or None when it was sampled out.
        """
        # Counted for DecisionStats, inline: this runs for every quote's decision.
        if decision.buy_venue is not None:
            if decision.ts_ms >= self._stats_until_ms:
                self._roll_decision_stats(decision.ts_ms)
            c = self._stats_pairs.get(decision.pair)
            if c is None:
                c = self._stats_pairs[decision.pair] = [0] * _COUNTS_LEN
            x = (decision.edge_bps - EDGE_MIN_BPS) * _BUCKETS_PER_BPS
            if 0.0 <= x < EDGE_BUCKETS:
                c[int(x)] += 1
            elif x >= EDGE_BUCKETS:
                c[_LAST_BUCKET] += 1
            elif x < 0.0:
                c[0] += 1
            else:
                c[_UNBINNED] += 1
            if decision.intent is not None:
                c[_INTENTS] += 1
        if not self.sampler.keep(decision):
            return None
        return self.writer.append(ev.decision(decision, self.clock.time_ms(), group_id))

    def group_opened(self, group: HedgeGroup) -> int:
        """A new hedge group with its intent and instruments (before any of its orders)."""
        return self.writer.append(ev.group_opened(group, self.clock.time_ms()))

    def group_state(self, group: HedgeGroup) -> int:
        """The group's current state, closing time, realized PnL and fees."""
        return self.writer.append(ev.group_state(group, self.clock.time_ms()))

    def group_closed(self, group_id: str, outcome: str, closed_ms: int | None, realized_pnl: Decimal,
                     fees: Decimal, note: str) -> int:
        """A group no longer in the engine's memory closed by closing orders (`ev.group_closed`)."""
        return self.writer.append(ev.group_closed(group_id, outcome, closed_ms, realized_pnl, fees, note,
                                                  self.clock.time_ms()))

    def mirror(self) -> None:
        """Write-ahead without waiting for SQLite (`write_ahead = "file"`, ledger.ahead): every
        event queued or being committed is in the write-ahead file when this returns. Raises
        OSError / LedgerError when it could not be written."""
        self.writer.mirror()

    async def order_created(self, order: Order) -> int:
        """Write-ahead: the order row with its client order id, committed before this returns.

        Call it before the request leaves the process; send only if it returned.
        """
        return await self.writer.append_durable(ev.order_created(order, self.clock.time_ms()))

    def order_state(self, order: Order) -> int:
        """The order's state, venue order id, updated time and filled quantity as they are now."""
        return self.writer.append(ev.order_state(order, self.clock.time_ms()))

    def fill(self, order: Order, fill: Fill) -> int:
        """One execution of `order`. A repeated (venue, venue_trade_id) is ignored by the ledger.

        Queued only: `await ledger.flush()` (once per venue update) makes it durable.
        """
        if fill.client_order_id != order.client_order_id:
            raise ValueError(
                f"fill {fill.venue}:{fill.venue_trade_id} is for {fill.client_order_id}, "
                f"not for order {order.client_order_id}"
            )
        return self.writer.append(ev.fill(fill, self.clock.time_ms(), order.group_id))

    def compensation(self, action: CompensationAction) -> int:
        """A compensation action, new or with a new outcome (one row per action_id)."""
        return self.writer.append(ev.compensation(action, self.clock.time_ms()))

    async def risk_event(
        self,
        kind: RiskKind,
        change: StateChange,
        *,
        breakers: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """kill / flatten / rearm / pause / resume / breaker and the trading state it left; durable,
        so a halted engine starts halted.

        `breakers`: the full breaker-state map now (name -> {state, since_ms, until_ms, detail},
        extra JSON scalars kept), so tripped breakers survive a restart (`recover().breakers`).
        ValueError, before anything is queued, if it is not JSON of that shape.
        """
        return await self.writer.append_durable(
            ev.risk_event(kind, change, self.clock.time_ms(), breakers)
        )

    def funding(self, venue: str, symbol: str, funding_ms: int, rate: Decimal, mark_price: Decimal,
                position: Decimal, amount: Decimal, ccy: str) -> int:
        """Funding booked at one funding time (`ledger.money` replays it into the equity); queued
        like a fill."""
        return self.writer.append(ev.funding(venue, symbol, funding_ms, rate, mark_price, position, amount, ccy,
                                             self.clock.time_ms()))

    def rate(self, r: RateInForce) -> int:
        """The rate in force for one currency changed (`ledger.money` converts with it from now
        on); queued like a fill."""
        return self.writer.append(ev.rate(r, self.clock.time_ms()))

    def net(self, n: Net) -> int:
        """Two settled groups set against each other on one book (`core.attribution.Net`;
        `ledger.money` books it in the group attribution); queued like a fill."""
        return self.writer.append(ev.net(n, self.clock.time_ms()))

    async def setting(self, change: SettingChange, state: TradingState) -> int:
        """A runtime setting changed (engine.steering): a `setting` risk event, durable."""
        return await self.writer.append_durable(ev.setting_change(change, state, self.clock.time_ms()))

    def dust(self, pair: str, qty: Decimal) -> int:
        """The DustBook's total for `pair` after a change (0 once folded away); queued like a
        fill (`flush` makes it durable). `recover().dust` gives the latest totals back."""
        return self.writer.append(ev.dust(pair, qty, self.clock.time_ms()))

    def _roll_decision_stats(self, next_ms: int) -> None:
        events = self.decision_stats.drain(self.clock.time_ms(), next_ms)
        self._stats_until_ms = self.decision_stats.until_ms
        for event in events:
            self.writer.append(event)

    def flush_decision_stats(self) -> list[int]:
        """Journal the current interval's decision counts now (close does it); returns the seqs."""
        return [self.writer.append(e) for e in self.decision_stats.drain(self.clock.time_ms())]

    # -- CommandStore (core.commands) ----------------------------------------------------
    async def save(self, command: Mt5Command) -> None:
        """Upsert one MT5 command with its fills; returns once committed."""
        await self.writer.append_durable(ev.mt5_command(command, self.clock.time_ms()))

    async def load_open(self) -> list[Mt5Command]:
        """Commands pending or delivered, and accepted ones whose fills are still short of their
        volume (updated within `command_fill_wait_ms`), oldest first."""
        await self.flush()
        since = self.clock.time_ms() - self.command_fill_wait_ms
        rows = await _to_the_end(_all(
            self._reader, "SELECT * FROM mt5_commands WHERE state IN ('pending', 'delivered') "
            "OR (state = 'accepted' AND updated_ms >= ?) ORDER BY created_ms, command_id", (since,)))
        commands: list[Mt5Command] = []
        for row in rows:
            cmd = _command_from_row(row)
            if cmd.is_open or cmd.filled_volume < cmd.volume:
                commands.append(cmd)
        return commands

    async def get_command(self, command_id: str, *, flush: bool = True) -> Mt5Command | None:
        """One command by id, terminal ones included (the queue's `CommandLookup`): after a
        restart a late ack or fill, or a query, must find a command that already finished.
        `flush=False` reads what is committed (the writer may have stopped)."""
        if flush:
            await self.flush()
        rows = await _to_the_end(_all(self._reader, "SELECT * FROM mt5_commands WHERE command_id = ?", (command_id,)))
        return None if not rows else _command_from_row(rows[0])

    async def unbooked_mt5_commands(self) -> list[Mt5Command]:
        """Commands of orders the ledger has finished that hold a deal `fills` lacks, oldest
        first: what a crash between the command row's commit and the fill's leaves (recovery
        asks about unfinished orders, whose own flow books their deals; nothing asks about a
        finished one). Read once at start (engine.mt5_late)."""
        await self.flush()
        rows = await _to_the_end(_all(
            self._reader,
            "SELECT c.* FROM mt5_commands c JOIN orders o ON o.client_order_id = c.client_order_id "
            f"WHERE c.fills <> '[]' AND o.state IN ({_FINISHED_ORDER_STATES}) "
            "AND EXISTS (SELECT 1 FROM json_each(c.fills) d WHERE NOT EXISTS (SELECT 1 FROM fills f "
            "WHERE f.venue = 'mt5' AND f.venue_trade_id = CAST(json_extract(d.value, '$.deal') AS TEXT))) "
            "ORDER BY c.created_ms, c.command_id"))
        return [_command_from_row(row) for row in rows]

    # -- recovery ------------------------------------------------------------------------
    async def recover(self) -> RecoveredState:
        """Open groups (with orders, fills, actions), non-terminal orders, open MT5 commands and
        the last trading state, as committed. A record SQLite or Python cannot read (damage
        quick_check does not see) is a LedgerCorruptError, not a traceback."""
        try:
            return await _to_the_end(self._recover())
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise read_error(self.path, exc) from None

    async def _recover(self) -> RecoveredState:
        await self.flush()
        db = self._reader
        state = RecoveredState(last_seq=self.writer.committed_seq)
        async with db.execute(
            "SELECT trading_state, reason, ts_ms FROM risk_events WHERE kind != 'setting' "
            "ORDER BY event_id DESC LIMIT 1"
        ) as cur:
            last = await cur.fetchone()
        if last is not None:
            state.trading_state = ev.trading_state_from(last["trading_state"])
            state.trading_reason = str(last["reason"])
            state.trading_since_ms = int(last["ts_ms"])
        state.breakers = await _recover_breakers(db, self.path)
        state.dust = await _recover_dust(db, self.path)

        placeholders = ",".join("?" * len(OPEN_GROUP_STATES))
        async with db.execute(
            f"SELECT * FROM hedge_groups WHERE state IN ({placeholders}) ORDER BY opened_at_ms, group_id",
            OPEN_GROUP_STATES,
        ) as cur:
            group_rows = list(await cur.fetchall())
        group_ids = ev.encode_payload({"ids": [r["group_id"] for r in group_rows]})
        async with db.execute(
            "SELECT group_id, payload FROM events WHERE kind = 'group_opened' "
            "AND group_id IN (SELECT value FROM json_each(?, '$.ids')) ORDER BY seq",
            (group_ids,),
        ) as cur:
            opened = {r["group_id"]: ev.decode_payload(r["payload"]) for r in await cur.fetchall()}

        async with db.execute(
            "SELECT * FROM orders WHERE group_id IN (SELECT value FROM json_each(?, '$.ids')) "
            f"UNION SELECT * FROM orders WHERE {OPEN_ORDERS_WHERE} "
            "ORDER BY created_at_ms, order_id",
            (group_ids,),
        ) as cur:
            order_rows = list(await cur.fetchall())
        order_ids = ev.encode_payload({"ids": [r["order_id"] for r in order_rows]})
        fills: dict[str, list[Fill]] = {}
        async with db.execute(
            "SELECT * FROM fills WHERE order_id IN (SELECT value FROM json_each(?, '$.ids')) ORDER BY fill_id",
            (order_ids,),
        ) as cur:
            for r in await cur.fetchall():
                fills.setdefault(r["order_id"], []).append(
                    Fill(
                        venue=r["venue"],
                        venue_trade_id=r["venue_trade_id"],
                        client_order_id=r["order_id"],
                        qty=Decimal(r["qty"]),
                        price=Decimal(r["price"]),
                        fee=Decimal(r["fee"]),
                        fee_ccy=r["fee_ccy"],
                        ts_ms=int(r["ts_ms"]),
                    )
                )
        orders_by_group: dict[str, list[Order]] = {}
        for r in order_rows:
            order = _order_from_row(r, fills.get(r["order_id"], []))
            if order.state not in ORDER_TERMINAL:
                state.open_orders.append(order)
            orders_by_group.setdefault(order.group_id, []).append(order)

        actions: dict[str, list[CompensationAction]] = {}
        async with db.execute(
            "SELECT * FROM compensation_actions WHERE group_id IN (SELECT value FROM json_each(?, '$.ids')) "
            "ORDER BY created_at_ms, action_id",
            (group_ids,),
        ) as cur:
            for r in await cur.fetchall():
                actions.setdefault(r["group_id"], []).append(
                    CompensationAction(
                        action_id=r["action_id"],
                        group_id=r["group_id"],
                        kind=CompensationKind(r["kind"]),
                        reason=r["reason"],
                        created_ms=int(r["created_at_ms"]),
                        outcome=r["outcome"],
                    )
                )

        for r in group_rows:
            payload = opened.get(r["group_id"])
            if payload is None:  # pragma: no cover - the projection row comes from this event
                raise LedgerError(f"{self.path}: group {r['group_id']} has no group_opened event")
            state.open_groups.append(
                HedgeGroup(
                    group_id=r["group_id"],
                    intent=ev.intent_from_payload(payload["intent"]),
                    instruments={
                        venue: ev.instrument_from_payload(inst) for venue, inst in payload["instruments"].items()
                    },
                    opened_ms=int(r["opened_at_ms"]),
                    state=GroupState(r["state"]),
                    orders=orders_by_group.get(r["group_id"], []),
                    actions=actions.get(r["group_id"], []),
                    closed_ms=int(r["closed_at_ms"] or 0),
                )
            )
        state.open_commands = await self.load_open()
        return state

    # -- reads ---------------------------------------------------------------------------
    @property
    def reader(self) -> aiosqlite.Connection:
        """A read-only connection (WAL: never blocks the writer), e.g. for `ledger.queries`."""
        return self._reader

    async def read(
        self,
        query: Callable[Concatenate[aiosqlite.Connection, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run a `ledger.queries` function on the reader: `await ledger.read(queries.summary)`.
        SQLite errors come back as LedgerError (LedgerCorruptError for damage). A cancelled
        caller does not stop the read (`_to_the_end`)."""
        try:
            return await _to_the_end(query(self._reader, *args, **kwargs))
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise read_error(self.path, exc) from None

    async def net_positions(self) -> dict[tuple[str, str], Decimal]:
        """Net filled quantity per (venue, symbol), venue units (+ long): committed fills only
        (flush the journal first); each read counts only the fills booked since the last."""
        return await self.read(self._positions.refresh)

    async def last_fill_id(self, venue: str) -> int:
        """The newest committed fill row's id on `venue` (0 for none)."""
        return await self.read(self._positions.last_fill_id, venue)

    async def position_at(self, venue: str, symbol: str, at_ms: int) -> Decimal:
        """Our position of `venue:symbol` at `at_ms` (`ledger.money.position_at`)."""
        return await self.read(self._positions.position_at, venue, symbol, at_ms)

    async def memory_settings(self) -> dict[str, dict[str, int]]:
        """Each connection's page cache and mmap size (`cache_size`, `mmap_size`): what bounds
        the ledger's C memory (docs/architecture.md, "Memory: what is kept")."""
        return {**await self.writer.memory_settings(), "reader": await memory_pragmas(self._reader)}

    def stats(self) -> dict[str, Any]:
        return {
            **self.writer.stats(),
            "decisions_kept": self.sampler.kept,
            "decisions_suppressed": self.sampler.suppressed,
        }

    # -- lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        """Commit everything queued, close the connections, release the writer lock."""
        if self._closed:
            return
        self._closed = True
        # A writer that already failed raised its error to whoever waited: close anyway.
        with contextlib.suppress(LedgerError):
            self.flush_decision_stats()
        try:
            # The reader first: the last connection to close checkpoints and removes the WAL,
            # which a read-only connection cannot do.
            await self._reader.close()
        finally:
            try:
                await self.writer.close()
                ahead = self.ahead
                if ahead is not None:
                    if self.writer.failed is None and self.writer.queued == 0:
                        with contextlib.suppress(OSError):
                            ahead.truncate()  # all of it is committed
                    ahead.close()
            finally:
                self._lock.release()


@dataclass(slots=True)
class _Opened:
    shown: Path  # the path as given (`~` expanded), for messages
    lock: WriterLock  # its .path is the resolved database path
    before: int  # the schema version before migrating
    notices: list[str]


def _prepare_locked(path: Path) -> _Opened:
    """Blocking part of `Ledger.open`: private directory, writer lock, then check (integrity
    included), tighten the file modes and migrate. The lock comes first, so nothing reads a
    file another engine is writing through another name."""
    shown = path.expanduser()
    if shown.is_dir():
        prepare(shown)  # raises the clear "is a directory" error
    try:
        real = shown.resolve()  # symlinks, relative paths and `..` name one file
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise LedgerError(f"{shown}: cannot resolve the ledger's path: {exc}") from exc
    make_private_dirs(real.parent, shown)
    notices: list[str] = []
    lock = WriterLock(real)
    try:
        lock.acquire(shown)
    except OSError as exc:
        raise LedgerError(f"{shown}: cannot lock the ledger: {exc.strerror or exc}") from exc
    try:
        if lock.links > 1:
            notices.append(
                f"{shown}: the ledger file has {lock.links} names (hard links); a second engine is "
                f"refused under any of them, but read it only as {real}: SQLite keeps a write-ahead "
                f"log per name, so a reader through another name sees stale data"
            )
        before, _after = prepare(real, recognized=lambda: notices.extend(tighten(ledger_files(real))))
        conn = sqlite3.connect(real, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            _replayed, replay_notices = replay_ahead(conn, ahead_path(real), ahead_path(shown))
        finally:
            conn.close()
        notices.extend(replay_notices)
    except BaseException:
        lock.release()
        raise
    return _Opened(shown, lock, before, notices)


async def _recover_breakers(db: aiosqlite.Connection, path: Path) -> dict[str, dict[str, Any]]:
    """The breaker map of the latest risk event that carried one (walks risk_events backwards)."""
    async with db.execute(
        "SELECT e.seq, json_extract(e.payload, '$.breakers') AS breakers FROM risk_events r "
        "JOIN events e ON e.seq = r.event_id WHERE json_type(e.payload, '$.breakers') IS NOT NULL "
        "ORDER BY r.event_id DESC LIMIT 1"
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return {}
    try:
        return ev.breakers_from_payload(ev.decode_json(row["breakers"]))
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"{path}: risk event {row['seq']} has an unreadable breaker map: {exc}") from None


async def _recover_dust(db: aiosqlite.Connection, path: Path) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    async with db.execute("SELECT pair, qty, event_id FROM dust ORDER BY pair") as cur:
        for row in await cur.fetchall():
            try:
                qty = ev.decimal_from(row["qty"], f"dust of {row['pair']}")
            except ValueError as exc:
                raise LedgerError(f"{path}: event {row['event_id']}: {exc}") from None
            if qty != 0:
                out[str(row["pair"])] = qty
    return out


_FINISHED_ORDER_STATES = ", ".join(f"'{state.value}'" for state in sorted(ORDER_TERMINAL))


def _command_from_row(row: Any) -> Mt5Command:
    """An `mt5_commands` row (fills as JSON text) back to the domain object."""
    payload = dict(row)
    payload["fills"] = ev.decode_json(row["fills"])
    return ev.command_from_payload(payload)


def _order_from_row(r: Any, fills: list[Fill]) -> Order:
    order = Order(
        client_order_id=r["client_order_id"],
        group_id=r["group_id"] or "",
        venue=r["venue"],
        symbol=r["symbol"],
        side=r["side"],
        qty=Decimal(r["qty"]),
        price=Decimal(r["price"]),
        purpose=OrderPurpose(r["purpose"]),
        created_ms=int(r["created_at_ms"]),
        state=OrderState(r["state"]),
        venue_order_id=r["venue_order_id"],
        updated_ms=int(r["updated_at_ms"]),
    )
    for f in fills:
        order.fills.append(f)
        order.filled_qty += f.qty
        order.notional += f.qty * f.price
        order.fees += f.fee
    return order


def _ledger_is_a_command_store(ledger: Ledger) -> CommandStore:
    """Never called: mypy checks here that Ledger implements the core port."""
    return ledger


async def _to_the_end(read: Awaitable[T]) -> T:
    """A read on the reader connection, run to its end even when the caller is cancelled.

    aiosqlite's worker thread holds the last statement it ran until the next one: one whose
    caller was cancelled mid-read (a reconciliation pass's timeout, a screen's worker replaced)
    stayed open, and every later read on that connection saw the older snapshot, missing fills
    already committed (a settlement charged on a stale position, a fill booked during a venue's
    read not noticed). Shielded, the read finishes and closes its cursor; its outcome is
    retrieved even when nobody awaits it any more."""
    task = asyncio.ensure_future(read)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
