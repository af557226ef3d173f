"""Alerts from the running engine to real loopback webhooks (apprise `json://`).

One message per event, with its reason: the process starting and stopping, a kill, a rearm, a
halting breaker, a daily PnL level, reconciliation's differences, the MT5 EA going silent. A
channel where nothing listens and one that hangs never stall the engine: measured by the
engine's counters (quotes judged, intents made) and the channels' (sent, dropped, pending),
never by timing. `quantarb alerts test` reports each channel.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.clock import ManualClock
from core.compare import CompareEngine
from core.config import AlertsConfig, QuantarbConfig, RiskConfig, demo_config
from core.models import TradingState
from core.risk import RiskGate
from engine.alerts import Alerts
from engine.errors import RuntimeFailure
from engine.events import EventLog
from engine.live_venues import OpenOrder
from engine.reconcile import FILL_SETTLE_MS
from engine.risk_journal import RiskJournal
from engine.risk_monitor import RiskMonitor, VenueLink
from engine.runtime import Runtime
from quantarb_tui.cli import app
from tests.alert_support import Webhook, dead_port, wait_until, webhook
from tests.unit.test_reconcile import fill, ours_in_ledger, rig


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")


def _config(**alerts: Any) -> QuantarbConfig:
    return demo_config().model_copy(update={"alerts": AlertsConfig.model_validate(alerts)})


def _titles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["title"].split(": ", 1)[1] for m in messages]


async def _wait(hook: Webhook, n: int) -> list[dict[str, Any]]:
    return await asyncio.to_thread(hook.wait, n)


async def test_engine_events_reach_the_webhook_one_message_each_with_the_reason(tmp_path: Path) -> None:
    clock = ManualClock()
    with webhook() as hook:
        rt = Runtime(_config(urls=[hook.url()], pnl_levels=["-100"]), is_demo=True, clock=clock,
                     ledger_path=str(tmp_path / "a.db"), mt5_in_process=True)
        await rt.start()
        try:
            await rt.control.kill("night check: spreads look wrong")
            await rt.control.rearm("checked the venues")
            changes = rt.gate.breakers.on_day_equity(Decimal(-250), clock.time_ms())
            rt.risk.apply_breakers(changes)  # what the risk loop does with the day's equity change
            assert rt.gate.state is TradingState.HALTED
            rt.alerts.poll_pnl()  # the alerts task does this once a second
        finally:
            await rt.stop()
        messages = await _wait(hook, 6)
        assert _titles(messages) == ["started", "HALTED", "rearmed: trading again", "HALTED: daily loss limit",
                                     "daily PnL at or below -100", "stopped"]
        bodies = [m["message"].splitlines()[0] for m in messages]
        assert bodies[0].startswith("engine started: mode=demo pairs=XAU,BTC,ETH")
        assert bodies[1:] == ["HALTED: night check: spreads look wrong", "ACTIVE (rearmed): checked the venues",
                              "breaker trip daily_loss: equity today -250.00 <= -200",
                              "realized PnL today (UTC) is -250.00, past the alert level -100", "engine stopped"]
        assert [m["type"] for m in messages] == ["info", "failure", "info", "failure", "warning", "warning"]
        assert all(m["message"].splitlines()[1].endswith("· mode demo") for m in messages)
        assert len(hook.messages) == 6  # and nothing else arrived
        assert rt.alerts.stats()["channels"][0]["sent"] == 6


async def test_reconciliation_differences_are_alerted_once_each(tmp_path: Path) -> None:
    with webhook() as hook:
        async with rig(tmp_path) as r:
            alerts = Alerts(AlertsConfig.model_validate({"urls": [hook.url()]}), r.events, r.clock, mode="live",
                            host="h")
            r.okx.fail = "connection refused"
            await r.reconciler.run_once()
            r.okx.fail = None
            r.okx.held = None
            await r.reconciler.run_once()
            r.okx.orders = [OpenOrder("web123", "9", "BTC-USDT-SWAP")]
            await r.reconciler.run_once()
            await r.reconciler.run_once()  # the same order again: already quarantined, not said again
            r.okx.orders = []
            order = await ours_in_ledger(r, "FL1")
            r.journal.fill(order, fill("FL1", "t1", "5", r.clock.time_ms()))
            r.okx.held = {"BTC-USDT-SWAP": Decimal(7)}
            r.clock.advance(ms=FILL_SETTLE_MS + 1)
            await r.reconciler.run_once()
            assert r.gate.state is TradingState.HALTED
            messages = await _wait(hook, 4)
            await alerts.close()
        assert _titles(messages) == ["cannot reconcile okx", "released: venue okx reconciled again",
                                     "order quarantined on okx", "HALTED: position differs on okx"]
        assert [m["message"].splitlines()[0] for m in messages] == [
            "okx: cannot reconcile: connection refused",
            "breaker release reconcile:okx: reconciled",
            "okx: quarantined web123: an open order that is not ours (not adopted, not cancelled: check it on "
            "the venue)",
            "halting: position differs: okx BTC-USDT-SWAP: the venue holds 7, the ledger 5 (difference 2)",
        ]
        assert len(hook.messages) == 4


async def test_a_silent_ea_is_alerted_from_the_risk_monitor() -> None:
    clock = ManualClock()
    events = EventLog()
    gate = RiskGate.from_config(clock, RiskConfig())
    risk = RiskJournal(gate, clock, events)
    monitor = RiskMonitor(gate, CompareEngine(demo_config().build_pairs()), clock, venues=["mt5"],
                          links=lambda: [VenueLink("mt5", False)], balances=dict, hold_timeout_s=600)
    with webhook() as hook:
        alerts = Alerts(AlertsConfig.model_validate({"urls": [hook.url()]}), events, clock, mode="live", host="h")
        clock.advance(ms=6_000)
        risk.apply_breakers(monitor.step([])[0])  # no quote for 6 s: MT5 blocked
        clock.advance(ms=25_000)
        risk.apply_breakers(monitor.step([])[0])  # 31 s: silent and disconnected, halted
        messages = await _wait(hook, 3)
        await alerts.close()
    assert _titles(messages) == ["MT5 EA silent", "HALTED: MT5 EA silent", "HALTED: MT5 EA silent"]
    assert [m["message"].splitlines()[0] for m in messages] == [
        "breaker trip stale:mt5: no quote for 6.0s (> 5s)",
        "breaker trip stale_halt:mt5: no quote for 31.0s (> 30s)",
        "breaker trip down:mt5: disconnected for 31.0s (> 30s)",
    ]
    assert gate.state is TradingState.HALTED


async def test_dead_channels_do_not_stall_the_engine(tmp_path: Path) -> None:
    """Nothing listens on one channel, the other holds every request unanswered: the engine
    judges every quote and keeps trading; the hanging channel holds one message in flight and
    `queue_size` waiting, and drops (and counts) the rest. (The engine is driven step by step
    on a manual clock, its ledger open, without the real-time loops of `start`.)"""
    clock = ManualClock()
    with webhook(hang=True) as hanging, dead_port() as port:
        rt = Runtime(_config(urls=[f"json://127.0.0.1:{port}/dead", hanging.url()], queue_size=2, timeout_s=60,
                             max_per_minute=1000),
                     is_demo=True, clock=clock, ledger_path=str(tmp_path / "d.db"), mt5_in_process=True)
        dead, slow = rt.alerts.channels
        await rt.open_ledger()
        try:
            await rt.control.kill("drill 0")
            await asyncio.to_thread(hanging.wait_started, 1)  # the first alert is in flight, unanswered
            await rt.driver.drive(50)
            await rt.control.rearm("drill 0 over")
            await rt.driver.drive(300)
            for i in range(1, 6):
                await rt.control.kill(f"drill {i}")
                await rt.driver.drive(50)  # halted: quotes are still judged
                await rt.control.rearm(f"drill {i} over")
                await rt.driver.drive(300)
            snap = rt.view.snapshot(groups=0, log=0)
            delivered = sum(row.quotes for row in rt.health.rows(clock.monotonic_ns()))
            assert delivered > 0 and snap.quotes_total == delivered  # every quote delivered was judged
            assert snap.intents_total > 0 and sum(snap.groups_by_state.values()) == snap.intents_total  # and traded
            assert rt.alerts.raised == 12  # 6 halts and 6 rearms, each once
            # The hanging channel: one in flight, `queue_size` waiting, every other one dropped.
            assert (slow.sent, slow.failed, slow.pending, slow.dropped) == (0, 0, 3, 9)
            # The dead one answers at once: each message fails (or is dropped while it is busy).
            await asyncio.to_thread(wait_until, lambda: dead.pending == 0, "the dead channel to try everything")
            assert dead.sent == 0 and dead.failed > 0 and dead.failed + dead.dropped == 12
            await asyncio.sleep(0)  # its first failure is said in the engine's log, once
            failing = [e.text for e in rt.events.recent() if e.kind == "alerts"]
            assert failing == [f"alerts: channel urls[0] json://127.0.0.1:{port}/*** failing: {dead.last_error}"]
            hanging.release()
            await asyncio.to_thread(wait_until, lambda: slow.pending == 0, "the hanging channel to catch up")
        finally:
            assert await rt.alerts.close() == 0
            await rt.close_ledger()
        assert slow.sent == 3
        assert [m["message"].splitlines()[0] for m in hanging.messages] == [
            "HALTED: drill 0", "ACTIVE (rearmed): drill 0 over", "HALTED: drill 1"]


# -- quantarb alerts test ------------------------------------------------------------------------
def _alerts_test(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["alerts", "test", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_alerts_test_reports_each_channel(tmp_path: Path) -> None:
    with webhook() as hook, dead_port() as port:
        urls = [hook.url("hook/s3cretpath"), f"json://127.0.0.1:{port}/other/t0kenpath"]
        code, out, err = _alerts_test({"QUANTARB_ALERTS__URLS": json.dumps(urls)})
        assert code == 3, err
        lines = out.splitlines()
        assert lines[0] == f"ok      urls[0] json://127.0.0.1:{hook.port}/***"
        assert lines[1].startswith(f"FAILED  urls[1] json://127.0.0.1:{port}/***: ")
        assert lines[2] == "1 of 2 channel(s) took the test message"
        assert "s3cretpath" not in out + err and "t0kenpath" not in out + err
        [msg] = hook.wait(1)
        assert msg["title"].endswith(": test") and "quantarb alerts test" in msg["message"]

        code, out, _ = _alerts_test({"QUANTARB_ALERTS__URLS": json.dumps(urls[:1])}, "--json")
        assert code == 0
        assert json.loads(out) == {"ok": True, "channels": [
            {"channel": f"urls[0] json://127.0.0.1:{hook.port}/***", "ok": True, "error": ""}]}
        assert len(hook.wait(2)) == 2


def test_alerts_test_without_a_channel_or_with_a_bad_one_is_a_usage_error() -> None:
    code, _, err = _alerts_test({})
    assert code == 2 and "no alert channel configured in built-in demo" in err
    code, _, err = _alerts_test({"QUANTARB_ALERTS__URLS": '["nosuch://abc"]'})
    assert code == 2 and err.strip() == ("alerts.urls[0]: nosuch://***: not a URL apprise can send to (unknown "
                                         "scheme, or a required part missing); the value is not shown")


async def test_a_bad_url_stops_the_engine_from_starting(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match=r"alerts\.urls\[0\]: nosuch://\*\*\*"):
        Runtime(_config(urls=["nosuch://abc"]), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "b.db"),
                mt5_in_process=True)
