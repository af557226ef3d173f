"""The audit record of an operator's manual action, made durable before the action is done.

Closing a group and cancelling quarantined orders send requests no strategy decided: the
ledger must say who asked, why and what was about to leave before anything does. With a
ledger that cannot write (or a configured ledger that is not open) the action is refused:
nothing is sent that the ledger could not explain afterwards. Without any ledger (a demo run
with none configured) the record is only the event log's line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.clock import Clock
from engine.control import ControlRefused
from engine.events import EngineEvent, EventLog
from engine.journal import GuardedJournal


class OperatorAudit:
    def __init__(self, journal: Callable[[], GuardedJournal | None], events: EventLog, clock: Clock, *,
                 ledger_configured: bool) -> None:
        self._journal = journal
        self._events = events
        self._clock = clock
        self._ledger_configured = ledger_configured

    async def record(self, action: str, target: str, actor: str, reason: str, detail: Mapping[str, Any],
                     *, group_id: str | None = None) -> None:
        """Journal (committed) and log one action; raises ControlRefused when it could not be
        journaled, and then the caller must not act."""
        journal = self._journal()
        if journal is not None:
            if journal.error is not None:
                raise ControlRefused(f"{action} refused: the ledger cannot write ({journal.error}); nothing was sent")
            if await journal.operator_audit(action, target, actor, reason, detail, group_id=group_id) is None:
                raise ControlRefused(f"{action} refused: the audit record could not be written "
                                     f"({journal.error or 'ledger down'}); nothing was sent")
        elif self._ledger_configured:
            raise ControlRefused(f"{action} refused: the ledger is not open; nothing was sent")
        data: dict[str, object] = {"action": action, "target": target, "actor": actor}
        if group_id is not None:
            data["group_id"] = group_id
        self._events.emit(EngineEvent(self._clock.time_ms(), "operator",
                                      f"{action} {target} by {actor}: {reason}", "warn", data))
