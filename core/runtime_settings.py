"""Runtime settings: the few config values an operator may change on a running engine.

Steerable keys (docs/configuration.md, Steering), by their dotted config names:

- `strategy.threshold_bps`  float, 0 <= value < strategy.max_edge_bps
- `strategy.cooldown_ms`    integer, 0 <= value <= 86 400 000 (a day)
- `risk.max_leg_notional`   decimal, 0 < value <= the smaller of the venue and asset exposure
                            limits (a larger leg could never pass them), or the file's own value
                            when that is larger
- `pairs.<name>.enabled`    true/false, for every configured pair

Everything here is pure: the ranges come from the config the engine started with, a value
arrives as text (CLI, API, TUI input) and is parsed once, strictly, into its type; a bad one is
an `InvalidSetting` naming the field and the allowed range. `restart_plan` decides which
journaled changes a restart re-applies over the config file (docs/operations.md, Runtime
settings after a restart): the newest intent wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from core.config import DAY_MS, QuantarbConfig

SettingValue = float | int | Decimal | bool
Kind = Literal["float", "int", "decimal", "bool"]
Source = Literal["tui", "cli", "api"]
SOURCES: tuple[Source, ...] = ("tui", "cli", "api")
MAX_VALUE_CHARS = 40
MAX_REASON_CHARS = 500
# Money and bps need no more: a longer number is a typo or an attack on the parser.
_DECIMAL_TEXT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,8})?")
_FLOAT_TEXT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_INT_TEXT = re.compile(r"[0-9]{1,12}")
_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})
_PAIR_KEY = re.compile(r"pairs\.([A-Za-z0-9]{1,16})\.enabled")


class InvalidSetting(ValueError):
    """A key or value that cannot be set; `field` is the dotted key (or `key`, `reason`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One steerable key: its type and the closed or half-open range it must fall in."""

    key: str
    kind: Kind
    description: str
    low: Decimal | None = None
    high: Decimal | None = None
    low_open: bool = False  # value > low rather than >= low
    high_open: bool = False  # value < high rather than <= high
    unit: str = ""

    def range_text(self) -> str:
        """The allowed values, as every refusal states them: `0 <= value < 300 bps`."""
        if self.kind == "bool":
            return "true or false"
        parts: list[str] = []
        if self.low is not None:
            parts.append(f"{_plain(self.low)} {'<' if self.low_open else '<='} ")
        parts.append("value")
        if self.high is not None:
            parts.append(f" {'<' if self.high_open else '<='} {_plain(self.high)}")
        noun = {"float": "a number", "int": "a whole number", "decimal": "a decimal"}[self.kind]
        return f"{noun}, {''.join(parts)}{f' {self.unit}' if self.unit else ''}"

    def parse(self, text: str) -> SettingValue:
        """The value in `text`, typed and inside the range; InvalidSetting otherwise."""
        raw = text.strip()
        if len(raw) > MAX_VALUE_CHARS or not raw.isascii():
            raise InvalidSetting(self.key, f"expected {self.range_text()}")
        if self.kind == "bool":
            word = raw.lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise InvalidSetting(self.key, f"expected {self.range_text()}, got {raw!r}")
        pattern = {"float": _FLOAT_TEXT, "int": _INT_TEXT, "decimal": _DECIMAL_TEXT}[self.kind]
        if not pattern.fullmatch(raw):
            raise InvalidSetting(self.key, f"expected {self.range_text()}, got {raw!r}")
        number = Decimal(raw)
        self._check(number)
        if self.kind == "float":
            return float(raw)
        if self.kind == "int":
            return int(raw)
        return number

    def _check(self, number: Decimal) -> None:
        low, high = self.low, self.high
        below = low is not None and (number <= low if self.low_open else number < low)
        above = high is not None and (number >= high if self.high_open else number > high)
        if below or above:
            raise InvalidSetting(self.key, f"{_plain(number)} is out of range: {self.range_text()}")

    def check(self, value: SettingValue) -> SettingValue:
        """A value already typed (the ledger's, on a restart) checked against this range."""
        return self.parse(format_value(value))


def _plain(d: Decimal) -> str:
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: SettingValue) -> str:
    """The canonical text of a value: what the ledger stores and `parse` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _plain(Decimal(repr(value)))
    return _plain(value)


def pair_key(name: str) -> str:
    return f"pairs.{name}.enabled"


def steerable(config: QuantarbConfig) -> dict[str, SettingSpec]:
    """The steerable keys of this config, in a stable order, with their ranges."""
    strategy, risk = config.strategy, config.risk
    exposure = min(risk.max_venue_exposure or risk.max_gross_exposure,
                   risk.max_asset_exposure or risk.max_gross_exposure)
    specs = [
        SettingSpec("strategy.threshold_bps", "float", "Minimum net edge (after both fees) to trade.",
                    low=Decimal(0), high=Decimal(repr(strategy.max_edge_bps)), high_open=True, unit="bps"),
        SettingSpec("strategy.cooldown_ms", "int", "Per pair and direction, after an intent.",
                    low=Decimal(0), high=Decimal(DAY_MS), unit="ms"),
        SettingSpec("risk.max_leg_notional", "decimal", "One leg's notional (quote currency).",
                    low=Decimal(0), low_open=True, high=max(exposure, risk.max_leg_notional)),
    ]
    specs += [SettingSpec(pair_key(p.name), "bool", f"Pair {p.name} may open new groups.") for p in config.pairs]
    return {s.key: s for s in specs}


def config_values(config: QuantarbConfig) -> dict[str, SettingValue]:
    """What the config file says for every steerable key."""
    values: dict[str, SettingValue] = {
        "strategy.threshold_bps": config.strategy.threshold_bps,
        "strategy.cooldown_ms": config.strategy.cooldown_ms,
        "risk.max_leg_notional": config.risk.max_leg_notional,
    }
    values.update({pair_key(p.name): p.enabled for p in config.pairs})
    return values


def spec_for(specs: Mapping[str, SettingSpec], key: str) -> SettingSpec:
    """The spec of `key`; an unknown key is refused with the list of steerable ones."""
    spec = specs.get(key.strip())
    if spec is not None:
        return spec
    match = _PAIR_KEY.fullmatch(key.strip())
    if match is not None:
        pairs = ", ".join(k.split(".")[1] for k in specs if k.startswith("pairs."))
        raise InvalidSetting("key", f"no pair {match.group(1)!r} is configured (pairs: {pairs})")
    shown = key if len(key) <= 64 and key.isascii() and key.isprintable() else "(not shown)"
    raise InvalidSetting("key", f"{shown} is not steerable; steerable: {', '.join(specs)}")


def check_reason(reason: str) -> str:
    """The audit reason: required, printable, bounded (it goes to the ledger and the TUI)."""
    text = reason.strip()
    if not text:
        raise InvalidSetting("reason", "required: say why (it is journaled with the change)")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidSetting("reason", f"at most {MAX_REASON_CHARS} characters")
    if not text.isprintable():
        raise InvalidSetting("reason", "must not contain control characters")
    return text


def same(a: SettingValue, b: SettingValue) -> bool:
    """Equal as settings (8 and 8.0 bps are the same threshold; True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return Decimal(format_value(a)) == Decimal(format_value(b))


def diff(current: Mapping[str, SettingValue], proposed: Mapping[str, SettingValue]
         ) -> list[tuple[str, SettingValue, SettingValue]]:
    """(key, old, new) for every proposed value that differs from the current one, in the
    order of `proposed`; keys not current are ignored (never steerable)."""
    return [(k, current[k], v) for k, v in proposed.items() if k in current and not same(current[k], v)]


@dataclass(frozen=True, slots=True)
class SettingChange:
    """One journaled change: the audit record (who, why, when, from what to what) plus the
    config file's value at the time, which a restart compares with the file it reads."""

    key: str
    old: str
    new: str
    config: str
    reason: str
    source: str
    ts_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new, "config": self.config,
                "reason": self.reason, "source": self.source, "ts_ms": self.ts_ms}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SettingChange:
        """From a ledger payload; ValueError when a field is missing or of the wrong type."""
        fields = ("key", "old", "new", "config", "reason", "source")
        if not all(isinstance(data.get(f), str) for f in fields):
            raise ValueError(f"a setting change needs string fields {', '.join(fields)}")
        ts = data.get("ts_ms")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise ValueError("a setting change needs integer ts_ms")
        return cls(str(data["key"]), str(data["old"]), str(data["new"]), str(data["config"]),
                   str(data["reason"]), str(data["source"]), ts)

    def summary(self) -> str:
        """One line for the risk screen and the log."""
        return f"{self.key} {self.old} -> {self.new} ({self.source}): {self.reason}"


@dataclass(frozen=True, slots=True)
class RestartStep:
    """What a restart does with the newest journaled change of one key."""

    key: str
    action: Literal["reapply", "file_wins", "dropped"]
    value: SettingValue | None  # the value re-applied (reapply only)
    change: SettingChange
    why: str


def restart_plan(
    specs: Mapping[str, SettingSpec], file_values: Mapping[str, SettingValue], journaled: Iterable[SettingChange]
) -> list[RestartStep]:
    """The newest journaled change per key, judged against the config file read now:

    - the file still says what it said when the change was made: the change is newer than the
      file, so it is re-applied (a restart never silently undoes an operator's change);
    - the file says something else: it was edited since, the newer intent is the file's;
    - the key is no longer steerable, or the value no longer fits its range: dropped.
    """
    latest: dict[str, SettingChange] = {}
    for change in journaled:
        latest[change.key] = change
    plan: list[RestartStep] = []
    for key, change in latest.items():
        spec = specs.get(key)
        if spec is None:
            plan.append(RestartStep(key, "dropped", None, change, "no longer a steerable key of this config"))
            continue
        file_now = file_values[key]
        if change.config != format_value(file_now):
            plan.append(RestartStep(key, "file_wins", None, change,
                                    f"the config file changed since (was {change.config}, now "
                                    f"{format_value(file_now)}): the file wins"))
            continue
        try:
            value = spec.parse(change.new)
        except InvalidSetting as exc:
            plan.append(RestartStep(key, "dropped", None, change, f"journaled value no longer valid: {exc.reason}"))
            continue
        if same(value, file_now):
            continue  # set back to the file's value: nothing to re-apply
        plan.append(RestartStep(key, "reapply", value, change,
                                f"journaled {change.new} re-applied over the file's {format_value(file_now)}"))
    return plan


__all__ = [
    "SOURCES",
    "InvalidSetting",
    "RestartStep",
    "SettingChange",
    "SettingSpec",
    "SettingValue",
    "check_reason",
    "config_values",
    "diff",
    "format_value",
    "pair_key",
    "restart_plan",
    "same",
    "spec_for",
    "steerable",
]
