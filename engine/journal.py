"""GuardedJournal: the ledger as execution writes it, safe when the disk is not.

A write that fails (a full disk, an I/O error) must stop trading, not the engine: the first
failure halts at once with the reason `ledger: <error>` (through `on_failure`), and nothing
raises into the quote path or an order's flow. What could not be written, and what was queued
but never committed when the writer stopped, is kept in memory in order and written again
once a new writer can commit (`retry()`, every `retry_s` while down), so a broken hedge is
still repaired and its story still reaches the ledger.

One call does raise: the write-ahead of an ENTRY order (`JournalUnavailable`), so no position
is ever opened without its row safe from a crash: committed (`write_ahead="commit"`), or
queued and mirrored to the write-ahead file (`write_ahead="file"`, the default; ledger.ahead).
Orders that repair or close exposure (compensation, flatten) go out with their row held in
memory: leaving a leg naked is the worse risk.
Events written late carry the objects' state when written (a group's final state, not each
step). Decisions are a sampled signal log and are not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

from core.attribution import Net
from core.commands import Mt5Command
from core.currency import RateInForce
from core.hedge import HedgeGroup
from core.models import CompensationAction, Decision, Fill, Order, OrderPurpose, TradingState
from core.ports import JournalUnavailable, RiskKind
from core.risk import StateChange
from core.runtime_settings import SettingChange
from ledger import events as ev
from ledger.audit import audit_event
from ledger.errors import EventRejectedError
from ledger.events import LedgerEvent
from ledger.ledger import Ledger

Replay = Callable[[], int]  # queues one event again on the current writer; returns its seq
DEFAULT_RETRY_S = 5.0
WriteAhead = Literal["file", "commit"]


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class GuardedJournal:
    """Implements `core.ports.Journal` over a Ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        on_failure: Callable[[str], None],
        on_recovered: Callable[[int], None] | None = None,
        retry_s: float = DEFAULT_RETRY_S,
        write_ahead: WriteAhead = "file",
    ) -> None:
        self._ledger = ledger
        self._write_ahead = write_ahead
        self._on_failure = on_failure
        self._on_recovered = on_recovered
        self._retry_s = retry_s
        self._unconfirmed: deque[tuple[int, Replay]] = deque()  # queued, not yet known committed
        self._backlog: list[Replay] = []  # not written, in order
        self._error: str | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._retrying = asyncio.Lock()  # one retry at a time: the loop's and the last one at stop
        self.failures = 0  # times the journal went down this run
        self.dropped_decisions = 0
        ledger.on_write_failure(self._writer_failed)

    # -- state -------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why the journal cannot write now (None while it writes)."""
        return self._error

    @property
    def unwritten(self) -> int:
        """Events held in memory until the ledger can write again."""
        return len(self._backlog)

    def _fail(self, exc: BaseException, *, writer_alive: bool = False) -> None:
        message = _short(exc)
        first = self._error is None
        self._error = message
        if not writer_alive or self._ledger.writer.failed is not None:
            self._hold_uncommitted()
        if first:
            self.failures += 1
            self._start_retrying()  # first: a failing listener must not stop the retries
            self._on_failure(message)

    def _hold_uncommitted(self) -> None:
        """The writer stopped: whatever was queued after its last commit is lost with it and is
        kept here, in order, ahead of anything held since."""
        committed = self._ledger.writer.committed_seq
        self._backlog[:0] = [r for seq, r in self._unconfirmed if seq > committed]
        self._unconfirmed.clear()

    def _writer_failed(self, exc: BaseException) -> None:
        """The writer stopped in its own task (a batch failed): said at once, not at the next call.
        Also when the journal was already down for its write-ahead file only: the rows that
        were still going to commit must now be held (they were sent orders' rows)."""
        if self._error is None:
            self._fail(exc)
        else:
            self._hold_uncommitted()

    def _confirmed(self) -> None:
        committed = self._ledger.writer.committed_seq
        unconfirmed = self._unconfirmed
        while unconfirmed and unconfirmed[0][0] <= committed:
            unconfirmed.popleft()

    def _queued(self, replay: Replay) -> int:
        if self._error is not None:
            self._backlog.append(replay)
            return -1
        try:
            seq = replay()
        except (EventRejectedError, ValueError):
            return -1  # this one event is invalid (a producer's bug); the ledger writes on
        except Exception as exc:
            self._fail(exc)
            self._backlog.append(replay)
            return -1
        self._unconfirmed.append((seq, replay))
        self._confirmed()
        return seq

    # -- the Journal port ----------------------------------------------------------------
    def decision(self, decision: Decision, *, group_id: str | None = None) -> int | None:
        if self._error is not None:
            self.dropped_decisions += 1
            return None
        try:
            return self._ledger.decision(decision, group_id=group_id)
        except Exception as exc:
            self._fail(exc)
            self.dropped_decisions += 1
            return None

    def group_opened(self, group: HedgeGroup) -> int:
        return self._queued(lambda: self._ledger.group_opened(group))

    def group_state(self, group: HedgeGroup) -> int:
        return self._queued(lambda: self._ledger.group_state(group))

    def group_closed(self, group_id: str, outcome: str, closed_ms: int | None, realized_pnl: Decimal,
                     fees: Decimal, note: str) -> int:
        return self._queued(lambda: self._ledger.group_closed(group_id, outcome, closed_ms, realized_pnl, fees,
                                                              note))

    def order_state(self, order: Order) -> int:
        return self._queued(lambda: self._ledger.order_state(order))

    def fill(self, order: Order, fill: Fill) -> int:
        return self._queued(lambda: self._ledger.fill(order, fill))

    def compensation(self, action: CompensationAction) -> int:
        return self._queued(lambda: self._ledger.compensation(action))

    def funding(self, venue: str, symbol: str, funding_ms: int, rate: Decimal, mark_price: Decimal,
                position: Decimal, amount: Decimal, ccy: str) -> int:
        return self._queued(lambda: self._ledger.funding(venue, symbol, funding_ms, rate, mark_price, position,
                                                         amount, ccy))

    def rate(self, r: RateInForce) -> int:
        return self._queued(lambda: self._ledger.rate(r))

    def dust(self, pair: str, qty: Decimal) -> int:
        return self._queued(lambda: self._ledger.dust(pair, qty))

    def net(self, n: Net) -> int:
        return self._queued(lambda: self._ledger.net(n))

    def _track(self, make: Callable[[], LedgerEvent]) -> int | None:
        """Queue one event and remember it until it is committed (so a failure puts it back in
        order, and a cancelled caller does not lose it). None when the journal is, or just
        went, down (the event is held). EventRejectedError/ValueError: invalid."""
        replay: Replay = lambda: self._ledger.append(make())  # noqa: E731
        if self._error is not None:
            self._backlog.append(replay)
            return None
        try:
            seq = replay()
        except (EventRejectedError, ValueError):
            raise
        except Exception as exc:
            self._fail(exc)
            self._backlog.append(replay)
            return None
        self._unconfirmed.append((seq, replay))
        return seq

    async def _durable(self, make: Callable[[], LedgerEvent], *, withdraw: bool = False) -> int | None:
        """One event, committed before this returns; None when it could not be. `withdraw`:
        an event that could not be committed is not held for later either (the caller does
        not do what it records, so it must never appear in the ledger afterwards)."""
        held = len(self._backlog)
        seq = self._track(make)
        if seq is None:
            if withdraw and len(self._backlog) > held:
                self._backlog.pop()  # the one just held
            return None
        mine = self._unconfirmed[-1][1]
        try:
            await self._ledger.flush(seq)
        except EventRejectedError:
            raise
        except Exception as exc:
            self._fail(exc)  # restores this event (seq > committed) into the backlog, in order
            if withdraw:
                if self._ledger.writer.committed_seq >= seq:
                    return seq  # committed before the failure: durable after all
                self._backlog[:] = [r for r in self._backlog if r is not mine]
            return None
        self._confirmed()
        return seq

    async def order_created(self, order: Order) -> int:
        """The write-ahead. An entry is refused when it cannot be durable; an order that
        repairs or closes exposure goes out with its row kept for later. A row the ledger
        refuses (a bug) stops any order."""
        try:
            if self._write_ahead == "file":
                seq = self._ahead(lambda: ev.order_created(order, self._ledger.clock.time_ms()))
            else:
                seq = await self._durable(lambda: ev.order_created(order, self._ledger.clock.time_ms()))
        except (EventRejectedError, ValueError) as exc:
            raise JournalUnavailable(f"ledger refused the order's row: {exc}") from None
        if seq is not None:
            return seq
        if order.purpose is OrderPurpose.ENTRY:
            raise JournalUnavailable(f"ledger: {self._error}")
        return -1

    def _ahead(self, make: Callable[[], LedgerEvent]) -> int | None:
        """Queue one event and mirror the writer's uncommitted events to the write-ahead file.
        None when that could not be done (the journal is, or just went, down)."""
        seq = self._track(make)
        if seq is None:
            return None
        try:
            self._ledger.mirror()
        except Exception as exc:  # OSError (a full disk), LedgerError: the row is not safe
            # The writer still commits what it holds; only the file failed.
            self._fail(exc, writer_alive=True)
            return None
        self._confirmed()
        return seq

    async def risk_event(
        self, kind: RiskKind, change: StateChange, *, breakers: Mapping[str, Mapping[str, Any]] | None = None
    ) -> int:
        # A bad breaker map is a ValueError before anything is queued: the caller's bug.
        event = ev.risk_event(kind, change, self._ledger.clock.time_ms(), breakers)
        seq = await self._durable(lambda: event)
        return -1 if seq is None else seq

    async def operator_audit(self, action: str, target: str, actor: str, reason: str,
                             detail: Mapping[str, Any], *, group_id: str | None = None) -> int | None:
        """An operator's manual action (ledger.audit), committed before it is done; None when it
        could not be (the caller then does not act)."""
        event = audit_event(action, target, actor, reason, detail, self._ledger.clock.time_ms(), group_id=group_id)
        return await self._durable(lambda: event)

    async def setting(self, change: SettingChange, state: TradingState) -> int:
        """A runtime setting's audit record, durable; -1 when the ledger cannot write (the
        caller, engine.steering, then refuses the change, so the record is withdrawn: never
        written later for a change that was not made)."""
        seq = await self._durable(lambda: ev.setting_change(change, state, self._ledger.clock.time_ms()),
                                  withdraw=True)
        return -1 if seq is None else seq

    async def flush(self, seq: int | None = None) -> None:
        if self._error is not None:
            return
        try:
            await self._ledger.flush(seq)
        except EventRejectedError:
            pass  # one producer's bad event: refused alone, the writer goes on
        except Exception as exc:
            self._fail(exc)
            return
        self._confirmed()

    # -- the MT5 command store (mt5_bridge's CommandStore) -------------------------------------
    async def save(self, command: Mt5Command) -> None:
        """A command's new state: durable when the ledger writes, else held like any event
        (the queue goes on in memory; the EA's acks and fills are not refused)."""
        with contextlib.suppress(EventRejectedError, ValueError):  # one bad row: the queue goes on
            await self._durable(lambda: ev.mt5_command(command, self._ledger.clock.time_ms()))

    async def load_open(self) -> list[Mt5Command]:
        return await self._ledger.load_open()

    async def get_command(self, command_id: str) -> Mt5Command | None:
        """Committed state first made current by a flush; if that cannot be, what is committed."""
        if self._error is None:
            try:
                return await self._ledger.get_command(command_id)
            except Exception as exc:
                if self._ledger.write_failure is not None:
                    self._fail(exc)
        return await self._ledger.get_command(command_id, flush=False)

    # -- coming back ---------------------------------------------------------------------
    def _start_retrying(self) -> None:
        if self._retry_s <= 0 or (self._retry_task is not None and not self._retry_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._retry_task = loop.create_task(self._retry_loop(), name="ledger-retry")

    async def _retry_loop(self) -> None:
        while self._error is not None:
            await asyncio.sleep(self._retry_s)
            await self.retry()

    async def retry(self) -> bool:
        """Try a new writer and write what is held, in order; True once everything is durable.
        Never raises. One at a time. Trading stays halted either way: only an operator rearms it."""
        async with self._retrying:
            return await self._retry()

    async def _retry(self) -> bool:
        if self._error is None:
            return True
        try:
            if self._ledger.writer.failed is not None:
                self._hold_uncommitted()  # belt and braces: nothing the old writer held is lost
            await self._ledger.restart_writer()
            while self._backlog:
                batch = list(self._backlog)
                for replay in batch:
                    try:
                        replay()
                    except (EventRejectedError, ValueError):
                        continue  # written before the failure (a duplicate row), or never valid
                with contextlib.suppress(EventRejectedError):
                    await self._ledger.flush()
                # Committed: a commit is stronger than the file, so these are done even if the
                # write-ahead file still fails below (not replayed again at the next retry).
                del self._backlog[: len(batch)]  # more may have arrived while writing
            if self._write_ahead == "file":
                self._ledger.mirror()  # the write-ahead file takes writes again (else: still down)
        except Exception as exc:  # sqlite3.Error, OSError, LedgerError: still cannot write
            self._error = _short(exc)
            return False
        written = self._ledger.writer.committed_seq
        self._error = None
        if self._on_recovered is not None:
            self._on_recovered(written)
        return True

    async def close(self) -> None:
        """Stop retrying (the last attempt is the caller's)."""
        task, self._retry_task = self._retry_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
