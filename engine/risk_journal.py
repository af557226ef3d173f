"""RiskJournal: every trading-state change, said once, journaled once, kept for the risk screen.

A kill, a flatten, a rearm and every breaker trip or release change what the engine may do;
a restart must come back in the same state, so each is a durable `risk_event` carrying every
breaker's state. The operator actions, the breaker loop and recovery all go through here, so
a state change reads the same in the log, the ledger and the risk screen. A hold (recovery
pausing the gate until its groups are finished) survives breakers that end their own pause.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any

from core.breakers import BreakerChange
from core.clock import Clock
from core.models import TradingState
from core.ports import Journal, RiskKind
from core.risk import RiskGate, StateChange
from engine.events import EngineEvent, EventLog, Level
from engine.snapshot import RiskEventRow

RISK_LOG_ROWS = 50  # risk events kept in memory for the risk screen (all are in the ledger)


class RiskJournal:
    def __init__(self, gate: RiskGate, clock: Clock, events: EventLog) -> None:
        self._gate = gate
        self._clock = clock
        self._events = events
        self._journal: Journal | None = None
        self._rows: deque[RiskEventRow] = deque(maxlen=RISK_LOG_ROWS)
        self._seq = itertools.count(1)
        self._pending: set[asyncio.Task[Any]] = set()
        self._hold: str | None = None

    def attach(self, journal: Journal | None) -> None:
        self._journal = journal

    def rows(self) -> tuple[RiskEventRow, ...]:
        """The most recent state changes, newest first (the risk screen)."""
        return tuple(self._rows)

    # -- a pause that only its owner ends (recovery) -----------------------------------
    def hold(self, reason: str) -> None:
        """Pause the gate until `release(reason)`; a breaker ending its own pause keeps it."""
        self._hold = reason
        self._gate.pause(reason)

    def release(self, reason: str, why: str) -> None:
        if self._hold != reason:
            return
        self._hold = None
        if self._gate.reason == reason:
            self._gate.resume(why)

    @property
    def holding(self) -> str | None:
        return self._hold

    def note(self, kind: RiskKind, ts_ms: int, text: str) -> None:
        """A row for the risk screen only: an event journaled elsewhere (a runtime setting,
        engine.steering), with the trading state it left unchanged."""
        self._rows.appendleft(RiskEventRow(f"r{next(self._seq)}", ts_ms, kind, text, str(self._gate.state)))

    # -- journal ---------------------------------------------------------------------
    def record(self, kind: RiskKind, change: StateChange) -> asyncio.Task[int] | None:
        """Journal a state change with every breaker's state, without delaying the caller
        (await the returned task for durability); kept for the risk screen at once."""
        self._rows.appendleft(RiskEventRow(f"r{next(self._seq)}", change.ts_ms, kind, change.reason,
                                           str(change.state)))
        if self._journal is None:
            return None
        task = asyncio.get_running_loop().create_task(
            self._journal.risk_event(kind, change, breakers=self._gate.breakers.to_json())
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(self._failed)
        return task

    def _failed(self, task: asyncio.Task[int]) -> None:
        """A risk event that did not reach the ledger: said loudly (a restart would not know)."""
        if task.cancelled() or task.exception() is None:
            return
        self._events.emit(EngineEvent(self._clock.time_ms(), "error",
                                      f"risk event NOT journaled: {task.exception()!r}", "error"))

    async def state(self, kind: RiskKind, change: StateChange, text: str, level: Level) -> None:
        """An operator's state change: on the log now, durable in the ledger before returning."""
        self._events.emit(EngineEvent(change.ts_ms, "state", text, level))
        task = self.record(kind, change)
        if task is not None:
            await task

    def released_breakers(self, ts_ms: int) -> None:
        """Journal the breakers a rearm attempt released (their state must survive a restart)."""
        for released in self._gate.last_released:
            self.record("breaker", StateChange(ts_ms, self._gate.state, released.reason))

    async def drain(self) -> None:
        """Wait for every state change still being journaled (at stop)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    # -- breakers --------------------------------------------------------------------
    def apply_breakers(self, changes: list[BreakerChange]) -> None:
        """Apply breaker trips/releases to the gate; each is a durable `breaker` risk event."""
        for change, state in self._gate.apply(changes):
            level: Level = "error" if change.tripped and change.effect == "halt" else "warn"
            self._events.emit(EngineEvent(self._clock.time_ms(), "breaker", f"breaker {change.reason}", level,
                                          {"breaker": change.name, "tripped": change.tripped}))
            ts_ms = state.ts_ms if state is not None else self._clock.time_ms()
            self.record("breaker", StateChange(ts_ms, self._gate.state, change.reason))
        if self._hold is not None and self._gate.state is TradingState.ACTIVE:
            self._gate.pause(self._hold)  # a pause that ended must not end the hold
