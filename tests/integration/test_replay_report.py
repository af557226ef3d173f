"""`quantarb replay --report`: the study of a small hand-built recording whose answers are known
exactly (every figure below is worked out by hand in the comments), through the whole engine
(normalizers, pipeline, orchestrator, paper venues, compensation, a real SQLite ledger)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.clock import ManualClock
from core.config import QuantarbConfig
from engine.replay import ReplaySettings, replay_engine
from feeds.recording import FrameRecorder
from quantarb_tui.cli import app
from quantarb_tui.replay_report import HTML_NAME, JSON_NAME, render_html

START_NS = 5_000_000_000
MS = 1_000_000

CONFIG: dict[str, Any] = {
    "engine": {"execution": "paper"},
    "venues": {"okx": {}, "binance": {"market": "usdm"}},
    "pairs": [{"name": "BTC", "instruments": {
        # 1 contract = 0.01 BTC; no fees, so an edge is (bid / ask - 1) x 10,000 exactly.
        "okx": {"symbol": "BTC-USDT-SWAP", "qty_per_contract": "0.01", "lot_step": "1", "min_qty": "1",
                "tick_size": "0.1", "taker_fee_bps": 0},
        "binance": {"symbol": "BTCUSDT", "lot_step": "0.001", "min_qty": "0.001", "tick_size": "0.1",
                    "taker_fee_bps": 0},
    }}],
    "strategy": {"threshold_bps": 10, "persistence_ms": 0, "cooldown_ms": 3000, "max_quote_age_ms": 1500},
    "risk": {"max_leg_notional": "100000", "max_gross_exposure": "1000000"},
    "paper": {"slippage_bps": 0},
}


def _okx(bid: float, ask: float, bid_sz: float, ask_sz: float) -> str:
    data = {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "last": str(bid), "lastSz": "1", "askPx": str(ask),
            "askSz": str(ask_sz), "bidPx": str(bid), "bidSz": str(bid_sz), "ts": "1732150000000"}
    return json.dumps({"arg": {"channel": "tickers", "instId": "BTC-USDT-SWAP"}, "data": [data]})


_update_id = iter(range(1000, 2000))


def _binance(bid: float, ask: float, bid_sz: float, ask_sz: float) -> str:
    data = {"e": "bookTicker", "u": next(_update_id), "s": "BTCUSDT", "b": str(bid), "B": str(bid_sz),
            "a": str(ask), "A": str(ask_sz), "T": 1732150000000, "E": 1732150000000}
    return json.dumps({"stream": "btcusdt@bookTicker", "data": data})


# (ms after the start, venue, bid, ask, bid size, ask size); okx sizes in contracts (x 0.01 BTC).
# o>b = buy okx at its ask, sell binance at its bid; b>o the other way.
FRAMES = [
    (0, "okx", 9999, 10000, 100, 100),  # no edge yet: binance has not quoted
    (10, "binance", 9998, 10001, 2, 2),  # o>b -2.00; b>o (9999/10001-1) = -2.00
    (100, "binance", 10020, 10021, 1.5, 1.5),  # o>b +20: episode 1 starts, cap min(1.0, 1.5); intent 1
    (130, "binance", 10015, 10016, 0.8, 2),  # o>b +15, cap 0.8 (in flight: no intent)
    # 150: group 1 executes (50 ms latency): okx buy 1.0 @10000 fills; binance sell limit 10020 is not
    # marketable at bid 10015: broken; retry_hedge sells 1.0 @10015: repaired, PnL +15, cost 5.
    (300, "binance", 10005, 10006, 2, 2),  # o>b +5: episode 1 ends after 200 ms; b>o -7.00
    (400, "okx", 10030, 10031, 100, 100),  # b>o (10030/10006-1) = +23.99: episode 2, cap 1.0; intent 2
    # 450: group 2: buy binance 1.0 @10006, sell okx 100 contracts @10030: hedged, PnL +24.
    (700, "okx", 9999, 10000, 100, 100),  # b>o -7.00: episode 2 ends after 300 ms; o>b +5
    (800, "binance", 10030, 10031, 2, 2),  # o>b +30: episode 3, cap 1.0; cooldown (intent 1 at 100): none
]


def _config() -> QuantarbConfig:
    return QuantarbConfig.model_validate(CONFIG)


def _record(path: Path) -> None:
    with FrameRecorder(path, clock=ManualClock()) as rec:
        for ms, venue, bid, ask, bid_sz, ask_sz in FRAMES:
            if venue == "okx":
                rec.write("okx", "okx", _okx(bid, ask, bid_sz, ask_sz), START_NS + ms * MS)
            else:
                rec.write("binance", "binance-usdm", _binance(bid, ask, bid_sz, ask_sz), START_NS + ms * MS)


@pytest.fixture()
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "hand.jsonl"
    _record(path)
    return path


def _replay(path: Path, ledger: Path | None = None) -> dict[str, Any]:
    return asyncio.run(replay_engine(_config(), [path], ReplaySettings(latency_ms=50.0),
                                     ledger_path=None if ledger is None else str(ledger), study=True))


def _edge(bid: float, ask: float) -> float:
    return round((bid / ask - 1) * 10_000, 2)


def test_the_study_of_a_hand_built_recording(recording: Path, tmp_path: Path) -> None:
    report = _replay(recording, tmp_path / "r.db")
    study = report["study"]
    rows = {(d["buy_venue"], d["sell_venue"]): d for d in study["directions"]}
    assert set(rows) == {("okx", "binance"), ("binance", "okx")}
    ob, bo = rows[("okx", "binance")], rows[("binance", "okx")]

    # okx > binance: 7 updates (every frame from the second on changed it):
    # sorted -25.92 -2 5 5 15 20 30 -> p50 5, p75 15 + .5 x 5 = 17.5, p90 20 + .4 x 10 = 24, p99 20 + .94 x 10.
    assert ob["updates"] == 7
    assert _edge(10005, 10031) == -25.92
    assert ob["edge_bps"] == {"p50": 5.0, "p75": 17.5, "p90": 24.0, "p99": 29.4}
    assert (ob["opportunities"], ob["triggered"], ob["censored"], ob["intents"]) == (2, 1, 1, 1)
    assert ob["trigger_rate"] == 0.5
    assert ob["lifetime_ms"] == {"p50": 200.0, "p90": 200.0, "max": 200.0}
    assert ob["reaction_ms"] == {"p50": 50.0, "p90": 50.0, "max": 50.0}  # the latency model, exactly
    assert ob["outlived"] == 1.0
    assert ob["capacity_base"] == 1.0 and ob["capacity_notional"] == 10000.0  # of 1.0, 0.8, 1.0
    assert ob["groups"] == 1 and ob["by_state"] == {"repaired": 1}
    assert Decimal(ob["pnl"]) == Decimal(15)  # 1.0 x (10015 - 10000)
    assert ob["compensations"] == 1
    assert Decimal(ob["compensation_cost"]) == Decimal(5)  # 1.0 x (10020 - 10015), no fee

    # binance > okx: one episode of 300 ms, triggered, hedged for 1.0 x (10030 - 10006).
    b_edges = sorted(_edge(*p) for p in [(9999, 10001), (9999, 10021), (9999, 10016), (9999, 10006),
                                         (10030, 10006), (9999, 10006), (9999, 10031)])
    assert bo["updates"] == 7 and bo["edge_bps"] is not None
    assert bo["edge_bps"]["p50"] == b_edges[3] == -7.0
    assert (bo["opportunities"], bo["triggered"], bo["censored"], bo["trigger_rate"]) == (1, 1, 0, 1.0)
    assert bo["lifetime_ms"] == {"p50": 300.0, "p90": 300.0, "max": 300.0}
    assert bo["capacity_base"] == 1.0 and bo["capacity_notional"] == 10006.0
    assert bo["groups"] == 1 and bo["by_state"] == {"hedged": 1}
    assert Decimal(bo["pnl"]) == Decimal(24) and bo["compensations"] == 0 and Decimal(bo["compensation_cost"]) == 0

    [pair] = study["pairs"]
    assert (pair["pair"], Decimal(pair["pnl"]), Decimal(pair["carry"]), Decimal(pair["net"])) == (
        "BTC", Decimal(39), Decimal(0), Decimal(39))
    assert Decimal(study["net"]) == Decimal(39)
    # Lifetimes in the 200-500 ms bucket (index 8), reactions in 50-100 ms (index 6).
    assert study["lifetime_hist"] == {"BTC okx>binance": [0] * 8 + [1] + [0] * 7,
                                      "BTC binance>okx": [0] * 8 + [1] + [0] * 7}
    assert study["reaction_hist"]["BTC okx>binance"] == [0] * 6 + [1] + [0] * 9

    # The study's PnL is the ledger's.
    with sqlite3.connect(tmp_path / "r.db") as db:
        ledger = db.execute("SELECT pair, buy_venue, sell_venue, state, realized_pnl FROM hedge_groups "
                            "ORDER BY opened_at_ms").fetchall()
        actions = db.execute("SELECT kind FROM compensation_actions").fetchall()
    assert [(r[1], r[2], r[3], Decimal(r[4])) for r in ledger] == [
        ("okx", "binance", "closed", Decimal("19.5")), ("binance", "okx", "closed", Decimal("19.5"))]
    # The second group offset the first (core.attribution netting): each was closed by the other
    # with half of what the two made (15 + 24), the study's figures are as each execution ended.
    assert actions == [("retry_hedge",)]


def test_the_study_is_deterministic_and_absent_unless_asked(recording: Path) -> None:
    assert _replay(recording) == _replay(recording)
    plain = asyncio.run(replay_engine(_config(), [recording], ReplaySettings(latency_ms=50.0)))
    assert "study" not in plain


def test_the_html_report_is_self_contained(recording: Path) -> None:
    report = _replay(recording)
    page = render_html(report["study"], report)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert page.count("<svg") == 5  # edges, lifetimes of all directions and of each (2), PnL
    assert "<script" not in page and not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert "BTC okx&gt;binance" in page and "threshold 10 bps" in page


def test_cli_report_writes_html_and_json_and_prints_tables(recording: Path, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(_toml(CONFIG), encoding="utf-8")
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["replay", str(recording), "--config", str(toml), "--latency-ms", "50",
                                      "--report", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Per pair and direction (threshold 10 bps)" in result.output
    assert "BTC okx>binance" in result.output and f"report {out / HTML_NAME}" in result.output
    assert "replaying" not in result.output  # no progress bar when not on a terminal
    saved = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
    assert Decimal(saved["study"]["net"]) == Decimal(39)
    assert (out / HTML_NAME).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    js = CliRunner().invoke(app, ["replay", str(recording), "--config", str(toml), "--latency-ms", "50",
                                  "--report", str(tmp_path / "rep2"), "--json"])
    assert js.exit_code == 0, js.output
    assert Decimal(json.loads(js.output)["study"]["net"]) == Decimal(39)


TOML = """
[engine]
execution = "paper"
[venues.okx]
[venues.binance]
market = "usdm"
[[pairs]]
name = "BTC"
[pairs.instruments.okx]
symbol = "BTC-USDT-SWAP"
qty_per_contract = "0.01"
lot_step = "1"
min_qty = "1"
tick_size = "0.1"
taker_fee_bps = 0
[pairs.instruments.binance]
symbol = "BTCUSDT"
lot_step = "0.001"
min_qty = "0.001"
tick_size = "0.1"
taker_fee_bps = 0
[strategy]
threshold_bps = 10
persistence_ms = 0
cooldown_ms = 3000
max_quote_age_ms = 1500
[risk]
max_leg_notional = "100000"
max_gross_exposure = "1000000"
[paper]
slippage_bps = 0
"""


def _toml(doc: dict[str, Any]) -> str:
    """The config above as TOML (the CLI reads TOML files); checked to be the same config."""
    import tomllib

    assert QuantarbConfig.model_validate(tomllib.loads(TOML)) == QuantarbConfig.model_validate(doc)
    return TOML


def test_the_progress_bar_shows_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from quantarb_tui.cli import _ReplayProgress

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    assert not _ReplayProgress(enabled=True, files=1).enabled  # pytest's stderr is no terminal
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: a terminal
    assert not _ReplayProgress(enabled=False, files=1).enabled  # --json
    bar = _ReplayProgress(enabled=True, files=2)
    assert bar.enabled
    with bar:
        bar.update(65_536)
    captured = capsys.readouterr()
    assert "replaying" in captured.err and "65,536 frames" in captured.err and captured.out == ""
