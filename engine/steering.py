"""Steering: change a runtime setting on the running engine, audited in the ledger.

The TUI's settings screen, `POST /api/set` and `quantarb set` all call `Steering.set`, so a
change means the same whichever way it arrives (docs/operator.md, Runtime settings):

1. the key and value are parsed and range-checked (`core.runtime_settings`), the reason is
   required; a bad one raises `InvalidSetting` and changes nothing;
2. the audit record (old, new, the config file's value, reason, source, time) is made durable
   in the ledger as a `setting` risk event; a ledger that cannot write refuses the change
   (`ControlRefused`) before anything is queued;
3. only then is the value handed to the part that reads it (the pipeline's threshold,
   cooldown, pair switch and leg size; the risk gate's leg limit): the next decision uses it;
4. the change is said on the log and in the risk screen's events.

Changes are serialised (one at a time), so `old` is always what the change replaced. At start
`restore` re-applies journaled changes the config file has not overtaken since (`restart_plan`)
and says what it did, key by key, on the log.

A ledger that fails during step 2 keeps the record and writes it when it writes again (trading
halts meanwhile, as for any write failure): the change is then applied too, so the engine and
its audit trail never disagree, and the answer says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from core.clock import Clock
from core.config import QuantarbConfig
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate
from core.runtime_settings import (
    SOURCES,
    InvalidSetting,
    RestartStep,
    SettingChange,
    SettingSpec,
    SettingValue,
    check_reason,
    config_values,
    format_value,
    restart_plan,
    same,
    spec_for,
    steerable,
)
from engine.control import ControlRefused
from engine.events import EngineEvent, EventLog
from engine.journal import GuardedJournal
from engine.risk_journal import RiskJournal
from ledger import queries
from ledger.ledger import Ledger

__all__ = ["SettingResult", "SettingsControl", "Steering"]


@dataclass(frozen=True, slots=True)
class SettingResult:
    """What one `set` did; `to_json` is the API's and the CLI's answer."""

    key: str
    old: str
    new: str
    changed: bool
    journaled: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new, "changed": self.changed,
                "journaled": self.journaled, "message": self.message}


class SettingsControl(Protocol):
    """What a face needs to steer an engine (implemented by `Steering`)."""

    def settings(self) -> list[dict[str, Any]]:
        """Every steerable key: its current value, the config file's, the allowed range."""
        ...

    def specs(self) -> dict[str, SettingSpec]: ...

    def current(self) -> dict[str, SettingValue]: ...

    async def set(self, key: str, value: str, reason: str, source: str) -> SettingResult:
        """Change one setting; InvalidSetting (bad key, value or reason) or ControlRefused."""
        ...


class Steering:
    def __init__(
        self,
        config: QuantarbConfig,
        pipeline: OpportunityPipeline,
        gate: RiskGate,
        risk: RiskJournal,
        clock: Clock,
        events: EventLog,
        *,
        journal: Callable[[], GuardedJournal | None],
    ) -> None:
        self._specs = steerable(config)
        self._file = config_values(config)
        self._pipeline = pipeline
        self._gate = gate
        self._risk = risk
        self._clock = clock
        self._events = events
        self._journal = journal
        self._lock = asyncio.Lock()
        self._unsaid: list[EngineEvent] = []  # restore's log lines, until said

    # -- reading -------------------------------------------------------------------------
    def specs(self) -> dict[str, SettingSpec]:
        return dict(self._specs)

    def current(self) -> dict[str, SettingValue]:
        """The values in force, read from the parts that use them (never a copy that drifts)."""
        p = self._pipeline
        values: dict[str, SettingValue] = {
            "strategy.threshold_bps": p.threshold_bps,
            "strategy.cooldown_ms": p.cooldown_ms,
            "risk.max_leg_notional": self._gate.limits.max_leg_notional,
        }
        for key in self._specs:
            if key.startswith("pairs."):
                values[key] = p.pair_enabled(key.split(".")[1])
        return values

    def settings(self) -> list[dict[str, Any]]:
        current = self.current()
        return [
            {"key": key, "value": format_value(current[key]), "config": format_value(self._file[key]),
             "type": spec.kind, "range": spec.range_text(), "description": spec.description}
            for key, spec in self._specs.items()
        ]

    # -- changing ------------------------------------------------------------------------
    async def set(self, key: str, value: str, reason: str, source: str) -> SettingResult:
        spec = spec_for(self._specs, key)
        new = spec.parse(value)
        why = check_reason(reason)
        if source not in SOURCES:
            raise InvalidSetting("source", f"one of {', '.join(SOURCES)}")
        async with self._lock:
            old = self.current()[spec.key]
            if same(old, new):
                return SettingResult(spec.key, format_value(old), format_value(new), False, False,
                                     f"{spec.key} is already {format_value(old)}: unchanged")
            change = SettingChange(spec.key, format_value(old), format_value(new),
                                   format_value(self._file[spec.key]), why, source, self._clock.time_ms())
            journal = self._journal()
            journaled = False
            note = ""
            if journal is not None:
                if journal.error is not None:
                    raise ControlRefused(f"{spec.key} not changed: the ledger cannot write ({journal.error}); "
                                         "a change must be journaled first")
                journaled = await journal.setting(change, self._gate.state) >= 0
                if not journaled:
                    note = ("; the ledger failed while journaling it: the record is held and written "
                            "when it writes again")
            else:
                note = "; no ledger: not journaled"
            self._apply(spec.key, new)
            self._said(change, "warn" if note else "info", note)
            return SettingResult(spec.key, change.old, change.new, True, journaled,
                                 f"{spec.key} {change.old} -> {change.new}{note}")

    def _apply(self, key: str, value: SettingValue) -> None:
        """Hand the value to the part that reads it: the next decision uses it."""
        p = self._pipeline
        if key == "strategy.threshold_bps":
            assert isinstance(value, float)
            p.set_threshold_bps(value)
        elif key == "strategy.cooldown_ms":
            assert isinstance(value, int) and not isinstance(value, bool)
            p.set_cooldown_ms(value)
        elif key == "risk.max_leg_notional":
            assert isinstance(value, Decimal)
            p.set_max_leg_notional(value)
            self._gate.set_max_leg_notional(value)
        elif key.startswith("pairs.") and key.endswith(".enabled"):
            assert isinstance(value, bool)
            p.set_pair_enabled(key.split(".")[1], value)
        else:  # pragma: no cover - steerable() and this list are one table
            raise InvalidSetting("key", f"{key} has no runtime hook")

    def _said(self, change: SettingChange, level: str, note: str = "") -> None:
        self._events.emit(EngineEvent(change.ts_ms, "setting", f"runtime setting {change.summary()}{note}",
                                      "warn" if level == "warn" else "info",
                                      {"key": change.key, "old": change.old, "new": change.new,
                                       "source": change.source}))
        self._risk.note("setting", change.ts_ms, change.summary())

    # -- restart -------------------------------------------------------------------------
    async def restore(self, ledger: Ledger, *, say: bool = True) -> list[RestartStep]:
        """Re-apply the journaled changes the config file has not overtaken (restart_plan).
        Each decision is said on the log, one line too when there is nothing to re-apply: now,
        or with `say=False` when `say_restored` is called (the runtime says them right after
        its `engine started` line, which stays the first)."""
        now = self._clock.time_ms()
        journaled: list[SettingChange] = []
        lines: list[EngineEvent] = []
        for row in await ledger.read(queries.setting_changes):
            try:
                journaled.append(SettingChange.from_json(row))
            except ValueError as exc:
                lines.append(EngineEvent(now, "setting", f"unreadable setting record skipped: {exc}", "warn"))
        plan = restart_plan(self._specs, self._file, journaled)
        for step in plan:
            c = step.change
            if step.action == "reapply" and step.value is not None:
                self._apply(step.key, step.value)
                self._risk.note("setting", now, f"{step.key} = {c.new} re-applied at start (set by {c.source}: "
                                f"{c.reason})")
                lines.append(EngineEvent(now, "setting",
                                         f"runtime setting {step.key} = {c.new} re-applied from the ledger "
                                         f"(config file says {c.config}; set by {c.source}: {c.reason})",
                                         "warn", {"key": step.key, "value": c.new, "config": c.config}))
            else:
                lines.append(EngineEvent(now, "setting",
                                         f"runtime setting {step.key} = {c.new} from the ledger NOT re-applied: "
                                         f"{step.why}", "warn", {"key": step.key, "action": step.action}))
        if not any(s.action == "reapply" for s in plan):
            lines.append(EngineEvent(now, "setting", "runtime settings: the config file's values are in force "
                                     f"({len(journaled)} journaled change(s), none to re-apply)"))
        self._unsaid = lines
        if say:
            self.say_restored()
        return plan

    def say_restored(self) -> None:
        """The log lines of the last `restore`, once."""
        lines, self._unsaid = self._unsaid, []
        for line in lines:
            self._events.emit(line)
