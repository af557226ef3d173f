"""core.runtime_settings: the value parser (hypothesis), the ranges, the diff, the restart plan."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.config import demo_config
from core.runtime_settings import (
    InvalidSetting,
    SettingChange,
    SettingSpec,
    SettingValue,
    check_reason,
    config_values,
    diff,
    format_value,
    restart_plan,
    spec_for,
    steerable,
)

SPECS = steerable(demo_config())
FILE = config_values(demo_config())
KEYS = sorted(SPECS)


def _in_range(spec: SettingSpec, value: object) -> bool:
    if spec.kind == "bool":
        return isinstance(value, bool)
    assert isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    number = Decimal(format_value(value))
    low_ok = spec.low is None or (number > spec.low if spec.low_open else number >= spec.low)
    high_ok = spec.high is None or (number < spec.high if spec.high_open else number <= spec.high)
    return low_ok and high_ok


@given(st.sampled_from(KEYS), st.text(max_size=60))
@example("strategy.threshold_bps", "300")
@example("strategy.threshold_bps", "1e3")
@example("strategy.threshold_bps", "inf")
@example("strategy.cooldown_ms", "٣")  # an Arabic-Indic digit: int() would take it
@example("risk.max_leg_notional", "0")
@example("risk.max_leg_notional", " 5000 ")
@example("pairs.BTC.enabled", "TRUE")
def test_any_text_is_a_typed_value_in_range_or_a_refusal_naming_field_and_range(key: str, text: str) -> None:
    spec = SPECS[key]
    try:
        value = spec.parse(text)
    except InvalidSetting as exc:
        assert exc.field == key
        assert spec.range_text() in exc.reason
        assert str(exc).startswith(f"{key}: ")
        return
    assert _in_range(spec, value)
    expected = {"float": float, "int": int, "decimal": Decimal, "bool": bool}[spec.kind]
    assert type(value) is expected
    assert spec.parse(format_value(value)) == value  # the ledger's text reads back the same


@given(st.decimals(min_value=0, max_value=Decimal("299.999999"), places=6, allow_nan=False))
def test_every_threshold_in_range_parses_to_itself(bps: Decimal) -> None:
    value = SPECS["strategy.threshold_bps"].parse(format(bps, "f"))
    assert value == float(format(bps, "f"))


@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(60000), places=8, allow_nan=False))
def test_every_leg_notional_in_range_is_exact(notional: Decimal) -> None:
    value = SPECS["risk.max_leg_notional"].parse(format(notional, "f"))
    assert value == notional and isinstance(value, Decimal)


@given(st.integers(min_value=0, max_value=86_400_000))
def test_every_cooldown_in_range_parses(ms: int) -> None:
    assert SPECS["strategy.cooldown_ms"].parse(str(ms)) == ms


def test_the_ranges_follow_the_config() -> None:
    assert SPECS["strategy.threshold_bps"].range_text() == "a number, 0 <= value < 300 bps"
    assert SPECS["strategy.cooldown_ms"].range_text() == "a whole number, 0 <= value <= 86400000 ms"
    # The demo's gross exposure limit: a larger leg could never pass it.
    assert SPECS["risk.max_leg_notional"].range_text() == "a decimal, 0 < value <= 60000"
    assert [k for k in SPECS if k.startswith("pairs.")] == ["pairs.XAU.enabled", "pairs.BTC.enabled",
                                                            "pairs.ETH.enabled"]
    # A file whose own leg limit is above the exposure limits keeps its value settable.
    cfg = demo_config().model_copy(update={"risk": demo_config().risk.model_copy(
        update={"max_leg_notional": Decimal(70000), "max_gross_exposure": Decimal(60000)})})
    assert steerable(cfg)["risk.max_leg_notional"].high == Decimal(70000)


def test_unknown_keys_name_what_is_steerable() -> None:
    with pytest.raises(InvalidSetting) as exc:
        spec_for(SPECS, "risk.daily_loss_limit")
    assert exc.value.field == "key"
    assert "strategy.threshold_bps, strategy.cooldown_ms, risk.max_leg_notional" in exc.value.reason
    with pytest.raises(InvalidSetting, match="no pair 'SOL' is configured"):
        spec_for(SPECS, "pairs.SOL.enabled")
    with pytest.raises(InvalidSetting, match=r"\(not shown\)"):
        spec_for(SPECS, "\x1b]52;c;x\x07")


@pytest.mark.parametrize(("reason", "says"), [("", "required"), ("x" * 501, "at most 500"), ("a\nb", "control")])
def test_a_reason_is_required_and_bounded(reason: str, says: str) -> None:
    with pytest.raises(InvalidSetting, match=says) as exc:
        check_reason(reason)
    assert exc.value.field == "reason"


def test_the_diff_lists_only_real_changes_in_order() -> None:
    proposed: dict[str, SettingValue] = {"pairs.ETH.enabled": False, "strategy.threshold_bps": 8,
                                         "risk.max_leg_notional": Decimal("4000.0"), "nope": 1}
    assert diff(FILE, proposed) == [("pairs.ETH.enabled", True, False),
                                    ("risk.max_leg_notional", Decimal(5000), Decimal("4000.0"))]


def _change(key: str, new: str, config: str, ts: int = 1) -> SettingChange:
    return SettingChange(key, "x", new, config, "why", "cli", ts)


def test_restart_plan_newest_intent_wins() -> None:
    plan = restart_plan(SPECS, FILE, [
        _change("strategy.threshold_bps", "5", "8", 1),
        _change("strategy.threshold_bps", "6", "8", 2),  # the newest of the key counts
        _change("strategy.cooldown_ms", "100", "2500"),  # the file said 2500 then, 3000 now
        _change("risk.max_leg_notional", "5000", "5000"),  # set back to the file's value
        _change("pairs.SOL.enabled", "false", "true"),  # no such pair any more
        _change("pairs.BTC.enabled", "false", "true"),
    ])
    assert [(s.key, s.action, s.value) for s in plan] == [
        ("strategy.threshold_bps", "reapply", 6.0),
        ("strategy.cooldown_ms", "file_wins", None),
        ("pairs.SOL.enabled", "dropped", None),
        ("pairs.BTC.enabled", "reapply", False),
    ]


def test_restart_plan_drops_a_value_out_of_the_current_range() -> None:
    cfg = demo_config().model_copy(update={"strategy": demo_config().strategy.model_copy(
        update={"max_edge_bps": 50.0})})
    [step] = restart_plan(steerable(cfg), config_values(cfg), [_change("strategy.threshold_bps", "60", "8")])
    assert step.action == "dropped"
    assert "0 <= value < 50 bps" in step.why


@given(st.dictionaries(st.sampled_from(["key", "old", "new", "config", "reason", "source", "ts_ms"]),
                       st.one_of(st.text(max_size=5), st.integers(), st.none(), st.booleans())))
def test_a_ledger_record_is_read_or_refused(data: dict[str, object]) -> None:
    try:
        change = SettingChange.from_json(data)
    except ValueError:
        return
    assert change.to_json() == data
