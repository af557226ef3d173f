"""core.hold: hedges held too long (alert, then the configured action) and legs that drift
apart, each said once per holding episode. Time is a number the test moves."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.hold import HoldLimits, HoldVerdict, HoldWatch
from core.holdings import Holding, Leg

D = Decimal
T0 = 1_732_150_800_000
LIMITS = HoldLimits(alert_s=60, close_s=120, action="close")


def holding(asset: str = "XAU", since: int | None = T0, net: str = "0", held: bool = True) -> Holding:
    legs = (Leg("mt5", "XAUUSD", D(1) + D(net), D("0.01"), "lot", D(2650), D(0), "USD", since),
            Leg("okx", "XAUT-USDT-SWAP", D(-1), D(-1000), "ct", D(2651), D(0), "USDT", since))
    return Holding(asset, legs, D(net), D(1), held, D("2650.5"), D(0), D(0), since if held else None)


def kinds(verdicts: list[HoldVerdict]) -> list[tuple[str, str]]:
    return [(v.asset, v.kind) for v in verdicts]


def test_alert_then_close_each_once_per_holding() -> None:
    w = HoldWatch(LIMITS)
    assert w.check([holding()], (), T0 + 60_000) == []  # not longer than hold_alert_s yet
    alert = w.check([holding()], (), T0 + 60_001)
    assert kinds(alert) == [("XAU", "alert")]
    assert alert[0].detail == "XAU held 60s (> hold_alert_s 60)"
    assert w.check([holding()], (), T0 + 90_000) == []  # said once
    close = w.check([holding()], (), T0 + 121_000)
    assert kinds(close) == [("XAU", "close")] and close[0].action == "close"
    assert "closing it at market on every venue" in close[0].detail
    assert w.check([holding()], (), T0 + 500_000) == []
    # closed, then held again: a new holding, timed from its own start
    assert w.check([], (), T0 + 600_000) == []
    assert w.check([holding(since=T0 + 600_000)], (), T0 + 630_000) == []
    assert kinds(w.check([holding(since=T0 + 600_000)], (), T0 + 661_000)) == [("XAU", "alert")]


def test_a_check_late_enough_says_both_and_the_alert_action_only_alerts() -> None:
    w = HoldWatch(HoldLimits(alert_s=60, close_s=120, action="alert"))
    verdicts = w.check([holding()], (), T0 + 200_000)
    assert kinds(verdicts) == [("XAU", "alert"), ("XAU", "close")]
    assert verdicts[1].action == "alert" and "hold_action is alert: not closed" in verdicts[1].detail


def test_dust_is_not_held() -> None:
    w = HoldWatch(LIMITS)
    assert w.check([holding(held=False)], (), T0 + 1_000_000) == []


def test_drift_is_said_once_not_while_a_group_is_in_flight_and_its_end_is_said() -> None:
    w = HoldWatch(HoldLimits(alert_s=3600, close_s=3600, action="alert"))
    apart = holding(net="2")
    assert w.check([apart], {"XAU"}, T0) == []  # a group in flight: a leg may be filled, the other not yet
    drift = w.check([apart], (), T0 + 1000)
    assert kinds(drift) == [("XAU", "drift")]
    assert drift[0].detail == "XAU legs apart: net +2 (lot step +1): mt5 +3, okx -1"
    assert w.check([apart], (), T0 + 2000) == []
    assert w.check([apart], {"XAU"}, T0 + 3000) == []  # a group in flight does not end the drift
    assert kinds(w.check([holding()], (), T0 + 4000)) == [("XAU", "drift_end")]
    assert kinds(w.check([apart], (), T0 + 5000)) == [("XAU", "drift")]
    assert kinds(w.check([], (), T0 + 6000)) == [("XAU", "drift_end")]  # flat: back together


def test_limits_need_alert_before_close() -> None:
    with pytest.raises(ValueError, match="alert"):
        HoldLimits(alert_s=120, close_s=60, action="close")
    with pytest.raises(ValueError):
        HoldLimits(alert_s=0, close_s=60, action="close")


def test_the_config_refuses_a_close_before_the_alert() -> None:
    from pydantic import ValidationError

    from core.config import RiskConfig

    with pytest.raises(ValidationError, match="hold_close_s: must be >= hold_alert_s"):
        RiskConfig(hold_alert_s=600, hold_close_s=60)
    with pytest.raises(ValidationError, match="hold_action"):
        RiskConfig.model_validate({"hold_action": "sell"})
    assert RiskConfig().hold_action == "alert"
