"""The heartbeat line, from a real (unstarted) runtime fed quotes on a manual clock."""

from __future__ import annotations

from decimal import Decimal

from core.clock import ManualClock
from core.config import demo_config
from core.models import Quote, Venue
from engine.heartbeat import Heartbeat, status_line
from engine.runtime import Runtime

BTC: dict[Venue, str] = {"mt5": "BTCUSD", "okx": "BTC-USDT-SWAP", "binance": "BTCUSDT"}


def _runtime() -> tuple[Runtime, ManualClock]:
    clock = ManualClock()
    return Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=None, mt5_in_process=True), clock


def _quote(rt: Runtime, clock: ManualClock, venue: Venue) -> None:
    # The same touch everywhere: no edge, no intent, nothing but a counted quote.
    rt.ingest(Quote(venue, BTC[venue], 60000.0, 60010.0, 5.0, 5.0, clock.time_ms(), clock.monotonic_ns()))


def test_heartbeat_rates_oldest_quote_exposure_and_state() -> None:
    rt, clock = _runtime()
    beat = Heartbeat()
    first = beat.beat(rt.view.snapshot(groups=0, log=0), clock.monotonic_ns())
    assert first.kind == "heartbeat" and first.level == "info"
    assert first.data["quotes_per_s"] == {"binance": None, "mt5": None, "okx": None}  # no previous beat
    assert first.data["oldest_quote"] is None and len(first.data["no_quote_yet"]) == 9  # type: ignore[arg-type]
    assert "exposure none" in first.text and "oldest_quote none" in first.text

    # Over 2 s: 20 OKX quotes, 10 Binance, 4 MT5, MT5's last one 1.5 s before the beat.
    for i in range(20):
        clock.advance(ms=100)
        _quote(rt, clock, "okx")
        if i % 2 == 0:
            _quote(rt, clock, "binance")
        if i < 4:
            _quote(rt, clock, "mt5")
    rt.gate.exposure.fill("okx", "BTC", "buy", Decimal("0.1"), Decimal("60000"))
    rt.gate.exposure.fill("binance", "BTC", "sell", Decimal("0.2"), Decimal("60000"))
    second = beat.beat(rt.view.snapshot(groups=0, log=0), clock.monotonic_ns())
    assert second.data["quotes_per_s"] == {"binance": 5.0, "mt5": 2.0, "okx": 10.0}
    assert second.data["oldest_quote"] == "mt5:BTCUSD" and second.data["oldest_quote_ms"] == 1600
    assert second.data["exposure"] == {"binance": "12000.00", "okx": "6000.00"}
    assert second.data["gross_exposure"] == "18000.00"
    assert second.data["state"] == "active" and second.data["open_groups"] == 0
    # The equity of every face (nothing traded: zero), in the account currency.
    assert rt.view.snapshot(groups=0, log=0).equity == "0.00" and second.data["currency"] == "USD"
    assert second.text.startswith("state=active equity=0.00 USD daily_pnl=0.00 open_groups=0 "
                                  "exposure binance=12000.00 okx=6000.00 quotes/s binance=5.0 mt5=2.0 okx=10.0 "
                                  "oldest_quote mt5:BTCUSD 1.6s no_quote_yet "), second.text

    # No quote for the next 10 s: the rates say so.
    clock.advance(ms=10_000)
    rt.control.kill_now("operator test")
    third = beat.beat(rt.view.snapshot(groups=0, log=0), clock.monotonic_ns())
    assert third.data["quotes_per_s"] == {"binance": 0.0, "mt5": 0.0, "okx": 0.0}
    assert third.data["oldest_quote_ms"] == 11600
    assert third.text.startswith("state=halted reason='operator test' equity=0.00 USD"), third.text
    assert status_line(rt.view.snapshot(groups=0, log=0)) == (
        "demo halted (operator test); 0 open groups; equity 0.00 USD")
