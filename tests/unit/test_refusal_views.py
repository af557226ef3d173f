"""The price guard's refusals are counted and shown wherever an operator looks (issue 13): the
snapshot and its quote rows, `/api/status` and `quantarb status`, `/metrics`, the headless
summary line, and `quantarb ledger summary` (the decision log by reason)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from core.clock import ManualClock
from core.config import demo_config
from core.models import Quote
from engine.operator_api import RuntimeCollector
from engine.runtime import Runtime
from ledger import queries
from quantarb_tui.headless import format_summary
from quantarb_tui.ledger_cmd import ledger_app
from quantarb_tui.operator_cli import render_status


def _runtime_with_outliers(ledger_path: str = "") -> tuple[Runtime, ManualClock]:
    clock = ManualClock()
    rt = Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=ledger_path, mt5_in_process=True)

    def q(venue: str, symbol: str, bid: float, ask: float) -> None:
        clock.advance(ms=1)
        rt.ingest(Quote(venue, symbol, bid, ask, 1.0, 1.0, clock.time_ms(), clock.monotonic_ns()))  # type: ignore[arg-type]

    q("okx", "XAUT-USDT-SWAP", 2650.0, 2650.5)
    q("binance", "PAXGUSDT", 2650.2, 2650.6)
    q("mt5", "XAUUSD", 100.0, 100.1)
    q("mt5", "XAUUSD", 100.0, 100.1)
    q("binance", "PAXGUSDT", 2760.0, 2760.5)  # 404 bps over OKX: under the deviation bound, over the ceiling
    return rt, clock


def test_snapshot_status_and_quote_rows_count_the_refusals() -> None:
    rt, _ = _runtime_with_outliers()
    snap = rt.view.snapshot()
    assert snap.price_outliers == {"mt5": 2}
    assert (snap.reasons["price_outlier"], snap.reasons["edge_above_ceiling"]) == (2, 1)
    assert sum(snap.reasons.values()) == snap.decisions_total
    [row] = [r for r in snap.quotes if r.key == "mt5:XAUUSD"]
    assert (row.outlier, row.outliers, row.age_ms) == (True, 2, None)
    edges = {e.key: e for e in snap.edges}
    assert edges["XAU:mt5>okx"].last_reason == "price_outlier" and edges["XAU:mt5>okx"].edge_bps is None
    assert edges["XAU:okx>binance"].last_reason == "edge_above_ceiling"
    status = rt.view.status()
    assert status["price_outliers"] == {"mt5": 2} and status["reasons"]["edge_above_ceiling"] == 1
    assert "price outliers    mt5=2" in render_status(json.loads(json.dumps(status, default=str)), "http://x")
    assert rt.view.summary()["price_outliers"] == {"mt5": 2}


def test_metrics_carry_reasons_and_outliers_per_venue() -> None:
    rt, _ = _runtime_with_outliers()
    families = {m.name: m for m in RuntimeCollector(rt.view.snapshot).collect()}
    outliers = {s.labels["venue"]: s.value for s in families["quantarb_price_outliers"].samples
                if s.name.endswith("_total")}
    reasons = {s.labels["reason"]: s.value for s in families["quantarb_decision_reasons"].samples
               if s.name.endswith("_total")}
    assert outliers == {"mt5": 2.0}
    assert (reasons["price_outlier"], reasons["edge_above_ceiling"]) == (2.0, 1.0)


def test_headless_summary_line_shows_reasons_and_outliers() -> None:
    rt, _ = _runtime_with_outliers()
    text = format_summary(rt.view.summary(), as_json=False)
    assert " reasons " in text and "price_outlier=2" in text and "edge_above_ceiling=1" in text
    assert text.endswith(" price_outliers mt5=2")
    doc = json.loads(format_summary(rt.view.summary(), as_json=True))
    assert doc["price_outliers"] == {"mt5": 2} and doc["reasons"]["price_outlier"] == 2


async def test_ledger_summary_counts_the_decision_log_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    clock = ManualClock()
    rt = Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)
    await rt.open_ledger()
    try:
        for venue, symbol, bid, ask in [("okx", "XAUT-USDT-SWAP", 2650.0, 2650.5),
                                        ("binance", "PAXGUSDT", 2650.2, 2650.6), ("mt5", "XAUUSD", 100.0, 100.1)]:
            clock.advance(ms=1)
            rt.ingest(Quote(venue, symbol, bid, ask, 1.0, 1.0, clock.time_ms(), clock.monotonic_ns()))  # type: ignore[arg-type]
    finally:
        await rt.close_ledger()
    doc = await asyncio.to_thread(queries.run, str(path), queries.summary)
    assert doc["decisions_by_reason"] == {"below_threshold": 1, "no_counter_quote": 1, "price_outlier": 1}
    result = await asyncio.to_thread(CliRunner().invoke, ledger_app, ["summary", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    assert "decision log 3 rows (sampled) below_threshold=1  no_counter_quote=1  price_outlier=1" in result.stdout
