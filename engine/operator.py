"""Operator: the engine's side of `OperatorControl` (kill, flatten, rearm, pause, resume).

The TUI keys, `/api/*` and the CLI all land here, so an action means the same whichever way
it arrives. Kill flips the gate before its first await (the very next decision is refused),
then cancels the entries of groups with nothing filled. Flatten halts, lets groups in flight
settle, closes every venue and ends halted; while it runs nothing may re-arm, pause or resume
the engine. Every change is journaled (durably, before the action answers) with the breakers'
state, so a restart comes back as the operator left it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core.clock import Clock
from core.models import OrderState, TradingState
from core.risk import RearmRefused, RiskGate, StateChange
from engine.control import Action, ControlRefused, ControlResult
from engine.events import EngineEvent, EventLog
from engine.flatten import Flattener
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RiskJournal

# (group id, reason, actor) -> the report: engine.group_close.GroupCloser.close
CloseGroup = Callable[[str, str, str], Awaitable[dict[str, Any]]]
# (reason, actor) -> the report: engine.orphans.OrphanCleaner.cancel
CancelOrphans = Callable[[str, str], Awaitable[dict[str, Any]]]

# Final with nothing filled: cancelled, expired, or (an MT5 command withdrawn) rejected.
_CANCELLED = (OrderState.CANCELLED, OrderState.EXPIRED, OrderState.REJECTED)


class Operator:
    """Implements `engine.control.OperatorControl`'s actions on one engine."""

    def __init__(
        self,
        gate: RiskGate,
        orchestrator: HedgeOrchestrator,
        flattener: Flattener,
        risk: RiskJournal,
        clock: Clock,
        events: EventLog,
        *,
        settle_timeout_s: float,
        running: Callable[[], bool],
        ledger_error: Callable[[], str | None] = lambda: None,
        close_group: CloseGroup | None = None,
        cancel_orphans: CancelOrphans | None = None,
    ) -> None:
        self._gate = gate
        self._orch = orchestrator
        self._flattener = flattener
        self._risk = risk
        self._clock = clock
        self._events = events
        self._settle_timeout_s = settle_timeout_s
        self._running = running
        self._ledger_error = ledger_error
        self._flatten_lock = asyncio.Lock()
        self._close_lock = asyncio.Lock()  # one closing pass at a time: a flatten or an asset's close
        self._last_flatten: dict[str, Any] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._close_group = close_group
        self._cancel_orphans = cancel_orphans

    @property
    def last_flatten(self) -> dict[str, Any] | None:
        """The report of the last flatten this run (None before one)."""
        return self._last_flatten

    @property
    def flatten_running(self) -> bool:
        return self._flatten_lock.locked()

    def _result(self, action: Action, changed: bool, message: str, **detail: Any) -> ControlResult:
        return ControlResult(action, str(self._gate.state), self._gate.reason, changed, message, dict(detail))

    def kill_now(self, reason: str) -> StateChange:
        """The synchronous half of a kill: the gate refuses the very next decision."""
        change = self._gate.kill(reason)
        self._events.emit(EngineEvent(change.ts_ms, "state", f"HALTED: {reason}", "warn"))
        return change

    def halt(self, reason: str) -> None:
        """A kill the engine decides (a ledger that cannot write, an unexpected error): the gate
        flips now; the unfilled entries are cancelled and the halt journaled in the background."""
        change = self.kill_now(reason)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing is in flight to cancel or journal
            return
        self._risk.record("kill", change)
        task = loop.create_task(self._orch.cancel_entries(), name="halt-cancels")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the cancels of engine-decided halts (at stop)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def kill(self, reason: str = "operator kill", *, on_cancels_sent: Callable[[int], None] | None = None
                   ) -> ControlResult:
        """Halt now; then cancel the entry orders of groups with nothing filled (MT5 commands
        withdrawn). Groups with a filled leg finish their hedge or compensation."""
        reason = reason.strip() or "operator kill"
        change = self.kill_now(reason)
        task = self._risk.record("kill", change)
        targets = await self._orch.cancel_entries(on_cancels_sent)
        if task is not None:
            await task
        # Only what the venue confirmed: an MT5 command the EA already took cannot be
        # withdrawn, and an order may fill on its way to the cancel. Those are still working.
        done = [o for o in targets if o.state in _CANCELLED and o.filled_qty == 0]
        working = {o.client_order_id: str(o.state) for o in targets if o not in done}
        return self._result("kill", True, f"halted: {reason}",
                            cancelled=[o.client_order_id for o in done], not_cancelled=working)

    async def flatten(self, reason: str = "operator flatten") -> ControlResult:
        """Halt, cancel unfilled entries, let groups in flight settle, then close the net
        exposure on every venue concurrently and report any residual. Ends halted."""
        reason = reason.strip() or "operator flatten"
        if not self._running():
            raise ControlRefused("the engine is not running")
        async with self._flatten_lock:
            change = self._gate.kill(f"flatten: {reason}")
            self._orch.begin_flatten()  # from now on only flatten orders leave
            self._events.emit(EngineEvent(change.ts_ms, "state", f"HALTED: flatten: {reason}", "warn"))
            start = self._risk.record("flatten", change)
            await self._orch.cancel_entries()
            await self._orch.settle_open(timeout_s=self._settle_timeout_s)
            still_open = sorted(self._orch.open)
            async with self._close_lock:  # after an asset's close still sending, never beside it
                report = await self._flattener.run()
            report["groups_still_open"] = still_open
            if self._gate.state is not TradingState.HALTED:  # nothing may have re-armed it meanwhile
                self._gate.kill(f"flatten: {reason}")
            self._last_flatten = report
            result = "flat" if report["flat"] else "residual " + ", ".join(
                f"{r['venue']}:{r['asset']} {r['after']}" for r in report["residual"]
            )
            self._events.emit(EngineEvent(self._clock.time_ms(), "flatten", f"flatten done: {result}",
                                          "info" if report["flat"] else "error"))
            done = StateChange(self._clock.time_ms(), self._gate.state, f"flatten done: {result}"[:500])
            end = self._risk.record("flatten", done)
            for task in (start, end):
                if task is not None:
                    await task
            return self._result("flatten", True, f"flatten done: {result}", **report)

    async def close_asset(self, asset: str, reason: str) -> dict[str, Any] | None:
        """Close one asset's legs at market on every venue (`risk.hold_action = "close"`): the
        flatten orders of that asset alone, write-ahead and tracked like any other; trading is
        not halted. None when a flatten is running (it closes everything anyway)."""
        if self._flatten_lock.locked():
            return None
        async with self._close_lock:
            self._events.emit(EngineEvent(self._clock.time_ms(), "hold", f"closing {asset} at market: {reason}",
                                          "warn"))
            report = await self._flattener.run(assets={asset})
            result = "flat" if report["flat"] else "residual " + ", ".join(
                f"{r['venue']}:{r['asset']} {r['after']}" for r in report["residual"]
            )
            self._events.emit(EngineEvent(self._clock.time_ms(), "hold", f"{asset} closed: {result}",
                                          "info" if report["flat"] else "error"))
            return report

    def close_asset_soon(self, asset: str, reason: str) -> None:
        """`close_asset` in the background (the risk loop's hold action); drained at stop."""
        task = asyncio.get_running_loop().create_task(self.close_asset(asset, reason), name=f"close-{asset}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: self._close_failed(asset, t))

    def _close_failed(self, asset: str, task: asyncio.Task[dict[str, Any] | None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._events.emit(EngineEvent(self._clock.time_ms(), "error",
                                          f"closing {asset} failed: {task.exception()!r}", "error"))

    def _refuse_during_flatten(self, action: str) -> None:
        if self._flatten_lock.locked():
            raise ControlRefused(f"{action} refused: a flatten is running (it ends halted)")

    async def rearm(self, reason: str) -> ControlResult:
        if not reason.strip():
            raise ControlRefused("rearm needs a reason")
        self._refuse_during_flatten("rearm")
        ledger_error = self._ledger_error()
        if ledger_error is not None:
            raise ControlRefused(f"rearm refused: the ledger cannot write ({ledger_error})")
        try:
            change = self._gate.rearm(reason.strip())
        except RearmRefused as exc:
            self._risk.released_breakers(self._clock.time_ms())
            raise ControlRefused(str(exc)) from None
        self._risk.released_breakers(change.ts_ms)
        self._orch.end_flatten()
        await self._risk.state("rearm", change, f"ACTIVE (rearmed): {reason}", "info")
        return self._result("rearm", True, f"active: {reason}")

    async def pause(self, reason: str = "operator pause") -> ControlResult:
        reason = reason.strip() or "operator pause"
        self._refuse_during_flatten("pause")
        change = self._gate.pause(reason)
        if change is None:
            return self._result("pause", False, f"not paused: trading is {self._gate.state}")
        await self._risk.state("pause", change, f"PAUSED: {reason}", "warn")
        return self._result("pause", True, f"paused: {reason}")

    async def resume(self, reason: str = "operator resume") -> ControlResult:
        reason = reason.strip() or "operator resume"
        self._refuse_during_flatten("resume")
        change = self._gate.resume(reason)
        if change is None:
            why = ("a breaker holds the pause" if self._gate.state is TradingState.PAUSED
                   else f"trading is {self._gate.state}")
            return self._result("resume", False, f"not resumed: {why}")
        await self._risk.state("resume", change, f"ACTIVE (resumed): {reason}", "info")
        return self._result("resume", True, f"active: {reason}")

    # -- one group, and the orphans (manual actions, audited: engine.operator_audit) -------------
    async def close_group(self, group_id: str, reason: str, actor: str = "operator") -> ControlResult:
        """Close one settled group's legs at market. Allowed while halted or paused, as flatten
        is (the orders may only shrink a venue's position); refused while a flatten runs (it
        closes everything), and waits for an asset close already sending."""
        if not self._running():
            raise ControlRefused("the engine is not running")
        if self._close_group is None:
            raise ControlRefused("closing a group is not available in this engine")
        if not reason.strip():
            raise ControlRefused("close needs a reason (it is journaled with the orders)")
        self._refuse_during_flatten("close")
        async with self._close_lock:
            report = await self._close_group(group_id, reason.strip(), actor)
        self._events.emit(EngineEvent(self._clock.time_ms(), "operator", str(report["message"]),
                                      "info" if report["flat"] else "error", {"group_id": group_id}))
        return self._result("close", True, str(report["message"]),
                            **{k: v for k, v in report.items() if k != "message"})

    async def cancel_orphans(self, reason: str, actor: str = "operator") -> ControlResult:
        """Cancel the open orders reconciliation quarantined, one audited cancel each."""
        if not self._running():
            raise ControlRefused("the engine is not running")
        if self._cancel_orphans is None:
            raise ControlRefused("orphan cleanup is not available in this engine")
        if not reason.strip():
            raise ControlRefused("orphan cleanup needs a reason (it is journaled with each cancel)")
        report = await self._cancel_orphans(reason.strip(), actor)
        failed = report["counts"]["failed"]
        self._events.emit(EngineEvent(self._clock.time_ms(), "operator", str(report["message"]),
                                      "error" if failed else "info"))
        return self._result("orphans_cancel", True, str(report["message"]),
                            **{k: v for k, v in report.items() if k != "message"})
