"""`quantarb headless` as a real process: duration, signals, JSON logs, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUMMARY = re.compile(
    r"^summary quotes=(\d+) decisions=(\d+) intents=(\d+) groups (.*) pnl=(\S+) (USD) state=(\w+)"
    r" reasons ([a-z_:]+=\d+(?: [a-z_:]+=\d+)*)$"
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)  # no user config is picked up: the built-in demo runs
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.5"  # edges every half second on average
    env["QUANTARB_LISTENER__PORT"] = "0"  # tests never collide on the default port
    env.update(extra)
    return env


def _quantarb(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantarb_tui.cli", *args]


def test_headless_duration_runs_demo_and_prints_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        _quantarb("headless", "--duration", "6", "--ledger", str(tmp_path / "demo.db")),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1])
    assert match, lines[-1]
    quotes, decisions, intents = (int(match.group(i)) for i in (1, 2, 3))
    assert quotes > 100
    assert decisions <= quotes
    assert intents > 0
    assert "hedged=" in match.group(4)
    reasons = dict(kv.split("=") for kv in match.group(8).split())
    assert int(reasons["ok"]) == intents  # every decision counted under its reason
    assert sum(map(int, reasons.values())) == decisions
    intent_lines = [line for line in lines if " intent " in line]
    assert intent_lines
    assert any("-> hedged" in line for line in lines)
    # OKX and Binance quotes came over the WebSocket feeds (the demo's loopback venues) ...
    for feed in ("okx", "binance-usdm"):
        health = next(line for line in lines if f" feed {feed} " in line)
        found = re.search(r"frames=(\d+)", health)
        assert found is not None, health
        frames = int(found.group(1))
        assert "transport=ws" in health and frames > 10, health
    # ... and intents formed across all three venues.
    venues = {v for line in intent_lines for v in re.findall(r"(?:buy|sell) (mt5|okx|binance) ", line)}
    assert venues == {"mt5", "okx", "binance"}, intent_lines
    # Per-pair execution aggregates and monitor statistics at stop.
    pair_lines = {m.group(1): line for line in lines if (m := re.search(r" pair (\w+) groups=", line))}
    assert set(pair_lines) == {"XAU", "BTC", "ETH"}
    assert all("trigger_rate=" in line and "edge_p50/p75/p90=" in line for line in pair_lines.values())
    # The pair lines sum groups' PnL; only the summary line says `pnl=` (the equity change).
    assert all(" groups_pnl=" in line and " pnl=" not in line for line in pair_lines.values())
    assert result.stderr == ""


def test_headless_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    result = subprocess.run(
        _quantarb("headless", "--duration", "3", "--json-logs"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert docs[0]["kind"] == "start"
    assert docs[-1]["kind"] == "summary"
    assert docs[-1]["intents"] > 0
    assert all({"ts", "level", "kind"} <= d.keys() for d in docs[:-1])
    group_events = [d for d in docs if d["kind"] == "group"]
    assert group_events and all("group_id" in d for d in group_events)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_headless_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        _quantarb("headless"), cwd=tmp_path, env=_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the start event: the engine is running
    assert "engine started" in first
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert SUMMARY.match(out.strip().splitlines()[-1])
    assert "engine stopped" in out
    assert "Traceback" not in err and "Task was destroyed" not in err and "never awaited" not in err


def test_headless_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[strategy]\nthreshold_bps = "lots"\n[[pairs]]\nname = "BTC"\n', encoding="utf-8")
    result = subprocess.run(
        _quantarb("headless", "--config", str(bad), "--duration", "1"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "bad.toml" in result.stderr
    assert "strategy.threshold_bps" in result.stderr


@pytest.mark.parametrize(
    ("head", "tail", "needle"),
    [
        ("[venues.mt5]\n", '[pairs.instruments.mt5]\nsymbol = "BTCUSD"\n', "QUANTARB_MT5_SECRET_T1"),
        ('[engine]\nexecution = "live"\n', "", "needs QUANTARB_OKX_API_KEY (or QUANTARB_OKX_API_KEY_FILE)"),
    ],
)
def test_headless_exits_3_for_what_this_release_cannot_run(
    tmp_path: Path, head: str, tail: str, needle: str
) -> None:
    """A clear runtime failure before any socket is opened, not a crash (and no internet)."""
    cfg = tmp_path / "cfg.toml"
    base = (
        '[venues.okx]\nws_url = "ws://127.0.0.1:9/ws/v5/public"\nrest_url = "http://127.0.0.1:9"\n'
        '[venues.binance]\nws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n'
        '[[pairs]]\nname = "BTC"\n'
        '[pairs.instruments.okx]\nsymbol = "BTC-USDT-SWAP"\nqty_per_contract = 0.01\n'
        '[pairs.instruments.binance]\nsymbol = "BTCUSDT"\n'
    )
    text = head + base + tail
    cfg.write_text(text, encoding="utf-8")
    result = subprocess.run(
        _quantarb("headless", "--config", str(cfg), "--duration", "1"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_module_imports_no_heavy_dependency() -> None:
    """`quantarb --help` stays fast because the CLI imports the engine and UI lazily."""
    code = (
        "import sys, quantarb_tui.cli;"
        "heavy = [m for m in ('textual','pydantic','core.pipeline','engine.runtime','httpx') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
