"""RiskGate: the single switch every intent passes, and that the kill flips synchronously.

This is the skeleton's gate: trading state (active / paused / reducing / halted) with the
reason, and the open-group limit. Later limits (notional, exposure, balances, breakers)
plug into `check()` and report as `risk:<rule>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.clock import Clock
from core.models import ExecutionIntent, Reason, TradingState


@dataclass(slots=True, frozen=True)
class StateChange:
    ts_ms: int
    state: TradingState
    reason: str


class RiskGate:
    def __init__(self, clock: Clock, *, max_open_groups: int) -> None:
        self._clock = clock
        self.state = TradingState.ACTIVE
        self.reason = ""
        self.max_open_groups = max_open_groups
        self.history: list[StateChange] = []

    def _set(self, state: TradingState, reason: str) -> StateChange:
        self.state = state
        self.reason = reason
        change = StateChange(self._clock.time_ms(), state, reason)
        self.history.append(change)
        return change

    def kill(self, reason: str) -> StateChange:
        """Halt: effective for the very next decision, since the pipeline reads `state`."""
        return self._set(TradingState.HALTED, reason or "kill")

    def pause(self, reason: str = "pause") -> StateChange | None:
        if self.state is not TradingState.ACTIVE:
            return None
        return self._set(TradingState.PAUSED, reason)

    def resume(self, reason: str = "resume") -> StateChange | None:
        if self.state is not TradingState.PAUSED:
            return None
        return self._set(TradingState.ACTIVE, reason)

    def rearm(self, reason: str) -> StateChange:
        if not reason.strip():
            raise ValueError("rearm needs a reason")
        return self._set(TradingState.ACTIVE, reason)

    def blocked_state(self) -> str | None:
        """The reason new groups are refused by the trading state, or None when active."""
        state = self.state
        if state is TradingState.ACTIVE:
            return None
        if state is TradingState.HALTED:
            return Reason.HALTED
        if state is TradingState.PAUSED:
            return Reason.PAUSED
        return Reason.REDUCING

    def check(self, intent: ExecutionIntent, open_groups: int) -> str | None:
        """Limits on a would-be intent; returns `risk:<rule>` or None."""
        if open_groups >= self.max_open_groups:
            return "risk:max_open_groups"
        return None
