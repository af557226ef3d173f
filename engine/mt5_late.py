"""MT5 deals the EA reports on the command of an order this engine no longer remembers.

The EA reports deals on commands (mt5_bridge.queue); each deal new to the queue reaches
`heard`, also one on a command the queue read back from the ledger (finished long ago, or
before a restart). For an order the orchestrator still remembers, its own late-fill path
applies it (the gateway's answer carries the command's deals). For a forgotten one (a group
past `RECENT_GROUPS_*`, a loose order forgotten, any order of a run before) nothing did: the
deal stayed in its command's row (`mt5_commands`), outside `fills`, so neither the running
books nor the ledger's money had it. Here each deal of the command the ledger lacks is
journaled as a fill (`MT5Gateway.fills`: trade id = the deal ticket) of the order as its
ledger row has it, and handed to `late_fill` with it, which applies it to the running books
and halts with the alert, as reconciliation does for the other venues' fills.

Never twice: the queue hears a deal once (a re-report of one it holds, in memory or in the
command's row, is a duplicate); the deals are compared with the ledger under one lock after
the journal's queue is committed (two deals of one command heard back to back: each once);
the ledger keeps one row per (venue, trade id); the running books apply a deal once
(`HedgeOrchestrator._untracked_fills`); a restart reads the one ledger row. Nothing is booked
while the ledger cannot write (a deal it lacks may be held in the journal's backlog, booked
through the order's own flow): the command is kept (`deferred`, newest `DEFERRED_KEPT`) and
compared again when the ledger writes again (`recovered`, from the journal's recovery hook),
as the journal's backlog is written by then: the EA's re-report would be a duplicate for the
queue, so without this the deal would never be booked. Nor for an order the ledger does not
know (quarantined). In every case trading halts, as before, at once (before the ledger is
read: no group starts in between); `late_fill`'s work makes the halt durable in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.clock import Clock
from core.commands import Mt5Command
from core.models import Fill
from engine.events import EngineEvent, EventLog, Level
from engine.journal import GuardedJournal
from engine.orchestrator import HedgeOrchestrator
from engine.reconcile import Reconciler, order_of_fill
from ledger import queries
from ledger.ledger import Ledger

__all__ = ["Mt5LateDeals"]

log = logging.getLogger(__name__)

# Commands whose deals wait for the ledger to write again. Bounded (a ledger down for long
# while the EA keeps reporting): beyond it the oldest is dropped with an error event naming
# its deals, which are then not booked here (the MT5 position comparison still halts on them).
DEFERRED_KEPT = 1_000


class Mt5LateDeals:
    """`heard(command)` for every new deal (Runtime._mt5_fill); `fills` converts a command's
    deals (`MT5Gateway.fills`)."""

    def __init__(
        self,
        orchestrator: HedgeOrchestrator,
        fills: Callable[[Mt5Command], list[Fill]],
        events: EventLog,
        clock: Clock,
        *,
        ledger: Callable[[], Ledger | None],
        journal: Callable[[], GuardedJournal | None],
        reconciler: Callable[[], Reconciler | None] = lambda: None,
    ) -> None:
        self._orch = orchestrator
        self._fills = fills
        self._events = events
        self._clock = clock
        self._ledger = ledger
        self._journal = journal
        self._reconciler = reconciler
        self._lock = asyncio.Lock()
        self.booked = 0  # deals journaled here
        # Commands heard while the ledger could not write, by command id, oldest first.
        self.deferred: dict[str, Mt5Command] = {}

    def heard(self, command: Mt5Command) -> Awaitable[None] | None:
        """The work a new deal on `command` calls for (None: its group's flow applies it)."""
        if self._orch.remembers(command.group_id, command.client_order_id):
            return self._orch.late_fill(command.group_id, command.client_order_id)
        # Halted now, not after the ledger is read below: no group starts in between.
        self._orch.halt_at_once(f"fill for untracked order {command.client_order_id}")
        return self._forgotten(command)

    async def at_start(self) -> int:
        """Book, before a restart replays the money, the deals the ledger's command rows hold
        that `fills` lacks, of orders it has finished: a crash between the command row's
        commit and the fill's (or a restart while deals were `deferred`) left them out, and
        the EA will not report them again (its report was answered). Each is journaled as
        a fill of its order as the ledger has it, said, and trading halts durably, as when
        the deal was heard. Unfinished orders are left to recovery, which asks about them.
        Returns the deals booked."""
        ledger, journal = self._ledger(), self._journal()
        if ledger is None or journal is None:
            return 0
        commands = await ledger.unbooked_mt5_commands()
        if not commands:
            return 0
        owners = await ledger.read(queries.known_orders, [c.client_order_id for c in commands])
        booked = 0
        for command in commands:
            fills = self._fills(command)
            known = await ledger.read(queries.known_trades, "mt5", [f.venue_trade_id for f in fills])
            for f in fills:
                if f.venue_trade_id in known:
                    continue
                order = order_of_fill(f, owners.get(f.client_order_id))
                if isinstance(order, str):  # the query joins on the order: another venue's id
                    self._say(f"mt5: quarantined {f.client_order_id}: {order} (not booked)", "warn", command)
                    continue
                journal.fill(order, f)
                booked += 1
                self._say(f"mt5: deal {f.venue_trade_id} of {f.client_order_id} ({f.qty} @ {f.price}) on command "
                          f"{command.command_id} was missing from the ledger's fills at start: booked",
                          "warn", command)
        if booked:
            await self._orch.halt(f"{booked} MT5 deal(s) missing from the ledger at start")
        await journal.flush()
        self.booked += booked
        return booked

    def recovered(self) -> Awaitable[None] | None:
        """The ledger writes again (its backlog written): the work that compares each deferred
        command's deals with the ledger again and books the missing ones (None: none waits).
        Idempotent with any other pass: under the same lock, after a flush, against the ledger."""
        if not self.deferred:
            return None
        commands = list(self.deferred.values())
        self.deferred.clear()
        return self._again(commands)

    async def _again(self, commands: list[Mt5Command]) -> None:
        for command in commands:  # the alert and halt came when each was heard: not again here
            await self._forgotten(command, again=True)

    def _defer(self, command: Mt5Command) -> None:
        """Kept until the ledger writes again; a later report on the same command (more deals)
        replaces it. The oldest goes beyond `DEFERRED_KEPT`, said."""
        held = self.deferred.get(command.command_id)
        if held is not None:
            if len(command.fills) >= len(held.fills):
                self.deferred[command.command_id] = command
            return
        if len(self.deferred) >= DEFERRED_KEPT:
            oldest = self.deferred.pop(next(iter(self.deferred)))
            deals = ", ".join(str(f.deal) for f in oldest.fills)
            self._say(f"mt5: deal(s) {deals} of {oldest.client_order_id} (command {oldest.command_id}) not booked: "
                      f"more than {DEFERRED_KEPT} commands wait for the ledger to write", "error", oldest,
                      kind="error")
        self.deferred[command.command_id] = command

    async def _forgotten(self, command: Mt5Command, *, again: bool = False) -> None:
        works: list[Awaitable[None]] = []
        try:
            async with self._lock:
                works = await self._journal_missing(command, again)
        except Exception as exc:  # a ledger read failed: nothing booked, the halt still comes
            log.exception("mt5: deals of %s not booked", command.client_order_id)
            self._say(f"mt5: deals of {command.client_order_id} (command {command.command_id}) not booked: "
                      f"{exc!r}", "error", command, kind="error")
        if not works and not again:
            work = self._orch.late_fill(command.group_id, command.client_order_id)
            works = [work] if work is not None else []
        for work in works:
            await work

    async def _journal_missing(self, command: Mt5Command, again: bool = False) -> list[Awaitable[None]]:
        """Journal the command's deals the ledger lacks, each handed to `late_fill` with its
        order as the ledger has it (nothing awaited between the two); their work."""
        ledger, journal = self._ledger(), self._journal()
        if ledger is None or journal is None:
            if again:  # the ledger came back only as it was closed (the last retry at stop)
                self._say(f"mt5: deals of {command.client_order_id} (command {command.command_id}) not booked: "
                          "the ledger was closed", "error", command, kind="error")
            return []
        await journal.flush()  # a deal journaled a moment ago is committed: seen below
        if journal.error is not None:
            self._defer(command)
            self._say(f"mt5: deals of {command.client_order_id} not booked while the ledger cannot write "
                      f"({journal.error}): compared again when it writes", "warn", command)
            return []
        fills = self._fills(command)
        known = await ledger.read(queries.known_trades, "mt5", [f.venue_trade_id for f in fills])
        missing = [f for f in fills if f.venue_trade_id not in known]
        if not missing:
            return []
        owners = await ledger.read(queries.known_orders, [command.client_order_id])
        works: list[Awaitable[None]] = []
        for f in missing:
            order = order_of_fill(f, owners.get(f.client_order_id))
            if isinstance(order, str):
                reconciler = self._reconciler()
                if reconciler is not None:  # listed with reconciliation's, and said once
                    reconciler.quarantine("mt5", f.client_order_id, order)
                else:
                    self._say(f"mt5: quarantined {f.client_order_id}: {order} (not booked)", "warn", command)
                continue
            work = self._orch.late_fill(order.group_id, order.client_order_id, (order, f))
            if work is None:
                continue  # remembered again (its flow applies it): not journaled here
            journal.fill(order, f)
            self.booked += 1
            self._say(f"mt5: deal {f.venue_trade_id} of {f.client_order_id} ({f.qty} @ {f.price}), reported on "
                      f"command {command.command_id}, was missing from the ledger: booked", "warn", command)
            works.append(work)
        return works

    def _say(self, text: str, level: Level, command: Mt5Command, *, kind: str = "reconcile") -> None:
        """Said as reconciliation says a fill it books or an order it quarantines (the same
        alerts: engine.alerts)."""
        self._events.emit(EngineEvent(self._clock.time_ms(), kind, text, level,
                                      {"venue": "mt5", "order": command.client_order_id}))
